//! ElevenLabs Conversational AI: outbound calls through its Twilio
//! integration, conversation details, and the signed post-call webhook.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::base::config::Secret;
pub use crate::providers::twilio::{ProviderError, ReadFailure};
use crate::store::outbound_calls::TranscriptLine;

/// The official SDK's tolerance for a post-call webhook's timestamp.
pub const SIGNATURE_TOLERANCE_SECS: i64 = 30 * 60;

#[derive(Clone)]
pub struct ElevenLabsClient {
    pub http: reqwest::Client,
    pub base_url: String,
    pub api_key: Secret,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OutboundCallStarted {
    #[serde(default)]
    pub success: bool,
    #[serde(default)]
    pub message: Option<String>,
    pub conversation_id: String,
    #[serde(default, rename = "callSid")]
    pub call_sid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ConversationMetadata {
    #[serde(default)]
    pub start_time_unix_secs: Option<i64>,
    #[serde(default)]
    pub call_duration_secs: Option<u64>,
    #[serde(default)]
    pub termination_reason: Option<String>,
}

/// `GET /v1/convai/conversations/{id}`, the parts callops uses; the raw
/// document is kept for the details endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub status: String,
    pub transcript: Vec<TranscriptLine>,
    pub metadata: Option<ConversationMetadata>,
    pub raw: serde_json::Value,
}

impl Conversation {
    /// `done` and `failed` are final; the rest may still change.
    pub fn is_final(&self) -> bool {
        matches!(self.status.as_str(), "done" | "failed")
    }
}

#[derive(Deserialize)]
struct ConversationDoc {
    status: String,
    #[serde(default)]
    transcript: Vec<TranscriptLine>,
    #[serde(default)]
    metadata: Option<ConversationMetadata>,
}

/// ElevenLabs' error bodies: `{"detail": "..."}`, `{"detail": {"message": ...}}`
/// or a 422 list `{"detail": [{"loc", "msg"}]}`.
fn error_message(body: &serde_json::Value) -> String {
    match &body["detail"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(o) => o
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or("request refused")
            .to_string(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|i| {
                let location = i["loc"]
                    .as_array()
                    .map(|l| {
                        l.iter()
                            .filter_map(|p| p.as_str())
                            .collect::<Vec<_>>()
                            .join(".")
                    })
                    .unwrap_or_default();
                format!("{location}: {}", i["msg"].as_str().unwrap_or("invalid"))
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => "request refused".into(),
    }
}

async fn failure(response: reqwest::Response) -> ProviderError {
    let status = response.status();
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return ProviderError::Unavailable(format!("ElevenLabs answered HTTP {}", status.as_u16()));
    }
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    ProviderError::Refused(format!(
        "ElevenLabs refused the request: {}",
        error_message(&body)
    ))
}

impl ElevenLabsClient {
    pub async fn outbound_call(
        &self,
        agent_id: &str,
        phone_number_id: &str,
        to_number: &str,
        dynamic_variables: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<OutboundCallStarted, ProviderError> {
        let response = self
            .http
            .post(format!("{}/v1/convai/twilio/outbound-call", self.base_url))
            .header("xi-api-key", self.api_key.expose())
            .json(&serde_json::json!({
                "agent_id": agent_id,
                "agent_phone_number_id": phone_number_id,
                "to_number": to_number,
                "conversation_initiation_client_data": {"dynamic_variables": dynamic_variables},
            }))
            .send()
            .await
            .map_err(|e| ProviderError::Unavailable(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(failure(response).await);
        }
        response.json().await.map_err(|e| {
            ProviderError::Unavailable(format!(
                "unreadable ElevenLabs response: {}",
                e.without_url()
            ))
        })
    }

    /// `None` when ElevenLabs does not know the conversation.
    pub async fn conversation(
        &self,
        conversation_id: &str,
    ) -> Result<Option<Conversation>, ReadFailure> {
        let response = self
            .http
            .get(format!(
                "{}/v1/convai/conversations/{conversation_id}",
                self.base_url
            ))
            .header("xi-api-key", self.api_key.expose())
            .send()
            .await
            .map_err(|e| ReadFailure::transport("ElevenLabs", e))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(ReadFailure::answered("ElevenLabs", &response));
        }
        let raw: serde_json::Value = response
            .json()
            .await
            .map_err(|e| ReadFailure::unreadable("ElevenLabs", e.without_url()))?;
        let doc: ConversationDoc = serde_json::from_value(raw.clone())
            .map_err(|e| ReadFailure::unreadable("ElevenLabs", e))?;
        Ok(Some(Conversation {
            status: doc.status,
            transcript: doc.transcript,
            metadata: doc.metadata,
            raw,
        }))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("no ElevenLabs-Signature header")]
    Missing,
    #[error("malformed signature header")]
    Malformed,
    #[error("timestamp outside the tolerance")]
    Stale,
    #[error("signature does not match")]
    Mismatch,
}

/// `ElevenLabs-Signature: t=<unix>,v0=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`,
/// checked in constant time, with the SDK's 30-minute tolerance.
pub fn verify_signature(
    header: Option<&str>,
    body: &[u8],
    secret: &Secret,
    now_unix: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v0", v)) => signatures.push(v.to_string()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now_unix - timestamp).abs() > SIGNATURE_TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = hex::encode(mac.finalize().into_bytes());
    let matched = signatures
        .iter()
        .any(|presented| bool::from(expected.as_bytes().ct_eq(presented.as_bytes())));
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.{body}").as_bytes());
        format!("t={t},v0={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn signatures_are_checked() {
        let secret = Secret::new("wsec_test");
        let body = r#"{"type":"post_call_transcription"}"#;
        let header = sign("wsec_test", 1_700_000_000, body);
        assert_eq!(
            verify_signature(Some(&header), body.as_bytes(), &secret, 1_700_000_100),
            Ok(())
        );
        assert_eq!(
            verify_signature(Some(&header), b"{\"type\":\"x\"}", &secret, 1_700_000_100),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(
                Some(&header),
                body.as_bytes(),
                &secret,
                1_700_000_000 + 31 * 60
            ),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_signature(None, body.as_bytes(), &secret, 0),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_signature(Some("v0=abc"), body.as_bytes(), &secret, 0),
            Err(SignatureError::Malformed)
        );
        let wrong = sign("other", 1_700_000_000, body);
        assert_eq!(
            verify_signature(Some(&wrong), body.as_bytes(), &secret, 1_700_000_000),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn error_bodies_become_messages() {
        let list = serde_json::json!({"detail": [{"loc": ["body", "to_number"], "msg": "Field required", "type": "missing"}]});
        assert_eq!(error_message(&list), "body.to_number: Field required");
        assert_eq!(
            error_message(&serde_json::json!({"detail": {"message": "Invalid API key"}})),
            "Invalid API key"
        );
        assert_eq!(
            error_message(&serde_json::json!({"detail": "nope"})),
            "nope"
        );
    }
}
