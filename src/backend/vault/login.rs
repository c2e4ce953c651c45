//! Vault logins: one per pod, connection and exact ServiceAccount token,
//! kept for 80% of the token's lease and shared by concurrent mounts.

use std::sync::Arc;
use std::time::Duration;

use vaultrs::error::ClientError;

use super::client::{self, VaultToken};
use super::error::{self, Error};
use super::params::Connection;
use crate::backend::support::{Cache, timed};
use crate::metrics::Metrics;
use crate::secret::Token;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LoginKey {
    pub pod_uid: String,
    pub subject: String,
    /// The cached Vault token is reused only for the exact ServiceAccount
    /// token that Vault accepted at login: coffer cannot check a token's
    /// signature itself, so a caller with a forged token naming the same pod
    /// must not ride on the real pod's login. (kubelet rotates the token at
    /// 80% of its lifetime, so this costs one login per rotation.)
    pub token: [u8; 32],
    pub connection: Arc<Connection>,
}

pub struct Logins {
    cache: Cache<LoginKey, VaultToken>,
    metrics: Arc<Metrics>,
}

impl Logins {
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            cache: Cache::new(capacity),
            metrics,
        }
    }

    /// A Vault token for the pod: cached, or from one login shared by
    /// every concurrent mount that needs it. Returns whether it was cached.
    pub async fn token(
        &self,
        key: &LoginKey,
        client: &client::VaultHttp,
        jwt: &Token,
    ) -> Result<(VaultToken, bool), Error> {
        let (token, cached) = self
            .cache
            .get_or_fill(key, || self.login(key, client, jwt))
            .await?;
        self.metrics.cache_lookup("vault_login", cached);
        if cached {
            tracing::debug!(vault = %key.connection.address, role = %key.connection.role, "vault login cache hit");
        }
        Ok((token, cached))
    }

    /// Drops the logins past their time (see [`Cache::sweep`]).
    pub fn sweep(&self) -> usize {
        self.cache.sweep()
    }

    /// Forgets `token` if it is still the one kept for `key` (Vault refused it).
    pub async fn forget(&self, key: &LoginKey, token: &VaultToken) {
        self.cache.forget_if(key, |kept| kept == token).await;
    }

    async fn login(
        &self,
        key: &LoginKey,
        client: &client::VaultHttp,
        jwt: &Token,
    ) -> Result<(VaultToken, Duration), Error> {
        let conn = &key.connection;
        let auth = timed(
            &self.metrics,
            "vault",
            "login",
            client::login(client, &conn.auth_mount, &conn.role, jwt),
            error::outcome,
        )
        .await
        .map_err(|e| match e {
            ClientError::APIError {
                code: code @ (400 | 401 | 403),
                errors,
            } => Error::LoginRefused {
                address: conn.address.clone(),
                subject: if key.subject.is_empty() {
                    "the pod's service account".into()
                } else {
                    key.subject.clone()
                },
                role: conn.role.clone(),
                mount: conn.auth_mount.clone(),
                code,
                errors: error::join_errors(&errors),
            },
            other => {
                let (kind, reason) = error::classify(&other);
                Error::Login {
                    address: conn.address.clone(),
                    mount: conn.auth_mount.clone(),
                    reason,
                    kind,
                }
            }
        })?;
        if auth.client_token.is_empty() {
            return Err(Error::Login {
                address: conn.address.clone(),
                mount: conn.auth_mount.clone(),
                reason: "the response has no client token".into(),
                kind: crate::backend::ErrorKind::Internal,
            });
        }
        let lease = Duration::from_secs(auth.lease_duration.min(super::dynamic::MAX_LEASE_SECS));
        // Renew well before expiry; a token without TTL is still re-checked every 5 minutes.
        let ttl = if lease.is_zero() {
            Duration::from_secs(300)
        } else {
            lease.mul_f64(0.8)
        };
        tracing::debug!(
            vault = %conn.address,
            auth_mount = %conn.auth_mount,
            role = %conn.role,
            subject = %key.subject,
            lease_s = lease.as_secs(),
            "vault login"
        );
        let token =
            VaultToken::new(&Token::new(auth.client_token)).map_err(|reason| Error::Login {
                address: conn.address.clone(),
                mount: conn.auth_mount.clone(),
                reason,
                kind: crate::backend::ErrorKind::Internal,
            })?;
        Ok((token, ttl))
    }
}
