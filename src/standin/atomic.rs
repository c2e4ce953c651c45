//! A re-implementation of the Kubernetes "atomic writer" as used by the
//! Secrets Store CSI driver to project a provider's files into a volume.
//!
//! Layout produced in the target directory:
//!
//! ```text
//! <target>/..2024_01_31_12_00_00.123456789/   real files (dir mode 0755)
//! <target>/..data -> ..2024_01_31_12_00_00.123456789
//! <target>/<top-level name> -> ..data/<top-level name>
//! ```
//!
//! An update writes a fresh timestamp directory, points `..data_tmp` at it and
//! renames that symlink over `..data`, so readers always see either the old or
//! the new set of files, never a mix.
//!
//! Deliberate differences from the driver (all stricter, none silent):
//! - duplicate paths, and a path used both as a file and as a directory, are
//!   rejected up front instead of failing half-way through the write;
//! - a path that is not already clean is rejected rather than cleaned;
//! - the path `.` and paths containing a NUL byte are rejected;
//! - instead of deleting foreign top-level entries (files a provider wrote
//!   directly), the write is refused with an error naming the entry; a foreign
//!   symlink whose name the payload needs is refused the same way;
//! - nested directories are chmod'ed to 0755 so the umask does not matter.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Longest accepted payload path, in bytes.
const MAX_PATH_LENGTH: usize = 4096;
/// Longest accepted path element, in bytes.
const MAX_FILE_NAME_LENGTH: usize = 255;
/// Symlink to the current timestamp directory.
const DATA_DIR_NAME: &str = "..data";
/// Temporary symlink renamed over `..data`.
const NEW_DATA_DIR_NAME: &str = "..data_tmp";
/// Mode of the timestamp directory and of the directories inside it.
const DIR_MODE: u32 = 0o755;
/// Only the permission bits of a payload's mode are applied.
const FILE_MODE_MASK: u32 = 0o777;
/// How many random suffixes to try before giving up on a timestamp directory.
const MAX_TEMP_DIR_ATTEMPTS: u32 = 10_000;

/// One file of a provider's response.
#[derive(Clone, PartialEq, Eq)]
pub struct Payload {
    /// Relative path inside the target directory (may be nested, `dir/file`).
    pub path: String,
    /// File mode; only the `0o777` bits are used.
    pub mode: u32,
    /// File contents.
    pub contents: Vec<u8>,
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payload")
            .field("path", &self.path)
            .field("mode", &format_args!("{:#o}", self.mode))
            .field("contents", &format_args!("<{} bytes>", self.contents.len()))
            .finish()
    }
}

/// Why a payload could not be written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A payload path failed the driver's path check.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    /// The same path appears more than once in one payload.
    #[error("invalid payload: duplicate path {path:?}")]
    DuplicatePath { path: String },
    /// A path is used as a file and as the parent directory of another file.
    #[error("invalid payload: {path:?} is used both as a file and as a directory")]
    PathConflict { path: String },
    /// The target exists but is not a directory.
    #[error("target {} exists and is not a directory", path.display())]
    TargetNotDirectory { path: PathBuf },
    /// The target holds an entry the atomic writer did not create.
    #[error("refusing to write into {}: {} {reason}", target.display(), entry.display())]
    ForeignEntry {
        target: PathBuf,
        entry: PathBuf,
        reason: &'static str,
    },
    /// A file system operation failed.
    #[error("cannot {op} {}: {cause}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        cause: io::Error,
    },
    /// The random suffix of the timestamp directory could not be generated.
    #[error("cannot create a timestamp directory in {}: no randomness: {cause}", target.display())]
    Random {
        target: PathBuf,
        cause: getrandom::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_path_buf();
    move |cause| Error::Io { op, path, cause }
}

/// The driver's path check for one file path.
///
/// # Errors
///
/// [`Error::InvalidPath`] if the path is empty, absolute, longer than 4096
/// bytes, has a `..` element or an element longer than 255 bytes, starts with
/// a reserved `..` name, is not clean, is `.`, or contains a NUL byte.
pub fn validate_path(path: &str) -> Result<(), Error> {
    let invalid = |reason| {
        Err(Error::InvalidPath {
            path: path.to_owned(),
            reason,
        })
    };
    if path.is_empty() {
        return invalid("must not be empty");
    }
    if path.starts_with('/') {
        return invalid("must be a relative path");
    }
    if path.len() > MAX_PATH_LENGTH {
        return invalid("must be at most 4096 bytes long");
    }
    for element in path.split('/') {
        if element == ".." {
            return invalid("must not contain a '..' element");
        }
        if element.len() > MAX_FILE_NAME_LENGTH {
            return invalid("path elements must be at most 255 bytes long");
        }
    }
    let first = path.split_once('/').map_or(path, |(first, _)| first);
    if first.starts_with("..") && first.len() > 2 {
        return invalid("must not start with '..' (reserved for the atomic writer)");
    }
    if !is_clean(path) {
        return invalid("must be clean (no empty or '.' elements, no trailing '/')");
    }
    if path == "." {
        return invalid("must name a file, not '.'");
    }
    if path.contains('\0') {
        return invalid("must not contain a NUL byte");
    }
    Ok(())
}

/// Whether Go's `filepath.Clean(path) == path` for a non-empty relative path
/// that has no `..` elements (those are rejected before this is asked).
fn is_clean(path: &str) -> bool {
    path == "." || path.split('/').all(|e| !e.is_empty() && e != ".")
}

/// The validated shape of a payload.
struct Plan<'a> {
    /// Every file path and every directory above one.
    entries: BTreeSet<&'a str>,
    /// First element of every path.
    top_level: BTreeSet<&'a str>,
}

impl<'a> Plan<'a> {
    fn new(files: &'a [Payload]) -> Result<Self, Error> {
        let mut paths = BTreeSet::new();
        for file in files {
            validate_path(&file.path)?;
            if !paths.insert(file.path.as_str()) {
                return Err(Error::DuplicatePath {
                    path: file.path.clone(),
                });
            }
        }
        let mut dirs = BTreeSet::new();
        for path in &paths {
            dirs.extend(parent_dirs(path));
        }
        if let Some(path) = dirs.iter().find(|dir| paths.contains(*dir)) {
            return Err(Error::PathConflict {
                path: (*path).to_owned(),
            });
        }
        let top_level = paths
            .iter()
            .map(|p| p.split_once('/').map_or(*p, |(first, _)| first))
            .collect();
        let mut entries = paths;
        entries.extend(dirs);
        Ok(Plan { entries, top_level })
    }
}

/// `a`, `a/b` for `a/b/c`.
fn parent_dirs(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').filter_map(|(i, _)| path.get(..i))
}

/// Validate as the driver does, then write atomically. Returns `Ok(true)` if
/// anything was written, `Ok(false)` if the payload equals what is there
/// (skipped).
///
/// # Errors
///
/// Validation errors ([`Error::InvalidPath`], [`Error::DuplicatePath`],
/// [`Error::PathConflict`]) are returned before anything is touched; so are
/// [`Error::TargetNotDirectory`] and [`Error::ForeignEntry`]. [`Error::Io`] and
/// [`Error::Random`] report file system or randomness failures; if one happens
/// before `..data` is switched, the new timestamp directory is removed again.
pub fn write_payload(target: &Path, files: &[Payload]) -> Result<bool, Error> {
    let plan = Plan::new(files)?;
    ensure_target_dir(target)?;
    check_foreign_entries(target, &plan.top_level)?;

    let data_dir = target.join(DATA_DIR_NAME);
    let old = read_current(target)?;
    if let Some(old) = &old
        && let Some(old_entries) = &old.entries
        && old_entries.len() == plan.entries.len()
        && plan.entries.iter().all(|e| old_entries.contains(*e))
        && files
            .iter()
            .all(|f| same_contents(&data_dir.join(&f.path), &f.contents))
    {
        return Ok(false);
    }

    let ts_name = create_timestamp_dir(target)?;
    let ts_path = target.join(&ts_name);
    if let Err(err) = write_files(&ts_path, files).and_then(|()| swap_data_link(target, &ts_name)) {
        // Nothing visible has changed yet; best-effort removal of the new dir.
        let _ = fs::remove_dir_all(&ts_path);
        return Err(err);
    }

    create_user_visible_links(target, &plan.top_level)?;
    if let Some(old) = old {
        if let Some(old_entries) = &old.entries {
            let stale = old_entries
                .iter()
                .filter(|e| !e.contains('/') && !plan.top_level.contains(e.as_str()));
            remove_user_visible_links(target, stale)?;
        }
        remove_old_timestamp_dir(target, &old.link, &ts_name)?;
    }
    Ok(true)
}

fn ensure_target_dir(target: &Path) -> Result<(), Error> {
    match fs::metadata(target) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(Error::TargetNotDirectory {
            path: target.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(target)
            .map_err(io_err("create target directory", target)),
        Err(e) => Err(io_err("inspect target directory", target)(e)),
    }
}

/// Refuse targets holding entries the atomic writer did not make: anything
/// that is not a symlink (outside the reserved `..` names), a non-symlink
/// `..data`/`..data_tmp`, or a symlink with a payload name that does not point
/// into `..data`.
fn check_foreign_entries(target: &Path, top_level: &BTreeSet<&str>) -> Result<(), Error> {
    let foreign = |entry: PathBuf, reason| Error::ForeignEntry {
        target: target.to_path_buf(),
        entry,
        reason,
    };
    let entries = fs::read_dir(target).map_err(io_err("list", target))?;
    for entry in entries {
        let entry = entry.map_err(io_err("list", target))?;
        let path = entry.path();
        let name = entry.file_name();
        let file_type = entry.file_type().map_err(io_err("inspect", &path))?;
        if name.as_bytes().starts_with(b"..") {
            if (name == DATA_DIR_NAME || name == NEW_DATA_DIR_NAME) && !file_type.is_symlink() {
                return Err(foreign(
                    path,
                    "has a name reserved for the atomic writer's symlinks but is not a symlink",
                ));
            }
            continue;
        }
        if !file_type.is_symlink() {
            return Err(foreign(
                path,
                "is not a symlink; the directory holds files not written by the atomic writer",
            ));
        }
        if let Some(name) = name.to_str()
            && top_level.contains(name)
        {
            let link = fs::read_link(&path).map_err(io_err("read symlink", &path))?;
            if link != Path::new(DATA_DIR_NAME).join(name) {
                return Err(foreign(
                    path,
                    "is a symlink that does not point into ..data but the payload needs its name",
                ));
            }
        }
    }
    Ok(())
}

/// What `..data` currently points at.
struct Current {
    /// The symlink's target as stored.
    link: PathBuf,
    /// Every file and directory (relative, `/`-separated) under it; `None` if
    /// it is missing or holds names that are not UTF-8 (forces a write).
    entries: Option<BTreeSet<String>>,
}

fn read_current(target: &Path) -> Result<Option<Current>, Error> {
    let data_dir = target.join(DATA_DIR_NAME);
    let link = match fs::read_link(&data_dir) {
        Ok(link) => link,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read symlink", &data_dir)(e)),
    };
    let entries = match list_tree(&data_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err("list", &data_dir)(e)),
    };
    Ok(Some(Current { link, entries }))
}

/// All entries below `root` (which is followed if it is a symlink), without
/// following symlinks inside it. `None` if some name is not UTF-8.
fn list_tree(root: &Path) -> io::Result<Option<BTreeSet<String>>> {
    let mut out = BTreeSet::new();
    let mut pending = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                return Ok(None);
            };
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            if entry.file_type()?.is_dir() {
                pending.push((entry.path(), rel.clone()));
            }
            out.insert(rel);
        }
    }
    Ok(Some(out))
}

/// Whether `path` is a regular file holding exactly `expected`. Any error
/// (missing, unreadable) counts as different.
fn same_contents(path: &Path, expected: &[u8]) -> bool {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() && meta.len() == expected.len() as u64 => {
            fs::read(path).is_ok_and(|actual| actual == expected)
        }
        _ => false,
    }
}

/// `..YYYY_MM_DD_HH_MM_SS.` in UTC, the prefix Go's
/// `time.Now().UTC().Format("..2006_01_02_15_04_05.")` gives.
fn timestamp_prefix(now: time::OffsetDateTime) -> String {
    let now = now.to_offset(time::UtcOffset::UTC);
    format!(
        "..{:04}_{:02}_{:02}_{:02}_{:02}_{:02}.",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// Create `<target>/..<timestamp>.<random decimal u32>` with mode 0755, like
/// Go's `os.MkdirTemp`, and return its name.
fn create_timestamp_dir(target: &Path) -> Result<String, Error> {
    let prefix = timestamp_prefix(time::OffsetDateTime::now_utc());
    for _ in 0..MAX_TEMP_DIR_ATTEMPTS {
        let suffix = getrandom::u32().map_err(|cause| Error::Random {
            target: target.to_path_buf(),
            cause,
        })?;
        let name = format!("{prefix}{suffix}");
        let path = target.join(&name);
        match fs::DirBuilder::new().mode(DIR_MODE).create(&path) {
            Ok(()) => {
                set_mode(&path, DIR_MODE)?;
                return Ok(name);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create timestamp directory", &path)(e)),
        }
    }
    Err(Error::Io {
        op: "create timestamp directory in",
        path: target.to_path_buf(),
        cause: io::Error::new(io::ErrorKind::AlreadyExists, "no unused name found"),
    })
}

fn set_mode(path: &Path, mode: u32) -> Result<(), Error> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", path))
}

fn write_files(ts_path: &Path, files: &[Payload]) -> Result<(), Error> {
    let mut made = BTreeSet::new();
    for file in files {
        for dir in parent_dirs(&file.path) {
            if made.insert(dir) {
                let path = ts_path.join(dir);
                fs::DirBuilder::new()
                    .mode(DIR_MODE)
                    .create(&path)
                    .map_err(io_err("create directory", &path))?;
                set_mode(&path, DIR_MODE)?;
            }
        }
        let path = ts_path.join(&file.path);
        let perm = file.mode & FILE_MODE_MASK;
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(perm)
            .open(&path)
            .map_err(io_err("create file", &path))?;
        out.write_all(&file.contents)
            .map_err(io_err("write file", &path))?;
        // The mode given to open() is filtered by the umask; set it exactly.
        out.set_permissions(fs::Permissions::from_mode(perm))
            .map_err(io_err("chmod", &path))?;
    }
    Ok(())
}

/// Point `..data_tmp` at the new timestamp dir and rename it over `..data`.
fn swap_data_link(target: &Path, ts_name: &str) -> Result<(), Error> {
    let tmp = target.join(NEW_DATA_DIR_NAME);
    // A leftover from an interrupted write; the foreign-entry check made sure
    // it is a symlink if it exists.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove stale symlink", &tmp)(e)),
    }
    std::os::unix::fs::symlink(ts_name, &tmp).map_err(io_err("create symlink", &tmp))?;
    let data_dir = target.join(DATA_DIR_NAME);
    if let Err(e) = fs::rename(&tmp, &data_dir) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("rename ..data_tmp over", &data_dir)(e));
    }
    Ok(())
}

fn create_user_visible_links(target: &Path, top_level: &BTreeSet<&str>) -> Result<(), Error> {
    for name in top_level {
        let path = target.join(name);
        match fs::symlink_metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::os::unix::fs::symlink(Path::new(DATA_DIR_NAME).join(name), &path)
                    .map_err(io_err("create symlink", &path))?;
            }
            Err(e) => return Err(io_err("inspect", &path)(e)),
        }
    }
    Ok(())
}

/// Remove top-level names no longer in the payload, but only symlinks that
/// point at `..data/<name>`; anything else is left alone.
fn remove_user_visible_links<'a>(
    target: &Path,
    names: impl Iterator<Item = &'a String>,
) -> Result<(), Error> {
    for name in names {
        let path = target.join(name);
        match fs::read_link(&path) {
            Ok(link) if link == Path::new(DATA_DIR_NAME).join(name) => match fs::remove_file(&path)
            {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove symlink", &path)(e)),
            },
            _ => {}
        }
    }
    Ok(())
}

/// Remove the previous timestamp dir, but only if `..data` pointed at a
/// plain `..`-prefixed directory directly inside `target`.
fn remove_old_timestamp_dir(target: &Path, link: &Path, new_name: &str) -> Result<(), Error> {
    let mut components = link.components();
    let (Some(Component::Normal(name)), None) = (components.next(), components.next()) else {
        return Ok(());
    };
    if !name.as_bytes().starts_with(b"..")
        || name == DATA_DIR_NAME
        || name == NEW_DATA_DIR_NAME
        || name == new_name
    {
        return Ok(());
    }
    let path = target.join(name);
    match fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_dir() => {
            fs::remove_dir_all(&path).map_err(io_err("remove old timestamp directory", &path))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn file(path: &str, mode: u32, contents: &str) -> Payload {
        Payload {
            path: path.to_owned(),
            mode,
            contents: contents.as_bytes().to_vec(),
        }
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn data_link(target: &Path) -> PathBuf {
        fs::read_link(target.join(DATA_DIR_NAME)).unwrap()
    }

    /// Names of the top-level entries, sorted.
    fn listing(target: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(target)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn timestamp_dirs(target: &Path) -> Vec<String> {
        listing(target)
            .into_iter()
            .filter(|n| n.starts_with("..") && n != DATA_DIR_NAME)
            .collect()
    }

    fn is_timestamp_dir_name(name: &str) -> bool {
        let Some(rest) = name.strip_prefix("..") else {
            return false;
        };
        let Some((stamp, suffix)) = rest.split_once('.') else {
            return false;
        };
        let fields: Vec<&str> = stamp.split('_').collect();
        let widths = [4, 2, 2, 2, 2, 2];
        fields.len() == widths.len()
            && fields
                .iter()
                .zip(widths)
                .all(|(f, w)| f.len() == w && f.bytes().all(|b| b.is_ascii_digit()))
            && !suffix.is_empty()
            && suffix.bytes().all(|b| b.is_ascii_digit())
            && suffix.parse::<u32>().is_ok()
    }

    fn assert_invalid(path: &str) {
        match validate_path(path) {
            Err(Error::InvalidPath { path: p, .. }) => assert_eq!(p, path),
            other => panic!("{path:?}: expected InvalidPath, got {other:?}"),
        }
    }

    #[test]
    fn validate_path_table() {
        let long_element = "a".repeat(255);
        let too_long_element = "a".repeat(256);
        // 17 elements of 240 bytes and 16 separators: exactly 4096 bytes.
        let path_4096 = vec!["a".repeat(240); 17].join("/");
        assert_eq!(path_4096.len(), 4096);
        let path_4097 = format!("{path_4096}c");
        let cases: Vec<(&str, bool)> = vec![
            ("foo", true),
            ("foo.txt", true),
            ("dir/file", true),
            ("a/b/c/d", true),
            (".hidden", true),
            ("..", false),
            ("a/..data", true),
            ("a..b", true),
            ("..a", false),
            ("..data", false),
            ("..data_tmp", false),
            ("..foo/x", false),
            ("...", false),
            ("", false),
            ("/abs", false),
            ("/", false),
            ("../x", false),
            ("a/../b", false),
            ("a/..", false),
            ("./a", false),
            ("a/", false),
            ("a//b", false),
            ("a/./b", false),
            ("a/.", false),
            (".", false),
            ("a\0b", false),
            (&long_element, true),
            (&too_long_element, false),
            (&path_4096, true),
            (&path_4097, false),
        ];
        for (path, ok) in cases {
            let result = validate_path(path);
            assert_eq!(result.is_ok(), ok, "{path:?}: {result:?}");
            if !ok {
                assert_invalid(path);
            }
        }
    }

    #[test]
    fn rejects_parent_element() {
        assert_invalid("..");
        assert_invalid("../etc/passwd");
        assert_invalid("a/../../b");
        let err = validate_path("a/../b").unwrap_err().to_string();
        assert!(err.contains("a/../b") && err.contains(".."), "{err}");
    }

    #[test]
    fn rejects_reserved_prefix() {
        assert_invalid("..data");
        assert_invalid("..foo/x");
        assert!(validate_path("x/..foo").is_ok());
    }

    #[test]
    fn rejects_unclean_paths() {
        for path in ["./a", "a/", "a//b", "a/./b", "a/../b", "."] {
            assert_invalid(path);
        }
    }

    #[test]
    fn rejects_absolute_and_empty() {
        assert_invalid("");
        assert_invalid("/etc/passwd");
    }

    #[test]
    fn rejects_overlong_path_and_element() {
        assert_invalid(&"a".repeat(4097));
        assert_invalid(&format!("dir/{}", "b".repeat(256)));
        assert!(validate_path(&format!("dir/{}", "b".repeat(255))).is_ok());
    }

    #[test]
    fn invalid_payload_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        let err = write_payload(
            &target,
            &[file("ok", 0o644, "x"), file("../bad", 0o644, "y")],
        )
        .unwrap_err();
        assert!(matches!(err, Error::InvalidPath { ref path, .. } if path == "../bad"));
        assert!(!target.exists());
    }

    #[test]
    fn rejects_duplicate_paths() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_payload(
            dir.path(),
            &[
                file("a", 0o644, "1"),
                file("b", 0o644, "2"),
                file("a", 0o600, "3"),
            ],
        )
        .unwrap_err();
        assert!(matches!(err, Error::DuplicatePath { ref path } if path == "a"));
        assert!(err.to_string().contains("\"a\""));
        assert!(listing(dir.path()).is_empty());
    }

    #[test]
    fn rejects_path_used_as_file_and_directory() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_payload(
            dir.path(),
            &[file("a/b/c", 0o644, "1"), file("a/b", 0o644, "2")],
        )
        .unwrap_err();
        assert!(matches!(err, Error::PathConflict { ref path } if path == "a/b"));
        assert!(listing(dir.path()).is_empty());
    }

    #[test]
    fn writes_nested_file_with_mode() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("new").join("out");
        let files = [
            file("dir/sub/secret", 0o600, "s3cret"),
            file("dir/other", 0o644, "other"),
            file("top", 0o440, "top"),
        ];
        assert!(write_payload(&target, &files).unwrap());

        assert_eq!(mode_of(&target), 0o755);
        let ts = timestamp_dirs(&target);
        assert_eq!(ts.len(), 1);
        assert!(is_timestamp_dir_name(&ts[0]), "{}", ts[0]);
        assert_eq!(
            listing(&target),
            vec![ts[0].clone(), "..data".into(), "dir".into(), "top".into()]
        );

        let ts_path = target.join(&ts[0]);
        assert_eq!(mode_of(&ts_path), 0o755);
        assert_eq!(data_link(&target), PathBuf::from(&ts[0]));
        assert_eq!(
            fs::read_link(target.join("dir")).unwrap(),
            PathBuf::from("..data/dir")
        );
        assert_eq!(
            fs::read_link(target.join("top")).unwrap(),
            PathBuf::from("..data/top")
        );

        assert!(ts_path.join("dir/sub").is_dir());
        assert_eq!(mode_of(&ts_path.join("dir")), 0o755);
        assert_eq!(mode_of(&ts_path.join("dir/sub")), 0o755);
        assert_eq!(mode_of(&ts_path.join("dir/sub/secret")), 0o600);
        assert_eq!(mode_of(&ts_path.join("dir/other")), 0o644);
        assert_eq!(mode_of(&ts_path.join("top")), 0o440);
        assert!(fs::symlink_metadata(ts_path.join("top")).unwrap().is_file());

        assert_eq!(fs::read(target.join("dir/sub/secret")).unwrap(), b"s3cret");
        assert_eq!(fs::read(target.join("dir/other")).unwrap(), b"other");
        assert_eq!(fs::read(target.join("top")).unwrap(), b"top");
    }

    #[test]
    fn mode_is_exact_regardless_of_umask() {
        let dir = tempfile::tempdir().unwrap();
        // 0o777 and 0o666 would lose group/other write bits to a typical umask.
        let files = [
            file("rwx", 0o777, "a"),
            file("rw", 0o666, "b"),
            file("setuid", 0o4755, "c"),
            file("none", 0o000, "d"),
        ];
        assert!(write_payload(dir.path(), &files).unwrap());
        let data = dir.path().join(DATA_DIR_NAME);
        assert_eq!(mode_of(&data.join("rwx")), 0o777);
        assert_eq!(mode_of(&data.join("rw")), 0o666);
        assert_eq!(mode_of(&data.join("setuid")), 0o755);
        assert_eq!(mode_of(&data.join("none")), 0o000);
    }

    #[test]
    fn second_identical_write_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let files = [file("a", 0o644, "one"), file("d/b", 0o600, "two")];
        assert!(write_payload(dir.path(), &files).unwrap());
        let before = data_link(dir.path());
        let listing_before = listing(dir.path());
        assert!(!write_payload(dir.path(), &files).unwrap());
        assert_eq!(data_link(dir.path()), before);
        assert_eq!(listing(dir.path()), listing_before);
    }

    #[test]
    fn empty_payload_is_written_once_then_skipped() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_payload(dir.path(), &[]).unwrap());
        assert_eq!(timestamp_dirs(dir.path()).len(), 1);
        assert!(!write_payload(dir.path(), &[]).unwrap());
    }

    #[test]
    fn changed_content_is_swapped_in_and_old_dir_removed() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_payload(dir.path(), &[file("a", 0o644, "old")]).unwrap());
        let old = data_link(dir.path());
        assert!(write_payload(dir.path(), &[file("a", 0o644, "new")]).unwrap());
        let new = data_link(dir.path());
        assert_ne!(old, new);
        assert!(!dir.path().join(&old).exists());
        assert_eq!(
            timestamp_dirs(dir.path()),
            vec![new.to_str().unwrap().to_owned()]
        );
        assert!(!dir.path().join(NEW_DATA_DIR_NAME).exists());
        assert_eq!(fs::read(dir.path().join("a")).unwrap(), b"new");
    }

    #[test]
    fn removed_name_disappears_on_update() {
        let dir = tempfile::tempdir().unwrap();
        let first = [
            file("keep", 0o644, "k"),
            file("gone", 0o644, "g"),
            file("d/x", 0o644, "x"),
        ];
        assert!(write_payload(dir.path(), &first).unwrap());
        assert!(write_payload(dir.path(), &[file("keep", 0o644, "k")]).unwrap());
        let names = listing(dir.path());
        assert!(names.contains(&"keep".to_owned()));
        assert!(!names.contains(&"gone".to_owned()));
        assert!(!names.contains(&"d".to_owned()));
        assert!(fs::symlink_metadata(dir.path().join("gone")).is_err());
    }

    #[test]
    fn removed_nested_file_is_an_update() {
        let dir = tempfile::tempdir().unwrap();
        let first = [file("d/x", 0o644, "x"), file("d/y", 0o644, "y")];
        assert!(write_payload(dir.path(), &first).unwrap());
        assert!(write_payload(dir.path(), &[file("d/x", 0o644, "x")]).unwrap());
        assert_eq!(fs::read(dir.path().join("d/x")).unwrap(), b"x");
        assert!(!dir.path().join("d/y").exists());
        assert_eq!(
            fs::read_link(dir.path().join("d")).unwrap(),
            PathBuf::from("..data/d")
        );
    }

    #[test]
    fn added_name_gets_a_symlink_on_update() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_payload(dir.path(), &[file("a", 0o644, "a")]).unwrap());
        assert!(
            write_payload(dir.path(), &[file("a", 0o644, "a"), file("b", 0o644, "b")]).unwrap()
        );
        assert_eq!(
            fs::read_link(dir.path().join("b")).unwrap(),
            PathBuf::from("..data/b")
        );
        assert_eq!(fs::read(dir.path().join("b")).unwrap(), b"b");
    }

    #[test]
    fn mode_only_change_is_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_payload(dir.path(), &[file("a", 0o644, "same")]).unwrap());
        let before = data_link(dir.path());
        assert!(!write_payload(dir.path(), &[file("a", 0o600, "same")]).unwrap());
        assert_eq!(data_link(dir.path()), before);
        assert_eq!(mode_of(&dir.path().join(DATA_DIR_NAME).join("a")), 0o644);
    }

    #[test]
    fn refuses_directory_with_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("precious.txt"), "user data").unwrap();
        let err = write_payload(dir.path(), &[file("a", 0o644, "a")]).unwrap_err();
        assert!(
            matches!(err, Error::ForeignEntry { ref entry, .. } if entry.ends_with("precious.txt"))
        );
        assert!(err.to_string().contains("precious.txt"), "{err}");
        assert_eq!(listing(dir.path()), vec!["precious.txt".to_owned()]);
        assert_eq!(
            fs::read(dir.path().join("precious.txt")).unwrap(),
            b"user data"
        );
    }

    #[test]
    fn refuses_foreign_subdirectory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_payload(dir.path(), &[file("a", 0o644, "a")]).unwrap());
        fs::create_dir(dir.path().join("subdir")).unwrap();
        let err = write_payload(dir.path(), &[file("a", 0o644, "b")]).unwrap_err();
        assert!(matches!(err, Error::ForeignEntry { ref entry, .. } if entry.ends_with("subdir")));
        assert_eq!(fs::read(dir.path().join("a")).unwrap(), b"a");
    }

    #[test]
    fn refuses_foreign_symlink_with_payload_name() {
        let dir = tempfile::tempdir().unwrap();
        symlink("/etc/hostname", dir.path().join("a")).unwrap();
        let err = write_payload(dir.path(), &[file("a", 0o644, "a")]).unwrap_err();
        assert!(matches!(err, Error::ForeignEntry { ref entry, .. } if entry.ends_with("a")));
        assert_eq!(listing(dir.path()), vec!["a".to_owned()]);
    }

    #[test]
    fn leaves_unrelated_symlinks_alone() {
        let dir = tempfile::tempdir().unwrap();
        symlink("/nowhere", dir.path().join("mine")).unwrap();
        assert!(
            write_payload(dir.path(), &[file("a", 0o644, "1"), file("b", 0o644, "2")]).unwrap()
        );
        assert!(write_payload(dir.path(), &[file("a", 0o644, "3")]).unwrap());
        assert_eq!(
            fs::read_link(dir.path().join("mine")).unwrap(),
            PathBuf::from("/nowhere")
        );
        assert!(fs::symlink_metadata(dir.path().join("b")).is_err());
    }

    #[test]
    fn stale_name_repointed_by_user_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            write_payload(dir.path(), &[file("a", 0o644, "1"), file("b", 0o644, "2")]).unwrap()
        );
        fs::remove_file(dir.path().join("b")).unwrap();
        symlink("elsewhere", dir.path().join("b")).unwrap();
        assert!(write_payload(dir.path(), &[file("a", 0o644, "1")]).unwrap());
        assert_eq!(
            fs::read_link(dir.path().join("b")).unwrap(),
            PathBuf::from("elsewhere")
        );
    }

    #[test]
    fn refuses_data_dir_that_is_not_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(DATA_DIR_NAME)).unwrap();
        let err = write_payload(dir.path(), &[file("a", 0o644, "a")]).unwrap_err();
        assert!(matches!(err, Error::ForeignEntry { ref entry, .. } if entry.ends_with("..data")));
    }

    #[test]
    fn ignores_other_dot_dot_entries_and_stale_data_tmp() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("..2000_01_01_00_00_00.1")).unwrap();
        symlink(
            "..2000_01_01_00_00_00.1",
            dir.path().join(NEW_DATA_DIR_NAME),
        )
        .unwrap();
        assert!(write_payload(dir.path(), &[file("a", 0o644, "a")]).unwrap());
        assert!(!dir.path().join(NEW_DATA_DIR_NAME).exists());
        assert!(dir.path().join("..2000_01_01_00_00_00.1").is_dir());
        assert_eq!(fs::read(dir.path().join("a")).unwrap(), b"a");
    }

    #[test]
    fn dangling_data_link_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_payload(dir.path(), &[file("a", 0o644, "a")]).unwrap());
        let old = data_link(dir.path());
        fs::remove_dir_all(dir.path().join(&old)).unwrap();
        assert!(write_payload(dir.path(), &[file("a", 0o644, "a")]).unwrap());
        assert_eq!(fs::read(dir.path().join("a")).unwrap(), b"a");
    }

    #[test]
    fn file_changed_on_disk_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_payload(dir.path(), &[file("a", 0o644, "a")]).unwrap());
        let ts = dir.path().join(data_link(dir.path()));
        fs::write(ts.join("a"), "tampered").unwrap();
        assert!(write_payload(dir.path(), &[file("a", 0o644, "a")]).unwrap());
        assert_eq!(fs::read(dir.path().join("a")).unwrap(), b"a");
    }

    #[test]
    fn refuses_target_that_is_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("file");
        fs::write(&target, "x").unwrap();
        let err = write_payload(&target, &[file("a", 0o644, "a")]).unwrap_err();
        assert!(matches!(err, Error::TargetNotDirectory { .. }));
    }

    #[test]
    fn timestamp_prefix_is_go_layout_in_utc() {
        let t = time::macros::datetime!(2024-03-05 07:08:09 +02:00);
        assert_eq!(timestamp_prefix(t), "..2024_03_05_05_08_09.");
    }

    #[test]
    fn errors_and_debug_never_show_contents() {
        let p = file("a", 0o600, "TOPSECRET");
        assert!(!format!("{p:?}").contains("TOPSECRET"));
        let dir = tempfile::tempdir().unwrap();
        let err = write_payload(dir.path(), &[p.clone(), p]).unwrap_err();
        assert!(!err.to_string().contains("TOPSECRET"));
        assert!(!format!("{err:?}").contains("TOPSECRET"));
    }
}
