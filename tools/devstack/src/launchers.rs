//! Signing like Slack, Discord and Teams do, for the chat launchers' tests,
//! sample events, bench and `make dev` walk-through, with the dev stack's
//! public secrets (like the dev tokens: never a deployment's).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// `SLACK_SIGNING_SECRET` of the dev stack.
pub const DEV_SLACK_SIGNING_SECRET: &str = "dev-slack-signing-secret-change-me";
/// The dev stack's Discord application key pair: this private key (fixed
/// bytes, public on purpose) and [`dev_discord_public_key`] as
/// `DISCORD_PUBLIC_KEY`.
pub const DEV_DISCORD_PRIVATE_KEY: [u8; 32] = *b"callops-dev-discord-key-change!!";
/// `TEAMS_WEBHOOK_SECRET` of the dev stack: base64, as Teams shows its
/// security tokens.
pub const DEV_TEAMS_WEBHOOK_SECRET: &str = "Y2FsbG9wcy1kZXYtdGVhbXMtd2ViaG9vay1rZXkhIQ==";

/// `X-Slack-Signature` of `body` sent at `timestamp`.
pub fn slack_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// `X-Signature-Ed25519` of `body` sent at `timestamp`, signed with `private_key`.
pub fn discord_signature(private_key: &[u8; 32], timestamp: &str, body: &[u8]) -> String {
    let mut message = timestamp.as_bytes().to_vec();
    message.extend_from_slice(body);
    hex::encode(
        SigningKey::from_bytes(private_key)
            .sign(&message)
            .to_bytes(),
    )
}

/// The hex public key of `private_key`, as the Developer Portal shows it.
pub fn discord_public_key(private_key: &[u8; 32]) -> String {
    hex::encode(
        SigningKey::from_bytes(private_key)
            .verifying_key()
            .to_bytes(),
    )
}

/// `DISCORD_PUBLIC_KEY` of the dev stack.
pub fn dev_discord_public_key() -> String {
    discord_public_key(&DEV_DISCORD_PRIVATE_KEY)
}

/// Teams' `Authorization` header for `body`: `HMAC ` and the base64
/// HMAC-SHA256 keyed with the base64-decoded security token.
pub fn teams_authorization(secret_base64: &str, body: &[u8]) -> String {
    let key = STANDARD
        .decode(secret_base64)
        .expect("Teams security tokens are base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(body);
    format!("HMAC {}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slacks_published_example() {
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        assert_eq!(
            slack_signature(
                "8f742231b10e8888abcd99yyyzzz85a5",
                "1531420618",
                body.as_bytes()
            ),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
    }

    #[test]
    fn dev_secrets_are_well_formed() {
        assert_eq!(dev_discord_public_key().len(), 64);
        assert!(STANDARD.decode(DEV_TEAMS_WEBHOOK_SECRET).is_ok());
        assert!(teams_authorization(DEV_TEAMS_WEBHOOK_SECRET, b"{}").starts_with("HMAC "));
    }
}
