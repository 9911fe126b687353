//! Weekly calling windows in the recipient's local wall-clock time.
//!
//! A number may ring in several zones (`base::phone_zones`), so a window
//! counts as open only when it is open in every one of them. Zones come from
//! the tz database bundled in the binary: Lambda's image may have none.

#[cfg(feature = "campaigns")]
use jiff::civil::{Date, DateTime, Weekday};
#[cfg(feature = "campaigns")]
use jiff::tz::{TimeZone, TimeZoneDatabase};
#[cfg(feature = "campaigns")]
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// How far `next_open` looks ahead: a week and a day, so that a window open
/// one day a week is found from any instant, whatever the zones' offsets.
pub const HORIZON_SECS: i64 = 8 * 86_400;

#[cfg(feature = "campaigns")]
const DAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Monday),
    ("tue", Weekday::Tuesday),
    ("wed", Weekday::Wednesday),
    ("thu", Weekday::Thursday),
    ("fri", Weekday::Friday),
    ("sat", Weekday::Saturday),
    ("sun", Weekday::Sunday),
];

/// A weekly calling window in the recipient's local wall-clock time:
/// `[start, end)` on each of `days`. A window cannot run across midnight
/// (`end` must be after `start`): which day's rule applies after midnight
/// would be ambiguous.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallingWindow {
    /// "HH:MM", 24-hour, inclusive.
    pub start: String,
    /// "HH:MM", 24-hour, exclusive.
    pub end: String,
    /// "mon" to "sun", any case; Monday to Friday when absent.
    #[serde(default = "weekdays")]
    pub days: Vec<String>,
}

fn weekdays() -> Vec<String> {
    ["mon", "tue", "wed", "thu", "fri"]
        .iter()
        .map(|name| name.to_string())
        .collect()
}

/// Why a calling window is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowError {
    /// `start` or `end` is not a 24-hour "HH:MM".
    BadTime {
        field: &'static str,
        value: String,
    },
    /// `end` is not after `start`.
    EndNotAfterStart {
        start: String,
        end: String,
    },
    NoDays,
    UnknownDay(String),
    DuplicateDay(String),
}

impl WindowError {
    /// Worded for an API error response.
    pub fn detail(&self) -> String {
        match self {
            Self::BadTime { field, value } => format!(
                "Calling window {field} \"{value}\" is not a 24-hour HH:MM time (e.g. 09:00)"
            ),
            Self::EndNotAfterStart { start, end } => format!(
                "Calling window end {end} must be after start {start}; \
                 a window cannot run past midnight"
            ),
            Self::NoDays => "Calling window needs at least one day \
                             (mon, tue, wed, thu, fri, sat, sun)"
                .to_string(),
            Self::UnknownDay(day) => format!(
                "Calling window day \"{day}\" is not one of mon, tue, wed, thu, fri, sat, sun"
            ),
            Self::DuplicateDay(day) => {
                format!("Calling window lists day \"{day}\" more than once")
            }
        }
    }
}

impl std::fmt::Display for WindowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail())
    }
}

impl std::error::Error for WindowError {}

#[cfg(feature = "campaigns")]
/// A time zone by IANA name from the bundled database (any case, links
/// included). Not the system's: Lambda may have none, and a campaign's
/// checks must not change with the host.
pub fn zone(name: &str) -> Option<TimeZone> {
    if name.is_empty() {
        return None;
    }
    TimeZoneDatabase::bundled()
        .get(name)
        .ok()
        .filter(|tz| !tz.is_unknown())
}

#[cfg(feature = "campaigns")]
/// A checked window: seconds of the day and a flag per weekday (Monday first).
struct Parsed {
    start: i32,
    end: i32,
    days: [bool; 7],
}

#[cfg(feature = "campaigns")]
impl Parsed {
    fn has(&self, weekday: Weekday) -> bool {
        self.days[weekday.to_monday_zero_offset() as usize]
    }

    fn open_in(&self, tz: &TimeZone, at: Timestamp) -> bool {
        let local = tz.to_datetime(at);
        let secs = i32::from(local.hour()) * 3600
            + i32::from(local.minute()) * 60
            + i32::from(local.second());
        self.has(local.weekday()) && (self.start..self.end).contains(&secs)
    }

    fn open_in_all(&self, zones: &[TimeZone], at: Timestamp) -> bool {
        zones.iter().all(|tz| self.open_in(tz, at))
    }

    fn start_on(&self, date: Date) -> DateTime {
        let (hour, minute) = (self.start / 3600, self.start % 3600 / 60);
        // `start` is below 24:00, so both fit.
        date.at(hour as i8, minute as i8, 0, 0)
    }
}

#[cfg(feature = "campaigns")]
fn seconds_of_day(field: &'static str, value: &str) -> Result<i32, WindowError> {
    let bad = || WindowError::BadTime {
        field,
        value: value.to_string(),
    };
    let b = value.as_bytes();
    if b.len() != 5 || b[2] != b':' || ![0, 1, 3, 4].iter().all(|&i| b[i].is_ascii_digit()) {
        return Err(bad());
    }
    let digit = |i: usize| i32::from(b[i] - b'0');
    let (hour, minute) = (digit(0) * 10 + digit(1), digit(3) * 10 + digit(4));
    if hour > 23 || minute > 59 {
        return Err(bad());
    }
    Ok(hour * 3600 + minute * 60)
}

#[cfg(feature = "campaigns")]
/// The zones by name; None when there are none or one is unknown, as then
/// the recipient's local time cannot be known everywhere.
fn resolve(names: &[&str]) -> Option<Vec<TimeZone>> {
    if names.is_empty() {
        return None;
    }
    names.iter().map(|name| zone(name)).collect()
}

#[cfg(feature = "campaigns")]
impl CallingWindow {
    fn parse(&self) -> Result<Parsed, WindowError> {
        let start = seconds_of_day("start", &self.start)?;
        let end = seconds_of_day("end", &self.end)?;
        if start >= end {
            return Err(WindowError::EndNotAfterStart {
                start: self.start.clone(),
                end: self.end.clone(),
            });
        }
        if self.days.is_empty() {
            return Err(WindowError::NoDays);
        }
        let mut days = [false; 7];
        for day in &self.days {
            let weekday = DAYS
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(day))
                .map(|(_, weekday)| *weekday)
                .ok_or_else(|| WindowError::UnknownDay(day.clone()))?;
            let seen = &mut days[weekday.to_monday_zero_offset() as usize];
            if *seen {
                return Err(WindowError::DuplicateDay(day.clone()));
            }
            *seen = true;
        }
        Ok(Parsed { start, end, days })
    }

    /// Refuses what `is_open` could not honour: times that are not 24-hour
    /// "HH:MM", `end` not after `start` (no window across midnight), no days,
    /// unknown or repeated days. Day names are accepted in any case.
    pub fn check(&self) -> Result<(), WindowError> {
        self.parse().map(|_| ())
    }

    /// The window checked, with its day names in lowercase: the form to store.
    pub fn normalized(&self) -> Result<CallingWindow, WindowError> {
        self.check()?;
        Ok(CallingWindow {
            start: self.start.clone(),
            end: self.end.clone(),
            days: self
                .days
                .iter()
                .map(|day| day.to_ascii_lowercase())
                .collect(),
        })
    }

    /// Whether, in every one of `zones`, the local date is one of `days` and
    /// the local time is in `[start, end)`. False for an invalid window, no
    /// zones or an unknown zone: the local time must be known to call.
    pub fn is_open(&self, zones: &[&str], at_unix_secs: i64) -> bool {
        let (Ok(window), Some(zones)) = (self.parse(), resolve(zones)) else {
            return false;
        };
        Timestamp::from_second(at_unix_secs).is_ok_and(|at| window.open_in_all(&zones, at))
    }

    /// The earliest instant at or after `after_unix_secs`, and at most
    /// `HORIZON_SECS` later, at which `is_open` holds; None if there is none.
    ///
    /// The zones' common window opens either at `after` itself or where one
    /// zone's own window opens: its start time on one of its local dates (both
    /// instants when a DST fold repeats it), or a DST transition that moves its
    /// clock into the window (a start inside a DST gap opens at the gap's end).
    /// Those candidates are tried in order.
    pub fn next_open(&self, zones: &[&str], after_unix_secs: i64) -> Option<i64> {
        let window = self.parse().ok()?;
        let zones = resolve(zones)?;
        let after = Timestamp::from_second(after_unix_secs).ok()?;
        let until = Timestamp::from_second(after_unix_secs.checked_add(HORIZON_SECS)?).ok()?;
        let mut candidates = vec![after];
        for tz in &zones {
            candidates.extend(
                tz.following(after)
                    .map(|transition| transition.timestamp())
                    .take_while(|at| *at <= until),
            );
            let last = tz.to_datetime(until).date();
            let mut date = tz.to_datetime(after).date();
            while date <= last {
                if window.has(date.weekday()) {
                    let start = tz.to_ambiguous_timestamp(window.start_on(date));
                    candidates.extend(start.earlier().ok());
                    candidates.extend(start.later().ok());
                }
                date = date.tomorrow().ok()?;
            }
        }
        candidates.retain(|at| (after..=until).contains(at));
        candidates.sort_unstable();
        candidates.dedup();
        candidates
            .into_iter()
            .find(|at| window.open_in_all(&zones, *at))
            .map(|at| at.as_second())
    }

    /// Whether the window opens in all `zones` within `HORIZON_SECS` of
    /// `from_unix_secs`: false means a campaign could never call the number.
    pub fn ever_open(&self, zones: &[&str], from_unix_secs: i64) -> bool {
        self.next_open(zones, from_unix_secs).is_some()
    }
}

#[cfg(all(test, feature = "campaigns"))]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> i64 {
        rfc3339.parse::<Timestamp>().unwrap().as_second()
    }

    fn window(start: &str, end: &str, days: &[&str]) -> CallingWindow {
        CallingWindow {
            start: start.into(),
            end: end.into(),
            days: days.iter().map(|day| day.to_string()).collect(),
        }
    }

    const EVERY_DAY: &[&str] = &["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    const WEEKDAYS: &[&str] = &["mon", "tue", "wed", "thu", "fri"];
    const NEW_YORK: &[&str] = &["America/New_York"];

    #[test]
    fn calling_window_serde_form_and_default_days() {
        let w = window("09:00", "20:00", WEEKDAYS);
        let json = serde_json::to_string(&w).unwrap();
        assert_eq!(
            json,
            r#"{"start":"09:00","end":"20:00","days":["mon","tue","wed","thu","fri"]}"#
        );
        assert_eq!(serde_json::from_str::<CallingWindow>(&json).unwrap(), w);
        let defaulted: CallingWindow =
            serde_json::from_str(r#"{"start":"09:00","end":"20:00"}"#).unwrap();
        assert_eq!(defaulted, w);
    }

    #[test]
    fn calling_window_check_accepts_any_case_and_normalizes() {
        let w = window("00:00", "23:59", &["MON", "Sat", "sun"]);
        assert_eq!(w.check(), Ok(()));
        assert_eq!(
            w.normalized().unwrap(),
            window("00:00", "23:59", &["mon", "sat", "sun"])
        );
        assert!(w.is_open(NEW_YORK, at("2026-06-13T16:00:00Z")));
    }

    #[test]
    fn calling_window_check_refuses_bad_inputs() {
        for bad in [
            "9:00", "09:0", "24:00", "09:60", "0900", "09:00 ", "ab:cd", "", "+9:00", "09-00",
        ] {
            let err = window(bad, "23:00", WEEKDAYS).check().unwrap_err();
            assert_eq!(
                err,
                WindowError::BadTime {
                    field: "start",
                    value: bad.into()
                },
                "{bad}"
            );
            assert!(matches!(
                window("08:00", bad, WEEKDAYS).check(),
                Err(WindowError::BadTime { field: "end", .. })
            ));
        }
        assert_eq!(
            window("20:00", "09:00", WEEKDAYS).check(),
            Err(WindowError::EndNotAfterStart {
                start: "20:00".into(),
                end: "09:00".into()
            })
        );
        assert!(matches!(
            window("09:00", "09:00", WEEKDAYS).check(),
            Err(WindowError::EndNotAfterStart { .. })
        ));
        assert_eq!(
            window("09:00", "17:00", &[]).check(),
            Err(WindowError::NoDays)
        );
        assert_eq!(
            window("09:00", "17:00", &["mon", "monday"]).check(),
            Err(WindowError::UnknownDay("monday".into()))
        );
        assert_eq!(
            window("09:00", "17:00", &["mon", "tue", "MON"]).check(),
            Err(WindowError::DuplicateDay("MON".into()))
        );
        let err = window("20:00", "09:00", WEEKDAYS).check().unwrap_err();
        assert_eq!(err.to_string(), err.detail());
        assert!(err.detail().contains("past midnight"), "{}", err.detail());
        // A refused window is never open and never opens.
        let bad = window("20:00", "09:00", EVERY_DAY);
        assert!(!bad.is_open(NEW_YORK, at("2026-06-10T02:00:00Z")));
        assert_eq!(bad.next_open(NEW_YORK, at("2026-06-10T00:00:00Z")), None);
    }

    #[test]
    fn calling_window_zone_uses_the_bundled_database() {
        assert!(zone("America/New_York").is_some());
        assert!(zone("america/new_york").is_some());
        assert!(zone("UTC").is_some());
        assert!(zone("Asia/Calcutta").is_some(), "links resolve");
        assert!(zone("").is_none());
        assert!(zone("Etc/Unknown").is_none());
        assert!(zone("Mars/Olympus_Mons").is_none());
    }

    #[test]
    fn calling_window_unknown_or_missing_zones_are_never_open() {
        let w = window("00:00", "23:59", EVERY_DAY);
        let noon = at("2026-06-10T16:00:00Z");
        assert!(w.is_open(NEW_YORK, noon));
        assert!(!w.is_open(&[], noon));
        assert!(!w.is_open(&["America/New_York", "Nowhere/Atall"], noon));
        assert_eq!(w.next_open(&["Nowhere/Atall"], noon), None);
        assert!(!w.ever_open(&[], noon));
    }

    #[test]
    fn calling_window_end_is_exclusive() {
        let w = window("09:00", "20:00", WEEKDAYS);
        // Wednesday 2026-06-10, EDT (UTC-4).
        assert!(!w.is_open(NEW_YORK, at("2026-06-10T12:59:59Z")));
        assert!(w.is_open(NEW_YORK, at("2026-06-10T13:00:00Z")));
        assert!(w.is_open(NEW_YORK, at("2026-06-10T23:59:59Z")));
        assert!(!w.is_open(NEW_YORK, at("2026-06-11T00:00:00Z")));
        // Already open: `after` itself.
        let inside = at("2026-06-10T15:00:00Z");
        assert_eq!(w.next_open(NEW_YORK, inside), Some(inside));
        // Just closed: the next morning.
        assert_eq!(
            w.next_open(NEW_YORK, at("2026-06-11T00:00:00Z")),
            Some(at("2026-06-11T13:00:00Z"))
        );
    }

    #[test]
    fn calling_window_weekends_are_excluded() {
        let w = window("09:00", "20:00", WEEKDAYS);
        // Saturday and Sunday noon in New York.
        assert!(!w.is_open(NEW_YORK, at("2026-06-13T16:00:00Z")));
        assert!(!w.is_open(NEW_YORK, at("2026-06-14T16:00:00Z")));
        // Friday evening -> Monday 09:00 EDT.
        assert_eq!(
            w.next_open(NEW_YORK, at("2026-06-13T00:30:00Z")),
            Some(at("2026-06-15T13:00:00Z"))
        );
        // The local date counts, not UTC's: Friday 21:00 in Los Angeles is
        // Saturday in UTC.
        let friday = window("09:00", "22:00", &["fri"]);
        assert!(friday.is_open(&["America/Los_Angeles"], at("2026-06-13T04:00:00Z")));
        // A window open one day a week is found from just after it closes.
        let sunday = window("10:00", "11:00", &["sun"]);
        assert_eq!(
            sunday.next_open(NEW_YORK, at("2026-06-14T15:00:00Z")),
            Some(at("2026-06-21T14:00:00Z"))
        );
        assert!(sunday.ever_open(NEW_YORK, at("2026-06-14T15:00:00Z")));
    }

    #[test]
    fn calling_window_dst_spring_forward_new_york_2026() {
        // 2026-03-08: 02:00 EST becomes 03:00 EDT (07:00Z).
        let w = window("09:00", "20:00", EVERY_DAY);
        assert!(
            !w.is_open(NEW_YORK, at("2026-03-07T13:30:00Z")),
            "08:30 EST"
        );
        assert!(w.is_open(NEW_YORK, at("2026-03-07T14:00:00Z")), "09:00 EST");
        assert!(
            !w.is_open(NEW_YORK, at("2026-03-08T12:59:59Z")),
            "08:59 EDT"
        );
        assert!(w.is_open(NEW_YORK, at("2026-03-08T13:00:00Z")), "09:00 EDT");
        assert!(
            !w.is_open(NEW_YORK, at("2026-03-09T00:00:00Z")),
            "20:00 EDT"
        );
        assert_eq!(
            w.next_open(NEW_YORK, at("2026-03-08T01:00:00Z")),
            Some(at("2026-03-08T13:00:00Z"))
        );
        // A start inside the skipped hour opens when the clock jumps past it.
        let gap = window("02:30", "05:00", &["sun"]);
        assert_eq!(
            gap.next_open(NEW_YORK, at("2026-03-08T05:00:00Z")),
            Some(at("2026-03-08T07:00:00Z"))
        );
        assert!(
            !gap.is_open(NEW_YORK, at("2026-03-08T06:59:59Z")),
            "01:59 EST"
        );
        assert!(
            gap.is_open(NEW_YORK, at("2026-03-08T07:00:00Z")),
            "03:00 EDT"
        );
        // A window wholly inside the skipped hour is not open that day.
        let skipped = window("02:00", "03:00", &["sun"]);
        assert_eq!(
            skipped.next_open(NEW_YORK, at("2026-03-08T05:00:00Z")),
            Some(at("2026-03-15T06:00:00Z"))
        );
    }

    #[test]
    fn calling_window_dst_fall_back_new_york_2026() {
        // 2026-11-01: 02:00 EDT becomes 01:00 EST (06:00Z).
        let w = window("09:00", "20:00", EVERY_DAY);
        assert!(w.is_open(NEW_YORK, at("2026-10-31T13:00:00Z")), "09:00 EDT");
        assert!(
            !w.is_open(NEW_YORK, at("2026-11-01T13:00:00Z")),
            "08:00 EST"
        );
        assert!(w.is_open(NEW_YORK, at("2026-11-01T14:00:00Z")), "09:00 EST");
        assert!(
            !w.is_open(NEW_YORK, at("2026-11-02T01:00:00Z")),
            "20:00 EST"
        );
        assert_eq!(
            w.next_open(NEW_YORK, at("2026-11-01T01:00:00Z")),
            Some(at("2026-11-01T14:00:00Z"))
        );
        // 01:30 happens twice; the window opens at both.
        let fold = window("01:30", "03:00", &["sun"]);
        assert_eq!(
            fold.next_open(NEW_YORK, at("2026-11-01T04:00:00Z")),
            Some(at("2026-11-01T05:30:00Z")),
            "01:30 EDT"
        );
        assert!(
            !fold.is_open(NEW_YORK, at("2026-11-01T06:15:00Z")),
            "01:15 EST"
        );
        assert_eq!(
            fold.next_open(NEW_YORK, at("2026-11-01T06:00:00Z")),
            Some(at("2026-11-01T06:30:00Z")),
            "01:30 EST"
        );
        // The clock turning back into the window reopens it at the transition.
        let early = window("00:00", "01:30", &["sun"]);
        assert!(
            !early.is_open(NEW_YORK, at("2026-11-01T05:45:00Z")),
            "01:45 EDT"
        );
        assert_eq!(
            early.next_open(NEW_YORK, at("2026-11-01T05:30:00Z")),
            Some(at("2026-11-01T06:00:00Z")),
            "01:00 EST"
        );
    }

    #[test]
    fn calling_window_multi_zone_needs_the_overlap() {
        let zones = &["Australia/Perth", "Australia/Sydney"];
        // Wednesday 2026-06-10: Perth UTC+8, Sydney UTC+10 (AEST).
        let office = window("09:00", "17:00", WEEKDAYS);
        assert!(office.is_open(&["Australia/Sydney"], at("2026-06-10T00:30:00Z")));
        assert!(
            !office.is_open(zones, at("2026-06-10T00:30:00Z")),
            "08:30 in Perth"
        );
        assert!(office.is_open(zones, at("2026-06-10T01:00:00Z")));
        assert!(office.is_open(zones, at("2026-06-10T06:59:59Z")));
        assert!(
            !office.is_open(zones, at("2026-06-10T07:00:00Z")),
            "17:00 in Sydney"
        );
        assert_eq!(
            office.next_open(zones, at("2026-06-09T23:00:00Z")),
            Some(at("2026-06-10T01:00:00Z"))
        );
        // Sydney's summer time (UTC+11) narrows the overlap to 01:00-06:00Z.
        assert!(!office.is_open(zones, at("2026-12-09T06:30:00Z")));
        assert!(office.is_open(zones, at("2026-12-09T05:59:59Z")));
        // Sydney's 09:00-11:00 ends as Perth's begins: never open in both.
        let morning = window("09:00", "11:00", EVERY_DAY);
        for from in [at("2026-06-10T00:00:00Z"), at("2026-12-09T00:00:00Z")] {
            assert_eq!(morning.next_open(zones, from), None);
            assert!(!morning.ever_open(zones, from));
            assert!(morning.ever_open(&["Australia/Perth"], from));
        }
    }
}
