//! A real moto server (`moto_server`, from `moto[server]`) for the AWS
//! tests: Secrets Manager, SSM Parameter Store and STS on 127.0.0.1.
//!
//! Seeding goes through moto's AWS API itself (JSON 1.1 protocol, like the
//! SDKs). moto does not check signatures; it takes the service and region
//! from the SigV4 credential scope, so [`Moto::call`] sends a scope only.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use super::proc::{self, Fixture, Process, Spec};
use super::{free_port, http, tool_setting};

/// How long `Moto::start` waits for the server.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

pub const NOT_INSTALLED: &str = "moto not installed: run `bash e2e/setup.sh` (make test does)";

const SPEC: Spec = Spec {
    name: "moto",
    dir_prefix: "moto",
    log_file: "moto.log",
    tail_lines: 40,
};

pub fn moto_bin() -> PathBuf {
    match tool_setting("COFFER_MOTO_BIN") {
        Some(p) if std::path::Path::new(&p).is_file() => PathBuf::from(p),
        _ => panic!("{NOT_INSTALLED}"),
    }
}

/// How long one seeding call may take (see [`Moto::call`]).
const CALL_TIMEOUT: Duration = Duration::from_secs(90);

/// moto's request recorder writes here, in the server's directory.
const RECORDING: &str = "recording.jsonl";

pub struct Moto {
    /// `http://127.0.0.1:PORT`
    pub addr: String,
    process: Process,
    pub log_path: PathBuf,
}

impl Fixture for Moto {
    fn process(&self) -> &Process {
        &self.process
    }

    fn is_ready(&self) -> bool {
        http::probe(&self.addr, "/moto-api/data.json")
            .map(|r| r.status == 200)
            .unwrap_or(false)
    }

    fn awaiting(&self) -> String {
        format!("GET {}/moto-api/data.json", self.addr)
    }
}

impl Moto {
    /// Starts `moto_server -H 127.0.0.1 -p PORT` and waits (≤ 30 s) until it
    /// answers (again on another port if its port was taken, see
    /// [`proc::start`]).
    pub fn start() -> Moto {
        let bin = moto_bin();
        proc::start(START_TIMEOUT, || {
            let port = free_port();
            let process = Process::spawn(SPEC, &bin, |cmd, dir| {
                cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                    .env("HOME", dir)
                    .env("PYTHONDONTWRITEBYTECODE", "1")
                    .env("MOTO_RECORDER_FILEPATH", dir.join(RECORDING));
            });
            Moto {
                addr: format!("http://127.0.0.1:{port}"),
                log_path: process.log_path().to_owned(),
                process,
            }
        })
    }

    pub fn log_text(&self) -> String {
        self.process.log_text()
    }

    pub fn dir(&self) -> &std::path::Path {
        self.process.dir()
    }

    /// Starts moto's request recorder (`/moto-api/recorder/start-recording`):
    /// from now on every request moto answers is appended to its recording,
    /// which [`Moto::requests`] reads.
    pub fn start_recording(&self) {
        let r = http::request(
            &self.addr,
            "POST",
            "/moto-api/recorder/start-recording",
            &[],
            Some(b""),
        )
        .expect("moto start-recording");
        assert_eq!(r.status, 200, "moto start-recording");
    }

    /// The API of every request recorded so far, in order: the
    /// `X-Amz-Target` of JSON APIs (`secretsmanager.GetSecretValue`,
    /// `AmazonSSM.GetParameters`), `sts.<Action>` for STS's query API.
    pub fn requests(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.dir().join(RECORDING)).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let entry: Value = serde_json::from_str(line).expect("moto recording line");
                super::moto_api::api_of(&entry)
                    .unwrap_or_else(|| format!("{} {}", entry["method"], entry["url"]))
            })
            .collect()
    }

    /// How many recorded requests called `api` (as [`Moto::requests`] names it).
    pub fn count(&self, api: &str) -> usize {
        self.requests().iter().filter(|r| *r == api).count()
    }

    /// One JSON 1.1 call: `service` is the signing name (`secretsmanager`,
    /// `ssm`), `target` the X-Amz-Target (`secretsmanager.CreateSecret`,
    /// `AmazonSSM.PutParameter`). Returns (status, JSON body).
    pub fn call(&self, service: &str, region: &str, target: &str, body: &Value) -> (u16, Value) {
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=testing/20260101/{region}/{service}/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"
        );
        let bytes = serde_json::to_vec(body).unwrap();
        // moto builds a service's backend on its first call; SSM's loads
        // thousands of AWS public parameters, CPU seconds that stretch past
        // the default 10 s on a loaded 2-core machine.
        let resp = http::request_within(
            &self.addr,
            "POST",
            "/",
            &[
                ("Content-Type", "application/x-amz-json-1.1"),
                ("X-Amz-Target", target),
                ("X-Amz-Date", "20260101T000000Z"),
                ("Authorization", &auth),
            ],
            Some(&bytes),
            CALL_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("moto {target}: {e}"));
        (resp.status, resp.json())
    }

    fn ok(&self, service: &str, region: &str, target: &str, body: Value) -> Value {
        let (status, v) = self.call(service, region, target, &body);
        assert_eq!(status, 200, "moto {target} in {region}: {v}");
        v
    }

    /// Creates a secret with a SecretString; returns its ARN.
    pub fn create_secret(&self, region: &str, name: &str, value: &str) -> String {
        let v = self.ok(
            "secretsmanager",
            region,
            "secretsmanager.CreateSecret",
            json!({"Name": name, "SecretString": value}),
        );
        v["ARN"].as_str().unwrap().to_owned()
    }

    /// Creates a secret with a SecretBinary; returns its ARN.
    pub fn create_binary_secret(&self, region: &str, name: &str, value: &[u8]) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(value);
        let v = self.ok(
            "secretsmanager",
            region,
            "secretsmanager.CreateSecret",
            json!({"Name": name, "SecretBinary": b64}),
        );
        v["ARN"].as_str().unwrap().to_owned()
    }

    /// A new current version of a secret; returns its VersionId.
    pub fn put_secret_value(&self, region: &str, id: &str, value: &str) -> String {
        let v = self.ok(
            "secretsmanager",
            region,
            "secretsmanager.PutSecretValue",
            json!({"SecretId": id, "SecretString": value}),
        );
        v["VersionId"].as_str().unwrap().to_owned()
    }

    /// Creates or overwrites a parameter (`String`, `StringList`, `SecureString`); returns its version.
    pub fn put_parameter(&self, region: &str, name: &str, value: &str, kind: &str) -> i64 {
        let v = self.ok(
            "ssm",
            region,
            "AmazonSSM.PutParameter",
            json!({"Name": name, "Value": value, "Type": kind, "Overwrite": true}),
        );
        v["Version"].as_i64().unwrap()
    }

    pub fn label_parameter(&self, region: &str, name: &str, version: i64, label: &str) {
        self.ok(
            "ssm",
            region,
            "AmazonSSM.LabelParameterVersion",
            json!({"Name": name, "ParameterVersion": version, "Labels": [label]}),
        );
    }
}
