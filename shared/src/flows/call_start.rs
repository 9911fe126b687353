//! Call-start reports (seed 000) from whichever source sees the caller join:
//! LiveKit's signed webhook or an agent's `POST /calls/started`. Either way
//! the session records the caller and one notification job is queued, once
//! per room: LiveKit's retries carry new event ids, and an agent may report
//! the same start through `/calls/started` as well.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::api::{self, ApiError};
use crate::queue::jobs::{self, CallStart, JobQueue, NotificationJob};
use crate::store::dedup::{run_once, DedupStore, OnceError};
use crate::store::sessions::SessionStore;

pub struct CallStartIntake {
    pub dedup: Arc<dyn DedupStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub notification_queue: Arc<dyn JobQueue>,
    /// How long a claim holds when the invocation's deadline is unknown.
    pub lease: Duration,
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
    /// Records the caller on the session and queues the call-start
    /// notification, once per room; answers `first` for the delivery that
    /// did it and the first answer (200, `duplicate`) for every other.
    pub async fn record(
        &self,
        request: &lambda_http::Request,
        report: CallStartReport<'_>,
        first: StatusCode,
    ) -> Result<(StatusCode, serde_json::Value), ApiError> {
        let lease = api::remaining_time(request).unwrap_or(self.lease);
        let start = &report.start;
        let key = dedup_key(&start.room_name);
        // A report names a room: only the organisation that holds the name
        // (or takes it now, when nobody does) may report its start.
        if let Some(org_id) = report.reported_by {
            if !self
                .sessions
                .claim_room(&start.room_name, org_id)
                .await
                .map_err(api::unavailable)?
            {
                return Err(ApiError::Conflict {
                    code: "room_taken",
                    detail: "this room belongs to another organisation".into(),
                });
            }
        }
        let work = || async {
            self.sessions
                .participant_joined(
                    &start.room_name,
                    start.user_email.as_deref(),
                    report.participant_identity,
                )
                .await
                .map_err(api::unavailable)?;
            if let Some(org_id) = report.reported_by {
                // Nothing will report its end: the sweep ends it quietly.
                self.sessions
                    .mark_reported(&start.room_name, org_id)
                    .await
                    .map_err(api::unavailable)?;
            }
            // LiveKit's own report names no organisation: the notify-worker
            // reads it from the room's session.
            let job = NotificationJob::call_started(&key, start.clone()).of_org(report.reported_by);
            jobs::send(self.notification_queue.as_ref(), &job, Duration::ZERO)
                .await
                .map_err(api::unavailable)?;
            Ok::<_, ApiError>(report.response.clone())
        };
        api::once_response(
            run_once(self.dedup.as_ref(), &key, lease, work).await,
            first,
        )
    }

    /// Queues the call-start notification of a session one of our routes
    /// opened (phone, web room), once per `key`: with the room's
    /// [`dedup_key`], a later LiveKit or agent report of the same room finds
    /// it done, so a session is announced once.
    pub async fn announce(
        &self,
        key: &str,
        start: CallStart,
        org_id: &str,
        lease: Duration,
    ) -> Result<(), ApiError> {
        let work = || async {
            let job = NotificationJob::call_started(key, start.clone()).of_org(Some(org_id));
            jobs::send(self.notification_queue.as_ref(), &job, Duration::ZERO)
                .await
                .map_err(api::unavailable)?;
            Ok::<_, ApiError>(serde_json::json!({
                "success": true, "queued": true, "room_name": start.room_name,
            }))
        };
        match run_once(self.dedup.as_ref(), key, lease, work).await {
            // Another report of this room holds the claim: it queues the job.
            Ok(_) => Ok(()),
            Err(OnceError::Store(err)) => Err(api::unavailable(err)),
            Err(OnceError::Work(err)) => Err(err),
        }
    }
}
