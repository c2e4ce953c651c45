//! The one place where errors become gRPC statuses. The message is the
//! whole error chain; no error in coffer carries a secret, so the chain is
//! safe to show in pod events.

use std::time::Duration;

use tonic::{Code, Status};

use crate::backend::ErrorKind;
use crate::errors::chain;
use crate::mount;

/// Everything a Mount can end with, other than success.
#[derive(Debug)]
pub enum Failure {
    Mount(mount::Error),
    Timeout {
        after: Duration,
        backend: &'static str,
    },
    ShuttingDown,
    /// A bug: the mount panicked. The process goes on serving.
    Panic,
}

impl Failure {
    pub fn into_status(self) -> Status {
        match self {
            Failure::Mount(e) => Status::new(code(&e), bounded(chain(&e))),
            Failure::Timeout { after, backend } => Status::deadline_exceeded(format!(
                "mount did not finish within {:.0?}: backend {backend} is slow or unreachable",
                after
            )),
            Failure::ShuttingDown => Status::unavailable("coffer is shutting down"),
            Failure::Panic => Status::internal(
                "coffer failed internally while mounting (a bug: the provider's log has the place)",
            ),
        }
    }
}

fn kind_code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::Internal => Code::Internal,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
    }
}

fn code(e: &mount::Error) -> Code {
    match e {
        mount::Error::Request(r) | mount::Error::Identity { source: r, .. }
            if r.is_precondition() =>
        {
            Code::FailedPrecondition
        }
        mount::Error::Identity { .. } => Code::InvalidArgument,
        mount::Error::Request(_)
        | mount::Error::NoBackendParameter { .. }
        | mount::Error::UnknownBackend { .. } => Code::InvalidArgument,
        mount::Error::Plan(b) | mount::Error::Fetch { source: b, .. } => kind_code(b.kind()),
        mount::Error::File(mount::files::Error::TooLarge { .. }) => Code::ResourceExhausted,
        mount::Error::File(mount::files::Error::Shape { .. }) => Code::Internal,
        mount::Error::File(_) => Code::InvalidArgument,
        mount::Error::FetchCount { .. } => Code::Internal,
        mount::Error::Cancelled => Code::Unavailable,
        mount::Error::Template(_) | mount::Error::Refresh(_) => Code::InvalidArgument,
    }
}

/// Status messages travel in an HTTP/2 header: keep them well below the
/// peer's header list limit whatever an error quotes.
const MAX_MESSAGE_BYTES: usize = 4096;

fn bounded(message: String) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message;
    }
    crate::errors::truncate(&message, MAX_MESSAGE_BYTES, "… (truncated)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request;

    #[test]
    fn request_errors_are_invalid_argument_and_audience_is_precondition() {
        let st = Failure::Mount(mount::Error::Request(request::Error::Permission(
            "x".into(),
        )))
        .into_status();
        assert_eq!(st.code(), Code::InvalidArgument);
        assert!(
            st.message()
                .starts_with("invalid mount request: permission"),
            "{}",
            st.message()
        );
        let st = Failure::Mount(mount::Error::Request(request::Error::MissingAudience {
            audience: "vault".into(),
            present: "none".into(),
        }))
        .into_status();
        assert_eq!(st.code(), Code::FailedPrecondition);
    }

    #[test]
    fn long_messages_are_bounded() {
        let long = "é".repeat(5000);
        let st =
            Failure::Mount(mount::Error::Request(request::Error::Permission(long))).into_status();
        assert!(st.message().len() <= MAX_MESSAGE_BYTES + 20);
        assert!(st.message().ends_with("(truncated)"));
    }

    #[test]
    fn too_large_is_resource_exhausted_and_timeout_names_backend() {
        let st = Failure::Mount(mount::Error::File(mount::files::Error::TooLarge {
            size: 5,
            limit: 4,
        }))
        .into_status();
        assert_eq!(st.code(), Code::ResourceExhausted);
        let st = Failure::Timeout {
            after: Duration::from_secs(3),
            backend: "vault",
        }
        .into_status();
        assert_eq!(st.code(), Code::DeadlineExceeded);
        assert!(st.message().contains("vault"));
    }
}
