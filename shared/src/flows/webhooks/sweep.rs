//! The sweep's part of webhooks (`stuck-sweep`, every five minutes):
//! retries whose wait is longer than SQS can delay are queued when they come
//! within reach, and `session.ended` is published for sessions ended since
//! the last run (their end wrote a ledger entry in its own transaction).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::{events, publish, AttemptJob, WebhookJob};
use crate::queue::jobs::{self, JobQueue, MAX_DELAY};
use crate::store::sessions::SessionStore;
use crate::store::webhooks::WebhookStore;
use crate::store::StoreError;

/// What one sweep of the retry ledger did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct RetryReport {
    /// Retries queued as they came within SQS's delay.
    pub queued: u32,
    /// Retries whose message was lost, queued again.
    pub requeued: u32,
}

pub struct RetryQueuer {
    pub store: Arc<dyn WebhookStore>,
    pub slow_queue: Arc<dyn JobQueue>,
    /// A queued retry this overdue is assumed lost and queued again.
    pub lost_after: i64,
}

impl RetryQueuer {
    /// Queues retries that came within SQS's delay, and again those whose
    /// message must have been lost. One range query.
    pub async fn run(&self, now: i64, limit: i32) -> Result<RetryReport, StoreError> {
        let horizon = now + MAX_DELAY.as_secs() as i64;
        let mut report = RetryReport::default();
        for entry in self.store.due_retries(horizon, limit).await? {
            let lost = entry.queued && entry.due + self.lost_after < now;
            if entry.queued && !lost {
                continue;
            }
            let job = AttemptJob {
                org_id: entry.org_id.clone(),
                endpoint_id: entry.endpoint_id.clone(),
                message_id: entry.message_id.clone(),
                attempt: entry.attempt,
                trigger: "scheduled".into(),
                entry: Some(entry.entry.clone()),
                slow: true,
            };
            let delay = Duration::from_secs((entry.due - now).max(0) as u64);
            jobs::send(self.slow_queue.as_ref(), &WebhookJob::Attempt(job), delay)
                .await
                .map_err(|e| StoreError::Dynamo(format!("queue: {e}")))?;
            if lost {
                report.requeued += 1;
            } else {
                self.store.mark_queued(&entry.entry).await?;
                report.queued += 1;
            }
        }
        Ok(report)
    }
}

/// Publishes `session.ended` for sessions ended since the last run.
pub struct EndedSessions {
    pub sessions: Arc<dyn SessionStore>,
    pub webhook_queue: Arc<dyn JobQueue>,
}

impl EndedSessions {
    /// The number of events published.
    pub async fn run(&self, limit: i32) -> Result<u32, StoreError> {
        let mut published = 0;
        for ended in self.sessions.ended_unannounced(limit).await? {
            let session = self.sessions.get(&ended.room).await?;
            if let Some((org, session)) = session
                .as_ref()
                .and_then(|s| s.org_id.as_deref().map(|org| (org, s)))
            {
                publish(
                    self.webhook_queue.as_ref(),
                    events::session_ended(org, session),
                )
                .await
                .map_err(|e| StoreError::Dynamo(format!("queue: {e}")))?;
                published += 1;
            }
            self.sessions.mark_announced(&ended).await?;
        }
        Ok(published)
    }
}
