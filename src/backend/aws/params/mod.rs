//! The aws provider's SecretProviderClass dialect (v3.1.1), read the way it
//! reads it: `objects` is YAML whose keys match case-insensitively (its
//! YAML → JSON → struct decoding does), unknown keys are ignored (coffer
//! warns), and every validation message is the aws provider's own. Beyond
//! it, coffer refuses what would silently go wrong there: a file name
//! produced twice, jmesPath aliases that escape the volume, modes above 0777.

mod arn;
mod raw;
mod validate;

pub use self::arn::Arn;
use self::arn::check_arn_region;
pub use self::validate::{escapes, file_name, parse_objects};
use super::Error;
use crate::request::Parameters;

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
    /// `allKeys: true`: the value is a JSON object; one file per key under
    /// a directory named `file` (coffer extension).
    pub all_keys: bool,
    /// `optional: true`: a secret or parameter that does not exist leaves
    /// the object (and its jmesPath files) out (coffer extension).
    pub optional: bool,
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
        let all_keys = if self.all_keys { "|allKeys" } else { "" };
        format!(
            "aws|{}|{}|{}|{}|{}|{}|{}|{:?}{all_keys}",
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

pub(super) fn spc_error(message: String) -> Error {
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
        v => crate::yaml::parse_bool(v).ok_or_else(|| {
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
    fn all_keys_and_optional_are_known_fields() {
        let mut w = Vec::new();
        let o = parse_objects(
            "- {objectName: db, objectType: secretsmanager, allKeys: true, Optional: \"true\"}\n- {objectName: p, objectType: ssmparameter}\n",
            Some('_'),
            Some("us-west-2"),
            None,
            &mut w,
        )
        .unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert!(o[0].all_keys && o[0].optional);
        assert!(!o[1].all_keys && !o[1].optional);
        let e = err("- {objectName: db, objectType: secretsmanager, optional: maybe}\n");
        assert!(
            e.contains("objects[0].optional must be true or false"),
            "{e}"
        );
    }

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
            assert_eq!(crate::yaml::parse_bool(v), Some(true));
        }
        for v in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(crate::yaml::parse_bool(v), Some(false));
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
