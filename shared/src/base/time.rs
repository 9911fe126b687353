//! Clock helpers. Timestamps are stored as RFC 3339 UTC strings.

use chrono::{DateTime, SecondsFormat, Utc};

pub fn now() -> DateTime<Utc> {
    Utc::now()
}

pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn now_rfc3339() -> String {
    rfc3339(now())
}

pub fn epoch_secs() -> i64 {
    now().timestamp()
}

pub fn epoch_millis() -> i64 {
    now().timestamp_millis()
}
