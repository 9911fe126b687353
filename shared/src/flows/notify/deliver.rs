//! Sending a message on every channel exactly once per part, across
//! redeliveries and concurrent workers: each part's delivery is claimed in
//! the dedup store before it is sent and completed after.

use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};

use super::{ChannelKind, Message, NotificationChannel, SendError, SlackThread};
use crate::store::dedup::{Claim, DedupStore};
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Every part went out (now or on an earlier delivery).
    Sent {
        slack: bool,
        /// Where the first threadable Slack part landed, for later replies.
        thread: Option<SlackThread>,
    },
    /// A channel asked us to wait.
    RetryAfter(Duration),
    /// Try again later: temporary failure or another worker mid-send.
    Retry(String),
    /// A channel refused for good; a person must act.
    Permanent {
        channel: &'static str,
        reason: String,
    },
}

fn delivery_key(notification_id: &str, channel: &str, part: usize) -> String {
    format!("notify#{notification_id}#{channel}#{part}")
}

/// The thread a completed delivery recorded, so a replayed delivery still knows it.
fn recorded_thread(saved: &serde_json::Value) -> Option<SlackThread> {
    serde_json::from_value(saved.get("thread")?.clone()).ok()
}

pub async fn deliver(
    dedup: &dyn DedupStore,
    channels: &[Arc<dyn NotificationChannel>],
    notification_id: &str,
    message: &Message,
    lease: Duration,
) -> Result<Delivery, StoreError> {
    let mut slack = false;
    let mut thread: Option<SlackThread> = None;
    for channel in channels {
        for (index, part) in channel.parts(message).iter().enumerate() {
            let key = delivery_key(notification_id, channel.name(), index);
            let sent_thread = match dedup.claim(&key, lease).await? {
                Claim::Completed(saved) => recorded_thread(&saved),
                Claim::InProgress => {
                    return Ok(Delivery::Retry(format!(
                        "{key} is being sent by another worker"
                    )))
                }
                Claim::Acquired => match channel.send(part).await {
                    Ok(sent) => {
                        let record = serde_json::json!({
                            "sent_at": crate::base::time::now_rfc3339(),
                            "thread": sent.slack_thread,
                        });
                        dedup.complete(&key, &record).await?;
                        info!(
                            channel = channel.name(),
                            part = index,
                            "notification part sent"
                        );
                        sent.slack_thread
                    }
                    Err(failure) => {
                        dedup.release(&key).await?;
                        return Ok(failed(channel.name(), failure));
                    }
                },
            };
            if thread.is_none() {
                thread = sent_thread;
            }
        }
        slack |= channel.kind() == ChannelKind::Slack;
    }
    Ok(Delivery::Sent { slack, thread })
}

fn failed(channel: &'static str, failure: SendError) -> Delivery {
    match failure {
        SendError::RateLimited(after) => {
            warn!(channel, retry_after_secs = after.as_secs(), "rate limited");
            Delivery::RetryAfter(after)
        }
        SendError::Temporary(reason) => {
            warn!(channel, %reason, "notification failed; will retry");
            Delivery::Retry(reason)
        }
        SendError::Permanent(reason) => {
            error!(channel, %reason, "notification refused permanently");
            Delivery::Permanent { channel, reason }
        }
    }
}
