//! `POST /webhook/livekit`: LiveKit's signed webhook. A caller joining a room
//! becomes a call-start notification (seed 000): the start is stored in one
//! write and answered, and the calls table's stream records the caller on
//! the session and queues the notification (`calls-stream`). Room start and
//! finish update the session record.
//!
//! Verification is LiveKit's own: the `Authorization` header is an HS256 JWT
//! signed with the API secret, issued by the API key, whose `sha256` claim is
//! the base64 SHA-256 of the raw body. It is done here with `jsonwebtoken`
//! rather than the `livekit-api` crate's receiver, which would bring the whole
//! generated LiveKit protocol (prost) into a 128 MB function for one check.

use base64::Engine;
use http::StatusCode;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use lambda_http::Request;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use shared::api::Route;
use shared::api::{self, ApiError};
use shared::base::config::{self, Secret};
use shared::base::mask;
use shared::flows::call_start::{CallStartIntake, CallStartReport};
use shared::queue::jobs::CallStart;
use shared::store::sessions::SessionChange;
use shared::wiring::Wiring;
use subtle::ConstantTimeEq;
use tracing::{info, warn};

/// Clock skew allowed on the token's `exp`/`nbf`.
const LEEWAY_SECS: u64 = 10;

pub struct LiveKitWebhook {
    pub api_key: String,
    pub api_secret: Secret,
    /// Participants whose identity starts with this are the agent itself.
    pub agent_identity_prefix: String,
    pub intake: CallStartIntake,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("no Authorization header")]
    Missing,
    #[error("token rejected: {0}")]
    Token(String),
    #[error("body does not match the token's sha256 claim")]
    BodyMismatch,
}

#[derive(Deserialize)]
struct WebhookClaims {
    sha256: String,
}

/// Checks a LiveKit webhook signature on the raw body, before anything parses it.
pub fn verify(
    authorization: Option<&str>,
    body: &[u8],
    api_key: &str,
    api_secret: &Secret,
) -> Result<(), SignatureError> {
    let token = authorization
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim())
        .filter(|v| !v.is_empty())
        .ok_or(SignatureError::Missing)?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&[api_key]);
    validation.set_required_spec_claims(&["exp", "iss"]);
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.leeway = LEEWAY_SECS;
    let claims = jsonwebtoken::decode::<WebhookClaims>(
        token,
        &DecodingKey::from_secret(api_secret.expose().as_bytes()),
        &validation,
    )
    .map_err(|e| SignatureError::Token(e.kind_name()))?
    .claims;
    let expected = base64::engine::general_purpose::STANDARD
        .decode(claims.sha256.trim())
        .map_err(|_| SignatureError::BodyMismatch)?;
    let actual = Sha256::digest(body);
    if bool::from(actual.as_slice().ct_eq(&expected)) {
        Ok(())
    } else {
        Err(SignatureError::BodyMismatch)
    }
}

/// jsonwebtoken's error kinds as short words for logs (no token content).
trait KindName {
    fn kind_name(&self) -> String;
}

impl KindName for jsonwebtoken::errors::Error {
    fn kind_name(&self) -> String {
        use jsonwebtoken::errors::ErrorKind;
        match self.kind() {
            ErrorKind::ExpiredSignature => "expired".into(),
            ErrorKind::ImmatureSignature => "not yet valid".into(),
            ErrorKind::InvalidIssuer => "wrong issuer".into(),
            ErrorKind::InvalidSignature => "bad signature".into(),
            ErrorKind::InvalidAlgorithm => "wrong algorithm".into(),
            ErrorKind::MissingRequiredClaim(claim) => format!("missing claim {claim}"),
            _ => "malformed token".into(),
        }
    }
}

/// LiveKit sends int64 fields as JSON strings (protobuf JSON) or numbers.
fn int64<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    Ok(
        match Option::<serde_json::Value>::deserialize(deserializer)? {
            Some(serde_json::Value::Number(n)) => n.as_i64(),
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            _ => None,
        },
    )
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookEvent {
    event: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default, deserialize_with = "int64")]
    created_at: Option<i64>,
    #[serde(default)]
    room: Option<Room>,
    #[serde(default)]
    participant: Option<Participant>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Room {
    #[serde(default)]
    sid: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "int64")]
    creation_time: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Participant {
    #[serde(default)]
    identity: Option<String>,
    #[serde(default)]
    metadata: Option<String>,
    /// `ParticipantInfo.Kind`: "AGENT" (or 4) for agents.
    #[serde(default)]
    kind: Option<serde_json::Value>,
}

impl Participant {
    fn is_agent(&self, prefix: &str) -> bool {
        let agent_kind = match &self.kind {
            Some(serde_json::Value::String(k)) => k.eq_ignore_ascii_case("AGENT"),
            Some(serde_json::Value::Number(n)) => n.as_i64() == Some(4),
            _ => false,
        };
        let agent_identity = !prefix.is_empty()
            && self
                .identity
                .as_deref()
                .is_some_and(|i| i.starts_with(prefix));
        agent_kind || agent_identity
    }

    /// The metadata JSON object; absent or malformed metadata is an empty one.
    fn metadata(&self) -> serde_json::Map<String, serde_json::Value> {
        self.metadata
            .as_deref()
            .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default()
    }
}

/// `user_email` from participant metadata; anything else reads as unknown.
fn user_email(metadata: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
    metadata
        .get("user_email")
        .and_then(|v| v.as_str())
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
}

fn rfc3339_from_unix(seconds: Option<i64>) -> String {
    seconds
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map(shared::base::time::rfc3339)
        .unwrap_or_else(shared::base::time::now_rfc3339)
}

impl LiveKitWebhook {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            api_key: config::required("LIVEKIT_API_KEY")?,
            api_secret: config::required_secret("LIVEKIT_API_SECRET")?,
            agent_identity_prefix: config::optional("LIVEKIT_AGENT_IDENTITY_PREFIX")
                .unwrap_or_else(|| "agent-".into()),
            intake: aws.call_start_intake()?,
        })
    }
}

impl Route for LiveKitWebhook {
    type Body = serde_json::Value;

    async fn process(&self, request: Request) -> Result<(StatusCode, serde_json::Value), ApiError> {
        let body = api::body_bytes(request.body())?;
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if let Err(reason) = verify(authorization, body, &self.api_key, &self.api_secret) {
            warn!(%reason, "LiveKit webhook signature rejected");
            return Err(ApiError::Unauthorized);
        }
        let event: WebhookEvent = api::parse_json(body, "a LiveKit webhook event")?;
        let room_name = event
            .room
            .as_ref()
            .and_then(|r| r.name.clone())
            .filter(|n| !n.is_empty());
        match event.event.as_str() {
            "participant_joined" => self.participant_joined(&event, room_name, body).await,
            "room_started" => {
                let room = room_name.ok_or_else(|| {
                    ApiError::unprocessable("missing_field", "room.name is required")
                })?;
                let sid = event.room.as_ref().and_then(|r| r.sid.as_deref());
                let started = rfc3339_from_unix(
                    event
                        .room
                        .as_ref()
                        .and_then(|r| r.creation_time)
                        .or(event.created_at),
                );
                self.intake
                    .sessions
                    .room_started(&room, sid, &started)
                    .await
                    .map_err(api::unavailable)?;
                Ok((
                    StatusCode::OK,
                    serde_json::json!({"success": true, "recorded": "room_started"}),
                ))
            }
            "room_finished" => {
                let room = room_name.ok_or_else(|| {
                    ApiError::unprocessable("missing_field", "room.name is required")
                })?;
                let started = event.room.as_ref().and_then(|r| r.creation_time);
                let duration = started
                    .zip(event.created_at)
                    .and_then(|(s, e)| u64::try_from(e - s).ok());
                let ended = rfc3339_from_unix(event.created_at);
                // The sid tells this room from a later one of the same name.
                let sid = event.room.as_ref().and_then(|r| r.sid.as_deref());
                self.intake
                    .sessions
                    .room_finished(&room, &ended, duration, sid)
                    .await
                    .map_err(api::unavailable)?;
                Ok((
                    StatusCode::OK,
                    serde_json::json!({"success": true, "recorded": "room_finished"}),
                ))
            }
            other => Ok((
                StatusCode::OK,
                serde_json::json!({"success": true, "ignored": other}),
            )),
        }
    }
}

impl LiveKitWebhook {
    async fn participant_joined(
        &self,
        event: &WebhookEvent,
        room_name: Option<String>,
        body: &[u8],
    ) -> Result<(StatusCode, serde_json::Value), ApiError> {
        let participant = event
            .participant
            .as_ref()
            .ok_or_else(|| ApiError::unprocessable("missing_field", "participant is required"))?;
        if participant.is_agent(&self.agent_identity_prefix) {
            return Ok((
                StatusCode::OK,
                serde_json::json!({"success": true, "ignored": "agent participant"}),
            ));
        }
        let room = room_name
            .ok_or_else(|| ApiError::unprocessable("missing_field", "room.name is required"))?;
        // LiveKit gives every event an id; without one the body itself identifies the delivery.
        let event_id = event.id.clone().unwrap_or_else(|| hex_sha256(body));
        let metadata = participant.metadata();
        let email = user_email(&metadata);
        info!(
            room = %room,
            event_id = %event_id,
            user = %email.as_deref().map(mask::email).unwrap_or_else(|| "Unknown".into()),
            "caller joined"
        );
        let report = CallStartReport {
            response: serde_json::json!({
                "success": true, "queued": true, "event_id": event_id, "room_name": room,
            }),
            start: CallStart {
                room_name: room.clone(),
                user_email: email,
                started_at: rfc3339_from_unix(event.created_at),
                metadata,
            },
            participant_identity: participant.identity.as_deref(),
            reported_by: None,
        };
        let answer = self.intake.record(report, StatusCode::OK).await?;
        // The room's start was stored before: this is a later participant
        // (or a retry), which still joins a typed (seed 002) session's list.
        // The first one joins it from the stream, with the start.
        if answer.1.get("duplicate").is_some() {
            if let Some(identity) = &participant.identity {
                let change = SessionChange::Participant(identity.clone());
                if let Err(err) = self.intake.sessions.update(&room, &change).await {
                    warn!(%room, error = %err, "participant not added to the session");
                }
            }
        }
        Ok(answer)
    }
}

fn hex_sha256(body: &[u8]) -> String {
    Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_are_recognised_by_kind_or_identity() {
        let p = |identity: &str, kind: serde_json::Value| Participant {
            identity: Some(identity.into()),
            metadata: None,
            kind: Some(kind),
        };
        assert!(p("x", "AGENT".into()).is_agent("agent-"));
        assert!(p("x", 4.into()).is_agent("agent-"));
        assert!(p("agent-voice", "STANDARD".into()).is_agent("agent-"));
        assert!(!p("alice", "STANDARD".into()).is_agent("agent-"));
        assert!(!p("agent-voice", "STANDARD".into()).is_agent(""));
    }

    #[test]
    fn metadata_email_or_unknown() {
        let p = |metadata: Option<&str>| Participant {
            identity: None,
            metadata: metadata.map(str::to_string),
            kind: None,
        };
        assert_eq!(
            user_email(&p(Some(r#"{"user_email":"a@b.com"}"#)).metadata()),
            Some("a@b.com".into())
        );
        assert_eq!(user_email(&p(Some("not json")).metadata()), None);
        assert_eq!(
            user_email(&p(Some(r#"{"user_email":""}"#)).metadata()),
            None
        );
        assert_eq!(user_email(&p(Some("[1]")).metadata()), None);
        assert_eq!(user_email(&p(None).metadata()), None);
    }

    #[test]
    fn missing_header_is_rejected_before_anything_else() {
        assert_eq!(
            verify(None, b"{}", "key", &Secret::new("secret")),
            Err(SignatureError::Missing)
        );
        assert!(matches!(
            verify(Some("not-a-jwt"), b"{}", "key", &Secret::new("secret")),
            Err(SignatureError::Token(_))
        ));
    }
}
