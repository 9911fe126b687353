//! `POST /twilio/status[?call=<ref>]`: Twilio's status callbacks, for
//! agenda calls (`?call=`) and for sessions' calls (seed 002; `?placed=<ref>`
//! on calls `/phone/call` placed, whose final status settles their budget). Twilio never retries one, so the route only verifies the
//! signature, queues the event and answers 200; the provider-events worker
//! applies it (`shared::flows::provider_events`) with SQS's retries, once
//! per (call, status). A campaign call's asynchronous answering-machine
//! verdict (`?call=<ref>&amd=1`, `AnsweredBy`) is stored on its record.

use http::StatusCode;
use lambda_http::{Request, RequestExt};
use shared::api::{ApiError, Route};
use shared::flows::provider_events::ProviderEventIntake;
use shared::flows::sessions::validate_call_sid;
use shared::providers::twilio::{self, TwilioWebhookAuth};
use shared::queue::jobs::ProviderEvent;
use shared::wiring::Wiring;
use tracing::info;

pub struct TwilioStatus {
    pub twilio_auth: TwilioWebhookAuth,
    pub intake: ProviderEventIntake,
    /// Where asynchronous AMD verdicts (`?call=<ref>&amd=1`) are stored.
    pub calls: std::sync::Arc<dyn shared::store::outbound_calls::OutboundCallStore>,
}

impl TwilioStatus {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            twilio_auth: aws.twilio_webhook_auth()?,
            intake: aws.provider_event_intake()?,
            calls: aws.outbound_calls()?,
        })
    }
}

impl Route for TwilioStatus {
    type Body = serde_json::Value;

    async fn process(&self, request: Request) -> Result<(StatusCode, serde_json::Value), ApiError> {
        let params = self.twilio_auth.verify(&request).await?;
        let field = |name: &'static str| {
            twilio::field(&params, name)
                .map(str::to_string)
                .ok_or_else(|| {
                    ApiError::unprocessable("missing_field", format!("{name} is required"))
                })
        };
        let call_sid = field("CallSid")?;
        let query = request.query_string_parameters();
        if query.first("amd") == Some("1") {
            // An answering-machine verdict: one conditional write is the
            // whole of its work, so it is stored before the 200.
            let call_ref = query
                .first("call")
                .filter(|r| valid_call_ref(r))
                .ok_or_else(|| {
                    ApiError::unprocessable("invalid_call", "call must be a call ref (oc_...)")
                })?
                .to_string();
            let answered_by = field("AnsweredBy")?;
            if answered_by.len() > 32
                || !answered_by
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            {
                return Err(ApiError::unprocessable(
                    "invalid_answered_by",
                    "AnsweredBy is not one of Twilio's values",
                ));
            }
            let stored = self
                .calls
                .set_answered_by(&call_ref, &call_sid, &answered_by)
                .await
                .map_err(shared::api::unavailable)?;
            info!(%answered_by, stored, "Twilio AMD verdict");
            return Ok((
                StatusCode::OK,
                serde_json::json!({"success": true, "answered_by": answered_by, "stored": stored}),
            ));
        }
        let status = field("CallStatus")?;
        let duration_secs = twilio::field(&params, "CallDuration").and_then(|d| d.parse().ok());
        let sip_response_code =
            twilio::field(&params, "SipResponseCode").and_then(|code| code.parse().ok());
        // Our side of the call; the worker checks who owns it (no lookup
        // here: this route only makes the event durable).
        let our_number = twilio::field(&params, "Direction")
            .map(|direction| {
                if direction.starts_with("outbound") {
                    "From"
                } else {
                    "To"
                }
            })
            .and_then(|side| twilio::field(&params, side))
            .filter(|number| number.len() <= 64)
            .map(str::to_string);
        // `?call=<ref>`: an agenda call of /calls/initiate; without it, a
        // session's call (/twilio/voice, /phone/call), named by its sid.
        let event = match request.query_string_parameters().first("call") {
            Some(call_ref) => ProviderEvent::TwilioStatus {
                call_ref: call_ref.to_string(),
                call_sid,
                status: status.clone(),
                duration_secs,
                our_number,
                sip_response_code,
                reconciled: false,
            },
            None => {
                validate_call_sid(&call_sid)?;
                let query = request.query_string_parameters();
                let session_kind = match query.first("session") {
                    None | Some("phone") => None,
                    Some("whatsapp") => Some("whatsapp".to_string()),
                    Some(_) => {
                        return Err(ApiError::unprocessable(
                            "invalid_session",
                            "session must be `phone` or `whatsapp`",
                        ))
                    }
                };
                // Signed with the URL, so only our own placer sets it.
                let placed = match query.first("placed") {
                    None => None,
                    Some(call_ref) if valid_call_ref(call_ref) => Some(call_ref.to_string()),
                    Some(_) => {
                        return Err(ApiError::unprocessable(
                            "invalid_placed",
                            "placed must be a call ref (oc_...)",
                        ))
                    }
                };
                ProviderEvent::TwilioSessionStatus {
                    call_sid,
                    status: status.clone(),
                    duration_secs,
                    session_kind,
                    placed,
                    our_number,
                    sip_response_code,
                    reconciled: false,
                }
            }
        };
        self.intake.accept(event).await?;
        info!(%status, "Twilio status queued");
        Ok((
            StatusCode::OK,
            serde_json::json!({"success": true, "status": status, "queued": true}),
        ))
    }
}

/// Our call refs: `oc_` and 32 hex digits (`new_call_ref`).
fn valid_call_ref(value: &str) -> bool {
    value
        .strip_prefix("oc_")
        .is_some_and(|hex| hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()))
}
