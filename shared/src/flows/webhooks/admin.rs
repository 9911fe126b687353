//! The webhook API of an organisation's key (function `webhook-endpoints`):
//!
//! - `POST|GET /webhook-endpoints`, `GET|PATCH|DELETE /webhook-endpoints/{endpoint_id}`
//! - `POST /webhook-endpoints/{endpoint_id}/rotate-secret`, `…/test`, `…/recover`
//! - `GET /webhook-endpoints/{endpoint_id}/attempts`
//! - `POST /webhook-endpoints/{endpoint_id}/messages/{message_id}/replay`
//! - `GET /webhook-messages/{message_id}`: the event and its attempts
//!
//! Secrets are shown once, at creation and rotation. Every lookup is by the
//! key's organisation: another organisation's endpoint or message is 404.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{Method, StatusCode};
use lambda_http::{Request, RequestExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::dispatch::Replayer;
use super::sender::UrlPolicy;
use super::{signing, WebhookEvent, WebhookJob, EVENT_TYPES};
use crate::api::access::KeyedAccess;
use crate::api::{self, ApiError};
use crate::base::time::{rfc3339, Clock};
use crate::queue::jobs::{self, JobQueue};
use crate::store::webhooks::{
    AttemptOutcome, AttemptRecord, Endpoint, EndpointCreated, EndpointPatch, WebhookStore,
};

/// Endpoints an organisation may have.
pub const MAX_ENDPOINTS: u32 = 20;
const MAX_DESCRIPTION_CHARS: usize = 256;
const MAX_BODY_BYTES: usize = 16 * 1024;
/// How long a rotated-out secret keeps signing beside the new one.
pub const ROTATION_OVERLAP: i64 = 86_400;
/// Most messages one recover call re-sends, and most failed attempts it
/// looks at: a call stays well inside the API's 29 s; `next_cursor`
/// continues where it stopped.
pub const MAX_RECOVER: usize = 100;
const DEFAULT_PAGE: i32 = 50;
const MAX_PAGE: i32 = 200;

pub struct WebhookApi {
    pub access: KeyedAccess,
    pub store: Arc<dyn WebhookStore>,
    pub replayer: Replayer,
    /// Where the test event goes (the worker's main queue).
    pub main_queue: Arc<dyn JobQueue>,
    pub policy: UrlPolicy,
    pub clock: Arc<dyn Clock>,
    /// Most messages one recover call re-sends ([`MAX_RECOVER`]); it looks
    /// at ten times as many failed attempts at most.
    pub recover_batch: usize,
}

/// An endpoint as shown: never its secret, except in [`CreatedEndpoint`].
#[derive(Debug, Serialize)]
pub struct EndpointView {
    pub endpoint_id: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<String>,
    /// Until then the secret before the last rotation signs too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_until: Option<String>,
    /// Since when every attempt has failed, if they have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

fn at(epoch: i64) -> String {
    rfc3339(chrono::DateTime::from_timestamp(epoch, 0).unwrap_or_default())
}

impl EndpointView {
    fn of(endpoint: Endpoint, now: i64) -> Self {
        Self {
            previous_secret_until: endpoint.previous_until.filter(|u| *u > now).map(at),
            failing_since: endpoint.failing_since.map(at),
            endpoint_id: endpoint.endpoint_id,
            url: endpoint.url,
            event_types: endpoint.event_types,
            description: endpoint.description,
            enabled: endpoint.enabled,
            disabled_reason: endpoint.disabled_reason,
            disabled_at: endpoint.disabled_at,
            created_at: endpoint.created_at,
            updated_at: endpoint.updated_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct CreatedEndpoint {
    #[serde(flatten)]
    pub endpoint: EndpointView,
    /// Shown only now.
    pub secret: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEndpoint {
    url: String,
    #[serde(default)]
    event_types: Option<Vec<String>>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointChange {
    url: Option<String>,
    event_types: Option<Vec<String>>,
    description: Option<String>,
    enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecoverRequest {
    since: String,
    /// The previous answer's `next_cursor`.
    #[serde(default)]
    cursor: Option<String>,
}

/// What the routes answer, in one type so one function serves them all.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum WebhookAnswer {
    Created(CreatedEndpoint),
    One(EndpointView),
    List {
        endpoints: Vec<EndpointView>,
    },
    Deleted {
        endpoint_id: String,
        deleted: bool,
    },
    Attempts {
        attempts: Vec<AttemptView>,
        next_cursor: Option<String>,
    },
    Message {
        message_id: String,
        #[serde(rename = "type")]
        event_type: String,
        timestamp: String,
        payload: Value,
        attempts: Vec<AttemptView>,
    },
    Queued {
        message_id: String,
        endpoint_id: String,
        attempt: u32,
    },
    Recovered {
        endpoint_id: String,
        since: String,
        recovered: usize,
        message_ids: Vec<String>,
        /// Where this call stopped (its bounds reached): pass it as
        /// `cursor` with the same `since`; `null` when it got to the end.
        next_cursor: Option<String>,
    },
}

#[derive(Debug, Serialize)]
pub struct AttemptView {
    pub message_id: String,
    pub endpoint_id: String,
    pub event_type: String,
    pub attempt: u32,
    pub at: String,
    /// `succeeded`, `failed` or `unknown`.
    pub status: AttemptOutcome,
    pub response_status_code: Option<u16>,
    pub latency_ms: u64,
    /// The first 1 KB of the answer.
    pub response: Option<String>,
    pub error: Option<String>,
    pub trigger: String,
}

impl From<AttemptRecord> for AttemptView {
    fn from(record: AttemptRecord) -> Self {
        Self {
            message_id: record.message_id,
            endpoint_id: record.endpoint_id,
            event_type: record.event_type,
            attempt: record.attempt,
            at: record.at,
            status: record.outcome,
            response_status_code: record.status_code,
            latency_ms: record.latency_ms,
            response: record.response,
            error: record.error,
            trigger: record.trigger,
        }
    }
}

fn endpoint_not_found() -> ApiError {
    ApiError::NotFound("Webhook endpoint not found".into())
}

fn message_not_found() -> ApiError {
    ApiError::NotFound("Webhook message not found".into())
}

/// Ids are ours (`ep_` + hex, `msg_` + hex): anything else is not found.
fn valid_id(id: &str, prefix: &str) -> bool {
    id.len() <= 40
        && id.starts_with(prefix)
        && id[prefix.len()..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric())
}

fn event_types(requested: Option<Vec<String>>) -> Result<Vec<String>, ApiError> {
    let Some(requested) = requested else {
        return Ok(Vec::new());
    };
    let unknown: Vec<&String> = requested
        .iter()
        .filter(|t| !EVENT_TYPES.contains(&t.as_str()))
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::unprocessable(
            "invalid_event_types",
            format!(
                "Unknown event types {unknown:?}; known: {}",
                EVENT_TYPES.join(", ")
            ),
        ));
    }
    Ok(requested
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect())
}

fn description(text: Option<String>) -> Result<Option<String>, ApiError> {
    match text {
        Some(text) if text.chars().count() > MAX_DESCRIPTION_CHARS => Err(ApiError::unprocessable(
            "invalid_description",
            format!("description must be at most {MAX_DESCRIPTION_CHARS} characters"),
        )),
        other => Ok(other),
    }
}

fn parse_status(raw: Option<&str>) -> Result<Option<AttemptOutcome>, ApiError> {
    match raw {
        None => Ok(None),
        Some("succeeded") => Ok(Some(AttemptOutcome::Succeeded)),
        Some("failed") => Ok(Some(AttemptOutcome::Failed)),
        Some("unknown") => Ok(Some(AttemptOutcome::Unknown)),
        Some(_) => Err(ApiError::bad_request(
            "invalid_status",
            "status must be succeeded, failed or unknown",
        )),
    }
}

fn parse_time(raw: &str, field: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.timestamp())
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_time",
                format!("{field} must be an RFC 3339 time such as 2026-01-31T09:00:00Z"),
            )
        })
}

fn encode_cursor(key: &HashMap<String, String>) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(key).unwrap_or_default())
}

fn decode_cursor(raw: &str) -> Result<HashMap<String, String>, ApiError> {
    URL_SAFE_NO_PAD
        .decode(raw)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .filter(|key: &HashMap<String, String>| key.len() <= 4 && raw.len() <= 1024)
        .ok_or_else(|| ApiError::bad_request("invalid_cursor", "cursor is not one we gave"))
}

impl WebhookApi {
    pub async fn handle(&self, request: Request) -> lambda_http::Response<lambda_http::Body> {
        api::respond(self.route(request).await)
    }

    async fn route(&self, request: Request) -> Result<(StatusCode, WebhookAnswer), ApiError> {
        let tenant = self.access.admit(request.headers()).await?;
        let org = tenant.org_id.as_str();
        let path = request.raw_http_path().trim_end_matches('/').to_string();
        let params = request.path_parameters();
        let method = request.method().clone();
        if let Some(message_id) = params.first("message_id") {
            if !valid_id(message_id, "msg_") {
                return Err(message_not_found());
            }
            if path.starts_with("/webhook-messages/") && method == Method::GET {
                return self.message(org, message_id, &request).await;
            }
        }
        let Some(endpoint_id) = params.first("endpoint_id") else {
            return match method {
                Method::POST => self.create(org, &request).await,
                Method::GET => self.list(org).await,
                _ => Err(ApiError::NotFound("No such route".into())),
            };
        };
        if !valid_id(endpoint_id, "ep_") {
            return Err(endpoint_not_found());
        }
        let action = path.rsplit('/').next().unwrap_or_default();
        match (method, action) {
            (Method::GET, a) if a == endpoint_id => self.get(org, endpoint_id).await,
            (Method::PATCH, a) if a == endpoint_id => self.update(org, endpoint_id, &request).await,
            (Method::DELETE, a) if a == endpoint_id => self.delete(org, endpoint_id).await,
            (Method::POST, "rotate-secret") => self.rotate(org, endpoint_id).await,
            (Method::POST, "test") => self.test(org, endpoint_id).await,
            (Method::GET, "attempts") => self.attempts(org, endpoint_id, &request).await,
            (Method::POST, "recover") => self.recover(org, endpoint_id, &request).await,
            (Method::POST, "replay") => {
                let message_id = params.first("message_id").unwrap_or_default();
                self.replay(org, endpoint_id, message_id).await
            }
            _ => Err(ApiError::NotFound("No such route".into())),
        }
    }

    async fn owned(&self, org: &str, endpoint_id: &str) -> Result<Endpoint, ApiError> {
        self.store
            .endpoint(org, endpoint_id)
            .await
            .map_err(api::unavailable)?
            .ok_or_else(endpoint_not_found)
    }

    fn checked_url(&self, raw: &str) -> Result<String, ApiError> {
        self.policy
            .check(raw)
            .map(|url| url.to_string())
            .map_err(|reason| ApiError::unprocessable("invalid_url", reason))
    }

    async fn create(
        &self,
        org: &str,
        request: &Request,
    ) -> Result<(StatusCode, WebhookAnswer), ApiError> {
        let body = api::body_bytes_within(request.body(), MAX_BODY_BYTES)?;
        let new: NewEndpoint = api::parse_json(body, "a webhook endpoint")?;
        let url = self.checked_url(&new.url)?;
        let now = self.clock.now();
        let created_at = at(now);
        let endpoint = Endpoint {
            endpoint_id: format!("ep_{}", &uuid::Uuid::new_v4().simple().to_string()[..20]),
            org_id: org.to_string(),
            url,
            event_types: event_types(new.event_types)?,
            description: description(new.description)?.unwrap_or_default(),
            enabled: true,
            disabled_reason: None,
            disabled_at: None,
            secret: signing::new_secret(),
            previous_secret: None,
            previous_until: None,
            created_at: created_at.clone(),
            updated_at: created_at,
            failing_since: None,
            slow_until: None,
        };
        match self
            .store
            .create_endpoint(&endpoint, MAX_ENDPOINTS)
            .await
            .map_err(api::unavailable)?
        {
            EndpointCreated::Created => {
                tracing::info!(org_id = %org, endpoint_id = %endpoint.endpoint_id, "webhook endpoint created");
                let secret = endpoint.secret.clone();
                Ok((
                    StatusCode::CREATED,
                    WebhookAnswer::Created(CreatedEndpoint {
                        endpoint: EndpointView::of(endpoint, now),
                        secret,
                    }),
                ))
            }
            EndpointCreated::LimitReached => Err(ApiError::Conflict {
                code: "webhook_endpoint_limit",
                detail: format!(
                    "An organisation may have at most {MAX_ENDPOINTS} webhook endpoints; delete one first"
                ),
            }),
        }
    }

    async fn list(&self, org: &str) -> Result<(StatusCode, WebhookAnswer), ApiError> {
        let now = self.clock.now();
        let endpoints = self
            .store
            .endpoints(org)
            .await
            .map_err(api::unavailable)?
            .into_iter()
            .map(|e| EndpointView::of(e, now))
            .collect();
        Ok((StatusCode::OK, WebhookAnswer::List { endpoints }))
    }

    async fn get(&self, org: &str, id: &str) -> Result<(StatusCode, WebhookAnswer), ApiError> {
        let endpoint = self.owned(org, id).await?;
        Ok((
            StatusCode::OK,
            WebhookAnswer::One(EndpointView::of(endpoint, self.clock.now())),
        ))
    }

    async fn update(
        &self,
        org: &str,
        id: &str,
        request: &Request,
    ) -> Result<(StatusCode, WebhookAnswer), ApiError> {
        let body = api::body_bytes_within(request.body(), MAX_BODY_BYTES)?;
        let change: EndpointChange = api::parse_json(body, "a webhook endpoint change")?;
        let patch = EndpointPatch {
            url: change
                .url
                .as_deref()
                .map(|u| self.checked_url(u))
                .transpose()?,
            event_types: change
                .event_types
                .map(|t| event_types(Some(t)))
                .transpose()?,
            description: description(change.description)?,
            enabled: change.enabled,
        };
        let endpoint = self
            .store
            .update_endpoint(org, id, &patch)
            .await
            .map_err(api::unavailable)?
            .ok_or_else(endpoint_not_found)?;
        Ok((
            StatusCode::OK,
            WebhookAnswer::One(EndpointView::of(endpoint, self.clock.now())),
        ))
    }

    async fn delete(&self, org: &str, id: &str) -> Result<(StatusCode, WebhookAnswer), ApiError> {
        if !self
            .store
            .delete_endpoint(org, id)
            .await
            .map_err(api::unavailable)?
        {
            return Err(endpoint_not_found());
        }
        Ok((
            StatusCode::OK,
            WebhookAnswer::Deleted {
                endpoint_id: id.to_string(),
                deleted: true,
            },
        ))
    }

    async fn rotate(&self, org: &str, id: &str) -> Result<(StatusCode, WebhookAnswer), ApiError> {
        let now = self.clock.now();
        let secret = signing::new_secret();
        let endpoint = self
            .store
            .rotate_secret(org, id, &secret, now + ROTATION_OVERLAP)
            .await
            .map_err(api::unavailable)?
            .ok_or_else(endpoint_not_found)?;
        tracing::info!(org_id = %org, endpoint_id = %id, "webhook secret rotated");
        Ok((
            StatusCode::OK,
            WebhookAnswer::Created(CreatedEndpoint {
                endpoint: EndpointView::of(endpoint, now),
                secret,
            }),
        ))
    }

    /// A `webhook.test` event to this endpoint alone.
    async fn test(&self, org: &str, id: &str) -> Result<(StatusCode, WebhookAnswer), ApiError> {
        let endpoint = self.owned(org, id).await?;
        let now = self.clock.now();
        let event = WebhookEvent::new(
            org,
            "webhook.test",
            &format!("{id}#{}", uuid::Uuid::new_v4().simple()),
            at(now),
            serde_json::json!({
                "endpoint_id": endpoint.endpoint_id,
                "message": "A test event from callops",
            }),
        );
        let message_id = event.id.clone();
        jobs::send(
            self.main_queue.as_ref(),
            &WebhookJob::Event {
                event,
                only: Some(endpoint.endpoint_id.clone()),
            },
            std::time::Duration::ZERO,
        )
        .await
        .map_err(api::unavailable)?;
        Ok((
            StatusCode::ACCEPTED,
            WebhookAnswer::Queued {
                message_id,
                endpoint_id: endpoint.endpoint_id,
                attempt: 0,
            },
        ))
    }

    async fn attempts(
        &self,
        org: &str,
        id: &str,
        request: &Request,
    ) -> Result<(StatusCode, WebhookAnswer), ApiError> {
        let query = request.query_string_parameters();
        let status = parse_status(query.first("status"))?;
        let since = match query.first("since") {
            Some(raw) => parse_time(raw, "since")?,
            None => 0,
        };
        let limit = crate::api::page_limit(query.first("limit"), DEFAULT_PAGE, MAX_PAGE)?;
        let cursor = query.first("cursor").map(decode_cursor).transpose()?;
        self.owned(org, id).await?;
        let page = self
            .store
            .endpoint_attempts(id, since * 1000, status, limit, cursor.as_ref())
            .await
            .map_err(api::unavailable)?;
        Ok((
            StatusCode::OK,
            WebhookAnswer::Attempts {
                attempts: page
                    .attempts
                    .into_iter()
                    .filter(|a| a.org_id == org)
                    .map(AttemptView::from)
                    .collect(),
                next_cursor: page.next.as_ref().map(encode_cursor),
            },
        ))
    }

    async fn message(
        &self,
        org: &str,
        message_id: &str,
        request: &Request,
    ) -> Result<(StatusCode, WebhookAnswer), ApiError> {
        let status = parse_status(request.query_string_parameters().first("status"))?;
        let message = self
            .store
            .message(message_id)
            .await
            .map_err(api::unavailable)?
            .filter(|m| m.org_id == org)
            .ok_or_else(message_not_found)?;
        let mut attempts: Vec<AttemptRecord> = self
            .store
            .message_attempts(message_id)
            .await
            .map_err(api::unavailable)?
            .into_iter()
            .filter(|a| status.is_none_or(|s| a.outcome == s))
            .collect();
        attempts.sort_by_key(|a| (a.at_ms, a.attempt));
        Ok((
            StatusCode::OK,
            WebhookAnswer::Message {
                payload: serde_json::from_str(&message.body).unwrap_or(Value::Null),
                message_id: message.message_id,
                event_type: message.event_type,
                timestamp: message.timestamp,
                attempts: attempts.into_iter().map(AttemptView::from).collect(),
            },
        ))
    }

    async fn replay(
        &self,
        org: &str,
        endpoint_id: &str,
        message_id: &str,
    ) -> Result<(StatusCode, WebhookAnswer), ApiError> {
        let endpoint = self.owned(org, endpoint_id).await?;
        self.store
            .message(message_id)
            .await
            .map_err(api::unavailable)?
            .filter(|m| m.org_id == org)
            .ok_or_else(message_not_found)?;
        let attempt = self
            .replayer
            .replay(org, &endpoint, message_id, "replay")
            .await
            .map_err(api::unavailable)?
            .ok_or_else(|| ApiError::Conflict {
                code: "attempt_in_progress",
                detail: "An attempt of this message is being sent now; replay it once it ends"
                    .into(),
            })?;
        Ok((
            StatusCode::ACCEPTED,
            WebhookAnswer::Queued {
                message_id: message_id.to_string(),
                endpoint_id: endpoint_id.to_string(),
                attempt,
            },
        ))
    }

    /// Re-sends every message whose delivery to this endpoint failed (all
    /// its attempts) since `since`, found from the attempts index.
    async fn recover(
        &self,
        org: &str,
        endpoint_id: &str,
        request: &Request,
    ) -> Result<(StatusCode, WebhookAnswer), ApiError> {
        let body = api::body_bytes_within(request.body(), MAX_BODY_BYTES)?;
        let asked: RecoverRequest = api::parse_json(body, "{\"since\": \"<RFC 3339 time>\"}")?;
        let since = parse_time(&asked.since, "since")?;
        let mut cursor = asked.cursor.as_deref().map(decode_cursor).transpose()?;
        let endpoint = self.owned(org, endpoint_id).await?;
        let mut seen = BTreeSet::new();
        let mut recovered = Vec::new();
        let mut scanned = 0;
        let mut last_scanned: Option<AttemptRecord> = None;
        let mut stopped = false;
        'pages: loop {
            let page = self
                .store
                .endpoint_attempts(
                    endpoint_id,
                    since * 1000,
                    Some(AttemptOutcome::Failed),
                    200,
                    cursor.as_ref(),
                )
                .await
                .map_err(api::unavailable)?;
            for attempt in page.attempts {
                if recovered.len() >= self.recover_batch || scanned >= self.recover_batch * 10 {
                    stopped = true;
                    break 'pages;
                }
                scanned += 1;
                last_scanned = Some(attempt.clone());
                if !seen.insert(attempt.message_id.clone()) {
                    continue;
                }
                let failed = self
                    .store
                    .delivery(&attempt.message_id, endpoint_id)
                    .await
                    .map_err(api::unavailable)?
                    .is_some_and(|d| d.state == crate::store::webhooks::DeliveryState::Failed);
                if failed
                    && self
                        .replayer
                        .replay(org, &endpoint, &attempt.message_id, "recover")
                        .await
                        .map_err(api::unavailable)?
                        .is_some()
                {
                    recovered.push(attempt.message_id);
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        // The next call starts after the last attempt looked at.
        let next_cursor = last_scanned
            .filter(|_| stopped)
            .map(|last| encode_cursor(&crate::store::webhooks::attempt_cursor(&last)));
        Ok((
            StatusCode::ACCEPTED,
            WebhookAnswer::Recovered {
                endpoint_id: endpoint_id.to_string(),
                since: at(since),
                recovered: recovered.len(),
                message_ids: recovered,
                next_cursor,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_only_ours() {
        assert!(valid_id("ep_0123abcd", "ep_"));
        assert!(!valid_id("ep_../x", "ep_"));
        assert!(!valid_id("msg_1", "ep_"));
        assert!(!valid_id(&format!("ep_{}", "a".repeat(40)), "ep_"));
    }

    #[test]
    fn event_types_are_checked_and_deduplicated() {
        assert_eq!(event_types(None).unwrap(), Vec::<String>::new());
        assert_eq!(
            event_types(Some(vec!["call.ended".into(), "call.ended".into()])).unwrap(),
            vec!["call.ended".to_string()]
        );
        assert!(event_types(Some(vec!["call.exploded".into()])).is_err());
    }

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let key = HashMap::from([("pk".to_string(), "msg#1".to_string())]);
        assert_eq!(decode_cursor(&encode_cursor(&key)).unwrap(), key);
        assert!(decode_cursor("not-a-cursor").is_err());
    }
}
