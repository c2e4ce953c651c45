//! TLS to Vault: CA file or directory, server name override, client
//! certificate, skip-verify. The defaults (no setting) use the platform's
//! trust store through reqwest; any setting builds a rustls configuration.

use std::path::Path;
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
    /// True when reqwest's defaults (platform trust store) apply.
    pub fn is_default(&self) -> bool {
        *self == Tls::default()
    }
}

/// Builds the rustls configuration. Errors are for the user: they name the file.
pub fn client_config(tls: &Tls) -> Result<rustls::ClientConfig, String> {
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
                add_pem_file(&mut roots, Path::new(file))?;
            } else if let Some(dir) = &tls.ca_dir {
                let entries = std::fs::read_dir(dir)
                    .map_err(|e| format!("cannot read CA directory {dir}: {e}"))?;
                let mut paths: Vec<_> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file())
                    .collect();
                paths.sort();
                for path in paths {
                    add_pem_file(&mut roots, &path)?;
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
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| format!("cannot read client certificate {cert}: {e}"))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("client certificate {cert} is not PEM: {e}"))?;
            if certs.is_empty() {
                return Err(format!("client certificate {cert} holds no certificate"));
            }
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("cannot read client key {key}: {e}"))?;
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

fn add_pem_file(roots: &mut rustls::RootCertStore, path: &Path) -> Result<(), String> {
    let mut found = 0;
    for cert in CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read CA certificate {}: {e}", path.display()))?
    {
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
        let err = client_config(&Tls {
            ca_cert: Some(missing.display().to_string()),
            ..Tls::default()
        })
        .unwrap_err();
        assert!(err.contains("missing.pem"), "{err}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem").unwrap();
        let err = client_config(&Tls {
            ca_dir: Some(dir.path().display().to_string()),
            ..Tls::default()
        })
        .unwrap_err();
        assert!(err.contains("junk.pem"), "{err}");
        let err = client_config(&Tls {
            client_cert: Some("c".into()),
            ..Tls::default()
        })
        .unwrap_err();
        assert!(err.contains("together"), "{err}");
        assert!(
            client_config(&Tls {
                skip_verify: true,
                ..Tls::default()
            })
            .is_ok()
        );
        let err = client_config(&Tls {
            server_name: Some("bad name!".into()),
            skip_verify: false,
            ca_cert: None,
            ..Tls::default()
        });
        assert!(err.is_err());
    }
}
