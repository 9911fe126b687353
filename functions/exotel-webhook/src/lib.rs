//! `POST /webhook/exotel?token=...`: Exotel's own StatusCallback, form-encoded.
//! Exotel cannot set headers and does not sign callbacks, so the secret
//! travels in the callback URL's query string.

use chrono::{FixedOffset, NaiveDateTime, TimeZone};
use http::StatusCode;
use lambda_http::{Request, RequestExt};
use serde::Deserialize;
use shared::api::{self, ApiError, Route};
use shared::base::config::{self, ConfigError};
use shared::flows::ingest::{
    validate_call_id, validate_phone, Acknowledgement, IncomingCall, Ingestor, WebhookAccess,
    WebhookConfig,
};
use shared::providers::recording::{self, HostAllowList};
use shared::store::calls::{AgentInfo, CallSource};

pub struct ExotelWebhook {
    /// `WEBHOOK_TOKEN` (the default organisation) or an organisation's own token.
    pub access: WebhookAccess,
    pub recording_hosts: HostAllowList,
    /// Exotel reports local times without a zone (`EXOTEL_TIMEZONE_OFFSET`, default IST).
    pub timezone: FixedOffset,
    pub ingestor: Ingestor,
}

/// Exotel's StatusCallback fields (names as Exotel sends them).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StatusCallback {
    call_sid: Option<String>,
    status: Option<String>,
    recording_url: Option<String>,
    from: Option<String>,
    to: Option<String>,
    date_updated: Option<String>,
    start_time: Option<String>,
    conversation_duration: Option<String>,
    duration: Option<String>,
    dial_call_duration: Option<String>,
}

pub fn parse_offset(raw: &str) -> Option<FixedOffset> {
    let (sign, rest) = match raw.trim().split_at_checked(1)? {
        ("+", rest) => (1, rest),
        ("-", rest) => (-1, rest),
        _ => return None,
    };
    let (hours, minutes) = rest.split_once(':')?;
    let seconds = hours.parse::<i32>().ok()? * 3600 + minutes.parse::<i32>().ok()? * 60;
    FixedOffset::east_opt(sign * seconds)
}

fn non_empty(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

impl StatusCallback {
    fn validate(
        self,
        hosts: &HostAllowList,
        timezone: FixedOffset,
    ) -> Result<IncomingCall, ApiError> {
        let call_id = validate_call_id(self.call_sid.as_deref(), "CallSid")?;
        let status = non_empty(self.status)
            .ok_or_else(|| ApiError::unprocessable("missing_field", "Status is required"))?
            .to_ascii_lowercase();
        let from_number = validate_phone(self.from.as_deref(), "From", false)?;
        let to_number = validate_phone(self.to.as_deref(), "To", false)?;
        let duration = match non_empty(
            self.conversation_duration
                .or(self.duration)
                .or(self.dial_call_duration),
        ) {
            None => None,
            Some(raw) => Some(raw.parse::<u64>().map_err(|_| {
                ApiError::unprocessable(
                    "invalid_duration",
                    "duration must be a whole number of seconds",
                )
            })?),
        };
        let recording_url = non_empty(self.recording_url)
            .map(|raw| recording::parse_allowed(&raw, hosts))
            .transpose()
            .map_err(|detail| ApiError::unprocessable("recording_host_not_allowed", detail))?;
        let timestamp = match non_empty(self.start_time.or(self.date_updated)) {
            None => shared::base::time::now(),
            Some(raw) => NaiveDateTime::parse_from_str(&raw, "%Y-%m-%d %H:%M:%S")
                .ok()
                .and_then(|naive| timezone.from_local_datetime(&naive).single())
                .map(|t| t.with_timezone(&chrono::Utc))
                .ok_or_else(|| {
                    ApiError::unprocessable(
                        "invalid_timestamp",
                        "DateUpdated must look like 2025-10-09 17:58:27",
                    )
                })?,
        };
        Ok(IncomingCall {
            call_id,
            source: CallSource::Exotel,
            from_number,
            to_number,
            duration,
            recording_url,
            timestamp,
            call_status: status,
            agent: AgentInfo::default(),
            room_name: None,
        })
    }
}

impl ExotelWebhook {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let config = WebhookConfig::from_env()?;
        let raw_offset =
            config::optional("EXOTEL_TIMEZONE_OFFSET").unwrap_or_else(|| "+05:30".into());
        let timezone = parse_offset(&raw_offset).ok_or(ConfigError::Invalid {
            name: "EXOTEL_TIMEZONE_OFFSET",
            reason: "expected +HH:MM or -HH:MM".into(),
        })?;
        let sdk = shared::base::aws::sdk_config().await;
        Ok(Self {
            access: WebhookAccess::from_config(&sdk, &config),
            recording_hosts: config.recording_hosts.clone(),
            timezone,
            ingestor: Ingestor::from_config(&sdk, &config),
        })
    }
}

impl Route for ExotelWebhook {
    type Body = Acknowledgement;

    async fn process(&self, request: Request) -> Result<(StatusCode, Acknowledgement), ApiError> {
        let query = request.query_string_parameters();
        let presented = query.first("token").ok_or(ApiError::Unauthorized)?;
        let owner = self.access.owner(presented).await?;
        let body = api::body_bytes(request.body())?;
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with("application/x-www-form-urlencoded") {
            return Err(ApiError::bad_request(
                "invalid_form",
                "Body must be application/x-www-form-urlencoded, as Exotel sends it",
            ));
        }
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_request("invalid_form", "Form body is not valid UTF-8"))?;
        let callback: StatusCallback = serde_urlencoded::from_str(text).map_err(|e| {
            ApiError::bad_request("invalid_form", format!("Form body could not be read: {e}"))
        })?;
        let call = callback.validate(&self.recording_hosts, self.timezone)?;
        self.ingestor.ingest(call, &owner).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn callback(form: &str) -> StatusCallback {
        serde_urlencoded::from_str(form).unwrap()
    }

    #[test]
    fn offsets_parse() {
        assert_eq!(parse_offset("+05:30"), FixedOffset::east_opt(19800));
        assert_eq!(parse_offset("-04:00"), FixedOffset::east_opt(-14400));
        assert_eq!(parse_offset("IST"), None);
    }

    #[test]
    fn status_callback_validates_with_local_time() {
        let hosts = HostAllowList::parse("*.exotel.com");
        let ist = parse_offset("+05:30").unwrap();
        let call = callback(
            "CallSid=abc123&Status=completed&RecordingUrl=https%3A%2F%2Frecordings.exotel.com%2Fa.mp3\
             &From=09876543210&To=09631084471&DateUpdated=2025-10-09+23%3A28%3A27&ConversationDuration=56",
        )
        .validate(&hosts, ist)
        .unwrap();
        assert_eq!(call.timestamp.to_rfc3339(), "2025-10-09T17:58:27+00:00");
        assert_eq!(call.duration, Some(56));
        assert_eq!(call.call_status, "completed");
    }

    #[test]
    fn missing_or_bad_fields_are_named() {
        let hosts = HostAllowList::parse("*.exotel.com");
        let ist = parse_offset("+05:30").unwrap();
        let code = |form: &str| callback(form).validate(&hosts, ist).unwrap_err().code();
        assert_eq!(code("Status=completed"), "missing_field");
        assert_eq!(code("CallSid=a"), "missing_field");
        assert_eq!(
            code("CallSid=a&Status=completed&DateUpdated=tomorrow"),
            "invalid_timestamp"
        );
        assert_eq!(
            code("CallSid=a&Status=completed&RecordingUrl=https%3A%2F%2Fevil.com%2Fa"),
            "recording_host_not_allowed"
        );
    }
}
