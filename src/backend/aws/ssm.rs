//! SSM Parameter Store: `GetParameters` in batches of up to 10 names, each
//! parameter at most once per batch, decrypted.

use std::collections::HashMap;
use std::time::Instant;

use super::error::{Error, Failure, copy, missing};
use super::fetch::Scope;
use super::params::{self, Kind, Spc};
use super::{Inner, Value};
use crate::backend::ErrorKind;
use crate::secret::SecretBytes;
use futures_util::future::join_all;

/// SSM's limit of names in one `GetParameters`.
pub const SSM_BATCH: usize = 10;

impl Inner {
    /// The parameters `indices` of `spc` from `region`.
    #[expect(
        clippy::indexing_slicing,
        reason = "indices range over 0..len of the vectors they index (one slot per object or batch)"
    )]
    pub(super) async fn parameters(
        &self,
        client: &aws_sdk_ssm::Client,
        spc: &Spc,
        indices: &[usize],
        scope: &Scope<'_>,
    ) -> Vec<(usize, Result<Value, Error>)> {
        let Scope {
            region,
            failover,
            limit,
            deadline,
        } = *scope;
        let mut requests: Vec<String> = Vec::new();
        let mut of_object = Vec::with_capacity(indices.len());
        for &i in indices {
            let (name, version, label) = spc.objects[i].request(failover);
            let r = ssm_request(name, version, label);
            if !requests.contains(&r) {
                requests.push(r.clone());
            }
            of_object.push((i, r));
        }
        let batches = ssm_batches(&requests);
        let results = join_all(batches.iter().map(|batch| async move {
            let _permit = limit.acquire().await;
            self.get_parameters(client, batch, region, deadline).await
        }))
        .await;
        let by_request: HashMap<String, Result<Value, Error>> =
            results.into_iter().flatten().collect();
        of_object
            .into_iter()
            .map(|(i, r)| {
                let result = match by_request.get(&r) {
                    Some(r) => copy(r),
                    None => Err(missing(Kind::SsmParameter, &r, region)),
                };
                (i, result)
            })
            .collect()
    }

    async fn get_parameters(
        &self,
        client: &aws_sdk_ssm::Client,
        batch: &[String],
        region: &str,
        deadline: Instant,
    ) -> Vec<(String, Result<Value, Error>)> {
        let result = self
            .call("ssm.GetParameters", deadline, || {
                client
                    .get_parameters()
                    .set_names(Some(batch.to_vec()))
                    .with_decryption(true)
                    .send()
            })
            .await;
        let out = match result {
            Ok(out) => out,
            Err(f) => {
                return batch
                    .iter()
                    .map(|r| {
                        (
                            r.clone(),
                            Err(f.error(Kind::SsmParameter, r, region, "GetParameters")),
                        )
                    })
                    .collect();
            }
        };
        batch
            .iter()
            .map(|r| {
                let base = ssm_base(r);
                let name = ssm_name(base);
                let found = out.parameters().iter().find(|p| {
                    p.name() == Some(name.as_str())
                        || p.name() == Some(base)
                        || p.arn() == Some(base)
                });
                let fail = |f: Failure| Err(f.error(Kind::SsmParameter, r, region, "GetParameters"));
                let result = match found {
                    Some(p) => match p.value() {
                        Some(v) => Ok(Value {
                            bytes: SecretBytes::new(v.as_bytes().to_vec()),
                            version: Some(p.version().to_string()),
                        }),
                        None => fail(Failure::internal("NoValue", "the parameter has no value")),
                    },
                    None if out.invalid_parameters().iter().any(|i| i == r) => fail(Failure {
                        kind: ErrorKind::NotFound,
                        ..Failure::internal(
                            "ParameterNotFound",
                            "listed in InvalidParameters: no such parameter, version or label (or no permission to see it)",
                        )
                    }),
                    None => Err(missing(Kind::SsmParameter, r, region)),
                };
                (r.clone(), result)
            })
            .collect()
    }
}

/// `name`, `name:version` or `name:label`, as GetParameters takes them.
pub fn ssm_request(name: &str, version: Option<&str>, label: Option<&str>) -> String {
    match (version, label) {
        (Some(v), _) => format!("{name}:{v}"),
        (None, Some(l)) => format!("{name}:{l}"),
        (None, None) => name.to_owned(),
    }
}

/// The parameter of a request, without its `:version` / `:label` selector.
pub fn ssm_base(request: &str) -> &str {
    if request.starts_with("arn:") {
        // arn:partition:ssm:region:account:parameter/name[:selector]
        let mut colons = request.match_indices(':').map(|(i, _)| i).skip(5);
        return match colons.next() {
            Some(i) => &request[..i],
            None => request,
        };
    }
    match request.rfind(':') {
        Some(i) => &request[..i],
        None => request,
    }
}

/// The parameter's name: itself, or from an ARN (`parameter/a/b` → `/a/b`, `parameter/a` → `a`).
pub fn ssm_name(base: &str) -> String {
    match params::Arn::parse(base) {
        Some(arn) => {
            let rest = arn
                .resource
                .strip_prefix("parameter")
                .unwrap_or(arn.resource);
            let rest = rest.strip_prefix('/').unwrap_or(rest);
            if rest.contains('/') {
                format!("/{rest}")
            } else {
                rest.to_owned()
            }
        }
        None => base.to_owned(),
    }
}

/// Batches of at most 10 requests in which no parameter appears twice, so
/// every answer maps back to exactly one request (two versions of one
/// parameter in one call cannot be told apart when AWS leaves out the selector).
#[expect(
    clippy::indexing_slicing,
    reason = "indices range over 0..len of the vectors they index (one slot per object or batch)"
)]
pub fn ssm_batches(requests: &[String]) -> Vec<Vec<String>> {
    let mut batches: Vec<Vec<String>> = Vec::new();
    for r in requests {
        let name = ssm_name(ssm_base(r));
        let slot = batches
            .iter()
            .position(|b| b.len() < SSM_BATCH && !b.iter().any(|x| ssm_name(ssm_base(x)) == name));
        match slot {
            Some(k) => batches[k].push(r.clone()),
            None => batches.push(vec![r.clone()]),
        }
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_at_most_10_parameters() {
        for (n, want) in [
            (1usize, vec![1usize]),
            (10, vec![10]),
            (11, vec![10, 1]),
            (25, vec![10, 10, 5]),
        ] {
            let reqs: Vec<String> = (0..n).map(|i| format!("/p/{i}")).collect();
            let got: Vec<usize> = ssm_batches(&reqs).iter().map(Vec::len).collect();
            assert_eq!(got, want, "{n}");
        }
    }

    #[test]
    fn one_parameter_appears_once_per_batch() {
        let reqs: Vec<String> = vec![
            "/p/a".into(),
            "/p/a:1".into(),
            "/p/a:old".into(),
            "arn:aws:ssm:us-west-2:1:parameter/p/a:2".into(),
            "/p/b".into(),
        ];
        let batches = ssm_batches(&reqs);
        assert_eq!(batches.len(), 4);
        for b in &batches {
            let mut names: Vec<String> = b.iter().map(|r| ssm_name(ssm_base(r))).collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), b.len(), "{b:?}");
        }
    }

    #[test]
    fn ssm_requests_and_names() {
        assert_eq!(ssm_request("/a", Some("3"), None), "/a:3");
        assert_eq!(ssm_request("/a", None, Some("prod")), "/a:prod");
        assert_eq!(ssm_request("/a", None, None), "/a");
        assert_eq!(ssm_base("/a:3"), "/a");
        assert_eq!(ssm_base("/a"), "/a");
        let arn = "arn:aws:ssm:us-west-2:123456789012:parameter/app/key";
        assert_eq!(ssm_base(arn), arn);
        assert_eq!(ssm_base(&format!("{arn}:4")), arn);
        assert_eq!(ssm_name(arn), "/app/key");
        assert_eq!(
            ssm_name("arn:aws:ssm:us-west-2:123456789012:parameter/plain"),
            "plain"
        );
        assert_eq!(ssm_name("/x/y"), "/x/y");
    }
}
