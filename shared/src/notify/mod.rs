//! Notifications: rendering the seed's messages, the channels that carry them
//! (Slack incoming webhook, Slack bot, SES, console), and delivery that never
//! sends the same part twice.

mod channels;
mod deliver;
pub mod render;
pub mod slack_format;

pub use channels::{
    build_channels, ConsoleChannel, NotifierConfig, SesEmailChannel, SlackBotChannel,
    SlackWebhookChannel,
};
pub use deliver::{deliver, Delivery};

use std::time::Duration;

use async_trait::async_trait;

/// A message before a channel shapes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Email subject line.
    pub subject: String,
    /// The full text, exactly as the seed formats it.
    pub text: String,
}

/// One send on one channel: Slack splits long messages into several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub subject: String,
    pub text: String,
    /// Slack `section` texts; empty for channels without blocks.
    pub blocks: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The channel asked us to wait this long.
    #[error("rate limited; retry after {0:?}")]
    RateLimited(Duration),
    /// Network trouble, timeouts or 5xx: retry.
    #[error("temporary failure: {0}")]
    Temporary(String),
    /// Configuration or content the channel refuses; retrying will not help.
    #[error("permanent failure: {0}")]
    Permanent(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    Slack,
    Email,
    Console,
}

#[async_trait]
pub trait NotificationChannel: Send + Sync {
    /// Stable name: part of the delivery record key.
    fn name(&self) -> &'static str;
    fn kind(&self) -> ChannelKind;
    /// The sends this message takes on this channel.
    fn parts(&self, message: &Message) -> Vec<Part> {
        vec![Part {
            subject: message.subject.clone(),
            text: message.text.clone(),
            blocks: Vec::new(),
        }]
    }
    async fn send(&self, part: &Part) -> Result<(), SendError>;
}
