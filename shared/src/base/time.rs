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

/// A random duration in `[ceiling / 2, ceiling]` (millisecond steps): spreads
/// retries of callers that failed together without letting a later attempt
/// wait less than half of its own step.
pub fn jitter(ceiling: std::time::Duration) -> std::time::Duration {
    let ceiling = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    let half = ceiling / 2;
    let spread = u128::from(ceiling - half) + 1;
    std::time::Duration::from_millis(half + (uuid::Uuid::new_v4().as_u128() % spread) as u64)
}

/// Where "now" comes from (epoch seconds): the system in Lambda, a
/// simulated clock in tests that step through hours of retries at once.
pub trait Clock: Send + Sync {
    fn now(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        epoch_secs()
    }
}

/// A clock that moves only when told.
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn at(now: i64) -> Self {
        Self(std::sync::atomic::AtomicI64::new(now))
    }

    pub fn set(&self, now: i64) {
        self.0.store(now, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}
