//! Types that hold secret material. None of them can be printed: `Debug`
//! shows a placeholder and there is no `Display`. Memory is zeroed on drop.

use std::fmt;

use secrecy::{ExposeSecret, SecretBox, SecretString};

/// Secret bytes: file contents, backend responses.
pub struct SecretBytes(SecretBox<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(SecretBox::new(Box::new(bytes)))
    }

    /// The bytes, for the one place that must hand them on (the response).
    pub fn expose(&self) -> &[u8] {
        self.0.expose_secret()
    }

    pub fn len(&self) -> usize {
        self.expose().len()
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }

    /// Moves the bytes out (into a protobuf `File`); zeroing is then the
    /// response's owner's concern.
    pub fn into_vec(self) -> Vec<u8> {
        let mut inner = self.0;
        std::mem::take(secrecy::ExposeSecretMut::expose_secret_mut(&mut inner))
    }
}

impl Clone for SecretBytes {
    fn clone(&self) -> Self {
        Self::new(self.expose().to_vec())
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.len())
    }
}

/// A bearer credential: a pod's ServiceAccount token, a Vault token.
#[derive(Clone)]
pub struct Token {
    value: SecretString,
    /// Its SHA-256, computed on first use: a republish's parsed request
    /// (shared, see `request::Memo`) hashes its token once.
    digest: std::sync::OnceLock<[u8; 32]>,
}

impl Token {
    pub fn new(value: String) -> Self {
        Self {
            value: SecretString::from(value),
            digest: std::sync::OnceLock::new(),
        }
    }

    pub fn expose(&self) -> &str {
        self.value.expose_secret()
    }
}

impl Token {
    /// SHA-256 of the token: lets a cache tell "the same token the backend
    /// accepted" from any other without keeping the token as a key.
    pub fn digest(&self) -> [u8; 32] {
        use sha2::Digest;
        *self
            .digest
            .get_or_init(|| sha2::Sha256::digest(self.expose().as_bytes()).into())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let token = Token::new("eyJhbGciOiJSUzI1NiJ9.payload.sig".into());
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
        let bytes = SecretBytes::new(b"hunter2".to_vec());
        let shown = format!("{bytes:?}");
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("7 bytes"));
    }

    #[test]
    fn into_vec_hands_over_the_bytes() {
        let bytes = SecretBytes::new(b"abc".to_vec());
        assert_eq!(bytes.clone().into_vec(), b"abc");
        assert_eq!(bytes.expose(), b"abc");
    }
}
