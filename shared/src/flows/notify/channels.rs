//! Which channels a notification goes out on, from the seed's variables;
//! the console when none is configured, but only outside Lambda.

use std::sync::Arc;

use async_trait::async_trait;

use crate::base::config::{self, ConfigError, Secret};
use crate::providers::channel::{ChannelKind, Message, NotificationChannel, Part, SendError, Sent};
use crate::providers::org_notifications::{OrgNotificationRoutes, OrgSlack};
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
    /// Print to stdout when nothing else is configured. Off in Lambda, where
    /// stdout is CloudWatch and messages carry phone numbers and transcripts.
    pub console_fallback: bool,
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
            console_fallback: !config::in_lambda(),
        })
    }
}

/// Every configured channel; the console when none is, so a local run
/// always shows the message. Without any channel and without the console
/// fallback (Lambda) the cold start fails rather than log messages.
pub fn build_channels(
    config: &NotifierConfig,
    http: reqwest::Client,
    ses: Option<aws_sdk_sesv2::Client>,
) -> Result<Vec<Arc<dyn NotificationChannel>>, ConfigError> {
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
        if !config.console_fallback {
            return Err(ConfigError::Unconfigured {
                what: "notification channel",
                set: "SLACK_WEBHOOK_URL, SLACK_BOT_TOKEN (with SLACK_CHANNEL_ID) or NOTIFICATION_EMAIL",
            });
        }
        channels.push(Arc::new(ConsoleChannel));
    }
    Ok(channels)
}

/// Builds an organisation's own channels (`OrgNotificationRoutes`) with the
/// deployment's HTTP client, Slack API and SES sender.
#[derive(Clone)]
pub struct OrgChannelMaker {
    pub http: reqwest::Client,
    pub slack_api_base_url: String,
    pub ses: Option<aws_sdk_sesv2::Client>,
    /// The verified SES identity organisations' email is sent from: the
    /// deployment's `NOTIFICATION_FROM_EMAIL`, else `NOTIFICATION_EMAIL`
    /// (the only senders the worker's role may use).
    pub from_email: Option<String>,
}

impl OrgChannelMaker {
    pub fn new(
        config: &NotifierConfig,
        http: reqwest::Client,
        ses: Option<aws_sdk_sesv2::Client>,
    ) -> Self {
        Self {
            http,
            slack_api_base_url: config.slack_api_base_url.clone(),
            ses,
            from_email: config
                .notification_from_email
                .clone()
                .or_else(|| config.notification_email.clone()),
        }
    }

    /// The channels of `routes`, or why they cannot be used (a person must act).
    pub fn channels(
        &self,
        routes: &OrgNotificationRoutes,
    ) -> Result<Vec<Arc<dyn NotificationChannel>>, String> {
        let mut channels: Vec<Arc<dyn NotificationChannel>> = Vec::new();
        match &routes.slack {
            Some(OrgSlack::Bot { token, channel }) => channels.push(Arc::new(SlackBotChannel {
                http: self.http.clone(),
                api_base_url: self.slack_api_base_url.clone(),
                token: token.clone(),
                channel: channel.clone(),
            })),
            Some(OrgSlack::Webhook(url)) => channels.push(Arc::new(SlackWebhookChannel {
                http: self.http.clone(),
                url: url.clone(),
            })),
            None => {}
        }
        if let Some(to) = &routes.email {
            let (Some(client), Some(from)) = (&self.ses, &self.from_email) else {
                return Err("the organisation's email route needs the deployment's \
                            NOTIFICATION_FROM_EMAIL (a verified SES sender)"
                    .into());
            };
            channels.push(Arc::new(SesEmailChannel {
                client: client.clone(),
                from: from.clone(),
                to: to.clone(),
            }));
        }
        Ok(channels)
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

    fn unconfigured(console_fallback: bool) -> NotifierConfig {
        NotifierConfig {
            slack_webhook_url: None,
            slack_bot_token: None,
            slack_channel_id: "#x".into(),
            slack_api_base_url: "http://127.0.0.1".into(),
            notification_email: None,
            notification_from_email: None,
            console_fallback,
        }
    }

    fn names(channels: &[Arc<dyn NotificationChannel>]) -> Vec<&'static str> {
        channels.iter().map(|c| c.name()).collect()
    }

    #[test]
    fn console_is_the_local_fallback_channel() {
        let channels = build_channels(&unconfigured(true), reqwest::Client::new(), None).unwrap();
        assert_eq!(names(&channels), vec!["console"]);
    }

    #[test]
    fn lambda_without_a_channel_refuses_to_start() {
        let err = build_channels(&unconfigured(false), reqwest::Client::new(), None)
            .err()
            .expect("no console in Lambda");
        let text = err.to_string();
        for variable in ["SLACK_WEBHOOK_URL", "SLACK_BOT_TOKEN", "NOTIFICATION_EMAIL"] {
            assert!(text.contains(variable), "{text}");
        }
    }

    #[test]
    fn lambda_with_a_channel_uses_only_it() {
        let mut config = unconfigured(false);
        config.slack_webhook_url = Some(Secret::new("https://hooks.slack.com/services/x"));
        let channels = build_channels(&config, reqwest::Client::new(), None).unwrap();
        assert_eq!(names(&channels), vec!["slack-webhook"]);
    }
}
