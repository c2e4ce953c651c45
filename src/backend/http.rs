//! One policy for the HTTP requests coffer makes to servers a
//! SecretProviderClass may name (Vault, OpenBao; the EKS Pod Identity
//! agent): every byte such a server sends is hostile until checked.
//!
//! - no redirect is followed: a `307` to another host would otherwise carry
//!   the login body (the pod's token) and `X-Vault-Token` there;
//! - a response body is read in chunks up to a cap and refused beyond it,
//!   before it is held in memory (a 600 MB login answer must not grow the
//!   process);
//! - connecting and the whole request (its answer included) have timeouts;
//! - a request that failed because the server had closed the pooled
//!   keep-alive connection it went out on (idle timeout, restart, a load
//!   balancer) can be retried once on a fresh connection.

use std::time::Duration;

#[cfg(feature = "vault")]
pub mod client;

/// Limits of every backend request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Largest response body accepted.
    pub max_body: usize,
    /// Time to establish a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Time for the whole request, and for any single read within it.
    pub request_timeout: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_body: crate::mount::MAX_RESPONSE_BYTES,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// How long an idle pooled connection is kept. Below the idle timeouts of
/// common servers and load balancers (Go's http.Server in Vault: none by
/// default; AWS ALB: 60 s), so most closes happen on coffer's side.
const POOL_IDLE: Duration = Duration::from_secs(45);

/// A reqwest client builder with the policy applied. `fresh` builds one that
/// keeps no idle connection: every request gets a new one.
pub fn builder(policy: &Policy, fresh: bool) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(policy.connect_timeout)
        // One timer per request: a read timeout as long as the total one
        // could never fire first, and each timer armed costs a wake-up of
        // the runtime's driver.
        .timeout(policy.request_timeout)
        .pool_idle_timeout(POOL_IDLE);
    if fresh {
        builder.pool_max_idle_per_host(0)
    } else {
        builder
    }
}

/// A response body above the policy's cap.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the response is larger than {limit} bytes (coffer's --max-response-bytes)")]
pub struct BodyTooLarge {
    pub limit: usize,
}

/// Why reading a body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    TooLarge(#[from] BodyTooLarge),
    #[error("reading the response failed")]
    Read(#[source] reqwest::Error),
}

/// Reads a response body, refusing it as soon as it exceeds `limit` (by
/// its Content-Length, or by what has arrived).
pub async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(BodyTooLarge { limit }.into());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if body.len().saturating_add(chunk.len()) > limit {
            return Err(BodyTooLarge { limit }.into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers each connection's first request with `reply`.
    async fn serve(reply: Vec<u8>) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let reply = reply.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    let _ = conn.write_all(&reply).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        (addr, task)
    }

    fn policy(max_body: usize) -> Policy {
        Policy {
            max_body,
            ..Policy::default()
        }
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let (addr, task) = serve(
            b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:1/steal\r\nContent-Length: 0\r\n\r\n"
                .to_vec(),
        )
        .await;
        let client = builder(&policy(1024), false).build().unwrap();
        let resp = client.post(&addr).body("jwt").send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 307);
        task.abort();
    }

    #[tokio::test]
    async fn bodies_above_the_cap_are_refused_whether_announced_or_not() {
        let mut announced = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n".to_vec();
        announced.extend(vec![b'x'; 5000]);
        let mut chunked = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
        chunked.extend(vec![b'x'; 5000]);
        for reply in [announced, chunked] {
            let (addr, task) = serve(reply).await;
            let client = builder(&policy(1024), false).build().unwrap();
            let resp = client.get(&addr).send().await.unwrap();
            let err = read_capped(resp, 1024).await.unwrap_err();
            assert!(matches!(err, BodyError::TooLarge(_)), "{err}");
            let resp = client.get(&addr).send().await.unwrap();
            assert_eq!(read_capped(resp, 8192).await.unwrap().len(), 5000);
            task.abort();
        }
    }
}
