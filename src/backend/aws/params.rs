//! The aws provider's SecretProviderClass dialect (v3.1.1), read the way it
//! reads it: `objects` is YAML whose keys match case-insensitively (its
//! YAML → JSON → struct decoding does), unknown keys are ignored (coffer
//! warns), and every validation message is the aws provider's own. Beyond
//! it, coffer refuses what would silently go wrong there: a file name
//! produced twice, jmesPath aliases that escape the volume, modes above 0777.

use serde_yaml::Value;

use super::Error;
use crate::mount::request::Parameters;

/// Defaults from `coffer serve` flags and the environment.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    /// `--aws-region` / `AWS_REGION`.
    pub region: Option<String>,
}

/// Secrets Manager or SSM Parameter Store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    SecretsManager,
    SsmParameter,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::SecretsManager => "secretsmanager",
            Kind::SsmParameter => "ssmparameter",
        }
    }

    /// `objectType` values: the aws provider's spelling, case-sensitive.
    fn from_object_type(s: &str) -> Option<Kind> {
        match s {
            "secretsmanager" => Some(Kind::SecretsManager),
            "ssmparameter" => Some(Kind::SsmParameter),
            _ => None,
        }
    }

    /// The service part of an ARN.
    fn from_arn_service(s: &str) -> Option<Kind> {
        match s {
            "secretsmanager" => Some(Kind::SecretsManager),
            "ssm" => Some(Kind::SsmParameter),
            _ => None,
        }
    }
}

/// Which address the EKS Pod Identity agent is reached on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressType {
    Auto,
    Ipv4,
    Ipv6,
}

/// `failoverObject`: what to ask the failover region for instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failover {
    pub name: String,
    pub version: Option<String>,
    pub label: Option<String>,
}

/// One `jmesPath` entry: an extra file cut out of the object's JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jmes {
    pub path: String,
    pub alias: String,
    /// The file name (alias after path translation).
    pub file: String,
    pub mode: Option<u32>,
}

/// One entry of `objects`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// `objectName` as written: a name or a full ARN.
    pub name: String,
    pub kind: Kind,
    pub alias: Option<String>,
    pub version: Option<String>,
    pub label: Option<String>,
    pub mode: Option<u32>,
    /// The file name (alias or name after path translation).
    pub file: String,
    pub jmes: Vec<Jmes>,
    pub failover: Option<Failover>,
    /// `templateOnly: true`: fetched for templates, not a file of its own (coffer extension).
    pub template_only: bool,
}

impl Object {
    /// The name, version and label to ask `failover` (or the primary) region for.
    pub fn request(&self, failover: bool) -> (&str, Option<&str>, Option<&str>) {
        match (&self.failover, failover) {
            (Some(f), true) => (
                &f.name,
                f.version.as_deref().or(self.version.as_deref()),
                f.label.as_deref().or(self.label.as_deref()),
            ),
            _ => (&self.name, self.version.as_deref(), self.label.as_deref()),
        }
    }

    /// The secret-free definition that goes into the object version.
    pub fn config(&self, spc: &Spc) -> String {
        let failover = self
            .failover
            .as_ref()
            .map(|f| {
                format!(
                    "{}:{}:{}",
                    f.name,
                    f.version.as_deref().unwrap_or(""),
                    f.label.as_deref().unwrap_or("")
                )
            })
            .unwrap_or_default();
        format!(
            "aws|{}|{}|{}|{}|{}|{}|{}|{:?}",
            self.kind.as_str(),
            self.name,
            self.version.as_deref().unwrap_or(""),
            self.label.as_deref().unwrap_or(""),
            spc.region.as_deref().unwrap_or(""),
            spc.failover_region.as_deref().unwrap_or(""),
            failover,
            self.mode,
        )
    }

    /// The definition of one of its jmesPath files.
    pub fn jmes_config(&self, spc: &Spc, jmes: &Jmes) -> String {
        format!("{}|jmes|{}|{:?}", self.config(spc), jmes.path, jmes.mode)
    }
}

/// A parsed SecretProviderClass.
#[derive(Debug, Clone)]
pub struct Spc {
    /// `region`, else the `--aws-region` default; `None`: the node's label decides.
    pub region: Option<String>,
    pub failover_region: Option<String>,
    pub pod_identity: bool,
    pub address: AddressType,
    /// coffer extension: the IAM role to assume instead of the ServiceAccount annotation's.
    pub role_arn: Option<String>,
    pub objects: Vec<Object>,
    pub warnings: Vec<String>,
}

impl Spc {
    /// The checks that need the primary region, once it is known (at plan
    /// time when the SPC or coffer's flags name it, else after the node lookup).
    pub fn check_regions(&self, region: &str) -> Result<(), Error> {
        if self.failover_region.as_deref() == Some(region) {
            return Err(spc_error(format!(
                "{region}: failover region cannot be the same as the primary region"
            )));
        }
        for o in &self.objects {
            check_arn_region(&o.name, region)?;
            if let (Some(f), Some(fr)) = (&o.failover, &self.failover_region) {
                check_arn_region(&f.name, fr)?;
            }
        }
        Ok(())
    }
}

fn spc_error(message: String) -> Error {
    Error::Spc { message }
}

/// A region goes into endpoint host names (`secretsmanager.<region>.amazonaws.com`):
/// anything but a DNS label would let a class move the host (`evil.example/`).
fn is_region_name(r: &str) -> bool {
    (1..=64).contains(&r.len())
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !r.starts_with('-')
        && !r.ends_with('-')
}

/// Reads every parameter of the dialect.
pub fn parse(params: &Parameters, defaults: &Defaults) -> Result<Spc, Error> {
    let mut warnings = Vec::new();
    let region = params
        .non_empty("region")
        .map(str::to_owned)
        .or_else(|| defaults.region.clone().filter(|r| !r.is_empty()));
    let failover_region = params.non_empty("failoverRegion").map(str::to_owned);
    for (name, value) in [("region", &region), ("failoverRegion", &failover_region)] {
        if let Some(r) = value
            && !is_region_name(r)
        {
            return Err(spc_error(format!(
                "{name} {:?} is not a region name (lower-case letters, digits and '-', at most 64): \
                 it becomes part of the AWS endpoint's host name",
                r.chars().take(64).collect::<String>()
            )));
        }
    }

    let translation = translation(params.get("pathTranslation").unwrap_or(""))?;

    let pod_identity = match params.get("usePodIdentity").unwrap_or("") {
        "" => false,
        v => parse_bool(v).ok_or_else(|| {
            spc_error(format!(
                "failed to parse usePodIdentity value, error: {v:?} is not a boolean (true, false, 1, 0, t, f)"
            ))
        })?,
    };
    let address = match params
        .get("preferredAddressType")
        .unwrap_or("")
        .to_ascii_lowercase()
        .as_str()
    {
        "ipv4" => AddressType::Ipv4,
        "ipv6" => AddressType::Ipv6,
        "" | "auto" => AddressType::Auto,
        other => {
            warnings.push(format!(
                "preferredAddressType {other:?} is not ipv4, ipv6 or auto; auto is used (as the aws provider does)"
            ));
            AddressType::Auto
        }
    };
    if !pod_identity && params.non_empty("preferredAddressType").is_some() {
        warnings.push(
            "preferredAddressType only applies with usePodIdentity: \"true\"; it is ignored".into(),
        );
    }
    let role_arn = match params.non_empty("roleArn") {
        None => None,
        Some(arn) => {
            let parsed = Arn::parse(arn).ok_or_else(|| {
                spc_error(format!(
                    "roleArn {arn:?} is not an ARN (arn:aws:iam::<account>:role/<name>)"
                ))
            })?;
            if parsed.service != "iam" || !parsed.resource.starts_with("role/") {
                return Err(spc_error(format!(
                    "roleArn {arn:?} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)"
                )));
            }
            if pod_identity {
                warnings.push(
                    "roleArn is ignored with usePodIdentity: \"true\" (the Pod Identity association decides the role)"
                        .into(),
                );
            }
            Some(arn.to_owned())
        }
    };

    let objects = parse_objects(
        params.get("objects").unwrap_or(""),
        translation,
        region.as_deref(),
        failover_region.as_deref(),
        &mut warnings,
    )?;
    let spc = Spc {
        region,
        failover_region,
        pod_identity,
        address,
        role_arn,
        objects,
        warnings,
    };
    if let Some(region) = spc.region.as_deref() {
        spc.check_regions(region)?;
    }
    Ok(spc)
}

/// `pathTranslation`: default `_`, `False` (any case) off, else one character.
pub fn translation(raw: &str) -> Result<Option<char>, Error> {
    if raw.is_empty() {
        return Ok(Some('_'));
    }
    if raw.eq_ignore_ascii_case("false") {
        return Ok(None);
    }
    // The aws provider counts bytes: one ASCII character.
    match raw.as_bytes() {
        [b] if b.is_ascii() => Ok(Some(char::from(*b))),
        _ => Err(spc_error(
            "pathTranslation must be either 'False' or a single character string".into(),
        )),
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
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

/// An ARN, split as aws-sdk-go's `arn.Parse` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arn<'a> {
    pub partition: &'a str,
    pub service: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    pub resource: &'a str,
}

impl<'a> Arn<'a> {
    pub fn parse(s: &'a str) -> Option<Arn<'a>> {
        let mut parts = s.splitn(6, ':');
        if parts.next()? != "arn" {
            return None;
        }
        let partition = parts.next()?;
        let service = parts.next()?;
        let region = parts.next()?;
        let account = parts.next()?;
        let resource = parts.next()?;
        Some(Arn {
            partition,
            service,
            region,
            account,
            resource,
        })
    }
}

fn check_arn_region(name: &str, region: &str) -> Result<(), Error> {
    if name.starts_with("arn:")
        && let Some(arn) = Arn::parse(name)
        && arn.region != region
    {
        return Err(spc_error(format!(
            "ARN region must match region {region}: {name}"
        )));
    }
    Ok(())
}

/// `validateObjectName`: the kind an object name and objectType give.
/// `region`: the region of that slot when known (else checked later).
fn object_kind(name: &str, object_type: &str, region: Option<&str>) -> Result<Kind, Error> {
    let arn = if name.starts_with("arn:") {
        Some(
            Arn::parse(name)
                .ok_or_else(|| spc_error(format!("Invalid ARN format in object name: {name}")))?,
        )
    } else {
        None
    };
    if let Some(region) = region {
        check_arn_region(name, region)?;
    }
    let Some(arn) = arn else {
        if object_type.is_empty() {
            return Err(spc_error(format!(
                "Must use objectType when a full ARN is not specified: {name}"
            )));
        }
        return Kind::from_object_type(object_type)
            .ok_or_else(|| spc_error(format!("Invalid objectType: {object_type}")));
    };
    let from_arn = Kind::from_arn_service(arn.service);
    if object_type.is_empty() {
        return from_arn
            .ok_or_else(|| spc_error(format!("Invalid service in ARN: {}", arn.service)));
    }
    let kind = Kind::from_object_type(object_type)
        .ok_or_else(|| spc_error(format!("Invalid objectType: {object_type}")))?;
    if from_arn != Some(kind) {
        return Err(spc_error(format!("objectType does not match ARN: {name}")));
    }
    Ok(kind)
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

/// One object entry as written, every field a string ("" when absent).
#[derive(Debug, Default)]
struct RawObject {
    object_name: String,
    object_alias: String,
    object_version: String,
    object_version_label: String,
    object_type: String,
    file_permission: String,
    jmes: Vec<RawJmes>,
    failover: Option<RawFailover>,
    template_only: bool,
}

#[derive(Debug, Default)]
struct RawJmes {
    path: String,
    object_alias: String,
    file_permission: String,
}

#[derive(Debug, Default)]
struct RawFailover {
    object_name: String,
    object_version: String,
    object_version_label: String,
}

fn load_error(reason: String) -> Error {
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
                serde_yaml::to_string(other)
                    .unwrap_or_default()
                    .trim_end()
                    .chars()
                    .take(40)
                    .collect::<String>()
            )),
        }
    }
    Ok(out)
}

fn raw_object(v: &Value, at: &str, warnings: &mut Vec<String>) -> Result<RawObject, Error> {
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
            "templateonly" => {
                o.template_only = match value {
                    Value::Bool(b) => *b,
                    Value::String(s) if s.eq_ignore_ascii_case("true") => true,
                    Value::String(s) if s.eq_ignore_ascii_case("false") => false,
                    _ => return Err(load_error(format!("{} must be true or false", field("templateOnly")))),
                }
            }
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
                "{at}: unknown key {key:?} is ignored (known: objectName, objectType, objectAlias, objectVersion, objectVersionLabel, filePermission, jmesPath, failoverObject, templateOnly)"
            )),
        }
    }
    Ok(o)
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Parameters {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn objects(yaml: &str) -> Result<Vec<Object>, String> {
        objects_in(yaml, Some('_'), Some("us-west-2"), None)
    }

    fn objects_in(
        yaml: &str,
        translation: Option<char>,
        region: Option<&str>,
        failover: Option<&str>,
    ) -> Result<Vec<Object>, String> {
        let mut w = Vec::new();
        parse_objects(yaml, translation, region, failover, &mut w).map_err(|e| e.to_string())
    }

    fn err(yaml: &str) -> String {
        objects(yaml).expect_err(yaml)
    }

    const SM: &str = "arn:aws:secretsmanager:us-west-2:123456789012:secret:db-AbCdEf";
    const SSM: &str = "arn:aws:ssm:us-west-2:123456789012:parameter/app/key";

    #[test]
    fn type_comes_from_the_arn() {
        let o = objects(&format!("- objectName: {SM}\n- objectName: {SSM}\n")).unwrap();
        assert_eq!(o[0].kind, Kind::SecretsManager);
        assert_eq!(o[1].kind, Kind::SsmParameter);
        // Without an alias the file is named after the whole ARN (translated).
        assert_eq!(
            o[1].file,
            "arn:aws:ssm:us-west-2:123456789012:parameter_app_key"
        );
        let o = objects(&format!(
            "- objectName: {SSM}\n  objectType: ssmparameter\n  objectAlias: key\n"
        ))
        .unwrap();
        assert_eq!(o[0].file, "key");
    }

    #[test]
    fn every_validation_message_of_the_aws_provider() {
        let cases: &[(&str, &str)] = &[
            (
                "- objectType: secretsmanager\n",
                "Object name must be specified",
            ),
            (
                "- objectName: \"arn::\"\n",
                "Invalid ARN format in object name: arn::",
            ),
            (
                "- objectName: arn:aws:sts:us-west-2:123456789012:assumed-role/x\n",
                "Invalid service in ARN: sts",
            ),
            (
                "- objectName: db\n",
                "Must use objectType when a full ARN is not specified: db",
            ),
            (
                "- objectName: db\n  objectType: vault\n",
                "Invalid objectType: vault",
            ),
            (
                "- objectName: db\n  objectType: ssm\n",
                "Invalid objectType: ssm",
            ),
            (
                "- objectName: arn:aws:ssm:us-west-2:1:parameter/x\n  objectType: secretsmanager\n",
                "objectType does not match ARN: arn:aws:ssm:us-west-2:1:parameter/x",
            ),
            (
                "- objectName: arn:aws:ssm:us-east-1:1:parameter/x\n",
                "ARN region must match region us-west-2: arn:aws:ssm:us-east-1:1:parameter/x",
            ),
            (
                "- objectName: p\n  objectType: ssmparameter\n  objectVersion: \"1\"\n  objectVersionLabel: l\n",
                "ssm parameters can not specify both objectVersion and objectVersionLabel: p",
            ),
            (
                "- objectName: s\n  objectType: secretsmanager\n  filePermission: \"abc9\"\n",
                "Invalid File Permission: abc9",
            ),
            (
                "- objectName: s\n  objectType: secretsmanager\n  filePermission: \"000\"\n",
                "Invalid File Permission: 000",
            ),
            (
                "- objectName: s\n  objectType: secretsmanager\n  filePermission: \"00000\"\n",
                "Invalid File Permission: 00000",
            ),
            (
                "- objectName: s\n  objectType: secretsmanager\n  filePermission: \"0900\"\n",
                "Invalid File Permission: 0900",
            ),
            (
                "- objectName: s\n  objectType: secretsmanager\n  jmesPath:\n    - objectAlias: a\n",
                "Path must be specified for JMES object",
            ),
            (
                "- objectName: s\n  objectType: secretsmanager\n  jmesPath:\n    - path: a\n",
                "Object alias must be specified for JMES object",
            ),
            (
                "- objectName: s\n  objectType: secretsmanager\n  jmesPath:\n    - {path: a, objectAlias: b, filePermission: a987}\n",
                "Invalid File Permission: a987",
            ),
            ("- \n", "Empty descriptor entry in SecretProviderClass"),
            ("objectName: [a", "Failed to load SecretProviderClass: "),
            ("objectName: a\n", "Failed to load SecretProviderClass: "),
            (
                "- objectName: s\n  objectType: secretsmanager\n- objectName: s\n  objectType: secretsmanager\n",
                "found descriptor with duplicate object name s, no object alias, and no version label",
            ),
            (
                "- {objectName: s, objectType: secretsmanager, objectAlias: a}\n- {objectName: s, objectType: secretsmanager, objectAlias: a}\n",
                "found descriptor with duplicate object name s, duplicate object alias a, and no version label",
            ),
            (
                "- {objectName: s, objectType: secretsmanager, objectVersionLabel: l}\n- {objectName: s, objectType: secretsmanager, objectVersionLabel: l}\n",
                "found descriptor with duplicate object name s, no object alias, and duplicate version label l",
            ),
            (
                "- {objectName: s, objectType: secretsmanager, objectAlias: a, objectVersionLabel: l}\n- {objectName: s, objectType: secretsmanager, objectAlias: a, objectVersionLabel: l}\n",
                "found descriptor with duplicate object name s, duplicate object alias a, and duplicate version label l",
            ),
            (
                "- {objectName: s, objectType: secretsmanager, objectAlias: a, objectVersionLabel: l1}\n- {objectName: t, objectType: secretsmanager, objectAlias: a, objectVersionLabel: l2}\n",
                "found duplicate object alias a",
            ),
            (
                "- {objectName: s, objectType: secretsmanager, objectAlias: a}\n- objectName: t\n  objectType: secretsmanager\n  jmesPath:\n    - {path: x, objectAlias: a}\n",
                "Name already in use for objectAlias: found duplicate object alias a in JMES path entry x",
            ),
        ];
        for (yaml, message) in cases {
            let e = err(yaml);
            assert!(
                e.contains(message),
                "{yaml:?}: {e:?} should contain {message:?}"
            );
        }
    }

    #[test]
    fn failover_rules() {
        let fo = |yaml: &str, failover: Option<&str>| {
            objects_in(yaml, Some('_'), Some("us-west-2"), failover)
        };
        let base = "- objectName: arn:aws:secretsmanager:us-west-2:1:secret:db-AbCdEf\n";
        let cases: &[(&str, Option<&str>, &str)] = &[
            (
                "  failoverObject: {objectName: arn:aws:secretsmanager:us-east-2:1:secret:db-XyZaBc}\n",
                Some("us-east-2"),
                "object alias must be specified for objects with failover entries",
            ),
            (
                "  objectAlias: db\n  failoverObject: {objectName: arn:aws:secretsmanager:us-east-2:1:secret:db-XyZaBc}\n",
                None,
                "failover object allowed only when failover region is defined",
            ),
            (
                "  objectAlias: db\n  failoverObject: {objectName: arn:aws:secretsmanager:us-east-1:1:secret:db-XyZaBc}\n",
                Some("us-east-2"),
                "ARN region must match region us-east-2: arn:aws:secretsmanager:us-east-1:1:secret:db-XyZaBc",
            ),
            (
                "  objectAlias: db\n  failoverObject: {objectName: arn:aws:ssm:us-east-2:1:parameter/db}\n",
                Some("us-east-2"),
                "objectType does not match ARN",
            ),
            (
                "  objectAlias: db\n  failoverObject: {objectName: plain}\n",
                Some("us-east-2"),
                "Must use objectType when a full ARN is not specified: plain",
            ),
            (
                "  objectAlias: db\n  objectVersion: v1\n  failoverObject: {objectName: arn:aws:secretsmanager:us-east-2:1:secret:db-XyZaBc}\n",
                Some("us-east-2"),
                "object versions must match between primary and failover regions",
            ),
        ];
        for (extra, failover, message) in cases {
            let e = fo(&format!("{base}{extra}"), *failover).expect_err(extra);
            assert!(e.contains(message), "{extra:?}: {e:?}");
        }
        let ok = fo(
            &format!("{base}  objectAlias: db\n  objectVersion: v1\n  failoverObject: {{objectName: arn:aws:secretsmanager:us-east-2:1:secret:db-XyZaBc, objectVersion: v1}}\n"),
            Some("us-east-2"),
        )
        .unwrap();
        let o = &ok[0];
        assert_eq!(o.request(false).0, o.name);
        assert_eq!(
            o.request(true),
            (
                "arn:aws:secretsmanager:us-east-2:1:secret:db-XyZaBc",
                Some("v1"),
                None
            )
        );
        // A failover region equal to the primary.
        let e = parse(
            &params(&[
                ("region", "us-west-2"),
                ("failoverRegion", "us-west-2"),
                ("objects", "- {objectName: a, objectType: ssmparameter}\n"),
            ]),
            &Defaults::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("us-west-2: failover region cannot be the same as the primary region"),
            "{e}"
        );
    }

    #[test]
    fn keys_match_case_insensitively_and_unknown_keys_warn() {
        let mut w = Vec::new();
        let o = parse_objects(
            "- ObjectName: s\n  OBJECTTYPE: secretsmanager\n  objectalias: a\n  JMESPath:\n    - Path: user\n      ObjectAlias: u\n  objectTemplate: x\n",
            Some('_'),
            Some("r"),
            None,
            &mut w,
        )
        .unwrap();
        assert_eq!(o[0].name, "s");
        assert_eq!(o[0].alias.as_deref(), Some("a"));
        assert_eq!(o[0].jmes[0].path, "user");
        assert_eq!(o[0].jmes[0].file, "u");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("\"objecttemplate\""), "{w:?}");
    }

    #[test]
    fn file_naming_with_translation() {
        let cases: &[(&str, Option<char>, &str)] = &[
            ("mypath/TestSecret1", Some('_'), "mypath_TestSecret1"),
            ("mypath/TestSecret1", Some('-'), "mypath-TestSecret1"),
            ("/TestSecret1", None, "TestSecret1"),
            ("/mypath/TestSecret1", None, "mypath/TestSecret1"),
            ("/mypath/TestSecret1", Some('_'), "_mypath_TestSecret1"),
            ("plain", Some('_'), "plain"),
        ];
        for (name, t, want) in cases {
            assert_eq!(file_name(name, *t), *want, "{name} {t:?}");
        }
        assert_eq!(translation("").unwrap(), Some('_'));
        assert_eq!(translation("False").unwrap(), None);
        assert_eq!(translation("FALSE").unwrap(), None);
        assert_eq!(translation("-").unwrap(), Some('-'));
        for bad in ["--", "é", "ab"] {
            assert_eq!(
                translation(bad).unwrap_err().to_string(),
                "pathTranslation must be either 'False' or a single character string"
            );
        }
        // An alias is translated too, and so are jmesPath aliases.
        let o = objects_in(
            "- objectName: a/b\n  objectType: ssmparameter\n  objectAlias: c/d\n  jmesPath: [{path: x, objectAlias: e/f}]\n",
            Some('-'),
            Some("r"),
            None,
        )
        .unwrap();
        assert_eq!(
            (o[0].file.as_str(), o[0].jmes[0].file.as_str()),
            ("c-d", "e-f")
        );
    }

    #[test]
    fn traversal_is_refused_and_look_alikes_are_not() {
        for bad in [
            "../x",
            "a/../b",
            "a/..",
            "../../x",
            "/../x",
            "x/../../y",
            "..",
        ] {
            let e = objects_in(
                &format!("- {{objectName: \"{bad}\", objectType: ssmparameter}}\n"),
                None,
                Some("r"),
                None,
            )
            .expect_err(bad);
            assert!(e.contains("path can not contain ../"), "{bad}: {e}");
        }
        for ok in [
            "..mypath", "mypath..", "my..path", "a/..b", "a../b", ".../x",
        ] {
            assert!(!escapes(&file_name(ok, None)), "{ok}");
        }
        // jmesPath aliases are checked like top-level names (the aws provider does not).
        let e = objects_in(
            "- objectName: s\n  objectType: secretsmanager\n  jmesPath: [{path: x, objectAlias: ../../etc/x}]\n",
            None,
            Some("r"),
            None,
        )
        .unwrap_err();
        assert!(e.contains("path can not contain ../: ../../etc/x"), "{e}");
    }

    #[test]
    fn a_file_written_twice_is_refused() {
        for yaml in [
            // objectName of one, alias of another
            "- {objectName: a, objectType: ssmparameter}\n- {objectName: b, objectType: ssmparameter, objectAlias: a}\n",
            // translation makes two names one
            "- {objectName: a/b, objectType: ssmparameter}\n- {objectName: a_b, objectType: ssmparameter}\n",
            // same name, different labels, no alias
            "- {objectName: a, objectType: ssmparameter, objectVersionLabel: l1}\n- {objectName: a, objectType: ssmparameter, objectVersionLabel: l2}\n",
            // a jmesPath alias equal to a derived name
            "- {objectName: a, objectType: secretsmanager}\n- objectName: b\n  objectType: secretsmanager\n  jmesPath: [{path: x, objectAlias: a}]\n",
        ] {
            let e = err(yaml);
            assert!(e.contains("is produced twice"), "{yaml}: {e}");
        }
        // Same name with different aliases is fine (two versions of one secret).
        assert!(objects("- {objectName: a, objectType: secretsmanager, objectAlias: cur}\n- {objectName: a, objectType: secretsmanager, objectAlias: prev, objectVersionLabel: AWSPREVIOUS}\n").is_ok());
    }

    #[test]
    fn modes() {
        let o = objects(
            "- objectName: s\n  objectType: secretsmanager\n  filePermission: \"0600\"\n  jmesPath:\n    - {path: a, objectAlias: a}\n    - {path: b, objectAlias: b, filePermission: \"0640\"}\n- objectName: t\n  objectType: secretsmanager\n",
        )
        .unwrap();
        assert_eq!(o[0].mode, Some(0o600));
        assert_eq!(o[0].jmes[0].mode, Some(0o600), "inherits the parent's");
        assert_eq!(o[0].jmes[1].mode, Some(0o640));
        assert_eq!(o[1].mode, None, "the request's default (0644)");
        // serde_yaml reads an unquoted 0600 as the string "0600" too.
        let o = objects("- {objectName: s, objectType: secretsmanager, filePermission: 0400}\n")
            .unwrap();
        assert_eq!(o[0].mode, Some(0o400));
        let e = err("- {objectName: s, objectType: secretsmanager, filePermission: \"4755\"}\n");
        assert!(e.contains("at most 0777"), "{e}");
        let e = err("- {objectName: s, objectType: secretsmanager, filePermission: 420}\n");
        assert!(e.contains("Invalid File Permission: 420"), "{e}");
    }

    #[test]
    fn parameters() {
        let objects = ("objects", "- {objectName: a, objectType: ssmparameter}\n");
        let spc = parse(&params(&[objects]), &Defaults::default()).unwrap();
        assert_eq!(spc.region, None);
        assert!(!spc.pod_identity);
        assert_eq!(spc.address, AddressType::Auto);
        let d = Defaults {
            region: Some("eu-west-1".into()),
        };
        let spc = parse(&params(&[objects]), &d).unwrap();
        assert_eq!(spc.region.as_deref(), Some("eu-west-1"));
        let spc = parse(
            &params(&[
                objects,
                ("region", "us-east-1"),
                ("failoverRegion", "us-east-2"),
                ("usePodIdentity", "True"),
                ("preferredAddressType", "IPv6"),
            ]),
            &d,
        )
        .unwrap();
        assert_eq!(spc.region.as_deref(), Some("us-east-1"));
        assert_eq!(spc.failover_region.as_deref(), Some("us-east-2"));
        assert!(spc.pod_identity);
        assert_eq!(spc.address, AddressType::Ipv6);
        for v in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_bool(v), Some(true));
        }
        for v in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_bool(v), Some(false));
        }
        let e = parse(&params(&[objects, ("usePodIdentity", "yes")]), &d)
            .unwrap_err()
            .to_string();
        assert!(e.contains("failed to parse usePodIdentity value"), "{e}");
        let spc = parse(
            &params(&[
                objects,
                ("usePodIdentity", "true"),
                ("preferredAddressType", "v6"),
            ]),
            &d,
        )
        .unwrap();
        assert_eq!(spc.address, AddressType::Auto);
        assert_eq!(spc.warnings.len(), 1);

        let spc = parse(
            &params(&[objects, ("roleArn", "arn:aws:iam::123456789012:role/web")]),
            &d,
        )
        .unwrap();
        assert_eq!(
            spc.role_arn.as_deref(),
            Some("arn:aws:iam::123456789012:role/web")
        );
        for bad in ["web", "arn:aws:iam::1:user/x", "arn:aws:s3:::bucket"] {
            let e = parse(&params(&[objects, ("roleArn", bad)]), &d)
                .unwrap_err()
                .to_string();
            assert!(e.contains("roleArn"), "{bad}: {e}");
        }
        let e = parse(&params(&[]), &d).unwrap_err().to_string();
        assert!(e.contains("objects"), "{e}");
    }

    #[test]
    fn regions_must_be_host_labels() {
        for ok in [
            "us-east-1",
            "eu-central-2",
            "us-gov-west-1",
            "cn-north-1",
            "us-iso-east-1",
        ] {
            assert!(is_region_name(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example/",
            "us-east-1.evil",
            "US-EAST-1",
            "a b",
            "-x",
            "x-",
            "r\n",
            &"a".repeat(65),
        ] {
            assert!(!is_region_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn region_checks_wait_for_the_node_region() {
        // No region anywhere: the ARN's region is checked once the node's label is read.
        let spc = parse(
            &params(&[
                ("failoverRegion", "us-east-2"),
                (
                    "objects",
                    "- objectName: arn:aws:ssm:us-east-1:1:parameter/x\n",
                ),
            ]),
            &Defaults::default(),
        )
        .unwrap();
        assert!(spc.check_regions("us-east-1").is_ok());
        let e = spc.check_regions("us-west-2").unwrap_err().to_string();
        assert_eq!(
            e,
            "ARN region must match region us-west-2: arn:aws:ssm:us-east-1:1:parameter/x"
        );
        let e = spc.check_regions("us-east-2").unwrap_err().to_string();
        assert!(e.contains("failover region cannot be the same"), "{e}");
    }

    #[test]
    fn arns_parse_like_aws_sdk_go() {
        let a = Arn::parse(SM).unwrap();
        assert_eq!(
            (a.partition, a.service, a.region, a.account, a.resource),
            (
                "aws",
                "secretsmanager",
                "us-west-2",
                "123456789012",
                "secret:db-AbCdEf"
            )
        );
        assert!(Arn::parse("arn::").is_none());
        assert!(Arn::parse("arn:aws:ssm").is_none());
        assert!(Arn::parse("nope:aws:ssm:r:a:x").is_none());
        assert!(Arn::parse("arn:aws:ssm:r:a:parameter/a:b").is_some());
    }

    #[test]
    fn scalars_of_any_yaml_type_are_read_as_text() {
        let o =
            objects("- {objectName: 42, objectType: ssmparameter, objectVersion: 3}\n").unwrap();
        assert_eq!(o[0].name, "42");
        assert_eq!(o[0].version.as_deref(), Some("3"));
        let e = err("- {objectName: [a], objectType: ssmparameter}\n");
        assert!(e.contains("objects[0].objectName must be a string"), "{e}");
    }

    #[test]
    fn config_differs_per_definition_and_not_per_file() {
        let spc = parse(
            &params(&[(
                "objects",
                "- {objectName: a, objectType: ssmparameter, objectAlias: x}\n- {objectName: a, objectType: ssmparameter, objectAlias: y, objectVersion: \"2\"}\n",
            )]),
            &Defaults::default(),
        )
        .unwrap();
        assert_ne!(spc.objects[0].config(&spc), spc.objects[1].config(&spc));
    }
}
