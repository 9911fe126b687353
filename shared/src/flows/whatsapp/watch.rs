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

use crate::queue::jobs::{self, JobQueue, WhatsAppReplyJob};
use crate::store::whatsapp::{PendingReply, WhatsAppStore};
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
