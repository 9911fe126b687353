//! `POST /webhook/zapier`: Zapier relaying an Exotel call (seed 001's JSON).

use http::StatusCode;
use lambda_http::Request;
use serde::Deserialize;
use shared::api::{self, ApiError, Route};
use shared::flows::ingest::{
    validate_call_id, validate_phone, Acknowledgement, IncomingCall, Ingestor, WebhookAccess,
    WebhookConfig,
};
use shared::providers::recording::{self, HostAllowList};
use shared::store::calls::{AgentInfo, CallSource};

pub struct ZapierWebhook {
    /// `WEBHOOK_TOKEN` (the default organisation) or an organisation's own token.
    pub access: WebhookAccess,
    pub recording_hosts: HostAllowList,
    pub ingestor: Ingestor,
}

/// The seed's body. Zapier maps fields loosely, so numbers may arrive as strings.
#[derive(Debug, Deserialize)]
struct ZapierPayload {
    call_id: Option<String>,
    from_number: Option<String>,
    to_number: Option<String>,
    duration: Option<serde_json::Value>,
    recording_url: Option<String>,
    timestamp: Option<String>,
    status: Option<String>,
    agent_name: Option<String>,
    agent_slack_handle: Option<String>,
    department: Option<String>,
    customer_segment: Option<String>,
    /// The LiveKit room of the call, to thread the transcript under its call-start message.
    room_name: Option<String>,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// `125`, `"125"` or absent; anything else is a client error.
fn parse_duration(value: Option<&serde_json::Value>) -> Result<Option<u64>, ApiError> {
    let invalid = || {
        ApiError::unprocessable(
            "invalid_duration",
            "duration must be a whole number of seconds",
        )
    };
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => n.as_u64().map(Some).ok_or_else(invalid),
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(serde_json::Value::String(s)) => s.trim().parse().map(Some).map_err(|_| invalid()),
        Some(_) => Err(invalid()),
    }
}

impl ZapierPayload {
    fn validate(self, hosts: &HostAllowList) -> Result<IncomingCall, ApiError> {
        let call_id = validate_call_id(self.call_id.as_deref(), "call_id")?;
        let from_number = validate_phone(self.from_number.as_deref(), "from_number", true)?;
        let to_number = validate_phone(self.to_number.as_deref(), "to_number", true)?;
        let duration = parse_duration(self.duration.as_ref())?;
        let recording_url = non_empty(self.recording_url)
            .map(|raw| recording::parse_allowed(&raw, hosts))
            .transpose()
            .map_err(|detail| ApiError::unprocessable("recording_host_not_allowed", detail))?;
        let timestamp = match non_empty(self.timestamp) {
            None => shared::base::time::now(),
            Some(raw) => chrono::DateTime::parse_from_rfc3339(&raw)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| {
                    ApiError::unprocessable(
                        "invalid_timestamp",
                        "timestamp must be RFC 3339, e.g. 2025-10-09T17:58:27Z",
                    )
                })?,
        };
        Ok(IncomingCall {
            call_id,
            source: CallSource::Zapier,
            from_number,
            to_number,
            duration,
            recording_url,
            timestamp,
            // Zapier's Zap fires on completed calls; an explicit status wins.
            call_status: non_empty(self.status).unwrap_or_else(|| "completed".into()),
            agent: AgentInfo {
                agent_name: non_empty(self.agent_name),
                agent_slack_handle: non_empty(self.agent_slack_handle),
                department: non_empty(self.department),
                customer_segment: non_empty(self.customer_segment),
            },
            room_name: non_empty(self.room_name),
        })
    }
}

impl ZapierWebhook {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let config = WebhookConfig::from_env()?;
        let sdk = shared::base::aws::sdk_config().await;
        Ok(Self {
            access: WebhookAccess::from_config(&sdk, &config),
            recording_hosts: config.recording_hosts.clone(),
            ingestor: Ingestor::from_config(&sdk, &config),
        })
    }
}

impl Route for ZapierWebhook {
    type Body = Acknowledgement;

    async fn process(&self, request: Request) -> Result<(StatusCode, Acknowledgement), ApiError> {
        // Credentials first: nothing from an unauthenticated caller is parsed.
        let presented = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized)?;
        let owner = self.access.owner(presented).await?;
        let body = api::body_bytes(request.body())?;
        let payload: ZapierPayload = api::parse_json(body, "a valid JSON object")?;
        let call = payload.validate(&self.recording_hosts)?;
        self.ingestor.ingest(call, &owner).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> HostAllowList {
        HostAllowList::parse("api.exotel.com")
    }

    fn payload(json: serde_json::Value) -> ZapierPayload {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn seed_payload_validates() {
        let call = payload(serde_json::json!({
            "call_id": "CA1234567890abcdef", "from_number": "+919876543210", "to_number": "09631084471",
            "duration": "125", "recording_url": "https://api.exotel.com/recordings/x.mp3",
            "timestamp": "2025-10-09T17:58:27Z", "status": "completed", "agent_name": "Prateek Raj"
        }))
        .validate(&hosts())
        .unwrap();
        assert_eq!(call.duration, Some(125));
        assert_eq!(call.timestamp.to_rfc3339(), "2025-10-09T17:58:27+00:00");
        assert_eq!(call.agent.agent_name.as_deref(), Some("Prateek Raj"));
    }

    #[test]
    fn bad_fields_are_named() {
        let base = serde_json::json!({"call_id": "CA1", "from_number": "+919876543210", "to_number": "09631084471"});
        let with = |key: &str, value: serde_json::Value| {
            let mut p = base.clone();
            p[key] = value;
            payload(p).validate(&hosts()).unwrap_err().code()
        };
        assert_eq!(
            with("duration", serde_json::json!("long")),
            "invalid_duration"
        );
        assert_eq!(
            with("timestamp", serde_json::json!("yesterday")),
            "invalid_timestamp"
        );
        assert_eq!(
            with(
                "recording_url",
                serde_json::json!("https://evil.example/x.mp3")
            ),
            "recording_host_not_allowed"
        );
        assert_eq!(
            with("from_number", serde_json::json!("abc")),
            "invalid_phone_number"
        );
    }
}
