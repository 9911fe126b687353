//! `POST /calls/started`: an agent that is not on LiveKit (or prefers to)
//! reports a call start itself, with an API key. Same notification path as
//! the LiveKit webhook; one notification per room however often it reports.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use shared::api::{self, ApiError};
use shared::base::config;
use shared::queue::jobs::{self, CallStart, JobQueue, NotificationJob, SqsJobQueue};
use shared::store::api_keys::{ApiKeyStore, DynamoApiKeyStore};
use shared::store::dedup::{run_once, DedupStore, DynamoDedupStore};
use shared::store::sessions::{DynamoSessionStore, SessionStore};
use tracing::{info, warn};

pub struct CallStarted {
    pub api_keys: Arc<dyn ApiKeyStore>,
    pub dedup: Arc<dyn DedupStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub notification_queue: Arc<dyn JobQueue>,
    pub lease: Duration,
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
        let metadata = match self.metadata {
            None | Some(serde_json::Value::Null) => serde_json::Map::new(),
            Some(serde_json::Value::Object(map)) => map,
            Some(_) => {
                return Err(ApiError::unprocessable(
                    "invalid_metadata",
                    "metadata must be a JSON object",
                ))
            }
        };
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
        let sdk = shared::base::aws::sdk_config().await;
        let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
        Ok(Self {
            api_keys: Arc::new(DynamoApiKeyStore::new(
                dynamo.clone(),
                config::required("API_KEYS_TABLE")?,
            )),
            dedup: Arc::new(DynamoDedupStore::from_env(&sdk)?),
            sessions: Arc::new(DynamoSessionStore::new(
                dynamo,
                config::required("CALLS_TABLE")?,
            )),
            notification_queue: Arc::new(SqsJobQueue::from_env(&sdk, "NOTIFICATION_QUEUE_URL")?),
            lease: Duration::from_secs(config::parsed_or("DEDUP_LEASE_SECONDS", 30)?),
        })
    }

    pub async fn handle(&self, request: Request) -> Response<Body> {
        api::respond(self.process(request).await)
    }

    async fn process(&self, request: Request) -> Result<(StatusCode, serde_json::Value), ApiError> {
        let key =
            shared::api::access::authenticate(self.api_keys.as_ref(), request.headers()).await?;
        let body = api::body_bytes(request.body())?;
        let start = serde_json::from_slice::<CallStartedBody>(body)
            .map_err(|e| {
                ApiError::bad_request(
                    "invalid_json",
                    format!("Body is not a valid JSON object: {e}"),
                )
            })?
            .validate()?;
        info!(room = %start.room_name, api_key = %key.key_id, "call start reported");
        let dedup_key = format!("call-started#{}", start.room_name);
        let lease = api::remaining_time(&request).unwrap_or(self.lease);
        let work = || async {
            self.sessions
                .participant_joined(&start.room_name, start.user_email.as_deref(), None)
                .await
                .map_err(|err| {
                    warn!(error = %err, "session not recorded");
                    ApiError::Unavailable
                })?;
            let job = NotificationJob::call_started(
                &dedup_key,
                CallStart {
                    room_name: start.room_name.clone(),
                    user_email: start.user_email.clone(),
                    started_at: shared::base::time::now_rfc3339(),
                    metadata: start.metadata.clone(),
                },
            );
            jobs::send(self.notification_queue.as_ref(), &job, Duration::ZERO)
                .await
                .map_err(|err| {
                    warn!(error = %err, "call-start notification not queued");
                    ApiError::Unavailable
                })?;
            Ok::<_, ApiError>(serde_json::json!({
                "success": true,
                "message": "Call start notification queued",
                "room_name": start.room_name,
            }))
        };
        api::once_response(
            run_once(self.dedup.as_ref(), &dedup_key, lease, work).await,
            StatusCode::ACCEPTED,
        )
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
