//! The rules the driver enforces on a response, checked here first so the
//! user gets a message naming the object instead of a failed write.

use std::collections::BTreeSet;

use prost::Message;

use super::version::Versioner;
use crate::backend::PlannedFile;
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

/// Checks paths, duplicates and modes of a plan before anything is fetched.
pub fn check_plan(files: &[PlannedFile]) -> Result<(), Error> {
    if files.is_empty() {
        return Err(Error::Empty);
    }
    if files.len() > MAX_FILES {
        return Err(Error::TooMany { count: files.len() });
    }
    let mut seen: BTreeSet<&str> = BTreeSet::new();
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
    }
    // "a" and "a/b": the driver's write would fail half-way.
    for path in &seen {
        let mut prefix = String::new();
        for element in path.split('/') {
            if !prefix.is_empty() {
                if seen.contains(prefix.as_str()) {
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

/// Builds the response: files with modes, one version per object.
pub fn assemble(
    planned: &[PlannedFile],
    contents: Vec<SecretBytes>,
    default_mode: u32,
    versions: &Versioner,
    limit: usize,
) -> Result<grpc::MountResponse, Error> {
    let mut response = grpc::MountResponse::default();
    for (file, content) in planned.iter().zip(contents) {
        response.object_version.push(grpc::ObjectVersion {
            id: file.path.clone(),
            version: versions.version(&file.config, content.expose()),
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
            template_only: false,
        }
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
    fn oversized_response_names_the_driver_flag() {
        let v = Versioner::from_key(b"0123456789abcdef".to_vec());
        let err = assemble(
            &[planned("big", None)],
            vec![SecretBytes::new(vec![b'x'; MAX_RESPONSE_BYTES])],
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
