//! `POST /teams/messages`: a Microsoft Teams outgoing webhook (seed 002's
//! Teams launcher). Teams posts a message that @mentions the webhook; this
//! route verifies the HMAC Teams signs it with, and when the text (mention
//! removed) has the word "call" it opens session `teams-{key}` in room
//! `teams-{key}`, where `key` is the conversation id mapped to LiveKit's
//! room characters ([`conversation_key`]), and replies with a link to the
//! room. Any other text gets a short usage reply.
//!
//! The whole channel sees the reply, so it never carries a LiveKit token,
//! only the room's invite: the invite page itself when `ROOM_URL_TEMPLATE`
//! names `{invite}` and no `{token}` (the page mints each person's token
//! through `/room/join`), else `{PUBLIC_BASE_URL}/room/{room}/join?invite=`
//! (`functions/room-join-link`), which mints a token for a new guest on
//! every visit and redirects to the template's page (LiveKit Meet, the
//! default).
//!
//! Teams waits 5 seconds for the reply, so every step after the signature
//! check is bounded, and a failure is a normal reply asking to try again.
//! Answering Teams calls themselves needs a media bot a Lambda cannot host:
//! the call happens in the LiveKit room the link opens.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::{HeaderMap, StatusCode};
use lambda_http::Request;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use shared::api::{self, ApiError, Route};
use shared::base::config::{self, ConfigError};
use shared::flows::launchers::{
    conversation_key, not_connected, Launch, LaunchError, Launcher, TRY_AGAIN,
};
use shared::flows::sessions::{join_link, SessionKind};
use shared::wiring::Wiring;
use tokio::time::Instant;

/// The call must be open by then, counted from the request's arrival
/// (Teams waits 5 s for the reply).
const OPEN_WITHIN: Duration = Duration::from_millis(4300);

pub struct TeamsMessages {
    /// `TEAMS_WEBHOOK_SECRET` decoded: the HMAC key Teams signs with.
    pub key: HmacKey,
    pub launcher: Launcher,
    /// `PUBLIC_BASE_URL`: where `/room/{roomName}/join` is served.
    pub public_base_url: shared::api::public_url::PublicBaseUrl,
}

#[derive(Deserialize)]
struct Activity {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    from: Option<Account>,
    #[serde(default)]
    conversation: Option<Conversation>,
    #[serde(default, rename = "channelData")]
    channel_data: Option<ChannelData>,
}

/// Teams' `channelData`: the tenant says which organisation the call
/// belongs to.
#[derive(Deserialize)]
struct ChannelData {
    #[serde(default)]
    tenant: Option<TenantRef>,
}

#[derive(Deserialize)]
struct TenantRef {
    #[serde(default)]
    id: String,
}

#[derive(Deserialize)]
struct Account {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct Conversation {
    #[serde(default)]
    id: String,
}

/// The reply Teams posts in the conversation.
#[derive(Debug, Serialize)]
pub struct TeamsReply {
    #[serde(rename = "type")]
    kind: &'static str,
    text: String,
}

impl TeamsReply {
    fn message(text: impl Into<String>) -> Self {
        Self {
            kind: "message",
            text: text.into(),
        }
    }
}

/// The HMAC key Teams signs with; `Debug` never shows it.
#[derive(Clone)]
pub struct HmacKey(Vec<u8>);

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKey(***)")
    }
}

/// `TEAMS_WEBHOOK_SECRET`: the security token Teams shows when the outgoing
/// webhook is created, base64; the HMAC key is its decoded bytes.
pub fn decode_secret(encoded: &str) -> Result<HmacKey, ConfigError> {
    STANDARD
        .decode(encoded.trim())
        .ok()
        .filter(|bytes| !bytes.is_empty())
        .map(HmacKey)
        .ok_or_else(|| ConfigError::Invalid {
            name: "TEAMS_WEBHOOK_SECRET",
            reason: "not base64 (paste the security token Teams showed)".into(),
        })
}

/// Checks `Authorization: HMAC <base64 HMAC-SHA256 of the raw body>` with
/// the decoded secret, in constant time. Every failure is the same 401.
pub fn verify(key: &HmacKey, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("HMAC "))
        .and_then(|v| STANDARD.decode(v.trim()).ok())
        .ok_or(ApiError::Unauthorized)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key.0).map_err(|_| ApiError::Unauthorized)?;
    mac.update(body);
    mac.verify_slice(&presented)
        .map_err(|_| ApiError::Unauthorized)
}

/// The message text without its `<at>…</at>` mentions and other markup.
fn plain_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        out.push(' ');
        let tail = &rest[start..];
        if tail.len() >= 4 && tail[..4].eq_ignore_ascii_case("<at>") {
            // A mention: drop it with its content.
            let lower = tail.to_ascii_lowercase();
            rest = match lower.find("</at>") {
                Some(end) => &tail[end + 5..],
                None => "",
            };
        } else {
            rest = match tail.find('>') {
                Some(end) => &tail[end + 1..],
                None => "",
            };
        }
    }
    out.push_str(rest);
    out.replace("&nbsp;", " ")
}

/// Whether the message asks for a call: the word "call", any case.
pub fn asks_for_call(text: &str) -> bool {
    plain_text(text)
        .split(|c: char| !c.is_alphanumeric())
        .any(|word| word.eq_ignore_ascii_case("call"))
}

const USAGE: &str = "Mention me with the word **call** to start a voice call with the \
                     agent: I reply with a link that opens the call in your browser.";

impl TeamsMessages {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            key: decode_secret(&config::required("TEAMS_WEBHOOK_SECRET")?)?,
            launcher: aws.launcher()?,
            public_base_url: shared::api::public_url::PublicBaseUrl::from_env(),
        })
    }
}

impl Route for TeamsMessages {
    type Body = TeamsReply;

    async fn process(&self, request: Request) -> Result<(StatusCode, TeamsReply), ApiError> {
        let arrived = Instant::now();
        let body = api::body_bytes(request.body())?;
        verify(&self.key, request.headers(), body)?;
        let activity: Activity = api::parse_json(body, "a Teams activity")?;
        if !activity.kind.eq_ignore_ascii_case("message") || !asks_for_call(&activity.text) {
            return Ok((StatusCode::OK, TeamsReply::message(USAGE)));
        }
        let (Some(from), Some(conversation)) = (&activity.from, &activity.conversation) else {
            return Ok((
                StatusCode::OK,
                TeamsReply::message("Teams sent no sender or conversation; I cannot start a call."),
            ));
        };
        let key = conversation_key(&conversation.id);
        let tenant = activity
            .channel_data
            .as_ref()
            .and_then(|data| data.tenant.as_ref())
            .map(|tenant| tenant.id.as_str());
        let launch = Launch {
            kind: SessionKind::Teams,
            key: &key,
            user_id: &from.id,
            user_name: from.name.as_deref(),
            workspace: tenant,
        };
        let reply = match self
            .launcher
            .start(
                &launch,
                api::remaining_time(&request),
                arrived + OPEN_WITHIN,
            )
            .await
        {
            Ok(started) => {
                let access = &self.launcher.access;
                let invite = &started.links.invite;
                // A page that needs a token cannot be shared: link our
                // route, which mints one per visitor, instead.
                let link = access
                    .invite_page(&started.room, invite)
                    .unwrap_or_else(|| {
                        let base = self.public_base_url.current().unwrap_or_default();
                        join_link(&base, &started.room, invite)
                    });
                let hours = access.invites.ttl.as_secs().div_ceil(3600);
                format!(
                    "The call with the agent is ready: [Join the call]({link})\n\n\
                     Everyone here can join with this link for {hours} hours, \
                     while the call lasts."
                )
            }
            Err(LaunchError::NotConnected) => not_connected("Teams", tenant),
            Err(_) => TRY_AGAIN.to_string(),
        };
        Ok((StatusCode::OK, TeamsReply::message(reply)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A security token as Teams shows it (base64 of 32 bytes).
    const TOKEN: &str = "c2VjcmV0LXRlYW1zLXdlYmhvb2sta2V5LTMyYnl0ZXM=";

    fn sign(token: &str, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&STANDARD.decode(token).unwrap()).unwrap();
        mac.update(body.as_bytes());
        format!("HMAC {}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", authorization.parse().unwrap());
        headers
    }

    #[test]
    fn the_body_hmac_with_the_decoded_token_verifies() {
        let key = decode_secret(TOKEN).unwrap();
        let body = r#"{"type":"message","text":"<at>Bot</at> call"}"#;
        assert!(verify(&key, &headers(&sign(TOKEN, body)), body.as_bytes()).is_ok());
    }

    #[test]
    fn anything_else_is_refused() {
        let key = decode_secret(TOKEN).unwrap();
        let body = r#"{"type":"message","text":"<at>Bot</at> call"}"#;
        let good = sign(TOKEN, body);
        let refused = |headers: &HeaderMap, body: &str| {
            matches!(
                verify(&key, headers, body.as_bytes()),
                Err(ApiError::Unauthorized)
            )
        };
        assert!(refused(&headers(&good), &body.replace("call", "cal")));
        assert!(refused(&HeaderMap::new(), body));
        assert!(refused(&headers(&good.replace("HMAC ", "Bearer ")), body));
        assert!(refused(&headers("HMAC not*base64"), body));
        // Keyed with the token's text rather than its decoded bytes: wrong.
        let mut mac = Hmac::<Sha256>::new_from_slice(TOKEN.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        let text_keyed = format!("HMAC {}", STANDARD.encode(mac.finalize().into_bytes()));
        assert!(refused(&headers(&text_keyed), body));
        assert!(decode_secret("not base64!").is_err());
    }

    #[test]
    fn the_word_call_is_found_outside_the_mention() {
        assert!(asks_for_call("<at>Bot</at> call"));
        assert!(asks_for_call("<at>Bot</at>&nbsp;CALL please\n"));
        assert!(asks_for_call("<p><at>Bot</at> can we call?</p>"));
        assert!(!asks_for_call("<at>call</at> hello"));
        assert!(!asks_for_call("<at>Bot</at> recall the callback"));
        assert!(!asks_for_call("<at>Bot</at> help"));
        assert!(!asks_for_call(""));
    }
}
