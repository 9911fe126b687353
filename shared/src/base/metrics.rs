//! CloudWatch metrics through the Embedded Metric Format: one JSON line on
//! stdout per data point, turned into metrics by CloudWatch Logs at no API cost.

use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Received,
    Duplicate,
    Queued,
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
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Self::Received => "Received",
            Self::Duplicate => "Duplicate",
            Self::Queued => "Queued",
            Self::Transcribed => "Transcribed",
            Self::Notified => "Notified",
            Self::Failed => "Failed",
            Self::ReservationsReleased => "ReservationsReleased",
            Self::StuckCalls => "StuckCalls",
            Self::StuckSessions => "StuckSessions",
            Self::LiveKitFailed => "LiveKitFailed",
            Self::SessionsOpened => "SessionsOpened",
        }
    }
}

/// The EMF document for one count; split out so it is testable without stdout.
pub fn emf_line(
    metric: Metric,
    count: u64,
    namespace: &str,
    function: &str,
    at_millis: i64,
) -> String {
    json!({
        "_aws": {
            "Timestamp": at_millis,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [["Function"]],
                "Metrics": [{"Name": metric.name(), "Unit": "Count"}]
            }]
        },
        "Function": function,
        metric.name(): count
    })
    .to_string()
}

pub fn count(metric: Metric) {
    count_n(metric, 1);
}

pub fn count_n(metric: Metric, count: u64) {
    let namespace = std::env::var("METRICS_NAMESPACE").unwrap_or_else(|_| "callops".into());
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "local".into());
    println!(
        "{}",
        emf_line(
            metric,
            count,
            &namespace,
            &function,
            crate::base::time::epoch_millis()
        )
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_line_names_metric_and_dimension() {
        let line: serde_json::Value =
            serde_json::from_str(&emf_line(Metric::Duplicate, 1, "callops", "zapier", 5)).unwrap();
        assert_eq!(line["Duplicate"], 1);
        assert_eq!(line["Function"], "zapier");
        assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Namespace"], "callops");
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
            "Duplicate"
        );
    }
}
