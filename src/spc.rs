//! SecretProviderClass manifests (`secrets-store.csi.x-k8s.io/v1`), as
//! `coffer check` and `coffer mount` read them.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretProviderClass {
    pub name: String,
    pub namespace: Option<String>,
    pub provider: String,
    pub parameters: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: document {doc} is not valid YAML: {reason}")]
    Yaml {
        path: String,
        doc: usize,
        reason: String,
    },
    #[error("{path}: SecretProviderClass {name:?}: {reason}")]
    Invalid {
        path: String,
        name: String,
        reason: String,
    },
    #[error("{path}: no SecretProviderClass in the file")]
    None { path: String },
    #[error("{path}: {reason}")]
    TooCostly { path: String, reason: String },
}

/// The driver's rule for provider names, `^[a-zA-Z0-9_-]{1,30}$` (non-empty
/// here: an empty name makes the socket `.sock`).
pub fn is_provider_name(name: &str) -> bool {
    (1..=30).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// What a class whose `spec.provider` breaks [`is_provider_name`] is told.
pub const PROVIDER_NAME_RULE: &str = "it must match ^[a-zA-Z0-9_-]{1,30}$ (the driver's rule)";

pub const API_GROUP: &str = "secrets-store.csi.x-k8s.io";

#[derive(Deserialize)]
struct Doc {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    spec: Option<serde_yaml::Value>,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

/// Every SecretProviderClass in a file (other kinds are skipped); each
/// either parsed or with the reason it is not valid.
pub fn read(path: &Path) -> Result<Vec<Result<SecretProviderClass, Error>>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

pub fn parse(text: &str, path: &str) -> Result<Vec<Result<SecretProviderClass, Error>>, Error> {
    // The manifest, like the parameters inside it, may come from anyone.
    crate::yaml::check_structure(text).map_err(|reason| Error::TooCostly {
        path: path.to_owned(),
        reason,
    })?;
    let mut out = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml::Value::deserialize(document).map_err(|e| Error::Yaml {
            path: path.to_owned(),
            doc: i + 1,
            reason: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        let doc: Doc = serde_yaml::from_value(value).map_err(|e| Error::Yaml {
            path: path.to_owned(),
            doc: i + 1,
            reason: e.to_string(),
        })?;
        if doc.kind != "SecretProviderClass" {
            continue;
        }
        out.push(convert(doc, path));
    }
    if out.is_empty() {
        return Err(Error::None {
            path: path.to_owned(),
        });
    }
    Ok(out)
}

fn convert(doc: Doc, path: &str) -> Result<SecretProviderClass, Error> {
    let name = doc.metadata.name.clone();
    let invalid = |reason: String| Error::Invalid {
        path: path.to_owned(),
        name: name.clone(),
        reason,
    };
    let group = doc.api_version.split('/').next().unwrap_or("");
    if group != API_GROUP {
        return Err(invalid(format!(
            "apiVersion {:?} is not {API_GROUP}/v1",
            doc.api_version
        )));
    }
    if name.is_empty() {
        return Err(invalid("metadata.name is missing".into()));
    }
    let spec = doc.spec.ok_or_else(|| invalid("spec is missing".into()))?;
    let provider = match spec.get("provider") {
        Some(serde_yaml::Value::String(p)) if !p.is_empty() => p.clone(),
        _ => {
            return Err(invalid(
                "spec.provider is not set (the driver refuses such a class)".into(),
            ));
        }
    };
    let mut parameters = BTreeMap::new();
    match spec.get("parameters") {
        Some(serde_yaml::Value::Mapping(map)) => {
            for (k, v) in map {
                let key = k
                    .as_str()
                    .ok_or_else(|| invalid("a spec.parameters key is not a string".into()))?;
                let value = match v {
                    serde_yaml::Value::String(s) => s.clone(),
                    _ => {
                        return Err(invalid(format!(
                            "spec.parameters.{key} must be a string (Kubernetes stores parameters as strings: quote it)"
                        )));
                    }
                };
                parameters.insert(key.to_owned(), value);
            }
        }
        None | Some(serde_yaml::Value::Null) => {}
        Some(_) => return Err(invalid("spec.parameters must be a map of strings".into())),
    }
    if parameters.is_empty() {
        return Err(invalid(
            "spec.parameters is empty (the driver refuses such a class)".into(),
        ));
    }
    Ok(SecretProviderClass {
        name,
        namespace: doc.metadata.namespace,
        provider,
        parameters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_classes_and_skips_other_kinds() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n---\napiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata: {name: db, namespace: app}\nspec:\n  provider: vault\n  parameters:\n    roleName: web\n    objects: |\n      - objectName: a\n";
        let classes = parse(text, "f.yaml").unwrap();
        assert_eq!(classes.len(), 1);
        let spc = classes[0].as_ref().unwrap();
        assert_eq!(spc.name, "db");
        assert_eq!(spc.namespace.as_deref(), Some("app"));
        assert_eq!(spc.provider, "vault");
        assert_eq!(spc.parameters["roleName"], "web");
    }

    #[test]
    fn reports_what_the_api_server_or_driver_would_refuse() {
        let cases = [
            (
                "spec: {provider: vault, parameters: {a: 1}}",
                "must be a string",
            ),
            ("spec: {parameters: {a: b}}", "spec.provider"),
            ("spec: {provider: vault}", "parameters is empty"),
        ];
        for (spec, needle) in cases {
            let text = format!(
                "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata: {{name: x}}\n{spec}\n"
            );
            let err = parse(&text, "f").unwrap()[0]
                .as_ref()
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err}");
        }
        assert!(matches!(parse("a: b\n", "f"), Err(Error::None { .. })));
        assert!(matches!(parse("a: [\n", "f"), Err(Error::Yaml { .. })));
    }
}
