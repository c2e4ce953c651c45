//! A tiny HTTP/1.1 server on 127.0.0.1 for stand-ins the tests need: a
//! Kubernetes API that serves a ServiceAccount and a Node, an EKS Pod
//! Identity agent. Each request is answered by a handler and recorded
//! (by the [`RawServer`] underneath); every connection is closed after one
//! response. Stops on drop.

use std::io::Write;

use super::raw::RawServer;

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

/// A [`RawServer`] that answers each request with its handler's [`Reply`]
/// and closes the connection.
pub struct Stub {
    /// `http://127.0.0.1:PORT`
    pub addr: String,
    server: RawServer,
}

impl Stub {
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Stub {
        let server = RawServer::start(move |req, conn| {
            let (status, content_type, body) = handler(req);
            let head = format!(
                "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                if status < 400 { "OK" } else { "Error" },
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body);
            false
        });
        Stub {
            addr: server.addr.clone(),
            server,
        }
    }

    /// `http://127.0.0.1:PORT`, the same as `addr`.
    pub fn url(&self) -> String {
        self.addr.clone()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.server.requests()
    }

    /// How many requests had this path.
    pub fn count(&self, path: &str) -> usize {
        self.requests().iter().filter(|r| r.path == path).count()
    }
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
