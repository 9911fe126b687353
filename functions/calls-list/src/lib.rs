//! `GET /calls` (API key): the organisation's call log, every kind of call
//! in one shape, newest first, filtered by time, kind, status, end reason,
//! assistant and phone number, a page per cursor. A page is one Query of
//! the calls table's `CallLog` index and one BatchGetItem, whatever the
//! organisation's number of calls; the other filters apply to that page, so
//! a filtered page may hold fewer than `limit` calls (follow `next_cursor`).

use std::sync::Arc;

use http::StatusCode;
use lambda_http::{Request, RequestExt};
use serde::Serialize;
use shared::api::access::KeyedAccess;
use shared::api::{self, ApiError, Route};
use shared::flows::call_log::{self, CallLogEntry, LogFilter};
use shared::store::call_log::{CallLogStore, LogQuery};
use shared::wiring::Wiring;

pub struct CallsList {
    pub access: KeyedAccess,
    pub log: Arc<dyn CallLogStore>,
}

#[derive(Debug, Serialize)]
pub struct CallLogPage {
    pub calls: Vec<CallLogEntry>,
    /// Pass as `cursor` for the next (older) page; `null` on the last.
    pub next_cursor: Option<String>,
}

impl CallsList {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            access: aws.keyed_access()?,
            log: aws.call_log()?,
        })
    }
}

impl Route for CallsList {
    type Body = CallLogPage;

    async fn process(&self, request: Request) -> Result<(StatusCode, CallLogPage), ApiError> {
        let tenant = self.access.admit(request.headers()).await?;
        let query = request.query_string_parameters();
        let filter = LogFilter::parse(|name| query.first(name).map(str::to_string))?;
        let page = self
            .log
            .page(&LogQuery {
                org: &tenant.org_id,
                from: filter.from.as_deref(),
                to: filter.to.as_deref(),
                limit: filter.limit,
                after: filter.cursor.as_ref(),
            })
            .await
            .map_err(api::unavailable)?;
        let calls = page
            .records
            .iter()
            .map(call_log::entry)
            .filter(|entry| filter.admits(entry))
            .collect();
        Ok((
            StatusCode::OK,
            CallLogPage {
                calls,
                next_cursor: page.next.as_ref().map(call_log::encode_cursor),
            },
        ))
    }
}
