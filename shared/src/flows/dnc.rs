//! `/dnc`: an organisation's do-not-call list (issue 23). Every dial of the
//! organisation checks it at dial time (`flows::outbound::Placement::check_not_listed`):
//! a listed number is never called, whatever placed the call.
//!
//! - `POST /dnc` adds one number (`number`) or up to [`MAX_BULK`]
//!   (`numbers`), with an optional `reason`; every number is checked as
//!   E.164 first, and one bad row refuses the request (422, each bad row
//!   named) with nothing added.
//! - `GET /dnc?limit=&after=` lists it in number order, a page at a time.
//! - `DELETE /dnc/{number}` takes a number off (404 if it was not on).

use std::sync::Arc;

use http::{Method, StatusCode};
use lambda_http::{Request, RequestExt};
use serde::Deserialize;

use crate::api::access::KeyedAccess;
use crate::api::{self, ApiError, Route};
use crate::base::phone;
use crate::store::dnc::{DncEntry, DoNotCallStore};

/// Numbers one `POST /dnc` may add.
pub const MAX_BULK: usize = 1000;
const DEFAULT_PAGE: i32 = 50;
const MAX_PAGE: i32 = 100;
/// Longest `reason` kept.
const MAX_REASON: usize = 200;
/// Bad rows named in a refusal's detail; the rest are counted.
const ROWS_NAMED: usize = 20;

pub struct DncApi {
    pub access: KeyedAccess,
    pub store: Arc<dyn DoNotCallStore>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    number: Option<String>,
    numbers: Option<Vec<String>>,
    reason: Option<String>,
}

impl Route for DncApi {
    type Body = serde_json::Value;

    async fn process(&self, request: Request) -> Result<(StatusCode, serde_json::Value), ApiError> {
        let tenant = self.access.admit(request.headers()).await?;
        let org = tenant.org_id.as_str();
        let path = request.uri().path().trim_end_matches('/');
        match (request.method().clone(), path) {
            (Method::POST, "/dnc") => self.add(org, &request).await,
            (Method::GET, "/dnc") => self.list(org, &request).await,
            (Method::DELETE, rest) if rest.starts_with("/dnc/") => {
                self.remove(org, &rest["/dnc/".len()..]).await
            }
            _ => Err(ApiError::NotFound("No such route".into())),
        }
    }
}

impl DncApi {
    async fn add(
        &self,
        org: &str,
        request: &Request,
    ) -> Result<(StatusCode, serde_json::Value), ApiError> {
        let body: AddBody = api::parse_json(
            api::body_bytes(request.body())?,
            "a JSON object with `number` or `numbers`",
        )?;
        let rows = match (body.number, body.numbers) {
            (Some(one), None) => vec![one],
            (None, Some(many)) if !many.is_empty() => many,
            (None, None) | (None, Some(_)) => {
                return Err(ApiError::unprocessable(
                    "missing_field",
                    "`number` or a non-empty `numbers` is required",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(ApiError::unprocessable(
                    "ambiguous_body",
                    "give `number` or `numbers`, not both",
                ))
            }
        };
        if rows.len() > MAX_BULK {
            return Err(ApiError::unprocessable(
                "too_many_numbers",
                format!("at most {MAX_BULK} numbers per request; got {}", rows.len()),
            ));
        }
        let reason = body
            .reason
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty());
        if reason
            .as_ref()
            .is_some_and(|r| r.chars().count() > MAX_REASON)
        {
            return Err(ApiError::unprocessable(
                "invalid_reason",
                format!("reason is at most {MAX_REASON} characters"),
            ));
        }
        let (numbers, bad) = checked(&rows);
        if !bad.is_empty() {
            return Err(ApiError::unprocessable("invalid_numbers", refusal(&bad)));
        }
        let added_at = crate::base::time::now_rfc3339();
        let entries: Vec<DncEntry> = numbers
            .iter()
            .map(|number| DncEntry {
                number: number.clone(),
                added_at: added_at.clone(),
                reason: reason.clone(),
            })
            .collect();
        self.store
            .add(org, &entries)
            .await
            .map_err(api::unavailable)?;
        tracing::info!(
            org_id = org,
            added = entries.len(),
            "numbers added to the do-not-call list"
        );
        Ok((
            StatusCode::OK,
            serde_json::json!({"added": entries.len(), "numbers": numbers}),
        ))
    }

    async fn list(
        &self,
        org: &str,
        request: &Request,
    ) -> Result<(StatusCode, serde_json::Value), ApiError> {
        let query = request.query_string_parameters();
        let limit = api::page_limit(query.first("limit"), DEFAULT_PAGE, MAX_PAGE)?;
        let after = match query.first("after") {
            None => None,
            Some(raw) => Some(phone::e164(raw).map_err(|_| {
                ApiError::bad_request("invalid_after", "after is the `next` of an earlier page")
            })?),
        };
        let page = self
            .store
            .list(org, limit, after.as_deref())
            .await
            .map_err(api::unavailable)?;
        Ok((
            StatusCode::OK,
            serde_json::json!({"numbers": page.entries, "next": page.next}),
        ))
    }

    async fn remove(
        &self,
        org: &str,
        raw: &str,
    ) -> Result<(StatusCode, serde_json::Value), ApiError> {
        let number = phone::e164(&path_segment(raw))
            .map_err(|err| ApiError::unprocessable(err.code(), err.detail()))?;
        if !self
            .store
            .remove(org, &number)
            .await
            .map_err(api::unavailable)?
        {
            return Err(ApiError::NotFound(
                "That number is not on the do-not-call list".into(),
            ));
        }
        Ok((StatusCode::OK, serde_json::json!({"removed": number})))
    }
}

/// A path segment percent-decoded; a literal `+` stays a plus (paths are
/// not forms).
fn path_segment(raw: &str) -> String {
    let escaped = raw.replace('+', "%2B");
    url::form_urlencoded::parse(format!("n={escaped}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The rows as E.164, each once, and the bad rows (1-based) with why.
fn checked(rows: &[String]) -> (Vec<String>, Vec<(usize, String, String)>) {
    let mut numbers = Vec::with_capacity(rows.len());
    let mut bad = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        match phone::e164(row) {
            Ok(number) => {
                if !numbers.contains(&number) {
                    numbers.push(number);
                }
            }
            Err(err) => bad.push((i + 1, row.chars().take(32).collect(), err.detail())),
        }
    }
    (numbers, bad)
}

fn refusal(bad: &[(usize, String, String)]) -> String {
    let mut detail: Vec<String> = bad
        .iter()
        .take(ROWS_NAMED)
        .map(|(row, value, why)| format!("row {row} ({value:?}): {why}"))
        .collect();
    if bad.len() > ROWS_NAMED {
        detail.push(format!("and {} more", bad.len() - ROWS_NAMED));
    }
    format!("nothing was added; {}", detail.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_rows_are_named_and_duplicates_kept_once() {
        let rows: Vec<String> = ["+14155550100", "hello", "+14155550100", "+1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (numbers, bad) = checked(&rows);
        assert_eq!(numbers, ["+14155550100"]);
        assert_eq!(bad.iter().map(|b| b.0).collect::<Vec<_>>(), [2, 4]);
        let detail = refusal(&bad);
        assert!(
            detail.starts_with("nothing was added; row 2 (\"hello\")"),
            "{detail}"
        );
        let many: Vec<_> = (1..=25)
            .map(|i| (i, "x".to_string(), "bad".to_string()))
            .collect();
        assert!(refusal(&many).ends_with("and 5 more"));
    }

    #[test]
    fn a_path_segment_keeps_its_plus() {
        assert_eq!(path_segment("+14155550100"), "+14155550100");
        assert_eq!(path_segment("%2B14155550100"), "+14155550100");
    }
}
