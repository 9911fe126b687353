//! Replies whose job never ran: `/whatsapp/message` answers 200 once the
//! message is stored (Twilio would not retry a 503 anyway), so a queue send
//! that failed, or a crash before it, must not cost the reply. Every incoming
//! message is stored with a `replies#watch` entry due `REPLY_WATCH_AFTER`
//! later; the stuck sweep drops the entries of settled replies and re-queues
//! the rest (the worker claims `wa-reply#<sid>`, so a job that was only slow
//! is not answered twice), a bounded number of times.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::providers::org_accounts::TwilioAccounts;
use crate::queue::jobs::{self, JobQueue, WhatsAppReplyJob};
use crate::store::whatsapp::{PendingReply, StatusApplied, WhatsAppStore};
use crate::store::StoreError;

/// When an incoming message's reply is first checked by the sweep.
pub const REPLY_WATCH_AFTER: Duration = Duration::from_secs(300);

pub(super) fn job_of(pending: &PendingReply) -> WhatsAppReplyJob {
    WhatsAppReplyJob {
        message_sid: pending.message_sid.clone(),
        conversation: pending.conversation.clone(),
        reply_to: pending.reply_to.clone(),
        reply_from: pending.reply_from.clone(),
        body: pending.body.clone(),
        num_media: pending.num_media,
    }
}

pub struct StuckReplies {
    pub store: Arc<dyn WhatsAppStore>,
    pub reply_queue: Arc<dyn JobQueue>,
    /// Until the next look at a re-queued reply.
    pub grace: Duration,
    /// Re-queues before the sweep gives up (logged as an error).
    pub max_redrives: u32,
}

/// What one sweep of the replies did.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct StuckRepliesReport {
    /// Incoming messages whose reply job was queued again.
    pub requeued: Vec<String>,
    /// Entries of replies that were sent or settled; dropped.
    pub settled: usize,
    /// Replies still unsent after every re-queue; dropped.
    pub given_up: Vec<String>,
}

impl StuckReplies {
    pub async fn sweep(&self, now: i64, limit: i32) -> Result<StuckRepliesReport, StoreError> {
        let mut report = StuckRepliesReport::default();
        for due in self.store.due_replies(now, limit).await? {
            let p = &due.pending;
            let record = self
                .store
                .reply(&p.conversation, &p.message_sid)
                .await?
                .unwrap_or_default();
            let settled = record.reply_sid.is_some()
                || matches!(record.state.as_deref(), Some("none" | "failed"));
            if settled {
                self.store.drop_reply_watch(&due).await?;
                report.settled += 1;
            } else if due.redrives >= self.max_redrives {
                tracing::error!(message_sid = %p.message_sid, redrives = due.redrives, "WhatsApp reply still unsent after every re-queue");
                self.store.drop_reply_watch(&due).await?;
                report.given_up.push(p.message_sid.clone());
            } else {
                jobs::send(self.reply_queue.as_ref(), &job_of(p), Duration::ZERO)
                    .await
                    .map_err(|err| StoreError::Dynamo(format!("queue: {err}")))?;
                let grace = i64::try_from(self.grace.as_secs()).unwrap_or(i64::MAX / 2);
                self.store.reschedule_reply(&due, now + grace).await?;
                tracing::warn!(message_sid = %p.message_sid, "unanswered WhatsApp message re-queued");
                report.requeued.push(p.message_sid.clone());
            }
        }
        Ok(report)
    }
}

/// Sent messages whose status callbacks stopped short of an end: every
/// message we send gets a `statuses#watch` entry (`store::whatsapp`); once
/// due, a message still `queued`, `sending` or `sent` is asked of Twilio's
/// Message resource (with its organisation's own account where it has one)
/// and the answer applied through the callback's own write
/// (`apply_status`, by rank), so a late callback changes nothing.
pub struct StatusCheck {
    pub store: Arc<dyn WhatsAppStore>,
    pub twilio: TwilioAccounts,
}

/// When a message still on its way is asked about again.
pub const STATUS_RECHECK_SECS: i64 = 30 * 60;
/// A message still `sent` a day after sending (a phone off for days) is
/// left as it is: its entry is dropped.
pub const STATUS_GIVE_UP_SECS: i64 = 24 * 3600;

/// Statuses after which nothing is worth asking: it arrived, or never will.
fn arrived_or_failed(status: &str) -> bool {
    matches!(
        status,
        "delivered" | "read" | "failed" | "undelivered" | "canceled"
    )
}

/// What one look at sent messages' statuses did.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatusCheckReport {
    /// Messages whose status Twilio's answer moved (lost callbacks).
    pub updated: Vec<String>,
    /// Entries of messages whose callbacks had arrived; dropped.
    pub settled: usize,
    /// Still on their way at Twilio: asked again later.
    pub still_pending: Vec<String>,
    /// Twilio did not answer: asked again with backoff.
    pub unanswered: Vec<String>,
    /// Still not delivered a day after sending; dropped.
    pub given_up: Vec<String>,
}

impl StatusCheck {
    pub async fn sweep(&self, now: i64, limit: i32) -> Result<StatusCheckReport, StoreError> {
        let mut report = StatusCheckReport::default();
        for due in self.store.due_status_checks(now, limit).await? {
            let Some((status, conversation)) = self.store.message_status(&due.sid).await? else {
                // Expired, or never recorded: nothing to move.
                self.store.drop_status_check(&due).await?;
                report.settled += 1;
                continue;
            };
            if arrived_or_failed(&status) {
                self.store.drop_status_check(&due).await?;
                report.settled += 1;
                continue;
            }
            if now - due.sent_at >= STATUS_GIVE_UP_SECS {
                tracing::warn!(sid = %due.sid, %status, "WhatsApp message still not delivered a day later");
                self.store.drop_status_check(&due).await?;
                report.given_up.push(due.sid);
                continue;
            }
            let org = conversation.split_once('#').map(|(org, _)| org);
            let answer = match self.twilio.account_for(org).await {
                Ok(client) => client.fetch_message(&due.sid).await,
                Err(err) => Err(crate::providers::twilio::ReadFailure {
                    reason: err.detail(),
                    status: None,
                    retry_after_secs: None,
                }),
            };
            match answer {
                Ok(Some(state)) => {
                    let applied = self
                        .store
                        .apply_status(&due.sid, &state.status, state.error_code.as_deref())
                        .await?;
                    if applied == StatusApplied::Applied {
                        report.updated.push(due.sid.clone());
                    }
                    if arrived_or_failed(&state.status) {
                        self.store.drop_status_check(&due).await?;
                    } else {
                        self.store
                            .reschedule_status_check(&due, now + STATUS_RECHECK_SECS, 0)
                            .await?;
                        report.still_pending.push(due.sid);
                    }
                }
                other => {
                    let (reason, retry_after) = match other {
                        Err(failure) => (failure.reason, failure.retry_after_secs),
                        _ => ("Twilio does not know the message".to_string(), None),
                    };
                    let attempts = due.attempts.saturating_add(1);
                    let wait = crate::flows::reconcile::backoff_secs(attempts, retry_after);
                    tracing::warn!(sid = %due.sid, %reason, attempts, "Twilio not answering about a WhatsApp message");
                    self.store
                        .reschedule_status_check(&due, now + wait, attempts)
                        .await?;
                    report.unanswered.push(due.sid);
                }
            }
        }
        Ok(report)
    }
}
