//! The scale model of `make bench`: P pods × S secrets × R republish
//! cycles against moto (requests per AWS API, counted by moto's request
//! recorder and by coffer's metrics) and against OpenBao (requests per
//! pod-minute), and the number of pods one AWS account-region serves at one
//! republish per pod per minute before its scarcest quota binds.
//!
//! Environment: BENCH_SCALE_PODS (default 100), BENCH_SCALE_SECRETS
//! (default 2), BENCH_SCALE_CYCLES (default 6, at least 3).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{
    Killed, Result, Vault, connect, env_u64, free_port, metric, mint, mint_for, mount_request,
    request, start_coffer_with, tool, uid,
};
use coffer::grpc::MountRequest;

/// Per account and region (Secrets Manager and SSM service quotas).
const QUOTAS: [(&str, f64); 4] = [
    ("secretsmanager.GetSecretValue", 10_000.0),
    ("secretsmanager.DescribeSecret", 40_000.0),
    ("secretsmanager.BatchGetSecretValue", 100.0),
    ("AmazonSSM.GetParameters", 40.0),
];
/// The APIs counted.
const APIS: [&str; 5] = [
    "secretsmanager.GetSecretValue",
    "secretsmanager.DescribeSecret",
    "secretsmanager.BatchGetSecretValue",
    "AmazonSSM.GetParameters",
    "sts.AssumeRoleWithWebIdentity",
];
/// coffer's metric name of each API.
fn metric_name(api: &str) -> &str {
    match api {
        "AmazonSSM.GetParameters" => "ssm.GetParameters",
        other => other,
    }
}
/// IRSA credentials last an hour; coffer renews them 5 minutes early, and
/// new credentials drop what the old ones read.
const CREDENTIAL_MINUTES: f64 = 55.0;

/// Requests per pod in each phase of one design's run.
#[derive(Default, Clone)]
pub struct Phases {
    /// First mount of every pod.
    pub cold: BTreeMap<String, f64>,
    /// A republish with nothing changed.
    pub steady: BTreeMap<String, f64>,
    /// The republish after one secret changed.
    pub changed: BTreeMap<String, f64>,
    /// Whether moto's count and coffer's metrics agreed.
    pub agree: bool,
}

pub struct Design {
    pub name: &'static str,
    pub how: &'static str,
    pub phases: Phases,
}

impl Design {
    /// Requests per pod-minute at one republish per minute: the steady
    /// republish, except that once per credential lifetime the republish
    /// is a cold mount (new credentials read everything again).
    fn per_pod_minute(&self, api: &str) -> f64 {
        let get = |m: &BTreeMap<String, f64>| m.get(api).copied().unwrap_or(0.0);
        let (steady, cold) = (get(&self.phases.steady), get(&self.phases.cold));
        steady + (cold - steady) / CREDENTIAL_MINUTES
    }

    /// Pods per account-region before the first quota binds, and which.
    fn pods(&self) -> (f64, &'static str) {
        QUOTAS
            .iter()
            .filter_map(|(api, per_s)| {
                let r = self.per_pod_minute(api);
                (r > 0.0).then(|| (per_s * 60.0 / r, *api))
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .unwrap_or((f64::INFINITY, "none"))
    }
}

pub struct VaultScale {
    /// (refreshInterval, logins per pod-republish, reads per pod-republish)
    pub rows: Vec<(&'static str, f64, f64)>,
}

pub struct Scale {
    pub pods: usize,
    pub secrets: usize,
    pub cycles: usize,
    pub designs: Vec<Design>,
    pub vault: VaultScale,
}

struct Moto {
    addr: String,
    recording: std::path::PathBuf,
    http: reqwest::Client,
    _child: Killed,
}

impl Moto {
    async fn start(dir: &Path) -> Result<Moto> {
        let bin = tool("COFFER_MOTO_BIN")?;
        let port = free_port();
        std::fs::create_dir_all(dir)?;
        let recording = dir.join("recording.jsonl");
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(dir)
            .env("HOME", dir)
            .env("MOTO_RECORDER_FILEPATH", &recording)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let moto = Moto {
            addr: format!("http://127.0.0.1:{port}"),
            recording,
            http: reqwest::Client::new(),
            _child: Killed(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while moto
            .http
            .get(format!("{}/moto-api/data.json", moto.addr))
            .send()
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                return Err("moto did not start".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(moto)
    }

    async fn call(&self, target: &str, body: serde_json::Value) -> Result<()> {
        let resp = self
            .http
            .post(&self.addr)
            .header("Content-Type", "application/x-amz-json-1.1")
            .header("X-Amz-Target", target)
            .header("X-Amz-Date", "20260101T000000Z")
            .header("Authorization", "AWS4-HMAC-SHA256 Credential=testing/20260101/us-west-2/secretsmanager/aws4_request, SignedHeaders=host;x-amz-date, Signature=00")
            .body(serde_json::to_vec(&body)?)
            .send()
            .await?;
        if !resp.status().is_success() {
            return Err(format!("moto {target}: {}", resp.status()).into());
        }
        Ok(())
    }

    async fn start_recording(&self) -> Result<()> {
        self.http
            .post(format!("{}/moto-api/recorder/start-recording", self.addr))
            .send()
            .await?;
        Ok(())
    }

    /// Requests recorded so far, per API.
    fn counts(&self) -> BTreeMap<String, f64> {
        let text = std::fs::read_to_string(&self.recording).unwrap_or_default();
        let mut out = BTreeMap::new();
        for line in text.lines() {
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let api = super::moto_api::api_of(&entry);
            if let Some(api) = api {
                *out.entry(api).or_insert(0.0) += 1.0;
            }
        }
        out
    }
}

fn aws_request(objects: &str, pod: usize, token: &str) -> MountRequest {
    let params = [
        ("region", "us-west-2"),
        ("roleArn", "arn:aws:iam::123456789012:role/bench"),
        ("objects", objects),
    ];
    mount_request(
        "aws",
        "bench-aws",
        &params,
        &format!("aws-{pod}"),
        &uid(50_000 + pod),
        ("sts.amazonaws.com", token),
    )
}

/// Mounts every request once, 16 at a time; fails on the first error.
async fn cycle(
    client: &coffer::grpc::csi_driver_provider_client::CsiDriverProviderClient<
        tonic::transport::Channel,
    >,
    requests: &[MountRequest],
) -> Result<()> {
    for chunk in requests.chunks(16) {
        let results = futures_util::future::join_all(chunk.iter().map(|r| {
            let mut c = client.clone();
            let r = r.clone();
            async move { c.mount(r).await }
        }))
        .await;
        for r in results {
            r.map_err(|e| format!("mount: {} {}", e.code(), e.message()))?;
        }
    }
    Ok(())
}

fn diff(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>, per: f64) -> BTreeMap<String, f64> {
    APIS.iter()
        .map(|api| {
            let d = a.get(*api).copied().unwrap_or(0.0) - b.get(*api).copied().unwrap_or(0.0);
            ((*api).to_owned(), d / per)
        })
        .collect()
}

/// One design's run: P pods, R cycles (cold, R-2 unchanged, one changed).
async fn aws_design(
    dir: &Path,
    pods: usize,
    secrets: usize,
    cycles: usize,
    extra: &[&str],
) -> Result<Phases> {
    let moto = Moto::start(&dir.join("moto")).await?;
    for i in 0..secrets {
        moto.call(
            "secretsmanager.CreateSecret",
            json!({"Name": format!("scale/s{i}"), "SecretString": format!("{{\"v\":\"scale-{i}\"}}")}),
        )
        .await?;
    }
    moto.start_recording().await?;
    let aws_dir = dir.join("coffer");
    std::fs::create_dir_all(&aws_dir)?;
    let mut args = vec!["--aws-endpoint-url", moto.addr.as_str()];
    args.extend_from_slice(extra);
    let coffer = start_coffer_with(&aws_dir, "aws", &args)?;
    let client = connect(&coffer.socket).await?;
    let objects: String = (0..secrets)
        .map(|i| format!("- {{objectName: scale/s{i}, objectType: secretsmanager}}\n"))
        .collect();
    let requests: Vec<MountRequest> = (0..pods)
        .map(|p| {
            let token = mint_for(&format!("aws-{p}"), &uid(50_000 + p), "sts.amazonaws.com");
            aws_request(&objects, p, &token)
        })
        .collect();
    let by_coffer = || async {
        let mut m = BTreeMap::new();
        for api in APIS {
            let prefix = format!(
                "coffer_backend_requests_total{{backend=\"aws\",operation=\"{}\"",
                metric_name(api)
            );
            m.insert(api.to_owned(), metric(&coffer.health, &prefix).await);
        }
        m
    };
    let p = pods as f64;
    let start = moto.counts();
    cycle(&client, &requests).await?;
    let after_cold = moto.counts();
    for _ in 0..cycles - 2 {
        cycle(&client, &requests).await?;
    }
    let after_steady = moto.counts();
    moto.call(
        "secretsmanager.PutSecretValue",
        json!({"SecretId": "scale/s0", "SecretString": "{\"v\":\"changed\"}"}),
    )
    .await?;
    cycle(&client, &requests).await?;
    let after_changed = moto.counts();
    let coffer_total = by_coffer().await;
    let moto_total = diff(&after_changed, &start, 1.0);
    let agree = APIS
        .iter()
        .all(|api| (coffer_total.get(*api).copied().unwrap_or(0.0) - moto_total[*api]).abs() < 0.5);
    Ok(Phases {
        cold: diff(&after_cold, &start, p),
        steady: diff(&after_steady, &after_cold, p * (cycles - 2) as f64),
        changed: diff(&after_changed, &after_steady, p),
        agree,
    })
}

/// Vault: P pods × R cycles, logins and reads per pod-republish, without
/// and with a refreshInterval.
async fn vault_scale(
    vault: &Vault,
    dir: &Path,
    pods: usize,
    secrets: usize,
    cycles: usize,
) -> Result<VaultScale> {
    let vdir = dir.join("vault-scale");
    std::fs::create_dir_all(&vdir)?;
    let coffer = start_coffer_with(&vdir, "vault", &[])?;
    let client = connect(&coffer.socket).await?;
    let objects = super::objects(secrets);
    let mut rows = Vec::new();
    for (label, interval) in [("0 (default)", None), ("5m", Some("5m"))] {
        let requests: Vec<MountRequest> = (0..pods)
            .map(|p| {
                let name = format!("v-{label}-{p}");
                let u = uid(if interval.is_some() { 70_000 } else { 60_000 } + p);
                let mut r = request(&vault.addr, &objects, &name, &u, &mint(&name, &u));
                if let Some(i) = interval {
                    r.attributes = add_param(&r.attributes, "refreshInterval", i);
                }
                r
            })
            .collect();
        cycle(&client, &requests).await?;
        let q = |op: &'static str| {
            let prefix =
                format!("coffer_backend_requests_total{{backend=\"vault\",operation=\"{op}\"");
            let health = coffer.health.clone();
            async move { metric(&health, &prefix).await }
        };
        let (l0, r0) = (q("login").await, q("read").await);
        for _ in 0..cycles - 1 {
            cycle(&client, &requests).await?;
        }
        let (l1, r1) = (q("login").await, q("read").await);
        let n = (pods * (cycles - 1)) as f64;
        rows.push((label, (l1 - l0) / n, (r1 - r0) / n));
    }
    Ok(VaultScale { rows })
}

fn add_param(attributes: &str, key: &str, value: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(attributes).unwrap_or_default();
    v[key] = json!(value);
    v.to_string()
}

pub async fn run(vault: &Vault, dir: &Path) -> Result<Scale> {
    let pods = env_u64("BENCH_SCALE_PODS", 100) as usize;
    let secrets = env_u64("BENCH_SCALE_SECRETS", 2) as usize;
    let cycles = (env_u64("BENCH_SCALE_CYCLES", 6) as usize).max(3);
    let coffer = aws_design(&dir.join("scale-coffer"), pods, secrets, cycles, &[]).await?;
    let every = aws_design(
        &dir.join("scale-every"),
        pods,
        secrets,
        cycles,
        &["--aws-held-values", "0"],
    )
    .await?;
    // The mount-path BatchGetSecretValue design (coffer before this change):
    // one batch per 20 secrets on every mount; STS as coffer.
    let batches = secrets.div_ceil(20) as f64;
    let mut batch = Phases {
        agree: true,
        ..Phases::default()
    };
    for phase in [&mut batch.cold, &mut batch.steady, &mut batch.changed] {
        phase.insert("secretsmanager.BatchGetSecretValue".into(), batches);
    }
    batch.cold.insert(
        "sts.AssumeRoleWithWebIdentity".into(),
        coffer
            .cold
            .get("sts.AssumeRoleWithWebIdentity")
            .copied()
            .unwrap_or(0.0),
    );
    let vault = vault_scale(vault, dir, pods, secrets, cycles).await?;
    Ok(Scale {
        pods,
        secrets,
        cycles,
        designs: vec![
            Design {
                name: "coffer",
                how: "measured",
                phases: coffer,
            },
            Design {
                name: "BatchGetSecretValue on every mount",
                how: "modelled: ⌈S/20⌉ batch calls per mount",
                phases: batch,
            },
            Design {
                name: "GetSecretValue on every mount",
                how: "measured: coffer with --aws-held-values=0",
                phases: every,
            },
        ],
        vault,
    })
}

fn fmt_pods(n: f64) -> String {
    if !n.is_finite() {
        return "unbounded".into();
    }
    let n = n.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Scale {
    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str("\n## Scale\n\n");
        s.push_str(&format!(
            "The scale model (`e2e/scale.rs`): {} pods × {} Secrets Manager secrets × {} mount cycles against moto (the first cycle cold, then {} republishes with nothing changed, then one with one secret changed), counted per AWS API by moto's request recorder{}. Requests per pod-minute assume one republish per pod per minute (driver v1.6's rotation poll), one in every {} of which is a cold mount (IRSA credentials last an hour and are renewed 5 minutes early; new credentials drop what the old ones read); pod churn adds one cold mount per new pod. Quotas per account and region: GetSecretValue 10,000/s, DescribeSecret 40,000/s, BatchGetSecretValue 100/s (not adjustable), SSM GetParameters 40/s (default). STS AssumeRoleWithWebIdentity is throttled per account without a published rate; every design makes one call per pod per credential lifetime.\n\n",
            self.pods,
            self.secrets,
            self.cycles,
            self.cycles - 2,
            if self.designs.iter().all(|d| d.phases.agree) {
                " (coffer's `coffer_backend_requests_total` agreed on every count)"
            } else {
                " (coffer's `coffer_backend_requests_total` did NOT agree with moto on every count)"
            },
            CREDENTIAL_MINUTES
        ));
        if let Ok(bin) = std::env::var("BENCH_COFFER_BIN") {
            let bin = bin.rsplit("/target/").next().unwrap_or(&bin).to_owned();
            s.push_str(&format!("This section was measured with `BENCH_COFFER_BIN=target/{bin}`: request counts do not depend on the build.\n\n"));
        }
        s.push_str("Requests per pod (GetSecretValue / DescribeSecret / BatchGetSecretValue / STS):\n\n| design | how | cold mount | republish, unchanged | republish, one secret changed |\n|---|---|---|---|---|\n");
        let row = |m: &BTreeMap<String, f64>| {
            let g = |api: &str| m.get(api).copied().unwrap_or(0.0);
            format!(
                "{:.2} / {:.2} / {:.2} / {:.2}",
                g("secretsmanager.GetSecretValue"),
                g("secretsmanager.DescribeSecret"),
                g("secretsmanager.BatchGetSecretValue"),
                g("sts.AssumeRoleWithWebIdentity")
            )
        };
        for d in &self.designs {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                d.name,
                d.how,
                row(&d.phases.cold),
                row(&d.phases.steady),
                row(&d.phases.changed)
            ));
        }
        s.push_str(&format!("\nPods per account-region at one republish per pod per minute, {} secrets each, before the scarcest quota binds:\n\n| design | GetSecretValue / DescribeSecret / BatchGetSecretValue per pod-minute | pods | binding quota | goal ≥ 1,000,000 (2 secrets) |\n|---|---|---|---|---|\n", self.secrets));
        for d in &self.designs {
            let (pods, api) = d.pods();
            s.push_str(&format!(
                "| {} | {:.3} / {:.3} / {:.3} | {} | {} | {} |\n",
                d.name,
                d.per_pod_minute("secretsmanager.GetSecretValue"),
                d.per_pod_minute("secretsmanager.DescribeSecret"),
                d.per_pod_minute("secretsmanager.BatchGetSecretValue"),
                fmt_pods(pods),
                api,
                if pods >= 1_000_000.0 { "met" } else { "missed" }
            ));
        }
        s.push_str(&format!("\nSSM parameters are read with `GetParameters` (10 names per call) on every mount in every design: at the default 40/s, {} pods with up to 10 parameters each at one republish per minute; `refreshInterval` divides that load by the interval in minutes.\n", fmt_pods(40.0 * 60.0)));
        s.push_str(&format!("\nVault (OpenBao), the same {} pods × {} objects on distinct paths, {} republishes each after the first mount (login token TTL 2 h: one login per pod per 96 minutes, at 80% of it):\n\n| refreshInterval | logins / reads per republish (measured) | requests per pod-minute at one republish per minute |\n|---|---|---|\n", self.pods, self.secrets, self.cycles - 1));
        for (label, logins, reads) in &self.vault.rows {
            // Within the interval the republishes are free; one in every
            // `minutes` republishes asks Vault.
            let minutes = if label.starts_with('5') { 5.0 } else { 1.0 };
            let per_minute = if minutes > 1.0 {
                self.secrets as f64 / minutes + 1.0 / 96.0
            } else {
                reads + logins + 1.0 / 96.0
            };
            s.push_str(&format!(
                "| {label} | {logins:.2} / {reads:.2} | {per_minute:.2} |\n"
            ));
        }
        s
    }
}
