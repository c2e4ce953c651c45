//! TLS to Vault: CA file or directory, server name override, client
//! certificate, skip-verify, as a rustls configuration. The defaults (no
//! setting) trust the platform's store (rustls-platform-verifier).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// TLS settings of one connection (flags overlaid by SecretProviderClass).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Tls {
    pub ca_cert: Option<String>,
    pub ca_dir: Option<String>,
    pub server_name: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub skip_verify: bool,
}

impl Tls {
    /// True when no setting is made (the platform's trust store applies).
    pub fn is_default(&self) -> bool {
        *self == Tls::default()
    }
}

/// Which TLS files a SecretProviderClass may make coffer read
/// (`--tls-file-dir`): only regular files, of at most [`MAX_FILE_BYTES`],
/// under one of `dirs` (after resolving symbolic links); empty `dirs`
/// allows any directory. A device (`/dev/urandom`, `/dev/zero`), a FIFO or
/// a directory is refused before a byte is read, and opening never blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilePolicy {
    pub dirs: Vec<PathBuf>,
}

/// Largest CA bundle, certificate or key file read.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Most files read from a CA directory.
pub const MAX_DIR_ENTRIES: usize = 1000;

impl FilePolicy {
    fn allows(&self, canonical: &Path) -> bool {
        self.dirs.is_empty()
            || self
                .dirs
                .iter()
                .any(|dir| std::fs::canonicalize(dir).is_ok_and(|dir| canonical.starts_with(dir)))
    }

    fn refused(&self, what: &str, path: &Path) -> String {
        format!(
            "{what} {} is not under a directory this coffer reads TLS files from (--tls-file-dir: {})",
            path.display(),
            self.dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    /// Reads one TLS file under the policy. Errors name the file, never its content.
    pub fn read(&self, what: &str, path: &Path) -> Result<Vec<u8>, String> {
        use std::os::unix::fs::OpenOptionsExt;
        let cannot = |e: std::io::Error| format!("cannot read {what} {}: {e}", path.display());
        let canonical = std::fs::canonicalize(path).map_err(cannot)?;
        if !self.allows(&canonical) {
            return Err(self.refused(what, path));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits() | nix::fcntl::OFlag::O_NOCTTY.bits())
            .open(&canonical)
            .map_err(cannot)?;
        let meta = file.metadata().map_err(cannot)?;
        if !meta.is_file() {
            return Err(format!("{what} {} is not a regular file", path.display()));
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(format!(
                "{what} {} is {} bytes, above the limit of {MAX_FILE_BYTES}",
                path.display(),
                meta.len()
            ));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(cannot)?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(format!(
                "{what} {} grew above the limit of {MAX_FILE_BYTES} bytes while being read",
                path.display()
            ));
        }
        Ok(bytes)
    }

    /// The regular files of a CA directory, sorted, under the policy.
    fn dir_files(&self, dir: &str) -> Result<Vec<PathBuf>, String> {
        let cannot = |e: std::io::Error| format!("cannot read CA directory {dir}: {e}");
        let canonical = std::fs::canonicalize(dir).map_err(cannot)?;
        if !self.allows(&canonical) {
            return Err(self.refused("CA directory", Path::new(dir)));
        }
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(&canonical).map_err(cannot)? {
            let path = entry.map_err(cannot)?.path();
            if path.is_file() {
                if paths.len() >= MAX_DIR_ENTRIES {
                    return Err(format!(
                        "CA directory {dir} holds more than {MAX_DIR_ENTRIES} files"
                    ));
                }
                paths.push(path);
            }
        }
        paths.sort();
        Ok(paths)
    }
}

/// Builds the rustls configuration. Errors are for the user: they name the
/// file. Reads files: call it where blocking is fine, holding no lock.
pub fn client_config(tls: &Tls, files: &FilePolicy) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;

    let verifier: Arc<dyn ServerCertVerifier> = if tls.skip_verify {
        Arc::new(NoVerification(provider.clone()))
    } else {
        let base: Arc<dyn ServerCertVerifier> = if tls.ca_cert.is_some() || tls.ca_dir.is_some() {
            let mut roots = rustls::RootCertStore::empty();
            // The file takes precedence over the directory, as in the Vault client.
            if let Some(file) = &tls.ca_cert {
                add_pem_file(&mut roots, Path::new(file), files)?;
            } else if let Some(dir) = &tls.ca_dir {
                for path in files.dir_files(dir)? {
                    add_pem_file(&mut roots, &path, files)?;
                }
            }
            if roots.is_empty() {
                return Err("the CA certificate settings name no certificate".into());
            }
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| format!("TLS setup: {e}"))?
        } else {
            Arc::new(
                rustls_platform_verifier::Verifier::new(provider.clone())
                    .map_err(|e| format!("platform trust store: {e}"))?,
            )
        };
        match &tls.server_name {
            Some(name) => {
                let name = ServerName::try_from(name.clone()).map_err(|_| {
                    format!("vaultTLSServerName {name:?} is not a valid DNS name or IP address")
                })?;
                Arc::new(OverrideName { inner: base, name })
            }
            None => base,
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let cert_pem = files.read("client certificate", Path::new(cert))?;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("client certificate {cert} is not PEM: {e}"))?;
            if certs.is_empty() {
                return Err(format!("client certificate {cert} holds no certificate"));
            }
            let key_pem = zeroize::Zeroizing::new(files.read("client key", Path::new(key))?);
            let key = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| format!("client key {key} holds no PEM private key: {e}"))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("client certificate and key do not match: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(
                "vaultTLSClientCertPath and vaultTLSClientKeyPath must be set together".into(),
            );
        }
    };
    Ok(config)
}

fn add_pem_file(
    roots: &mut rustls::RootCertStore,
    path: &Path,
    files: &FilePolicy,
) -> Result<(), String> {
    let pem = files.read("CA certificate", path)?;
    let mut found = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert =
            cert.map_err(|e| format!("CA certificate {} is not PEM: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("CA certificate {}: {e}", path.display()))?;
        found += 1;
    }
    if found == 0 {
        return Err(format!(
            "CA certificate {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(())
}

/// Verifies the server's certificate against a fixed name (vaultTLSServerName).
#[derive(Debug)]
struct OverrideName {
    inner: Arc<dyn ServerCertVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for OverrideName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp, now)
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// vaultSkipTLSVerify: accepts any certificate (signatures still checked).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_settings_are_default() {
        assert!(Tls::default().is_default());
        assert!(
            !Tls {
                skip_verify: true,
                ..Tls::default()
            }
            .is_default()
        );
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = client_config(
            &Tls {
                ca_cert: Some(missing.display().to_string()),
                ..Tls::default()
            },
            &FilePolicy::default(),
        )
        .unwrap_err();
        assert!(err.contains("missing.pem"), "{err}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem").unwrap();
        let err = client_config(
            &Tls {
                ca_dir: Some(dir.path().display().to_string()),
                ..Tls::default()
            },
            &FilePolicy::default(),
        )
        .unwrap_err();
        assert!(err.contains("junk.pem"), "{err}");
        let err = client_config(
            &Tls {
                client_cert: Some("c".into()),
                ..Tls::default()
            },
            &FilePolicy::default(),
        )
        .unwrap_err();
        assert!(err.contains("together"), "{err}");
        assert!(
            client_config(
                &Tls {
                    skip_verify: true,
                    ..Tls::default()
                },
                &FilePolicy::default()
            )
            .is_ok()
        );
        let err = client_config(
            &Tls {
                server_name: Some("bad name!".into()),
                skip_verify: false,
                ca_cert: None,
                ..Tls::default()
            },
            &FilePolicy::default(),
        );
        assert!(err.is_err());
    }

    #[test]
    fn only_regular_files_under_allowed_directories_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let open = FilePolicy::default();
        // Devices and FIFOs: refused before a byte is read, without blocking.
        for device in ["/dev/urandom", "/dev/zero", "/dev/null"] {
            let err = open.read("CA certificate", Path::new(device)).unwrap_err();
            assert!(err.contains("not a regular file"), "{err}");
        }
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = open.read("CA certificate", &fifo).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        assert!(open.read("CA certificate", dir.path()).is_err());
        // Size.
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'a'; MAX_FILE_BYTES as usize + 1]).unwrap();
        assert!(
            open.read("CA certificate", &big)
                .unwrap_err()
                .contains("limit")
        );
        // Directories: a symbolic link out of an allowed directory does not count.
        let allowed = dir.path().join("allowed");
        std::fs::create_dir(&allowed).unwrap();
        std::fs::write(allowed.join("ca.pem"), "x").unwrap();
        let outside = dir.path().join("outside.pem");
        std::fs::write(&outside, "x").unwrap();
        std::os::unix::fs::symlink(&outside, allowed.join("link.pem")).unwrap();
        let policy = FilePolicy {
            dirs: vec![allowed.clone()],
        };
        assert_eq!(
            policy
                .read("CA certificate", &allowed.join("ca.pem"))
                .unwrap(),
            b"x"
        );
        for refused in [
            outside.clone(),
            allowed.join("link.pem"),
            allowed.join("../outside.pem"),
        ] {
            let err = policy.read("CA certificate", &refused).unwrap_err();
            assert!(err.contains("--tls-file-dir"), "{err}");
        }
        let err = client_config(
            &Tls {
                ca_dir: Some(dir.path().display().to_string()),
                ..Tls::default()
            },
            &policy,
        )
        .unwrap_err();
        assert!(err.contains("--tls-file-dir"), "{err}");
    }
}
