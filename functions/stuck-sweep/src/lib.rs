//! Scheduled (EventBridge, every five minutes): finds work that got stuck.
//!
//! - Recording-pipeline calls still `received`, `queued`, `transcribing` or
//!   `transcribed` past their deadline are re-driven once, then ended
//!   `failed` with a notification (`shared::flows::stuck`).
//! - Sessions (LiveKit rooms) never reported finished are ended with a reason.
//! - Incoming WhatsApp messages still unanswered past their watch entry have
//!   their reply job queued again (`shared::flows::whatsapp::StuckReplies`).
//! - Outbound calls that never reported an end have their budget released.
//!   A call's reservation is settled by its final status callback, the
//!   post-call webhook or the monitor; one still open after the assistant's
//!   `max_call_seconds` plus a margin (Twilio's `TimeLimit` has ended the
//!   call by then) is released at zero seconds, the call marked `failed` and
//!   notified, so a lost callback, or a crash between placing the call and
//!   recording the provider's id, cannot hold an organisation's budget
//!   forever.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use shared::base::config;
use shared::base::metrics::{self, Metric};
use shared::flows::stuck::{StuckCalls, StuckReport, StuckSessions, StuckSessionsReport};
use shared::flows::whatsapp::{StuckReplies, StuckRepliesReport, REPLY_WATCH_AFTER};
use shared::queue::jobs::{self, NotificationJob, NotificationKind};
use shared::store::outbound_calls::{OutboundCallStore, UsageRecorded};
use shared::store::StoreError;
use shared::wiring::Wiring;
use tracing::{info, warn};

/// Why the sweep ended a call; shown on the call record.
pub const NO_END_REPORTED: &str =
    "no end reported within max_call_seconds plus the margin; reservation released";

pub struct StuckSweep {
    pub calls: Arc<dyn OutboundCallStore>,
    pub pipeline: StuckCalls,
    pub sessions: StuckSessions,
    /// `None` only where a test sweeps other work alone.
    pub replies: Option<StuckReplies>,
    /// Most reservations released per run (`SWEEP_BATCH`); the rest wait
    /// for the next run.
    pub batch: i32,
}

/// What one run did.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Recording-pipeline calls re-driven or failed.
    pub pipeline: StuckReport,
    /// Sessions ended because their room never reported finishing.
    pub sessions: StuckSessionsReport,
    /// Unanswered WhatsApp messages re-queued or given up.
    pub replies: StuckRepliesReport,
    /// Calls whose reservation this run released.
    pub released: Vec<String>,
    /// Calls settled by someone else between the ledger read and ours.
    pub already_settled: usize,
}

impl StuckSweep {
    pub async fn from_env() -> Result<Self, lambda_runtime::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            calls: aws.outbound_calls()?,
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
            sessions: StuckSessions {
                sessions: aws.sessions()?,
            },
            replies: Some(StuckReplies {
                store: aws.whatsapp()?,
                reply_queue: aws.whatsapp_reply_queue()?,
                grace: REPLY_WATCH_AFTER,
                max_redrives: 3,
            }),
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
            sessions: self.sessions.sweep(now, self.batch).await?,
            ..SweepReport::default()
        };
        if let Some(replies) = &self.replies {
            report.replies = replies.sweep(now, self.batch).await?;
        }
        if !report.sessions.ended.is_empty() {
            metrics::count_n(Metric::StuckSessions, report.sessions.ended.len() as u64);
        }
        let stuck = report.pipeline.redriven.len() + report.pipeline.failed.len();
        if stuck > 0 {
            metrics::count_n(Metric::StuckCalls, stuck as u64);
        }
        for call_ref in self.calls.due_reservations(now, self.batch).await? {
            let Some(call) = self.calls.get(&call_ref).await? else {
                warn!(%call_ref, "open reservation without a call record");
                continue;
            };
            self.calls
                .advance_status(&call_ref, "failed", Some(NO_END_REPORTED))
                .await?;
            match self.calls.record_duration(&call, 0).await? {
                UsageRecorded::Counted => {
                    info!(%call_ref, "reservation released by the sweep");
                    let job =
                        NotificationJob::for_call(&call_ref, NotificationKind::OutboundCallSummary)
                            .of_org(call.org_id.as_deref());
                    jobs::send(
                        self.pipeline.notification_queue.as_ref(),
                        &job,
                        Duration::ZERO,
                    )
                    .await
                    .map_err(|err| StoreError::Dynamo(format!("queue: {err}")))?;
                    report.released.push(call_ref);
                }
                UsageRecorded::AlreadyCounted => report.already_settled += 1,
            }
        }
        if !report.released.is_empty() {
            metrics::count_n(Metric::ReservationsReleased, report.released.len() as u64);
        }
        Ok(report)
    }
}
