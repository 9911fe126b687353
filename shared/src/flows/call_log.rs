//! One call log across every kind of call (`GET /calls`, `GET /calls/{id}`):
//! recording-pipeline calls, outbound calls, and sessions (inbound and
//! placed phone and WhatsApp calls, web rooms, chat launchers), each shown
//! in one shape with one status and one end reason.

use serde::Serialize;

use crate::api::ApiError;
use crate::base::end_reason::EndReason;
use crate::base::mask;
use crate::store::call_log::{LogCursor, LoggedRecord};
use crate::store::calls::{CallRecord, CallStatus, Direction};
use crate::store::directory::Provider;
use crate::store::outbound_calls::{status_rank, OutboundCall};
use crate::store::sessions::SessionRecord;

/// The kinds a call can be, as `kind` shows and filters them.
pub const KINDS: [&str; 8] = [
    "recording",
    "outbound",
    "phone",
    "whatsapp",
    "web",
    "slack",
    "discord",
    "teams",
];

/// The statuses every kind maps to.
pub const STATUSES: [&str; 3] = ["active", "ended", "failed"];

pub const DEFAULT_PAGE: i32 = 50;
pub const MAX_PAGE: i32 = 100;

/// One call in the log's shape. Numbers are masked here; the detail route
/// shows them whole, like the other read routes of an organisation's key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallLogEntry {
    pub id: String,
    pub kind: String,
    pub direction: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub provider: &'static str,
    pub provider_ids: ProviderIds,
    /// `active`, `ended` or `failed`.
    pub status: &'static str,
    /// The provider's or the pipeline's own status word.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assistant_id: Option<u64>,
    /// Its end came from asking the provider, not from a webhook.
    pub reconciled: bool,
    pub links: Links,
    /// The whole numbers, for filtering; never serialized.
    #[serde(skip)]
    pub parties: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProviderIds {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_sid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_sid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Links {
    #[serde(rename = "self")]
    pub detail: String,
}

/// One moment of a call's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineEvent {
    pub at: String,
    /// `received`, `placed`, `status`, `reconciled`, `transcript`,
    /// `notified`, `opened`, `slack_thread`, `recording`, `ended`.
    pub event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `GET /calls/{id}`: the entry, with whole numbers, and its timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallTimeline {
    #[serde(flatten)]
    pub call: CallLogEntry,
    pub timeline: Vec<TimelineEvent>,
}

/// What a `GET /calls` request asks for, checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogFilter {
    pub from: Option<String>,
    pub to: Option<String>,
    pub kind: Option<String>,
    pub status: Option<String>,
    pub end_reason: Option<EndReason>,
    pub assistant_id: Option<u64>,
    /// E.164.
    pub phone: Option<String>,
    pub limit: i32,
    pub cursor: Option<LogCursor>,
}

fn invalid(code: &'static str, detail: impl Into<String>) -> ApiError {
    ApiError::bad_request(code, detail.into())
}

/// An RFC 3339 time, normalised to the stored form (UTC, seconds).
fn instant(name: &str, value: &str) -> Result<String, ApiError> {
    if value.len() > 40 {
        return Err(invalid("invalid_time", format!("{name} is too long")));
    }
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| crate::base::time::rfc3339(t.with_timezone(&chrono::Utc)))
        .map_err(|_| {
            invalid(
                "invalid_time",
                format!("{name} must be an RFC 3339 time such as 2026-12-01T00:00:00Z"),
            )
        })
}

/// The opaque cursor of a page: base64url of its last key.
pub fn encode_cursor(cursor: &LogCursor) -> String {
    use base64::Engine;
    let json = serde_json::to_vec(cursor).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_cursor(text: &str) -> Result<LogCursor, ApiError> {
    use base64::Engine;
    let bad = || invalid("invalid_cursor", "cursor is not one this API returned");
    if text.len() > 1024 {
        return Err(bad());
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| bad())?;
    let cursor: LogCursor = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let sane = |s: &str| !s.is_empty() && s.len() <= 512;
    if sane(&cursor.call_id) && sane(&cursor.item) && sane(&cursor.at) {
        Ok(cursor)
    } else {
        Err(bad())
    }
}

impl LogFilter {
    /// Reads the query string (`name -> value`); every bad value is a 400
    /// naming it.
    pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<Self, ApiError> {
        let mut filter = LogFilter {
            limit: DEFAULT_PAGE,
            ..LogFilter::default()
        };
        if let Some(from) = get("from") {
            filter.from = Some(instant("from", &from)?);
        }
        if let Some(to) = get("to") {
            filter.to = Some(instant("to", &to)?);
        }
        if let (Some(from), Some(to)) = (&filter.from, &filter.to) {
            if from > to {
                return Err(invalid("invalid_time", "from must not be after to"));
            }
        }
        if let Some(kind) = get("kind") {
            if !KINDS.contains(&kind.as_str()) {
                return Err(invalid(
                    "invalid_kind",
                    format!("kind must be one of {}", KINDS.join(", ")),
                ));
            }
            filter.kind = Some(kind);
        }
        if let Some(status) = get("status") {
            if !STATUSES.contains(&status.as_str()) {
                return Err(invalid(
                    "invalid_status",
                    format!("status must be one of {}", STATUSES.join(", ")),
                ));
            }
            filter.status = Some(status);
        }
        if let Some(reason) = get("end_reason") {
            filter.end_reason = Some(EndReason::parse(&reason).ok_or_else(|| {
                let names: Vec<&str> = EndReason::ALL.iter().map(|r| r.as_str()).collect();
                invalid(
                    "invalid_end_reason",
                    format!("end_reason must be one of {}", names.join(", ")),
                )
            })?);
        }
        if let Some(assistant) = get("assistant_id") {
            filter.assistant_id = Some(assistant.parse().map_err(|_| {
                invalid(
                    "invalid_assistant_id",
                    "assistant_id must be a whole number",
                )
            })?);
        }
        if let Some(phone) = get("phone") {
            // The syntax only: a filter dials nothing.
            let digits = phone.strip_prefix('+').unwrap_or_default();
            if !(8..=15).contains(&digits.len()) || !digits.chars().all(|c| c.is_ascii_digit()) {
                return Err(invalid(
                    "invalid_phone",
                    "phone must be a number in E.164 form, such as +14155552671",
                ));
            }
            filter.phone = Some(phone);
        }
        if let Some(limit) = get("limit") {
            filter.limit = limit
                .parse()
                .ok()
                .filter(|l| (1..=MAX_PAGE).contains(l))
                .ok_or_else(|| invalid("invalid_limit", format!("limit must be 1-{MAX_PAGE}")))?;
        }
        if let Some(cursor) = get("cursor") {
            filter.cursor = Some(decode_cursor(&cursor)?);
        }
        Ok(filter)
    }

    /// Whether `entry` passes every filter (time is the index's own range).
    pub fn admits(&self, entry: &CallLogEntry) -> bool {
        self.kind.as_deref().is_none_or(|k| entry.kind == k)
            && self.status.as_deref().is_none_or(|s| entry.status == s)
            && self.end_reason.is_none_or(|r| entry.end_reason == Some(r))
            && self
                .assistant_id
                .is_none_or(|a| entry.assistant_id == Some(a))
            && self
                .phone
                .as_deref()
                .is_none_or(|p| entry.parties.iter().any(|n| n == p))
    }
}

/// How a session ended, in the shared set: as stored when it ended, else
/// (sessions ended before the code was stored) mapped from its words.
fn session_end_reason(record: &SessionRecord) -> Option<EndReason> {
    if !record.ended() {
        return None;
    }
    Some(
        record
            .end_code
            .unwrap_or_else(|| EndReason::from_session_end(record.end_reason.as_deref())),
    )
}

fn masked(number: Option<&str>) -> Option<String> {
    number.filter(|n| !n.is_empty()).map(mask::phone)
}

fn whole(numbers: &[Option<&str>]) -> Vec<String> {
    numbers
        .iter()
        .flatten()
        .map(|n| n.trim_start_matches("whatsapp:").to_string())
        .collect()
}

fn link(id: &str, kind: &str) -> Links {
    let id = crate::flows::sessions::url_encode(id);
    Links {
        detail: format!("/calls/{id}?kind={kind}"),
    }
}

fn recording_entry(record: &CallRecord) -> CallLogEntry {
    let status = match record.status {
        CallStatus::Failed => "failed",
        CallStatus::Notified | CallStatus::Skipped => "ended",
        _ => "active",
    };
    let end_reason = record
        .call_status
        .as_deref()
        .map(|s| EndReason::from_twilio(s, None).unwrap_or(EndReason::Unknown));
    let id = record.reported_call_id().to_string();
    CallLogEntry {
        links: link(&id, "recording"),
        id,
        kind: "recording".into(),
        direction: match record.direction {
            Direction::Incoming => "inbound",
            Direction::Outgoing => "outbound",
        },
        from: masked(Some(&record.from_number)),
        to: masked(Some(&record.to_number)),
        provider: match record.source {
            crate::store::calls::CallSource::Zapier => "zapier",
            crate::store::calls::CallSource::Exotel => "exotel",
        },
        provider_ids: ProviderIds::default(),
        status,
        provider_status: record.call_status.clone(),
        end_reason,
        started_at: Some(record.timestamp.clone()),
        ended_at: None,
        duration_secs: record.duration,
        assistant_id: None,
        reconciled: false,
        parties: whole(&[Some(&record.from_number), Some(&record.to_number)]),
    }
}

fn outbound_entry(call: &OutboundCall) -> CallLogEntry {
    let ended = status_rank(&call.status) == 5 || call.usage_counted;
    let status = match (ended, call.status.as_str()) {
        (false, _) => "active",
        (true, "failed") => "failed",
        (true, _) => "ended",
    };
    let ended_at = ended
        .then(|| call.status_history.last().map(|s| s.at.clone()))
        .flatten();
    CallLogEntry {
        links: link(&call.call_ref, "outbound"),
        id: call.call_ref.clone(),
        kind: "outbound".into(),
        direction: "outbound",
        from: masked(call.from_number.as_deref()),
        to: masked(Some(&call.to_number)),
        provider: match call.provider {
            Provider::Twilio => "twilio",
            Provider::Elevenlabs => "elevenlabs",
        },
        provider_ids: ProviderIds {
            call_sid: call.call_sid.clone(),
            conversation_id: call.conversation_id.clone(),
            room: call.room_name().map(str::to_string),
            room_sid: None,
        },
        status,
        provider_status: Some(call.status.clone()),
        end_reason: call.end_reason,
        started_at: Some(call.created_at.clone()),
        ended_at,
        duration_secs: call.duration_secs,
        assistant_id: call.assistant_id,
        reconciled: call.reconciled,
        parties: whole(&[call.from_number.as_deref(), Some(&call.to_number)]),
    }
}

fn session_entry(record: &SessionRecord) -> CallLogEntry {
    let kind = record.session_type.clone().unwrap_or_else(|| "web".into());
    let id = record
        .session_id
        .clone()
        .unwrap_or_else(|| record.room_name.clone());
    let view = crate::flows::sessions::SessionView::of(record);
    CallLogEntry {
        links: link(&id, &kind),
        id,
        direction: match record.direction.as_deref() {
            Some("outbound") | Some("outgoing") => "outbound",
            _ => "inbound",
        },
        from: masked(record.from_number.as_deref()),
        to: masked(record.to_number.as_deref()),
        provider: if record.call_sid.is_some() {
            "twilio"
        } else {
            "livekit"
        },
        provider_ids: ProviderIds {
            call_sid: record.call_sid.clone(),
            conversation_id: None,
            room: Some(record.room_name.clone()),
            room_sid: record.room_sid.clone(),
        },
        status: if record.ended() { "ended" } else { "active" },
        provider_status: record.call_status.clone(),
        end_reason: session_end_reason(record),
        started_at: record.started_at.clone(),
        ended_at: record.ended_at.clone(),
        duration_secs: view.duration,
        assistant_id: None,
        reconciled: record.reconciled,
        parties: whole(&[record.from_number.as_deref(), record.to_number.as_deref()]),
        kind,
    }
}

/// The log's shape of any logged record.
pub fn entry(record: &LoggedRecord) -> CallLogEntry {
    match record {
        LoggedRecord::Recording(r) => recording_entry(r),
        LoggedRecord::Outbound(c) => outbound_entry(c),
        LoggedRecord::Session(s) => session_entry(s),
    }
}

fn event(at: &str, event: &'static str, detail: Option<String>) -> TimelineEvent {
    TimelineEvent {
        at: at.to_string(),
        event,
        detail,
    }
}

/// A Slack message ts (`1700000000.000100`) as RFC 3339.
fn slack_time(ts: &str) -> Option<String> {
    let secs: i64 = ts.split('.').next()?.parse().ok()?;
    chrono::DateTime::from_timestamp(secs, 0).map(crate::base::time::rfc3339)
}

/// The call's whole story, oldest first, with its numbers unmasked.
pub fn timeline(record: &LoggedRecord) -> CallTimeline {
    let mut call = entry(record);
    let mut events = Vec::new();
    match record {
        LoggedRecord::Recording(r) => {
            call.from = Some(r.from_number.clone());
            call.to = Some(r.to_number.clone());
            events.push(event(
                &r.received_at,
                "received",
                Some(format!("{:?}", r.source).to_lowercase()),
            ));
            for change in &r.status_history {
                events.push(event(
                    &change.at,
                    "status",
                    Some(match &change.reason {
                        Some(reason) => format!("{} ({reason})", change.status.as_str()),
                        None => change.status.as_str().to_string(),
                    }),
                ));
            }
            if r.transcript_parts > 0 {
                if let Some(at) = &r.processed_at {
                    events.push(event(at, "transcript", None));
                }
            }
            if r.slack_posted {
                if let Some(at) = &r.processed_at {
                    events.push(event(at, "notified", Some("slack".into())));
                }
            }
        }
        LoggedRecord::Outbound(c) => {
            call.from = c.from_number.clone();
            call.to = Some(c.to_number.clone());
            events.push(event(&c.created_at, "placed", None));
            for entry in &c.status_history {
                events.push(event(&entry.at, "status", Some(entry.status.clone())));
            }
            if let Some(at) = &c.reconciled_at {
                events.push(event(at, "reconciled", c.end_reason.map(|r| r.to_string())));
            }
            if !c.transcript.is_empty() {
                let at = call
                    .ended_at
                    .clone()
                    .unwrap_or_else(|| c.created_at.clone());
                events.push(event(
                    &at,
                    "transcript",
                    Some(format!("{} turns", c.transcript.len())),
                ));
            }
            if let Some(at) = &c.notified_at {
                events.push(event(at, "notified", c.notified_via.clone()));
            }
        }
        LoggedRecord::Session(s) => {
            call.from = s.from_number.clone();
            call.to = s.to_number.clone();
            if let Some(at) = &s.started_at {
                events.push(event(at, "opened", s.session_type.clone()));
            }
            if let Some(at) = s.thread_ts.as_deref().and_then(slack_time) {
                events.push(event(&at, "notified", Some("slack".into())));
            }
            if let (Some(egress), Some(at)) = (&s.egress_id, &s.started_at) {
                events.push(event(at, "recording", Some(egress.clone())));
            }
            if let Some(at) = &s.ended_at {
                events.push(event(at, "ended", s.end_reason.clone()));
            }
        }
    }
    // Stable: events of one instant keep the order they happened in.
    events.sort_by(|a, b| a.at.cmp(&b.at));
    CallTimeline {
        call,
        timeline: events,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Result<LogFilter, ApiError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LogFilter::parse(|name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    fn code(result: Result<LogFilter, ApiError>) -> &'static str {
        match result {
            Err(ApiError::BadRequest { code, .. }) => code,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_bad_filter_is_a_400_naming_it() {
        assert_eq!(code(query(&[("from", "yesterday")])), "invalid_time");
        assert_eq!(
            code(query(&[
                ("from", "2026-12-02T00:00:00Z"),
                ("to", "2026-12-01T00:00:00Z")
            ])),
            "invalid_time"
        );
        assert_eq!(code(query(&[("kind", "fax")])), "invalid_kind");
        assert_eq!(code(query(&[("status", "done")])), "invalid_status");
        assert_eq!(
            code(query(&[("end_reason", "hung_up")])),
            "invalid_end_reason"
        );
        assert_eq!(
            code(query(&[("assistant_id", "x")])),
            "invalid_assistant_id"
        );
        assert_eq!(code(query(&[("phone", "12")])), "invalid_phone");
        assert_eq!(code(query(&[("limit", "0")])), "invalid_limit");
        assert_eq!(code(query(&[("limit", "101")])), "invalid_limit");
        assert_eq!(code(query(&[("cursor", "!!")])), "invalid_cursor");
        assert_eq!(
            code(query(&[("cursor", &"A".repeat(2000))])),
            "invalid_cursor"
        );
    }

    #[test]
    fn good_filters_are_normalised() {
        let filter = query(&[
            ("from", "2026-12-01T01:00:00+01:00"),
            ("kind", "outbound"),
            ("end_reason", "no_answer"),
            ("phone", "+14155552671"),
            ("limit", "10"),
        ])
        .unwrap();
        assert_eq!(filter.from.as_deref(), Some("2026-12-01T00:00:00Z"));
        assert_eq!(filter.end_reason, Some(EndReason::NoAnswer));
        assert_eq!(filter.limit, 10);
        let cursor = LogCursor {
            call_id: "oc_1".into(),
            item: "outbound".into(),
            at: "2026-12-01T00:00:00Z#oc_1".into(),
        };
        let again = query(&[("cursor", &encode_cursor(&cursor))]).unwrap();
        assert_eq!(again.cursor, Some(cursor));
    }

    #[test]
    fn an_outbound_call_shows_masked_parties_and_its_end() {
        let mut call = OutboundCall::initiated("oc_1", Provider::Twilio, "+14155552671");
        call.from_number = Some("+14155550100".into());
        call.status = "busy".into();
        call.end_reason = Some(EndReason::Busy);
        call.usage_counted = true;
        let entry = outbound_entry(&call);
        assert_eq!(entry.status, "ended");
        assert_eq!(entry.to.as_deref(), Some("+14*****2671"));
        assert_eq!(entry.links.detail, "/calls/oc_1?kind=outbound");
        let json = serde_json::to_value(&entry).unwrap();
        assert!(json.get("parties").is_none());
        assert!(!json.to_string().contains("4155552671"));
        let filter = LogFilter {
            phone: Some("+14155552671".into()),
            end_reason: Some(EndReason::Busy),
            ..LogFilter::default()
        };
        assert!(filter.admits(&entry));
        let other = LogFilter {
            kind: Some("recording".into()),
            ..LogFilter::default()
        };
        assert!(!other.admits(&entry));
    }

    #[test]
    fn a_sessions_free_text_end_maps_to_the_shared_vocabulary() {
        let ended = |reason: Option<&str>| SessionRecord {
            ended_at: Some("2026-12-01T00:00:00Z".into()),
            end_reason: reason.map(str::to_string),
            ..SessionRecord::default()
        };
        assert_eq!(session_end_reason(&ended(None)), Some(EndReason::Completed));
        assert_eq!(
            session_end_reason(&ended(Some("no-answer"))),
            Some(EndReason::NoAnswer)
        );
        assert_eq!(
            session_end_reason(&ended(Some(crate::flows::stuck::SESSION_NEVER_FINISHED))),
            Some(EndReason::Timeout)
        );
        assert_eq!(session_end_reason(&SessionRecord::default()), None);
    }
}
