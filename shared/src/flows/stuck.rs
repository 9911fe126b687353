//! Calls of the recording pipeline that stopped moving: a job lost to a
//! crash, a transcription that never reported back, a notification never
//! queued. Every call has an entry in the calls table's watch ledger from
//! the moment it is recorded; once it is due, a call already final is
//! dropped from the ledger, a call still `received`, `queued`,
//! `transcribing` or `transcribed` is re-driven once (its job sent again,
//! the entry moved on by a grace period), and a call still stuck after that
//! is ended `failed` with the reason and its failure notification.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::queue::jobs::{self, JobQueue, NotificationJob, NotificationKind, TranscriptionJob};
use crate::store::calls::{CallRecord, CallStatus, CallStore, Watch};
use crate::store::sessions::SessionStore;
use crate::store::StoreError;

pub struct StuckCalls {
    pub calls: Arc<dyn CallStore>,
    pub transcription_queue: Arc<dyn JobQueue>,
    pub notification_queue: Arc<dyn JobQueue>,
    /// How long a re-driven call has before it is ended `failed`.
    pub redrive_grace: Duration,
    /// A re-driven transcription's own deadline (`TRANSCRIPTION_DEADLINE_SECONDS`).
    pub transcription_deadline: Duration,
}

/// What one sweep of the pipeline did.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct StuckReport {
    /// Calls whose work was sent again.
    pub redriven: Vec<String>,
    /// Calls ended `failed` after their second chance.
    pub failed: Vec<String>,
    /// Entries of calls that had finished; dropped.
    pub finished: usize,
}

const STILL_MOVING: [CallStatus; 4] = [
    CallStatus::Received,
    CallStatus::Queued,
    CallStatus::Transcribing,
    CallStatus::Transcribed,
];

fn queue_error(err: impl std::fmt::Display) -> StoreError {
    StoreError::Dynamo(format!("queue: {err}"))
}

impl StuckCalls {
    /// Looks at every call whose watch entry is due at `now` (epoch seconds).
    pub async fn sweep(&self, now: i64, limit: i32) -> Result<StuckReport, StoreError> {
        let mut report = StuckReport::default();
        for watch in self.calls.due_watches(now, limit).await? {
            let record = match self.calls.get(&watch.call_id).await? {
                Some(record) if STILL_MOVING.contains(&record.status) => record,
                _ => {
                    self.calls.drop_watch(&watch).await?;
                    report.finished += 1;
                    continue;
                }
            };
            if self.calls.mark_redriven(&record.call_id).await? {
                self.redrive(&record, now).await?;
                let grace = i64::try_from(self.redrive_grace.as_secs()).unwrap_or(i64::MAX / 2);
                self.calls.reschedule_watch(&watch, now + grace).await?;
                report.redriven.push(record.call_id);
            } else {
                self.fail(&record, &watch).await?;
                report.failed.push(record.call_id);
            }
        }
        Ok(report)
    }

    /// Sends the call's next job again: its transcription, or its summary.
    async fn redrive(&self, record: &CallRecord, now: i64) -> Result<(), StoreError> {
        tracing::warn!(call_id = %record.call_id, status = record.status.as_str(), "stuck call re-driven");
        if record.status == CallStatus::Transcribed {
            let job = NotificationJob::for_call(&record.call_id, NotificationKind::CallSummary)
                .of_org(record.org_id.as_deref());
            return jobs::send(self.notification_queue.as_ref(), &job, Duration::ZERO)
                .await
                .map_err(queue_error);
        }
        let Some(recording_url) = record.recording_url.clone() else {
            return Ok(());
        };
        // A submission that died mid-upload is claimed again from `queued`.
        if record.status == CallStatus::Transcribing && record.transcript_id.is_none() {
            self.calls
                .transition(
                    &record.call_id,
                    &[CallStatus::Transcribing],
                    CallStatus::Queued,
                    Some("re-driven: transcription never submitted"),
                )
                .await?;
        }
        let deadline = i64::try_from(self.transcription_deadline.as_secs()).unwrap_or(3600);
        let job = TranscriptionJob {
            call_id: record.call_id.clone(),
            recording_url,
            source: record.source,
            transcript_id: record.transcript_id.clone(),
            checks: 0,
            deadline: now + deadline,
            accepted_at: Some(now),
            org_id: record.org_id.clone(),
        };
        jobs::send(self.transcription_queue.as_ref(), &job, Duration::ZERO)
            .await
            .map_err(queue_error)
    }

    /// Ends a call that stayed stuck after its second chance.
    async fn fail(&self, record: &CallRecord, watch: &Watch) -> Result<(), StoreError> {
        let reason = format!(
            "stuck in {} past its deadline, also after being re-driven once",
            record.status.as_str()
        );
        let moved = self
            .calls
            .transition(
                &record.call_id,
                &STILL_MOVING,
                CallStatus::Failed,
                Some(&reason),
            )
            .await?;
        if moved {
            tracing::error!(call_id = %record.call_id, %reason, "stuck call failed");
            let job =
                NotificationJob::for_call(&record.call_id, NotificationKind::TranscriptionFailed)
                    .of_org(record.org_id.as_deref());
            jobs::send(self.notification_queue.as_ref(), &job, Duration::ZERO)
                .await
                .map_err(queue_error)?;
        }
        self.calls.drop_watch(watch).await
    }
}

/// Where a session's LiveKit room stands (`RoomService/ListParticipants`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomState {
    /// LiveKit no longer has the room: it finished.
    Gone,
    /// The room exists, with this many participants.
    Live { participants: usize },
}

/// Asks LiveKit about one room; the error is the reason it could not.
#[async_trait::async_trait]
pub trait RoomProbe: Send + Sync {
    async fn room(&self, room: &str) -> Result<RoomState, String>;
    /// Whether the egress `egress_id` of `room` is still starting or
    /// active (`Egress/ListEgress`).
    async fn egress_active(&self, room: &str, egress_id: &str) -> Result<bool, String>;
}

/// Voice-agent sessions (LiveKit rooms) whose `room_finished` never came.
/// Once due (`SESSION_FIRST_CHECK` after the session was seen), a session
/// still open is asked of LiveKit: a room LiveKit no longer has is ended
/// through `room_finished`'s own path and marked `reconciled`; a live room
/// is asked again 15 minutes later; no answer backs off like outbound calls
/// (`flows::reconcile`). Without a LiveKit client (and for calls reported
/// through `/calls/started`, whose end nothing reports) it is ended with a
/// reason once `DEFAULT_SESSION_MAX` from its start has passed, so it stops
/// counting as active.
pub struct StuckSessions {
    pub sessions: Arc<dyn SessionStore>,
    pub livekit: Option<Arc<dyn RoomProbe>>,
}

/// When an open session that is not asked of LiveKit may be ended: its
/// start plus `DEFAULT_SESSION_MAX`, if that is still ahead of `now`.
fn unasked_deadline(session: &crate::store::sessions::SessionRecord, now: i64) -> Option<i64> {
    let started = chrono::DateTime::parse_from_rfc3339(session.started_at.as_deref()?).ok()?;
    let max = i64::try_from(crate::store::sessions::DEFAULT_SESSION_MAX.as_secs()).ok()?;
    let deadline = started.timestamp() + max;
    (deadline > now).then_some(deadline)
}

/// When a room LiveKit still has is asked about again.
pub const LIVE_ROOM_RECHECK_SECS: i64 = 15 * 60;

/// What one sweep of the sessions did.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct StuckSessionsReport {
    /// Sessions ended by this sweep without asking LiveKit.
    pub ended: Vec<String>,
    /// Sessions whose room LiveKit no longer has: ended as `room_finished`.
    pub reconciled: Vec<String>,
    /// Rooms LiveKit still has: asked again later.
    pub still_open: Vec<String>,
    /// LiveKit did not answer: asked again with backoff.
    pub unanswered: Vec<String>,
    /// Open sessions not asked of LiveKit whose allowance
    /// (`DEFAULT_SESSION_MAX` from their start) has not passed yet: their
    /// entry moved to its end.
    pub waiting: usize,
    /// Rooms whose recording had ended at LiveKit with no `egress_ended`:
    /// their session's recording switched off.
    pub recordings_ended: Vec<String>,
    /// Unanswered `UNRECONCILED_AFTER` times in a row or more.
    pub unreconciled: Vec<String>,
    /// Calls an agent reported through `/calls/started` and never reported
    /// ending (nothing can): ended on schedule, not a lost webhook.
    pub expired: Vec<String>,
    /// Entries of sessions that had ended on their own, or were written for
    /// a conversation of the room that has since ended; dropped.
    pub finished: usize,
}

/// The reason a session ended by the sweep carries.
pub const SESSION_NEVER_FINISHED: &str =
    "no room_finished within the session's deadline; ended by the sweep";

/// The reason a reported call ended by the sweep carries.
pub const REPORTED_NEVER_FINISHED: &str =
    "reported by /calls/started; no end is ever reported, ended after the session's deadline";

impl StuckSessions {
    pub async fn sweep(&self, now: i64, limit: i32) -> Result<StuckSessionsReport, StoreError> {
        let mut report = StuckSessionsReport::default();
        let ended_at = chrono::DateTime::from_timestamp(now, 0)
            .map(crate::base::time::rfc3339)
            .unwrap_or_else(crate::base::time::now_rfc3339);
        for watch in self.sessions.due_watches(now, limit).await? {
            let session = self.sessions.get(&watch.room).await?;
            // An entry written for an earlier conversation of a reopened
            // room is not about the one open now.
            let open = session.as_ref().filter(|s| {
                s.ended_at.is_none()
                    && watch
                        .conversation
                        .as_ref()
                        .is_none_or(|c| s.conversation.as_ref() == Some(c))
            });
            let reported = open.is_some_and(|s| s.reported_by.is_some() && s.session_id.is_none());
            let reason = if reported {
                REPORTED_NEVER_FINISHED
            } else {
                SESSION_NEVER_FINISHED
            };
            if let (Some(session), Some(probe), false) = (open, &self.livekit, reported) {
                self.ask(probe.as_ref(), session, &watch, now, &ended_at, &mut report)
                    .await?;
                continue;
            }
            // Ended unasked only once its whole allowance has passed.
            if let Some(deadline) = open.and_then(|s| unasked_deadline(s, now)) {
                self.sessions.reschedule_watch(&watch, deadline, 0).await?;
                report.waiting += 1;
                continue;
            }
            if open.is_some()
                && self
                    .sessions
                    .end_stale(
                        &watch.room,
                        &ended_at,
                        reason,
                        watch.conversation.as_deref(),
                    )
                    .await?
            {
                if reported {
                    report.expired.push(watch.room.clone());
                } else {
                    tracing::warn!(room = %watch.room, "stuck session ended by the sweep");
                    report.ended.push(watch.room.clone());
                }
            } else {
                report.finished += 1;
            }
            self.sessions.drop_watch(&watch).await?;
        }
        Ok(report)
    }

    /// Asks LiveKit about an open session's room and acts on the answer.
    async fn ask(
        &self,
        probe: &dyn RoomProbe,
        session: &crate::store::sessions::SessionRecord,
        watch: &crate::store::sessions::SessionWatch,
        now: i64,
        ended_at: &str,
        report: &mut StuckSessionsReport,
    ) -> Result<(), StoreError> {
        let room = watch.room.clone();
        let answer = probe.room(&room).await;
        // A recording our record still shows running: its end is asked
        // too (the room's end ends it as well).
        if let (Ok(_), Some(true), Some(egress)) =
            (&answer, session.recording, session.egress_id.as_deref())
        {
            let running = match answer {
                Ok(RoomState::Gone) => Ok(false),
                _ => probe.egress_active(&room, egress).await,
            };
            if running == Ok(false) {
                let change = crate::store::sessions::SessionChange::Recording {
                    active: false,
                    egress_id: egress.to_string(),
                    location: session.recording_location.clone(),
                };
                if self.sessions.update(&room, &change).await? {
                    report.recordings_ended.push(room.clone());
                }
            }
        }
        match answer {
            Ok(RoomState::Gone) => {
                // What the lost `room_finished` would have said, as far as
                // anyone can still know: it ended by now.
                let duration = session
                    .started_at
                    .as_deref()
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                    .and_then(|start| u64::try_from(now - start.timestamp()).ok());
                self.sessions
                    .room_finished(&room, ended_at, duration, session.room_sid.as_deref())
                    .await?;
                self.sessions.mark_reconciled(&room).await?;
                self.sessions.drop_watch(watch).await?;
                tracing::warn!(%room, "session's room gone at LiveKit; ended as room_finished");
                report.reconciled.push(room);
            }
            Ok(RoomState::Live { .. }) => {
                self.sessions
                    .reschedule_watch(watch, now + LIVE_ROOM_RECHECK_SECS, 0)
                    .await?;
                report.still_open.push(room);
            }
            Err(reason) => {
                let attempts = session.reconcile_attempts.saturating_add(1);
                let wait = crate::flows::reconcile::backoff_secs(attempts, None);
                tracing::warn!(%room, %reason, attempts, "LiveKit not answering about a session");
                self.sessions
                    .reschedule_watch(watch, now + wait, attempts)
                    .await?;
                if attempts >= crate::flows::reconcile::UNRECONCILED_AFTER {
                    report.unreconciled.push(room.clone());
                }
                report.unanswered.push(room);
            }
        }
        Ok(())
    }
}
