//! Backends: where secrets come from. A backend turns SecretProviderClass
//! parameters into a [`Plan`] (offline: the files it will return, their
//! modes, and a secret-free description of each object) and later fetches
//! the contents with the pod's identity.
//!
//! `mount` and `server` only ever see this module's types, so a new backend
//! plugs in without touching them.

use std::fmt;

use async_trait::async_trait;

use crate::request::{NodePublishSecrets, Parameters, PodInfo, TokenClaims};
use crate::secret::{SecretBytes, Token};

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(any(feature = "vault", feature = "aws"))]
pub mod http;
pub mod registry;
pub mod support;
#[cfg(feature = "vault")]
pub mod vault;

/// How a backend failure maps onto the driver's world (gRPC codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The SecretProviderClass or request is wrong.
    InvalidArgument,
    /// Something outside coffer must change first (e.g. CSIDriver tokenRequests).
    FailedPrecondition,
    /// The backend did not accept the pod's identity.
    Unauthenticated,
    /// The identity is known but not allowed.
    PermissionDenied,
    /// The secret or key does not exist.
    NotFound,
    /// The backend could not be reached or is not serving (worth a retry).
    Unavailable,
    /// The backend did not answer in time.
    DeadlineExceeded,
    /// The backend answered something coffer cannot use.
    Internal,
    /// The backend's answer is larger than coffer accepts.
    ResourceExhausted,
}

/// Implemented by every backend's own error enum.
pub trait BackendError: std::error::Error + Send + Sync + 'static {
    fn kind(&self) -> ErrorKind;
}

/// A backend error, type-erased so `mount` stays backend-agnostic.
pub struct Error(Box<dyn BackendError>);

impl Error {
    pub fn kind(&self) -> ErrorKind {
        self.0.kind()
    }
}

impl<E: BackendError> From<E> for Error {
    fn from(e: E) -> Self {
        Self(Box::new(e))
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// One object of a plan: usually one file; with `all_keys`, a directory
/// whose files are known only after the fetch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlannedFile {
    /// The file path inside the volume (with `all_keys`: the directory);
    /// also the `ObjectVersion.id` and what error messages name.
    pub path: String,
    /// The file mode, if the object sets one (else the request's permission).
    pub mode: Option<u32>,
    /// A secret-free, canonical description of the object (backend, path,
    /// key, encoding…). It is part of the version HMAC, so a changed object
    /// definition changes the version even when the content does not.
    pub config: String,
    /// `templateOnly: true`: fetched, versioned and seen by templates, but
    /// not written as a file of its own.
    pub template_only: bool,
    /// `allKeys: true`: the fetch returns [`Fetched::Keys`], one file
    /// `<path>/<key>` per key of the secret (checked by `mount::files`).
    pub all_keys: bool,
    /// `optional: true`: the fetch may return [`Fetched::Absent`] when the
    /// backend says NotFound, and only then.
    pub optional: bool,
}

/// What the fetch returns for one planned file, in plan order.
pub enum Fetched {
    /// The content of the planned file; its object version is coffer's HMAC
    /// of the definition and the content.
    File(SecretBytes),
    /// The content of the planned file and the version the backend gives it,
    /// where the dialect reports the backend's own versions (the aws
    /// provider reports the secret's VersionId, the parameter's version).
    Versioned(SecretBytes, String),
    /// The keys of an `all_keys` object with their contents, sorted by key.
    /// The keys are raw: `mount::files::expand` checks them as file names.
    Keys(Vec<(String, SecretBytes)>),
    /// An `optional` object that does not exist (the backend said NotFound).
    Absent,
}

impl fmt::Debug for Fetched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fetched::File(b) => write!(f, "File({} bytes)", b.len()),
            Fetched::Versioned(b, v) => write!(f, "Versioned({} bytes, {v:?})", b.len()),
            Fetched::Keys(keys) => write!(f, "Keys({} keys)", keys.len()),
            Fetched::Absent => f.write_str("Absent"),
        }
    }
}

/// What a backend will do for one mount, decided before any network call.
pub struct Plan {
    pub files: Vec<PlannedFile>,
    /// The ServiceAccount token audience the fetch logs in with; `mount`
    /// resolves it from the request before fetching.
    pub audience: String,
    /// Non-fatal findings (unknown keys, deprecated names): logged and shown by `coffer check`.
    pub warnings: Vec<String>,
    pub fetch: Box<dyn Fetch>,
}

impl fmt::Debug for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plan")
            .field("files", &self.files)
            .field("audience", &self.audience)
            .field("warnings", &self.warnings)
            .finish_non_exhaustive()
    }
}

/// The identity and context a fetch runs with.
#[derive(Debug)]
pub struct FetchContext<'a> {
    pub pod: &'a PodInfo,
    /// The pod's ServiceAccount token for the plan's audience.
    pub token: &'a Token,
    /// What that token says about the pod (unverified; the backend verifies).
    pub claims: &'a TokenClaims,
    pub secrets: &'a NodePublishSecrets,
    /// When the mount must have answered: retries and back-off stop
    /// early enough to report the backend's own error before it.
    pub deadline: std::time::Instant,
}

/// The network half of a plan.
#[async_trait]
pub trait Fetch: Send + Sync {
    /// Returns one [`Fetched`] per planned file, in the plan's order:
    /// `Keys` exactly for `all_keys` files, `Absent` only for `optional`
    /// ones whose object does not exist. Any other failure fails the
    /// whole mount.
    async fn fetch(&self, ctx: &FetchContext<'_>) -> Result<Vec<Fetched>, Error>;
}

/// A source of secrets.
pub trait Backend: Send + Sync {
    /// The name the `backend` parameter uses (`vault`, `aws`).
    fn name(&self) -> &'static str;
    /// The provider socket names whose classes are this backend's without
    /// a `backend` parameter (the peers' names: `vault`, `openbao`, `aws`).
    fn sockets(&self) -> &'static [&'static str];
    /// Reads and validates the parameters of a class that arrived on the
    /// socket `socket` (a backend may read its dialect from the name).
    /// Pure: no network, no clock.
    fn plan(&self, params: &Parameters, socket: &str) -> Result<Plan, Error>;

    /// Drops what the backend keeps past its lifetime (tokens, credentials,
    /// dynamic responses); returns how many entries went. Called
    /// periodically by `coffer serve`.
    fn sweep(&self) -> usize {
        0
    }
}
