//! Sending a message on every channel exactly once per part, across
//! redeliveries and concurrent workers: each part's delivery is claimed in
//! the dedup store before it is sent and completed after.

use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};

use super::{ChannelKind, Message, NotificationChannel, SendError, SlackThread};
use crate::store::dedup::{complete_retrying, Claim, DedupStore, Settled};
use crate::store::StoreError;

/// How long a worker holds a part's delivery record. Longer than the
/// NotificationQueue's visibility timeout (180 s in template.yaml, itself
/// six times the worker's 30 s timeout), so no receive of the same message
/// can take a part over while the worker that claimed it may still be
/// running; the price is that a worker that crashed mid-send delays that
/// part by one more receive. `integration::delivery` checks it against the
/// template.
pub const DEFAULT_PART_LEASE: Duration = Duration::from_secs(240);

/// First re-send delay after a temporary failure; doubles per attempt.
pub const DEFAULT_RESEND_BASE: Duration = Duration::from_secs(2);

/// Exponential backoff for re-sending a job after a 429 or a temporary
/// failure: `base * 2^attempt`, capped at SQS's longest delay, jittered into
/// [half, whole] so jobs that failed together do not come back together,
/// while each attempt still waits at least as long as the one before.
pub fn resend_delay(base: Duration, attempt: u32) -> Duration {
    crate::base::time::jitter(
        base.saturating_mul(2u32.saturating_pow(attempt.min(16)))
            .min(crate::queue::jobs::MAX_DELAY),
    )
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Every part went out (now or on an earlier delivery).
    Sent {
        slack: bool,
        /// Where the first threadable Slack part landed, for later replies.
        thread: Option<SlackThread>,
    },
    /// A channel failed for now (429, 5xx, network): send the job again
    /// later, no sooner than `at_least` (the channel's `Retry-After`).
    Later { at_least: Duration, reason: String },
    /// Another worker is mid-send: let SQS redeliver.
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
                Claim::Acquired(owner) => match channel.send(part).await {
                    Ok(sent) => {
                        let record = serde_json::json!({
                            "sent_at": crate::base::time::now_rfc3339(),
                            "thread": sent.slack_thread,
                        });
                        match complete_retrying(dedup, &key, &owner, &record).await {
                            Ok(Settled::Done) => {}
                            // Only after our lease ran out; the new owner may post again.
                            Ok(Settled::Lost) => {
                                error!(%key, "part sent after its claim was taken over")
                            }
                            Err(err) => {
                                // Sent but unrecorded: the claim blocks redeliveries
                                // until its lease ends; only then is it sent again.
                                error!(%key, error = %err, "part sent but its record not saved");
                                return Err(err);
                            }
                        }
                        info!(
                            channel = channel.name(),
                            part = index,
                            "notification part sent"
                        );
                        sent.slack_thread
                    }
                    Err(failure) => {
                        if dedup.release(&key, &owner).await? == Settled::Lost {
                            warn!(%key, "claim was taken over before release");
                        }
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
            Delivery::Later {
                at_least: after,
                reason: format!("{channel} rate limited"),
            }
        }
        SendError::Temporary(reason) => {
            warn!(channel, %reason, "notification failed; will retry");
            Delivery::Later {
                at_least: Duration::ZERO,
                reason,
            }
        }
        SendError::Permanent(reason) => {
            error!(channel, %reason, "notification refused permanently");
            Delivery::Permanent { channel, reason }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resend_delays_grow_with_jitter_and_a_cap() {
        let base = Duration::from_secs(2);
        for attempt in 0..6 {
            let ceiling = base * 2u32.pow(attempt);
            for _ in 0..20 {
                let delay = resend_delay(base, attempt);
                assert!(
                    delay >= ceiling / 2 && delay <= ceiling,
                    "{attempt}: {delay:?}"
                );
            }
        }
        // Each attempt's shortest wait is the previous one's longest.
        assert!(resend_delay(base, 3) >= resend_delay(base, 2));
        assert!(resend_delay(base, 40) <= crate::queue::jobs::MAX_DELAY);
        assert_eq!(resend_delay(Duration::ZERO, 3), Duration::ZERO);
    }
}
