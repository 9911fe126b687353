//! What every notification channel (Slack, SES, the console) implements, and
//! the message it is given.

use std::time::Duration;

use async_trait::async_trait;

pub use crate::store::sessions::SlackThread;

/// A message before a channel shapes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// Email subject line.
    pub subject: String,
    /// The full text: the email body, and Slack's text unless `slack` says otherwise.
    pub text: String,
    /// Slack's own form when it differs from `text` (seed 000: a fallback
    /// line plus one section block).
    pub slack: Option<SlackContent>,
    /// Slack's mrkdwn form of `text`, with only untrusted fields escaped (so
    /// the template's own markup survives); without it Slack gets `text`
    /// escaped whole.
    pub slack_text: Option<String>,
    /// Bot-token channel for this message (routing rules); default otherwise.
    pub slack_channel: Option<String>,
    /// Post as a reply in this thread (bot token only).
    pub thread: Option<SlackThread>,
}

impl Message {
    pub fn new(subject: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            text: text.into(),
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackContent {
    pub text: String,
    /// `section` block texts (mrkdwn).
    pub blocks: Vec<String>,
}

/// One send on one channel: Slack splits long messages into several.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Part {
    pub subject: String,
    pub text: String,
    /// Slack `section` texts; empty for channels without blocks.
    pub blocks: Vec<String>,
    /// Slack channel override (bot token only).
    pub channel: Option<String>,
    /// Slack thread to reply in (bot token only).
    pub thread_ts: Option<String>,
}

/// What a channel reports about a successful send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sent {
    /// The posted message, when the channel can be replied to.
    pub slack_thread: Option<SlackThread>,
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
            ..Part::default()
        }]
    }
    async fn send(&self, part: &Part) -> Result<Sent, SendError>;
}
