//! A campaign's recipient rows, from a JSON array or a CSV text, checked one
//! by one so a refusal names every bad row and why.
//!
//! Rows are numbered from 1 in the order given (a CSV's header is not a row).

use std::collections::HashMap;

use serde::Serialize;

use crate::base::calling_window::{self, CallingWindow};
use crate::base::{phone, phone_zones};
use crate::flows::outbound::CALL_REF_VARIABLE;

/// Most rows one campaign takes.
pub const MAX_ROWS: usize = 10_000;
/// Seed 003's agenda bound, as for `/calls/initiate`.
pub const AGENDA_MAX_CHARS: usize = 2000;
pub const WELCOME_MAX_CHARS: usize = 200;
/// Bounds on a row's agent variables, so a row stays a small item.
pub const MAX_VARIABLES: usize = 30;
pub const VARIABLE_NAME_MAX_CHARS: usize = 64;
pub const VARIABLE_VALUE_MAX_CHARS: usize = 500;

/// One bad row: which, which field, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowProblem {
    pub row: usize,
    pub field: String,
    pub reason: String,
}

impl RowProblem {
    fn new(row: usize, field: &str, reason: impl Into<String>) -> Self {
        Self {
            row,
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

/// A row as given, before any check.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawRow {
    pub row: usize,
    pub phone_number: Option<String>,
    pub timezone: Option<String>,
    pub agenda: Option<String>,
    pub welcome_message: Option<String>,
    pub agent_variables: serde_json::Map<String, serde_json::Value>,
}

/// A row that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRow {
    pub row: usize,
    /// E.164.
    pub phone_number: String,
    pub zones: Vec<String>,
    /// `row` when the row named its zone, `number` when derived.
    pub zone_source: &'static str,
    pub agenda: Option<String>,
    pub welcome_message: Option<String>,
    pub agent_variables: serde_json::Map<String, serde_json::Value>,
}

/// What every row is checked against.
pub struct RowRules<'a> {
    /// The campaign's agenda, for rows that give none.
    pub default_agenda: Option<&'a str>,
    pub window: &'a CallingWindow,
    /// The campaign's start (unix seconds): the window must open after it.
    pub start: i64,
}

fn text(value: Option<&serde_json::Value>) -> Result<Option<String>, &'static str> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => {
            let trimmed = s.trim();
            Ok((!trimmed.is_empty()).then(|| trimmed.to_string()))
        }
        Some(_) => Err("must be a string"),
    }
}

/// Rows of a JSON `recipients` array: each an object with `phone_number`
/// and optionally `timezone`, `agenda`, `welcome_message`, `agent_variables`.
pub fn rows_from_json(values: &[serde_json::Value]) -> (Vec<RawRow>, Vec<RowProblem>) {
    let mut rows = Vec::with_capacity(values.len());
    let mut problems = Vec::new();
    for (index, value) in values.iter().enumerate() {
        let row = index + 1;
        let Some(object) = value.as_object() else {
            problems.push(RowProblem::new(row, "row", "must be a JSON object"));
            continue;
        };
        let mut raw = RawRow {
            row,
            ..RawRow::default()
        };
        let mut bad = false;
        for (key, value) in object {
            let slot = match key.as_str() {
                "phone_number" => &mut raw.phone_number,
                "timezone" => &mut raw.timezone,
                "agenda" => &mut raw.agenda,
                "welcome_message" => &mut raw.welcome_message,
                "agent_variables" => {
                    match value {
                        serde_json::Value::Object(map) => raw.agent_variables = map.clone(),
                        serde_json::Value::Null => {}
                        _ => {
                            problems.push(RowProblem::new(
                                row,
                                "agent_variables",
                                "must be a JSON object",
                            ));
                            bad = true;
                        }
                    }
                    continue;
                }
                other => {
                    problems.push(RowProblem::new(
                        row,
                        &other
                            .chars()
                            .take(VARIABLE_NAME_MAX_CHARS)
                            .collect::<String>(),
                        "unknown field (per-row values for the agent go in `agent_variables`)",
                    ));
                    bad = true;
                    continue;
                }
            };
            match text(Some(value)) {
                Ok(v) => *slot = v,
                Err(why) => {
                    problems.push(RowProblem::new(row, key, why));
                    bad = true;
                }
            }
        }
        if !bad {
            rows.push(raw);
        }
    }
    (rows, problems)
}

/// Rows of a CSV text with a header line. `phone_number` is required;
/// `timezone`, `agenda` and `welcome_message` are read as such; every
/// other column becomes an agent variable of that name (empty cells are
/// left out). `Err` when the text has no usable header.
pub fn rows_from_csv(text: &str) -> Result<(Vec<RawRow>, Vec<RowProblem>), String> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|err| format!("the CSV header cannot be read: {err}"))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_ascii_lowercase())
        .collect();
    if !headers.iter().any(|h| h == "phone_number") {
        return Err("the CSV header must name a `phone_number` column".into());
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for header in &headers {
        if header.is_empty() {
            return Err("every CSV column needs a name".into());
        }
        if seen.insert(header.as_str(), 1).is_some() {
            return Err(format!("the CSV header names `{header}` twice"));
        }
    }
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let row = index + 1;
        let record = match record {
            Ok(record) => record,
            Err(err) => {
                let why = match err.kind() {
                    csv::ErrorKind::UnequalLengths { .. } => {
                        "has a different number of cells from the header".to_string()
                    }
                    _ => "cannot be read as CSV".to_string(),
                };
                problems.push(RowProblem::new(row, "row", why));
                continue;
            }
        };
        let mut raw = RawRow {
            row,
            ..RawRow::default()
        };
        for (header, cell) in headers.iter().zip(record.iter()) {
            let value = (!cell.is_empty()).then(|| cell.to_string());
            match header.as_str() {
                "phone_number" => raw.phone_number = value,
                "timezone" => raw.timezone = value,
                "agenda" => raw.agenda = value,
                "welcome_message" => raw.welcome_message = value,
                name => {
                    if let Some(value) = value {
                        raw.agent_variables
                            .insert(name.to_string(), serde_json::Value::String(value));
                    }
                }
            }
        }
        rows.push(raw);
    }
    Ok((rows, problems))
}

fn check_variables(
    row: usize,
    variables: &serde_json::Map<String, serde_json::Value>,
    problems: &mut Vec<RowProblem>,
) {
    if variables.len() > MAX_VARIABLES {
        problems.push(RowProblem::new(
            row,
            "agent_variables",
            format!("at most {MAX_VARIABLES} variables"),
        ));
        return;
    }
    for (name, value) in variables {
        let field = format!(
            "agent_variables.{}",
            name.chars().take(64).collect::<String>()
        );
        if name.is_empty() || name.chars().count() > VARIABLE_NAME_MAX_CHARS {
            problems.push(RowProblem::new(
                row,
                &field,
                format!("names are 1 to {VARIABLE_NAME_MAX_CHARS} characters"),
            ));
        } else if name == CALL_REF_VARIABLE {
            problems.push(RowProblem::new(
                row,
                &field,
                "this name is reserved for callops",
            ));
        }
        match value {
            serde_json::Value::String(s) if s.chars().count() > VARIABLE_VALUE_MAX_CHARS => {
                problems.push(RowProblem::new(
                    row,
                    &field,
                    format!("values are at most {VARIABLE_VALUE_MAX_CHARS} characters"),
                ));
            }
            serde_json::Value::String(_)
            | serde_json::Value::Number(_)
            | serde_json::Value::Bool(_) => {}
            _ => problems.push(RowProblem::new(
                row,
                &field,
                "values are strings, numbers or booleans",
            )),
        }
    }
}

/// The zones a row's recipient may be in: the row's own `timezone`, else
/// every zone its number's country (and area code) spans.
fn zones_of(
    row: usize,
    number: &str,
    timezone: Option<&str>,
) -> Result<(Vec<String>, &'static str), RowProblem> {
    if let Some(name) = timezone {
        if calling_window::zone(name).is_none() {
            return Err(RowProblem::new(
                row,
                "timezone",
                format!(
                    "{:?} is not an IANA time zone (e.g. America/New_York)",
                    name.chars().take(64).collect::<String>()
                ),
            ));
        }
        return Ok((vec![name.to_string()], "row"));
    }
    let zones = phone_zones::zones_for(number);
    if zones.is_empty() {
        return Err(RowProblem::new(
            row,
            "timezone",
            "no time zone can be derived from this number; give the row a `timezone`",
        ));
    }
    Ok((zones.iter().map(|z| z.to_string()).collect(), "number"))
}

/// Every row checked: the valid ones, and each problem of the others. A
/// number given twice is refused on its later rows (one person, one call).
pub fn check_rows(rows: Vec<RawRow>, rules: &RowRules<'_>) -> (Vec<ValidRow>, Vec<RowProblem>) {
    let mut valid = Vec::with_capacity(rows.len());
    let mut problems = Vec::new();
    let mut first_row_of: HashMap<String, usize> = HashMap::with_capacity(rows.len());
    // Rows of one number range share their zones: the window is checked
    // once per distinct zone set, not once per row.
    let mut window_opens: HashMap<Vec<String>, bool> = HashMap::new();
    for raw in rows {
        let row = raw.row;
        let before = problems.len();
        let number = match phone::e164(raw.phone_number.as_deref().unwrap_or("")) {
            Ok(number) => Some(number),
            Err(err) => {
                let reason = if raw.phone_number.is_none() {
                    "phone_number is required".to_string()
                } else {
                    err.detail()
                };
                problems.push(RowProblem::new(row, "phone_number", reason));
                None
            }
        };
        if let Some(number) = &number {
            if let Some(first) = first_row_of.get(number) {
                problems.push(RowProblem::new(
                    row,
                    "phone_number",
                    format!("the same number as row {first}"),
                ));
            }
        }
        let agenda = raw.agenda.clone();
        match agenda.as_deref().or(rules.default_agenda) {
            None => problems.push(RowProblem::new(
                row,
                "agenda",
                "agenda is required: give the campaign's `agenda` or the row's",
            )),
            Some(a) if a.chars().count() > AGENDA_MAX_CHARS => problems.push(RowProblem::new(
                row,
                "agenda",
                format!("agenda must be at most {AGENDA_MAX_CHARS} characters"),
            )),
            Some(_) => {}
        }
        if raw
            .welcome_message
            .as_ref()
            .is_some_and(|w| w.chars().count() > WELCOME_MAX_CHARS)
        {
            problems.push(RowProblem::new(
                row,
                "welcome_message",
                format!("welcome_message must be at most {WELCOME_MAX_CHARS} characters"),
            ));
        }
        check_variables(row, &raw.agent_variables, &mut problems);
        let mut zones = None;
        if let Some(number) = &number {
            match zones_of(row, number, raw.timezone.as_deref()) {
                Ok((found, source)) => {
                    let opens = *window_opens.entry(found.clone()).or_insert_with(|| {
                        let names: Vec<&str> = found.iter().map(String::as_str).collect();
                        rules.window.ever_open(&names, rules.start)
                    });
                    if opens {
                        zones = Some((found, source));
                    } else {
                        problems.push(RowProblem::new(
                            row,
                            "timezone",
                            format!(
                                "the calling window is never open at once in all of this \
                                 recipient's time zones ({})",
                                found.join(", ")
                            ),
                        ));
                    }
                }
                Err(problem) => problems.push(problem),
            }
        }
        if problems.len() > before {
            continue;
        }
        let (Some(number), Some((zones, zone_source))) = (number, zones) else {
            continue;
        };
        first_row_of.insert(number.clone(), row);
        valid.push(ValidRow {
            row,
            phone_number: number,
            zones,
            zone_source,
            agenda,
            welcome_message: raw.welcome_message,
            agent_variables: raw.agent_variables,
        });
    }
    (valid, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> CallingWindow {
        serde_json::from_value(serde_json::json!({"start": "09:00", "end": "20:00"})).unwrap()
    }

    fn rules(window: &CallingWindow) -> RowRules<'_> {
        RowRules {
            default_agenda: Some("Remind them of the appointment"),
            window,
            start: 1_796_000_000,
        }
    }

    #[test]
    fn csv_columns_map_to_fields_and_the_rest_to_agent_variables() {
        let text = "\u{feff}Phone_Number,timezone,first_name,agenda\n\
                    +12125550123,,Ada,\n\
                    +447123456789,Europe/London,,Call about the order\n";
        let (rows, problems) = rows_from_csv(text).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].phone_number.as_deref(), Some("+12125550123"));
        assert_eq!(rows[0].agent_variables["first_name"], "Ada");
        assert_eq!(rows[1].timezone.as_deref(), Some("Europe/London"));
        assert!(rows[1].agent_variables.is_empty());
        assert_eq!(rows[1].agenda.as_deref(), Some("Call about the order"));
    }

    #[test]
    fn a_csv_without_a_phone_column_or_with_ragged_rows_is_refused() {
        assert!(rows_from_csv("number\n+12125550123\n").is_err());
        assert!(rows_from_csv("phone_number,a,a\n").is_err());
        let (rows, problems) = rows_from_csv("phone_number,name\n+12125550123\n").unwrap();
        assert!(rows.is_empty());
        assert_eq!(problems[0].row, 1);
    }

    #[test]
    fn every_bad_row_is_named_with_its_field() {
        let values = serde_json::json!([
            {"phone_number": "+12125550123"},
            {"phone_number": "hello"},
            {"phone_number": "+12125550123"},
            {"phone_number": "+447123456789", "timezone": "Mars/Olympus"},
            {"phone_number": "+447123456780", "colour": "red"},
            "not an object",
            {"phone_number": "+447123456781", "agent_variables": {"callops_call_ref": "x"}},
            {"phone_number": "+447123456782", "agenda": "a".repeat(2001)},
        ]);
        let (raw, mut problems) = rows_from_json(values.as_array().unwrap());
        let w = window();
        let (valid, more) = check_rows(raw, &rules(&w));
        problems.extend(more);
        problems.sort_by_key(|p| p.row);
        assert_eq!(valid.len(), 1);
        assert_eq!(valid[0].zones, ["America/New_York"]);
        assert_eq!(valid[0].zone_source, "number");
        let named: Vec<(usize, &str)> =
            problems.iter().map(|p| (p.row, p.field.as_str())).collect();
        assert_eq!(
            named,
            [
                (2, "phone_number"),
                (3, "phone_number"),
                (4, "timezone"),
                (5, "colour"),
                (6, "row"),
                (7, "agent_variables.callops_call_ref"),
                (8, "agenda"),
            ]
        );
        assert!(problems[1].reason.contains("row 1"), "{:?}", problems[1]);
    }

    #[test]
    fn a_row_needs_an_agenda_when_the_campaign_has_none() {
        let w = window();
        let rules = RowRules {
            default_agenda: None,
            ..rules(&w)
        };
        let rows = vec![
            RawRow {
                row: 1,
                phone_number: Some("+12125550123".into()),
                ..RawRow::default()
            },
            RawRow {
                row: 2,
                phone_number: Some("+12125550124".into()),
                agenda: Some("Own agenda".into()),
                ..RawRow::default()
            },
        ];
        let (valid, problems) = check_rows(rows, &rules);
        assert_eq!(valid.len(), 1);
        assert_eq!(valid[0].row, 2);
        assert_eq!(problems[0].field, "agenda");
    }

    #[test]
    fn a_window_never_open_in_all_of_a_numbers_zones_refuses_the_row() {
        // Two hours is never open at once from Perth to Sydney (2-3 hours apart).
        let w: CallingWindow = serde_json::from_value(
            serde_json::json!({"start": "09:00", "end": "10:00", "days": ["mon"]}),
        )
        .unwrap();
        let rows = vec![
            RawRow {
                row: 1,
                phone_number: Some("+61412345678".into()),
                ..RawRow::default()
            },
            RawRow {
                row: 2,
                phone_number: Some("+61412345679".into()),
                timezone: Some("Australia/Perth".into()),
                ..RawRow::default()
            },
        ];
        let (valid, problems) = check_rows(rows, &rules(&w));
        assert_eq!(valid.len(), 1);
        assert_eq!(valid[0].zone_source, "row");
        assert_eq!(problems.len(), 1);
        assert_eq!(
            (problems[0].row, problems[0].field.as_str()),
            (1, "timezone")
        );
    }
}
