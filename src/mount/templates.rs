//! The `templates` parameter (a coffer extension, read on every socket):
//! files rendered from several objects of the same SecretProviderClass —
//! a `.env`, a config file, a pgpass line.
//!
//! minijinja renders them in a sandbox (no file, environment or network
//! access), with undefined variables as errors, bounded fuel (time) and a
//! bounded output size.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use base64::Engine;
use minijinja::value::{Enumerator, Object, ObjectRepr, Value};
use minijinja::{Environment, UndefinedBehavior};
use serde::Deserialize;

use crate::secret::SecretBytes;

/// Largest rendered file.
pub const MAX_OUTPUT_BYTES: usize = 2 * 1024 * 1024;
/// Fuel of one template: minijinja charges one per instruction and one per
/// 64 bytes of data it creates (strings, list slots, output), and refuses an
/// allocation it cannot pay for before making it. 400,000 bounds a template
/// to about 25 MB of data in all and a fraction of a second of CPU, far
/// above what a configuration file needs.
const FUEL: u64 = 400_000;
/// Most templates in one SecretProviderClass.
pub const MAX_TEMPLATES: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "parameter templates is not a YAML list of {{fileName, template, filePermission}} ({0})"
    )]
    Yaml(String),
    #[error("template #{index}: {reason}")]
    Field { index: usize, reason: String },
    #[error("template {file:?}: syntax error at line {line}, column {column}: {detail}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        detail: String,
    },
    #[error("template {file:?}: {what} {name:?} is not defined ({hint})")]
    Undefined {
        file: String,
        what: &'static str,
        name: String,
        hint: String,
    },
    #[error("template {file:?}: {detail}")]
    Render { file: String, detail: String },
    #[error("template {file:?}: the output is {size} bytes, above the limit of {limit}")]
    TooLarge {
        file: String,
        size: usize,
        limit: usize,
    },
}

/// One entry of `templates`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub file_name: String,
    pub source: String,
    pub mode: Option<u32>,
}

impl Template {
    /// The secret-free description that goes into the file's version.
    pub fn config(&self) -> String {
        format!(
            "template|{}|{:?}|{}",
            self.file_name, self.mode, self.source
        )
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Raw {
    file_name: Option<String>,
    template: Option<String>,
    #[serde(default)]
    file_permission: Option<serde_yaml::Value>,
}

/// Reads and compiles the `templates` parameter; empty when absent.
pub fn parse(yaml: Option<&str>) -> Result<Vec<Template>, Error> {
    let Some(yaml) = yaml.filter(|y| !y.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    crate::yaml::check_cost(yaml).map_err(Error::Yaml)?;
    let raws: Vec<Raw> = serde_yaml::from_str(yaml).map_err(|e| Error::Yaml(e.to_string()))?;
    if raws.len() > MAX_TEMPLATES {
        return Err(Error::Yaml(format!(
            "{} templates, above the limit of {MAX_TEMPLATES}",
            raws.len()
        )));
    }
    let mut out = Vec::with_capacity(raws.len());
    for (i, raw) in raws.into_iter().enumerate() {
        let index = i + 1;
        let field = |reason: String| Error::Field { index, reason };
        let file_name = raw
            .file_name
            .filter(|f| !f.is_empty())
            .ok_or_else(|| field("fileName is required".into()))?;
        let source = raw
            .template
            .ok_or_else(|| field(format!("{file_name:?}: template is required")))?;
        let mode = match raw.file_permission {
            None | Some(serde_yaml::Value::Null) => None,
            Some(v) => Some(crate::yaml::mode(&v).ok_or_else(|| {
                field(format!(
                    "{file_name:?}: filePermission must be an octal mode such as 0600"
                ))
            })?),
        };
        let t = Template {
            file_name,
            source,
            mode,
        };
        compile(&t)?;
        out.push(t);
    }
    Ok(out)
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Files end with the newline the template ends with (Jinja drops it by default).
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(64);
    env.add_filter(
        "b64encode",
        |v: Value| -> Result<String, minijinja::Error> {
            Ok(base64::engine::general_purpose::STANDARD.encode(bytes_of(&v)))
        },
    );
    env.add_filter(
        "b64decode",
        |v: Value| -> Result<String, minijinja::Error> {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(bytes_of(&v))
                .map_err(|_| {
                    minijinja::Error::new(
                        minijinja::ErrorKind::InvalidOperation,
                        "b64decode: not valid base64",
                    )
                })?;
            String::from_utf8(raw).map_err(|_| {
                minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    "b64decode: the decoded value is not UTF-8",
                )
            })
        },
    );
    env.add_filter("json", |v: Value| -> Result<String, minijinja::Error> {
        let json = match v.downcast_object_ref::<Input>() {
            Some(input) => match &input.json {
                Some(j) => j.to_string(),
                None => serde_json::Value::String(input.text().into_owned()).to_string(),
            },
            None => serde_json::to_string(&v).map_err(|e| {
                minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, format!("json: {e}"))
            })?,
        };
        Ok(json)
    });
    env.add_filter("fromjson", |v: Value| -> Result<Value, minijinja::Error> {
        let parsed: serde_json::Value = serde_json::from_slice(&bytes_of(&v)).map_err(|_| {
            minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                "fromjson: not valid JSON",
            )
        })?;
        Ok(to_value(&parsed))
    });
    env.add_filter("dotenv", |v: Value| -> String {
        dotenv_quote(&String::from_utf8_lossy(&bytes_of(&v)))
    });
    env
}

fn bytes_of(v: &Value) -> Vec<u8> {
    match v.downcast_object_ref::<Input>() {
        Some(input) => input.bytes.expose().to_vec(),
        None => match v.as_str() {
            Some(s) => s.as_bytes().to_vec(),
            None => v.to_string().into_bytes(),
        },
    }
}

/// A JSON value as a template value.
fn to_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Value::from(i),
            (_, Some(u), _) => Value::from(u),
            (_, _, Some(f)) => Value::from(f),
            _ => Value::from(n.to_string()),
        },
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => {
            Value::from(items.iter().map(to_value).collect::<Vec<_>>())
        }
        serde_json::Value::Object(map) => Value::from(
            map.iter()
                .map(|(k, v)| (k.clone(), to_value(v)))
                .collect::<BTreeMap<String, Value>>(),
        ),
    }
}

/// `"…"` with `\`, `"`, `$` and newlines escaped: safe for a .env line.
pub fn dotenv_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '$' => out.push_str("\\$"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn compile(t: &Template) -> Result<(), Error> {
    let env = environment();
    env.template_from_named_str(&t.file_name, &t.source)
        .map(|_| ())
        .map_err(|e| syntax(t, &e))
}

fn syntax(t: &Template, e: &minijinja::Error) -> Error {
    let line = e.line().unwrap_or(1);
    let column = e
        .range()
        .map(|r| {
            let start = r.start.min(t.source.len());
            let line_start = t.source[..start].rfind('\n').map_or(0, |i| i + 1);
            t.source[line_start..start].chars().count() + 1
        })
        .unwrap_or(1);
    Error::Syntax {
        file: t.file_name.clone(),
        line,
        column,
        detail: e.detail().unwrap_or("invalid template").to_owned(),
    }
}

/// One object as templates see it: its text, and its fields when it is a JSON object.
struct Input {
    bytes: SecretBytes,
    json: Option<serde_json::Value>,
}

/// minijinja asks for `Debug`; it never shows the content.
impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Input({} bytes, redacted)", self.bytes.len())
    }
}

impl Input {
    fn new(bytes: SecretBytes) -> Self {
        let json = serde_json::from_slice::<serde_json::Value>(bytes.expose())
            .ok()
            .filter(|v| v.is_object());
        Self { bytes, json }
    }

    fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.bytes.expose())
    }
}

impl Object for Input {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        // Text behaves as a plain value (tojson gives a string); JSON as a map.
        if self.json.is_some() {
            ObjectRepr::Map
        } else {
            ObjectRepr::Plain
        }
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let map = self.json.as_ref()?.as_object()?;
        map.get(key.as_str()?).map(to_value)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        match self.json.as_ref().and_then(|j| j.as_object()) {
            Some(map) => Enumerator::Values(map.keys().map(|k| Value::from(k.as_str())).collect()),
            None => Enumerator::Empty,
        }
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// Renders every template with `inputs` (file name → contents).
pub fn render(
    templates: &[Template],
    inputs: &[(&str, &SecretBytes)],
) -> Result<Vec<SecretBytes>, Error> {
    if templates.is_empty() {
        return Ok(Vec::new());
    }
    let env = environment();
    let mut ctx: BTreeMap<String, Value> = BTreeMap::new();
    let mut files: BTreeMap<String, Value> = BTreeMap::new();
    let mut parsed: BTreeMap<&str, Arc<Input>> = BTreeMap::new();
    for (name, bytes) in inputs {
        let input = Arc::new(Input::new((*bytes).clone()));
        parsed.insert(name, input.clone());
        let value = Value::from_dyn_object(input);
        files.insert((*name).to_owned(), value.clone());
        ctx.insert((*name).to_owned(), value);
    }
    ctx.insert("files".into(), Value::from(files));
    let ctx = Value::from(ctx);
    let mut out = Vec::with_capacity(templates.len());
    for t in templates {
        let tmpl = env
            .template_from_named_str(&t.file_name, &t.source)
            .map_err(|e| syntax(t, &e))?;
        let rendered = match tmpl.render(&ctx) {
            Ok(r) => r,
            Err(e) => {
                // minijinja says only "undefined value": find out which.
                if e.kind() == minijinja::ErrorKind::UndefinedError {
                    check_names(t, &tmpl.undeclared_variables(true), &parsed)?;
                }
                return Err(Error::Render {
                    file: t.file_name.clone(),
                    detail: describe(&e),
                });
            }
        };
        if rendered.len() > MAX_OUTPUT_BYTES {
            return Err(Error::TooLarge {
                file: t.file_name.clone(),
                size: rendered.len(),
                limit: MAX_OUTPUT_BYTES,
            });
        }
        out.push(SecretBytes::new(rendered.into_bytes()));
    }
    Ok(out)
}

/// Names the first undefined object or field before rendering, so the
/// error says what is missing (minijinja's says only "undefined value").
fn check_names(
    t: &Template,
    used: &std::collections::HashSet<String>,
    inputs: &BTreeMap<&str, Arc<Input>>,
) -> Result<(), Error> {
    let mut used: Vec<&String> = used.iter().collect();
    used.sort();
    let known: BTreeSet<&str> = inputs.keys().copied().collect();
    for path in used {
        let mut parts = path.split('.');
        let Some(top) = parts.next() else { continue };
        if top == "files" || is_builtin(top) {
            continue;
        }
        let Some(input) = inputs.get(top) else {
            return Err(Error::Undefined {
                file: t.file_name.clone(),
                what: "object",
                name: top.to_owned(),
                hint: format!(
                    "objects of this SecretProviderClass: {}",
                    known.iter().copied().collect::<Vec<_>>().join(", ")
                ),
            });
        };
        if let Some(field) = parts.next() {
            let has = input
                .json
                .as_ref()
                .and_then(|j| j.as_object())
                .is_some_and(|m| m.contains_key(field));
            if !has {
                return Err(Error::Undefined {
                    file: t.file_name.clone(),
                    what: "field",
                    name: format!("{top}.{field}"),
                    hint: if input.json.is_some() {
                        "the object's JSON has no such key".into()
                    } else {
                        "the object is not a JSON object".into()
                    },
                });
            }
        }
    }
    Ok(())
}

fn is_builtin(name: &str) -> bool {
    matches!(
        name,
        "range" | "dict" | "namespace" | "loop" | "true" | "false" | "none" | "debug"
    )
}

fn describe(e: &minijinja::Error) -> String {
    // The format filter quotes characters of its format string, which a
    // template can take from a secret (`{{ db.password | format }}`).
    let quotes_format = e
        .detail()
        .is_some_and(|d| d.contains("format") || d.contains("offset"));
    let mut s = if quotes_format {
        "the format filter failed: the format string does not fit its arguments (details are \
         not shown: the format string may come from a secret)"
            .to_owned()
    } else if e.kind() == minijinja::ErrorKind::OutOfFuel {
        format!(
            "rendering needs more work or memory than a template may use (fuel {FUEL}: about \
             {FUEL} steps or {} MB of data)",
            FUEL * 64 / 1_000_000
        )
    } else {
        e.detail()
            .map(str::to_owned)
            .unwrap_or_else(|| e.kind().to_string())
    };
    if let Some(line) = e.line() {
        s.push_str(&format!(" (line {line})"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Vec<(&'static str, SecretBytes)> {
        vec![
            (
                "db",
                SecretBytes::new(
                    br#"{"user":"app","password":"p@ss w$rd","api-key":"k1"}"#.to_vec(),
                ),
            ),
            ("token", SecretBytes::new(b"t0k3n".to_vec())),
            ("db-host", SecretBytes::new(b"db.internal".to_vec())),
        ]
    }

    fn run(source: &str) -> Result<String, Error> {
        let t = parse(Some(&format!(
            "- fileName: out\n  template: {}\n",
            serde_json::to_string(source).unwrap()
        )))?;
        let owned = inputs();
        let refs: Vec<(&str, &SecretBytes)> = owned.iter().map(|(n, b)| (*n, b)).collect();
        let out = render(&t, &refs)?;
        Ok(String::from_utf8(out[0].expose().to_vec()).unwrap())
    }

    #[test]
    fn objects_render_as_text_and_json_fields() {
        assert_eq!(run("{{ token }}").unwrap(), "t0k3n");
        assert_eq!(
            run("{{ db.user }}:{{ db[\"api-key\"] }}@{{ files[\"db-host\"] }}").unwrap(),
            "app:k1@db.internal"
        );
        assert_eq!(
            run("{{ db }}").unwrap(),
            r#"{"user":"app","password":"p@ss w$rd","api-key":"k1"}"#
        );
    }

    #[test]
    fn filters_users_need() {
        assert_eq!(run("{{ token | b64encode }}").unwrap(), "dDBrM24=");
        assert_eq!(run("{{ 'dDBrM24=' | b64decode }}").unwrap(), "t0k3n");
        assert_eq!(
            run("PASSWORD={{ db.password | dotenv }}").unwrap(),
            r#"PASSWORD="p@ss w\$rd""#
        );
        assert_eq!(
            run("{{ db.password | urlencode }}").unwrap(),
            "p%40ss%20w%24rd"
        );
        assert_eq!(run("{{ (db | json | fromjson).user }}").unwrap(), "app");
        assert_eq!(run("{{ token | json }}").unwrap(), r#""t0k3n""#);
        assert_eq!(run("{{ token | tojson }}").unwrap(), r#""t0k3n""#);
        assert_eq!(run("{{ db.password | tojson }}").unwrap(), r#""p@ss w$rd""#);
        assert_eq!(
            run("{{ db | tojson }}").unwrap(),
            r#"{"api-key": "k1", "password": "p@ss w$rd", "user": "app"}"#
        );
        assert_eq!(
            run("{{ files['db-host'] | upper }}").unwrap(),
            "DB.INTERNAL"
        );
        assert_eq!(run("{{ missing | default('x') }}").unwrap(), "x");
        assert_eq!(
            run("a:\n{{ 'b: 1\nc: 2' | indent(2) }}").unwrap(),
            "a:\nb: 1\n  c: 2"
        );
    }

    #[test]
    fn an_absent_optional_object_can_be_tested_for() {
        assert_eq!(
            run("{% if flags is defined %}{{ flags }}{% else %}none{% endif %}").unwrap(),
            "none"
        );
        assert_eq!(
            run("{% if token is defined %}{{ token }}{% endif %}").unwrap(),
            "t0k3n"
        );
        assert!(run("{{ flags }}").is_err());
    }

    #[test]
    fn undefined_objects_and_fields_are_named() {
        let err = run("{{ nope }}").unwrap_err().to_string();
        assert!(
            err.contains("\"out\"")
                && err.contains("object \"nope\"")
                && err.contains("db, db-host, token"),
            "{err}"
        );
        let err = run("{{ db.pasword }}").unwrap_err().to_string();
        assert!(err.contains("field \"db.pasword\""), "{err}");
        let err = run("{{ token.x }}").unwrap_err().to_string();
        assert!(err.contains("not a JSON object"), "{err}");
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let err = parse(Some(
            "- fileName: a.env\n  template: \"A={{ db.user }}\\nB={{ db.password \"\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"a.env\"") && err.contains("line 2"), "{err}");
        assert!(err.contains("column"), "{err}");
    }

    #[test]
    fn output_and_time_are_bounded() {
        let err = run("{% for i in range(3000) %}{{ 'x' * 1000 }}{% endfor %}").unwrap_err();
        assert!(
            matches!(err, Error::TooLarge { .. } | Error::Render { .. }),
            "{err}"
        );
        let err =
            run("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
                .unwrap_err();
        assert!(matches!(err, Error::Render { .. }), "{err}");
    }

    #[test]
    fn huge_values_are_refused_before_they_are_allocated() {
        // One 90 MB string, a 1.6 GB list, and a doubling loop.
        for source in [
            "{{ 'x' * 90000000 }}",
            "{{ (['xy'] * 60000000) | join }}",
            "{% set s = namespace(v='x') %}{% for i in range(40) %}{% set s.v = s.v ~ s.v %}{% endfor %}{{ s.v | length }}",
        ] {
            let err = run(source).unwrap_err().to_string();
            assert!(
                err.contains("fuel") || err.contains("too large"),
                "{source}: {err}"
            );
        }
    }

    #[test]
    fn format_errors_do_not_quote_the_format_string() {
        let t = parse(Some(
            "- fileName: out\n  template: \"{{ (pw ~ '') | format(1) }}\"\n",
        ))
        .unwrap();
        let pw = SecretBytes::new(b"s3cr%Qt{Kx}".to_vec());
        let err = render(&t, &[("pw", &pw)]).unwrap_err().to_string();
        assert!(err.contains("format filter"), "{err}");
        for c in ['Q', 'K', '%', '{'] {
            assert!(!err.contains(c), "{err} quotes {c:?}");
        }
    }

    #[test]
    fn too_many_templates_are_refused() {
        let many: String = (0..=MAX_TEMPLATES)
            .map(|i| format!("- fileName: f{i}\n  template: x\n"))
            .collect();
        assert!(
            parse(Some(&many))
                .unwrap_err()
                .to_string()
                .contains("limit")
        );
    }

    #[test]
    fn field_errors() {
        assert!(
            parse(Some("- template: x"))
                .unwrap_err()
                .to_string()
                .contains("fileName")
        );
        assert!(
            parse(Some("- fileName: a"))
                .unwrap_err()
                .to_string()
                .contains("template is required")
        );
        assert!(
            parse(Some("- {fileName: a, template: x, filePermission: rw}"))
                .unwrap_err()
                .to_string()
                .contains("filePermission")
        );
        assert!(parse(Some("- {fileName: a, template: x, extra: 1}")).is_err());
        assert!(parse(Some("fileName: a")).is_err());
        assert_eq!(
            parse(Some(
                "- {fileName: a, template: x, filePermission: \"0600\"}"
            ))
            .unwrap()[0]
                .mode,
            Some(0o600)
        );
        assert!(parse(None).unwrap().is_empty());
    }
}
