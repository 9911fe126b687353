//! Slack: an incoming webhook (`SLACK_WEBHOOK_URL`) or a bot token
//! (`chat.postMessage`), with Slack's rate-limit and error answers classified.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde::Deserialize;

use super::channel::{ChannelKind, Message, NotificationChannel, Part, SendError, Sent};
use super::slack_format::{blocks_json, message_parts};
use crate::base::config::Secret;
use crate::store::sessions::SlackThread;

/// Slack asks for about one message per second per channel; without a
/// `Retry-After` we wait this long.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

fn retry_after(response: &reqwest::Response) -> Duration {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_RETRY_AFTER)
}

fn transport(err: reqwest::Error) -> SendError {
    // Never echo the URL: a Slack webhook URL is itself a secret.
    SendError::Temporary(format!("request failed: {}", err.without_url()))
}

/// Slack incoming webhook (`SLACK_WEBHOOK_URL`): 200 `ok`, or a plain-text error.
pub struct SlackWebhookChannel {
    pub http: reqwest::Client,
    pub url: Secret,
}

#[async_trait]
impl NotificationChannel for SlackWebhookChannel {
    fn name(&self) -> &'static str {
        "slack-webhook"
    }

    fn kind(&self) -> ChannelKind {
        ChannelKind::Slack
    }

    fn parts(&self, message: &Message) -> Vec<Part> {
        message_parts(message)
    }

    /// An incoming webhook is bound to one channel and cannot thread, so
    /// `part.channel` and `part.thread_ts` do not apply.
    async fn send(&self, part: &Part) -> Result<Sent, SendError> {
        let response = self
            .http
            .post(self.url.expose())
            .json(&serde_json::json!({"text": part.text, "blocks": blocks_json(part)}))
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if status.is_success() {
            return Ok(Sent::default());
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(SendError::RateLimited(retry_after(&response)));
        }
        let body = response.text().await.unwrap_or_default();
        let reason = format!(
            "Slack webhook answered HTTP {}: {}",
            status.as_u16(),
            body.trim()
        );
        if status.is_server_error() {
            Err(SendError::Temporary(reason))
        } else {
            Err(SendError::Permanent(reason))
        }
    }
}

/// Slack Web API `chat.postMessage` with a bot token (`SLACK_BOT_TOKEN`).
pub struct SlackBotChannel {
    pub http: reqwest::Client,
    pub api_base_url: String,
    pub token: Secret,
    pub channel: String,
}

#[derive(Deserialize)]
struct PostMessageResponse {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    ts: Option<String>,
}

/// Slack API errors that clear up by themselves; all others need a person.
fn bot_error(error: &str) -> SendError {
    match error {
        "ratelimited" => SendError::RateLimited(DEFAULT_RETRY_AFTER),
        "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout" => {
            SendError::Temporary(format!("Slack API error {error}"))
        }
        other => SendError::Permanent(format!("Slack API error {other}")),
    }
}

#[async_trait]
impl NotificationChannel for SlackBotChannel {
    fn name(&self) -> &'static str {
        "slack-bot"
    }

    fn kind(&self) -> ChannelKind {
        ChannelKind::Slack
    }

    fn parts(&self, message: &Message) -> Vec<Part> {
        message_parts(message)
    }

    async fn send(&self, part: &Part) -> Result<Sent, SendError> {
        let mut body = serde_json::json!({
            "channel": part.channel.as_deref().unwrap_or(&self.channel),
            "text": part.text,
        });
        // Plain messages (direct messages) have no blocks; Slack shows `text`.
        if !part.blocks.is_empty() {
            body["blocks"] = blocks_json(part);
        }
        if let Some(ts) = &part.thread_ts {
            body["thread_ts"] = ts.clone().into();
        }
        let response = self
            .http
            .post(format!("{}/chat.postMessage", self.api_base_url))
            .bearer_auth(self.token.expose())
            .json(&body)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(SendError::RateLimited(retry_after(&response)));
        }
        if status.is_server_error() {
            return Err(SendError::Temporary(format!(
                "Slack API answered HTTP {}",
                status.as_u16()
            )));
        }
        let body: PostMessageResponse = response.json().await.map_err(|e| {
            SendError::Temporary(format!(
                "unreadable Slack API response: {}",
                e.without_url()
            ))
        })?;
        if body.ok {
            Ok(Sent {
                slack_thread: body
                    .channel
                    .zip(body.ts)
                    .map(|(channel, ts)| SlackThread { channel, ts }),
            })
        } else {
            Err(bot_error(body.error.as_deref().unwrap_or("unknown_error")))
        }
    }
}

impl SlackBotChannel {
    /// A bot client for direct messages when `SLACK_BOT_TOKEN` is set
    /// (`SLACK_API_BASE_URL` overrides `https://slack.com/api`).
    pub fn direct_from_env(
        http: reqwest::Client,
    ) -> Result<Option<Self>, crate::base::config::ConfigError> {
        use crate::base::config;
        let Some(token) = config::optional_secret("SLACK_BOT_TOKEN") else {
            return Ok(None);
        };
        Ok(Some(Self {
            http,
            api_base_url: config::base_url_or("SLACK_API_BASE_URL", "https://slack.com/api")?,
            token,
            channel: String::new(),
        }))
    }

    /// Posts plain `text` to the person `user_id` (`chat.postMessage` with
    /// the user id as channel: the app's DM with them).
    pub async fn direct_message(&self, user_id: &str, text: &str) -> Result<Sent, SendError> {
        self.send(&Part {
            subject: String::new(),
            text: text.to_string(),
            blocks: Vec::new(),
            channel: Some(user_id.to_string()),
            thread_ts: None,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bot_errors_are_classified() {
        assert_eq!(
            bot_error("ratelimited"),
            SendError::RateLimited(DEFAULT_RETRY_AFTER)
        );
        assert!(matches!(
            bot_error("internal_error"),
            SendError::Temporary(_)
        ));
        assert!(matches!(
            bot_error("not_in_channel"),
            SendError::Permanent(_)
        ));
        assert!(matches!(bot_error("invalid_auth"), SendError::Permanent(_)));
    }
}
