//! Which channels a notification goes out on, from the seed's variables;
//! the console when none is configured.

use std::sync::Arc;

use async_trait::async_trait;

use crate::base::config::{self, ConfigError, Secret};
use crate::providers::channel::{ChannelKind, Message, NotificationChannel, Part, SendError, Sent};
use crate::providers::ses::SesEmailChannel;
use crate::providers::slack::{SlackBotChannel, SlackWebhookChannel};

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
