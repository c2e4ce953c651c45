//! Secrets Manager, spending its quotas as the scarce things they are
//! (per account and region, shared by every cluster in it): a secret/version
//! the pod's credentials have not read yet costs one `GetSecretValue`
//! (10,000/s); one the pod read before costs one `DescribeSecret` (40,000/s)
//! per distinct secret, which re-checks the pod's access and says which
//! version each request mounts now; only a changed one is read again.
//! `BatchGetSecretValue` (100/s, not adjustable) is never called: see
//! docs/aws.md for why no mount pattern gains from it.

use std::collections::HashMap;
use std::time::Instant;

use futures_util::future::join_all;

use super::error::{Error, Failure, copy};
use super::fetch::Scope;
use super::held::{Held, Holder, Request, mounted_version};
use super::params::{Kind, Spc};
use super::{Inner, Value};
use crate::backend::ErrorKind;
use crate::backend::support::distinct;
use crate::secret::SecretBytes;

/// Each version ID of a secret and its staging labels.
type Stages = Vec<(String, Vec<String>)>;

/// Who reads, for the held values: the holder and a digest of its credentials.
pub(super) struct Reader {
    pub holder: Holder,
    pub credentials: [u8; 32],
}

/// What one request needs after `DescribeSecret`.
enum Next {
    Reuse(Value),
    Read,
    Fail(Error),
}

impl Inner {
    /// The secrets `indices` of `spc` in `scope`'s region.
    #[expect(
        clippy::indexing_slicing,
        reason = "indices come from the plan's own objects; k indexes `requests`, which `next` and `results` are built from one for one"
    )]
    pub(super) async fn secrets_manager(
        &self,
        client: &aws_sdk_secretsmanager::Client,
        spc: &Spc,
        indices: &[usize],
        scope: &Scope<'_>,
        reader: &Reader,
    ) -> Vec<(usize, Result<Value, Error>)> {
        let Scope {
            region,
            failover,
            limit,
            deadline,
        } = *scope;
        // Each distinct (secret, version, label) once.
        let (requests, index_of): (Vec<Request>, _) = distinct(indices.iter().map(|&i| {
            let (name, version, label) = spc.objects[i].request(failover);
            (
                name.to_owned(),
                version.map(str::to_owned),
                label.map(str::to_owned),
            )
        }));
        let of_object: Vec<(usize, usize)> = indices.iter().copied().zip(index_of).collect();
        let prior = self
            .held
            .lookup(&reader.holder, &reader.credentials, &requests);

        // One DescribeSecret per distinct secret with a held value.
        let mut names: Vec<&str> = Vec::new();
        for (r, p) in requests.iter().zip(&prior) {
            if p.is_some() && !names.contains(&r.0.as_str()) {
                names.push(&r.0);
            }
        }
        let described: HashMap<&str, Result<Stages, Failure>> =
            join_all(names.iter().map(|&name| async move {
                let _permit = limit.acquire().await;
                (name, self.describe(client, name, deadline).await)
            }))
            .await
            .into_iter()
            .collect();

        let next: Vec<Next> = requests
            .iter()
            .zip(prior)
            .map(|(r, p)| {
                let Some(held) = p else {
                    return Next::Read;
                };
                match described.get(r.0.as_str()) {
                    Some(Ok(stages)) => {
                        let now = mounted_version(
                            stages.iter().map(|(id, l)| (id.as_str(), l.as_slice())),
                            r.1.as_deref(),
                            r.2.as_deref(),
                        );
                        if now.as_deref() == Some(held.version_id.as_str()) {
                            Next::Reuse(Value {
                                bytes: held.value,
                                version: Some(held.version_id),
                            })
                        } else {
                            Next::Read
                        }
                    }
                    // A policy without secretsmanager:DescribeSecret: read
                    // the value, which checks the pod's access just as well.
                    Some(Err(f)) if f.kind == ErrorKind::PermissionDenied => {
                        tracing::debug!(
                            region,
                            code = %f.code,
                            "DescribeSecret refused; reading the value again (grant secretsmanager:DescribeSecret to save GetSecretValue calls)"
                        );
                        Next::Read
                    }
                    Some(Err(f)) => {
                        if !f.retryable {
                            self.held.forget(&reader.holder, r);
                        }
                        Next::Fail(f.error(Kind::SecretsManager, &r.0, region, "DescribeSecret"))
                    }
                    None => Next::Read,
                }
            })
            .collect();

        // Read what is new or changed, in parallel (bounded).
        let reads = join_all(
            next.iter()
                .enumerate()
                .filter(|(_, n)| matches!(n, Next::Read))
                .map(|(k, _)| {
                    let r = &requests[k];
                    async move {
                        let _permit = limit.acquire().await;
                        (k, self.get_secret(client, r, region, deadline).await)
                    }
                }),
        )
        .await;
        for n in &next {
            self.metrics
                .cache_lookup("aws_values", matches!(n, Next::Reuse(_)));
        }
        let mut results: Vec<Option<Result<Value, Error>>> = next
            .into_iter()
            .map(|n| match n {
                Next::Reuse(v) => Some(Ok(v)),
                Next::Fail(e) => Some(Err(e)),
                Next::Read => None,
            })
            .collect();
        for (k, read) in reads {
            results[k] = Some(match read {
                Ok(held) => {
                    let value = Value {
                        bytes: held.value.clone(),
                        version: Some(held.version_id.clone()),
                    };
                    self.held.put(
                        &reader.holder,
                        &reader.credentials,
                        requests[k].clone(),
                        held,
                    );
                    Ok(value)
                }
                Err(e) => {
                    if !e.retryable() {
                        self.held.forget(&reader.holder, &requests[k]);
                    }
                    Err(e)
                }
            });
        }
        of_object
            .into_iter()
            .map(|(i, k)| {
                let result = match &results[k] {
                    Some(r) => copy(r),
                    None => Err(Failure::internal("NoResult", "no value was fetched").error(
                        Kind::SecretsManager,
                        &requests[k].0,
                        region,
                        "GetSecretValue",
                    )),
                };
                (i, result)
            })
            .collect()
    }

    /// `DescribeSecret`: each version ID and its staging labels.
    async fn describe(
        &self,
        client: &aws_sdk_secretsmanager::Client,
        id: &str,
        deadline: Instant,
    ) -> Result<Stages, Failure> {
        let out = self
            .call("secretsmanager.DescribeSecret", deadline, || {
                client.describe_secret().secret_id(id).send()
            })
            .await?;
        Ok(out
            .version_ids_to_stages()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    /// `GetSecretValue` for one request: the value and its version ID.
    async fn get_secret(
        &self,
        client: &aws_sdk_secretsmanager::Client,
        (id, version, label): &Request,
        region: &str,
        deadline: Instant,
    ) -> Result<Held, Error> {
        let out = self
            .call("secretsmanager.GetSecretValue", deadline, || {
                client
                    .get_secret_value()
                    .secret_id(id)
                    .set_version_id(version.clone())
                    .set_version_stage(label.clone())
                    .send()
            })
            .await
            .map_err(|f| f.error(Kind::SecretsManager, id, region, "GetSecretValue"))?;
        let value = secret_value(
            out.secret_string(),
            out.secret_binary().map(|b| b.as_ref()),
            id,
            region,
        )?;
        Ok(Held {
            version_id: out.version_id().unwrap_or_default().to_owned(),
            value,
        })
    }
}

fn secret_value(
    string: Option<&str>,
    binary: Option<&[u8]>,
    id: &str,
    region: &str,
) -> Result<SecretBytes, Error> {
    match (string, binary) {
        (Some(s), _) => Ok(SecretBytes::new(s.as_bytes().to_vec())),
        (None, Some(b)) => Ok(SecretBytes::new(b.to_vec())),
        (None, None) => Err(Failure::internal(
            "NoValue",
            "the secret version has neither SecretString nor SecretBinary",
        )
        .error(Kind::SecretsManager, id, region, "GetSecretValue")),
    }
}
