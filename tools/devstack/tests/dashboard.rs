//! The CloudWatch dashboard names only metrics that exist: ours (EMF,
//! namespace `callops`, `shared::base::metrics::Metric::ALL`) or ones AWS
//! publishes; and every work queue has an age-of-oldest-message alarm.

use serde_yaml_ng::Value;
use shared::base::metrics::Metric;

fn template() -> Value {
    let text = std::fs::read_to_string(devstack::repo_root().join("template.yaml")).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

/// The dashboard body as JSON, with `${...}` substitutions replaced by a placeholder.
fn dashboard_body(template: &Value) -> serde_json::Value {
    let body = &template["Resources"]["Dashboard"]["Properties"]["DashboardBody"];
    let Value::Tagged(tagged) = body else {
        panic!("DashboardBody is not a !Sub: {body:?}")
    };
    let text = tagged.value.as_str().expect("!Sub of a string");
    let mut plain = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        plain.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closed substitution") + start;
        plain.push_str("SUBSTITUTED");
        rest = &rest[end + 1..];
    }
    plain.push_str(rest);
    serde_json::from_str(&plain).unwrap_or_else(|e| panic!("dashboard body is not JSON: {e}"))
}

/// Every (namespace, metric) the widgets name: plain metric rows and the
/// `{namespace,...} MetricName="..."` terms of SEARCH expressions.
fn named_metrics(body: &serde_json::Value) -> Vec<(String, String)> {
    let mut named = Vec::new();
    for widget in body["widgets"].as_array().unwrap() {
        for row in widget["properties"]["metrics"].as_array().unwrap() {
            let row = row.as_array().unwrap();
            if let Some(namespace) = row.first().and_then(|v| v.as_str()) {
                named.push((namespace.to_string(), row[1].as_str().unwrap().to_string()));
                continue;
            }
            let expression = row[0]["expression"].as_str().unwrap();
            let mut rest = expression;
            while let Some(search) = rest.find("SEARCH('{") {
                let after = &rest[search + "SEARCH('{".len()..];
                let namespace = after.split([',', '}']).next().unwrap().to_string();
                let name_at = after.find("MetricName=\"").expect("SEARCH names a metric");
                let name = after[name_at + "MetricName=\"".len()..]
                    .split('"')
                    .next()
                    .unwrap()
                    .to_string();
                named.push((namespace, name));
                rest = &after[name_at..];
            }
        }
    }
    named
}

fn published_by_aws(namespace: &str, metric: &str) -> bool {
    let known: &[&str] = match namespace {
        "AWS/Lambda" => &[
            "Invocations",
            "Errors",
            "Throttles",
            "Duration",
            "ConcurrentExecutions",
        ],
        "AWS/SQS" => &[
            "ApproximateNumberOfMessagesVisible",
            "ApproximateAgeOfOldestMessage",
            "NumberOfMessagesReceived",
            "NumberOfMessagesDeleted",
            "NumberOfMessagesSent",
        ],
        // HTTP APIs publish these (per route with detailed metrics on).
        "AWS/ApiGateway" => &["Count", "4xx", "5xx", "Latency", "IntegrationLatency"],
        _ => &[],
    };
    known.contains(&metric)
}

#[test]
fn the_dashboard_names_only_metrics_that_exist() {
    let template = template();
    let named = named_metrics(&dashboard_body(&template));
    assert!(
        named.len() > 20,
        "dashboard names only {} metrics",
        named.len()
    );
    let ours: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
    for (namespace, metric) in &named {
        let exists = if namespace == "callops" {
            ours.contains(&metric.as_str())
        } else {
            published_by_aws(namespace, metric)
        };
        assert!(
            exists,
            "dashboard names {namespace}/{metric}, which nothing emits"
        );
    }
    // The operator's questions each have an answer on it.
    for wanted in [
        "Duplicate",
        "Notified",
        "TranscriptionSeconds",
        "CallsPlaced",
        "CallsNotPlaced",
        "UsageSeconds",
        "ColdStart",
        "ApproximateAgeOfOldestMessage",
        "ApproximateNumberOfMessagesVisible",
        "Duration",
        "Errors",
        "4xx",
        "5xx",
    ] {
        assert!(
            named.iter().any(|(_, m)| m == wanted),
            "dashboard lacks {wanted}"
        );
    }
}

#[test]
fn every_work_queue_has_an_age_alarm() {
    let template = template();
    let resources = template["Resources"].as_mapping().unwrap();
    let mut queues: Vec<String> = resources
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::SQS::Queue"))
        .filter_map(|(name, _)| name.as_str().map(str::to_string))
        .filter(|name| !name.ends_with("DLQ"))
        .collect();
    queues.sort();
    let looped = &resources
        .get("Fn::ForEach::QueueAge")
        .expect("Fn::ForEach::QueueAge")[1];
    let mut alarmed: Vec<String> = looped
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    alarmed.sort();
    assert_eq!(alarmed, queues);
}
