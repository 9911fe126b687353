//! Scheduled (EventBridge, every five minutes): finds work that got stuck.
//!
//! - Recording-pipeline calls still `received`, `queued`, `transcribing` or
//!   `transcribed` past their deadline are re-driven once, then ended
//!   `failed` with a notification (`shared::flows::stuck`).
//! - Call starts the calls stream never carried out (their event was lost)
//!   are carried out when their watch falls due
//!   (`shared::flows::call_start::StuckStarts`).
//! - Sessions (LiveKit rooms) never reported finished are asked of LiveKit:
//!   a room it no longer has is ended as `room_finished` would have ended it.
//! - Incoming WhatsApp messages still unanswered past their watch entry have
//!   their reply job queued again (`shared::flows::whatsapp::StuckReplies`);
//!   messages we sent whose status stopped short of delivered are asked of
//!   Twilio (`StatusCheck`).
//! - Outbound calls that never reported an end are asked of their provider
//!   (`shared::flows::reconcile`): a call's reservation is settled by its
//!   final status callback, the post-call webhook or the monitor; one still
//!   open after the assistant's `max_call_seconds` plus a margin is read at
//!   Twilio or ElevenLabs and the answer applied as the lost webhook would
//!   have been. Nothing is settled by guessing.
//! - Webhooks out (`shared::flows::webhooks::sweep`): retries whose wait is
//!   longer than SQS can delay are queued when they come within 15 minutes;
//!   `session.ended` is published for sessions ended since the last run.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use shared::base::config;
use shared::base::metrics::{self, Metric};
use shared::flows::call_start::{StuckStarts, StuckStartsReport};
use shared::flows::reconcile::{ReconcileReport, Reconciler};
use shared::flows::stuck::{StuckCalls, StuckReport, StuckSessions, StuckSessionsReport};
use shared::flows::webhooks::sweep::{EndedSessions, RetryQueuer, RetryReport};
use shared::flows::whatsapp::{
    StatusCheck, StatusCheckReport, StuckReplies, StuckRepliesReport, REPLY_WATCH_AFTER,
};
use shared::providers::org_accounts::TwilioAccounts;
use shared::store::StoreError;
use shared::wiring::{self, Wiring};
use tracing::info;

pub struct StuckSweep {
    /// Outbound calls that never reported an end.
    pub reconcile: Reconciler,
    pub pipeline: StuckCalls,
    /// Call starts whose stream event was lost.
    pub starts: StuckStarts,
    pub sessions: StuckSessions,
    /// `None` only where a test sweeps other work alone.
    pub replies: Option<StuckReplies>,
    /// Sent WhatsApp messages whose status callbacks were lost; `None`
    /// without a Twilio account.
    pub statuses: Option<StatusCheck>,
    /// Webhook retries due later than SQS can delay, and `session.ended`
    /// events; `None` where webhooks are not wired.
    pub webhooks: Option<WebhookSweep>,
    /// Most entries of each ledger looked at per run (`SWEEP_BATCH`); the
    /// rest wait for the next run.
    pub batch: i32,
}

/// The sweep's webhook work.
pub struct WebhookSweep {
    pub retries: RetryQueuer,
    pub ended_sessions: EndedSessions,
}

/// What one run did.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Recording-pipeline calls re-driven or failed.
    pub pipeline: StuckReport,
    /// Call starts carried out by the sweep.
    pub starts: StuckStartsReport,
    /// Sessions ended because their room never reported finishing.
    pub sessions: StuckSessionsReport,
    /// Unanswered WhatsApp messages re-queued or given up.
    pub replies: StuckRepliesReport,
    /// Sent WhatsApp messages' statuses asked of Twilio.
    pub statuses: StatusCheckReport,
    /// Outbound calls asked of their provider.
    pub calls: ReconcileReport,
    /// Webhook retries queued as they came within SQS's delay.
    pub webhook_retries: RetryReport,
    /// `session.ended` events published.
    pub sessions_announced: u32,
}

impl StuckSweep {
    pub async fn from_env() -> Result<Self, lambda_runtime::Error> {
        let aws = Wiring::load().await;
        let providers = wiring::providers()?;
        Ok(Self {
            reconcile: Reconciler {
                calls: aws.outbound_calls()?,
                events: aws.provider_event_intake()?,
                notifications: aws.notification_queue()?,
                twilio: providers.twilio.clone(),
                elevenlabs: providers.elevenlabs,
                org_accounts: aws.org_accounts()?,
                reads_per_provider: config::parsed_or("RECONCILE_READS_PER_PROVIDER", 150)?,
            },
            pipeline: StuckCalls {
                calls: aws.calls()?,
                transcription_queue: aws.queue("TRANSCRIPTION_QUEUE_URL")?,
                notification_queue: aws.notification_queue()?,
                redrive_grace: Duration::from_secs(config::parsed_or(
                    "STUCK_REDRIVE_GRACE_SECONDS",
                    1800,
                )?),
                transcription_deadline: Duration::from_secs(config::parsed_or(
                    "TRANSCRIPTION_DEADLINE_SECONDS",
                    3600,
                )?),
            },
            starts: StuckStarts {
                carry: aws.started_calls()?,
                notification_queue: aws.notification_queue()?,
            },
            sessions: StuckSessions {
                sessions: aws.sessions()?,
                // Asked of LiveKit wherever sessions can exist at all.
                livekit: match config::optional("LIVEKIT_URL") {
                    Some(_) => Some(Arc::new(wiring::LiveKitRoomProbe(wiring::livekit()?))),
                    None => None,
                },
            },
            replies: Some(StuckReplies {
                store: aws.whatsapp()?,
                reply_queue: aws.whatsapp_reply_queue()?,
                grace: REPLY_WATCH_AFTER,
                max_redrives: 3,
            }),
            statuses: match providers.twilio.clone() {
                Some(deployment) => Some(StatusCheck {
                    store: aws.whatsapp()?,
                    twilio: TwilioAccounts {
                        deployment,
                        orgs: aws.org_accounts()?,
                    },
                }),
                None => None,
            },
            webhooks: match aws.webhook_queue() {
                Some(webhook_queue) => Some(WebhookSweep {
                    retries: RetryQueuer {
                        store: aws.webhooks()?,
                        slow_queue: aws.queue("WEBHOOK_SLOW_QUEUE_URL")?,
                        lost_after: 300,
                    },
                    ended_sessions: EndedSessions {
                        sessions: aws.sessions()?,
                        webhook_queue,
                    },
                }),
                None => None,
            },
            batch: config::parsed_or("SWEEP_BATCH", 100)?,
        })
    }

    /// Releases every reservation due now. An error stops the run (the next
    /// run picks up where it stopped: the ledger only loses settled entries).
    pub async fn run(&self) -> Result<SweepReport, StoreError> {
        self.run_at(shared::base::time::epoch_secs()).await
    }

    /// One run as of `now` (epoch seconds).
    pub async fn run_at(&self, now: i64) -> Result<SweepReport, StoreError> {
        let mut report = SweepReport {
            pipeline: self.pipeline.sweep(now, self.batch).await?,
            starts: self.starts.sweep(now, self.batch).await?,
            sessions: self.sessions.sweep(now, self.batch).await?,
            ..SweepReport::default()
        };
        if let Some(replies) = &self.replies {
            report.replies = replies.sweep(now, self.batch).await?;
        }
        if let Some(statuses) = &self.statuses {
            report.statuses = statuses.sweep(now, self.batch).await?;
        }
        // Ended unasked or found gone at LiveKit: either way a lost room_finished.
        let lost = report.sessions.ended.len() + report.sessions.reconciled.len();
        if lost > 0 {
            metrics::count_n(Metric::StuckSessions, lost as u64);
        }
        let stuck = report.pipeline.redriven.len() + report.pipeline.failed.len();
        if stuck > 0 {
            metrics::count_n(Metric::StuckCalls, stuck as u64);
        }
        if let Some(webhooks) = &self.webhooks {
            // Retries are cheap (one send each): a larger bound than the ledgers'.
            report.webhook_retries = webhooks.retries.run(now, self.batch * 5).await?;
            report.sessions_announced = webhooks.ended_sessions.run(self.batch).await?;
        }
        // Calls have their own bound: reads per provider, two providers.
        let calls_batch = i32::try_from(self.reconcile.reads_per_provider * 2).unwrap_or(i32::MAX);
        report.calls = self.reconcile.run(now, calls_batch).await?;
        if !report.calls.released.is_empty() {
            metrics::count_n(
                Metric::ReservationsReleased,
                report.calls.released.len() as u64,
            );
        }
        let unreconciled = report.calls.unreconciled.len() + report.sessions.unreconciled.len();
        if unreconciled > 0 {
            metrics::count_n(Metric::CallsUnreconciled, unreconciled as u64);
        }
        info!(
            reconciled = report.calls.reconciled.len(),
            still_open = report.calls.still_open.len(),
            unanswered = report.calls.unanswered.len(),
            deferred = report.calls.deferred,
            "outbound calls asked of their providers"
        );
        Ok(report)
    }
}
