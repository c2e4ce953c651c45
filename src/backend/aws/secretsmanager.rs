//! Secrets Manager: `BatchGetSecretValue` in batches of up to 20 IDs, one
//! `GetSecretValue` per version pin and per ID a batch cannot answer.

use std::collections::HashMap;

use futures_util::future::join_all;
use tokio::sync::Semaphore;

use super::error::{Error, Failure, classify, copy, missing};
use super::params::{Kind, Spc};
use super::{Inner, Value};
use crate::backend::ErrorKind;
use crate::backend::support::timed;
use crate::secret::SecretBytes;

/// Secrets Manager's limit of secret IDs in one `BatchGetSecretValue`.
pub const SM_BATCH: usize = 20;

impl Inner {
    /// The secrets `indices` of `spc` from `region`.
    #[expect(
        clippy::indexing_slicing,
        reason = "indices range over 0..len of the vectors they index (one slot per object, batch or id)"
    )]
    pub(super) async fn secrets_manager(
        &self,
        client: &aws_sdk_secretsmanager::Client,
        spc: &Spc,
        indices: &[usize],
        region: &str,
        failover: bool,
        limit: &Semaphore,
    ) -> Vec<(usize, Result<Value, Error>)> {
        // Pinned versions need GetSecretValue; the rest share batches.
        let mut pinned = Vec::new();
        let mut ids: Vec<String> = Vec::new();
        for &i in indices {
            let (name, version, label) = spc.objects[i].request(failover);
            if version.is_some() || label.is_some() {
                pinned.push(i);
            } else if !ids.iter().any(|id| id == name) {
                ids.push(name.to_owned());
            }
        }
        let batches = join_all(ids.chunks(SM_BATCH).map(|chunk| async move {
            let _permit = limit.acquire().await;
            self.batch_get(client, chunk, region).await
        }));
        let singles = join_all(pinned.iter().map(|&i| async move {
            let _permit = limit.acquire().await;
            let (name, version, label) = spc.objects[i].request(failover);
            (
                i,
                self.get_secret(client, name, version, label, region).await,
            )
        }));
        let (batches, singles) = tokio::join!(batches, singles);
        let by_id: HashMap<String, Result<Value, Error>> = batches.into_iter().flatten().collect();
        let mut out = singles;
        for &i in indices {
            let (name, version, label) = spc.objects[i].request(failover);
            if version.is_some() || label.is_some() {
                continue;
            }
            // The first object of an ID takes the result; others get a copy.
            let result = match by_id.get(name) {
                Some(r) => copy(r),
                None => Err(missing(Kind::SecretsManager, name, region)),
            };
            out.push((i, result));
        }
        out
    }

    /// One `BatchGetSecretValue` for up to 20 IDs; IDs it cannot answer
    /// (or a batch refused as a whole with AccessDenied, e.g. an IAM policy
    /// written for the aws provider's GetSecretValue) are fetched one by one.
    #[expect(
        clippy::indexing_slicing,
        reason = "indices range over 0..len of the vectors they index (one slot per object, batch or id)"
    )]
    async fn batch_get(
        &self,
        client: &aws_sdk_secretsmanager::Client,
        ids: &[String],
        region: &str,
    ) -> Vec<(String, Result<Value, Error>)> {
        let mut out: Vec<(String, Result<Value, Error>)> = Vec::new();
        let mut answered: Vec<bool> = vec![false; ids.len()];
        let mut next: Option<String> = None;
        for _page in 0..10 {
            let call = client
                .batch_get_secret_value()
                .set_secret_id_list(Some(ids.to_vec()))
                .set_next_token(next.take())
                .send();
            let result = timed(
                &self.metrics,
                "aws",
                "secretsmanager.BatchGetSecretValue",
                call,
                |e| classify(e).outcome,
            )
            .await;
            let page = match result {
                Ok(p) => p,
                Err(e) => {
                    let f = classify(&e);
                    if f.kind == ErrorKind::PermissionDenied {
                        tracing::debug!(
                            region,
                            code = %f.code,
                            "BatchGetSecretValue refused; falling back to GetSecretValue per secret (grant secretsmanager:BatchGetSecretValue to save calls)"
                        );
                        break;
                    }
                    for (k, id) in ids.iter().enumerate() {
                        if !answered[k] {
                            answered[k] = true;
                            out.push((
                                id.clone(),
                                Err(f.error(
                                    Kind::SecretsManager,
                                    id,
                                    region,
                                    "BatchGetSecretValue",
                                )),
                            ));
                        }
                    }
                    break;
                }
            };
            for entry in page.secret_values() {
                let Some(k) = ids.iter().enumerate().position(|(k, id)| {
                    !answered[k] && secret_matches(id, entry.name(), entry.arn())
                }) else {
                    continue;
                };
                answered[k] = true;
                out.push((
                    ids[k].clone(),
                    secret_value(
                        entry.secret_string(),
                        entry.secret_binary().map(|b| b.as_ref()),
                        entry.version_id(),
                        &ids[k],
                        region,
                    ),
                ));
            }
            for e in page.errors() {
                let Some(k) = ids.iter().enumerate().position(|(k, id)| {
                    !answered[k]
                        && e.secret_id()
                            .is_some_and(|s| secret_matches(id, Some(s), Some(s)))
                }) else {
                    continue;
                };
                answered[k] = true;
                let failure = Failure::coded(
                    e.error_code().unwrap_or("Unknown"),
                    e.message().unwrap_or("no message"),
                );
                out.push((
                    ids[k].clone(),
                    Err(failure.error(
                        Kind::SecretsManager,
                        &ids[k],
                        region,
                        "BatchGetSecretValue",
                    )),
                ));
            }
            match page.next_token() {
                Some(t) if !t.is_empty() && answered.iter().any(|a| !a) => {
                    next = Some(t.to_owned())
                }
                _ => break,
            }
        }
        // Whatever the batch did not answer: one by one.
        let rest: Vec<&String> = ids
            .iter()
            .zip(&answered)
            .filter(|(_, a)| !**a)
            .map(|(id, _)| id)
            .collect();
        let singles = join_all(rest.into_iter().map(|id| async move {
            (
                id.clone(),
                self.get_secret(client, id, None, None, region).await,
            )
        }))
        .await;
        out.extend(singles);
        out
    }

    async fn get_secret(
        &self,
        client: &aws_sdk_secretsmanager::Client,
        id: &str,
        version: Option<&str>,
        label: Option<&str>,
        region: &str,
    ) -> Result<Value, Error> {
        let call = client
            .get_secret_value()
            .secret_id(id)
            .set_version_id(version.map(str::to_owned))
            .set_version_stage(label.map(str::to_owned))
            .send();
        let result = timed(
            &self.metrics,
            "aws",
            "secretsmanager.GetSecretValue",
            call,
            |e| classify(e).outcome,
        )
        .await;
        match result {
            Ok(v) => secret_value(
                v.secret_string(),
                v.secret_binary().map(|b| b.as_ref()),
                v.version_id(),
                id,
                region,
            ),
            Err(e) => Err(classify(&e).error(Kind::SecretsManager, id, region, "GetSecretValue")),
        }
    }
}

fn secret_value(
    string: Option<&str>,
    binary: Option<&[u8]>,
    version_id: Option<&str>,
    id: &str,
    region: &str,
) -> Result<Value, Error> {
    let value = |bytes: Vec<u8>| Value {
        bytes: SecretBytes::new(bytes),
        version: version_id.map(str::to_owned),
    };
    match (string, binary) {
        (Some(s), _) => Ok(value(s.as_bytes().to_vec())),
        (None, Some(b)) => Ok(value(b.to_vec())),
        (None, None) => Err(Failure::internal(
            "NoValue",
            "the secret version has neither SecretString nor SecretBinary",
        )
        .error(Kind::SecretsManager, id, region, "GetSecretValue")),
    }
}

/// Whether a returned secret (name, ARN) is the one asked for by `id`: a
/// name, a full ARN, or a partial ARN (without the 6-character suffix).
pub fn secret_matches(id: &str, name: Option<&str>, arn: Option<&str>) -> bool {
    if name == Some(id) || arn == Some(id) {
        return true;
    }
    match arn {
        Some(arn) if id.starts_with("arn:") => arn
            .strip_prefix(id)
            .is_some_and(|rest| rest.len() == 7 && rest.starts_with('-')),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_at_most_20_secrets() {
        let ids: Vec<String> = (0..25).map(|i| format!("s{i}")).collect();
        let sizes: Vec<usize> = ids.chunks(SM_BATCH).map(<[String]>::len).collect();
        assert_eq!(sizes, [20, 5]);
    }

    #[test]
    fn returned_secrets_map_back_to_what_was_asked() {
        let arn = "arn:aws:secretsmanager:us-west-2:1:secret:db-AbCdEf";
        assert!(secret_matches("db", Some("db"), Some(arn)));
        assert!(secret_matches(arn, Some("db"), Some(arn)));
        assert!(secret_matches(
            "arn:aws:secretsmanager:us-west-2:1:secret:db",
            Some("db"),
            Some(arn)
        ));
        assert!(!secret_matches("d", Some("db"), Some(arn)));
        assert!(!secret_matches(
            "arn:aws:secretsmanager:us-west-2:1:secret:d",
            Some("db"),
            Some(arn)
        ));
    }
}
