//! Provider sockets: `<dir>/<name>.sock`, 0600 from the moment it exists.
//!
//! A node has one provider per socket path. A socket file that something
//! answers on is never replaced (a second `coffer serve` pointed at the same
//! directory fails instead of taking the node's provider over), and on exit
//! a process removes the socket only while it is still the file it bound.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, fchmod};
use socket2::{Domain, SockAddr, Socket, Type};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "invalid provider name {0:?}: it must match ^[a-zA-Z0-9_-]{{1,30}}$ (the driver's rule)"
    )]
    InvalidName(String),
    #[error(
        "{path} exists and is not a socket; refusing to delete it (remove it or choose another --socket-dir)"
    )]
    NotASocket { path: PathBuf },
    #[error(
        "{path} is in use: another process answers on it (is another coffer running with this --socket-dir?)"
    )]
    InUse { path: PathBuf },
    #[error("cannot {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The driver's rule for provider names ([`crate::spc::is_provider_name`]).
pub fn validate_name(name: &str) -> Result<(), Error> {
    if crate::spc::is_provider_name(name) {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_owned()))
    }
}

pub fn socket_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.sock"))
}

/// Which file a process bound: the socket's device and inode. It holds a
/// duplicate of the listening socket, so the inode stays in use (and its
/// number cannot be given to a successor's socket) until the identity is
/// dropped, after [`remove`].
#[derive(Debug, Clone)]
pub struct Identity {
    dev: u64,
    ino: u64,
    _pin: std::sync::Arc<Socket>,
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    meta.file_type()
        .is_socket()
        .then(|| (meta.dev(), meta.ino()))
}

/// Binds `path` as a listening Unix socket with mode 0600. A stale socket
/// (nothing accepts on it) is replaced; a live one, or any other file at the
/// path, is an error.
pub fn bind(path: &Path) -> Result<(tokio::net::UnixListener, Identity), Error> {
    let io_err = |op: &'static str| {
        move |source| Error::Io {
            op,
            path: path.to_owned(),
            source,
        }
    };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            op: "create directory",
            path: dir.to_owned(),
            source,
        })?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(Error::InUse {
                        path: path.to_owned(),
                    });
                }
                // Nobody listens: a socket left by a process that died.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path).map_err(io_err("remove stale socket"))?
                }
                Err(e) => return Err(io_err("probe existing socket")(e)),
            }
        }
        Ok(_) => {
            return Err(Error::NotASocket {
                path: path.to_owned(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("inspect")(e)),
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)
        .map_err(io_err("create socket for"))?;
    // Before bind: the file is created with these bits, so there is no
    // moment at which another user could connect.
    fchmod(&socket, Mode::from_bits_truncate(0o600))
        .map_err(|e| io_err("chmod socket for")(io::Error::from(e)))?;
    let addr = SockAddr::unix(path).map_err(io_err("build address"))?;
    socket.bind(&addr).map_err(io_err("bind"))?;
    socket.listen(1024).map_err(io_err("listen on"))?;
    socket.set_nonblocking(true).map_err(io_err("configure"))?;
    let (dev, ino) = file_id(path).ok_or_else(|| {
        io_err("inspect bound socket")(io::Error::new(
            io::ErrorKind::NotFound,
            "the socket file vanished after bind",
        ))
    })?;
    let pin = socket.try_clone().map_err(io_err("keep"))?;
    let bound = Identity {
        dev,
        ino,
        _pin: std::sync::Arc::new(pin),
    };
    let std_listener: std::os::unix::net::UnixListener = socket.into();
    let listener = tokio::net::UnixListener::from_std(std_listener).map_err(io_err("register"))?;
    Ok((listener, bound))
}

/// Removes the socket this process bound, if the file at `path` is still
/// that socket (not one another process has bound since).
pub fn remove(path: &Path, bound: &Identity) {
    if file_id(path) != Some((bound.dev, bound.ino)) {
        tracing::info!(socket = %path.display(), "socket was replaced by another process; leaving it");
        return;
    }
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(socket = %path.display(), error = %e, "cannot remove socket");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn provider_names_follow_the_driver() {
        for ok in ["coffer", "vault", "a", "A_b-9", &"x".repeat(30)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a.b", "a/b", "../x", "é", &"x".repeat(31)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn socket_is_0600_and_a_stale_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path(), "coffer");
        let (first, _) = bind(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        drop(first); // leaves a stale socket file behind
        assert!(
            std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_socket()
        );
        let (second, id) = bind(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (connected, accepted) =
            tokio::join!(tokio::net::UnixStream::connect(&path), second.accept());
        assert!(connected.is_ok() && accepted.is_ok());
        remove(&path, &id);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_live_socket_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path(), "coffer");
        let (live, id) = bind(&path).unwrap();
        let err = bind(&path).unwrap_err();
        assert!(matches!(err, Error::InUse { .. }), "{err}");
        // The first listener still serves.
        let (connected, accepted) =
            tokio::join!(tokio::net::UnixStream::connect(&path), live.accept());
        assert!(connected.is_ok() && accepted.is_ok());
        remove(&path, &id);
    }

    #[tokio::test]
    async fn only_the_socket_this_process_bound_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path(), "coffer");
        let (_old, old_id) = bind(&path).unwrap();
        // Someone deletes the file while this process still serves, and a
        // second process binds the path.
        std::fs::remove_file(&path).unwrap();
        let (_new, new_id) = bind(&path).unwrap();
        assert_ne!((old_id.dev, old_id.ino), (new_id.dev, new_id.ino));
        remove(&path, &old_id);
        assert!(path.exists(), "the successor's socket must stay");
        remove(&path, &new_id);
        assert!(!path.exists());
    }

    #[test]
    fn a_regular_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path(), "coffer");
        std::fs::write(&path, b"keep me").unwrap();
        let err = bind(&path).unwrap_err();
        assert!(matches!(err, Error::NotASocket { .. }), "{err}");
        assert!(err.to_string().contains("refusing"));
        assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
    }
}
