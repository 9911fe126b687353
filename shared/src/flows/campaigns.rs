//! `/campaigns` (issue 23): an organisation's lists of people to call, each
//! an ordinary outbound call of one assistant, dialled inside a calling
//! window in the recipient's own time zone.
//!
//! - `POST /campaigns` takes the recipients as a JSON array
//!   (`recipients`), a CSV text (`recipients_csv`), or a `text/csv` body
//!   with the other fields as query parameters. Every row is checked first;
//!   one bad row refuses the request (422 `invalid_recipients`, every bad
//!   row named) unless `skip_invalid` is true, when the rest is created
//!   and the bad rows are reported. An `Idempotency-Key` header makes a
//!   retried request answer the campaign it created, never a second one.
//! - `GET /campaigns`, `GET /campaigns/{id}`, `GET /campaigns/{id}/recipients`.
//! - `POST /campaigns/{id}/pause|resume|cancel`: one conditional write each.
//!
//! Another organisation's campaign is answered exactly like a missing one.

pub mod engine;
pub mod recipients;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use http::{Method, StatusCode};
use lambda_http::{Request, RequestExt};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::api::access::KeyedAccess;
use crate::api::{self, ApiError, Route};
use crate::base::calling_window::CallingWindow;
use crate::store::campaigns::{
    Begun, Campaign, CampaignState, CampaignStore, Recipient, RecipientState, RetryPolicy,
    RetryRule, Transition,
};
use crate::store::directory::DirectoryStore;
use recipients::{RowProblem, RowRules, MAX_ROWS};

/// A 10,000-row CSV with agent variables fits well inside; Lambda's own
/// synchronous limit is 6 MB.
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;
/// Longest `Idempotency-Key` kept.
const MAX_IDEMPOTENCY_KEY: usize = 255;
const MAX_NAME_CHARS: usize = 200;
/// Furthest ahead a campaign may start, and longest it may run.
const MAX_START_AHEAD_DAYS: i64 = 365;
const MAX_RUN_DAYS: i64 = 365;
/// Bounds of a retry rule.
const MAX_ATTEMPTS: u32 = 10;
const MAX_SPACING_MINUTES: u32 = 7 * 24 * 60;
const DEFAULT_PAGE: i32 = 50;
const MAX_PAGE: i32 = 100;

pub struct CampaignsApi {
    pub access: KeyedAccess,
    pub store: Arc<dyn CampaignStore>,
    /// Assistants (the campaign's must be the organisation's, active) and
    /// organisations (their concurrency cap).
    pub directory: Arc<dyn DirectoryStore>,
}

/// `POST /campaigns`'s JSON body (or, with a CSV body, its query).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CampaignBody {
    name: Option<String>,
    assistant_id: Option<u64>,
    agenda: Option<String>,
    welcome_message: Option<String>,
    recipients: Option<Vec<serde_json::Value>>,
    recipients_csv: Option<String>,
    start_at: Option<String>,
    end_at: Option<String>,
    window: Option<CallingWindow>,
    max_concurrency: Option<u32>,
    retry: Option<RetryBody>,
    #[serde(default)]
    skip_invalid: bool,
}

/// Each outcome's rule, absent ones at their default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    no_answer: Option<RetryRule>,
    busy: Option<RetryRule>,
    failed: Option<RetryRule>,
    voicemail: Option<RetryRule>,
}

/// The default calling window: 09:00 to 20:00 on weekdays, inside the hours
/// the US TCPA allows (08:00 to 21:00 local).
fn default_window() -> CallingWindow {
    CallingWindow {
        start: "09:00".into(),
        end: "20:00".into(),
        days: ["mon", "tue", "wed", "thu", "fri"]
            .iter()
            .map(|d| d.to_string())
            .collect(),
    }
}

impl Route for CampaignsApi {
    type Body = serde_json::Value;

    async fn process(&self, request: Request) -> Result<(StatusCode, serde_json::Value), ApiError> {
        let tenant = self.access.admit(request.headers()).await?;
        let org = tenant.org_id.as_str();
        let path = request.uri().path().trim_end_matches('/').to_string();
        let parts: Vec<&str> = path.split('/').skip(1).collect();
        match (request.method().clone(), parts.as_slice()) {
            (Method::POST, ["campaigns"]) => self.create(org, &request).await,
            (Method::GET, ["campaigns"]) => self.list(org, &request).await,
            (Method::GET, ["campaigns", id]) => {
                let campaign = self.owned(org, id).await?;
                Ok((StatusCode::OK, view(&campaign)))
            }
            (Method::GET, ["campaigns", id, "recipients"]) => {
                self.recipients(org, id, &request).await
            }
            (Method::POST, ["campaigns", id, action]) => self.act(org, id, action).await,
            _ => Err(ApiError::NotFound("No such route".into())),
        }
    }
}

/// A campaign as answered: its counts with every state present.
fn view(campaign: &Campaign) -> serde_json::Value {
    let mut body = serde_json::to_value(campaign).unwrap_or_default();
    let mut counts = serde_json::Map::new();
    for state in RecipientState::ALL {
        let n = campaign.counts.get(state.as_str()).copied().unwrap_or(0);
        counts.insert(state.as_str().into(), n.into());
    }
    body["counts"] = counts.into();
    body
}

/// A recipient as answered: the engine's bookkeeping (its due time, the
/// attempt being dialled) left out, a pending one's next dial shown.
fn recipient_view(recipient: &Recipient) -> serde_json::Value {
    let mut body = serde_json::to_value(recipient).unwrap_or_default();
    if let Some(object) = body.as_object_mut() {
        object.remove("due_at");
        object.remove("dial_call_ref");
        if let (RecipientState::Pending, Some(due)) = (recipient.state, recipient.due_at) {
            if let Some(at) = chrono::DateTime::from_timestamp(due, 0) {
                object.insert(
                    "next_attempt_at".into(),
                    crate::base::time::rfc3339(at).into(),
                );
            }
        }
    }
    body
}

/// Only ids of our own shape reach the store.
fn valid_campaign_id(id: &str) -> bool {
    id.strip_prefix("cmp_")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The id of a new campaign: random, or, with an `Idempotency-Key`, the
/// same for the same key of the same organisation (never one a caller picks).
fn campaign_id(org_id: &str, idempotency_key: Option<&str>) -> String {
    match idempotency_key {
        Some(key) => {
            let digest = Sha256::digest(format!("{org_id}\0{key}").as_bytes());
            format!("cmp_{}", &hex::encode(digest)[..32])
        }
        None => format!("cmp_{}", uuid::Uuid::new_v4().simple()),
    }
}

fn idempotency_key(request: &Request) -> Result<Option<String>, ApiError> {
    let Some(value) = request.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().ok().map(str::trim).unwrap_or_default();
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            format!("Idempotency-Key is 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"),
        ));
    }
    Ok(Some(key.to_string()))
}

fn is_csv(request: &Request) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("text/csv"))
}

/// A CSV request's campaign fields, from its query: the JSON body's names,
/// with the window as `window_start`, `window_end`, `window_days` (comma
/// separated) and the retry policy as `retry` (its JSON).
fn body_of_query(request: &Request, csv: String) -> Result<CampaignBody, ApiError> {
    let query = request.query_string_parameters();
    let mut object = serde_json::Map::new();
    let mut window = serde_json::Map::new();
    for (name, value) in query.iter() {
        let value = value.to_string();
        let number = |field: &str| -> Result<serde_json::Value, ApiError> {
            value.parse::<u64>().map(Into::into).map_err(|_| {
                ApiError::bad_request("invalid_query", format!("{field} must be a whole number"))
            })
        };
        match name {
            "name" | "agenda" | "welcome_message" | "start_at" | "end_at" => {
                object.insert(name.into(), value.clone().into());
            }
            "assistant_id" | "max_concurrency" => {
                object.insert(name.into(), number(name)?);
            }
            "skip_invalid" => {
                let flag = match value.as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(ApiError::bad_request(
                            "invalid_query",
                            "skip_invalid is true or false",
                        ))
                    }
                };
                object.insert(name.into(), flag.into());
            }
            "window_start" | "window_end" => {
                window.insert(name["window_".len()..].into(), value.clone().into());
            }
            "window_days" => {
                let days: Vec<serde_json::Value> =
                    value.split(',').map(|d| d.trim().into()).collect();
                window.insert("days".into(), days.into());
            }
            "retry" => {
                let retry: serde_json::Value = serde_json::from_str(&value).map_err(|_| {
                    ApiError::bad_request("invalid_query", "retry must be the policy's JSON")
                })?;
                object.insert(name.into(), retry);
            }
            other => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!(
                        "unknown query parameter {:?}",
                        other.chars().take(64).collect::<String>()
                    ),
                ))
            }
        }
    }
    if !window.is_empty() {
        object.insert("window".into(), window.into());
    }
    object.insert("recipients_csv".into(), csv.into());
    serde_json::from_value(object.into())
        .map_err(|err| ApiError::bad_request("invalid_query", format!("query parameters: {err}")))
}

fn instant(field: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::unprocessable(
                "invalid_time",
                format!("{field} must be an RFC 3339 time (e.g. 2026-12-07T09:00:00Z)"),
            )
        })
}

fn bounded_text(
    field: &str,
    value: Option<String>,
    max: usize,
) -> Result<Option<String>, ApiError> {
    let value = value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    if value.as_ref().is_some_and(|v| v.chars().count() > max) {
        return Err(ApiError::unprocessable(
            "field_too_long",
            format!("{field} must be at most {max} characters"),
        ));
    }
    Ok(value)
}

fn retry_policy(body: Option<RetryBody>) -> Result<RetryPolicy, ApiError> {
    let body = body.unwrap_or_default();
    let defaults = RetryPolicy::default();
    let rule = |name: &str, given: Option<RetryRule>, default: RetryRule| {
        let rule = given.unwrap_or(default);
        if !(1..=MAX_ATTEMPTS).contains(&rule.max_attempts)
            || !(1..=MAX_SPACING_MINUTES).contains(&rule.spacing_minutes)
        {
            return Err(ApiError::unprocessable(
                "invalid_retry",
                format!(
                    "retry.{name}: max_attempts is 1 to {MAX_ATTEMPTS} and spacing_minutes \
                     1 to {MAX_SPACING_MINUTES}"
                ),
            ));
        }
        Ok(rule)
    };
    Ok(RetryPolicy {
        no_answer: rule("no_answer", body.no_answer, defaults.no_answer)?,
        busy: rule("busy", body.busy, defaults.busy)?,
        failed: rule("failed", body.failed, defaults.failed)?,
        voicemail: rule("voicemail", body.voicemail, defaults.voicemail)?,
    })
}

/// The rows problems as the error body lists them, in row order.
fn rows_json(mut problems: Vec<RowProblem>) -> serde_json::Value {
    problems.sort_by_key(|p| p.row);
    serde_json::to_value(problems).unwrap_or_default()
}

impl CampaignsApi {
    /// The organisation's campaign `id`, or 404.
    async fn owned(&self, org: &str, id: &str) -> Result<Campaign, ApiError> {
        let missing = || ApiError::NotFound("Campaign not found".into());
        if !valid_campaign_id(id) {
            return Err(missing());
        }
        self.store
            .get(id)
            .await
            .map_err(api::unavailable)?
            .filter(|c| c.org_id == org)
            .ok_or_else(missing)
    }

    async fn create(
        &self,
        org: &str,
        request: &Request,
    ) -> Result<(StatusCode, serde_json::Value), ApiError> {
        let bytes = api::body_bytes_within(request.body(), MAX_BODY_BYTES)?;
        let key = idempotency_key(request)?;
        let body = if is_csv(request) {
            let text = std::str::from_utf8(bytes).map_err(|_| {
                ApiError::bad_request("invalid_csv", "the CSV body must be UTF-8 text")
            })?;
            body_of_query(request, text.to_string())?
        } else {
            api::parse_json(bytes, "a JSON object describing the campaign")?
        };
        let now = crate::base::time::now();

        // The campaign's own fields, each refused with its own code.
        let assistant_id = body
            .assistant_id
            .ok_or_else(|| ApiError::unprocessable("missing_field", "assistant_id is required"))?;
        let name = bounded_text("name", body.name, MAX_NAME_CHARS)?;
        let agenda = bounded_text("agenda", body.agenda, recipients::AGENDA_MAX_CHARS)?;
        let welcome_message = bounded_text(
            "welcome_message",
            body.welcome_message,
            recipients::WELCOME_MAX_CHARS,
        )?;
        let window = body
            .window
            .unwrap_or_else(default_window)
            .normalized()
            .map_err(|err| ApiError::unprocessable("invalid_window", err.detail()))?;
        let start = match body.start_at.as_deref() {
            Some(text) => instant("start_at", text)?.max(now),
            None => now,
        };
        if start > now + chrono::Duration::days(MAX_START_AHEAD_DAYS) {
            return Err(ApiError::unprocessable(
                "invalid_time",
                format!("start_at is at most {MAX_START_AHEAD_DAYS} days ahead"),
            ));
        }
        let end = body
            .end_at
            .as_deref()
            .map(|text| instant("end_at", text))
            .transpose()?;
        if let Some(end) = end {
            if end <= start || end > start + chrono::Duration::days(MAX_RUN_DAYS) {
                return Err(ApiError::unprocessable(
                    "invalid_time",
                    format!(
                        "end_at must be after start_at (and now), at most {MAX_RUN_DAYS} days on"
                    ),
                ));
            }
        }
        let retry = retry_policy(body.retry)?;

        // The rows, every one checked before anything is written.
        let (raw, mut problems) = match (body.recipients, body.recipients_csv) {
            (Some(rows), None) => {
                if rows.len() > MAX_ROWS {
                    return Err(too_many(rows.len()));
                }
                recipients::rows_from_json(&rows)
            }
            (None, Some(csv)) => recipients::rows_from_csv(&csv)
                .map_err(|why| ApiError::unprocessable("invalid_csv", why))?,
            (None, None) => {
                return Err(ApiError::unprocessable(
                    "missing_field",
                    "recipients (a JSON array) or recipients_csv (CSV text) is required",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(ApiError::unprocessable(
                    "ambiguous_body",
                    "give recipients or recipients_csv, not both",
                ))
            }
        };
        let given = raw.len() + problems.len();
        if given > MAX_ROWS {
            return Err(too_many(given));
        }
        let (valid, more) = recipients::check_rows(
            raw,
            &RowRules {
                default_agenda: agenda.as_deref(),
                window: &window,
                start: start.timestamp(),
            },
        );
        problems.extend(more);
        if !problems.is_empty() && !body.skip_invalid {
            let bad: std::collections::BTreeSet<usize> = problems.iter().map(|p| p.row).collect();
            return Err(ApiError::InvalidRows {
                code: "invalid_recipients",
                detail: format!(
                    "nothing was created: {} of {given} rows are invalid (each is listed in \
                     `rows`); fix them, or send skip_invalid: true to create the rest",
                    bad.len()
                ),
                rows: rows_json(problems),
            });
        }
        if valid.is_empty() {
            return Err(ApiError::InvalidRows {
                code: "no_recipients",
                detail: "no row is valid: nothing was created".into(),
                rows: rows_json(problems),
            });
        }

        // Another organisation's assistant is answered exactly like a missing one.
        let assistant = self
            .directory
            .get_assistant(assistant_id)
            .await
            .map_err(api::unavailable)?
            .filter(|a| a.is_active && a.org_id == org)
            .ok_or_else(|| ApiError::NotFound("Assistant not found".into()))?;
        let organisation = self
            .directory
            .get_organisation(org)
            .await
            .map_err(api::unavailable)?
            .ok_or_else(|| ApiError::NotFound("Organisation not found".into()))?;
        let cap = organisation.max_concurrent_calls;
        let max_concurrency = body.max_concurrency.unwrap_or(1);
        if !(1..=cap).contains(&max_concurrency) {
            return Err(ApiError::unprocessable(
                "invalid_max_concurrency",
                format!(
                    "max_concurrency is 1 to the organisation's cap of {cap} calls at once \
                     (an admin sets max_concurrent_calls)"
                ),
            ));
        }

        let skipped = std::collections::BTreeSet::from_iter(problems.iter().map(|p| p.row));
        // Milliseconds: `by_org` lists newest first by this stamp, and two
        // campaigns made in one second must still list in the order made.
        let stamp = crate::base::time::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let campaign = Campaign {
            campaign_id: campaign_id(org, key.as_deref()),
            org_id: org.to_string(),
            name,
            assistant_id: assistant.assistant_id,
            agenda,
            welcome_message,
            start_at: start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            end_at: end.map(|e| e.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            window,
            max_concurrency,
            retry,
            state: CampaignState::Creating,
            paused_reason: None,
            recipients: u32::try_from(valid.len()).unwrap_or(u32::MAX),
            skipped_rows: u32::try_from(skipped.len()).unwrap_or(u32::MAX),
            counts: BTreeMap::new(),
            in_flight: 0,
            created_at: stamp.clone(),
            updated_at: stamp.clone(),
            started_at: None,
            finished_at: None,
            request_hash: request_hash(request, bytes),
        };
        let (campaign, first) = self.store_campaign(campaign, valid, &stamp).await?;
        tracing::info!(
            org_id = org,
            campaign_id = %campaign.campaign_id,
            recipients = campaign.recipients,
            skipped_rows = skipped.len(),
            first,
            "campaign created"
        );
        let mut answer = serde_json::json!({
            "campaign": view(&campaign),
            "skipped_rows": rows_json(problems),
        });
        if !first {
            answer["duplicate"] = true.into();
        }
        let status = if first {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok((status, answer))
    }

    /// Writes the campaign, its rows, then makes it active; on a retry of
    /// the same `Idempotency-Key`, finishes or answers the first request's.
    async fn store_campaign(
        &self,
        campaign: Campaign,
        valid: Vec<recipients::ValidRow>,
        stamp: &str,
    ) -> Result<(Campaign, bool), ApiError> {
        let mut first = true;
        // Every recipient is first due at the campaign's start.
        let start_at = DateTime::parse_from_rfc3339(&campaign.start_at)
            .map(|t| t.timestamp())
            .map_err(|_| ApiError::Unavailable)?;
        match self
            .store
            .begin(&campaign)
            .await
            .map_err(api::unavailable)?
        {
            Begun::Created => {}
            Begun::Exists(existing) => {
                if existing.request_hash != campaign.request_hash {
                    return Err(ApiError::Conflict {
                        code: "idempotency_key_reused",
                        detail: "this Idempotency-Key was used for another request; \
                                 use a new key for a new campaign"
                            .into(),
                    });
                }
                if existing.state != CampaignState::Creating {
                    return Ok((*existing, false));
                }
                // The first request stopped part-way: finish it.
                first = false;
            }
        }
        let rows: Vec<Recipient> = valid
            .into_iter()
            .map(|row| Recipient {
                campaign_id: campaign.campaign_id.clone(),
                row: u32::try_from(row.row).unwrap_or(u32::MAX),
                phone_number: row.phone_number,
                zones: row.zones,
                zone_source: row.zone_source.to_string(),
                agenda: row.agenda,
                welcome_message: row.welcome_message,
                agent_variables: row.agent_variables,
                state: RecipientState::Pending,
                reason: None,
                attempts: 0,
                calls: Vec::new(),
                updated_at: stamp.to_string(),
                due_at: Some(start_at),
                dial_call_ref: None,
            })
            .collect();
        self.store
            .put_recipients(&rows)
            .await
            .map_err(api::unavailable)?;
        let counts = BTreeMap::from([(
            RecipientState::Pending.as_str().to_string(),
            campaign.recipients,
        )]);
        match self
            .store
            .activate(&campaign.campaign_id, &counts)
            .await
            .map_err(api::unavailable)?
        {
            Transition::Applied(active) => Ok((*active, first)),
            // A twin request activated it first, or it was cancelled meanwhile.
            Transition::Refused(current) => Ok((*current, false)),
            Transition::Missing => Err(ApiError::Unavailable),
        }
    }

    async fn list(
        &self,
        org: &str,
        request: &Request,
    ) -> Result<(StatusCode, serde_json::Value), ApiError> {
        let query = request.query_string_parameters();
        let limit = api::page_limit(query.first("limit"), DEFAULT_PAGE, MAX_PAGE)?;
        let after = query.first("after");
        if after
            .is_some_and(|a| a.len() > 100 || !a.rsplit('#').next().is_some_and(valid_campaign_id))
        {
            return Err(ApiError::bad_request(
                "invalid_after",
                "after is the `next` of an earlier page",
            ));
        }
        let page = self
            .store
            .list(org, limit, after)
            .await
            .map_err(api::unavailable)?;
        let campaigns: Vec<serde_json::Value> = page.items.iter().map(view).collect();
        Ok((
            StatusCode::OK,
            serde_json::json!({"campaigns": campaigns, "next": page.next}),
        ))
    }

    async fn recipients(
        &self,
        org: &str,
        id: &str,
        request: &Request,
    ) -> Result<(StatusCode, serde_json::Value), ApiError> {
        let query = request.query_string_parameters();
        let limit = api::page_limit(query.first("limit"), DEFAULT_PAGE, MAX_PAGE)?;
        let state = query
            .first("state")
            .map(|text| {
                RecipientState::parse(text).ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_state",
                        format!(
                            "state is one of {}",
                            RecipientState::ALL.map(RecipientState::as_str).join(", ")
                        ),
                    )
                })
            })
            .transpose()?;
        let after = query
            .first("after")
            .map(|text| {
                text.parse::<u32>().map_err(|_| {
                    ApiError::bad_request("invalid_after", "after is the `next` of an earlier page")
                })
            })
            .transpose()?;
        let campaign = self.owned(org, id).await?;
        let page = self
            .store
            .recipients(&campaign.campaign_id, state, limit, after)
            .await
            .map_err(api::unavailable)?;
        let recipients: Vec<serde_json::Value> = page.items.iter().map(recipient_view).collect();
        Ok((
            StatusCode::OK,
            serde_json::json!({"recipients": recipients, "next": page.next}),
        ))
    }

    /// Pause, resume or cancel: one conditional write each, so two at once
    /// cannot both apply. Asking for the state a campaign is already in
    /// answers it as it is.
    async fn act(
        &self,
        org: &str,
        id: &str,
        action: &str,
    ) -> Result<(StatusCode, serde_json::Value), ApiError> {
        use CampaignState::*;
        let (from, to, reason): (&[CampaignState], CampaignState, Option<&str>) = match action {
            "pause" => (&[Active], Paused, Some("user")),
            "resume" => (&[Paused], Active, None),
            "cancel" => (&[Creating, Active, Paused], Cancelled, None),
            _ => return Err(ApiError::NotFound("No such route".into())),
        };
        let campaign = self.owned(org, id).await?;
        let outcome = self
            .store
            .transition(&campaign.campaign_id, from, to, reason)
            .await
            .map_err(api::unavailable)?;
        match outcome {
            Transition::Applied(changed) => {
                tracing::info!(
                    org_id = org,
                    campaign_id = %changed.campaign_id,
                    state = changed.state.as_str(),
                    "campaign {action}d"
                );
                Ok((StatusCode::OK, view(&changed)))
            }
            Transition::Refused(current) if current.state == to => {
                Ok((StatusCode::OK, view(&current)))
            }
            Transition::Refused(current) => Err(ApiError::Conflict {
                code: "invalid_campaign_state",
                detail: format!(
                    "a {} campaign cannot be {}",
                    current.state.as_str(),
                    match action {
                        "pause" => "paused",
                        "resume" => "resumed",
                        _ => "cancelled",
                    }
                ),
            }),
            Transition::Missing => Err(ApiError::NotFound("Campaign not found".into())),
        }
    }
}

fn too_many(rows: usize) -> ApiError {
    ApiError::unprocessable(
        "too_many_recipients",
        format!("a campaign takes at most {MAX_ROWS} recipients; got {rows}"),
    )
}

/// What makes two requests the same request: the content type, the query
/// and the body.
fn request_hash(request: &Request, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(if is_csv(request) { "csv\0" } else { "json\0" });
    hasher.update(request.uri().query().unwrap_or_default().as_bytes());
    hasher.update(b"\0");
    hasher.update(body);
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_ours_and_keyed_ids_are_per_organisation() {
        let random = campaign_id("org-a", None);
        assert!(valid_campaign_id(&random), "{random}");
        let keyed = campaign_id("org-a", Some("k1"));
        assert!(valid_campaign_id(&keyed));
        assert_eq!(keyed, campaign_id("org-a", Some("k1")));
        assert_ne!(keyed, campaign_id("org-b", Some("k1")));
        assert!(!valid_campaign_id("cmp_../../x"));
        assert!(!valid_campaign_id("cmp_"));
    }

    #[test]
    fn retry_rules_default_and_are_bounded() {
        let policy = retry_policy(None).unwrap();
        assert_eq!(policy, RetryPolicy::default());
        let body: RetryBody = serde_json::from_value(serde_json::json!({
            "busy": {"max_attempts": 11, "spacing_minutes": 5}
        }))
        .unwrap();
        assert_eq!(
            retry_policy(Some(body)).unwrap_err().code(),
            "invalid_retry"
        );
    }

    #[test]
    fn counts_list_every_state() {
        let campaign: Campaign = serde_json::from_value(serde_json::json!({
            "campaign_id": "cmp_0123456789abcdef0123456789abcdef",
            "org_id": "o", "assistant_id": 1, "start_at": "2026-12-07T09:00:00Z",
            "window": {"start": "09:00", "end": "20:00"}, "max_concurrency": 1,
            "retry": RetryPolicy::default(), "state": "active", "recipients": 2,
            "counts": {"pending": 2}, "created_at": "t", "updated_at": "t"
        }))
        .unwrap();
        let shown = view(&campaign);
        assert_eq!(shown["counts"]["pending"], 2);
        assert_eq!(shown["counts"]["expired"], 0);
        assert!(shown.get("request_hash").is_none());
    }
}
