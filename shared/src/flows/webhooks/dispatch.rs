//! The webhook worker's work: fan an event out to one delivery per
//! subscribed endpoint, make each attempt under a claim, settle it once,
//! and schedule the next.
//!
//! Two lanes. First attempts go to the main queue, which waits at most
//! `slow_after` for an answer: past that the endpoint is marked slow, the
//! request is dropped (its outcome unknown) and the next attempt, with the
//! same webhook-id and the same place in the schedule, goes to the slow
//! queue, where it has the whole 15 s. While the mark lasts, the endpoint's
//! first attempts go straight there, like every retry; the slow queue's
//! consumer has its own concurrency. A hanging endpoint holds up only the
//! slow lane, never another endpoint's first attempts.
//!
//! Retries due within SQS's 15-minute delay are sent with that delay; every
//! retry also has a ledger entry, written in the same transaction that
//! settles the attempt, from which the sweep queues the longer waits when
//! they come within reach (and any short one whose message was lost).

use std::sync::Arc;
use std::time::Duration;

use crate::base::metrics::{self, Metric};
use crate::base::time::{rfc3339, Clock};
use crate::queue::jobs::{self, JobQueue, Notice, NotificationJob, MAX_DELAY};
use crate::queue::sqs_batch::Outcome;
use crate::store::webhooks::{
    AttemptOutcome, AttemptRecord, Claim, Delivery, DeliveryState, Endpoint, Settle, StoredMessage,
    WebhookStore,
};
use crate::store::StoreError;

use super::sender::{Answer, WebhookSender};
use super::{delay_before, signing, AttemptJob, WebhookEvent, WebhookJob, DISABLE_AFTER};

/// What became of a send.
enum Sent {
    Answered(Answer),
    MovedToSlowLane,
}

/// Which queue a job came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Main,
    Slow,
}

#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// How long a claimed attempt is ours (past the attempt's 15 s timeout).
    pub lease: i64,
    /// No answer within this marks the endpoint slow.
    pub slow_after: Duration,
    /// How long the mark keeps its first attempts in the slow lane.
    pub slow_for: i64,
    /// A failure streak this long disables the endpoint.
    pub disable_after: i64,
    /// A queued retry this overdue is assumed lost and queued again.
    pub lost_after: i64,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            lease: 60,
            slow_after: Duration::from_secs(2),
            slow_for: 300,
            disable_after: DISABLE_AFTER,
            lost_after: 300,
        }
    }
}

pub struct Dispatcher {
    pub store: Arc<dyn WebhookStore>,
    pub sender: Arc<dyn WebhookSender>,
    pub main_queue: Arc<dyn JobQueue>,
    pub slow_queue: Arc<dyn JobQueue>,
    /// Where an organisation is told that an endpoint was disabled.
    pub notification_queue: Option<Arc<dyn JobQueue>>,
    pub clock: Arc<dyn Clock>,
    pub settings: DeliverySettings,
}

fn store_err(err: StoreError) -> String {
    err.to_string()
}

fn queue_err(err: jobs::QueueError) -> String {
    err.to_string()
}

impl Dispatcher {
    pub async fn handle(&self, job: WebhookJob, lane: Lane) -> Result<Outcome, String> {
        match job {
            WebhookJob::Event { event, only } => {
                self.fan_out(&event, only.as_deref()).await?;
                Ok(Outcome::Done)
            }
            WebhookJob::Attempt(job) => {
                let lane = if job.slow { Lane::Slow } else { lane };
                self.attempt(&job, lane).await
            }
        }
    }

    /// Stores the event (once) and creates one delivery per subscribed,
    /// enabled endpoint, queueing its first attempt. A redelivered event
    /// re-queues first attempts not yet made; their claims keep it once.
    pub async fn fan_out(&self, event: &WebhookEvent, only: Option<&str>) -> Result<(), String> {
        let now = self.clock.now();
        let expires_at = crate::store::webhooks::expires_at(now);
        self.store
            .put_message(&StoredMessage {
                message_id: event.id.clone(),
                org_id: event.org_id.clone(),
                event_type: event.event_type.clone(),
                timestamp: event.timestamp.clone(),
                body: event.envelope(),
                expires_at,
            })
            .await
            .map_err(store_err)?;
        let endpoints = self
            .store
            .endpoints(&event.org_id)
            .await
            .map_err(store_err)?;
        let targets = endpoints.into_iter().filter(|endpoint| match only {
            Some(id) => endpoint.endpoint_id == id,
            None => endpoint.enabled && endpoint.wants(&event.event_type),
        });
        let trigger = if only.is_some() { "test" } else { "scheduled" };
        let sends = targets.map(|endpoint| async move {
            let fresh = Delivery::first(&event.id, &endpoint.endpoint_id, &event.org_id, now);
            let existing = self
                .store
                .create_delivery(&fresh)
                .await
                .map_err(store_err)?;
            let first_not_made = match &existing {
                None => true,
                Some(d) => d.state == DeliveryState::Pending && d.attempt == 0,
            };
            if first_not_made {
                let job = AttemptJob {
                    org_id: event.org_id.clone(),
                    endpoint_id: endpoint.endpoint_id.clone(),
                    message_id: event.id.clone(),
                    attempt: 0,
                    trigger: trigger.into(),
                    entry: None,
                    slow: is_slow(&endpoint, now),
                };
                let queue = if job.slow {
                    &self.slow_queue
                } else {
                    &self.main_queue
                };
                jobs::send(queue.as_ref(), &WebhookJob::Attempt(job), Duration::ZERO)
                    .await
                    .map_err(queue_err)?;
            }
            Ok::<(), String>(())
        });
        for result in futures_util::future::join_all(sends).await {
            result?;
        }
        Ok(())
    }

    /// One attempt of one delivery.
    pub async fn attempt(&self, job: &AttemptJob, lane: Lane) -> Result<Outcome, String> {
        let now = self.clock.now();
        let Some(endpoint) = self
            .store
            .endpoint(&job.org_id, &job.endpoint_id)
            .await
            .map_err(store_err)?
        else {
            // Deleted: its deliveries end with it.
            if let Some(entry) = &job.entry {
                self.store.drop_retry(entry).await.map_err(store_err)?;
            }
            return Ok(Outcome::Done);
        };
        if lane == Lane::Main && is_slow(&endpoint, now) {
            let forwarded = AttemptJob {
                slow: true,
                ..job.clone()
            };
            jobs::send(
                self.slow_queue.as_ref(),
                &WebhookJob::Attempt(forwarded),
                Duration::ZERO,
            )
            .await
            .map_err(queue_err)?;
            return Ok(Outcome::Done);
        }
        let claim = self
            .store
            .claim(
                &job.message_id,
                &job.endpoint_id,
                job.attempt,
                now,
                now + self.settings.lease,
            )
            .await
            .map_err(store_err)?;
        let (delivery, unknown) = match claim {
            Claim::Claimed { delivery, unknown } => (delivery, unknown),
            // Another worker is sending it: this copy comes back later and
            // finds the attempt settled.
            Claim::Busy => return Ok(Outcome::Retry),
            Claim::Stale(current) => {
                if let Some(entry) = &job.entry {
                    let still_stands = current
                        .as_ref()
                        .is_some_and(|d| d.ledger_entry.as_deref() == Some(entry));
                    if !still_stands {
                        self.store.drop_retry(entry).await.map_err(store_err)?;
                    }
                }
                return Ok(Outcome::Done);
            }
        };
        let message = self
            .store
            .message(&job.message_id)
            .await
            .map_err(store_err)?;
        if let Some(unknown) = unknown {
            let record = self.record(
                &delivery,
                message.as_ref(),
                unknown,
                AttemptOutcome::Unknown,
                &Answer {
                    error: Some("the worker stopped before it recorded the outcome".into()),
                    ..Answer::default()
                },
                &job.trigger,
            );
            self.store
                .record_attempt(&record)
                .await
                .map_err(store_err)?;
        }
        let Some(message) = message else {
            let answer = Answer {
                error: Some("the event expired before it could be sent".into()),
                ..Answer::default()
            };
            return self
                .settle_failed(&delivery, None, &answer, &job.trigger)
                .await;
        };
        if !endpoint.enabled {
            let answer = Answer {
                error: Some(format!(
                    "not sent: endpoint disabled ({})",
                    endpoint.disabled_reason.as_deref().unwrap_or("disabled")
                )),
                ..Answer::default()
            };
            return self
                .settle_failed(&delivery, Some(&message), &answer, &job.trigger)
                .await;
        }
        match self.send(&endpoint, &message, now, lane).await {
            Sent::Answered(answer) => {
                self.conclude(&endpoint, &delivery, &message, answer, &job.trigger)
                    .await
            }
            Sent::MovedToSlowLane => {
                self.move_to_slow_lane(&delivery, &message, &job.trigger)
                    .await
            }
        }
    }

    /// The main lane gave up waiting: the attempt's outcome is unknown, and
    /// the next one (same webhook-id, its place in the schedule unchanged)
    /// goes to the slow lane at once, where it has the full timeout.
    async fn move_to_slow_lane(
        &self,
        delivery: &Delivery,
        message: &StoredMessage,
        trigger: &str,
    ) -> Result<Outcome, String> {
        let now = self.clock.now();
        let waited = Answer {
            error: Some(format!(
                "no answer within {} ms on the main lane; sent again on the slow lane",
                self.settings.slow_after.as_millis()
            )),
            latency_ms: self.settings.slow_after.as_millis() as u64,
            ..Answer::default()
        };
        let record = self.record(
            delivery,
            Some(message),
            delivery.attempt,
            AttemptOutcome::Unknown,
            &waited,
            trigger,
        );
        let settle = Settle::Retry {
            status: None,
            error: waited.error.clone().unwrap_or_default(),
            next_at: now,
            queued: true,
            free: true,
        };
        if !self.settled(delivery, &settle, &record).await? {
            return Ok(Outcome::Done);
        }
        let job = next_attempt(delivery, trigger, now);
        jobs::send(
            self.slow_queue.as_ref(),
            &WebhookJob::Attempt(job),
            Duration::ZERO,
        )
        .await
        .map_err(queue_err)?;
        Ok(Outcome::Done)
    }

    /// Signs and posts, marking the endpoint slow as soon as it keeps us
    /// waiting (not when it finally times out). On the main lane the wait
    /// ends there: the request is dropped and the attempt moves to the slow
    /// lane, so no batch of first attempts waits on a hanging endpoint.
    async fn send(
        &self,
        endpoint: &Endpoint,
        message: &StoredMessage,
        now: i64,
        lane: Lane,
    ) -> Sent {
        let signature = signing::signature_header(
            &endpoint.signing_secrets(now),
            &message.message_id,
            now,
            message.body.as_bytes(),
        );
        let headers = vec![
            ("webhook-id".to_string(), message.message_id.clone()),
            ("webhook-timestamp".to_string(), now.to_string()),
            ("webhook-signature".to_string(), signature),
        ];
        let post = self.sender.post(&endpoint.url, &headers, &message.body);
        tokio::pin!(post);
        tokio::select! {
            answer = &mut post => return Sent::Answered(answer),
            _ = tokio::time::sleep(self.settings.slow_after) => {}
        }
        if !is_slow(endpoint, now) {
            if let Err(err) = self
                .store
                .mark_slow(
                    &endpoint.org_id,
                    &endpoint.endpoint_id,
                    now + self.settings.slow_for,
                )
                .await
            {
                tracing::warn!(error = %err, "could not mark the endpoint slow");
            }
        }
        if lane == Lane::Main {
            return Sent::MovedToSlowLane;
        }
        Sent::Answered(post.await)
    }

    async fn conclude(
        &self,
        endpoint: &Endpoint,
        delivery: &Delivery,
        message: &StoredMessage,
        answer: Answer,
        trigger: &str,
    ) -> Result<Outcome, String> {
        let now = self.clock.now();
        if answer.succeeded() {
            let record = self.record(
                delivery,
                Some(message),
                delivery.attempt,
                AttemptOutcome::Succeeded,
                &answer,
                trigger,
            );
            let settle = Settle::Succeeded {
                status: answer.status.unwrap_or(200),
            };
            self.settled(delivery, &settle, &record).await?;
            let fast = answer.latency_ms < self.settings.slow_after.as_millis() as u64;
            if endpoint.failing_since.is_some() || (endpoint.slow_until.is_some() && fast) {
                self.store
                    .mark_healthy(&endpoint.org_id, &endpoint.endpoint_id)
                    .await
                    .map_err(store_err)?;
            }
            return Ok(Outcome::Done);
        }
        if answer.status == Some(410) {
            self.disable(endpoint, "gone", "it answered 410 Gone")
                .await?;
            return self
                .settle_failed(delivery, Some(message), &answer, trigger)
                .await;
        }
        let since = self
            .store
            .note_failure(&endpoint.org_id, &endpoint.endpoint_id, now)
            .await
            .map_err(store_err)?;
        if now - since >= self.settings.disable_after {
            self.disable(
                endpoint,
                "failing",
                &format!(
                    "every attempt has failed since {}",
                    rfc3339(chrono::DateTime::from_timestamp(since, 0).unwrap_or_default())
                ),
            )
            .await?;
            return self
                .settle_failed(delivery, Some(message), &answer, trigger)
                .await;
        }
        let next = delivery.attempt + 1;
        let Some(wait) = delay_before(next - delivery.series_start) else {
            metrics::count(Metric::WebhookDeliveriesFailed);
            return self
                .settle_failed(delivery, Some(message), &answer, trigger)
                .await;
        };
        let record = self.record(
            delivery,
            Some(message),
            delivery.attempt,
            AttemptOutcome::Failed,
            &answer,
            trigger,
        );
        let queued = wait <= MAX_DELAY.as_secs() as i64;
        let settle = Settle::Retry {
            status: answer.status,
            error: answer.error.clone().unwrap_or_default(),
            next_at: now + wait,
            queued,
            free: false,
        };
        if !self.settled(delivery, &settle, &record).await? {
            return Ok(Outcome::Done);
        }
        if queued {
            let job = next_attempt(delivery, "scheduled", now + wait);
            // If this send is lost, the ledger entry brings it back.
            jobs::send(
                self.slow_queue.as_ref(),
                &WebhookJob::Attempt(job),
                Duration::from_secs(wait as u64),
            )
            .await
            .map_err(queue_err)?;
        }
        Ok(Outcome::Done)
    }

    async fn settle_failed(
        &self,
        delivery: &Delivery,
        message: Option<&StoredMessage>,
        answer: &Answer,
        trigger: &str,
    ) -> Result<Outcome, String> {
        let record = self.record(
            delivery,
            message,
            delivery.attempt,
            AttemptOutcome::Failed,
            answer,
            trigger,
        );
        let settle = Settle::Failed {
            status: answer.status,
            error: answer.error.clone().unwrap_or_default(),
        };
        self.settled(delivery, &settle, &record).await?;
        Ok(Outcome::Done)
    }

    /// Settles; a claim lost meanwhile (lease expired and taken) is logged.
    async fn settled(
        &self,
        delivery: &Delivery,
        settle: &Settle,
        record: &AttemptRecord,
    ) -> Result<bool, String> {
        let ours = self
            .store
            .settle(delivery, settle, record)
            .await
            .map_err(store_err)?;
        if !ours {
            tracing::warn!(
                message_id = %delivery.message_id,
                endpoint_id = %delivery.endpoint_id,
                attempt = delivery.attempt,
                "attempt outlived its claim; another worker took it over"
            );
        }
        Ok(ours)
    }

    fn record(
        &self,
        delivery: &Delivery,
        message: Option<&StoredMessage>,
        attempt: u32,
        outcome: AttemptOutcome,
        answer: &Answer,
        trigger: &str,
    ) -> AttemptRecord {
        let now = self.clock.now();
        AttemptRecord {
            message_id: delivery.message_id.clone(),
            endpoint_id: delivery.endpoint_id.clone(),
            org_id: delivery.org_id.clone(),
            event_type: message.map(|m| m.event_type.clone()).unwrap_or_default(),
            attempt,
            at: rfc3339(chrono::DateTime::from_timestamp(now, 0).unwrap_or_default()),
            at_ms: now * 1000,
            outcome,
            status_code: answer.status,
            latency_ms: answer.latency_ms,
            response: answer.body.clone(),
            error: answer.error.clone(),
            trigger: trigger.to_string(),
            expires_at: crate::store::webhooks::expires_at(now),
        }
    }

    /// Disables the endpoint once; the one call that did tells the
    /// organisation and counts it.
    async fn disable(&self, endpoint: &Endpoint, reason: &str, why: &str) -> Result<(), String> {
        let disabled = self
            .store
            .disable(
                &endpoint.org_id,
                &endpoint.endpoint_id,
                &format!("{reason}: {why}"),
            )
            .await
            .map_err(store_err)?;
        if !disabled {
            return Ok(());
        }
        metrics::count_by(Metric::WebhookEndpointsDisabled, "Reason", reason);
        tracing::warn!(endpoint_id = %endpoint.endpoint_id, org_id = %endpoint.org_id, reason, "webhook endpoint disabled");
        let now = self.clock.now();
        let key = format!("webhook-disabled#{}#{now}", endpoint.endpoint_id);
        if let Some(queue) = &self.notification_queue {
            let notice = Notice {
                subject: format!("Webhook endpoint {} disabled", endpoint.endpoint_id),
                text: format!(
                    "callops disabled webhook endpoint {} ({}) because {why}. Events for it are \
                     no longer sent. Fix the receiver, enable it again (PATCH \
                     /webhook-endpoints/{} with {{\"enabled\": true}}) and recover what it \
                     missed (POST /webhook-endpoints/{}/recover).",
                    endpoint.endpoint_id,
                    endpoint.description,
                    endpoint.endpoint_id,
                    endpoint.endpoint_id
                ),
            };
            jobs::send(
                queue.as_ref(),
                &NotificationJob::notice(&key, &endpoint.org_id, notice),
                Duration::ZERO,
            )
            .await
            .map_err(queue_err)?;
        }
        // The organisation's other endpoints hear of it too.
        let event = WebhookEvent::new(
            &endpoint.org_id,
            "webhook.endpoint.disabled",
            &key,
            rfc3339(chrono::DateTime::from_timestamp(now, 0).unwrap_or_default()),
            serde_json::json!({
                "endpoint_id": endpoint.endpoint_id,
                "reason": reason,
                "detail": why,
            }),
        );
        super::publish(self.main_queue.as_ref(), event)
            .await
            .map_err(queue_err)
    }
}

/// The slow-lane job for the attempt after `delivery`'s, due at `due`
/// (its retry ledger entry named, so a lost copy is found).
fn next_attempt(delivery: &Delivery, trigger: &str, due: i64) -> AttemptJob {
    AttemptJob {
        org_id: delivery.org_id.clone(),
        endpoint_id: delivery.endpoint_id.clone(),
        message_id: delivery.message_id.clone(),
        attempt: delivery.attempt + 1,
        trigger: trigger.to_string(),
        entry: Some(crate::store::webhooks::retry_entry(
            due,
            &delivery.endpoint_id,
            &delivery.message_id,
        )),
        slow: true,
    }
}

/// Whether an endpoint's first attempts go to the slow lane at `now`.
fn is_slow(endpoint: &Endpoint, now: i64) -> bool {
    endpoint.slow_until.is_some_and(|until| until > now)
}

/// Replay and recovery (the API's side): make a delivery due now and queue
/// its attempt.
pub struct Replayer {
    pub store: Arc<dyn WebhookStore>,
    pub main_queue: Arc<dyn JobQueue>,
    pub slow_queue: Arc<dyn JobQueue>,
    pub clock: Arc<dyn Clock>,
}

impl Replayer {
    /// Makes a delivery due now (replay, recover) and queues its attempt.
    pub async fn replay(
        &self,
        org_id: &str,
        endpoint: &Endpoint,
        message_id: &str,
        trigger: &str,
    ) -> Result<Option<u32>, String> {
        let now = self.clock.now();
        let exists = self
            .store
            .delivery(message_id, &endpoint.endpoint_id)
            .await
            .map_err(store_err)?;
        if exists.is_none() {
            // An event from before the endpoint existed or subscribed: its
            // first attempt, number 0.
            let fresh = Delivery::first(message_id, &endpoint.endpoint_id, org_id, now);
            if self
                .store
                .create_delivery(&fresh)
                .await
                .map_err(store_err)?
                .is_none()
            {
                return self
                    .queue_attempt(org_id, endpoint, message_id, 0, trigger)
                    .await
                    .map(Some);
            }
        }
        let Some(attempt) = self
            .store
            .reopen(message_id, &endpoint.endpoint_id, now)
            .await
            .map_err(store_err)?
        else {
            return Ok(None);
        };
        self.queue_attempt(org_id, endpoint, message_id, attempt, trigger)
            .await
            .map(Some)
    }

    async fn queue_attempt(
        &self,
        org_id: &str,
        endpoint: &Endpoint,
        message_id: &str,
        attempt: u32,
        trigger: &str,
    ) -> Result<u32, String> {
        let job = AttemptJob {
            org_id: org_id.to_string(),
            endpoint_id: endpoint.endpoint_id.clone(),
            message_id: message_id.to_string(),
            attempt,
            trigger: trigger.to_string(),
            entry: None,
            slow: is_slow(endpoint, self.clock.now()),
        };
        let queue = if job.slow {
            &self.slow_queue
        } else {
            &self.main_queue
        };
        jobs::send(queue.as_ref(), &WebhookJob::Attempt(job), Duration::ZERO)
            .await
            .map_err(queue_err)?;
        Ok(attempt)
    }
}
