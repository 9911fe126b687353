//! Lambda event filtering (an event source mapping's `FilterCriteria`) for
//! the local event sources, so the patterns template.yaml deploys decide
//! locally too which records reach a function: a filter that lets too much
//! or too little through shows in `make dev` and the tests, not first in AWS.
//!
//! The pattern language is the one Lambda documents for event source
//! mappings (EventBridge's): a pattern is a JSON object whose keys follow the
//! event's; a nested object matches the event's nested object, an array lists
//! the values a field may have. An alternative is a literal (string, number,
//! boolean or null, matched exactly) or one operator: `prefix`, `suffix`,
//! `equals-ignore-case`, `anything-but` (a literal, a list of literals, or a
//! `prefix`/`suffix`/`equals-ignore-case` object), `numeric` (`["=", 5]`,
//! `[">", 0, "<=", 5]`) or `exists` (`true`/`false`); `"$or": [{..}, {..}]`
//! ORs sub-patterns. A pattern matches when each of its keys does; a
//! function's filters OR together. A field holding an array matches when any
//! of its elements does.
//!
//! DynamoDB's `{"N": "5"}` numbers are strings: `numeric` and number
//! literals read them as numbers under an `N` key, as filters on stream
//! images need.

use serde_json::{Map, Value};

/// Whether `event` passes at least one of `filters`; no filter at all (no
/// `FilterCriteria`) passes everything.
pub fn matches_any(filters: &[Value], event: &Value) -> bool {
    filters.is_empty() || filters.iter().any(|filter| matches(filter, event))
}

/// Whether `event` passes `pattern` (assumed [`validate`]d: a part of the
/// pattern that is not valid never matches).
pub fn matches(pattern: &Value, event: &Value) -> bool {
    pattern
        .as_object()
        .is_some_and(|pattern| object_matches(pattern, Some(event)))
}

/// Checks that `pattern` is one Lambda accepts and this module evaluates;
/// the error names the offending field.
pub fn validate(pattern: &Value) -> Result<(), String> {
    let object = pattern
        .as_object()
        .ok_or("a filter pattern must be a JSON object")?;
    validate_object(object, "")
}

fn object_matches(pattern: &Map<String, Value>, event: Option<&Value>) -> bool {
    pattern.iter().all(|(key, rule)| {
        if key == "$or" {
            return rule.as_array().is_some_and(|branches| {
                branches.iter().any(|branch| {
                    branch
                        .as_object()
                        .is_some_and(|branch| object_matches(branch, event))
                })
            });
        }
        let field = event.and_then(|event| event.get(key));
        match rule {
            Value::Object(nested) => nested_matches(nested, field),
            Value::Array(alternatives) => field_matches(key, alternatives, field),
            _ => false,
        }
    })
}

/// A nested pattern against a field: an object, or an array of objects of
/// which one must match; a missing field matches only a pattern of
/// `exists: false` fields.
fn nested_matches(pattern: &Map<String, Value>, field: Option<&Value>) -> bool {
    match field {
        Some(Value::Array(items)) if !items.is_empty() => {
            items.iter().any(|item| object_matches(pattern, Some(item)))
        }
        Some(Value::Array(_)) => object_matches(pattern, None),
        other => object_matches(pattern, other),
    }
}

fn field_matches(key: &str, alternatives: &[Value], field: Option<&Value>) -> bool {
    // The leaf values the field holds: itself, or each element of an array.
    let values: Vec<&Value> = match field {
        None => Vec::new(),
        Some(Value::Array(items)) => items.iter().filter(|v| !v.is_object()).collect(),
        Some(Value::Object(_)) => Vec::new(),
        Some(value) => vec![value],
    };
    alternatives.iter().any(|alternative| match alternative {
        Value::Object(operator) => match operator.get("exists") {
            Some(exists) => exists.as_bool() == Some(!values.is_empty()),
            None => values
                .iter()
                .any(|value| operator_matches(key, operator, value)),
        },
        literal => values
            .iter()
            .any(|value| literal_matches(key, literal, value)),
    })
}

/// A number, or under DynamoDB's `N` key its string form.
fn number_of(key: &str, value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if key == "N" => s.trim().parse().ok(),
        _ => None,
    }
}

fn literal_matches(key: &str, literal: &Value, value: &Value) -> bool {
    match (literal, value) {
        (Value::Number(n), value) => n
            .as_f64()
            .zip(number_of(key, value))
            .is_some_and(|(want, got)| want == got),
        (Value::Object(_) | Value::Array(_), _) => false,
        (literal, value) => literal == value,
    }
}

fn string_operator_matches(name: &str, argument: &Value, value: &Value) -> bool {
    let (Some(argument), Some(value)) = (argument.as_str(), value.as_str()) else {
        return false;
    };
    match name {
        "prefix" => value.starts_with(argument),
        "suffix" => value.ends_with(argument),
        "equals-ignore-case" => value.to_lowercase() == argument.to_lowercase(),
        _ => false,
    }
}

fn operator_matches(key: &str, operator: &Map<String, Value>, value: &Value) -> bool {
    let Some((name, argument)) = operator.iter().next().filter(|_| operator.len() == 1) else {
        return false;
    };
    match name.as_str() {
        "prefix" | "suffix" | "equals-ignore-case" => {
            string_operator_matches(name, argument, value)
        }
        "anything-but" => match argument {
            Value::Array(excluded) => !excluded
                .iter()
                .any(|literal| literal_matches(key, literal, value)),
            Value::Object(inner) => match inner.iter().next() {
                Some((inner_name, inner_argument)) if inner.len() == 1 => {
                    // `{"equals-ignore-case": [..]}` excludes each listed string.
                    let excluded = match inner_argument {
                        Value::Array(items) => items.iter().collect(),
                        single => vec![single],
                    };
                    !excluded
                        .iter()
                        .any(|item| string_operator_matches(inner_name, item, value))
                }
                _ => false,
            },
            literal => !literal_matches(key, literal, value),
        },
        "numeric" => {
            let (Some(got), Some(conditions)) = (number_of(key, value), argument.as_array()) else {
                return false;
            };
            conditions.chunks(2).all(|condition| match condition {
                [Value::String(op), bound] => {
                    bound.as_f64().is_some_and(|bound| match op.as_str() {
                        "=" => got == bound,
                        "<" => got < bound,
                        "<=" => got <= bound,
                        ">" => got > bound,
                        ">=" => got >= bound,
                        _ => false,
                    })
                }
                _ => false,
            })
        }
        _ => false,
    }
}

fn validate_object(pattern: &Map<String, Value>, path: &str) -> Result<(), String> {
    for (key, rule) in pattern {
        let here = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        if key == "$or" {
            let branches = rule
                .as_array()
                .filter(|b| b.len() >= 2)
                .ok_or(format!("{here}: expected a list of at least two patterns"))?;
            for branch in branches {
                validate_object(
                    branch
                        .as_object()
                        .ok_or(format!("{here}: each branch must be an object"))?,
                    path,
                )?;
            }
            continue;
        }
        match rule {
            Value::Object(nested) => validate_object(nested, &here)?,
            Value::Array(alternatives) if !alternatives.is_empty() => {
                for alternative in alternatives {
                    validate_alternative(alternative, &here)?;
                }
            }
            Value::Array(_) => return Err(format!("{here}: an empty list matches nothing")),
            _ => {
                return Err(format!(
                    "{here}: a rule is an object (nested fields) or a list of allowed values, \
                     not a bare value"
                ))
            }
        }
    }
    Ok(())
}

fn is_literal(value: &Value) -> bool {
    !value.is_object() && !value.is_array()
}

fn validate_alternative(alternative: &Value, path: &str) -> Result<(), String> {
    let Value::Object(operator) = alternative else {
        return if is_literal(alternative) {
            Ok(())
        } else {
            Err(format!("{path}: a list inside a list of values"))
        };
    };
    let (name, argument) = operator
        .iter()
        .next()
        .filter(|_| operator.len() == 1)
        .ok_or(format!("{path}: an operator object has exactly one key"))?;
    let string_argument = |argument: &Value| {
        argument
            .as_str()
            .map(drop)
            .ok_or(format!("{path}: {name} takes a string"))
    };
    match name.as_str() {
        "prefix" | "suffix" | "equals-ignore-case" => string_argument(argument),
        "exists" => argument
            .as_bool()
            .map(drop)
            .ok_or(format!("{path}: exists takes true or false")),
        "anything-but" => match argument {
            Value::Array(items) if !items.is_empty() && items.iter().all(is_literal) => Ok(()),
            Value::Object(inner) => match inner.iter().next() {
                Some((inner_name, inner_argument))
                    if inner.len() == 1
                        && ["prefix", "suffix", "equals-ignore-case"]
                            .contains(&inner_name.as_str()) =>
                {
                    let strings = match inner_argument {
                        Value::Array(items) if inner_name == "equals-ignore-case" => {
                            items.iter().all(Value::is_string) && !items.is_empty()
                        }
                        single => single.is_string(),
                    };
                    strings
                        .then_some(())
                        .ok_or(format!("{path}: anything-but {inner_name} takes a string"))
                }
                _ => Err(format!(
                    "{path}: anything-but takes a value, a list of values or one of \
                     prefix, suffix, equals-ignore-case"
                )),
            },
            literal if is_literal(literal) => Ok(()),
            _ => Err(format!(
                "{path}: anything-but takes a value or a non-empty list of values"
            )),
        },
        "numeric" => validate_numeric(argument, path),
        other => Err(format!(
            "{path}: operator {other} is not one Lambda event filtering has \
             (prefix, suffix, equals-ignore-case, anything-but, numeric, exists)"
        )),
    }
}

/// `["=", n]`, `[op, n]`, or a lower bound then an upper one (`[">", 0, "<=", 5]`).
fn validate_numeric(argument: &Value, path: &str) -> Result<(), String> {
    let invalid = || {
        format!("{path}: numeric takes [\"=\", n], [op, n] or [\">\"|\">=\", n, \"<\"|\"<=\", m]")
    };
    let conditions = argument.as_array().ok_or_else(invalid)?;
    let pairs: Vec<(&str, f64)> = conditions
        .chunks(2)
        .map(|pair| match pair {
            [Value::String(op), Value::Number(n)] => n.as_f64().map(|n| (op.as_str(), n)),
            _ => None,
        })
        .collect::<Option<_>>()
        .ok_or_else(invalid)?;
    let known = |op: &str| ["=", "<", "<=", ">", ">="].contains(&op);
    match pairs.as_slice() {
        [(op, _)] if known(op) => Ok(()),
        [(low, from), (high, to)]
            if [">", ">="].contains(low) && ["<", "<="].contains(high) && from <= to =>
        {
            Ok(())
        }
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn passes(pattern: Value, event: Value) -> bool {
        validate(&pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
        matches(&pattern, &event)
    }

    #[test]
    fn literals_match_exactly_and_alternatives_or() {
        let pattern = json!({"status": ["queued", "skipped"]});
        assert!(passes(pattern.clone(), json!({"status": "queued"})));
        assert!(passes(pattern.clone(), json!({"status": "skipped"})));
        assert!(!passes(pattern.clone(), json!({"status": "Queued"})));
        assert!(!passes(pattern.clone(), json!({"status": "received"})));
        assert!(!passes(pattern, json!({"other": "queued"})));
        assert!(passes(json!({"n": [5]}), json!({"n": 5.0})));
        assert!(!passes(json!({"n": [5]}), json!({"n": "5"})));
        assert!(passes(json!({"flag": [true]}), json!({"flag": true})));
        assert!(!passes(json!({"flag": [true]}), json!({"flag": "true"})));
        assert!(passes(json!({"gone": [null]}), json!({"gone": null})));
        assert!(!passes(json!({"gone": [null]}), json!({})));
        assert!(passes(json!({"name": [""]}), json!({"name": ""})));
    }

    #[test]
    fn nested_objects_match_nested_fields_and_every_key_must_match() {
        let pattern =
            json!({"eventName": ["INSERT"], "dynamodb": {"NewImage": {"item": {"S": ["call"]}}}});
        let event = |name: &str, item: &str| json!({"eventName": name, "dynamodb": {"NewImage": {"item": {"S": item}}}});
        assert!(passes(pattern.clone(), event("INSERT", "call")));
        assert!(!passes(pattern.clone(), event("MODIFY", "call")));
        assert!(!passes(pattern.clone(), event("INSERT", "log")));
        assert!(!passes(pattern.clone(), json!({"eventName": "INSERT"})));
        // A scalar where the pattern wants an object does not match.
        assert!(!passes(
            pattern,
            json!({"eventName": "INSERT", "dynamodb": "x"})
        ));
    }

    #[test]
    fn an_array_field_matches_when_any_element_does() {
        let pattern = json!({"tags": ["urgent"]});
        assert!(passes(pattern.clone(), json!({"tags": ["new", "urgent"]})));
        assert!(!passes(pattern.clone(), json!({"tags": ["new"]})));
        assert!(!passes(pattern, json!({"tags": []})));
        let nested = json!({"items": {"kind": ["a"]}});
        assert!(passes(
            nested.clone(),
            json!({"items": [{"kind": "b"}, {"kind": "a"}]})
        ));
        assert!(!passes(nested, json!({"items": [{"kind": "b"}]})));
    }

    #[test]
    fn prefix_and_suffix() {
        assert!(passes(
            json!({"r": [{"prefix": "us-"}]}),
            json!({"r": "us-east-1"})
        ));
        assert!(!passes(
            json!({"r": [{"prefix": "us-"}]}),
            json!({"r": "eu-west-1"})
        ));
        assert!(!passes(json!({"r": [{"prefix": "1"}]}), json!({"r": 12})));
        assert!(passes(
            json!({"f": [{"suffix": ".png"}]}),
            json!({"f": "a.png"})
        ));
        assert!(!passes(
            json!({"f": [{"suffix": ".png"}]}),
            json!({"f": "a.PNG"})
        ));
        assert!(!passes(json!({"f": [{"suffix": ".png"}]}), json!({})));
    }

    #[test]
    fn equals_ignore_case() {
        let pattern = json!({"name": [{"equals-ignore-case": "alice"}]});
        assert!(passes(pattern.clone(), json!({"name": "ALICE"})));
        assert!(passes(pattern.clone(), json!({"name": "Alice"})));
        assert!(!passes(pattern, json!({"name": "Alicia"})));
    }

    #[test]
    fn anything_but() {
        let list = json!({"s": [{"anything-but": ["received", "failed"]}]});
        assert!(passes(list.clone(), json!({"s": "queued"})));
        assert!(!passes(list.clone(), json!({"s": "failed"})));
        // Only an existing value can be something else.
        assert!(!passes(list, json!({})));
        let single = json!({"s": [{"anything-but": "received"}]});
        assert!(passes(single.clone(), json!({"s": "queued"})));
        assert!(!passes(single, json!({"s": "received"})));
        let numbers = json!({"n": [{"anything-but": [0, 1]}]});
        assert!(passes(numbers.clone(), json!({"n": 2})));
        assert!(!passes(numbers, json!({"n": 1.0})));
        let prefix = json!({"s": [{"anything-but": {"prefix": "tmp-"}}]});
        assert!(passes(prefix.clone(), json!({"s": "call"})));
        assert!(!passes(prefix, json!({"s": "tmp-1"})));
        let cases = json!({"s": [{"anything-but": {"equals-ignore-case": ["a", "b"]}}]});
        assert!(passes(cases.clone(), json!({"s": "c"})));
        assert!(!passes(cases, json!({"s": "B"})));
    }

    #[test]
    fn exists_true_and_false() {
        let present = json!({"a": {"b": [{"exists": true}]}});
        assert!(passes(present.clone(), json!({"a": {"b": "x"}})));
        assert!(passes(present.clone(), json!({"a": {"b": null}})));
        assert!(!passes(present.clone(), json!({"a": {"c": "x"}})));
        // Leaves only: an object is not a value that exists.
        assert!(!passes(present, json!({"a": {"b": {"c": 1}}})));
        let absent = json!({"a": {"b": [{"exists": false}]}});
        assert!(passes(absent.clone(), json!({"a": {"c": "x"}})));
        assert!(passes(absent.clone(), json!({})));
        assert!(!passes(absent, json!({"a": {"b": 0}})));
    }

    #[test]
    fn numeric_ranges_and_equality() {
        let range = json!({"n": [{"numeric": [">", 0, "<=", 5]}]});
        assert!(passes(range.clone(), json!({"n": 5})));
        assert!(passes(range.clone(), json!({"n": 0.5})));
        assert!(!passes(range.clone(), json!({"n": 0})));
        assert!(!passes(range.clone(), json!({"n": 6})));
        // A JSON string is not a number...
        assert!(!passes(range.clone(), json!({"n": "3"})));
        // ...except DynamoDB's N values.
        let dynamo = json!({"size": {"N": [{"numeric": [">=", 10]}]}});
        assert!(passes(dynamo.clone(), json!({"size": {"N": "10"}})));
        assert!(!passes(dynamo, json!({"size": {"N": "9.5"}})));
        assert!(passes(
            json!({"n": [{"numeric": ["=", 3]}]}),
            json!({"n": 3.0})
        ));
        assert!(passes(
            json!({"n": [{"numeric": ["<", 3]}]}),
            json!({"n": -1})
        ));
        assert!(passes(json!({"v": {"N": [7]}}), json!({"v": {"N": "7"}})));
    }

    #[test]
    fn or_branches_and_filters() {
        let pattern = json!({"$or": [{"a": ["1"]}, {"b": ["2"]}]});
        assert!(passes(pattern.clone(), json!({"a": "1"})));
        assert!(passes(pattern.clone(), json!({"b": "2"})));
        assert!(!passes(pattern, json!({"a": "2"})));
        let filters = [json!({"a": ["1"]}), json!({"b": ["2"]})];
        assert!(matches_any(&filters, &json!({"b": "2"})));
        assert!(!matches_any(&filters, &json!({"c": "3"})));
        assert!(matches_any(&[], &json!({"c": "3"})));
    }

    /// A calls-table stream record as Lambda sees it.
    fn call_record(event_name: &str, item: &str, source: &str, status: &str) -> Value {
        json!({
            "eventID": "1",
            "eventName": event_name,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": {
                "ApproximateCreationDateTime": 1_767_225_600,
                "Keys": {"call_id": {"S": "c-1"}, "item": {"S": item}},
                "NewImage": {
                    "call_id": {"S": "c-1"},
                    "item": {"S": item},
                    "source": {"S": source},
                    "status": {"S": status},
                    "received_at": {"N": "1767225600"}
                },
                "SequenceNumber": "100000000000000000001",
                "SizeBytes": 120,
                "StreamViewType": "NEW_IMAGE"
            },
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:000000000000:table/CallsTable/stream/x"
        })
    }

    #[test]
    fn the_templates_calls_stream_filter() {
        let template =
            crate::template::Template::load(&crate::repo_root().join("template.yaml")).unwrap();
        let filters = &template.function("calls-stream").unwrap().streams[0].filters;
        assert!(!filters.is_empty());
        let passes = |record: Value| matches_any(filters, &record);
        assert!(passes(call_record("INSERT", "call", "zapier", "queued")));
        assert!(passes(call_record("INSERT", "call", "exotel", "skipped")));
        // Only new records: a MODIFY that leaves a record queued is dropped.
        assert!(!passes(call_record("MODIFY", "call", "zapier", "queued")));
        assert!(!passes(call_record(
            "MODIFY",
            "call",
            "zapier",
            "transcribing"
        )));
        assert!(!passes(call_record("INSERT", "log#1", "zapier", "queued")));
        assert!(!passes(call_record("INSERT", "call", "zapier", "received")));
        assert!(!passes(call_record("INSERT", "call", "web", "queued")));
    }

    #[test]
    fn rejects_patterns_lambda_would_refuse() {
        for (pattern, complaint) in [
            (json!(["a"]), "JSON object"),
            (json!({"a": "x"}), "a: a rule is an object"),
            (json!({"a": []}), "empty list"),
            (json!({"a": [["x"]]}), "list inside a list"),
            (
                json!({"a": {"b": [{"wildcard": "x*"}]}}),
                "a.b: operator wildcard",
            ),
            (json!({"a": [{"prefix": 1}]}), "prefix takes a string"),
            (
                json!({"a": [{"prefix": "x", "suffix": "y"}]}),
                "exactly one key",
            ),
            (json!({"a": [{"exists": "yes"}]}), "exists takes"),
            (
                json!({"a": [{"numeric": ["<", 5, ">", 0]}]}),
                "numeric takes",
            ),
            (json!({"a": [{"numeric": [">", "0"]}]}), "numeric takes"),
            (json!({"a": [{"anything-but": []}]}), "anything-but"),
            (json!({"$or": [{"a": ["1"]}]}), "$or: expected a list"),
        ] {
            let err = validate(&pattern).unwrap_err();
            assert!(err.contains(complaint), "{pattern}: {err}");
        }
    }
}
