//! IRSA: STS `AssumeRoleWithWebIdentity` with the pod's token (audience
//! `sts.amazonaws.com`) for the role the class or the ServiceAccount names.

use aws_config::Region;
use aws_credential_types::Credentials;

use crate::backend::ErrorKind;
use crate::backend::aws::Inner;
use crate::backend::aws::error::{Error, classify};
use crate::backend::support::timed;
use crate::secret::Token;

const HOW: &str = "STS AssumeRoleWithWebIdentity";

impl Inner {
    pub(in crate::backend::aws) async fn assume_role(
        &self,
        role: &str,
        token: &Token,
        session: String,
        region: &str,
    ) -> Result<Credentials, Error> {
        let mut b = aws_sdk_sts::config::Builder::from(self.base().await)
            .region(Region::new(region.to_owned()));
        if let Some(url) = self.endpoint("AWS_ENDPOINT_URL_STS", region) {
            b = b.endpoint_url(url);
        }
        let sts = aws_sdk_sts::Client::from_conf(b.build());
        let call = sts
            .assume_role_with_web_identity()
            .role_arn(role)
            .role_session_name(session)
            .web_identity_token(token.expose())
            .send();
        let at = || format!("role {role}, region {region}");
        let out = timed(
            &self.metrics,
            "aws",
            "sts.AssumeRoleWithWebIdentity",
            call,
            |e| classify(e).outcome,
        )
        .await
        .map_err(|e| {
            let f = classify(&e);
            let kind = match f.code.as_str() {
                "InvalidIdentityToken" | "ExpiredTokenException" => ErrorKind::Unauthenticated,
                "AccessDenied" | "AccessDeniedException" => ErrorKind::PermissionDenied,
                "IDPCommunicationError" | "IDPRejectedClaim" => ErrorKind::Unavailable,
                _ => f.kind,
            };
            Error::Credentials {
                how: HOW,
                at: at(),
                reason: format!("{}: {}", f.code, f.message),
                kind,
            }
        })?;
        let c = out.credentials.ok_or_else(|| Error::Credentials {
            how: HOW,
            at: at(),
            reason: "the answer has no credentials".into(),
            kind: ErrorKind::Internal,
        })?;
        let expiry = std::time::SystemTime::try_from(c.expiration).ok();
        Ok(Credentials::new(
            c.access_key_id,
            c.secret_access_key,
            Some(c.session_token),
            expiry,
            "coffer-irsa",
        ))
    }
}

/// The STS session name: `coffer.<namespace>.<pod>`, in STS's alphabet, ≤ 64 characters.
pub fn session_name(namespace: &str, pod: &str) -> String {
    let raw = format!("coffer.{namespace}.{pod}");
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+=,.@-_".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_fit_sts() {
        assert_eq!(session_name("shop", "web-0"), "coffer.shop.web-0");
        let long = session_name("n", &"x".repeat(100));
        assert_eq!(long.len(), 64);
        assert_eq!(session_name("a b", "c/d"), "coffer.a-b.c-d");
    }
}
