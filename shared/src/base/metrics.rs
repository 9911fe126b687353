//! CloudWatch metrics through the Embedded Metric Format: one JSON line on
//! stdout per data point, turned into metrics by CloudWatch Logs at no API cost.

use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Received,
    Duplicate,
    Queued,
    /// A dial refused because its number is on the do-not-call list.
    DncRefused,
    /// A campaign paused by the engine (budget spent, assistant or caller
    /// id unusable): it notifies the organisation once.
    CampaignsPaused,
    Transcribed,
    Notified,
    Failed,
    /// Outbound-call reservations the sweep released (calls that never reported an end).
    ReservationsReleased,
    /// Recording-pipeline calls the sweep found stuck (re-driven or failed).
    StuckCalls,
    /// Sessions the sweep ended because their room never reported finishing.
    StuckSessions,
    /// LiveKit calls that failed (room, dispatch, egress); the route answered
    /// a try-again TwiML or a 502.
    LiveKitFailed,
    /// Sessions opened (seed 002: phone, web rooms).
    SessionsOpened,
    /// A function's first invocation after a cold start (one per instance).
    ColdStart,
    /// Seconds from a call's delivery to its finished transcript.
    TranscriptionSeconds,
    /// Outbound calls a provider accepted.
    CallsPlaced,
    /// Outbound calls refused by the budget or by the provider.
    CallsNotPlaced,
    /// Call seconds counted against an organisation's month.
    UsageSeconds,
    /// Calls and messages to a number no organisation owns, with no
    /// `INBOUND_ORG_ID` to fall back to (dimension `Route`).
    InboundUnowned,
    /// Status callbacks ignored because the number on our side of the call
    /// or message is not the record's organisation's (dimension `Route`).
    StatusIgnored,
    /// Outbound calls whose provider has not answered about them
    /// `reconcile::UNRECONCILED_AFTER` times in a row (each run counts
    /// what is still unknown); their reservations stay held.
    CallsUnreconciled,
    /// Webhook endpoints disabled by callops: answered 410, or failed every
    /// attempt for `webhooks::DISABLE_AFTER` (dimension `Reason`).
    WebhookEndpointsDisabled,
    /// Webhook deliveries that used every attempt of the schedule.
    WebhookDeliveriesFailed,
}

impl Metric {
    /// Every metric the code emits, for checks of what dashboards name.
    pub const ALL: [Metric; 23] = [
        Self::Received,
        Self::Duplicate,
        Self::Queued,
        Self::DncRefused,
        Self::CampaignsPaused,
        Self::Transcribed,
        Self::Notified,
        Self::Failed,
        Self::ReservationsReleased,
        Self::StuckCalls,
        Self::StuckSessions,
        Self::LiveKitFailed,
        Self::SessionsOpened,
        Self::ColdStart,
        Self::TranscriptionSeconds,
        Self::CallsPlaced,
        Self::CallsNotPlaced,
        Self::UsageSeconds,
        Self::InboundUnowned,
        Self::StatusIgnored,
        Self::CallsUnreconciled,
        Self::WebhookEndpointsDisabled,
        Self::WebhookDeliveriesFailed,
    ];

    fn unit(self) -> &'static str {
        match self {
            Self::TranscriptionSeconds | Self::UsageSeconds => "Seconds",
            _ => "Count",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Received => "Received",
            Self::Duplicate => "Duplicate",
            Self::Queued => "Queued",
            Self::DncRefused => "DncRefused",
            Self::CampaignsPaused => "CampaignsPaused",
            Self::Transcribed => "Transcribed",
            Self::Notified => "Notified",
            Self::Failed => "Failed",
            Self::ReservationsReleased => "ReservationsReleased",
            Self::StuckCalls => "StuckCalls",
            Self::StuckSessions => "StuckSessions",
            Self::LiveKitFailed => "LiveKitFailed",
            Self::SessionsOpened => "SessionsOpened",
            Self::ColdStart => "ColdStart",
            Self::TranscriptionSeconds => "TranscriptionSeconds",
            Self::CallsPlaced => "CallsPlaced",
            Self::CallsNotPlaced => "CallsNotPlaced",
            Self::UsageSeconds => "UsageSeconds",
            Self::InboundUnowned => "InboundUnowned",
            Self::StatusIgnored => "StatusIgnored",
            Self::CallsUnreconciled => "CallsUnreconciled",
            Self::WebhookEndpointsDisabled => "WebhookEndpointsDisabled",
            Self::WebhookDeliveriesFailed => "WebhookDeliveriesFailed",
        }
    }
}

/// The EMF document for one value, aggregated by function and, when
/// `extra` names one, also by function and that dimension (a channel, an
/// organisation); split out so it is testable without stdout.
pub fn emf_line(
    metric: Metric,
    value: f64,
    namespace: &str,
    function: &str,
    extra: Option<(&str, &str)>,
    at_millis: i64,
) -> String {
    let mut dimensions = vec![json!(["Function"])];
    if let Some((name, _)) = extra {
        dimensions.push(json!(["Function", name]));
    }
    let mut line = json!({
        "_aws": {
            "Timestamp": at_millis,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": dimensions,
                "Metrics": [{"Name": metric.name(), "Unit": metric.unit()}]
            }]
        },
        "Function": function,
        // Whole numbers as integers: counts read as counts in the logs.
        metric.name(): if value.fract() == 0.0 && value.abs() < 9.0e15 { json!(value as i64) } else { json!(value) }
    });
    if let Some((name, dimension)) = extra {
        line[name] = json!(dimension);
    }
    line.to_string()
}

fn emit(metric: Metric, value: f64, extra: Option<(&str, &str)>) {
    let namespace = std::env::var("METRICS_NAMESPACE").unwrap_or_else(|_| "callops".into());
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "local".into());
    println!(
        "{}",
        emf_line(
            metric,
            value,
            &namespace,
            &function,
            extra,
            crate::base::time::epoch_millis()
        )
    );
}

pub fn count(metric: Metric) {
    count_n(metric, 1);
}

pub fn count_n(metric: Metric, count: u64) {
    emit(metric, count as f64, None);
}

/// A count also broken down by one dimension (`Channel`, `Organisation`).
pub fn count_by(metric: Metric, dimension: &str, value: &str) {
    emit(metric, 1.0, Some((dimension, value)));
}

/// A measured value (seconds) for percentiles, optionally by one dimension.
pub fn observe(metric: Metric, value: f64, by: Option<(&str, &str)>) {
    emit(metric, value, by);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_line_names_metric_and_dimension() {
        let line: serde_json::Value = serde_json::from_str(&emf_line(
            Metric::Duplicate,
            1.0,
            "callops",
            "zapier",
            None,
            5,
        ))
        .unwrap();
        assert_eq!(line["Duplicate"], 1);
        assert_eq!(line["Function"], "zapier");
        assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Namespace"], "callops");
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
            "Duplicate"
        );
    }

    #[test]
    fn a_breakdown_adds_a_second_dimension_set() {
        let line: serde_json::Value = serde_json::from_str(&emf_line(
            Metric::UsageSeconds,
            42.0,
            "callops",
            "provider-events-worker",
            Some(("Organisation", "acme")),
            5,
        ))
        .unwrap();
        let spec = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(
            spec["Dimensions"],
            serde_json::json!([["Function"], ["Function", "Organisation"]])
        );
        assert_eq!(spec["Metrics"][0]["Unit"], "Seconds");
        assert_eq!(line["Organisation"], "acme");
        assert_eq!(line["UsageSeconds"], 42);
    }

    #[test]
    fn every_metric_is_listed_once() {
        let mut names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Metric::ALL.len());
    }
}
