//! The AWS backend's errors, what an AWS error code means to the driver,
//! and how SDK failures become them. None carries a secret value or a
//! credential.

use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};

use super::jmes;
use super::params::Kind;
use crate::backend::support::{Outcome, status_kind, status_retryable};
use crate::backend::{BackendError, ErrorKind};
use crate::errors::root_cause;

/// AWS backend errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SecretProviderClass is wrong (the aws provider's message).
    #[error("{message}")]
    Spc { message: String },
    /// Something outside coffer must change first (role, region, API access).
    #[error("{message}")]
    Precondition { message: String },
    #[error("{what}: {reason}")]
    Kube {
        what: String,
        reason: String,
        kind: ErrorKind,
    },
    #[error("no credentials from {how}{}: {reason}", if .at.is_empty() { String::new() } else { format!(" ({})", .at) })]
    Credentials {
        how: &'static str,
        at: String,
        reason: String,
        kind: ErrorKind,
    },
    #[error("{0}")]
    Aws(Box<AwsError>),
    #[error("{what} {object:?}: {source}")]
    Jmes {
        what: &'static str,
        object: String,
        #[source]
        source: jmes::JmesError,
    },
    #[error("{primary}; then from the failover region: {failover}")]
    Failover {
        primary: Box<Error>,
        failover: Box<Error>,
    },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Objects(Vec<Error>),
}

/// One AWS call's failure for one object.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what} {object:?} in {region}: {operation}: {code}: {message}")]
pub struct AwsError {
    pub what: &'static str,
    pub object: String,
    pub region: String,
    pub operation: &'static str,
    pub code: String,
    pub message: String,
    pub kind: ErrorKind,
    pub retryable: bool,
}

impl Error {
    /// Worth asking the failover region: the primary could not answer.
    pub fn retryable(&self) -> bool {
        match self {
            Error::Aws(e) => e.retryable,
            Error::Credentials { kind, .. } | Error::Kube { kind, .. } => {
                matches!(kind, ErrorKind::Unavailable | ErrorKind::DeadlineExceeded)
            }
            _ => false,
        }
    }
}

impl BackendError for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::Spc { .. } => ErrorKind::InvalidArgument,
            Error::Precondition { .. } => ErrorKind::FailedPrecondition,
            Error::Kube { kind, .. } | Error::Credentials { kind, .. } => *kind,
            Error::Aws(e) => e.kind,
            Error::Jmes { source, .. } => match source {
                jmes::JmesError::NoMatch { .. } => ErrorKind::NotFound,
                _ => ErrorKind::InvalidArgument,
            },
            Error::Failover { failover, .. } => failover.kind(),
            Error::Objects(all) => all.first().map_or(ErrorKind::Internal, |e| e.kind()),
        }
    }
}

/// How error messages name an object of `kind`.
pub fn what(kind: Kind) -> &'static str {
    match kind {
        Kind::SecretsManager => "secret",
        Kind::SsmParameter => "parameter",
    }
}

/// What a failed AWS call said.
#[derive(Debug, Clone)]
pub struct Failure {
    pub code: String,
    pub message: String,
    pub kind: ErrorKind,
    pub retryable: bool,
    /// Whether the service answered no, for the request metrics.
    pub outcome: Outcome,
    /// Throttled: a throttling error code, or HTTP 429 whatever the code.
    pub throttled: bool,
}

impl Default for Failure {
    fn default() -> Self {
        Self::internal("Unknown", "no message")
    }
}

impl Failure {
    /// A failure that is coffer's to report, not AWS's to retry.
    pub fn internal(code: &str, message: &str) -> Self {
        Self {
            code: code.to_owned(),
            message: message.to_owned(),
            kind: ErrorKind::Internal,
            retryable: false,
            outcome: Outcome::Error,
            throttled: false,
        }
    }

    /// A failure with an AWS error `code`, classified by [`code_kind`].
    pub fn coded(code: &str, message: &str) -> Self {
        let (kind, retryable) = code_kind(code, None);
        Self {
            kind,
            retryable,
            throttled: is_throttling(code),
            ..Self::internal(code, message)
        }
    }

    /// The failure after `attempts` calls of `operation` (`service.Name`):
    /// throttling names the quota that ran out, other retried failures say
    /// how often they were tried.
    pub fn after(mut self, attempts: u32, operation: &str) -> Self {
        if self.throttled {
            self.message = format!(
                "{} (throttled {attempts} time(s) within the mount's deadline; {})",
                self.message,
                quota(operation)
            );
        } else if attempts > 1 {
            self.message = format!("{} (after {attempts} attempts)", self.message);
        }
        self
    }

    /// The error of one object.
    pub fn error(&self, kind: Kind, object: &str, region: &str, operation: &'static str) -> Error {
        Error::Aws(Box::new(AwsError {
            what: what(kind),
            object: object.to_owned(),
            region: region.to_owned(),
            operation,
            code: self.code.clone(),
            message: self.message.clone(),
            kind: self.kind,
            retryable: self.retryable,
        }))
    }
}

/// An answer that says nothing about an object that was asked for.
pub fn missing(kind: Kind, name: &str, region: &str) -> Error {
    let operation = match kind {
        Kind::SecretsManager => "GetSecretValue",
        Kind::SsmParameter => "GetParameters",
    };
    Failure::internal(
        "NoResult",
        "the answer has neither a value nor an error for it",
    )
    .error(kind, name, region, operation)
}

/// One request's result for each object that asked for it.
pub fn copy<T: Clone>(r: &Result<T, Error>) -> Result<T, Error> {
    match r {
        Ok(v) => Ok(v.clone()),
        Err(Error::Aws(e)) => Err(Error::Aws(e.clone())),
        Err(other) => Err(Error::Precondition {
            message: other.to_string(),
        }),
    }
}

/// Whether an AWS error code means "slow down".
pub fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "ThrottlingException"
            | "Throttling"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "ThrottledException"
    )
}

/// The quota behind an operation (`service.Name`), per account and region.
pub fn quota(operation: &str) -> &'static str {
    match operation {
        "secretsmanager.GetSecretValue" => {
            "the Secrets Manager GetSecretValue quota is 10,000 requests per second per account and region, shared by every caller"
        }
        "secretsmanager.DescribeSecret" => {
            "the Secrets Manager DescribeSecret quota is 40,000 requests per second per account and region, shared by every caller"
        }
        "ssm.GetParameters" => {
            "the SSM GetParameters quota is 40 requests per second per account and region by default (3,000 with higher throughput), shared by every caller"
        }
        _ => "the account's request quota for this API in this region is used up",
    }
}

/// gRPC kind and retryability of an AWS error code (and HTTP status).
pub fn code_kind(code: &str, status: Option<u16>) -> (ErrorKind, bool) {
    match code {
        "AccessDeniedException" | "AccessDenied" | "KMSAccessDeniedException" => {
            (ErrorKind::PermissionDenied, false)
        }
        // Secrets Manager cannot decrypt with the secret's KMS key: almost
        // always a missing kms:Decrypt grant for the caller.
        "DecryptionFailure" | "KMSDisabledException" | "KMSInvalidStateException" => {
            (ErrorKind::PermissionDenied, false)
        }
        "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "ExpiredTokenException"
        | "ExpiredToken"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "SignatureDoesNotMatch" => (ErrorKind::Unauthenticated, false),
        "ResourceNotFoundException"
        | "ParameterNotFound"
        | "ParameterVersionNotFound"
        | "InvalidParameters" => (ErrorKind::NotFound, false),
        c if is_throttling(c) => (ErrorKind::Unavailable, true),
        "InternalServiceError"
        | "InternalServerError"
        | "InternalFailure"
        | "ServiceUnavailable"
        | "ServiceUnavailableException" => (ErrorKind::Unavailable, true),
        "InvalidRequestException" => (ErrorKind::FailedPrecondition, false),
        "InvalidParameterException"
        | "ValidationException"
        | "InvalidKeyId"
        | "InvalidNextTokenException" => (ErrorKind::InvalidArgument, false),
        _ => match status {
            Some(s) => (status_kind(s), status_retryable(s)),
            None => (ErrorKind::Internal, false),
        },
    }
}

/// What an SDK call's failure says (every AWS SDK shares the error type).
pub fn classify<E>(e: &SdkError<E, aws_sdk_secretsmanager::config::http::HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match e {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let err = ctx.err();
            let code = err.code().unwrap_or("Unknown").to_owned();
            let (kind, retryable) = code_kind(&code, Some(status));
            let throttled = is_throttling(&code) || status == 429;
            Failure {
                message: err
                    .message()
                    .map(|m| crate::errors::prefix(m, 500).to_owned())
                    .unwrap_or_else(|| format!("HTTP {status}")),
                code,
                kind,
                retryable,
                outcome: if (400..500).contains(&status) && !retryable {
                    Outcome::Refused
                } else {
                    Outcome::Error
                },
                throttled,
            }
        }
        SdkError::TimeoutError(_) => Failure {
            kind: ErrorKind::DeadlineExceeded,
            retryable: true,
            ..Failure::internal("Timeout", "no answer in time")
        },
        SdkError::DispatchFailure(d) => Failure {
            kind: if d.is_timeout() {
                ErrorKind::DeadlineExceeded
            } else {
                ErrorKind::Unavailable
            },
            retryable: true,
            ..Failure::internal(
                if d.is_timeout() {
                    "Timeout"
                } else {
                    "ConnectionFailed"
                },
                &format!("cannot reach the endpoint ({})", root_cause(e)),
            )
        },
        SdkError::ResponseError(_) => Failure {
            kind: ErrorKind::Unavailable,
            retryable: true,
            ..Failure::internal(
                "BadResponse",
                &format!("the answer cannot be read ({})", root_cause(e)),
            )
        },
        _ => Failure::internal("RequestNotSent", &root_cause(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_map_to_grpc_kinds() {
        let cases: &[(&str, Option<u16>, ErrorKind, bool)] = &[
            (
                "AccessDeniedException",
                Some(400),
                ErrorKind::PermissionDenied,
                false,
            ),
            (
                "ResourceNotFoundException",
                Some(400),
                ErrorKind::NotFound,
                false,
            ),
            ("ParameterNotFound", Some(400), ErrorKind::NotFound, false),
            (
                "DecryptionFailure",
                Some(400),
                ErrorKind::PermissionDenied,
                false,
            ),
            (
                "ThrottlingException",
                Some(400),
                ErrorKind::Unavailable,
                true,
            ),
            (
                "InternalServiceError",
                Some(500),
                ErrorKind::Unavailable,
                true,
            ),
            (
                "UnrecognizedClientException",
                Some(400),
                ErrorKind::Unauthenticated,
                false,
            ),
            (
                "InvalidRequestException",
                Some(400),
                ErrorKind::FailedPrecondition,
                false,
            ),
            ("Whatever", Some(503), ErrorKind::Unavailable, true),
            ("Whatever", Some(404), ErrorKind::NotFound, false),
            ("Whatever", None, ErrorKind::Internal, false),
        ];
        for (code, status, kind, retry) in cases {
            assert_eq!(code_kind(code, *status), (*kind, *retry), "{code}");
        }
    }

    #[test]
    fn throttling_after_retries_names_the_api_and_its_quota() {
        let e = Failure::coded("ThrottlingException", "Rate exceeded")
            .after(4, "secretsmanager.GetSecretValue")
            .error(
                Kind::SecretsManager,
                "shop/db",
                "us-west-2",
                "GetSecretValue",
            );
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        let text = e.to_string();
        assert!(
            text.starts_with("secret \"shop/db\" in us-west-2: GetSecretValue: ThrottlingException: Rate exceeded (throttled 4 time(s)")
                && text.contains("GetSecretValue quota is 10,000 requests per second"),
            "{text}"
        );
        let ssm =
            Failure::coded("ThrottlingException", "Rate exceeded").after(2, "ssm.GetParameters");
        assert!(
            ssm.message.contains("40 requests per second"),
            "{}",
            ssm.message
        );
        let other = Failure::coded("InternalServiceError", "boom")
            .after(3, "secretsmanager.DescribeSecret");
        assert_eq!(other.message, "boom (after 3 attempts)");
        let once = Failure::coded("ResourceNotFoundException", "no")
            .after(1, "secretsmanager.DescribeSecret");
        assert_eq!(once.message, "no");
    }
}
