//! Sending a message on every channel exactly once per part, across
//! redeliveries and concurrent workers: each part's delivery is claimed in
//! the dedup store before it is sent and completed after.

use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};

use super::{ChannelKind, Message, NotificationChannel, SendError};
use crate::dedup::{Claim, DedupStore};
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Every part went out (now or on an earlier delivery).
    Sent { slack: bool },
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

pub async fn deliver(
    dedup: &dyn DedupStore,
    channels: &[Arc<dyn NotificationChannel>],
    notification_id: &str,
    message: &Message,
    lease: Duration,
) -> Result<Delivery, StoreError> {
    let mut slack = false;
    for channel in channels {
        for (index, part) in channel.parts(message).iter().enumerate() {
            let key = delivery_key(notification_id, channel.name(), index);
            match dedup.claim(&key, lease).await? {
                Claim::Completed(_) => continue,
                Claim::InProgress => {
                    return Ok(Delivery::Retry(format!(
                        "{key} is being sent by another worker"
                    )))
                }
                Claim::Acquired => {}
            }
            match channel.send(part).await {
                Ok(()) => {
                    dedup
                        .complete(
                            &key,
                            &serde_json::json!({"sent_at": crate::time::now_rfc3339()}),
                        )
                        .await?;
                    info!(
                        channel = channel.name(),
                        part = index,
                        "notification part sent"
                    );
                }
                Err(failure) => {
                    dedup.release(&key).await?;
                    return Ok(match failure {
                        SendError::RateLimited(after) => {
                            warn!(
                                channel = channel.name(),
                                retry_after_secs = after.as_secs(),
                                "rate limited"
                            );
                            Delivery::RetryAfter(after)
                        }
                        SendError::Temporary(reason) => {
                            warn!(channel = channel.name(), %reason, "notification failed; will retry");
                            Delivery::Retry(reason)
                        }
                        SendError::Permanent(reason) => {
                            error!(channel = channel.name(), %reason, "notification refused permanently");
                            Delivery::Permanent {
                                channel: channel.name(),
                                reason,
                            }
                        }
                    });
                }
            }
        }
        slack |= channel.kind() == ChannelKind::Slack;
    }
    Ok(Delivery::Sent { slack })
}
