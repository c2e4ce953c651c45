//! `make bench`: coffer's speed and memory against a real OpenBao on
//! 127.0.0.1, driven through its socket like the driver. Release build.
//! Prints the figures and writes docs/benchmarks.md.
//!
//! Environment: BENCH_MOUNTS (sequential mounts, default 2000, and as many
//! direct reads for the floor, in BENCH_ROUNDS alternating rounds, default 10),
//! BENCH_SECONDS (per concurrency level, default 5), BENCH_SOAK_SECONDS
//! (default 600; 0 skips the soak), BENCH_OUT (default docs/benchmarks.md),
//! BENCH_ONLY=scale (only the scale model of [`scale`], written over the
//! `## Scale` section of BENCH_OUT), BENCH_COFFER_BIN (default
//! target/release/coffer), BENCH_COMPARE=bin,bin (builds side by side in
//! alternating rounds, printed, see [`compare`]), and scale.rs's BENCH_SCALE_*.

mod scale;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use coffer::grpc::MountRequest;
use coffer::grpc::csi_driver_provider_client::CsiDriverProviderClient;
use coffer::secret::Token;
use coffer::spc::SecretProviderClass;
use coffer::standin::{self, PodIdentity};
use serde_json::{Value, json};
use tonic::transport::Channel;

// The /metrics reader the tests use (std only), so both count alike.
#[path = "../tests/support/metrics.rs"]
mod metrics;
// How moto's recording names each request, as the tests name it.
#[path = "../tests/support/moto_api.rs"]
mod moto_api;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const NS: &str = "bench";
/// Where the side-by-side section of docs/benchmarks.md begins (written by
/// `make bench-peers`, kept by `make bench`).
const SIDE_BY_SIDE_BEGIN: &str = "<!-- side-by-side: make bench-peers -->";
const SA: &str = "app";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tool(key: &str) -> Result<String> {
    if let Ok(v) = std::env::var(key) {
        return Ok(v);
    }
    let text = std::fs::read_to_string(root().join("e2e/.tools/env"))
        .map_err(|_| "run `bash e2e/setup.sh` first (make bench does)")?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_owned))
        .ok_or_else(|| format!("{key} missing in e2e/.tools/env").into())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

struct Killed(Child);
impl Drop for Killed {
    /// SIGTERM first (coffer drains and a profiler wrapper writes its data),
    /// SIGKILL after 10 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mint(pod: &str, uid: &str) -> String {
    mint_for(pod, uid, "vault")
}

fn mint_for(pod: &str, uid: &str, audience: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let claims = json!({
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": format!("system:serviceaccount:{NS}:{SA}"),
        "aud": [audience], "iat": now, "nbf": now, "exp": now + 7200,
        "kubernetes.io": {"namespace": NS, "pod": {"name": pod, "uid": uid}, "serviceaccount": {"name": SA, "uid": "00000000-0000-4000-8000-000000000001"}},
    });
    let key = std::fs::read(root().join("tests/fixtures/sa-signing-key.pem")).expect("test key");
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&key).expect("RSA key");
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .expect("sign")
}

struct Vault {
    addr: String,
    root: String,
    http: reqwest::Client,
    _child: Killed,
}

impl Vault {
    async fn start() -> Result<Vault> {
        let bin = tool("COFFER_BAO_BIN")?;
        let port = loop {
            let p = free_port();
            if std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
                break p;
            }
        };
        let root = format!("bench-root-{port}");
        let dir = std::env::temp_dir().join(format!("coffer-bench-bao-{port}"));
        std::fs::create_dir_all(&dir)?;
        let child = Command::new(bin)
            .args([
                "server",
                "-dev",
                &format!("-dev-listen-address=127.0.0.1:{port}"),
                &format!("-dev-root-token-id={root}"),
                "-dev-no-store-token",
            ])
            .env("HOME", &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let vault = Vault {
            addr: format!("http://127.0.0.1:{port}"),
            root,
            http: reqwest::Client::new(),
            _child: Killed(child),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while vault
            .http
            .get(format!("{}/v1/sys/health", vault.addr))
            .send()
            .await
            .map(|r| r.status().as_u16() != 200)
            .unwrap_or(true)
        {
            if Instant::now() > deadline {
                return Err("OpenBao did not start".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(vault)
    }

    async fn write(&self, path: &str, body: Value) -> Result<Value> {
        let resp = self
            .http
            .post(format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", &self.root)
            .body(serde_json::to_vec(&body)?)
            .send()
            .await?;
        let status = resp.status();
        let text = String::from_utf8_lossy(&resp.bytes().await?).into_owned();
        if !status.is_success() {
            return Err(format!("POST {path}: {status} {text}").into());
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

async fn connect(socket: &Path) -> Result<CsiDriverProviderClient<Channel>> {
    Ok(standin::connect(socket).await?)
}

fn request(addr: &str, objects: &str, pod: &str, uid: &str, token: &str) -> MountRequest {
    let params = [
        ("roleName", "app"),
        ("vaultAddress", addr),
        ("vaultAuthMountPath", "jwt"),
        ("objects", objects),
    ];
    mount_request("vault", "bench", &params, pod, uid, ("vault", token))
}

/// The driver's request for a pod of namespace [`NS`] and ServiceAccount
/// [`SA`] mounting the class `class` (`provider`, `params`), with one token
/// (audience, token).
fn mount_request(
    provider: &str,
    class: &str,
    params: &[(&str, &str)],
    pod: &str,
    uid: &str,
    (audience, token): (&str, &str),
) -> MountRequest {
    let spc = SecretProviderClass {
        name: class.into(),
        namespace: Some(NS.into()),
        provider: provider.into(),
        parameters: params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    };
    let pod = PodIdentity {
        name: pod.into(),
        namespace: NS.into(),
        uid: uid.into(),
        service_account: SA.into(),
    };
    let attributes = standin::attributes(
        &spc,
        &[],
        &pod,
        Some(&standin::tokens_json(&[(
            audience.into(),
            Token::new(token.to_owned()),
        )])),
    );
    MountRequest {
        attributes,
        secrets: "null".into(),
        target_path: "/t".into(),
        permission: "420".into(),
        current_object_version: vec![],
    }
}

fn objects(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "- {{objectName: o{i}, secretPath: secret/data/bench/s{i}, secretKey: value}}\n"
            )
        })
        .collect()
}

fn uid(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn proc_status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(field)
                    .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
            })
        })
        .unwrap_or(0)
}

/// User + system CPU of a process, in seconds.
/// The CPU time of a process so far, per thread: /proc/PID/task/TID/schedstat
/// (nanoseconds on a CPU, user and system), where /proc/PID/stat counts
/// 10 ms ticks, too coarse for rounds of a few hundred mounts.
struct CpuSample(BTreeMap<u32, u64>);

impl CpuSample {
    fn of(pid: u32) -> Self {
        let mut threads = BTreeMap::new();
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for entry in dir.flatten() {
                let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
                    continue;
                };
                let ns = std::fs::read_to_string(entry.path().join("schedstat"))
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse().ok());
                if let Some(ns) = ns {
                    threads.insert(tid, ns);
                }
            }
        }
        Self(threads)
    }

    /// Seconds used between `self` and `later`: by the threads in both, and
    /// by those started since (a thread that ended in between loses its
    /// last moments; the worker thread that serves mounts does not end).
    fn seconds_until(&self, later: &CpuSample) -> f64 {
        let ns: u64 = later
            .0
            .iter()
            .map(|(tid, after)| after.saturating_sub(self.0.get(tid).copied().unwrap_or(0)))
            .sum();
        ns as f64 / 1e9
    }
}

/// `GET /metrics` read with the tests' [`metrics::metric`]: the sum of the
/// samples whose line starts with `prefix`, 0 when there are none (or when
/// /metrics does not answer).
async fn metric(health: &str, prefix: &str) -> f64 {
    let text = match reqwest::get(format!("http://{health}/metrics")).await {
        Ok(r) => String::from_utf8_lossy(&r.bytes().await.unwrap_or_default()).into_owned(),
        Err(_) => String::new(),
    };
    metrics::metric(&text, prefix)
}

struct Coffer {
    pid: u32,
    socket: PathBuf,
    health: String,
    cold_start: Duration,
    _child: Killed,
}

fn start_coffer(dir: &Path) -> Result<Coffer> {
    start_coffer_with(dir, "vault", &[])
}

fn start_coffer_with(dir: &Path, provider: &str, extra: &[&str]) -> Result<Coffer> {
    // BENCH_COFFER_BIN: another build (request counts do not depend on it; timings do).
    let bin = std::env::var("BENCH_COFFER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target/release/coffer"));
    start_coffer_bin(&bin, dir, provider, extra)
}

fn start_coffer_bin(bin: &Path, dir: &Path, provider: &str, extra: &[&str]) -> Result<Coffer> {
    let health = format!("127.0.0.1:{}", free_port());
    let socket = dir.join(format!("{provider}.sock"));
    let started = Instant::now();
    // BENCH_WRAPPER runs coffer under a profiler, e.g. "valgrind --tool=callgrind".
    let wrapper: Vec<String> = std::env::var("BENCH_WRAPPER")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let child = command
        .args([
            "serve",
            "--provider",
            provider,
            "--health-addr",
            &health,
            "--log-level",
            "warn",
            "--socket-dir",
        ])
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e} (make bench builds it)", bin.display()))?;
    let pid = child.id();
    let child = Killed(child);
    loop {
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err("coffer did not open its socket".into());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(Coffer {
        pid,
        socket,
        health,
        cold_start: started.elapsed(),
        _child: child,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mounts = env_u64("BENCH_MOUNTS", 2000) as usize;
    let seconds = env_u64("BENCH_SECONDS", 5);
    let soak_seconds = env_u64("BENCH_SOAK_SECONDS", 600);
    let out = std::env::var("BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("docs/benchmarks.md"));
    let mut report = Report::default();

    let vault = Vault::start().await?;
    vault.write("sys/auth/jwt", json!({"type": "jwt"})).await?;
    let pubkey = std::fs::read_to_string(root().join("tests/fixtures/sa-signing-key.pub.pem"))?;
    vault
        .write(
            "auth/jwt/config",
            json!({"jwt_validation_pubkeys": [pubkey]}),
        )
        .await?;
    vault
        .write(
            "sys/policies/acl/app",
            json!({"policy": "path \"secret/data/bench/*\" { capabilities = [\"read\"] }"}),
        )
        .await?;
    vault
        .write("auth/jwt/role/app", json!({"role_type": "jwt", "user_claim": "sub", "bound_subject": format!("system:serviceaccount:{NS}:{SA}"), "bound_audiences": ["vault"], "token_policies": ["app"], "token_ttl": "2h"}))
        .await?;
    for i in 0..25 {
        vault
            .write(
                &format!("secret/data/bench/s{i}"),
                json!({"data": {"value": format!("bench-value-{i}")}}),
            )
            .await?;
    }

    let dir = std::env::temp_dir().join(format!("coffer-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    if std::env::var("BENCH_ONLY").is_ok_and(|v| v == "scale") {
        let section = scale::run(&vault, &dir).await?.render();
        let _ = std::fs::remove_dir_all(&dir);
        println!("{section}");
        let old = std::fs::read_to_string(&out).unwrap_or_default();
        std::fs::write(&out, splice_section(&old, "\n## Scale\n", &section))?;
        eprintln!("wrote the scale section of {}", out.display());
        return Ok(());
    }
    if let Ok(list) = std::env::var("BENCH_COMPARE") {
        let bins: Vec<PathBuf> = list.split(',').map(PathBuf::from).collect();
        let table = compare(&vault, &dir, &bins).await?;
        let _ = std::fs::remove_dir_all(&dir);
        println!("{table}");
        return Ok(());
    }
    // Cold start: the best of 5 (the binary and its pages warm after the first).
    let mut cold = Vec::new();
    for _ in 0..env_u64("BENCH_COLD_STARTS", 5) {
        let c = start_coffer(&dir)?;
        cold.push(c.cold_start);
    }
    let coffer = start_coffer(&dir)?;
    cold.push(coffer.cold_start);
    cold.sort();
    report.cold_start_ms = (
        cold[0].as_secs_f64() * 1e3,
        cold[cold.len() / 2].as_secs_f64() * 1e3,
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    report.rss_idle_kib = proc_status(coffer.pid, "VmRSS:");

    // Warm 1-object mount, sequential, one connection (as the driver holds
    // one), and the floor: the same read over one keep-alive HTTP
    // connection with a token of the same policy. Measured in alternating
    // rounds (BENCH_ROUNDS, default 10), so a drift of the machine's speed
    // during the run moves both alike; CPU is counted over the mount rounds.
    let token = mint("web-0", &uid(0));
    let one = objects(1);
    let mut client = connect(&coffer.socket).await?;
    let req = request(&vault.addr, &one, "web-0", &uid(0), &token);
    let login: Value = serde_json::from_slice(
        &vault
            .http
            .post(format!("{}/v1/auth/jwt/login", vault.addr))
            .body(serde_json::to_vec(&json!({"role": "app", "jwt": token}))?)
            .send()
            .await?
            .bytes()
            .await?,
    )?;
    let vtoken = login["auth"]["client_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let direct = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()?;
    let url = format!("{}/v1/secret/data/bench/s0", vault.addr);
    let read_direct = || async {
        direct
            .get(&url)
            .header("X-Vault-Token", &vtoken)
            .send()
            .await?
            .bytes()
            .await
    };
    for _ in 0..200 {
        client.mount(req.clone()).await?;
        read_direct().await?;
    }
    let rounds = env_u64("BENCH_ROUNDS", 10).max(1) as usize;
    let per_round = mounts.div_ceil(rounds);
    let mut lat = Vec::with_capacity(mounts);
    let mut floor = Vec::with_capacity(mounts);
    let mut rpc = Vec::with_capacity(mounts);
    // CPU per mount of each round; the report gives their median, as the
    // side-by-side mode does, so one slow spell of the machine does not
    // decide the figure (the mean is printed beside it).
    let mut cpu_rounds = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let cpu_before = CpuSample::of(coffer.pid);
        for _ in 0..per_round {
            let t = Instant::now();
            client.mount(req.clone()).await?;
            lat.push(t.elapsed());
        }
        let used = cpu_before.seconds_until(&CpuSample::of(coffer.pid));
        cpu_rounds.push(used * 1e6 / per_round as f64);
        for _ in 0..per_round {
            let t = Instant::now();
            read_direct().await?;
            floor.push(t.elapsed());
        }
        // The gRPC half of the floor: a round trip on the same connection
        // that does no work (`Version`).
        for _ in 0..per_round {
            let t = Instant::now();
            client
                .version(coffer::grpc::VersionRequest {
                    version: "v1alpha1".into(),
                })
                .await?;
            rpc.push(t.elapsed());
        }
    }
    lat.sort();
    floor.sort();
    rpc.sort();
    report.rpc = (percentile(&rpc, 0.5), percentile(&rpc, 0.99));
    report.mount = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    report.floor = (percentile(&floor, 0.5), percentile(&floor, 0.99));
    report.cpu_mean_us = cpu_rounds.iter().sum::<f64>() / cpu_rounds.len().max(1) as f64;
    cpu_rounds.sort_by(f64::total_cmp);
    report.cpu_us_per_mount = cpu_rounds.get(cpu_rounds.len() / 2).copied().unwrap_or(0.0);

    // Backend calls per warm mount for 1, 10, 25 objects (distinct paths).
    for n in [1usize, 10, 25] {
        let objs = objects(n);
        let req = request(&vault.addr, &objs, "web-0", &uid(0), &token);
        client.mount(req.clone()).await?;
        let (l0, r0) = (
            metric(
                &coffer.health,
                "coffer_backend_requests_total{backend=\"vault\",operation=\"login\"",
            )
            .await,
            metric(
                &coffer.health,
                "coffer_backend_requests_total{backend=\"vault\",operation=\"read\"",
            )
            .await,
        );
        for _ in 0..100 {
            client.mount(req.clone()).await?;
        }
        let (l1, r1) = (
            metric(
                &coffer.health,
                "coffer_backend_requests_total{backend=\"vault\",operation=\"login\"",
            )
            .await,
            metric(
                &coffer.health,
                "coffer_backend_requests_total{backend=\"vault\",operation=\"read\"",
            )
            .await,
        );
        report.calls.push((n, (l1 - l0) / 100.0, (r1 - r0) / 100.0));
    }

    // Throughput at 1, 16, 64 concurrent callers on one connection, 64 warm pods.
    let pods: Vec<MountRequest> = (0..64)
        .map(|i| {
            request(
                &vault.addr,
                &one,
                &format!("web-{i}"),
                &uid(i),
                &mint(&format!("web-{i}"), &uid(i)),
            )
        })
        .collect();
    for p in &pods {
        client.mount(p.clone()).await?;
    }
    let pods = Arc::new(pods);
    for clients in [1usize, 16, 64].into_iter().filter(|_| seconds > 0) {
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (mut client, pods, stop, errors) =
                (client.clone(), pods.clone(), stop.clone(), errors.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = c;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    if client.mount(pods[i % pods.len()].clone()).await.is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    lat.push(t.elapsed());
                    i += clients;
                }
                lat
            }));
        }
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await?);
        }
        all.sort();
        report.throughput.push((
            clients,
            all.len() as f64 / seconds as f64,
            percentile(&all, 0.99),
            errors.load(Ordering::Relaxed),
        ));
    }

    // RSS after 10,000 mounts over 1,000 pods (a login cached for each).
    let after_mounts = env_u64("BENCH_RSS_MOUNTS", 10_000) as usize;
    let many: Vec<MountRequest> = (0..1000)
        .map(|i| {
            request(
                &vault.addr,
                &one,
                &format!("p-{i}"),
                &uid(10_000 + i),
                &mint(&format!("p-{i}"), &uid(10_000 + i)),
            )
        })
        .collect();
    let many = Arc::new(many);
    let mut tasks = Vec::new();
    for c in 0..16usize {
        let (mut client, many) = (client.clone(), many.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while i < after_mounts {
                let _ = client.mount(many[i % many.len()].clone()).await;
                i += 16;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    report.rss_after_kib = proc_status(coffer.pid, "VmRSS:");

    // The scale model: AWS requests per API against moto, Vault per pod-minute
    // (BENCH_SCALE_PODS=0 skips it, e.g. under a profiler).
    if env_u64("BENCH_SCALE_PODS", 100) > 0 {
        report.scale = Some(scale::run(&vault, &dir).await?.render());
    }

    // Soak: rotation-style republishes over 5,000 pods, RSS sampled.
    if soak_seconds > 0 {
        let tokens: Vec<String> = (0..5000)
            .map(|i| mint(&format!("s-{i}"), &uid(20_000 + i)))
            .collect();
        let started = Instant::now();
        let mut i = 0usize;
        let mut next_sample = Instant::now();
        let mut errors = 0u64;
        while started.elapsed() < Duration::from_secs(soak_seconds) {
            if Instant::now() >= next_sample {
                report.soak.push((
                    started.elapsed().as_secs(),
                    proc_status(coffer.pid, "VmRSS:"),
                ));
                next_sample += Duration::from_secs((soak_seconds / 10).max(1));
            }
            let k = i % 5000;
            let futures: Vec<_> = (0..16)
                .map(|j| {
                    let k = (k + j * 313) % 5000;
                    let mut client = client.clone();
                    let req = request(
                        &vault.addr,
                        &one,
                        &format!("s-{k}"),
                        &uid(20_000 + k),
                        &tokens[k],
                    );
                    async move { client.mount(req).await.is_ok() }
                })
                .collect();
            errors += futures_util::future::join_all(futures)
                .await
                .iter()
                .filter(|ok| !**ok)
                .count() as u64;
            i += 1;
        }
        report.soak.push((
            started.elapsed().as_secs(),
            proc_status(coffer.pid, "VmRSS:"),
        ));
        report.soak_errors = errors;
        report.soak_mounts = i as u64 * 16;
    }
    report.peak_rss_kib = proc_status(coffer.pid, "VmHWM:");
    let _ = std::fs::remove_dir_all(&dir);

    let mut text = report.render(mounts, seconds, soak_seconds);
    println!("{text}");
    // Keep the side-by-side section `make bench-peers` (e2e/compat.rs) wrote.
    if let Ok(old) = std::fs::read_to_string(&out)
        && let Some(start) = old.find(SIDE_BY_SIDE_BEGIN)
    {
        text.push('\n');
        text.push_str(&old[start..]);
    }
    std::fs::write(&out, text)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// BENCH_COMPARE=a,b: builds side by side against the same OpenBao, in
/// alternating rounds (BENCH_COMPARE_ROUNDS, default 10) of BENCH_MOUNTS
/// sequential warm one-object mounts each, so a drift of the machine's
/// speed during the run touches every build alike. Reports, per build, the
/// median over rounds of CPU per mount (on-CPU time of its threads, /proc/PID/task/*/schedstat) and of p50.
async fn compare(vault: &Vault, dir: &Path, bins: &[PathBuf]) -> Result<String> {
    let rounds = env_u64("BENCH_COMPARE_ROUNDS", 10) as usize;
    let batch = env_u64("BENCH_MOUNTS", 2000) as usize;
    let token = mint("web-0", &uid(0));
    let req = request(&vault.addr, &objects(1), "web-0", &uid(0), &token);
    let mut runs = Vec::new();
    for (i, bin) in bins.iter().enumerate() {
        let own = dir.join(format!("b{i}"));
        std::fs::create_dir_all(&own)?;
        let coffer = start_coffer_bin(bin, &own, "vault", &[])?;
        let mut client = connect(&coffer.socket).await?;
        for _ in 0..200 {
            client.mount(req.clone()).await?;
        }
        runs.push((coffer, client, Vec::new(), Vec::new()));
    }
    for round in 0..rounds {
        let n = runs.len();
        for k in 0..n {
            // Alternate which build goes first.
            let (coffer, client, cpu, p50) = &mut runs[(k + round) % n];
            let before = CpuSample::of(coffer.pid);
            let mut lat = Vec::with_capacity(batch);
            for _ in 0..batch {
                let t = Instant::now();
                client.mount(req.clone()).await?;
                lat.push(t.elapsed());
            }
            cpu.push(before.seconds_until(&CpuSample::of(coffer.pid)) * 1e6 / batch as f64);
            lat.sort();
            p50.push(us(percentile(&lat, 0.5)));
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut table = format!(
        "| build | CPU per warm mount (median of {rounds} rounds of {batch}) | p50 (median) | CPU per round |\n|---|---:|---:|---|\n"
    );
    for (bin, (_, _, cpu, p50)) in bins.iter().zip(&mut runs) {
        let per_round: Vec<String> = cpu.iter().map(|c| format!("{c:.0}")).collect();
        table.push_str(&format!(
            "| {} | {:.0} µs | {:.0} µs | {} |\n",
            bin.display(),
            median(cpu),
            median(p50),
            per_round.join(" ")
        ));
    }
    Ok(table)
}

/// `old` with its section starting at `heading` (up to the next `\n## `)
/// replaced by `section`, or `section` appended.
fn splice_section(old: &str, heading: &str, section: &str) -> String {
    match old.find(heading) {
        Some(start) => {
            let rest = &old[start + heading.len()..];
            let end = rest
                .find("\n## ")
                .map_or(old.len(), |e| start + heading.len() + e);
            format!("{}{}{}", &old[..start], section, &old[end..])
        }
        None => format!("{old}{section}"),
    }
}

/// What the profile says about where a mount's time goes (valgrind
/// --tool=callgrind through BENCH_WRAPPER and `perf record`, 2026-12-02).
const NOTES: &str = "
## Notes

- **Where a warm mount's CPU goes.** A third or more is the kernel (`perf record` of coffer
  during the sequential run): a mount waits twice, for the driver's request and for Vault's
  answer, and each wait is a sleep and a wake-up of the worker thread, plus one socket write
  each way. User space, counted with callgrind (`BENCH_WRAPPER=\"valgrind --tool=callgrind\"`,
  two runs 500 mounts apart): about 170,000 instructions per warm one-object mount, of which
  tonic, h2 and hyper's server around the mount about 95,000, the Vault read about 36,000 (the
  HTTP exchange through hyper-util about 17,000), the files and their versions about 19,000
  (HMAC-SHA-256, 17,000 of it under valgrind's software SHA-256; a CPU with SHA extensions does
  it in a few thousand), and the request's lookup in the memo of parsed requests about 4,000.
- **Mount against the floor**: the floor is what any provider pays: a gRPC round trip on the
  same connection that does no work (`Version`) plus the same read by a keep-alive HTTP/1.1
  client that does nothing else. The mount / direct read ratio beside it counts the mount's
  own gRPC round trip as overhead too. Mount, read and round trip are measured in alternating
  rounds, so a change of the machine's speed during the run moves them alike; runs on a loaded
  machine still move the numbers.
- **One worker thread** (`--worker-threads`, default 1): with two, every mount woke the idle
  worker (futex calls, context switches) and cost more CPU and fewer mounts/s on two cores.
- **Throughput** is bounded by the two cores shared by coffer, OpenBao and the load generator.
";

#[derive(Default)]
struct Report {
    /// The rendered `## Scale` section.
    scale: Option<String>,
    cold_start_ms: (f64, f64),
    rss_idle_kib: u64,
    rss_after_kib: u64,
    peak_rss_kib: u64,
    mount: (Duration, Duration),
    floor: (Duration, Duration),
    /// A gRPC round trip that does no work (`Version`), p50 and p99.
    rpc: (Duration, Duration),
    /// Median over the rounds, and the mean.
    cpu_us_per_mount: f64,
    cpu_mean_us: f64,
    calls: Vec<(usize, f64, f64)>,
    throughput: Vec<(usize, f64, Duration, u64)>,
    soak: Vec<(u64, u64)>,
    soak_errors: u64,
    soak_mounts: u64,
}

impl Report {
    fn render(&self, mounts: usize, seconds: u64, soak_seconds: u64) -> String {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines().find_map(|l| {
                    l.strip_prefix("model name")
                        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
                })
            })
            .unwrap_or_default();
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let met = |ok: bool| if ok { "met" } else { "missed" };
        let direct_ratio = self.mount.0.as_secs_f64() / self.floor.0.as_secs_f64().max(1e-9);
        let ratio =
            self.mount.0.as_secs_f64() / (self.floor.0 + self.rpc.0).as_secs_f64().max(1e-9);
        let mut s = String::new();
        s.push_str("# Benchmarks\n\nMeasured by `make bench` (`e2e/bench.rs`): release build of coffer, a real OpenBao dev server, both on 127.0.0.1, coffer driven through its Unix socket with one HTTP/2 connection, as the Secrets Store CSI driver does. Numbers are from one run; rerun `make bench` to reproduce.\n\n");
        s.push_str(&format!(
            "Machine: {cores} cores, {cpu}. Date: {}.\n\n",
            time::OffsetDateTime::now_utc().date()
        ));
        s.push_str("| figure | measured | target | |\n|---|---|---|---|\n");
        s.push_str(&format!(
            "| warm 1-object mount, p50 / p99 ({mounts} sequential, in rounds alternating with the floor's) | {:.0} µs / {:.0} µs | | |\n",
            us(self.mount.0),
            us(self.mount.1)
        ));
        s.push_str(&format!(
            "| direct keep-alive read of the same secret, p50 / p99 | {:.0} µs / {:.0} µs | | |\n",
            us(self.floor.0),
            us(self.floor.1)
        ));
        s.push_str(&format!("| gRPC round trip on the same connection that does no work (`Version`), p50 / p99 | {:.0} µs / {:.0} µs | | |\n", us(self.rpc.0), us(self.rpc.1)));
        s.push_str(&format!(
            "| mount / floor at p50, the floor being a gRPC round trip plus the direct read ({:.0} µs) | {ratio:.2}× | ≤ 1.3× | {} |\n",
            us(self.floor.0 + self.rpc.0),
            met(ratio <= 1.3)
        ));
        s.push_str(&format!(
            "| mount / the direct read alone at p50 (stricter: the mount's own gRPC round trip counted as overhead) | {direct_ratio:.2}× | | |\n"
        ));
        for (clients, rate, p99, errors) in &self.throughput {
            let target = if *clients == 64 {
                format!("≥ 1,000/s | {}", met(*rate >= 1000.0))
            } else {
                " | ".to_owned()
            };
            s.push_str(&format!("| mounts/s with {clients} concurrent callers ({seconds} s), p99, errors | {rate:.0}/s, {:.1} ms, {errors} | {target} |\n", us(*p99) / 1e3));
        }
        for (n, logins, reads) in &self.calls {
            s.push_str(&format!("| Vault calls per warm mount, {n} objects on {n} paths: logins / reads | {logins:.2} / {reads:.2} | 0 / {n} | {} |\n", met(*logins == 0.0 && (*reads - *n as f64).abs() < 0.01)));
        }
        s.push_str(&format!("| provider CPU per warm 1-object mount (on-CPU time of its threads from /proc, user and system; median of the rounds, mean {:.0} µs) | {:.0} µs | ≤ 150 µs | {} |\n", self.cpu_mean_us, self.cpu_us_per_mount, met(self.cpu_us_per_mount <= 150.0)));
        s.push_str(&format!(
            "| RSS idle | {:.1} MiB | ≤ 15 MiB | {} |\n",
            self.rss_idle_kib as f64 / 1024.0,
            met(self.rss_idle_kib <= 15 * 1024)
        ));
        s.push_str(&format!(
            "| RSS after 10,000 mounts over 1,000 pods | {:.1} MiB | ≤ 64 MiB | {} |\n",
            self.rss_after_kib as f64 / 1024.0,
            met(self.rss_after_kib <= 64 * 1024)
        ));
        s.push_str(&format!("| cold start until the socket accepts, best / median of 6 | {:.1} ms / {:.1} ms | ≤ 50 ms | {} |\n", self.cold_start_ms.0, self.cold_start_ms.1, met(self.cold_start_ms.1 <= 50.0)));
        s.push_str(&format!(
            "| peak RSS of the whole run | {:.1} MiB | | |\n",
            self.peak_rss_kib as f64 / 1024.0
        ));
        s.push_str(NOTES);
        if let Some(scale) = &self.scale {
            s.push_str(scale);
        }
        if soak_seconds > 0 {
            s.push_str(&format!("\n## Soak\n\n{soak_seconds} s of rotation-style republishes, 16 at a time, over 5,000 pods: {} mounts, {} errors. RSS over time:\n\n| s | RSS MiB |\n|---|---|\n", self.soak_mounts, self.soak_errors));
            for (t, rss) in &self.soak {
                s.push_str(&format!("| {t} | {:.1} |\n", *rss as f64 / 1024.0));
            }
        }
        s
    }
}
