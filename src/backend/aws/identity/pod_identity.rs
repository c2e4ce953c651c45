//! EKS Pod Identity: the node's agent exchanges the pod's token (audience
//! `pods.eks.amazonaws.com`) for credentials.

use std::time::Duration;

use aws_credential_types::Credentials;
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Identity;
use crate::backend::ErrorKind;
use crate::backend::aws::Error;
use crate::backend::support::{Outcome, status_kind, timed};
use crate::errors::root_cause;
use crate::secret::Token;

const HOW: &str = "EKS Pod Identity agent";
/// Largest answer read from the agent (credentials JSON is a few hundred bytes).
const AGENT_MAX_BODY: usize = 64 * 1024;

impl Identity {
    /// Credentials from the first agent address that answers.
    pub async fn pod_identity(&self, urls: &[String], token: &Token) -> Result<Credentials, Error> {
        let agent = self
            .agent
            .get_or_init(|| {
                let policy = crate::backend::http::Policy {
                    max_body: AGENT_MAX_BODY,
                    connect_timeout: self.agent_timeout.min(Duration::from_secs(5)),
                    request_timeout: self.agent_timeout,
                };
                // No redirects (the pod's token is in the request), capped
                // answers; the agent is link-local (or a test's loopback):
                // never through a proxy.
                crate::backend::http::client::Client::http_only(&policy)
            })
            .as_ref()
            .map_err(|reason| Error::Credentials {
                how: HOW,
                at: urls.first().cloned().unwrap_or_default(),
                reason: reason.clone(),
                kind: ErrorKind::Internal,
            })?;
        let mut last = None;
        for url in urls {
            let invalid = |reason: &str| Error::Credentials {
                how: HOW,
                at: url.clone(),
                reason: reason.to_owned(),
                kind: ErrorKind::InvalidArgument,
            };
            let mut authorization = http::HeaderValue::from_str(token.expose())
                .map_err(|_| invalid("the pod's token cannot be sent as a header"))?;
            authorization.set_sensitive(true);
            let uri = http::Uri::try_from(url.as_str())
                .map_err(|_| invalid("the agent address is not a URL"))?;
            let headers = [(http::header::AUTHORIZATION, &authorization)];
            let request = crate::backend::http::client::Request {
                method: &http::Method::GET,
                uri: &uri,
                headers: &headers,
                body: None,
            };
            let call = async {
                match agent.send(&request, true).await {
                    Ok((status, body)) => Ok((status.as_u16(), body)),
                    // An answer above the cap reads as empty: refused below as not credentials.
                    Err(crate::backend::http::client::Error::TooLarge(_)) => Ok((200, Vec::new())),
                    Err(e) => Err(e),
                }
            };
            let answer = timed(
                &self.metrics,
                "aws",
                "eks-pod-identity.GetCredentials",
                async {
                    match call.await {
                        // An HTTP refusal counts by its status.
                        Ok((status, body)) if (200..300).contains(&status) => Ok((status, body)),
                        Ok((status, body)) => Err(Ok((status, body))),
                        Err(e) => Err(Err(e)),
                    }
                },
                |e| match e {
                    Ok((status, _)) => Outcome::of_status(*status),
                    Err(_) => Outcome::Error,
                },
            )
            .await;
            let body = match answer {
                Ok((_, body)) => body,
                Err(Ok((status, body))) => {
                    let kind = match status {
                        // No association for this pod's service account.
                        404 => ErrorKind::FailedPrecondition,
                        s => status_kind(s),
                    };
                    return Err(Error::Credentials {
                        how: HOW,
                        at: url.clone(),
                        reason: format!("HTTP {status}: {}", agent_message(&body)),
                        kind,
                    });
                }
                Err(Err(e)) => {
                    let kind = if e.is_timeout() {
                        ErrorKind::DeadlineExceeded
                    } else {
                        ErrorKind::Unavailable
                    };
                    last = Some(Error::Credentials {
                        how: HOW,
                        at: url.clone(),
                        reason: format!(
                            "cannot reach the agent ({}); is the eks-pod-identity-agent add-on running on this node?",
                            root_cause(&e)
                        ),
                        kind,
                    });
                    // Auto: try the next address.
                    continue;
                }
            };
            return parse_agent_credentials(&body).map_err(|reason| Error::Credentials {
                how: HOW,
                at: url.clone(),
                reason,
                kind: ErrorKind::Internal,
            });
        }
        Err(last.unwrap_or_else(|| Error::Credentials {
            how: HOW,
            at: String::new(),
            reason: "no agent address".into(),
            kind: ErrorKind::Internal,
        }))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AgentCredentials {
    access_key_id: String,
    secret_access_key: String,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    expiration: Option<String>,
}

/// The agent's (container credentials) JSON. Errors never quote the body.
pub fn parse_agent_credentials(body: &[u8]) -> Result<Credentials, String> {
    let c: AgentCredentials = serde_json::from_slice(body).map_err(|_| {
        "the agent's answer is not credentials JSON (AccessKeyId, SecretAccessKey, Token, Expiration)".to_owned()
    })?;
    if c.access_key_id.is_empty() || c.secret_access_key.is_empty() {
        return Err("the agent's answer has empty credentials".into());
    }
    let expiry = match c.expiration.as_deref() {
        None | Some("") => None,
        Some(ts) => Some(
            OffsetDateTime::parse(ts, &Rfc3339)
                .map_err(|_| "the agent's Expiration is not RFC 3339".to_owned())?
                .into(),
        ),
    };
    Ok(Credentials::new(
        c.access_key_id,
        c.secret_access_key,
        c.token.filter(|t| !t.is_empty()),
        expiry,
        "coffer-eks-pod-identity",
    ))
}

/// The agent's error text, if it is the usual `{"code","message"}` JSON
/// (it describes the request, never credentials); else a placeholder.
fn agent_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Msg {
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
    }
    match serde_json::from_slice::<Msg>(body) {
        Ok(m) => {
            let text = [m.code, m.message]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": ");
            let text = crate::errors::prefix(&text, 300).to_owned();
            if text.is_empty() {
                "no message".into()
            } else {
                text
            }
        }
        Err(_) => "no message".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_answers() {
        let ok = br#"{"AccessKeyId":"AKIDEXAMPLE","SecretAccessKey":"wJalr","Token":"tok","AccountId":"123456789012","Expiration":"2100-01-01T00:00:00Z"}"#;
        let c = parse_agent_credentials(ok).unwrap();
        assert_eq!(c.access_key_id(), "AKIDEXAMPLE");
        assert!(c.expiry().is_some());
        let e = parse_agent_credentials(b"{\"AccessKeyId\": \"secretish\"").unwrap_err();
        assert!(!e.contains("secretish"));
        assert!(parse_agent_credentials(br#"{"AccessKeyId":"","SecretAccessKey":""}"#).is_err());
        assert_eq!(
            agent_message(br#"{"code":"AccessDeniedException","message":"denied"}"#),
            "AccessDeniedException: denied"
        );
        assert_eq!(agent_message(b"<html>"), "no message");
    }
}
