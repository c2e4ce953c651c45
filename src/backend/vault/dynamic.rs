//! Reuse of dynamic responses (leases, PKI certificates) per pod and
//! identity: the driver's republish every minute must not issue a new
//! certificate each time. A response is reused while less than two thirds
//! of its lifetime has passed; static data (KV) is always read fresh.
//!
//! The pod UID alone is not an identity: the Secrets Store Sync Controller
//! sends its own pod's UID for every SecretSync, each with its own
//! ServiceAccount. So the key also holds the ServiceAccount token's subject
//! (`system:serviceaccount:<namespace>:<name>`), which Vault checked at
//! the login that precedes every read of the mount (a cached login is kept
//! per exact token); a token without a subject is keyed by its digest.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::client::Request;
use super::params::{Connection, Method};
use crate::backend::support::Cache;
use crate::metrics::Metrics;
use crate::secret::SecretBytes;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResponseKey {
    pub owner: Owner,
    pub connection: Arc<Connection>,
    pub request: Arc<Request>,
}

/// Whose a kept response is: the pod, and who it is to Vault.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub pod_uid: String,
    /// The token's subject, else (no `sub` claim) the token's SHA-256.
    pub identity: String,
}

impl Owner {
    pub fn new(pod_uid: &str, subject: Option<&str>, token: &crate::secret::Token) -> Self {
        let identity = match subject {
            Some(s) if !s.is_empty() => format!("sub:{s}"),
            _ => {
                let hex: String = token.digest().iter().map(|b| format!("{b:02x}")).collect();
                format!("token:{hex}")
            }
        };
        Self {
            pod_uid: pod_uid.to_owned(),
            identity,
        }
    }
}

/// Dynamic responses kept as bytes (zeroed on drop).
pub struct Responses {
    cache: Cache<ResponseKey, SecretBytes>,
    metrics: Arc<Metrics>,
}

impl Responses {
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            cache: Cache::new(capacity),
            metrics,
        }
    }

    /// The kept response for `key`, if one is still young enough.
    pub fn reusable(&self, key: &ResponseKey, object: &str) -> Option<Value> {
        let body = self.cache.get(key)?;
        let value = serde_json::from_slice::<Value>(body.expose()).ok()?;
        self.metrics.cache_lookup("vault_dynamic", true);
        tracing::debug!(path = %key.request.path, object, "reusing a dynamic response");
        Some(value)
    }

    /// Drops the responses past their time (see [`Cache::sweep`]).
    pub fn sweep(&self) -> usize {
        self.cache.sweep()
    }

    /// Keeps `value` if it is dynamic.
    pub async fn keep(&self, key: &ResponseKey, value: &Value) {
        let Some(lifetime) = lifetime(key.request.method, value) else {
            return;
        };
        self.metrics.cache_lookup("vault_dynamic", false);
        let body = SecretBytes::new(serde_json::to_vec(value).unwrap_or_default());
        self.cache
            .insert(key, body, lifetime.mul_f64(2.0 / 3.0))
            .await;
    }
}

/// Longest lease or token lifetime believed (32 days, Vault's default
/// max_lease_ttl): a server's `lease_duration` of 2^64-1 must not overflow
/// an `Instant`, nor keep a response cached for ever.
pub const MAX_LEASE_SECS: u64 = 32 * 24 * 3600;

/// How long a dynamic response lives: its lease, or a certificate's
/// `expiration`. `None` for static data (KV), which is always read fresh.
pub fn lifetime(method: Method, response: &Value) -> Option<Duration> {
    let lease_id = response
        .get("lease_id")
        .and_then(Value::as_str)
        .unwrap_or("");
    let lease = response
        .get("lease_duration")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        .min(MAX_LEASE_SECS);
    if !lease_id.is_empty() && lease > 0 {
        return Some(Duration::from_secs(lease));
    }
    if method == Method::Get {
        return None;
    }
    if let Some(expiration) = response.pointer("/data/expiration").and_then(Value::as_i64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs() as i64;
        return (expiration > now).then(|| {
            Duration::from_secs(
                expiration
                    .saturating_sub(now)
                    .unsigned_abs()
                    .min(MAX_LEASE_SECS),
            )
        });
    }
    (lease > 0).then(|| Duration::from_secs(lease))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Token;

    #[test]
    fn one_pod_uid_with_two_service_accounts_is_two_owners() {
        let (t1, t2) = (Token::new("t1".into()), Token::new("t2".into()));
        let uid = "controller-uid";
        let a = Owner::new(uid, Some("system:serviceaccount:team-a:app"), &t1);
        let b = Owner::new(uid, Some("system:serviceaccount:team-b:app"), &t2);
        assert_ne!(a, b);
        // A rotated token of the same ServiceAccount keeps its responses.
        assert_eq!(
            a,
            Owner::new(uid, Some("system:serviceaccount:team-a:app"), &t2)
        );
        // Without a subject, only the same token is the same owner.
        assert_ne!(Owner::new(uid, None, &t1), Owner::new(uid, None, &t2));
        assert_eq!(Owner::new(uid, Some(""), &t1), Owner::new(uid, None, &t1));
        assert!(!Owner::new(uid, None, &t1).identity.contains("t1"));
    }
}
