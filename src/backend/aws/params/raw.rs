//! `objects` as written: YAML whose keys match case-insensitively (the aws
//! provider's YAML → JSON → struct decoding does), every field read as the
//! string Go would have decoded; unknown keys become warnings.

use serde_yaml::Value;

use super::spc_error;
use crate::backend::aws::Error;

/// One object entry as written, every field a string ("" when absent).
#[derive(Debug, Default)]
pub(super) struct RawObject {
    pub(super) object_name: String,
    pub(super) object_alias: String,
    pub(super) object_version: String,
    pub(super) object_version_label: String,
    pub(super) object_type: String,
    pub(super) file_permission: String,
    pub(super) jmes: Vec<RawJmes>,
    pub(super) failover: Option<RawFailover>,
    pub(super) template_only: bool,
    pub(super) all_keys: bool,
    pub(super) optional: bool,
}

#[derive(Debug, Default)]
pub(super) struct RawJmes {
    pub(super) path: String,
    pub(super) object_alias: String,
    pub(super) file_permission: String,
}

#[derive(Debug, Default)]
pub(super) struct RawFailover {
    pub(super) object_name: String,
    pub(super) object_version: String,
    pub(super) object_version_label: String,
}

pub(super) fn load_error(reason: String) -> Error {
    spc_error(format!("Failed to load SecretProviderClass: {reason}"))
}

/// A scalar as the string Go would have decoded (numbers and booleans
/// accepted too, as text); `null` is "".
fn scalar(v: &Value, at: &str) -> Result<String, Error> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Tagged(t) => scalar(&t.value, at),
        Value::Sequence(_) | Value::Mapping(_) => Err(load_error(format!("{at} must be a string"))),
    }
}

/// A coffer extension's switch: `true`/`false`, also as a string.
fn boolean(v: &Value, at: &str) -> Result<bool, Error> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(load_error(format!("{at} must be true or false"))),
    }
}

/// The entries of a mapping with their keys lower-cased (Go's
/// case-insensitive field matching); non-string keys are reported as unknown.
fn entries<'v>(
    v: &'v Value,
    at: &str,
    warnings: &mut Vec<String>,
) -> Result<Vec<(String, &'v Value)>, Error> {
    let map = match v {
        Value::Mapping(m) => m,
        Value::Tagged(t) => return entries(&t.value, at, warnings),
        _ => return Err(load_error(format!("{at} must be a mapping"))),
    };
    let mut out = Vec::with_capacity(map.len());
    for (k, v) in map {
        match k {
            Value::String(s) => out.push((s.to_ascii_lowercase(), v)),
            other => warnings.push(format!(
                "{at}: key {} is not a string and is ignored",
                crate::errors::prefix(
                    serde_yaml::to_string(other).unwrap_or_default().trim_end(),
                    40
                )
            )),
        }
    }
    Ok(out)
}

pub(super) fn raw_object(
    v: &Value,
    at: &str,
    warnings: &mut Vec<String>,
) -> Result<RawObject, Error> {
    let mut o = RawObject::default();
    for (key, value) in entries(v, at, warnings)? {
        let field = |f: &str| format!("{at}.{f}");
        match key.as_str() {
            "objectname" => o.object_name = scalar(value, &field("objectName"))?,
            "objectalias" => o.object_alias = scalar(value, &field("objectAlias"))?,
            "objectversion" => o.object_version = scalar(value, &field("objectVersion"))?,
            "objectversionlabel" => {
                o.object_version_label = scalar(value, &field("objectVersionLabel"))?
            }
            "objecttype" => o.object_type = scalar(value, &field("objectType"))?,
            "filepermission" => o.file_permission = scalar(value, &field("filePermission"))?,
            "templateonly" => o.template_only = boolean(value, &field("templateOnly"))?,
            "allkeys" => o.all_keys = boolean(value, &field("allKeys"))?,
            "optional" => o.optional = boolean(value, &field("optional"))?,
            "jmespath" => {
                o.jmes.clear();
                match value {
                    Value::Null => {}
                    Value::Sequence(items) => {
                        for (j, item) in items.iter().enumerate() {
                            let at = format!("{at}.jmesPath[{j}]");
                            let mut e = RawJmes::default();
                            if !item.is_null() {
                                for (k, v) in entries(item, &at, warnings)? {
                                    match k.as_str() {
                                        "path" => e.path = scalar(v, &format!("{at}.path"))?,
                                        "objectalias" => {
                                            e.object_alias =
                                                scalar(v, &format!("{at}.objectAlias"))?
                                        }
                                        "filepermission" => {
                                            e.file_permission =
                                                scalar(v, &format!("{at}.filePermission"))?
                                        }
                                        _ => warnings.push(format!(
                                            "{at}: unknown key {k:?} is ignored (known: path, objectAlias, filePermission)"
                                        )),
                                    }
                                }
                            }
                            o.jmes.push(e);
                        }
                    }
                    _ => return Err(load_error(format!("{at}.jmesPath must be a list"))),
                }
            }
            "failoverobject" => {
                if value.is_null() {
                    o.failover = None;
                    continue;
                }
                let at = format!("{at}.failoverObject");
                let mut f = RawFailover::default();
                for (k, v) in entries(value, &at, warnings)? {
                    match k.as_str() {
                        "objectname" => f.object_name = scalar(v, &format!("{at}.objectName"))?,
                        "objectversion" => {
                            f.object_version = scalar(v, &format!("{at}.objectVersion"))?
                        }
                        "objectversionlabel" => {
                            f.object_version_label =
                                scalar(v, &format!("{at}.objectVersionLabel"))?
                        }
                        _ => warnings.push(format!(
                            "{at}: unknown key {k:?} is ignored (known: objectName, objectVersion, objectVersionLabel)"
                        )),
                    }
                }
                o.failover = Some(f);
            }
            _ => warnings.push(format!(
                "{at}: unknown key {key:?} is ignored (known: objectName, objectType, objectAlias, objectVersion, objectVersionLabel, filePermission, jmesPath, failoverObject, templateOnly, allKeys, optional)"
            )),
        }
    }
    Ok(o)
}
