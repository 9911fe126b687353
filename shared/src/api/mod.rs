//! The HTTP surface: one error type with one status mapping, JSON responses,
//! and credential checks that run before a body is parsed.

pub mod access;
pub mod invites;
pub mod public_url;

use http::{HeaderMap, StatusCode};
use lambda_http::{Body, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::base::config::Secret;

/// Webhook bodies are small forms or JSON objects; anything larger is refused
/// before parsing so a caller cannot make us buffer and parse megabytes.
pub const MAX_WEBHOOK_BODY_BYTES: usize = 64 * 1024;

/// ElevenLabs post-call bodies carry the whole transcript and analysis and
/// reach several MB. 6 MB is Lambda's synchronous payload limit (API
/// Gateway's is 10 MB), so nothing larger reaches the function anyway.
pub const ELEVENLABS_MAX_BODY_BYTES: usize = 6 * 1024 * 1024;

/// Every client-visible failure. `detail` is written for a person and never
/// carries internal error text; internals are logged where they happen.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("unauthorized")]
    Unauthorized,
    /// Credentials were presented and are wrong (Twilio's middleware answers 403).
    #[error("forbidden")]
    Forbidden,
    /// Valid credentials that may not do this (e.g. a key of no organisation).
    #[error("not permitted: {detail}")]
    NotPermitted { code: &'static str, detail: String },
    #[error("payload too large")]
    PayloadTooLarge { limit: usize },
    #[error("bad request: {detail}")]
    BadRequest { code: &'static str, detail: String },
    #[error("unprocessable: {detail}")]
    Unprocessable { code: &'static str, detail: String },
    /// Rows of a list refused, each named in `rows` (`[{row, field, reason}]`).
    #[error("invalid rows: {detail}")]
    InvalidRows {
        code: &'static str,
        detail: String,
        rows: serde_json::Value,
    },
    #[error("not found: {0}")]
    NotFound(String),
    /// Another delivery of the same event holds the lease; the sender should retry.
    #[error("in progress")]
    InProgress,
    /// A dependency failed; nothing was acknowledged, so the sender should retry.
    #[error("unavailable")]
    Unavailable,
    /// A limit was reached (rate or usage); `detail` says which.
    #[error("too many requests: {detail}")]
    TooManyRequests { code: &'static str, detail: String },
    /// The telephony provider refused; `detail` is the provider's own
    /// client-facing message, never our internals.
    #[error("provider error: {detail}")]
    Provider { detail: String },
    /// The request conflicts with what exists (a room name taken, a session ended).
    #[error("conflict: {detail}")]
    Conflict { code: &'static str, detail: String },
    /// A dependency we call on the client's behalf (LiveKit) failed or refused.
    #[error("bad gateway: {detail}")]
    BadGateway { code: &'static str, detail: String },
    /// Like `Unavailable`, saying which setting could not be read (an
    /// organisation's provider account); the sender should retry.
    #[error("service unavailable: {detail}")]
    ServiceUnavailable { code: &'static str, detail: String },
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    detail: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rows: Option<&'a serde_json::Value>,
}

impl ApiError {
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            detail: detail.into(),
        }
    }

    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::Unprocessable {
            code,
            detail: detail.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::NotPermitted { .. } => StatusCode::FORBIDDEN,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unprocessable { .. } | Self::InvalidRows { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::InProgress => StatusCode::CONFLICT,
            Self::Unavailable | Self::ServiceUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Provider { .. } | Self::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            Self::Conflict { .. } => StatusCode::CONFLICT,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "invalid_signature",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::BadRequest { code, .. }
            | Self::Unprocessable { code, .. }
            | Self::InvalidRows { code, .. }
            | Self::NotPermitted { code, .. }
            | Self::TooManyRequests { code, .. }
            | Self::Conflict { code, .. }
            | Self::BadGateway { code, .. }
            | Self::ServiceUnavailable { code, .. } => code,
            Self::Provider { .. } => "provider_error",
            Self::NotFound(_) => "not_found",
            Self::InProgress => "in_progress",
            Self::Unavailable => "unavailable",
        }
    }

    pub fn detail(&self) -> String {
        match self {
            Self::Unauthorized => "Missing or invalid credentials".to_string(),
            Self::Forbidden => "Request signature does not match".to_string(),
            Self::PayloadTooLarge { limit } => {
                format!("Request body is larger than {limit} bytes")
            }
            Self::BadRequest { detail, .. }
            | Self::Unprocessable { detail, .. }
            | Self::InvalidRows { detail, .. }
            | Self::NotPermitted { detail, .. }
            | Self::TooManyRequests { detail, .. }
            | Self::Conflict { detail, .. }
            | Self::BadGateway { detail, .. }
            | Self::ServiceUnavailable { detail, .. }
            | Self::Provider { detail } => detail.clone(),
            Self::NotFound(what) => what.clone(),
            Self::InProgress => {
                "Another delivery of this event is being processed; retry shortly".to_string()
            }
            Self::Unavailable => "Temporarily unable to process the request; retry".to_string(),
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let detail = self.detail();
        let mut response = json(
            self.status(),
            &ErrorBody {
                detail: &detail,
                code: self.code(),
                rows: match &self {
                    Self::InvalidRows { rows, .. } => Some(rows),
                    _ => None,
                },
            },
        );
        if matches!(
            self,
            Self::InProgress
                | Self::Unavailable
                | Self::ServiceUnavailable { .. }
                | Self::TooManyRequests { .. }
        ) {
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("5"),
            );
        }
        response
    }
}

/// A JSON response. Serialising our own response types cannot fail.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Body> {
    let text = serde_json::to_string(body).expect("response types serialise");
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::Text(text))
        .expect("static response parts are valid")
}

/// Handler results become responses in one place.
pub fn respond<T: Serialize>(result: Result<(StatusCode, T), ApiError>) -> Response<Body> {
    match result {
        Ok((status, body)) => json(status, &body),
        Err(err) => err.into_response(),
    }
}

/// Longest bearer or webhook token considered; configured tokens must be shorter.
pub const MAX_CREDENTIAL_BYTES: usize = 512;

/// Compares a presented credential with the configured one in constant time.
/// Both sides are hashed first so neither the content nor the length leaks.
/// An over-long one is refused unhashed: no token of ours is that long.
pub fn credential_matches(presented: &str, expected: &Secret) -> bool {
    if presented.len() > MAX_CREDENTIAL_BYTES {
        return false;
    }
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.expose().as_bytes());
    bool::from(a.ct_eq(&b))
}

/// `Authorization: Bearer <token>` checked against the configured token.
pub fn require_bearer(headers: &HeaderMap, expected: &Secret) -> Result<(), ApiError> {
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    if credential_matches(presented.trim(), expected) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// The raw body bytes, refusing oversized ones before anything parses them.
pub fn body_bytes(body: &Body) -> Result<&[u8], ApiError> {
    body_bytes_within(body, MAX_WEBHOOK_BODY_BYTES)
}

/// [`body_bytes`] for a route with its own limit.
pub fn body_bytes_within(body: &Body, limit: usize) -> Result<&[u8], ApiError> {
    let bytes: &[u8] = body.as_ref();
    if bytes.len() > limit {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    Ok(bytes)
}

/// A once-only handler's outcome as a response: `first` for the delivery
/// that did the work, 200 with `duplicate: true` for a replay (so the sender
/// stops retrying), 409 while another delivery holds the claim.
pub fn once_response(
    result: Result<crate::store::dedup::Once, crate::store::dedup::OnceError<ApiError>>,
    first: StatusCode,
) -> Result<(StatusCode, serde_json::Value), ApiError> {
    use crate::store::dedup::{Once, OnceError};
    match result {
        Ok(Once::Done(response)) => Ok((first, response)),
        Ok(Once::Duplicate(mut saved)) => {
            saved["duplicate"] = true.into();
            Ok((StatusCode::OK, saved))
        }
        Ok(Once::InProgress) => Err(ApiError::InProgress),
        Err(OnceError::Store(err)) => {
            tracing::warn!(error = %err, "dedup store unavailable");
            Err(ApiError::Unavailable)
        }
        Err(OnceError::Work(err)) => Err(err),
    }
}

/// A page's `limit` query value: `default` when absent, else a whole
/// number from 1 to `max` (400 `invalid_limit` otherwise).
pub fn page_limit(raw: Option<&str>, default: i32, max: i32) -> Result<i32, ApiError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    raw.parse::<i32>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| ApiError::bad_request("invalid_limit", format!("limit must be 1-{max}")))
}

/// The body parsed as JSON; `what` names the expected document in the 400.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("Body is not {what}: {e}")))
}

/// An optional JSON object field (metadata, agent variables): absent or null
/// is empty; anything but an object is refused with `refusal`.
pub fn optional_object(
    value: Option<serde_json::Value>,
    refusal: impl FnOnce() -> ApiError,
) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(serde_json::Map::new()),
        Some(serde_json::Value::Object(map)) => Ok(map),
        Some(_) => Err(refusal()),
    }
}

/// A dependency failed: logged here, answered 503 so the sender retries.
pub fn unavailable(err: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %err, "dependency unavailable");
    ApiError::Unavailable
}

/// An HTTP function: what it does with a request, as a status and a JSON
/// body or an `ApiError`. `handle` turns that into the response Lambda sends.
pub trait Route: Sync {
    type Body: Serialize;

    fn process(
        &self,
        request: lambda_http::Request,
    ) -> impl std::future::Future<Output = Result<(StatusCode, Self::Body), ApiError>> + Send;

    fn handle(
        &self,
        request: lambda_http::Request,
    ) -> impl std::future::Future<Output = Response<Body>> + Send {
        async move { respond(self.process(request).await) }
    }
}

/// Time left in this invocation, from the Lambda context; `None` outside Lambda.
pub fn remaining_time(request: &lambda_http::Request) -> Option<std::time::Duration> {
    use lambda_http::RequestExt;
    let deadline = request.lambda_context_ref()?.deadline;
    let now = u64::try_from(crate::base::time::epoch_millis()).ok()?;
    (deadline > now).then(|| std::time::Duration::from_millis(deadline - now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_is_checked() {
        let secret = Secret::new("s3cret-token-value");
        let mut headers = HeaderMap::new();
        assert!(require_bearer(&headers, &secret).is_err());
        headers.insert("authorization", "Bearer wrong".parse().unwrap());
        assert!(require_bearer(&headers, &secret).is_err());
        headers.insert(
            "authorization",
            "Bearer s3cret-token-value".parse().unwrap(),
        );
        assert!(require_bearer(&headers, &secret).is_ok());
        headers.insert("authorization", "Basic s3cret-token-value".parse().unwrap());
        assert!(require_bearer(&headers, &secret).is_err());
    }

    #[test]
    fn over_long_tokens_are_refused() {
        // Even one equal to the configured value: nothing of ours is that long.
        let long = "t".repeat(MAX_CREDENTIAL_BYTES + 1);
        assert!(!credential_matches(&long, &Secret::new(long.clone())));
        let mut headers = HeaderMap::new();
        headers.insert("authorization", format!("Bearer {long}").parse().unwrap());
        assert!(require_bearer(&headers, &Secret::new(long)).is_err());
    }

    #[test]
    fn errors_render_detail_and_code() {
        let response =
            ApiError::bad_request("invalid_json", "Body is not valid JSON").into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: serde_json::Value = serde_json::from_slice(response.body().as_ref()).unwrap();
        assert_eq!(body["detail"], "Body is not valid JSON");
        assert_eq!(body["code"], "invalid_json");
    }

    #[test]
    fn oversized_bodies_are_refused() {
        let body = Body::Binary(vec![b'a'; MAX_WEBHOOK_BODY_BYTES + 1]);
        assert!(matches!(
            body_bytes(&body),
            Err(ApiError::PayloadTooLarge { .. })
        ));
        let body = Body::Text("{}".into());
        assert_eq!(body_bytes(&body).unwrap(), b"{}");
    }
}
