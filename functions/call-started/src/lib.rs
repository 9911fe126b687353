//! `POST /calls/started`: an agent that is not on LiveKit (or prefers to)
//! reports a call start itself, with an API key. Same path as the LiveKit
//! webhook: the start and the organisation's claim on the room name in one
//! transaction, then 202; the calls table's stream does the rest. One
//! notification per room however often it reports.

use std::sync::Arc;

use http::StatusCode;
use lambda_http::Request;
use serde::Deserialize;
use shared::api::Route;
use shared::api::{self, ApiError};
use shared::flows::call_start::{CallStartIntake, CallStartReport};
use shared::queue::jobs::CallStart;
use shared::store::api_keys::ApiKeyStore;
use shared::wiring::Wiring;
use tracing::info;

pub struct CallStarted {
    pub api_keys: Arc<dyn ApiKeyStore>,
    pub intake: CallStartIntake,
}

#[derive(Debug, Deserialize)]
struct CallStartedBody {
    room_name: Option<String>,
    user_email: Option<String>,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
}

struct ValidStart {
    room_name: String,
    user_email: Option<String>,
    metadata: serde_json::Map<String, serde_json::Value>,
}

impl CallStartedBody {
    fn validate(self) -> Result<ValidStart, ApiError> {
        let room_name = self
            .room_name
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .ok_or_else(|| ApiError::unprocessable("missing_field", "room_name is required"))?;
        if room_name.chars().count() > 256 || room_name.chars().any(char::is_control) {
            return Err(ApiError::unprocessable(
                "invalid_room_name",
                "room_name must be at most 256 printable characters",
            ));
        }
        let user_email = match self
            .user_email
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
        {
            None => None,
            Some(email) if looks_like_email(&email) => Some(email),
            Some(_) => {
                return Err(ApiError::unprocessable(
                    "invalid_email",
                    "user_email is not an email address",
                ))
            }
        };
        let metadata = api::optional_object(self.metadata, || {
            ApiError::unprocessable("invalid_metadata", "metadata must be a JSON object")
        })?;
        Ok(ValidStart {
            room_name,
            user_email,
            metadata,
        })
    }
}

/// One `@`, something on each side, a dot in the domain, no spaces.
fn looks_like_email(email: &str) -> bool {
    email.len() <= 254
        && !email.contains(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.contains('@')
        })
}

impl CallStarted {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            api_keys: aws.api_keys()?,
            intake: aws.call_start_intake()?,
        })
    }
}

impl Route for CallStarted {
    type Body = serde_json::Value;

    async fn process(&self, request: Request) -> Result<(StatusCode, serde_json::Value), ApiError> {
        let tenant =
            shared::api::access::authenticate_tenant(self.api_keys.as_ref(), request.headers())
                .await?;
        let body = api::body_bytes(request.body())?;
        let start = api::parse_json::<CallStartedBody>(body, "a valid JSON object")?.validate()?;
        info!(room = %start.room_name, api_key = %tenant.key_id, "call start reported");
        let response = serde_json::json!({
            "success": true,
            "message": "Call start notification queued",
            "room_name": start.room_name,
        });
        let report = CallStartReport {
            start: CallStart {
                room_name: start.room_name,
                user_email: start.user_email,
                started_at: shared::base::time::now_rfc3339(),
                metadata: start.metadata,
            },
            participant_identity: None,
            response,
            reported_by: Some(&tenant.org_id),
        };
        self.intake.record(report, StatusCode::ACCEPTED).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: serde_json::Value) -> CallStartedBody {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn bodies_are_validated() {
        let ok = body(serde_json::json!({"room_name": "r1", "user_email": "a@b.co", "metadata": {"tier": "x"}}))
            .validate()
            .unwrap();
        assert_eq!(ok.room_name, "r1");
        assert_eq!(ok.metadata["tier"], "x");
        let code = |json| body(json).validate().err().unwrap().code();
        assert_eq!(code(serde_json::json!({})), "missing_field");
        assert_eq!(
            code(serde_json::json!({"room_name": "r", "user_email": "nope"})),
            "invalid_email"
        );
        assert_eq!(
            code(serde_json::json!({"room_name": "r", "metadata": [1]})),
            "invalid_metadata"
        );
        assert_eq!(
            code(serde_json::json!({"room_name": "a\nb"})),
            "invalid_room_name"
        );
    }
}
