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

/// The pod the Secrets Store Sync Controller runs in: every SecretSync's
/// request carries this pod's name and UID (from the downward API,
/// `SYNC_CONTROLLER_POD_NAME` / `SYNC_CONTROLLER_POD_UID`).
#[derive(Clone)]
pub struct SyncController {
    pub pod_name: String,
    pub pod_uid: String,
}

/// One SecretSync: its namespace, its `spec.serviceAccountName`, the
/// parameters of the SecretProviderClass it names, and the tokens the
/// controller requested for that ServiceAccount (one per
/// `--token-request-audience`).
#[derive(Clone)]
pub struct SecretSync {
    pub namespace: String,
    pub service_account: String,
    pub params: BTreeMap<String, String>,
    pub tokens: Vec<(String, Token)>,
}

impl SyncController {
    /// A `MountRequest` exactly as kubernetes-sigs/secrets-store-sync-controller
    /// builds it (`prepareCSIProviderParams` in
    /// internal/controller/secretsync_controller.go, `MountContent` in
    /// pkg/provider/provider_client.go):
    ///
    /// * `attributes`: `json.Marshal` of the class's parameters plus
    ///   `csi.storage.k8s.io/pod.name` and `pod.uid` (the controller's own
    ///   pod), `pod.namespace` (the SecretSync's namespace),
    ///   `serviceAccount.name` (the SecretSync's ServiceAccount) and, when
    ///   the controller has audiences, `serviceAccount.tokens` (`json.Marshal`
    ///   of `map[audience]TokenRequestStatus`). No `secretProviderClass`, no
    ///   `ephemeral` attribute.
    /// * `secrets`: `"{}"` (an empty map, marshalled).
    /// * `permission`: `json.Marshal(os.FileMode(0644))` = `"420"`.
    /// * `targetPath`: the fixed `/mnt/secrets-store`.
    /// * `currentObjectVersion`: empty (the controller passes an empty map).
    pub fn request(&self, sync: &SecretSync) -> MountRequest {
        let mut map = sync.params.clone();
        map.insert("csi.storage.k8s.io/pod.name".into(), self.pod_name.clone());
        map.insert("csi.storage.k8s.io/pod.uid".into(), self.pod_uid.clone());
        map.insert(
            "csi.storage.k8s.io/pod.namespace".into(),
            sync.namespace.clone(),
        );
        map.insert(
            "csi.storage.k8s.io/serviceAccount.name".into(),
            sync.service_account.clone(),
        );
        if !sync.tokens.is_empty() {
            map.insert(
                "csi.storage.k8s.io/serviceAccount.tokens".into(),
                standin::tokens_json(&sync.tokens),
            );
        }
        let value = serde_json::Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect(),
        );
        MountRequest {
            attributes: String::from_utf8(coffer::gojson::to_vec(&value)).expect("UTF-8 JSON"),
            secrets: "{}".into(),
            target_path: "/mnt/secrets-store".into(),
            permission: "420".into(),
            current_object_version: vec![],
        }
    }
}

impl SecretSync {
    /// A SecretSync in `namespace` running as `service_account`, with the
    /// class's `params`, and a fresh token for each of `audiences` as the
    /// controller's TokenRequest returns it: 600 seconds, bound to no pod
    /// (no `kubernetes.io.pod` claim).
    pub fn new(
        controller: &SyncController,
        namespace: &str,
        service_account: &str,
        params: BTreeMap<String, String>,
        audiences: &[&str],
    ) -> SecretSync {
        let tokens = audiences
            .iter()
            .map(|aud| {
                let mut claims = jwt::sa_claims(
                    namespace,
                    service_account,
                    &controller.pod_name,
                    &controller.pod_uid,
                    aud,
                    jwt::now(),
                    600,
                );
                if let Some(k8s) = claims["kubernetes.io"].as_object_mut() {
                    k8s.remove("pod");
                }
                ((*aud).to_owned(), Token::new(jwt::sign_claims(&claims)))
            })
            .collect();
        SecretSync {
            namespace: namespace.into(),
            service_account: service_account.into(),
            params,
            tokens,
        }
    }
}
