//! Notifications: rendering the seeds' messages, choosing the channels that
//! carry them, and delivery that never sends the same part twice. The
//! channels themselves are providers (`crate::providers::{slack, ses}`).

mod channels;
mod deliver;
pub mod render;
mod routing;

pub use channels::{build_channels, ConsoleChannel, NotifierConfig, OrgChannelMaker};
pub use deliver::{deliver, resend_delay, Delivery, DEFAULT_PART_LEASE, DEFAULT_RESEND_BASE};
pub use routing::NotificationRoutes;

pub use crate::providers::channel::{
    ChannelKind, Message, NotificationChannel, Part, SendError, Sent, SlackContent, SlackThread,
};
