//! `POST /twilio/status?call=<ref>`: Twilio's status callbacks for outbound
//! calls. They arrive duplicated and out of order: each (call, status) is
//! handled once, statuses only move forward, and a completed call's duration
//! is added to its organisation's usage exactly once.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use lambda_http::{Request, RequestExt};
use shared::api::{self, ApiError, Route};
use shared::providers::twilio::{self, TwilioWebhookAuth};
use shared::queue::jobs::{self, JobQueue, NotificationJob, NotificationKind};
use shared::store::dedup::{run_once, DedupStore};
use shared::store::outbound_calls::{status_rank, OutboundCallStore, UsageRecorded};
use shared::wiring::{self, Wiring};
use tracing::{info, warn};

pub struct TwilioStatus {
    pub twilio_auth: TwilioWebhookAuth,
    pub calls: Arc<dyn OutboundCallStore>,
    pub dedup: Arc<dyn DedupStore>,
    pub notification_queue: Arc<dyn JobQueue>,
    pub lease: Duration,
}

const FINAL_RANK: u32 = 5;

fn unavailable(err: shared::store::StoreError) -> ApiError {
    warn!(error = %err, "store unavailable");
    ApiError::Unavailable
}

impl TwilioStatus {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            twilio_auth: TwilioWebhookAuth::from_env()?,
            calls: aws.outbound_calls()?,
            dedup: aws.dedup()?,
            notification_queue: aws.notification_queue()?,
            lease: wiring::dedup_lease()?,
        })
    }
}

impl Route for TwilioStatus {
    type Body = serde_json::Value;

    async fn process(&self, request: Request) -> Result<(StatusCode, serde_json::Value), ApiError> {
        let params = self.twilio_auth.verify(&request)?;
        let call_ref = request
            .query_string_parameters()
            .first("call")
            .map(str::to_string)
            .ok_or_else(|| {
                ApiError::unprocessable("missing_field", "call query parameter is required")
            })?;
        let call_sid = twilio::field(&params, "CallSid")
            .ok_or_else(|| ApiError::unprocessable("missing_field", "CallSid is required"))?
            .to_string();
        let status = twilio::field(&params, "CallStatus")
            .ok_or_else(|| ApiError::unprocessable("missing_field", "CallStatus is required"))?
            .to_string();
        let duration: Option<u64> =
            twilio::field(&params, "CallDuration").and_then(|d| d.parse().ok());
        let key = format!("twilio-status#{call_sid}#{status}");
        let lease = api::remaining_time(&request).unwrap_or(self.lease);
        let work = || async {
            let call = self
                .calls
                .get(&call_ref)
                .await
                .map_err(unavailable)?
                .ok_or_else(|| ApiError::NotFound(format!("Call {call_ref} not found")))?;
            let moved = self
                .calls
                .advance_status(&call_ref, &status, None)
                .await
                .map_err(unavailable)?;
            info!(call_ref = %call_ref, %status, moved, "Twilio status");
            if status_rank(&status) == FINAL_RANK {
                // The call's reservation is settled once, by whichever final
                // status comes first: busy, no-answer and failed used nothing.
                let seconds = if status == "completed" {
                    duration.unwrap_or(0)
                } else {
                    0
                };
                let recorded = self
                    .calls
                    .record_duration(&call, seconds)
                    .await
                    .map_err(unavailable)?;
                if recorded == UsageRecorded::Counted {
                    info!(call_ref = %call_ref, seconds, "usage recorded");
                }
                let job =
                    NotificationJob::for_call(&call_ref, NotificationKind::OutboundCallSummary);
                jobs::send(self.notification_queue.as_ref(), &job, Duration::ZERO)
                    .await
                    .map_err(|err| {
                        warn!(error = %err, "call summary not queued");
                        ApiError::Unavailable
                    })?;
            }
            Ok::<_, ApiError>(
                serde_json::json!({"success": true, "status": status, "applied": moved}),
            )
        };
        api::once_response(
            run_once(self.dedup.as_ref(), &key, lease, work).await,
            StatusCode::OK,
        )
    }
}
