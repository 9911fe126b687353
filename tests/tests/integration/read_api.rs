//! `/health`, `/stats` and `/call/{call_id}`.

use shared::api::Route;
use std::sync::Arc;

use crate::support::*;

#[tokio::test]
async fn read_routes_report_a_processed_call() {
    let stack = Stack::start().await;
    let body = seed_payload(&stack, "READ1").to_string();
    stack
        .zapier()
        .handle(zapier_request(
            body.as_bytes(),
            Some(&bearer(WEBHOOK_TOKEN)),
        ))
        .await;
    stack
        .zapier()
        .handle(zapier_request(
            body.as_bytes(),
            Some(&bearer(WEBHOOK_TOKEN)),
        ))
        .await;
    stack.run_transcriptions().await;
    stack
        .run_notifications(&stack.notify_worker(vec![stack.slack_webhook()]))
        .await;

    let call_get = stack.call_get();
    let response = call_get
        .handle(call_get_request("READ1", Some(&bearer(API_TOKEN))))
        .await;
    assert_eq!(response.status(), 200);
    let call = json_body(&response);
    assert_eq!(call["call_id"], "READ1");
    assert_eq!(call["from_number"], "+919876543210");
    assert_eq!(call["to_number"], "09631084471");
    assert_eq!(call["duration"], 125);
    assert_eq!(call["timestamp"], "2025-10-09T17:58:27Z");
    assert_eq!(call["status"], "notified");
    assert_eq!(call["direction"], "incoming");
    assert_eq!(call["slack_posted"], true);
    assert!(call["processed_at"].is_string());
    assert_eq!(
        call["transcription_text"],
        "Thank you for calling, how can I help? I would like to check my order status."
    );
    assert_eq!(call["utterances"][1]["speaker"], "B");
    assert_eq!(call["tone"], "Neutral");
    assert_eq!(call["agent_name"], "Prateek Raj");
    assert_eq!(call["status_history"].as_array().unwrap().len(), 5);

    let missing = call_get
        .handle(call_get_request("NOPE", Some(&bearer(API_TOKEN))))
        .await;
    assert_eq!(missing.status(), 404);
    assert_eq!(json_body(&missing)["detail"], "Call NOPE not found");
    let unauthenticated = call_get.handle(call_get_request("READ1", None)).await;
    assert_eq!(unauthenticated.status(), 401);
    let bad_id = call_get
        .handle(call_get_request("a%2Fb", Some(&bearer(API_TOKEN))))
        .await;
    assert_eq!(bad_id.status(), 422);

    let stats = stack.stats_endpoint();
    let counters = json_body(&stats.handle(stats_request(None)).await);
    assert_eq!(counters["total_processed"], 1);
    assert_eq!(counters["successfully_posted"], 1);
    assert_eq!(counters["failed"], 0);
    assert_eq!(counters["duplicates"], 1);

    let health = health::Health {
        stats: Arc::new(stack.stats()),
        transcription_enabled: true,
        slack_enabled: true,
    };
    let response = health.handle().await;
    assert_eq!(response.status(), 200);
    let doc = json_body(&response);
    assert_eq!(doc["status"], "healthy");
    assert_eq!(doc["database"], "connected");
    assert_eq!(doc["stats"]["total_processed"], 1);
    assert_eq!(doc["services"]["slack"], "enabled");
}

#[tokio::test]
async fn health_reports_an_unreachable_database() {
    let stack = Stack::start().await;
    let broken = shared::store::stats::DynamoStatsStore::new(stack.dynamo.clone(), "no-such-table");
    let health = health::Health {
        stats: Arc::new(broken),
        transcription_enabled: false,
        slack_enabled: false,
    };
    let response = health.handle().await;
    assert_eq!(response.status(), 503);
    let doc = json_body(&response);
    assert_eq!(doc["status"], "unhealthy");
    assert_eq!(doc["services"]["transcription"], "disabled");
}
