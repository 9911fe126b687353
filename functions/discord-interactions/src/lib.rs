//! `POST /discord/interactions`: the Discord app's Interactions Endpoint
//! (seed 002's Discord launcher). Verifies Discord's Ed25519 signature on
//! the raw body, answers `PING` with `PONG`, and for the `/call` command
//! opens session `discord-{channel_id}` in room `discord-{channel_id}` (a
//! new conversation there once the last one ended) and answers the person
//! only (ephemeral) with their join link.
//!
//! Discord shows "The application did not respond" after 3 seconds, so
//! every step after the signature check is bounded, and a failure is a
//! normal answer asking to try again. Bridging the Discord voice channel
//! itself needs a media server a Lambda cannot host: the call happens in
//! the LiveKit room the link opens.

use std::time::Duration;

use ed25519_dalek::{Signature, VerifyingKey};
use http::{HeaderMap, StatusCode};
use lambda_http::Request;
use serde::Deserialize;
use serde_json::{json, Value};
use shared::api::{self, ApiError, Route};
use shared::base::config::{self, ConfigError};
use shared::flows::launchers::{
    fresh, not_connected, Launch, LaunchError, Launcher, TIMESTAMP_TOLERANCE, TRY_AGAIN,
};
use shared::flows::sessions::SessionKind;
use shared::wiring::Wiring;
use tokio::time::Instant;

/// The call must be open by then, counted from the request's arrival
/// (Discord waits 3 s for the answer).
const OPEN_WITHIN: Duration = Duration::from_millis(2500);

/// The application command this route starts calls for.
pub const COMMAND: &str = "call";

const PING: u8 = 1;
const APPLICATION_COMMAND: u8 = 2;
/// `CHANNEL_MESSAGE_WITH_SOURCE` (answers a PING with `PONG` = 1).
const CHANNEL_MESSAGE: u8 = 4;
/// Message flag: only the person who ran the command sees it.
const EPHEMERAL: u32 = 1 << 6;

pub struct DiscordInteractions {
    /// `DISCORD_PUBLIC_KEY`: the application's public key.
    pub public_key: VerifyingKey,
    pub launcher: Launcher,
}

#[derive(Deserialize)]
struct Interaction {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(default)]
    data: Option<CommandData>,
    #[serde(default)]
    channel_id: Option<String>,
    /// The server (none in a direct message): which organisation the call
    /// belongs to.
    #[serde(default)]
    guild_id: Option<String>,
    #[serde(default)]
    channel: Option<Channel>,
    /// In a server: the member, with their user.
    #[serde(default)]
    member: Option<Member>,
    /// In a direct message: the user.
    #[serde(default)]
    user: Option<User>,
}

#[derive(Deserialize)]
struct CommandData {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct Channel {
    id: String,
}

#[derive(Deserialize)]
struct Member {
    user: Option<User>,
    #[serde(default)]
    nick: Option<String>,
}

#[derive(Deserialize)]
struct User {
    id: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    global_name: Option<String>,
}

/// `DISCORD_PUBLIC_KEY` as the Developer Portal shows it: 64 hex digits.
pub fn parse_public_key(hex_key: &str) -> Result<VerifyingKey, ConfigError> {
    let invalid = |reason: &str| ConfigError::Invalid {
        name: "DISCORD_PUBLIC_KEY",
        reason: reason.into(),
    };
    let bytes: [u8; 32] = hex::decode(hex_key.trim())
        .map_err(|_| invalid("not hex"))?
        .try_into()
        .map_err(|_| invalid("not 32 bytes (64 hex digits)"))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| invalid("not an Ed25519 public key"))
}

/// Checks `X-Signature-Ed25519` (hex) over `X-Signature-Timestamp` followed
/// by the raw body, and that the timestamp is within five minutes of
/// `now_secs`. Every failure is the same 401.
pub fn verify(
    key: &VerifyingKey,
    headers: &HeaderMap,
    body: &[u8],
    now_secs: i64,
) -> Result<(), ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let timestamp = header("x-signature-timestamp").ok_or(ApiError::Unauthorized)?;
    let signature = header("x-signature-ed25519")
        .and_then(|s| hex::decode(s).ok())
        .and_then(|bytes| Signature::from_slice(&bytes).ok())
        .ok_or(ApiError::Unauthorized)?;
    if !fresh(timestamp, now_secs, TIMESTAMP_TOLERANCE) {
        return Err(ApiError::Unauthorized);
    }
    let mut message = Vec::with_capacity(timestamp.len() + body.len());
    message.extend_from_slice(timestamp.as_bytes());
    message.extend_from_slice(body);
    key.verify_strict(&message, &signature)
        .map_err(|_| ApiError::Unauthorized)
}

fn ephemeral(content: impl Into<String>) -> Value {
    json!({
        "type": CHANNEL_MESSAGE,
        "data": {"content": content.into(), "flags": EPHEMERAL},
    })
}

fn usage() -> String {
    format!(
        "Use `/{COMMAND}` to start a voice call with the agent: you get a link that opens \
         the call in your browser."
    )
}

impl DiscordInteractions {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            public_key: parse_public_key(&config::required("DISCORD_PUBLIC_KEY")?)?,
            launcher: aws.launcher()?,
        })
    }

    async fn call(&self, request: &Request, interaction: &Interaction, arrived: Instant) -> Value {
        let channel_id = interaction
            .channel_id
            .as_deref()
            .or(interaction.channel.as_ref().map(|c| c.id.as_str()))
            .filter(|c| !c.is_empty());
        let member = interaction.member.as_ref();
        let user = member
            .and_then(|m| m.user.as_ref())
            .or(interaction.user.as_ref());
        let (Some(channel_id), Some(user)) = (channel_id, user) else {
            return ephemeral("This command needs a channel and a user; Discord sent neither.");
        };
        let name = member
            .and_then(|m| m.nick.as_deref())
            .or(user.global_name.as_deref())
            .or(user.username.as_deref());
        let launch = Launch {
            kind: SessionKind::Discord,
            key: channel_id,
            user_id: &user.id,
            user_name: name,
            workspace: interaction.guild_id.as_deref(),
        };
        match self
            .launcher
            .start(&launch, api::remaining_time(request), arrived + OPEN_WITHIN)
            .await
        {
            Ok(started) => {
                let minutes = self.launcher.access.tokens.ttl.as_secs().div_ceil(60);
                ephemeral(format!(
                    "Your call with the agent is ready: [Join the call]({})\nThe link is for \
                     you alone and works for {minutes} minutes.",
                    started.links.room_url
                ))
            }
            Err(LaunchError::NotConnected) => {
                ephemeral(not_connected("Discord", interaction.guild_id.as_deref()))
            }
            Err(_) => ephemeral(TRY_AGAIN),
        }
    }
}

impl Route for DiscordInteractions {
    type Body = Value;

    async fn process(&self, request: Request) -> Result<(StatusCode, Value), ApiError> {
        let arrived = Instant::now();
        let body = api::body_bytes(request.body())?;
        verify(
            &self.public_key,
            request.headers(),
            body,
            shared::base::time::epoch_secs(),
        )?;
        let interaction: Interaction = api::parse_json(body, "a Discord interaction")?;
        let answer = match interaction.kind {
            PING => json!({"type": PING}),
            APPLICATION_COMMAND
                if interaction
                    .data
                    .as_ref()
                    .is_some_and(|d| d.name.eq_ignore_ascii_case(COMMAND)) =>
            {
                self.call(&request, &interaction, arrived).await
            }
            _ => ephemeral(usage()),
        };
        Ok((StatusCode::OK, answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    const NOW: i64 = 1_795_150_800;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn signed(key: &SigningKey, timestamp: &str, body: &str) -> HeaderMap {
        let signature = key.sign(format!("{timestamp}{body}").as_bytes());
        let mut headers = HeaderMap::new();
        headers.insert("x-signature-timestamp", timestamp.parse().unwrap());
        headers.insert(
            "x-signature-ed25519",
            hex::encode(signature.to_bytes()).parse().unwrap(),
        );
        headers
    }

    #[test]
    fn a_signed_interaction_verifies() {
        let public = parse_public_key(&hex::encode(key().verifying_key().to_bytes())).unwrap();
        let body = r#"{"type":1}"#;
        let headers = signed(&key(), &NOW.to_string(), body);
        assert!(verify(&public, &headers, body.as_bytes(), NOW).is_ok());
        assert!(verify(&public, &headers, body.as_bytes(), NOW + 299).is_ok());
    }

    #[test]
    fn tampered_stale_foreign_or_unsigned_is_refused() {
        let public = key().verifying_key();
        let body = r#"{"type":1}"#;
        let headers = signed(&key(), &NOW.to_string(), body);
        let refused = |headers: &HeaderMap, body: &str, now: i64| {
            matches!(
                verify(&public, headers, body.as_bytes(), now),
                Err(ApiError::Unauthorized)
            )
        };
        assert!(refused(&headers, r#"{"type":2}"#, NOW));
        assert!(refused(&headers, body, NOW + 301), "stale");
        let other = SigningKey::from_bytes(&[8u8; 32]);
        assert!(refused(&signed(&other, &NOW.to_string(), body), body, NOW));
        // The timestamp is signed too.
        let mut moved = headers.clone();
        moved.insert(
            "x-signature-timestamp",
            (NOW + 1).to_string().parse().unwrap(),
        );
        assert!(refused(&moved, body, NOW));
        assert!(refused(&HeaderMap::new(), body, NOW));
        let mut garbage = headers.clone();
        garbage.insert("x-signature-ed25519", "abcd".parse().unwrap());
        assert!(refused(&garbage, body, NOW));
    }

    #[test]
    fn public_keys_are_checked_at_start() {
        assert!(parse_public_key("zz").is_err());
        assert!(parse_public_key("abcd").is_err());
        assert!(parse_public_key(&hex::encode(key().verifying_key().to_bytes())).is_ok());
    }
}
