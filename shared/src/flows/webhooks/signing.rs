//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256 of
//! "{id}.{timestamp}.{body}">`, keyed by the base64 part of a `whsec_`
//! secret; several signatures are separated by spaces (key rotation).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";
/// Random bytes in a new secret (Svix and the specification use 24 to 64).
const SECRET_BYTES: usize = 32;

/// A new `whsec_` secret from the OS's random source.
pub fn new_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    // Two v4 UUIDs are 244 random bits from getrandom; enough bytes are
    // taken from as many as needed.
    let mut filled = 0;
    while filled < SECRET_BYTES {
        let random = uuid::Uuid::new_v4().into_bytes();
        let take = (SECRET_BYTES - filled).min(random.len());
        bytes[filled..filled + take].copy_from_slice(&random[..take]);
        filled += take;
    }
    format!("{PREFIX}{}", STANDARD.encode(bytes))
}

/// The HMAC key of a secret: the base64 after `whsec_` (raw bytes when it
/// does not decode, as the reference libraries accept).
fn key_of(secret: &str) -> Vec<u8> {
    let raw = secret.strip_prefix(PREFIX).unwrap_or(secret);
    STANDARD
        .decode(raw)
        .unwrap_or_else(|_| raw.as_bytes().to_vec())
}

/// One `v1,…` signature.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key_of(secret)).expect("HMAC takes any key");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header: one signature per live secret.
pub fn signature_header(secrets: &[&str], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|secret| sign(secret, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `header` holds a valid signature by `secret` (constant-time
/// compare): what a receiver does; used by the fakes and tests.
pub fn verify(secret: &str, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let expected = sign(secret, id, timestamp, body);
    header.split(' ').any(|candidate| {
        candidate.len() == expected.len()
            && subtle::ConstantTimeEq::ct_eq(candidate.as_bytes(), expected.as_bytes()).into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specifications_test_vector_signs_exactly() {
        // The Standard Webhooks specification's published vector.
        assert_eq!(
            sign(
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#,
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn during_rotation_both_secrets_sign_and_either_verifies() {
        let (old, new) = (new_secret(), new_secret());
        assert_ne!(old, new);
        assert!(new.starts_with("whsec_"));
        let header = signature_header(&[&new, &old], "msg_1", 10, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        assert!(verify(&new, "msg_1", 10, b"{}", &header));
        assert!(verify(&old, "msg_1", 10, b"{}", &header));
        assert!(!verify(&new_secret(), "msg_1", 10, b"{}", &header));
        assert!(!verify(&new, "msg_1", 11, b"{}", &header));
    }
}
