//! A tiny HTTP/1.1 server on 127.0.0.1 for stand-ins the tests need: a
//! Kubernetes API that serves a ServiceAccount and a Node, an EKS Pod
//! Identity agent. Each request is answered by a handler and recorded;
//! every connection is closed after one response. Stops on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// (status, content type, body)
pub type Reply = (u16, &'static str, Vec<u8>);
type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

pub struct Stub {
    /// `http://127.0.0.1:PORT`
    pub addr: String,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    port: u16,
}

impl Stub {
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind stub");
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (reqs, stopping) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (reqs, handler) = (reqs.clone(), handler.clone());
                std::thread::spawn(move || serve(conn, &reqs, &*handler));
            }
        });
        Stub {
            addr: format!("http://127.0.0.1:{port}"),
            requests,
            stop,
            thread: Some(thread),
            port,
        }
    }

    /// `http://127.0.0.1:PORT`, the same as `addr`.
    pub fn url(&self) -> String {
        self.addr.clone()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// How many requests had this path.
    pub fn count(&self, path: &str) -> usize {
        self.requests().iter().filter(|r| r.path == path).count()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, requests: &Mutex<Vec<Request>>, handler: &Handler) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    if len > 0 && reader.read_exact(&mut body).is_err() {
        return;
    }
    let req = Request {
        method,
        path,
        headers,
        body,
    };
    let (status, content_type, body) = handler(&req);
    requests.lock().unwrap().push(req);
    let mut conn = conn;
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        if status < 400 { "OK" } else { "Error" },
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(&body);
    let _ = conn.flush();
}

/// (namespace, name, annotations) of a ServiceAccount.
pub type ServiceAccountSpec = (String, String, Vec<(String, String)>);
/// (name, labels) of a Node.
pub type NodeSpec = (String, Vec<(String, String)>);

/// A Kubernetes API stand-in: `GET /api/v1/namespaces/NS/serviceaccounts/SA`
/// (with `annotations`) and `GET /api/v1/nodes/NODE` (with `labels`); 404
/// `Status` otherwise. Returns the server and a kubeconfig file for it.
pub fn kube_api(
    service_accounts: Vec<ServiceAccountSpec>,
    nodes: Vec<NodeSpec>,
    dir: &std::path::Path,
) -> (Stub, std::path::PathBuf) {
    let stub = Stub::start(move |req| {
        let not_found = || {
            (
                404,
                "application/json",
                serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": format!("{} not found", req.path), "reason": "NotFound", "code": 404}).to_string().into_bytes(),
            )
        };
        if req.method != "GET" {
            return not_found();
        }
        let path = req.path.split('?').next().unwrap_or("");
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            ["api", "v1", "namespaces", ns, "serviceaccounts", name] => {
                match service_accounts
                    .iter()
                    .find(|(n, s, _)| n == ns && s == name)
                {
                    Some((n, s, annotations)) => {
                        let ann: serde_json::Map<String, serde_json::Value> = annotations
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone().into()))
                            .collect();
                        (
                            200,
                            "application/json",
                            serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": s, "namespace": n, "annotations": ann}}).to_string().into_bytes(),
                        )
                    }
                    None => not_found(),
                }
            }
            ["api", "v1", "nodes", name] => match nodes.iter().find(|(n, _)| n == name) {
                Some((n, labels)) => {
                    let l: serde_json::Map<String, serde_json::Value> = labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone().into()))
                        .collect();
                    (
                        200,
                        "application/json",
                        serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n, "labels": l}}).to_string().into_bytes(),
                    )
                }
                None => not_found(),
            },
            _ => not_found(),
        }
    });
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: {}\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: coffer\ncurrent-context: standin\nusers:\n- name: coffer\n  user: {{}}\n",
            stub.addr
        ),
    )
    .unwrap();
    (stub, kubeconfig)
}
