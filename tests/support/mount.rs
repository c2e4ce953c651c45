//! Mount requests as the Secrets Store CSI driver sends them, for tests
//! that talk to coffer's socket with the Rust client (`coffer::standin`).
//!
//! ```ignore
//! let request = MountBuilder::new("vault", "shop", "web", "web-0", UID)
//!     .params([("roleName", "web"), ("objects", OBJECTS)])
//!     .sa_token("vault", 600)
//!     .build();
//! let mounted = support::mount::mount(&coffer.socket("vault"), request).await?;
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use coffer::grpc::{MountRequest, MountResponse};
use coffer::secret::Token;
use coffer::spc::SecretProviderClass;
use coffer::standin::{self, PodIdentity};

use super::jwt;

/// One SecretProviderClass, one pod and its ServiceAccount tokens, turned
/// into a `MountRequest` the way driver v1.6 builds it
/// ([`standin::attributes`]): `secrets` `"null"`, `targetPath` `/t`,
/// `permission` `"420"`, no current object versions, and the
/// `serviceAccount.tokens` attribute always present (`{}` without tokens).
#[derive(Clone)]
pub struct MountBuilder {
    spc: SecretProviderClass,
    pod: PodIdentity,
    tokens: Vec<(String, Token)>,
}

impl MountBuilder {
    /// SecretProviderClass `app` in `namespace` for `provider`, no
    /// parameters; pod `pod` with UID `uid` running as `service_account`;
    /// no tokens.
    pub fn new(
        provider: &str,
        namespace: &str,
        service_account: &str,
        pod: &str,
        uid: &str,
    ) -> MountBuilder {
        MountBuilder {
            spc: SecretProviderClass {
                name: "app".into(),
                namespace: Some(namespace.into()),
                provider: provider.into(),
                parameters: BTreeMap::new(),
            },
            pod: PodIdentity {
                name: pod.into(),
                namespace: namespace.into(),
                uid: uid.into(),
                service_account: service_account.into(),
            },
            tokens: Vec::new(),
        }
    }

    /// The SecretProviderClass's name (default `app`).
    pub fn class_name(mut self, name: &str) -> MountBuilder {
        self.spc.name = name.into();
        self
    }

    /// Sets SecretProviderClass parameters (a later value for a key
    /// replaces an earlier one).
    pub fn params<K: Into<String>, V: Into<String>>(
        mut self,
        params: impl IntoIterator<Item = (K, V)>,
    ) -> MountBuilder {
        self.spc
            .parameters
            .extend(params.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Adds kubelet's token for `audience`.
    pub fn token(mut self, audience: &str, token: impl Into<String>) -> MountBuilder {
        self.tokens
            .push((audience.into(), Token::new(token.into())));
        self
    }

    /// Adds a valid ServiceAccount token ([`jwt::sa_token`]) of this pod for
    /// `audience`, expiring in `ttl_secs`.
    pub fn sa_token(self, audience: &str, ttl_secs: i64) -> MountBuilder {
        let token = jwt::sa_token(
            &self.pod.namespace,
            &self.pod.service_account,
            &self.pod.name,
            &self.pod.uid,
            audience,
            ttl_secs,
        );
        self.token(audience, token)
    }

    pub fn build(&self) -> MountRequest {
        let attributes = standin::attributes(
            &self.spc,
            &[],
            &self.pod,
            Some(&standin::tokens_json(&self.tokens)),
        );
        MountRequest {
            attributes,
            secrets: "null".into(),
            target_path: "/t".into(),
            permission: "420".into(),
            current_object_version: vec![],
        }
    }
}

/// What a successful Mount returned: `path → (mode, contents)` and
/// `object id → version`. No `Debug`: the contents are secrets.
#[derive(Clone, Default)]
pub struct Mounted {
    pub files: BTreeMap<String, (i32, Vec<u8>)>,
    pub versions: BTreeMap<String, String>,
}

impl From<MountResponse> for Mounted {
    fn from(resp: MountResponse) -> Mounted {
        Mounted {
            files: resp
                .files
                .into_iter()
                .map(|f| (f.path, (f.mode, f.contents)))
                .collect(),
            versions: resp
                .object_version
                .into_iter()
                .map(|v| (v.id, v.version))
                .collect(),
        }
    }
}

/// Connects to `socket` (panics if it cannot) and sends one Mount.
pub async fn mount(
    socket: &Path,
    request: impl tonic::IntoRequest<MountRequest>,
) -> Result<Mounted, tonic::Status> {
    let mut client = standin::connect(socket).await.expect("connect");
    Ok(client.mount(request).await?.into_inner().into())
}
