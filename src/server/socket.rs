//! Provider sockets: `<dir>/<name>.sock`, 0600 from the moment it exists.

use std::io;
use std::os::unix::fs::FileTypeExt;
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

/// Binds `path` as a listening Unix socket with mode 0600. A stale socket is
/// replaced; any other file at the path is an error.
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener, Error> {
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
            std::fs::remove_file(path).map_err(io_err("remove stale socket"))?
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
    let std_listener: std::os::unix::net::UnixListener = socket.into();
    tokio::net::UnixListener::from_std(std_listener).map_err(io_err("register"))
}

/// Removes a socket we created, if it is still a socket.
pub fn remove(path: &Path) {
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.file_type().is_socket()
        && let Err(e) = std::fs::remove_file(path)
    {
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
        let first = bind(&path).unwrap();
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
        let second = bind(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (connected, accepted) =
            tokio::join!(tokio::net::UnixStream::connect(&path), second.accept());
        assert!(connected.is_ok() && accepted.is_ok());
        remove(&path);
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
        remove(&path);
        assert!(path.exists());
    }
}
