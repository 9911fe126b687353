//! `POST /slack/commands`: the Slack app's `/call` slash command (seed 002's
//! Slack launcher). Verifies Slack's request signature on the raw body,
//! opens session `slack-{user_id}` in room `slack-{user_id}` (a new
//! conversation there once the last one ended) and answers the person only
//! (`ephemeral`) with their join link; with `SLACK_BOT_TOKEN` the link is
//! also sent to them as a direct message. `/call help` explains and opens
//! nothing.
//!
//! Slack shows an error unless it gets an answer within 3 seconds, so
//! every step after the signature check is bounded, and a failure (LiveKit
//! down, the store slow) is a normal answer asking to try again.

use std::time::Duration;

use hmac::{Hmac, Mac};
use http::{HeaderMap, StatusCode};
use lambda_http::Request;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use shared::api::{self, ApiError, Route};
use shared::base::config::{self, Secret};
use shared::flows::launchers::{
    fresh, not_connected, Launch, LaunchError, Launcher, TIMESTAMP_TOLERANCE, TRY_AGAIN,
};
use shared::flows::sessions::SessionKind;
use shared::providers::slack::SlackBotChannel;
use shared::providers::slack_format::escape;
use shared::wiring::Wiring;
use tokio::time::Instant;
use tracing::{info, warn};

/// The call must be open by then, counted from the request's arrival.
const OPEN_WITHIN: Duration = Duration::from_millis(2200);
/// The answer must be on its way by then (Slack waits 3 s in all).
const ANSWER_WITHIN: Duration = Duration::from_millis(2600);

pub struct SlackCommands {
    /// `SLACK_SIGNING_SECRET`: the app's signing secret.
    pub signing_secret: Secret,
    pub launcher: Launcher,
    /// `SLACK_BOT_TOKEN`: also send the link as a direct message.
    pub bot: Option<SlackBotChannel>,
}

/// The fields of a slash command this route reads; Slack sends more.
#[derive(Deserialize)]
struct SlashCommand {
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    text: Option<String>,
    user_id: Option<String>,
    #[serde(default)]
    user_name: Option<String>,
    /// The workspace: which organisation the call belongs to.
    #[serde(default)]
    team_id: Option<String>,
}

/// Slack's immediate answer to a slash command.
#[derive(Debug, Serialize)]
pub struct SlackReply {
    response_type: &'static str,
    text: String,
}

impl SlackReply {
    fn ephemeral(text: impl Into<String>) -> Self {
        Self {
            response_type: "ephemeral",
            text: text.into(),
        }
    }
}

/// Checks `X-Slack-Signature` (`v0=` + hex HMAC-SHA256 of
/// `v0:{timestamp}:{body}` with the signing secret, compared in constant
/// time) and that `X-Slack-Request-Timestamp` is within five minutes of
/// `now_secs`. Every failure is the same 401.
pub fn verify(
    secret: &Secret,
    headers: &HeaderMap,
    body: &[u8],
    now_secs: i64,
) -> Result<(), ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let timestamp = header("x-slack-request-timestamp").ok_or(ApiError::Unauthorized)?;
    let signature = header("x-slack-signature")
        .and_then(|s| s.strip_prefix("v0="))
        .and_then(|s| hex::decode(s).ok())
        .ok_or(ApiError::Unauthorized)?;
    if !fresh(timestamp, now_secs, TIMESTAMP_TOLERANCE) {
        return Err(ApiError::Unauthorized);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .map_err(|_| ApiError::Unauthorized)?;
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.verify_slice(&signature)
        .map_err(|_| ApiError::Unauthorized)
}

fn usage(command: &str) -> String {
    format!(
        "Type `{command}` to start a voice call with the agent: you get a link that opens \
         the call in your browser. `{command} help` shows this message."
    )
}

impl SlackCommands {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            signing_secret: config::required_secret("SLACK_SIGNING_SECRET")?,
            launcher: aws.launcher()?,
            bot: SlackBotChannel::direct_from_env(shared::flows::outbound::provider_http()?)?,
        })
    }

    /// Sends the link as a direct message, giving up at `deadline`.
    async fn direct_message(&self, user_id: &str, text: &str, deadline: Instant) {
        let Some(bot) = &self.bot else { return };
        match tokio::time::timeout_at(deadline, bot.direct_message(user_id, text)).await {
            Ok(Ok(_)) => info!("join link sent as a direct message"),
            Ok(Err(err)) => warn!(error = %err, "direct message not sent"),
            Err(_) => warn!("direct message not sent before Slack's deadline"),
        }
    }
}

impl Route for SlackCommands {
    type Body = SlackReply;

    async fn process(&self, request: Request) -> Result<(StatusCode, SlackReply), ApiError> {
        let arrived = Instant::now();
        let body = api::body_bytes(request.body())?;
        verify(
            &self.signing_secret,
            request.headers(),
            body,
            shared::base::time::epoch_secs(),
        )?;
        let command: SlashCommand = serde_urlencoded::from_bytes(body).map_err(|e| {
            ApiError::bad_request("invalid_form", format!("Body is not a slash command: {e}"))
        })?;
        let name = command.command.as_deref().unwrap_or("/call");
        let text = command.text.as_deref().unwrap_or("").trim();
        if text.eq_ignore_ascii_case("help") {
            return Ok((StatusCode::OK, SlackReply::ephemeral(usage(name))));
        }
        let user_id = command
            .user_id
            .as_deref()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| ApiError::unprocessable("missing_field", "user_id is required"))?;
        let launch = Launch {
            kind: SessionKind::Slack,
            key: user_id,
            user_id,
            user_name: command.user_name.as_deref(),
            workspace: command.team_id.as_deref(),
        };
        let started = match self
            .launcher
            .start(
                &launch,
                api::remaining_time(&request),
                arrived + OPEN_WITHIN,
            )
            .await
        {
            Ok(started) => started,
            Err(LaunchError::NotConnected) => {
                let text = not_connected("Slack", command.team_id.as_deref());
                return Ok((StatusCode::OK, SlackReply::ephemeral(text)));
            }
            Err(_) => return Ok((StatusCode::OK, SlackReply::ephemeral(TRY_AGAIN))),
        };
        let minutes = self.launcher.access.tokens.ttl.as_secs().div_ceil(60);
        let link = format!("<{}|Join the call>", escape(&started.links.room_url));
        let reply = format!(
            "Your call with the agent is ready: {link}\nThe link is for you alone and \
             works for {minutes} minutes."
        );
        self.direct_message(user_id, &reply, arrived + ANSWER_WITHIN)
            .await;
        Ok((StatusCode::OK, SlackReply::ephemeral(reply)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slack's published example ("Verifying requests from Slack").
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TIMESTAMP: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn headers(timestamp: &str, signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-slack-request-timestamp", timestamp.parse().unwrap());
        headers.insert("x-slack-signature", signature.parse().unwrap());
        headers
    }

    fn now() -> i64 {
        TIMESTAMP.parse().unwrap()
    }

    #[test]
    fn slacks_published_example_verifies() {
        let secret = Secret::new(SECRET);
        assert!(verify(
            &secret,
            &headers(TIMESTAMP, SIGNATURE),
            BODY.as_bytes(),
            now()
        )
        .is_ok());
        // Still fresh four minutes later.
        assert!(verify(
            &secret,
            &headers(TIMESTAMP, SIGNATURE),
            BODY.as_bytes(),
            now() + 240
        )
        .is_ok());
    }

    #[test]
    fn anything_else_is_refused() {
        let secret = Secret::new(SECRET);
        let refused = |headers: &HeaderMap, body: &str, now: i64| {
            matches!(
                verify(&secret, headers, body.as_bytes(), now),
                Err(ApiError::Unauthorized)
            )
        };
        let good = headers(TIMESTAMP, SIGNATURE);
        assert!(refused(&good, &BODY.replace("roadrunner", "coyote"), now()));
        assert!(refused(&good, BODY, now() + 301), "stale");
        assert!(refused(&good, BODY, now() - 301), "from the future");
        assert!(refused(&headers("1531420619", SIGNATURE), BODY, now()));
        assert!(
            refused(&headers(TIMESTAMP, &SIGNATURE[3..]), BODY, now()),
            "no v0="
        );
        assert!(refused(&headers(TIMESTAMP, "v0=zz"), BODY, now()));
        assert!(refused(&HeaderMap::new(), BODY, now()));
        let wrong_secret = Secret::new("another-secret");
        assert!(verify(&wrong_secret, &good, BODY.as_bytes(), now()).is_err());
    }
}
