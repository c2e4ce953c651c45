//! One Mount, in order: parse the request → choose the backend → plan →
//! check the planned files → fetch → assemble files and versions.
//! All or nothing: any failure returns an error and no file.

pub mod files;
pub mod refresh;
pub mod templates;
pub mod version;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::backend::{self, Backend, FetchContext, Plan};
use crate::grpc;
use crate::request;

pub use files::MAX_RESPONSE_BYTES;

/// Why a mount failed. Messages name the object and the cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid mount request")]
    Request(#[from] request::Error),
    #[error(
        "the SecretProviderClass must set parameter \"backend\" on provider {provider:?} (one of: {available})"
    )]
    NoBackendParameter { provider: String, available: String },
    #[error("backend {name:?} is not available in this coffer (available: {available})")]
    UnknownBackend { name: String, available: String },
    #[error("invalid SecretProviderClass")]
    Plan(#[source] backend::Error),
    #[error("{0}")]
    File(#[from] files::Error),
    #[error("{backend}: pod identity")]
    Identity {
        backend: &'static str,
        #[source]
        source: request::Error,
    },
    #[error("{backend}")]
    Fetch {
        backend: &'static str,
        #[source]
        source: backend::Error,
    },
    #[error("invalid templates")]
    Template(#[from] templates::Error),
    #[error("invalid SecretProviderClass")]
    Refresh(#[from] refresh::Error),
    #[error("planning the mount was cancelled (coffer is shutting down)")]
    Cancelled,
    #[error("backend {backend} returned {got} contents for {want} files")]
    FetchCount {
        backend: &'static str,
        got: usize,
        want: usize,
    },
}

/// The backends this process serves, by name.
#[derive(Default, Clone)]
pub struct Backends {
    by_name: BTreeMap<&'static str, Arc<dyn Backend>>,
}

impl From<Vec<Arc<dyn Backend>>> for Backends {
    fn from(all: Vec<Arc<dyn Backend>>) -> Self {
        let mut backends = Backends::default();
        for backend in all {
            backends.add(backend);
        }
        backends
    }
}

impl Backends {
    pub fn add(&mut self, backend: Arc<dyn Backend>) {
        self.by_name.insert(backend.name(), backend);
    }

    fn available(&self) -> String {
        if self.by_name.is_empty() {
            "none".into()
        } else {
            self.by_name.keys().copied().collect::<Vec<_>>().join(", ")
        }
    }

    /// The backend for a socket: the one that serves the socket's name
    /// (`vault`, `openbao`, `aws`), else the one the `backend` parameter names.
    pub fn select(
        &self,
        provider: &str,
        params: &request::Parameters,
    ) -> Result<&Arc<dyn Backend>, Error> {
        if let Some(backend) = self
            .by_name
            .values()
            .find(|b| b.sockets().contains(&provider))
        {
            return Ok(backend);
        }
        let name = params
            .non_empty("backend")
            .ok_or_else(|| Error::NoBackendParameter {
                provider: provider.to_owned(),
                available: self.available(),
            })?;
        self.by_name.get(name).ok_or_else(|| Error::UnknownBackend {
            name: name.to_owned(),
            available: self.available(),
        })
    }

    /// Plans a mount from parameters alone (also used by `coffer check`).
    pub fn plan(&self, provider: &str, params: &request::Parameters) -> Result<MountPlan, Error> {
        let backend = self.select(provider, params)?;
        let plan = backend.plan(params, provider).map_err(Error::Plan)?;
        let templates = templates::parse(params.get("templates"))?;
        let refresh = refresh::parse(params.get(refresh::PARAMETER))?;
        let mut all = plan.files.clone();
        all.extend(templates.iter().map(template_file));
        files::check_plan(&all)?;
        Ok(MountPlan {
            backend: backend.name(),
            plan,
            templates,
            refresh,
        })
    }
}

/// A backend's plan and the templates rendered from its objects.
#[derive(Debug)]
pub struct MountPlan {
    /// The backend's name (`Backend::name`), for logs, metrics and errors.
    pub backend: &'static str,
    pub plan: Plan,
    pub templates: Vec<templates::Template>,
    /// `refreshInterval`: how long a pod's last files answer its republishes.
    pub refresh: std::time::Duration,
}

fn template_file(t: &templates::Template) -> crate::backend::PlannedFile {
    crate::backend::PlannedFile {
        path: t.file_name.clone(),
        mode: t.mode,
        config: t.config(),
        ..Default::default()
    }
}

/// Renders on tokio's blocking pool: a template runs for up to its fuel, and
/// on an async worker that would stall every other mount scheduled there.
/// The mount's deadline (a timeout around the whole mount) still answers
/// the caller on time; the render then ends by itself when its fuel runs out.
async fn render_off_workers(
    mount_plan: &Arc<MountPlan>,
    inputs: Vec<(String, crate::secret::SecretBytes)>,
) -> Result<Vec<crate::secret::SecretBytes>, templates::Error> {
    let plan = mount_plan.clone();
    let job = tokio::task::spawn_blocking(move || {
        let inputs: Vec<(&str, &crate::secret::SecretBytes)> =
            inputs.iter().map(|(name, c)| (name.as_str(), c)).collect();
        templates::render(&plan.templates, &inputs)
    });
    match job.await {
        Ok(rendered) => rendered,
        // A panic in rendering is passed on, to fail this mount as INTERNAL.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(templates::Error::Render {
            file: String::new(),
            detail: "rendering was cancelled (coffer is shutting down)".into(),
        }),
    }
}

/// Serves mounts: backends plus the key that makes object versions.
pub struct Mounter {
    backends: Backends,
    versions: version::Versioner,
    max_response_bytes: usize,
    /// Plans by (socket, parameters): every pod of a SecretProviderClass and
    /// every republish asks for the same one, so the YAML is parsed once.
    /// Per socket, then per parameters: looked up by reference, so a mount
    /// copies nothing to find its plan.
    plans: std::sync::Mutex<
        std::collections::HashMap<
            String,
            std::collections::HashMap<request::Parameters, Arc<MountPlan>>,
        >,
    >,
    /// The last responses of classes with a `refreshInterval`.
    responses: refresh::Responses,
    /// Requests parsed, for the republishes that repeat them.
    requests: request::Memo,
}

/// Most plans kept (each for parameters of at most [`PLAN_CACHE_BYTES`]);
/// the cache is emptied when it is full.
const PLAN_CACHE: usize = 512;

/// Parameter sets larger than this (keys and values) are planned on the
/// blocking pool and not kept.
const PLAN_CACHE_BYTES: usize = 64 * 1024;

/// What a successful mount produced, for logs and metrics.
#[derive(Debug)]
pub struct Outcome {
    pub backend: &'static str,
    pub objects: usize,
    pub bytes: usize,
    /// With a `refreshInterval`: whether the last files were returned
    /// without asking the backend.
    pub reused: Option<bool>,
}

impl Mounter {
    pub fn new(
        backends: Backends,
        versions: version::Versioner,
        max_response_bytes: usize,
    ) -> Self {
        Self {
            backends,
            versions,
            max_response_bytes,
            plans: std::sync::Mutex::default(),
            responses: refresh::Responses::default(),
            requests: request::Memo::default(),
        }
    }

    /// Parses a request, reusing the parse of an identical one ([`request::Memo`]).
    pub fn parse(&self, req: &grpc::MountRequest) -> Result<request::MountRequest, request::Error> {
        self.requests.parse(req)
    }

    /// The plan for these parameters, parsed once and then shared. A
    /// parameter set over [`PLAN_CACHE_BYTES`] is parsed on the blocking
    /// pool: its cost grows with what the class wrote (YAML up to 1 MiB per
    /// parameter, aliases), and on an async worker it would hold up every
    /// other tenant's mount scheduled there.
    async fn plan(
        &self,
        provider: &str,
        params: &request::Parameters,
    ) -> Result<Arc<MountPlan>, Error> {
        if let Some(plan) = self
            .plans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(provider)
            .and_then(|by_params| by_params.get(params))
        {
            return Ok(plan.clone());
        }
        if params.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() > PLAN_CACHE_BYTES {
            // Not kept: huge parameter sets would make the cache's memory unbounded.
            let (backends, provider, params) =
                (self.backends.clone(), provider.to_owned(), params.clone());
            let job = tokio::task::spawn_blocking(move || backends.plan(&provider, &params));
            return match job.await {
                Ok(plan) => plan.map(Arc::new),
                // A panic in planning is passed on, to fail this mount as INTERNAL.
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => Err(Error::Cancelled),
            };
        }
        let plan = Arc::new(self.backends.plan(provider, params)?);
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        if plans
            .values()
            .map(std::collections::HashMap::len)
            .sum::<usize>()
            >= PLAN_CACHE
        {
            plans.clear();
        }
        plans
            .entry(provider.to_owned())
            .or_default()
            .insert(params.clone(), plan.clone());
        Ok(plan)
    }

    /// Drops everything kept past its lifetime: the `refreshInterval`
    /// responses, parsed requests and each backend's tokens, credentials and dynamic
    /// responses. Returns how many entries went.
    pub fn sweep(&self) -> usize {
        self.responses.sweep()
            + self.requests.sweep()
            + self
                .backends
                .by_name
                .values()
                .map(|b| b.sweep())
                .sum::<usize>()
    }

    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// Runs one mount for the socket `provider`, to answer by `deadline`.
    #[expect(
        clippy::indexing_slicing,
        reason = "the allKeys ranges come from files::expand over these same vectors"
    )]
    pub async fn mount(
        &self,
        provider: &str,
        req: &request::MountRequest,
        deadline: std::time::Instant,
    ) -> Result<(grpc::MountResponse, Outcome), Error> {
        let mount_plan = self.plan(provider, &req.params).await?;
        let MountPlan {
            backend,
            plan,
            templates,
            refresh,
        } = &*mount_plan;
        let backend = *backend;
        tracing::debug!(
            provider,
            backend,
            objects = plan.files.len(),
            pod.namespace = %req.pod.namespace,
            pod.name = %req.pod.name,
            "planned"
        );
        for warning in &plan.warnings {
            tracing::warn!(
                pod.namespace = %req.pod.namespace,
                pod.name = %req.pod.name,
                spc = req.spc.as_deref().unwrap_or(""),
                "{warning}"
            );
        }
        // The token for the plan's audience, resolved once for every backend.
        let (token, claims) = req
            .tokens
            .for_audience(&plan.audience)
            .map_err(|source| Error::Identity { backend, source })?;
        // refreshInterval: the pod's last files, while they are fresh enough.
        let kept = (!refresh.is_zero()).then(|| refresh::key(provider, req, token));
        if let Some(key) = &kept
            && let Some((response, objects, bytes)) = self.responses.get(key)
        {
            return Ok((
                response,
                Outcome {
                    backend,
                    objects,
                    bytes,
                    reused: Some(true),
                },
            ));
        }
        let ctx = FetchContext {
            pod: &req.pod,
            token,
            claims: &claims,
            secrets: &req.secrets,
            deadline,
        };
        let fetched = plan
            .fetch
            .fetch(&ctx)
            .await
            .map_err(|source| Error::Fetch { backend, source })?;
        if fetched.len() != plan.files.len() {
            return Err(Error::FetchCount {
                backend,
                got: fetched.len(),
                want: plan.files.len(),
            });
        }
        // allKeys objects become one file per key, absent optional objects
        // none; the cached plan's files are borrowed when neither occurs.
        let files::Expanded {
            files: mut planned,
            mut contents,
            versions: mut backend_versions,
            markers,
            groups,
        } = files::expand(&plan.files, fetched)?;
        if !templates.is_empty() {
            // Templates see every file by its path, and each allKeys object
            // as a map of its keys under the object's name.
            let maps: Vec<(&str, crate::secret::SecretBytes)> = groups
                .iter()
                .map(|(dir, range)| {
                    let keys = planned[range.clone()]
                        .iter()
                        .zip(&contents[range.clone()])
                        .map(|(f, c)| {
                            let key = f.path[dir.len() + 1..].to_owned();
                            let text = String::from_utf8_lossy(c.expose()).into_owned();
                            (key, serde_json::Value::String(text))
                        })
                        .collect();
                    let json = crate::gojson::to_vec(&serde_json::Value::Object(keys));
                    (dir.as_str(), crate::secret::SecretBytes::new(json))
                })
                .collect();
            let inputs: Vec<(String, crate::secret::SecretBytes)> = planned
                .iter()
                .zip(&contents)
                .map(|(f, c)| (f.path.clone(), c.clone()))
                .chain(maps.into_iter().map(|(dir, c)| (dir.to_owned(), c)))
                .collect();
            let rendered = render_off_workers(&mount_plan, inputs).await?;
            // A rendered file's version covers every input's version, so it
            // changes when any input changes, even one the output ignores.
            let mut input_versions: Vec<String> = planned
                .iter()
                .zip(&contents)
                .zip(&backend_versions)
                .map(|((f, c), v)| {
                    v.clone()
                        .unwrap_or_else(|| self.versions.version(&f.config, c.expose()))
                })
                .collect();
            input_versions.extend(markers.iter().map(|(id, v)| format!("{id}={v}")));
            let digest = input_versions.join(",");
            for (t, content) in templates.iter().zip(rendered) {
                let mut file = template_file(t);
                file.config = format!("{}|inputs:{digest}", file.config);
                planned.to_mut().push(file);
                contents.push(content);
                backend_versions.push(None);
            }
        }
        // Keys are known only now: the file rules once more on the result.
        if plan.files.iter().any(|f| f.all_keys) {
            files::check_files(&planned)?;
        }
        let response = files::assemble(
            &planned,
            contents,
            &backend_versions,
            &markers,
            req.default_mode,
            &self.versions,
            self.max_response_bytes,
        )?;
        let outcome = Outcome {
            backend,
            objects: planned.len(),
            bytes: response.files.iter().map(|f| f.contents.len()).sum(),
            reused: kept.is_some().then_some(false),
        };
        if let Some(key) = kept {
            self.responses
                .put(key, &response, outcome.objects, *refresh);
        }
        Ok((response, outcome))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::thread::ThreadId;

    use super::*;
    use crate::backend::{BackendError, ErrorKind, Plan};

    #[derive(Debug, thiserror::Error)]
    #[error("recorded")]
    struct Recorded;

    impl BackendError for Recorded {
        fn kind(&self) -> ErrorKind {
            ErrorKind::InvalidArgument
        }
    }

    /// Records the thread each plan ran on.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<ThreadId>>);

    impl Backend for Recorder {
        fn name(&self) -> &'static str {
            "recorder"
        }
        fn sockets(&self) -> &'static [&'static str] {
            &["recorder"]
        }
        fn plan(&self, _: &request::Parameters, _: &str) -> Result<Plan, backend::Error> {
            self.0.lock().unwrap().push(std::thread::current().id());
            Err(Recorded.into())
        }
    }

    /// Parameters of `len` bytes, keys and values.
    fn params(len: usize) -> request::Parameters {
        [("objects".to_owned(), "x".repeat(len - "objects".len()))]
            .into_iter()
            .collect()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn large_parameter_sets_are_planned_off_the_async_worker() {
        let recorder = Arc::new(Recorder::default());
        let mut backends = Backends::default();
        backends.add(recorder.clone());
        let mounter = Mounter::new(
            backends,
            version::Versioner::random().unwrap(),
            MAX_RESPONSE_BYTES,
        );
        let here = std::thread::current().id();
        for (len, off_worker) in [
            (1024, false),
            (PLAN_CACHE_BYTES, false),
            (PLAN_CACHE_BYTES + 1, true),
            (1024 * 1024, true),
        ] {
            let err = mounter.plan("recorder", &params(len)).await.unwrap_err();
            assert!(matches!(err, Error::Plan(_)), "{len}: {err}");
            let planned_on = recorder.0.lock().unwrap().pop().unwrap();
            assert_eq!(planned_on != here, off_worker, "parameters of {len} bytes");
        }
    }
}
