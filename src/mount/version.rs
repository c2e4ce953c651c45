//! Object versions: HMAC-SHA256 over the object's definition and its
//! content. Stable while neither changes, and revealing nothing about the
//! content (a plain hash would let anyone who can read the
//! SecretProviderClassPodStatus test guesses of low-entropy secrets).

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Holds the HMAC key.
pub struct Versioner {
    key: Zeroizing<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the HMAC key file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the HMAC key file {path} holds {len} bytes; it needs at least 16")]
    TooShort { path: String, len: usize },
    #[error("no randomness for the HMAC key: {0}")]
    Random(getrandom::Error),
}

impl std::fmt::Debug for Versioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Versioner(<key redacted>)")
    }
}

impl Versioner {
    pub fn from_key(key: Vec<u8>) -> Self {
        Self {
            key: Zeroizing::new(key),
        }
    }

    /// Reads the key from a file (surrounding whitespace ignored). Every
    /// coffer pod of a cluster should share it so versions agree across nodes.
    pub fn from_file(path: &std::path::Path) -> Result<Self, Error> {
        let raw = Zeroizing::new(std::fs::read(path).map_err(|source| Error::Read {
            path: path.display().to_string(),
            source,
        })?);
        let trimmed = raw.trim_ascii();
        if trimmed.len() < 16 {
            return Err(Error::TooShort {
                path: path.display().to_string(),
                len: trimmed.len(),
            });
        }
        Ok(Self::from_key(trimmed.to_vec()))
    }

    /// A random key for this process: versions then change when coffer restarts.
    pub fn random() -> Result<Self, Error> {
        let mut key = vec![0u8; 32];
        getrandom::fill(&mut key).map_err(Error::Random)?;
        Ok(Self::from_key(key))
    }

    /// The version of one object: base64url(HMAC(key, len(config) ‖ config ‖ content)).
    pub fn version(&self, config: &str, content: &[u8]) -> String {
        #[allow(clippy::expect_used)]
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(&(config.len() as u64).to_be_bytes());
        mac.update(config.as_bytes());
        mac.update(content);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_stable_and_depends_on_key_config_and_content() {
        let v = Versioner::from_key(b"0123456789abcdef".to_vec());
        let a = v.version("vault|secret/data/db|password", b"hunter2");
        assert_eq!(a, v.version("vault|secret/data/db|password", b"hunter2"));
        assert_ne!(a, v.version("vault|secret/data/db|password", b"hunter3"));
        assert_ne!(a, v.version("vault|secret/data/db|user", b"hunter2"));
        let other = Versioner::from_key(b"fedcba9876543210".to_vec());
        assert_ne!(
            a,
            other.version("vault|secret/data/db|password", b"hunter2")
        );
        assert!(!a.contains("hunter2"));
        assert_eq!(a.len(), 43);
    }

    #[test]
    fn config_and_content_boundary_is_unambiguous() {
        let v = Versioner::from_key(b"0123456789abcdef".to_vec());
        assert_ne!(v.version("ab", b"c"), v.version("a", b"bc"));
    }

    #[test]
    fn short_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "short\n").unwrap();
        assert!(matches!(
            Versioner::from_file(&path),
            Err(Error::TooShort { len: 5, .. })
        ));
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        assert!(Versioner::from_file(&path).is_ok());
    }
}
