//! The driver ⇄ provider contract (`v1alpha1`, Secrets Store CSI driver v1.6.0),
//! generated from `proto/v1alpha1/service.proto`.
//!
//! `MountRequest` and `File` carry tokens and secret contents, so their
//! `Debug` is written here and shows sizes, never values.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("v1alpha1");

impl std::fmt::Debug for MountRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountRequest")
            .field(
                "attributes",
                &format_args!("<{} bytes redacted>", self.attributes.len()),
            )
            .field(
                "secrets",
                &format_args!("<{} bytes redacted>", self.secrets.len()),
            )
            .field("target_path", &self.target_path)
            .field("permission", &self.permission)
            .field("current_object_version", &self.current_object_version)
            .finish()
    }
}

impl std::fmt::Debug for File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("File")
            .field("path", &self.path)
            .field("mode", &format_args!("{:#o}", self.mode))
            .field(
                "contents",
                &format_args!("<{} bytes redacted>", self.contents.len()),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_mount_request_and_file_hides_values() {
        let req = MountRequest {
            attributes: r#"{"csi.storage.k8s.io/serviceAccount.tokens":"eyJhbGciOi"}"#.into(),
            secrets: r#"{"password":"hunter2"}"#.into(),
            target_path: "/t".into(),
            permission: "420".into(),
            current_object_version: vec![],
        };
        let text = format!("{req:?}");
        assert!(!text.contains("eyJhbGciOi"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        let file = File {
            path: "a".into(),
            mode: 0o600,
            contents: b"hunter2".to_vec(),
        };
        let text = format!("{file:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("0o600"), "{text}");
    }
}
