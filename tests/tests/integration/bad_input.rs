//! Every kind of bad delivery gets a clear 4xx JSON error and changes nothing.

use lambda_http::{Body, Response};
use shared::api::Route;

use crate::pipeline::urlencode;
use crate::support::*;

async fn assert_rejected_and_nothing_stored(
    stack: &Stack,
    response: Response<Body>,
    status: u16,
    code: &str,
) {
    assert_eq!(
        response.status(),
        status,
        "{:?}",
        String::from_utf8_lossy(response.body().as_ref())
    );
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = json_body(&response);
    assert_eq!(body["code"], code, "{body}");
    assert!(!body["detail"].as_str().unwrap_or("").is_empty(), "{body}");
    // Secrets never echo back.
    assert!(!body.to_string().contains(WEBHOOK_TOKEN));
    assert_eq!(stack.item_count("CallsTable").await, 0, "a call was stored");
    assert_eq!(
        stack.item_count("IdempotencyTable").await,
        0,
        "a dedup record was left"
    );
    assert_eq!(stack.item_count("StatsTable").await, 0, "a counter moved");
    assert_eq!(
        stack.depth("TranscriptionQueue").await,
        0,
        "a job was queued"
    );
}

#[tokio::test]
async fn zapier_bad_input_catalog() {
    let stack = Stack::start().await;
    let zapier = stack.zapier();
    let good = seed_payload(&stack, "BAD1");
    let good_body = good.to_string();
    let auth = bearer(WEBHOOK_TOKEN);
    let with = |key: &str, value: serde_json::Value| {
        let mut p = good.clone();
        p[key] = value;
        p.to_string()
    };
    let without = |key: &str| {
        let mut p = good.clone();
        p.as_object_mut().unwrap().remove(key);
        p.to_string()
    };
    let oversized = with("department", "x".repeat(70 * 1024).into());
    let cases: Vec<(&str, String, Option<String>, u16, &str)> = vec![
        ("no token", good_body.clone(), None, 401, "unauthorized"),
        (
            "wrong token",
            good_body.clone(),
            Some(bearer("not-the-token-at-all")),
            401,
            "unauthorized",
        ),
        (
            "token without Bearer",
            good_body.clone(),
            Some(WEBHOOK_TOKEN.to_string()),
            401,
            "unauthorized",
        ),
        (
            "malformed JSON",
            "{\"call_id\": \"BAD1\",".into(),
            Some(auth.clone()),
            400,
            "invalid_json",
        ),
        (
            "JSON that is not an object",
            "[1,2,3]".into(),
            Some(auth.clone()),
            400,
            "invalid_json",
        ),
        (
            "empty body",
            String::new(),
            Some(auth.clone()),
            400,
            "invalid_json",
        ),
        (
            "missing call_id",
            without("call_id"),
            Some(auth.clone()),
            422,
            "missing_field",
        ),
        (
            "blank call_id",
            with("call_id", " ".into()),
            Some(auth.clone()),
            422,
            "missing_field",
        ),
        (
            "call_id with a slash",
            with("call_id", "a/b".into()),
            Some(auth.clone()),
            422,
            "invalid_call_id",
        ),
        (
            "missing from_number",
            without("from_number"),
            Some(auth.clone()),
            422,
            "missing_field",
        ),
        (
            "bad phone number",
            with("to_number", "call me maybe".into()),
            Some(auth.clone()),
            422,
            "invalid_phone_number",
        ),
        (
            "bad duration",
            with("duration", "two minutes".into()),
            Some(auth.clone()),
            422,
            "invalid_duration",
        ),
        (
            "bad timestamp",
            with("timestamp", "yesterday".into()),
            Some(auth.clone()),
            422,
            "invalid_timestamp",
        ),
        (
            "disallowed recording host",
            with("recording_url", "https://attacker.example.com/r.mp3".into()),
            Some(auth.clone()),
            422,
            "recording_host_not_allowed",
        ),
        (
            "plain http to a public host",
            with("recording_url", "http://api.exotel.com/r.mp3".into()),
            Some(auth.clone()),
            422,
            "recording_host_not_allowed",
        ),
        (
            "oversized body",
            oversized,
            Some(auth.clone()),
            413,
            "payload_too_large",
        ),
    ];
    for (name, body, authorization, status, code) in cases {
        println!("case: {name}");
        let response = zapier
            .handle(zapier_request(body.as_bytes(), authorization.as_deref()))
            .await;
        assert_rejected_and_nothing_stored(&stack, response, status, code).await;
    }
}

#[tokio::test]
async fn exotel_bad_input_catalog() {
    let stack = Stack::start().await;
    let exotel = stack.exotel_webhook();
    let good = format!(
        "CallSid=BADEXO&Status=completed&RecordingUrl={}&From=09876543210&To=09631084471",
        urlencode(&stack.recording_url("BADEXO"))
    );
    let token = format!("token={WEBHOOK_TOKEN}");
    let form = "application/x-www-form-urlencoded";
    let cases: Vec<(&str, String, String, &str, u16, &str)> = vec![
        (
            "no token",
            good.clone(),
            String::new(),
            form,
            401,
            "unauthorized",
        ),
        (
            "wrong token",
            good.clone(),
            "token=wrong".into(),
            form,
            401,
            "unauthorized",
        ),
        (
            "JSON instead of a form",
            "{\"CallSid\":\"BADEXO\"}".into(),
            token.clone(),
            "application/json",
            400,
            "invalid_form",
        ),
        (
            "form without CallSid",
            "Status=completed".into(),
            token.clone(),
            form,
            422,
            "missing_field",
        ),
        (
            "form without Status",
            "CallSid=BADEXO".into(),
            token.clone(),
            form,
            422,
            "missing_field",
        ),
        (
            "garbage form",
            "%%%&&&===".into(),
            token.clone(),
            form,
            422,
            "missing_field",
        ),
        (
            "bad From",
            format!("{good}&From=nope"),
            token.clone(),
            form,
            400,
            "invalid_form",
        ),
        (
            "bad date",
            "CallSid=BADEXO&Status=completed&DateUpdated=soon".into(),
            token.clone(),
            form,
            422,
            "invalid_timestamp",
        ),
        (
            "disallowed recording host",
            "CallSid=BADEXO&Status=completed&RecordingUrl=https%3A%2F%2F169.254.169.254%2Flatest"
                .into(),
            token.clone(),
            form,
            422,
            "recording_host_not_allowed",
        ),
        (
            "oversized body",
            format!("{good}&Pad={}", "x".repeat(70 * 1024)),
            token.clone(),
            form,
            413,
            "payload_too_large",
        ),
    ];
    for (name, body, query, content_type, status, code) in cases {
        println!("case: {name}");
        let response = exotel
            .handle(exotel_request(&body, &query, content_type))
            .await;
        assert_rejected_and_nothing_stored(&stack, response, status, code).await;
    }
}
