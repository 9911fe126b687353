//! The channels a notification can go out on.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sesv2::error::ProvideErrorMetadata;
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message as SesMessage};
use reqwest::StatusCode;
use serde::Deserialize;

use super::slack_format::{blocks_json, message_parts};
use super::{ChannelKind, Message, NotificationChannel, Part, SendError, Sent, SlackThread};
use crate::config::{self, ConfigError, Secret};

/// Slack asks for about one message per second per channel; without a
/// `Retry-After` we wait this long.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Where notifications go, from the seed's variables.
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    pub slack_webhook_url: Option<Secret>,
    pub slack_bot_token: Option<Secret>,
    pub slack_channel_id: String,
    pub slack_api_base_url: String,
    pub notification_email: Option<String>,
    pub notification_from_email: Option<String>,
}

impl NotifierConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            slack_webhook_url: config::optional_secret("SLACK_WEBHOOK_URL"),
            slack_bot_token: config::optional_secret("SLACK_BOT_TOKEN"),
            slack_channel_id: config::optional("SLACK_CHANNEL_ID")
                .unwrap_or_else(|| "#voice-agent-calls".into()),
            slack_api_base_url: config::base_url_or("SLACK_API_BASE_URL", "https://slack.com/api")?,
            notification_email: config::optional("NOTIFICATION_EMAIL"),
            notification_from_email: config::optional("NOTIFICATION_FROM_EMAIL"),
        })
    }
}

/// Every configured channel; the console when none is, so a local run
/// always shows the message.
pub fn build_channels(
    config: &NotifierConfig,
    http: reqwest::Client,
    ses: Option<aws_sdk_sesv2::Client>,
) -> Vec<Arc<dyn NotificationChannel>> {
    let mut channels: Vec<Arc<dyn NotificationChannel>> = Vec::new();
    if let Some(token) = &config.slack_bot_token {
        channels.push(Arc::new(SlackBotChannel {
            http: http.clone(),
            api_base_url: config.slack_api_base_url.clone(),
            token: token.clone(),
            channel: config.slack_channel_id.clone(),
        }));
    }
    if let Some(url) = &config.slack_webhook_url {
        channels.push(Arc::new(SlackWebhookChannel {
            http: http.clone(),
            url: url.clone(),
        }));
    }
    if let (Some(to), Some(client)) = (&config.notification_email, ses) {
        channels.push(Arc::new(SesEmailChannel {
            client,
            from: config
                .notification_from_email
                .clone()
                .unwrap_or_else(|| to.clone()),
            to: to.clone(),
        }));
    }
    if channels.is_empty() {
        channels.push(Arc::new(ConsoleChannel));
    }
    channels
}

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
            "blocks": blocks_json(part),
        });
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

/// Amazon SES v2 (`NOTIFICATION_EMAIL`).
pub struct SesEmailChannel {
    pub client: aws_sdk_sesv2::Client,
    pub from: String,
    pub to: String,
}

#[async_trait]
impl NotificationChannel for SesEmailChannel {
    fn name(&self) -> &'static str {
        "email"
    }

    fn kind(&self) -> ChannelKind {
        ChannelKind::Email
    }

    async fn send(&self, part: &Part) -> Result<Sent, SendError> {
        let content = |text: &str| Content::builder().data(text).charset("UTF-8").build();
        let subject = content(&part.subject).map_err(|e| SendError::Permanent(e.to_string()))?;
        let text = content(&part.text).map_err(|e| SendError::Permanent(e.to_string()))?;
        let result = self
            .client
            .send_email()
            .from_email_address(&self.from)
            .destination(Destination::builder().to_addresses(&self.to).build())
            .content(
                EmailContent::builder()
                    .simple(
                        SesMessage::builder()
                            .subject(subject)
                            .body(Body::builder().text(text).build())
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(Sent::default()),
            Err(err) => {
                let code = err.code().unwrap_or("").to_string();
                let reason = format!("SES {}", aws_sdk_sesv2::error::DisplayErrorContext(&err));
                match code.as_str() {
                    "TooManyRequestsException" | "LimitExceededException" | "Throttling" | "" => {
                        Err(SendError::Temporary(reason))
                    }
                    _ => Err(SendError::Permanent(reason)),
                }
            }
        }
    }
}

/// Prints the message: the channel of a local run with nothing configured.
pub struct ConsoleChannel;

#[async_trait]
impl NotificationChannel for ConsoleChannel {
    fn name(&self) -> &'static str {
        "console"
    }

    fn kind(&self) -> ChannelKind {
        ChannelKind::Console
    }

    /// Shows what Slack would show when the message has a Slack form.
    fn parts(&self, message: &Message) -> Vec<Part> {
        let text = match &message.slack {
            Some(slack) => format!("{}\n{}", slack.text, slack.blocks.join("\n")),
            None => message.text.clone(),
        };
        vec![Part {
            subject: message.subject.clone(),
            text,
            ..Part::default()
        }]
    }

    async fn send(&self, part: &Part) -> Result<Sent, SendError> {
        println!(
            "----- notification: {} -----\n{}\n-----",
            part.subject, part.text
        );
        Ok(Sent::default())
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

    #[test]
    fn console_is_the_fallback_channel() {
        let config = NotifierConfig {
            slack_webhook_url: None,
            slack_bot_token: None,
            slack_channel_id: "#x".into(),
            slack_api_base_url: "http://127.0.0.1".into(),
            notification_email: None,
            notification_from_email: None,
        };
        let channels = build_channels(&config, reqwest::Client::new(), None);
        assert_eq!(
            channels.iter().map(|c| c.name()).collect::<Vec<_>>(),
            vec!["console"]
        );
    }
}
