//! `objects` validated: the aws provider's `validateSecretDescriptor` and
//! duplicate rules with its messages, then coffer's own checks (a file
//! produced twice, aliases escaping the volume, modes above 0777).

use serde_yaml::Value;

use super::arn::object_kind;
use super::raw::{RawObject, load_error, raw_object};
use super::{Failover, Jmes, Kind, Object, spc_error};
use crate::backend::aws::Error;

/// Parses and validates `objects`.
pub fn parse_objects(
    yaml: &str,
    translation: Option<char>,
    region: Option<&str>,
    failover_region: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<Vec<Object>, Error> {
    if yaml.trim().is_empty() {
        return Err(spc_error(
            "parameter objects is empty: list at least one secret or parameter to mount".into(),
        ));
    }
    crate::yaml::check_cost(yaml).map_err(load_error)?;
    let doc: Value = serde_yaml::from_str(yaml).map_err(|e| load_error(e.to_string()))?;
    let items = match doc {
        Value::Sequence(items) => items,
        Value::Null => Vec::new(),
        _ => return Err(load_error("objects must be a YAML list".into())),
    };
    let mut objects: Vec<Object> = Vec::with_capacity(items.len());
    // Every file name written so far, and what writes it.
    let mut files: Vec<(String, String)> = Vec::new();
    let mut aliases: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if item.is_null() {
            return Err(spc_error(format!(
                "Empty descriptor entry in SecretProviderClass (objects[{i}])"
            )));
        }
        let raw = raw_object(item, &format!("objects[{i}]"), warnings)?;
        let object = validate(raw, i, translation, region, failover_region)?;

        // The aws provider's duplicate rules (secret_descriptor.go).
        for prev in &objects {
            if prev.name != object.name || prev.alias != object.alias || prev.label != object.label
            {
                continue;
            }
            let n = &object.name;
            let message = match (&object.alias, &object.label) {
                (Some(a), None) => format!(
                    "found descriptor with duplicate object name {n}, duplicate object alias {a}, and no version label"
                ),
                (None, Some(l)) => format!(
                    "found descriptor with duplicate object name {n}, no object alias, and duplicate version label {l}"
                ),
                (Some(a), Some(l)) => format!(
                    "found descriptor with duplicate object name {n}, duplicate object alias {a}, and duplicate version label {l}"
                ),
                (None, None) => format!(
                    "found descriptor with duplicate object name {n}, no object alias, and no version label"
                ),
            };
            return Err(spc_error(message));
        }
        if let Some(alias) = &object.alias {
            if aliases.contains(alias) {
                return Err(spc_error(format!("found duplicate object alias {alias}")));
            }
            aliases.push(alias.clone());
        }
        for j in &object.jmes {
            if aliases.contains(&j.alias) {
                return Err(spc_error(format!(
                    "Name already in use for objectAlias: found duplicate object alias {} in JMES path entry {}",
                    j.alias, j.path
                )));
            }
            aliases.push(j.alias.clone());
        }

        // coffer: no file may be written twice, however its name came about.
        let mut claim = |file: &str, by: String| -> Result<(), Error> {
            if let Some((_, first)) = files.iter().find(|(f, _)| f == file) {
                return Err(spc_error(format!(
                    "file name {file:?} is produced twice: by {first} and by {by} (set objectAlias, or change pathTranslation)"
                )));
            }
            files.push((file.to_owned(), by));
            Ok(())
        };
        claim(&object.file, format!("objectName {}", object.name))?;
        for j in &object.jmes {
            claim(
                &j.file,
                format!("jmesPath {} of objectName {}", j.path, object.name),
            )?;
        }
        objects.push(object);
    }
    if objects.is_empty() {
        return Err(spc_error(
            "parameter objects lists no objects: name at least one secret or parameter to mount"
                .into(),
        ));
    }
    Ok(objects)
}

/// `validateSecretDescriptor`, in its order, plus coffer's checks.
fn validate(
    raw: RawObject,
    index: usize,
    translation: Option<char>,
    region: Option<&str>,
    failover_region: Option<&str>,
) -> Result<Object, Error> {
    let template_only = raw.template_only;
    if raw.object_name.is_empty() {
        return Err(spc_error(format!(
            "Object name must be specified (objects[{index}])"
        )));
    }
    let name = raw.object_name;
    let kind = object_kind(&name, &raw.object_type, region)?;
    let version = non_empty(raw.object_version);
    let label = non_empty(raw.object_version_label);
    if kind == Kind::SsmParameter && version.is_some() && label.is_some() {
        return Err(spc_error(format!(
            "ssm parameters can not specify both objectVersion and objectVersionLabel: {name}"
        )));
    }
    let alias = non_empty(raw.object_alias);
    let file = file_name(alias.as_deref().unwrap_or(&name), translation);
    if escapes(&file) {
        return Err(spc_error(format!("path can not contain ../: {name}")));
    }
    let mode = file_mode(&raw.file_permission)?;

    let mut jmes = Vec::with_capacity(raw.jmes.len());
    for j in raw.jmes {
        if j.path.is_empty() {
            return Err(spc_error(format!(
                "Path must be specified for JMES object (objectName {name})"
            )));
        }
        if j.object_alias.is_empty() {
            return Err(spc_error(format!(
                "Object alias must be specified for JMES object (objectName {name}, path {})",
                j.path
            )));
        }
        let jfile = file_name(&j.object_alias, translation);
        if escapes(&jfile) {
            return Err(spc_error(format!(
                "path can not contain ../: {} (jmesPath objectAlias of {name})",
                j.object_alias
            )));
        }
        let jmode = match file_mode(&j.file_permission)? {
            Some(m) => Some(m),
            None => mode,
        };
        jmes.push(Jmes {
            path: j.path,
            alias: j.object_alias,
            file: jfile,
            mode: jmode,
        });
    }

    let failover = match raw.failover {
        Some(f) if !f.object_name.is_empty() => {
            if alias.is_none() {
                return Err(spc_error(format!(
                    "object alias must be specified for objects with failover entries: {name}"
                )));
            }
            if failover_region.is_none() {
                return Err(spc_error(format!(
                    "failover object allowed only when failover region is defined: {name}"
                )));
            }
            let fkind = object_kind(&f.object_name, &raw.object_type, failover_region)?;
            if fkind != kind {
                return Err(spc_error(format!(
                    "objectType does not match ARN: {}",
                    f.object_name
                )));
            }
            let fversion = non_empty(f.object_version);
            let flabel = non_empty(f.object_version_label);
            if kind == Kind::SsmParameter && fversion.is_some() && flabel.is_some() {
                return Err(spc_error(format!(
                    "ssm parameters can not specify both objectVersion and objectVersionLabel: {name}"
                )));
            }
            if fversion != version {
                return Err(spc_error(format!(
                    "object versions must match between primary and failover regions: {name}"
                )));
            }
            Some(Failover {
                name: f.object_name,
                version: fversion,
                label: flabel,
            })
        }
        _ => None,
    };

    Ok(Object {
        name,
        kind,
        alias,
        version,
        label,
        mode,
        file,
        jmes,
        failover,
        template_only,
        all_keys: raw.all_keys,
        optional: raw.optional,
    })
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// The file name: alias or name, `/` translated; with translation off, leading `/` stripped.
pub fn file_name(name_or_alias: &str, translation: Option<char>) -> String {
    match translation {
        Some(c) => name_or_alias.replace('/', &c.to_string()),
        None => name_or_alias.trim_start_matches('/').to_owned(),
    }
}

/// The aws provider's `(/\.\./)|(^\.\./)|(/\.\.$)`, plus a bare `..`.
pub fn escapes(path: &str) -> bool {
    path == ".." || path.starts_with("../") || path.ends_with("/..") || path.contains("/../")
}

/// `filePermission`: `^[0-7]{4}$`, read as octal; coffer also refuses > 0777.
fn file_mode(raw: &str) -> Result<Option<u32>, Error> {
    if raw.is_empty() {
        return Ok(None);
    }
    let invalid = || spc_error(format!("Invalid File Permission: {raw}"));
    if raw.len() != 4 || !raw.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(invalid());
    }
    let mode = u32::from_str_radix(raw, 8).map_err(|_| invalid())?;
    if mode > 0o777 {
        return Err(spc_error(format!(
            "Invalid File Permission: {raw} (coffer allows at most 0777: setuid, setgid and sticky bits mean nothing on a secret file)"
        )));
    }
    Ok(Some(mode))
}
