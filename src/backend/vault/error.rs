//! The Vault backend's errors and how library failures become them.

use vaultrs::error::ClientError;

use super::extract;
use crate::backend::support::status_kind;
use crate::backend::{BackendError, ErrorKind};
use crate::errors::root_cause;

/// Vault backend errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("parameter {name} {reason}")]
    Param { name: &'static str, reason: String },
    #[error("object {object:?}: {reason}")]
    Object { object: String, reason: String },
    #[error("cannot set up a Vault client for {address}: {reason}")]
    Client { address: String, reason: String },
    #[error(
        "login to {address} as {subject} with role {role:?} on auth/{mount} was refused (HTTP {code}): {errors}"
    )]
    LoginRefused {
        address: String,
        subject: String,
        role: String,
        mount: String,
        code: u16,
        errors: String,
    },
    #[error("login to {address} on auth/{mount}: {reason}")]
    Login {
        address: String,
        mount: String,
        reason: String,
        kind: ErrorKind,
    },
    #[error("object {object:?}: {method} {path} at {address} failed (HTTP {code}): {errors}")]
    Read {
        object: String,
        method: &'static str,
        path: String,
        address: String,
        code: u16,
        errors: String,
    },
    #[error("object {object:?}: {method} {path} at {address}: {reason}")]
    Request {
        object: String,
        method: &'static str,
        path: String,
        address: String,
        reason: String,
        kind: ErrorKind,
    },
    #[error("object {object:?}")]
    Extract {
        object: String,
        #[source]
        source: extract::ExtractError,
    },
}

impl BackendError for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::Param { .. } | Error::Object { .. } => ErrorKind::InvalidArgument,
            Error::Client { .. } => ErrorKind::InvalidArgument,
            Error::LoginRefused { .. } => ErrorKind::PermissionDenied,
            Error::Login { kind, .. } | Error::Request { kind, .. } => *kind,
            Error::Read { code, .. } => status_kind(*code),
            Error::Extract { source, .. } => match source {
                extract::ExtractError::MissingKey { .. } | extract::ExtractError::NoData { .. } => {
                    ErrorKind::NotFound
                }
                extract::ExtractError::Decode { .. } => ErrorKind::InvalidArgument,
            },
        }
    }
}

/// How a vaultrs failure counts in the backend request metrics.
pub fn outcome(e: &ClientError) -> crate::backend::support::Outcome {
    use crate::backend::support::Outcome;
    match e {
        ClientError::APIError { code, .. } if *code < 500 => Outcome::Refused,
        _ => Outcome::Error,
    }
}

/// Vault's `errors` list as one line.
pub fn join_errors(errors: &[String]) -> String {
    let joined: Vec<String> = errors
        .iter()
        .map(|e| e.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    if joined.is_empty() {
        "no error message".into()
    } else {
        joined.join("; ")
    }
}

/// Kind and a message for failures that are not Vault API errors.
pub fn classify(e: &ClientError) -> (ErrorKind, String) {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(big) = err.downcast_ref::<crate::backend::http::BodyTooLarge>() {
            return (ErrorKind::ResourceExhausted, big.to_string());
        }
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            // A certificate problem is configuration: retrying will not help.
            return (ErrorKind::FailedPrecondition, format!("TLS: {tls}"));
        }
        if let Some(re) = err.downcast_ref::<crate::backend::http::client::Error>() {
            if let Some(tls) = find_source::<rustls::Error>(re) {
                return (ErrorKind::FailedPrecondition, format!("TLS: {tls}"));
            }
            // The TLS connector does not always expose rustls' error as a
            // source; its message is still the root cause.
            let cause = root_cause(re);
            let lower = cause.to_ascii_lowercase();
            if lower.contains("certificate")
                || lower.contains("received fatal alert")
                || lower.contains("handshake")
            {
                return (ErrorKind::FailedPrecondition, format!("TLS: {cause}"));
            }
            if re.is_timeout() {
                return (
                    ErrorKind::DeadlineExceeded,
                    "no answer in time (Vault is slow or stalled)".into(),
                );
            }
            if re.is_connect() {
                return (
                    ErrorKind::Unavailable,
                    format!("cannot connect ({})", root_cause(re)),
                );
            }
            return (
                ErrorKind::Unavailable,
                format!("the request failed ({})", root_cause(re)),
            );
        }
        if let Some(rustify::errors::ClientError::ServerResponseError { code, .. }) =
            err.downcast_ref::<rustify::errors::ClientError>()
        {
            let kind = match status_kind(*code) {
                ErrorKind::Unavailable => ErrorKind::Unavailable,
                _ => ErrorKind::Internal,
            };
            return (
                kind,
                format!("HTTP {code} with a body that is not a Vault error"),
            );
        }
        source = err.source();
    }
    match e {
        ClientError::ResponseEmptyError => (
            ErrorKind::Internal,
            "the response is empty (no auth block)".into(),
        ),
        ClientError::ResponseDataEmptyError => {
            (ErrorKind::NotFound, "the response has no data".into())
        }
        ClientError::RestClientError {
            source: rustify::errors::ClientError::ResponseParseError { .. },
        } => (ErrorKind::Internal, "the response is not JSON".into()),
        other => (ErrorKind::Internal, other.to_string()),
    }
}

fn find_source<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        // rustls errors arrive wrapped in io::Error by the TLS connector.
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(found) = inner.downcast_ref::<T>()
        {
            return Some(found);
        }
        current = err.source();
    }
    None
}
