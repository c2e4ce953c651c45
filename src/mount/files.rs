//! The rules the driver enforces on a response, checked here first so the
//! user gets a message naming the object instead of a failed write.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::ops::Range;

use prost::Message;

use super::version::Versioner;
use crate::backend::{Fetched, PlannedFile};
use crate::grpc;
use crate::secret::SecretBytes;

/// The driver's default `--max-call-recv-msg-size`.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

const MAX_PATH_BYTES: usize = 4096;
/// Most files one mount may make (objects, jmesPath entries and templates).
pub const MAX_FILES: usize = 1000;
const MAX_ELEMENT_BYTES: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("object {object:?}: file path {path:?} {reason}")]
    Path {
        object: String,
        path: String,
        reason: &'static str,
    },
    #[error("two objects, or an object and a template, both write the file {path:?}")]
    Duplicate { path: String },
    #[error("objects {file:?} and {dir:?}: {file:?} would be both a file and a directory")]
    FileAndDirectory { file: String, dir: String },
    #[error("object {object:?}: file mode {mode:#o} is above 0777")]
    Mode { object: String, mode: u32 },
    #[error(
        "the SecretProviderClass names no objects: the driver fails a mount without object versions"
    )]
    Empty,
    #[error("the SecretProviderClass makes {count} files, above the limit of {MAX_FILES}")]
    TooMany { count: usize },
    #[error("object {object:?} (allKeys): key {key:?} cannot be a file name: {reason}")]
    Key {
        object: String,
        key: String,
        reason: String,
    },
    #[error("object {object:?}: the backend answered {got} where the plan wants {want}")]
    Shape {
        object: String,
        got: &'static str,
        want: &'static str,
    },
    #[error(
        "the response would be {size} bytes, above the limit of {limit} bytes; the driver refuses it unless its flag --max-call-recv-msg-size is raised (and coffer's --max-response-bytes with it)"
    )]
    TooLarge { size: usize, limit: usize },
}

/// A name or path as error messages quote it: long ones are cut, so a
/// hostile 5,000-byte path cannot crowd out the reason.
pub fn short(s: &str) -> String {
    crate::errors::truncate(s, 96, &format!("…({} bytes)", s.len()))
}

/// Why a path is refused, in the driver's terms; `None` when it is fine.
pub fn path_problem(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("is empty");
    }
    if path.starts_with('/') {
        return Some("is absolute; it must be relative to the mount");
    }
    if path.len() > MAX_PATH_BYTES {
        return Some("is longer than 4096 bytes");
    }
    let mut elements = path.split('/');
    if let Some(first) = path.split('/').next()
        && first.starts_with("..")
        && first.len() > 2
    {
        return Some("starts with \"..\", which the driver reserves for its own files");
    }
    if elements.any(|e| e == "..") {
        return Some("has a \"..\" element");
    }
    for element in path.split('/') {
        if element.len() > MAX_ELEMENT_BYTES {
            return Some("has an element longer than 255 bytes");
        }
        if element.is_empty() {
            return Some("is not clean (empty element: \"//\" or a trailing \"/\")");
        }
        if element == "." {
            return Some("is not clean (\".\" element)");
        }
    }
    if path.contains('\0') {
        return Some("contains a NUL byte");
    }
    None
}

/// Why a key of an `allKeys` object cannot be the file `<dir>/<key>`:
/// it must be one clean file name (no `/`) and the whole path must pass
/// the driver's rules.
pub fn key_problem(dir: &str, key: &str) -> Option<String> {
    if key.contains('/') {
        return Some("it contains \"/\" (each key becomes one file name)".into());
    }
    path_problem(&format!("{dir}/{key}")).map(|r| format!("the file path {r}"))
}

/// Checks paths, duplicates and modes of a plan before anything is fetched.
/// An `all_keys` entry is a directory: its files are checked after the
/// fetch, with [`check_files`] on the expanded list.
pub fn check_plan(files: &[PlannedFile]) -> Result<(), Error> {
    if files.is_empty() {
        return Err(Error::Empty);
    }
    check_files(files)
}

/// The path rules, duplicates, files that are also directories, and modes.
pub fn check_files(files: &[PlannedFile]) -> Result<(), Error> {
    if files.len() > MAX_FILES {
        return Err(Error::TooMany { count: files.len() });
    }
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut dirs: BTreeSet<&str> = BTreeSet::new();
    for file in files {
        if let Some(reason) = path_problem(&file.path) {
            return Err(Error::Path {
                object: short(&file.path),
                path: short(&file.path),
                reason,
            });
        }
        if let Some(mode) = file.mode
            && mode > 0o777
        {
            return Err(Error::Mode {
                object: short(&file.path),
                mode,
            });
        }
        if !seen.insert(&file.path) {
            return Err(Error::Duplicate {
                path: short(&file.path),
            });
        }
        if file.all_keys {
            dirs.insert(&file.path);
        }
    }
    // "a" and "a/b": the driver's write would fail half-way.
    for path in &seen {
        let mut prefix = String::new();
        for element in path.split('/') {
            if !prefix.is_empty() {
                if seen.contains(prefix.as_str()) && !dirs.contains(prefix.as_str()) {
                    return Err(Error::FileAndDirectory {
                        file: short(&prefix),
                        dir: short(path),
                    });
                }
                prefix.push('/');
            }
            prefix.push_str(element);
        }
    }
    Ok(())
}

/// The object version of an `optional` object that does not exist.
pub const ABSENT: &str = "absent";
/// The object version of an `allKeys` object whose secret has no keys.
pub const NO_KEYS: &str = "empty";

/// The planned files after the fetch: `all_keys` objects expanded into one
/// file per key, absent `optional` objects left out (and named in `markers`).
#[derive(Debug)]
pub struct Expanded<'a> {
    /// Borrowed from the cached plan when nothing was expanded or left out.
    pub files: Cow<'a, [PlannedFile]>,
    pub contents: Vec<SecretBytes>,
    /// Per file, the version the backend gave it ([`Fetched::Versioned`]);
    /// `None`: the HMAC of definition and content.
    pub versions: Vec<Option<String>>,
    /// Objects without files, with their fixed version: (id, [`ABSENT`] or [`NO_KEYS`]).
    pub markers: Vec<(String, &'static str)>,
    /// Each `all_keys` object: its directory and its files' range in `files`.
    pub groups: Vec<(String, Range<usize>)>,
}

/// Expands the fetch's answer along the plan. Each key file inherits the
/// object's mode and `templateOnly`, and its definition adds the key (so
/// every key file has its own version). Refuses a key that is not a clean
/// file name, naming the object and the key.
pub fn expand(planned: &[PlannedFile], fetched: Vec<Fetched>) -> Result<Expanded<'_>, Error> {
    let shape = |file: &PlannedFile, got: &'static str, want: &'static str| Error::Shape {
        object: short(&file.path),
        got,
        want,
    };
    let plain = planned.iter().all(|f| !f.all_keys && !f.optional);
    if plain {
        let mut contents = Vec::with_capacity(fetched.len());
        let mut versions = Vec::with_capacity(fetched.len());
        for (file, f) in planned.iter().zip(fetched) {
            match f {
                Fetched::File(b) => {
                    contents.push(b);
                    versions.push(None);
                }
                Fetched::Versioned(b, v) => {
                    contents.push(b);
                    versions.push(Some(v));
                }
                Fetched::Keys(_) => return Err(shape(file, "keys", "one file")),
                Fetched::Absent => return Err(shape(file, "absent", "one file")),
            }
        }
        return Ok(Expanded {
            files: Cow::Borrowed(planned),
            contents,
            versions,
            markers: Vec::new(),
            groups: Vec::new(),
        });
    }
    let mut files = Vec::with_capacity(planned.len());
    let mut contents = Vec::with_capacity(planned.len());
    let mut versions = Vec::with_capacity(planned.len());
    let mut markers = Vec::new();
    let mut groups = Vec::new();
    for (file, f) in planned.iter().zip(fetched) {
        match (f, file.all_keys) {
            (Fetched::Absent, _) if file.optional => markers.push((file.path.clone(), ABSENT)),
            (Fetched::Absent, _) => return Err(shape(file, "absent", "a required object")),
            (Fetched::File(b), false) => {
                files.push(file.clone());
                contents.push(b);
                versions.push(None);
            }
            (Fetched::Versioned(b, v), false) => {
                files.push(file.clone());
                contents.push(b);
                versions.push(Some(v));
            }
            (Fetched::Keys(keys), true) => {
                if keys.is_empty() {
                    markers.push((file.path.clone(), NO_KEYS));
                }
                let start = files.len();
                for (key, b) in keys {
                    if let Some(reason) = key_problem(&file.path, &key) {
                        return Err(Error::Key {
                            object: short(&file.path),
                            key: short(&key),
                            reason,
                        });
                    }
                    files.push(PlannedFile {
                        path: format!("{}/{key}", file.path),
                        mode: file.mode,
                        config: format!("{}|key:{key}", file.config),
                        template_only: file.template_only,
                        all_keys: false,
                        optional: false,
                    });
                    contents.push(b);
                    versions.push(None);
                }
                groups.push((file.path.clone(), start..files.len()));
            }
            (Fetched::File(_) | Fetched::Versioned(..), true) => {
                return Err(shape(file, "one file", "keys"));
            }
            (Fetched::Keys(_), false) => return Err(shape(file, "keys", "one file")),
        }
    }
    Ok(Expanded {
        files: Cow::Owned(files),
        contents,
        versions,
        markers,
        groups,
    })
}

/// Builds the response: files with modes, one version per object (and per
/// key file: the backend's own where it gave one, else the HMAC), and the
/// fixed versions of objects without files.
pub fn assemble(
    planned: &[PlannedFile],
    contents: Vec<SecretBytes>,
    backend_versions: &[Option<String>],
    markers: &[(String, &'static str)],
    default_mode: u32,
    versions: &Versioner,
    limit: usize,
) -> Result<grpc::MountResponse, Error> {
    let mut response = grpc::MountResponse::default();
    for (id, version) in markers {
        response.object_version.push(grpc::ObjectVersion {
            id: id.clone(),
            version: (*version).to_owned(),
        });
    }
    for (i, (file, content)) in planned.iter().zip(contents).enumerate() {
        let version = match backend_versions.get(i) {
            Some(Some(v)) => v.clone(),
            _ => versions.version(&file.config, content.expose()),
        };
        response.object_version.push(grpc::ObjectVersion {
            id: file.path.clone(),
            version,
        });
        if file.template_only {
            continue;
        }
        let mode = file.mode.unwrap_or(default_mode);
        response.files.push(grpc::File {
            path: file.path.clone(),
            // mode ≤ 0o777 was checked in check_plan; default_mode when parsed.
            mode: i32::try_from(mode & 0o777).unwrap_or(0o644),
            contents: content.into_vec(),
        });
    }
    let size = response.encoded_len();
    if size > limit {
        return Err(Error::TooLarge { size, limit });
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(path: &str, mode: Option<u32>) -> PlannedFile {
        PlannedFile {
            path: path.into(),
            mode,
            config: format!("test|{path}"),
            ..Default::default()
        }
    }

    fn dir(path: &str, optional: bool) -> PlannedFile {
        PlannedFile {
            all_keys: true,
            optional,
            mode: Some(0o640),
            ..planned(path, None)
        }
    }

    fn bytes(s: &str) -> SecretBytes {
        SecretBytes::new(s.as_bytes().to_vec())
    }

    fn keys(pairs: &[(&str, &str)]) -> Fetched {
        Fetched::Keys(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), bytes(v)))
                .collect(),
        )
    }

    #[test]
    fn all_keys_expand_into_one_file_per_key_with_its_own_definition() {
        let plan = [planned("a", None), dir("db", false)];
        let e = expand(
            &plan,
            vec![
                Fetched::File(bytes("1")),
                keys(&[("password", "p"), ("user", "u")]),
            ],
        )
        .unwrap();
        let paths: Vec<&str> = e.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a", "db/password", "db/user"]);
        assert_eq!(e.files[1].mode, Some(0o640), "the object's mode");
        assert_ne!(e.files[1].config, e.files[2].config);
        assert!(e.files.iter().all(|f| !f.all_keys));
        assert_eq!(e.groups, [("db".to_owned(), 1..3)]);
        check_files(&e.files).unwrap();
        let resp = assemble_expanded(e);
        assert_eq!(resp.files.len(), 3);
        assert_eq!(resp.object_version.len(), 3);
    }

    /// Assembles what `expand` gave, with a fixed key and mode 0644.
    fn assemble_expanded(e: Expanded) -> grpc::MountResponse {
        let v = Versioner::from_key(b"0123456789abcdef".to_vec());
        assemble(
            &e.files,
            e.contents,
            &e.versions,
            &e.markers,
            0o644,
            &v,
            MAX_RESPONSE_BYTES,
        )
        .unwrap()
    }

    #[test]
    fn keys_that_are_not_clean_file_names_fail_naming_the_key() {
        for bad in ["a/b", "..", ".", "", "x\0y", &"k".repeat(256)] {
            let err = expand(&[dir("db", false)], vec![keys(&[(bad, "v")])]).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, Error::Key { .. }), "{bad:?}: {msg}");
            assert!(msg.starts_with("object \"db\" (allKeys): key "), "{msg}");
            assert!(!msg.contains("\"v\""), "no value in {msg}");
        }
        for good in ["..data", ".env", "tls.crt", "with space", "ключ"] {
            assert!(
                expand(&[dir("db", false)], vec![keys(&[(good, "v")])]).is_ok(),
                "{good:?}"
            );
        }
    }

    #[test]
    fn expanded_keys_meet_the_other_files_rules() {
        // A planned file inside the directory is fine at plan time...
        let plan = [planned("db/user", None), dir("db", false)];
        check_plan(&plan).unwrap();
        // ...and a duplicate once the key is known.
        let e = expand(
            &plan,
            vec![Fetched::File(bytes("x")), keys(&[("user", "u")])],
        )
        .unwrap();
        assert!(matches!(
            check_files(&e.files),
            Err(Error::Duplicate { .. })
        ));
        // A directory that is also a file stays refused.
        assert!(matches!(
            check_plan(&[
                planned("db", None),
                planned("db/x", None),
                dir("other", false)
            ]),
            Err(Error::FileAndDirectory { .. })
        ));
    }

    #[test]
    fn absent_optional_objects_have_a_marker_version_and_no_file() {
        let optional = PlannedFile {
            optional: true,
            ..planned("maybe", None)
        };
        let plan = [
            planned("a", None),
            optional,
            dir("db", true),
            dir("none", false),
        ];
        let e = expand(
            &plan,
            vec![
                Fetched::File(bytes("1")),
                Fetched::Absent,
                Fetched::Absent,
                keys(&[]),
            ],
        )
        .unwrap();
        assert_eq!(e.files.len(), 1);
        assert_eq!(
            e.markers,
            [
                ("maybe".to_owned(), ABSENT),
                ("db".to_owned(), ABSENT),
                ("none".to_owned(), NO_KEYS)
            ]
        );
        let resp = assemble_expanded(e);
        let ids: Vec<(&str, &str)> = resp
            .object_version
            .iter()
            .map(|o| (o.id.as_str(), o.version.as_str()))
            .collect();
        assert_eq!(
            ids[..3],
            [("maybe", "absent"), ("db", "absent"), ("none", "empty")]
        );
        assert_eq!(resp.files.len(), 1);
    }

    #[test]
    fn a_backend_breaking_the_contract_is_an_internal_error() {
        assert!(matches!(
            expand(&[planned("a", None)], vec![Fetched::Absent]),
            Err(Error::Shape { .. })
        ));
        assert!(matches!(
            expand(&[dir("d", false)], vec![Fetched::Absent]),
            Err(Error::Shape { .. })
        ));
        assert!(matches!(
            expand(&[dir("d", false)], vec![Fetched::File(bytes("x"))]),
            Err(Error::Shape { .. })
        ));
    }

    #[test]
    fn path_rules_match_the_driver() {
        let long_element = "a".repeat(256);
        let ok_element = "a".repeat(255);
        let long_path = vec!["abcdefgh"; 600].join("/");
        let cases: &[(&str, bool)] = &[
            ("a", true),
            ("dir/file", true),
            ("a.b", true),
            ("..a/../b", false),
            ("a/..b", true),
            (".hidden", true),
            ("..", false),
            ("../x", false),
            ("a/../b", false),
            ("..data", false),
            ("..foo/x", false),
            ("/etc/passwd", false),
            ("", false),
            ("./a", false),
            ("a/", false),
            ("a//b", false),
            ("a/./b", false),
            (&long_element, false),
            (&ok_element, true),
            (&long_path, false),
            ("back\\slash", true),
        ];
        for (path, ok) in cases {
            assert_eq!(
                path_problem(path).is_none(),
                *ok,
                "{path:?}: {:?}",
                path_problem(path)
            );
        }
    }

    #[test]
    fn duplicate_paths_are_refused_naming_the_path() {
        let err = check_plan(&[planned("creds", None), planned("creds", None)]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("both write the file \"creds\""), "{msg}");
    }

    #[test]
    fn file_that_is_also_a_directory_is_refused() {
        let err = check_plan(&[planned("a/b", None), planned("a", None)]).unwrap_err();
        assert!(matches!(err, Error::FileAndDirectory { .. }), "{err}");
        assert!(check_plan(&[planned("a/b", None), planned("ab", None)]).is_ok());
    }

    #[test]
    fn modes_above_0777_and_empty_plans_are_refused() {
        assert!(matches!(
            check_plan(&[planned("x", Some(0o1777))]),
            Err(Error::Mode { mode: 0o1777, .. })
        ));
        assert!(check_plan(&[planned("x", Some(0o777))]).is_ok());
        assert!(matches!(check_plan(&[]), Err(Error::Empty)));
    }

    #[test]
    fn assemble_sets_modes_and_one_version_per_object() {
        let v = Versioner::from_key(b"0123456789abcdef".to_vec());
        let files = [planned("a", Some(0o600)), planned("dir/b", None)];
        let resp = assemble(
            &files,
            vec![
                SecretBytes::new(b"one".to_vec()),
                SecretBytes::new(b"two".to_vec()),
            ],
            &[],
            &[],
            0o644,
            &v,
            MAX_RESPONSE_BYTES,
        )
        .unwrap();
        assert_eq!(resp.files.len(), 2);
        assert_eq!(resp.files[0].mode, 0o600);
        assert_eq!(resp.files[1].mode, 0o644);
        assert_eq!(resp.files[1].path, "dir/b");
        assert_eq!(resp.object_version.len(), 2);
        assert_eq!(resp.object_version[0].id, "a");
        assert_eq!(resp.object_version[1].id, "dir/b");
        assert_ne!(
            resp.object_version[0].version,
            resp.object_version[1].version
        );
    }

    #[test]
    fn a_version_the_backend_gives_replaces_the_hmac() {
        let v = Versioner::from_key(b"0123456789abcdef".to_vec());
        let files = [planned("a", None), planned("b", None)];
        let resp = assemble(
            &files,
            vec![
                SecretBytes::new(b"one".to_vec()),
                SecretBytes::new(b"one".to_vec()),
            ],
            &[
                Some("3f23cec6-82aa-4e1c-a03c-058389bb0acd".to_owned()),
                None,
            ],
            &[],
            0o644,
            &v,
            MAX_RESPONSE_BYTES,
        )
        .unwrap();
        assert_eq!(
            resp.object_version[0].version,
            "3f23cec6-82aa-4e1c-a03c-058389bb0acd"
        );
        assert_eq!(
            resp.object_version[1].version,
            v.version("test|b", b"one"),
            "no backend version: the HMAC of definition and content"
        );
    }

    #[test]
    fn oversized_response_names_the_driver_flag() {
        let v = Versioner::from_key(b"0123456789abcdef".to_vec());
        let err = assemble(
            &[planned("big", None)],
            vec![SecretBytes::new(vec![b'x'; MAX_RESPONSE_BYTES])],
            &[],
            &[],
            0o644,
            &v,
            MAX_RESPONSE_BYTES,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("--max-call-recv-msg-size") && msg.contains("4194304"),
            "{msg}"
        );
    }
}
