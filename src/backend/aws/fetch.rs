//! One mount's fetch: the primary region, a retry with fresh credentials
//! when AWS refuses cached ones, the failover region for what failed with
//! a retryable error, then the files in plan order (each object, then its
//! jmesPath files).

use std::sync::Arc;

use async_trait::async_trait;
use aws_config::Region;
use aws_config::retry::RetryConfig;
use aws_credential_types::Credentials;
use sha2::Digest;
use tokio::sync::Semaphore;

use super::error::{Error, Failure, what};
use super::held::Holder;
use super::identity::Auth;
use super::params::{Kind, Spc};
use super::secretsmanager::Reader;
use super::{Inner, Value, jmes};
use crate::backend::{BackendError, ErrorKind, Fetch, FetchContext, Fetched as Content};
use crate::secret::SecretBytes;

/// AWS calls in flight for one mount and region.
const CONCURRENCY: usize = 8;

pub(super) struct AwsFetch {
    pub(super) inner: Arc<Inner>,
    pub(super) spc: Arc<Spc>,
    /// Report AWS's versions (VersionId, parameter version) as the object
    /// versions, as the aws provider does; else coffer's HMAC.
    pub(super) provider_versions: bool,
}

type Values = Vec<Option<Result<Value, Error>>>;

/// Where and how one region's calls of a mount run.
pub(super) struct Scope<'a> {
    pub region: &'a str,
    /// Asking the failover region (objects' failover names apply).
    pub failover: bool,
    /// Calls in flight for this mount and region.
    pub limit: &'a Semaphore,
    /// The mount's deadline, which retries stay inside.
    pub deadline: std::time::Instant,
}

#[async_trait]
impl Fetch for AwsFetch {
    #[expect(
        clippy::indexing_slicing,
        reason = "indices range over 0..len of the vectors they index (one slot per object)"
    )]
    async fn fetch(&self, ctx: &FetchContext<'_>) -> Result<Vec<Content>, crate::backend::Error> {
        let spc = &*self.spc;
        let region = match &spc.region {
            Some(r) => r.clone(),
            None => {
                let r = self.inner.identity.node_region().await?;
                spc.check_regions(&r)?;
                r
            }
        };
        let auth = self.inner.auth(spc, ctx).await?;
        let all: Vec<usize> = (0..spc.objects.len()).collect();

        let mut values: Values = (0..spc.objects.len()).map(|_| None).collect();
        let mut primary = self
            .inner
            .fetch_region(spc, &all, &region, false, &auth, ctx)
            .await;
        // Cached credentials AWS no longer accepts (revoked session, clock
        // skew): forget them and ask once more for what they failed.
        if let Ok(got) = &mut primary {
            let refused: Vec<usize> = got
                .iter()
                .filter(|(_, r)| matches!(r, Err(e) if e.kind() == ErrorKind::Unauthenticated))
                .map(|(i, _)| *i)
                .collect();
            if !refused.is_empty() {
                self.inner.forget(&auth, ctx, &region).await;
                if let Ok(again) = self
                    .inner
                    .fetch_region(spc, &refused, &region, false, &auth, ctx)
                    .await
                {
                    got.retain(|(i, _)| !refused.contains(i));
                    got.extend(again);
                }
            }
        }
        match primary {
            Ok(got) => {
                for (i, r) in got {
                    values[i] = Some(r);
                }
            }
            Err(e) => {
                if !(e.retryable() && spc.failover_region.is_some()) {
                    return Err(e.into());
                }
                tracing::warn!(region = %region, error = %e, "no credentials in the primary region; trying the failover region");
                let message = e.to_string();
                for v in values.iter_mut() {
                    *v = Some(Err(Error::Credentials {
                        how: "the primary region",
                        at: region.clone(),
                        reason: message.clone(),
                        kind: e.kind(),
                    }));
                }
            }
        }

        if let Some(failover) = &spc.failover_region {
            let retry: Vec<usize> = values
                .iter()
                .enumerate()
                .filter(|(_, v)| matches!(v, Some(Err(e)) if e.retryable()))
                .map(|(i, _)| i)
                .collect();
            if !retry.is_empty() {
                tracing::info!(
                    region = %region,
                    failover = %failover,
                    objects = retry.len(),
                    "primary region failed with a retryable error; asking the failover region"
                );
                let got = self
                    .inner
                    .fetch_region(spc, &retry, failover, true, &auth, ctx)
                    .await;
                match got {
                    Ok(got) => {
                        for (i, r) in got {
                            let primary = values[i].take();
                            values[i] = Some(match (r, primary) {
                                (Ok(v), _) => Ok(v),
                                (Err(f), Some(Err(p))) => Err(Error::Failover {
                                    primary: Box::new(p),
                                    failover: Box::new(f),
                                }),
                                (Err(f), _) => Err(f),
                            });
                        }
                    }
                    Err(f) => {
                        let (reason, kind) = (f.to_string(), f.kind());
                        for i in retry {
                            let failover_error = Error::Credentials {
                                how: "the failover region",
                                at: failover.clone(),
                                reason: reason.clone(),
                                kind,
                            };
                            values[i] = Some(Err(match values[i].take() {
                                Some(Err(p)) => Error::Failover {
                                    primary: Box::new(p),
                                    failover: Box::new(failover_error),
                                },
                                _ => failover_error,
                            }));
                        }
                    }
                }
            }
        }

        // Files in plan order: each object, then its jmesPath files.
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for (o, v) in spc.objects.iter().zip(values) {
            let Value { bytes, version } = match v {
                Some(Ok(b)) => b,
                Some(Err(e)) if o.optional && not_found(&e) => {
                    out.extend((0..=o.jmes.len()).map(|_| Content::Absent));
                    continue;
                }
                Some(Err(e)) => {
                    errors.push(e);
                    continue;
                }
                None => {
                    errors.push(
                        Failure::internal("NoResult", "no value was fetched")
                            .error(o.kind, &o.name, &region, "fetch"),
                    );
                    continue;
                }
            };
            // On the aws socket a file carries AWS's version of its object.
            let version = version.filter(|_| self.provider_versions);
            let file = |b: SecretBytes| match &version {
                Some(v) => Content::Versioned(b, v.clone()),
                None => Content::File(b),
            };
            let jmes_error = |source| Error::Jmes {
                what: what(o.kind),
                object: o.name.clone(),
                source,
            };
            if o.jmes.is_empty() && !o.all_keys {
                out.push(file(bytes));
                continue;
            }
            if o.all_keys {
                match jmes::keys(&o.name, bytes.expose()) {
                    Ok(keys) => out.push(Content::Keys(
                        keys.into_iter()
                            .map(|(k, v)| (k, SecretBytes::new(v)))
                            .collect(),
                    )),
                    Err(source) => errors.push(jmes_error(source)),
                }
            }
            if o.jmes.is_empty() {
                continue;
            }
            let json = match jmes::parse(&o.name, bytes.expose()) {
                Ok(j) => j,
                Err(source) => {
                    errors.push(jmes_error(source));
                    continue;
                }
            };
            if !o.all_keys {
                out.push(file(bytes));
            }
            for j in &o.jmes {
                match jmes::extract(&json, &j.path, &j.alias) {
                    Ok(b) => out.push(file(SecretBytes::new(b))),
                    Err(source) => errors.push(jmes_error(source)),
                }
            }
        }
        match errors.len() {
            0 => Ok(out),
            1 => Err(errors.remove(0).into()),
            _ => Err(Error::Objects(errors).into()),
        }
    }
}

/// Whether an object's failure means it does not exist: NotFound, and in
/// both regions when the failover region was asked too.
fn not_found(e: &Error) -> bool {
    match e {
        Error::Failover { primary, failover } => not_found(primary) && not_found(failover),
        other => other.kind() == ErrorKind::NotFound,
    }
}

impl Inner {
    /// Fetches the objects `indices` from `region`. `Err` only when no
    /// credentials could be had there; per-object failures are in the list.
    #[expect(
        clippy::indexing_slicing,
        reason = "indices range over 0..len of the vectors they index (one slot per object)"
    )]
    async fn fetch_region(
        &self,
        spc: &Spc,
        indices: &[usize],
        region: &str,
        failover: bool,
        auth: &Auth<'_>,
        ctx: &FetchContext<'_>,
    ) -> Result<Vec<(usize, Result<Value, Error>)>, Error> {
        let creds = self.credentials(auth, ctx, region).await?;
        let reader = Reader {
            holder: Holder {
                pod_uid: ctx.pod.uid.clone(),
                principal: match auth {
                    Auth::Irsa { role, .. } => role.clone(),
                    Auth::PodIdentity { urls, .. } => urls.join(" "),
                },
                region: region.to_owned(),
            },
            credentials: fingerprint(&creds),
        };
        let base = self.base().await;
        let limit = Semaphore::new(CONCURRENCY);
        let scope = Scope {
            region,
            failover,
            limit: &limit,
            deadline: ctx.deadline,
        };
        let sm: Vec<usize> = indices
            .iter()
            .copied()
            .filter(|&i| spc.objects[i].kind == Kind::SecretsManager)
            .collect();
        let ssm: Vec<usize> = indices
            .iter()
            .copied()
            .filter(|&i| spc.objects[i].kind == Kind::SsmParameter)
            .collect();
        let sm_fut = async {
            if sm.is_empty() {
                return Vec::new();
            }
            // Retries are coffer's (Inner::call): bounded by the mount's deadline.
            let mut b = aws_sdk_secretsmanager::config::Builder::from(base)
                .region(Region::new(region.to_owned()))
                .retry_config(RetryConfig::disabled())
                .credentials_provider(creds.clone());
            if let Some(url) = self.endpoint("AWS_ENDPOINT_URL_SECRETS_MANAGER", region) {
                b = b.endpoint_url(url);
            }
            let client = aws_sdk_secretsmanager::Client::from_conf(b.build());
            self.secrets_manager(&client, spc, &sm, &scope, &reader)
                .await
        };
        let ssm_fut = async {
            if ssm.is_empty() {
                return Vec::new();
            }
            let mut b = aws_sdk_ssm::config::Builder::from(base)
                .region(Region::new(region.to_owned()))
                .retry_config(RetryConfig::disabled())
                .credentials_provider(creds.clone());
            if let Some(url) = self.endpoint("AWS_ENDPOINT_URL_SSM", region) {
                b = b.endpoint_url(url);
            }
            let client = aws_sdk_ssm::Client::from_conf(b.build());
            self.parameters(&client, spc, &ssm, &scope).await
        };
        let (mut a, b) = tokio::join!(sm_fut, ssm_fut);
        a.extend(b);
        Ok(a)
    }
}

/// A digest of the credentials, so held values are dropped when they change.
fn fingerprint(creds: &Credentials) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.update(creds.access_key_id().as_bytes());
    h.update([0]);
    h.update(creds.session_token().unwrap_or("").as_bytes());
    h.finalize().into()
}
