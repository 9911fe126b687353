//! `POST /outbound-calls` (seed 004): an ElevenLabs agent phones a number
//! with dynamic variables; optionally the conversation is monitored (by a
//! queue, not a waiting Lambda) until it ends.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use shared::api::{self, ApiError};
use shared::base::config;
use shared::queue::jobs::{self, JobQueue, MonitorJob};
use shared::store::outbound_calls::OutboundCall;

use shared::flows::outbound::{Placed, Placement, CALL_REF_VARIABLE};
use shared::providers::elevenlabs::OutboundCallStarted;
use shared::store::directory::Provider;
use shared::store::outbound_calls::new_call_ref;

use shared::wiring::Wiring;
use tracing::{info, warn};

/// Seed 004's default monitoring window and its ceiling.
const DEFAULT_MONITOR_SECS: u64 = 30;
const MAX_MONITOR_SECS: u64 = 3600;

pub struct OutboundCalls {
    pub placement: Placement,
    /// What each call reserves on the organisation's budget
    /// (`OUTBOUND_MAX_CALL_SECONDS`; seed 004 has no assistant to say).
    pub max_call_seconds: u64,
    /// `ELEVEN_LABS_AGENT_ID` and `PHONE_NUMBER_ID` (seed 004's names), used
    /// when neither the request nor the organisation names them.
    pub default_agent_id: Option<String>,
    pub default_phone_number_id: Option<String>,
    pub monitor_queue: Arc<dyn JobQueue>,
    /// Seed 004's `check_interval` (`MONITOR_INTERVAL_SECONDS`).
    pub monitor_interval: Duration,
}

#[derive(Debug, Deserialize)]
struct OutboundBody {
    destination_number: Option<String>,
    #[serde(default)]
    agent_variables: Option<serde_json::Value>,
    agent_id: Option<String>,
    phone_number_id: Option<String>,
    #[serde(default)]
    monitor: bool,
    monitor_duration: Option<u64>,
}

/// Seed 004's result shape, for failures too (`success: false` + `error`),
/// with `detail`/`code` like every other route.
fn failure(err: ApiError) -> Response<Body> {
    let detail = err.detail();
    let mut response = api::json(
        err.status(),
        &serde_json::json!({"success": false, "error": detail, "detail": detail, "code": err.code()}),
    );
    if let Some(retry) = err
        .into_response()
        .headers()
        .get(http::header::RETRY_AFTER)
        .cloned()
    {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, retry);
    }
    response
}

pub fn dashboard_url(conversation_id: &str) -> String {
    format!("https://elevenlabs.io/app/conversational-ai/history/{conversation_id}")
}

impl OutboundCalls {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            placement: aws.placement()?,
            max_call_seconds: config::parsed_or(
                "OUTBOUND_MAX_CALL_SECONDS",
                shared::store::directory::DEFAULT_MAX_CALL_SECONDS,
            )?,
            default_agent_id: config::optional("ELEVEN_LABS_AGENT_ID"),
            default_phone_number_id: config::optional("PHONE_NUMBER_ID"),
            monitor_queue: aws.queue("MONITOR_QUEUE_URL")?,
            monitor_interval: Duration::from_secs(config::parsed_or(
                "MONITOR_INTERVAL_SECONDS",
                5,
            )?),
        })
    }

    pub async fn handle(&self, request: Request) -> Response<Body> {
        match self.process(request).await {
            Ok(body) => api::json(StatusCode::OK, &body),
            Err(err) => failure(err),
        }
    }

    async fn process(&self, request: Request) -> Result<serde_json::Value, ApiError> {
        let tenant = self.placement.access.admit(request.headers()).await?;
        let body: OutboundBody =
            api::parse_json(api::body_bytes(request.body())?, "a valid JSON object")?;
        // Seed 004: a missing `+` is added, then the number must be E.164.
        let raw = body.destination_number.unwrap_or_default();
        let to = shared::base::phone::e164(&shared::base::phone::with_plus(&raw))
            .map_err(|err| ApiError::bad_request(err.code(), err.detail()))?;
        // A listed number is never dialled: checked before anything is reserved.
        self.placement.check_not_listed(&tenant.org_id, &to).await?;
        let mut variables = api::optional_object(body.agent_variables, || {
            ApiError::bad_request(
                "invalid_agent_variables",
                "agent_variables must be a JSON object",
            )
        })?;
        let org = self
            .placement
            .directory
            .get_organisation(&tenant.org_id)
            .await
            .map_err(api::unavailable)?
            .ok_or_else(|| ApiError::NotFound("Organisation not found".into()))?;
        let agent_id = body
            .agent_id
            .or_else(|| org.elevenlabs_agent_id.clone())
            .or_else(|| self.default_agent_id.clone())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "missing_field",
                    "agent_id is required (or set it on the organisation, or ELEVEN_LABS_AGENT_ID)",
                )
            })?;
        let phone_number_id = body
            .phone_number_id
            .or_else(|| org.elevenlabs_phone_number_id.clone())
            .or_else(|| self.default_phone_number_id.clone())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "missing_field",
                    "phone_number_id is required (or set it on the organisation, or PHONE_NUMBER_ID)",
                )
            })?;
        let elevenlabs = self.placement.providers.elevenlabs_for(&org.org_id).await?;
        let Some(elevenlabs) = &elevenlabs else {
            return Err(ApiError::Provider {
                detail: "ElevenLabs is not configured for this deployment".into(),
            });
        };
        let text = |name: &str| {
            variables
                .get(name)
                .and_then(|a| a.as_str())
                .map(str::to_string)
        };
        let record = OutboundCall {
            from_number: self.placement.providers.twilio_phone_number.clone(),
            agenda: text("agenda"),
            welcome_message: text("welcome_message"),
            agent_variables: variables.clone(),
            status: "initiating".into(),
            status_rank: 0,
            ..OutboundCall::initiated(&new_call_ref(), Provider::Elevenlabs, &to)
        };
        info!(to = %shared::base::mask::phone(&to), api_key = %tenant.key_id, call_ref = %record.call_ref, "placing ElevenLabs call");
        let mut answer: Option<OutboundCallStarted> = None;
        let answer_slot = &mut answer;
        let (record, _) = self
            .placement
            .place(
                record,
                &org,
                self.max_call_seconds,
                "ElevenLabs",
                |call_ref| async move {
                    variables.insert(CALL_REF_VARIABLE.into(), call_ref.into());
                    let started = elevenlabs
                        .outbound_call(&agent_id, &phone_number_id, &to, &variables)
                        .await?;
                    let placed = Placed {
                        call_sid: started.call_sid.clone(),
                        conversation_id: Some(started.conversation_id.clone()),
                    };
                    *answer_slot = Some(started);
                    Ok(placed)
                },
            )
            .await?;
        let started = answer.ok_or(ApiError::Unavailable)?;
        let call_ref = record.call_ref;
        let conversation_id = started.conversation_id.clone();
        let mut monitor_queued = false;
        if body.monitor {
            let window = body
                .monitor_duration
                .unwrap_or(DEFAULT_MONITOR_SECS)
                .min(MAX_MONITOR_SECS);
            let job = MonitorJob {
                call_ref: call_ref.clone(),
                conversation_id: conversation_id.clone(),
                checks: 0,
                deadline: shared::base::time::epoch_secs() + window as i64,
            };
            match jobs::send(self.monitor_queue.as_ref(), &job, self.monitor_interval).await {
                Ok(()) => monitor_queued = true,
                Err(err) => warn!(error = %err, "monitor job not queued"),
            }
        }
        Ok(serde_json::json!({
            "success": true,
            "call_data": {
                "success": started.success,
                "message": started.message,
                "conversation_id": conversation_id,
                "callSid": started.call_sid,
            },
            "conversation_id": conversation_id,
            "dashboard_url": dashboard_url(&conversation_id),
            "monitoring_data": null,
            "monitor_queued": monitor_queued,
            "error": null,
        }))
    }
}
