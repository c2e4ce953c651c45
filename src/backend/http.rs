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
//!
//! [`client::Client`] applies it.

use std::time::Duration;

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

/// A response body above the policy's cap.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the response is larger than {limit} bytes (coffer's --max-response-bytes)")]
pub struct BodyTooLarge {
    pub limit: usize,
}
