//! Call-start reports (seed 000) from whichever source sees the caller join:
//! LiveKit's signed webhook or an agent's `POST /calls/started`, and the
//! announcements of sessions our own routes open. Each is stored as one
//! start record (`store::call_starts`), once per room: LiveKit's retries
//! carry new event ids, and an agent may report the same start through
//! `/calls/started` as well. The record is the job: the calls table's
//! stream hands it to `calls-stream`, which carries it out with
//! [`StartedCalls`] (the caller on the session, one notification job).

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::api::{self, ApiError};
use crate::base::metrics::{self, Metric};
use crate::queue::jobs::{self, CallStart, JobQueue, NotificationJob};
use crate::store::call_starts::{CallStartStore, StartRecord, StartSource, StartWrite};
use crate::store::sessions::{SessionChange, SessionStore};
use crate::store::StoreError;

pub struct CallStartIntake {
    pub starts: Arc<dyn CallStartStore>,
    /// A later participant's join (the room's start is stored already)
    /// still joins a typed session's list.
    pub sessions: Arc<dyn SessionStore>,
}

/// Every report of a start in one room shares this key, whichever source
/// sent it. The room name, not LiveKit's room sid: `/calls/started` knows
/// only the name, and sessions and threads are keyed by it too.
pub fn dedup_key(room_name: &str) -> String {
    format!("call-start#{room_name}")
}

/// One report of a caller joining a room.
pub struct CallStartReport<'a> {
    pub start: CallStart,
    pub participant_identity: Option<&'a str>,
    /// The body the first delivery answers (a duplicate replays it).
    pub response: serde_json::Value,
    /// The organisation whose agent reported it (`/calls/started`); `None`
    /// for LiveKit's own webhook.
    pub reported_by: Option<&'a str>,
}

impl CallStartIntake {
    /// Stores the start, once per room, in one write; answers `first` for
    /// the delivery that stored it and the first answer (200, `duplicate`)
    /// for every other. A report names a room: only the organisation that
    /// holds the name (or takes it now, in the same write) may report it.
    pub async fn record(
        &self,
        report: CallStartReport<'_>,
        first: StatusCode,
    ) -> Result<(StatusCode, serde_json::Value), ApiError> {
        let record = StartRecord {
            key: dedup_key(&report.start.room_name),
            start: report.start,
            source: if report.reported_by.is_some() {
                StartSource::Agent
            } else {
                StartSource::LiveKit
            },
            org_id: report.reported_by.map(str::to_string),
            participant_identity: report.participant_identity.map(str::to_string),
        };
        match self
            .starts
            .store(&record, &report.response, report.reported_by)
            .await
            .map_err(api::unavailable)?
        {
            StartWrite::Stored => Ok((first, report.response)),
            StartWrite::Duplicate(mut saved) => {
                metrics::count(Metric::Duplicate);
                saved["duplicate"] = true.into();
                Ok((StatusCode::OK, saved))
            }
            StartWrite::RoomTaken => Err(ApiError::Conflict {
                code: "room_taken",
                detail: "this room belongs to another organisation".into(),
            }),
        }
    }

    /// Stores the announcement of a session one of our routes opened
    /// (phone, web room), once per `key`: with the room's [`dedup_key`], a
    /// later LiveKit or agent report of the same room finds it stored, so a
    /// session is announced once.
    pub async fn announce(
        &self,
        key: &str,
        start: CallStart,
        org_id: &str,
    ) -> Result<(), ApiError> {
        let answer = serde_json::json!({
            "success": true, "queued": true, "room_name": start.room_name,
        });
        let record = StartRecord {
            key: key.to_string(),
            start,
            source: StartSource::Opened,
            org_id: Some(org_id.to_string()),
            participant_identity: None,
        };
        // Stored before (a retry of the opening route): announced already.
        self.starts
            .store(&record, &answer, None)
            .await
            .map(drop)
            .map_err(api::unavailable)
    }
}

/// Carries out stored starts: what a report's intake used to do before
/// answering, now done from the calls table's stream. Every step is an
/// idempotent upsert and the notification is identified by the start's key,
/// so a record the stream delivers twice changes nothing more.
pub struct StartedCalls {
    pub sessions: Arc<dyn SessionStore>,
    pub starts: Arc<dyn CallStartStore>,
}

impl StartedCalls {
    /// Records the caller on the room's session (a report) and returns the
    /// notification job to queue.
    pub async fn carry_out(&self, record: &StartRecord) -> Result<NotificationJob, StoreError> {
        let room = &record.start.room_name;
        let email = record.start.user_email.as_deref();
        match record.source {
            StartSource::LiveKit => {
                if let Some(identity) = &record.participant_identity {
                    // Typed (seed 002) sessions list who joined; others have no such list.
                    let change = SessionChange::Participant(identity.clone());
                    self.sessions.update(room, &change).await?;
                }
                self.sessions
                    .participant_joined(room, email, record.participant_identity.as_deref())
                    .await?;
            }
            StartSource::Agent => {
                self.sessions.participant_joined(room, email, None).await?;
                if let Some(org_id) = &record.org_id {
                    // Nothing will report its end: the sweep ends it quietly.
                    self.sessions.mark_reported(room, org_id).await?;
                }
            }
            StartSource::Opened => {}
        }
        // LiveKit's own report names no organisation: the notify-worker
        // reads it from the room's session.
        Ok(
            NotificationJob::call_started(&record.key, record.start.clone())
                .of_org(record.org_id.as_deref()),
        )
    }

    /// Takes a carried-out start out of the sweep's watch.
    pub async fn settle(&self, record: &StartRecord) -> Result<(), StoreError> {
        self.starts.settle(record).await
    }
}

/// Starts whose stream event was lost (the stream keeps records 24 hours,
/// and a batch given up on goes to its DLQ): each is still watched when it
/// falls due, and the stuck sweep carries it out as the stream would have.
/// A start the stream was only slow with is carried out twice, which its
/// idempotent writes and the notification's key make harmless.
pub struct StuckStarts {
    pub carry: StartedCalls,
    pub notification_queue: Arc<dyn JobQueue>,
}

/// What one sweep of the starts did.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StuckStartsReport {
    /// Rooms whose start was carried out by the sweep.
    pub redriven: Vec<String>,
}

impl StuckStarts {
    /// An error stops the run; what it did not reach stays watched.
    pub async fn sweep(&self, now: i64, limit: i32) -> Result<StuckStartsReport, StoreError> {
        let mut report = StuckStartsReport::default();
        for record in self.carry.starts.due(now, limit).await? {
            let job = self.carry.carry_out(&record).await?;
            jobs::send(self.notification_queue.as_ref(), &job, Duration::ZERO)
                .await
                .map_err(|err| StoreError::Dynamo(format!("queue: {err}")))?;
            self.carry.settle(&record).await?;
            tracing::warn!(room = %record.start.room_name, key = %record.key, "call start carried out by the sweep; its stream event was lost");
            report.redriven.push(record.start.room_name);
        }
        Ok(report)
    }
}
