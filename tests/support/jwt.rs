//! RS256 JWTs shaped like Kubernetes projected ServiceAccount tokens, signed
//! with the test-only key pair in `tests/fixtures/` (see its README).
//!
//! jsonwebtoken is built without its `use_pem` feature, so the PEM fixtures
//! are unwrapped here: PKCS#8 `PrivateKeyInfo` / SPKI → PKCS#1 DER, which is
//! what `EncodingKey::from_rsa_der` / `DecodingKey::from_rsa_der` expect.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// `iss` of tokens minted by a default-configured cluster.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// `kid` put in the JWT header (the API server sets one; OpenBao ignores it
/// when validating with `jwt_validation_pubkeys`).
pub const KEY_ID: &str = "coffer-test-sa-signing-key";

/// PKCS#8 private key (test-only).
pub const PRIVATE_KEY_PEM: &str = include_str!("../fixtures/sa-signing-key.pem");
/// SPKI public key (test-only); give this to OpenBao's `jwt_validation_pubkeys`.
pub const PUBLIC_KEY_PEM: &str = include_str!("../fixtures/sa-signing-key.pub.pem");

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970")
        .as_secs() as i64
}

/// A stable fake UUID for a name (same input → same UID across runs).
pub fn fake_uid(kind: &str, name: &str) -> String {
    let h = Sha256::digest(format!("{kind}/{name}").as_bytes());
    let x: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

/// `system:serviceaccount:NS:SA`
pub fn subject(ns: &str, sa: &str) -> String {
    format!("system:serviceaccount:{ns}:{sa}")
}

/// The claims of a projected ServiceAccount token valid from `iat` for
/// `ttl_secs` seconds.
pub fn sa_claims(
    ns: &str,
    sa: &str,
    pod: &str,
    pod_uid: &str,
    audience: &str,
    iat: i64,
    ttl_secs: i64,
) -> Value {
    json!({
        "aud": [audience],
        "exp": iat + ttl_secs,
        "iat": iat,
        "iss": ISSUER,
        "jti": fake_uid("jti", &format!("{ns}/{sa}/{pod}/{iat}/{audience}")),
        "kubernetes.io": {
            "namespace": ns,
            "pod": { "name": pod, "uid": pod_uid },
            "serviceaccount": { "name": sa, "uid": fake_uid("serviceaccount", &format!("{ns}/{sa}")) },
        },
        "nbf": iat,
        "sub": subject(ns, sa),
    })
}

/// Signs arbitrary claims with the test key (RS256, `kid` = [`KEY_ID`]).
/// Use it for hand-made or malformed claim sets.
pub fn sign_claims(claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(KEY_ID.to_string());
    jsonwebtoken::encode(&header, claims, &encoding_key()).expect("sign test JWT")
}

/// A currently valid token for `system:serviceaccount:NS:SA` bound to the pod.
pub fn sa_token(
    ns: &str,
    sa: &str,
    pod: &str,
    pod_uid: &str,
    audience: &str,
    ttl_secs: i64,
) -> String {
    sign_claims(&sa_claims(ns, sa, pod, pod_uid, audience, now(), ttl_secs))
}

/// A token that expired 10 minutes ago (issued 70 minutes ago, 1 h TTL);
/// beyond any clock-skew leeway a validator applies.
pub fn expired_sa_token(ns: &str, sa: &str, pod: &str, pod_uid: &str, audience: &str) -> String {
    sign_claims(&sa_claims(
        ns,
        sa,
        pod,
        pod_uid,
        audience,
        now() - 4200,
        3600,
    ))
}

/// The value kubelet puts in the `csi.storage.k8s.io/serviceAccount.tokens`
/// attribute: `{"<aud>":{"token":"<JWT>","expirationTimestamp":"<RFC3339>"}}`
/// (a JSON document serialized to a string). `exp` is taken from each token.
pub fn tokens_attribute(entries: &[(&str, &str)]) -> String {
    let mut map = serde_json::Map::new();
    for (aud, token) in entries {
        let exp = unverified_claims(token)["exp"].as_i64().unwrap_or_else(now);
        map.insert(
            (*aud).to_string(),
            json!({ "token": token, "expirationTimestamp": rfc3339(exp) }),
        );
    }
    Value::Object(map).to_string()
}

/// The payload of a JWT without checking its signature.
pub fn unverified_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("JWT has 3 parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .expect("JWT payload is base64url");
    serde_json::from_slice(&bytes).expect("JWT payload is JSON")
}

/// UTC `YYYY-MM-DDTHH:MM:SSZ` for a Unix time.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .expect("timestamp in range")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format RFC 3339")
}

pub fn encoding_key() -> EncodingKey {
    let der = pem_to_der(PRIVATE_KEY_PEM, "PRIVATE KEY");
    EncodingKey::from_rsa_der(&pkcs8_to_pkcs1(&der))
}

pub fn decoding_key() -> DecodingKey {
    let der = pem_to_der(PUBLIC_KEY_PEM, "PUBLIC KEY");
    DecodingKey::from_rsa_der(&spki_to_pkcs1(&der))
}

fn pem_to_der(pem: &str, label: &str) -> Vec<u8> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem
        .find(&begin)
        .unwrap_or_else(|| panic!("PEM has no {begin}"))
        + begin.len();
    let stop = pem[start..]
        .find(&end)
        .unwrap_or_else(|| panic!("PEM has no {end}"))
        + start;
    let b64: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("PEM body is base64")
}

/// One DER TLV: (tag, contents, rest). Supports definite lengths only.
fn der_tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
    assert!(input.len() >= 2, "truncated DER");
    let tag = input[0];
    let (len, hdr) = match input[1] {
        n if n < 0x80 => (n as usize, 2),
        n => {
            let k = (n & 0x7f) as usize;
            assert!(
                (1..=4).contains(&k) && input.len() >= 2 + k,
                "bad DER length"
            );
            let len = input[2..2 + k]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | *b as usize);
            (len, 2 + k)
        }
    };
    assert!(input.len() >= hdr + len, "truncated DER value");
    (tag, &input[hdr..hdr + len], &input[hdr + len..])
}

/// PrivateKeyInfo ::= SEQUENCE { version INTEGER, algorithm SEQUENCE,
/// privateKey OCTET STRING (= PKCS#1 RSAPrivateKey) , ... }
fn pkcs8_to_pkcs1(der: &[u8]) -> Vec<u8> {
    let (tag, seq, _) = der_tlv(der);
    assert_eq!(tag, 0x30, "PKCS#8: not a SEQUENCE");
    let (tag, _version, rest) = der_tlv(seq);
    assert_eq!(tag, 0x02, "PKCS#8: no version");
    let (tag, _alg, rest) = der_tlv(rest);
    assert_eq!(tag, 0x30, "PKCS#8: no algorithm");
    let (tag, key, _) = der_tlv(rest);
    assert_eq!(tag, 0x04, "PKCS#8: no privateKey OCTET STRING");
    key.to_vec()
}

/// SubjectPublicKeyInfo ::= SEQUENCE { algorithm SEQUENCE,
/// subjectPublicKey BIT STRING (= PKCS#1 RSAPublicKey) }
fn spki_to_pkcs1(der: &[u8]) -> Vec<u8> {
    let (tag, seq, _) = der_tlv(der);
    assert_eq!(tag, 0x30, "SPKI: not a SEQUENCE");
    let (tag, _alg, rest) = der_tlv(seq);
    assert_eq!(tag, 0x30, "SPKI: no algorithm");
    let (tag, bits, _) = der_tlv(rest);
    assert_eq!(tag, 0x03, "SPKI: no BIT STRING");
    assert_eq!(bits.first(), Some(&0), "SPKI: unused bits");
    bits[1..].to_vec()
}
