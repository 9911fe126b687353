//! Every event callops sends to an organisation's webhook endpoints, built
//! by the code that builds it (`shared::flows::webhooks::events`, the
//! endpoints API's `webhook.test`, the worker's `webhook.endpoint.disabled`),
//! validated against `webhooks.<type>.post.requestBody` of
//! `shared/openapi.json`: a field added, renamed or made nullable without
//! the document fails here, and so does an event type without its entry.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use shared::base::end_reason::EndReason;
use shared::flows::webhooks::{
    events, WebhookEvent, WebhookJob, EVENT_TYPES, INLINE_TRANSCRIPT_MAX,
};
use shared::queue::jobs::{CallStart, JobQueue, QueueError};
use shared::store::calls::CallRecord;
use shared::store::outbound_calls::OutboundCall;
use shared::store::sessions::SessionRecord;

use crate::openapi::{document, errors_of, resolve, validator};
use crate::support::*;

const ORG: &str = "acme";

/// The request-body schema the document gives for events of `event_type`.
fn schema_of<'a>(doc: &'a Value, event_type: &str) -> &'a Value {
    let operation = &doc["webhooks"][event_type]["post"];
    assert!(
        operation.is_object(),
        "webhooks.{event_type}.post is not documented"
    );
    let body = resolve(doc, &operation["requestBody"]);
    &body["content"]["application/json"]["schema"]
}

/// Asserts the event's envelope, as sent, validates against its type's
/// schema; returns the envelope.
fn check(doc: &Value, event: &WebhookEvent) -> Value {
    let envelope: Value = serde_json::from_str(&event.envelope()).expect("the envelope is JSON");
    let schema = schema_of(doc, &event.event_type);
    let errors = errors_of(&validator(doc, schema), &envelope);
    assert!(
        errors.is_empty(),
        "{} does not match webhooks.{}: {errors:#?}\n{envelope:#}",
        event.event_type,
        event.event_type
    );
    envelope
}

fn call_start(user_email: Option<&str>, metadata: Value) -> CallStart {
    CallStart {
        room_name: "support-room-42".into(),
        user_email: user_email.map(str::to_string),
        started_at: "2026-12-06T10:00:00Z".into(),
        metadata: metadata.as_object().cloned().unwrap_or_default(),
    }
}

/// A phone session as it starts, and as it ends.
fn phone_session() -> (SessionRecord, SessionRecord) {
    let started = SessionRecord {
        room_name: "phone-CA0123456789abcdef0123456789abcdef".into(),
        session_id: Some("phone-CA0123456789abcdef0123456789abcdef".into()),
        session_type: Some("phone".into()),
        org_id: Some(ORG.into()),
        status: Some("active".into()),
        call_sid: Some("CA0123456789abcdef0123456789abcdef".into()),
        direction: Some("inbound".into()),
        from_number: Some("+14155550100".into()),
        to_number: Some("+14155550199".into()),
        started_at: Some("2026-12-06T10:00:00Z".into()),
        ..SessionRecord::default()
    };
    let ended = SessionRecord {
        status: Some("ended".into()),
        ended_at: Some("2026-12-06T10:06:40Z".into()),
        duration_secs: Some(400),
        end_code: Some(EndReason::CallerHangup),
        end_reason: Some("room_finished".into()),
        ..started.clone()
    };
    (started, ended)
}

/// A seed-000 room known only from LiveKit: no kind, no numbers, no times.
fn livekit_only_session() -> SessionRecord {
    SessionRecord {
        room_name: "support-room-42".into(),
        org_id: Some(ORG.into()),
        ..SessionRecord::default()
    }
}

fn twilio_call(transcript: Value) -> OutboundCall {
    serde_json::from_value(json!({
        "call_id": "oc_0123456789abcdef0123456789abcdef",
        "provider": "twilio",
        "assistant_id": 1,
        "org_id": ORG,
        "to_number": "+14155552671",
        "from_number": "+14155550100",
        "agenda": "Confirm the delivery slot",
        "call_sid": "CA0123456789abcdef0123456789abcdef",
        "status": "completed",
        "duration_secs": 245,
        "transcript": transcript,
        "status_history": [
            {"status": "queued", "at": "2026-12-06T10:00:01Z"},
            {"status": "in-progress", "at": "2026-12-06T10:00:09Z"},
            {"status": "completed", "at": "2026-12-06T10:04:05Z"}
        ],
        "created_at": "2026-12-06T10:00:00Z",
        "usage_counted": true,
        "end_reason": "caller_hangup",
        "reconciled": true
    }))
    .expect("an outbound call record")
}

/// An ElevenLabs call that never connected: no caller id, assistant,
/// duration, end reason, statuses or transcript.
fn bare_elevenlabs_call() -> OutboundCall {
    serde_json::from_value(json!({
        "call_id": "conv_01jabcdef0123456789",
        "provider": "elevenlabs",
        "org_id": ORG,
        "to_number": "+14155552671",
        "conversation_id": "conv_01jabcdef0123456789",
        "status": "failed",
        "failure_reason": "ElevenLabs refused the call",
        "created_at": "2026-12-06T10:00:00Z"
    }))
    .expect("an outbound call record")
}

fn recorded_call(call_id: &str, extra: Value) -> CallRecord {
    let mut record = json!({
        "call_id": call_id,
        "org_id": ORG,
        "source": "exotel",
        "from_number": "09876543210",
        "to_number": "09631084471",
        "duration": 105,
        "recording_url": "https://recordings.exotel.com/exotelrecordings/acme/EXO123456.mp3",
        "timestamp": "2026-12-06T09:15:00Z",
        "processed_at": "2026-12-06T09:21:30Z",
        "status": "notified",
        "call_status": "completed",
        "direction": "incoming",
        "agent_name": "Priya",
        "received_at": "2026-12-06T09:15:02Z"
    });
    for (key, value) in extra.as_object().unwrap() {
        record[key] = value.clone();
    }
    serde_json::from_value(record).expect("a call record")
}

/// The `webhook.test` event as `WebhookApi::test` builds it (admin.rs); the
/// tokio test below takes the one the API really queues.
fn test_event() -> WebhookEvent {
    WebhookEvent::new(
        ORG,
        "webhook.test",
        "ep_0e26f370b56256f2c7dc#5f0c3e9a1b2d4c6e8f0a1b2c3d4e5f60",
        "2026-12-06T09:31:00Z",
        json!({"endpoint_id": "ep_0e26f370b56256f2c7dc", "message": "A test event from callops"}),
    )
}

/// `webhook.endpoint.disabled` as `Dispatcher::disable` builds it
/// (dispatch.rs); the tokio test below takes the one the worker publishes.
fn disabled_event(reason: &str, detail: &str) -> WebhookEvent {
    WebhookEvent::new(
        ORG,
        "webhook.endpoint.disabled",
        "webhook-disabled#ep_c4d1e7d4193f30282254#1796371202",
        "2026-12-04T08:00:02Z",
        json!({"endpoint_id": "ep_c4d1e7d4193f30282254", "reason": reason, "detail": detail}),
    )
}

#[test]
fn every_event_the_builders_produce_matches_the_webhooks_section() {
    let doc = document();
    let documented: BTreeSet<&str> = doc["webhooks"]
        .as_object()
        .expect("a `webhooks` section")
        .keys()
        .map(String::as_str)
        .collect();
    let known: BTreeSet<&str> = EVENT_TYPES.into_iter().collect();
    assert_eq!(documented, known, "the keys of `webhooks` are EVENT_TYPES");

    let transcript = json!([
        {"role": "agent", "message": "Hello, this is Sarah from Acme.", "time_in_call_secs": 0},
        {"role": "user", "message": "Hi, I was calling about my order.", "time_in_call_secs": 4}
    ]);
    let long_line = "x".repeat(INLINE_TRANSCRIPT_MAX);
    let long_transcript = json!([{"role": "agent", "message": long_line}]);
    let (started, ended) = phone_session();
    let failed = recorded_call(
        "EXO123457",
        json!({"status": "failed", "failure_reason": "Recording could not be downloaded"}),
    );
    let scoped = recorded_call(
        &shared::store::calls::scoped_call_id(ORG, "ZAP-77"),
        json!({"source": "zapier", "direction": "outgoing", "duration": null,
            "recording_url": null, "call_status": null, "processed_at": null}),
    );

    let mut built: Vec<WebhookEvent> = vec![
        events::call_started(
            ORG,
            "call-start#support-room-42",
            &call_start(Some("alice@company.com"), json!({"tier": "trial"})),
        ),
        events::call_started(
            ORG,
            "call-start#support-room-43",
            &call_start(None, json!({})),
        ),
        events::session_started(ORG, &started),
        events::session_ended(ORG, &ended),
        events::session_started(ORG, &livekit_only_session()),
        events::session_ended(ORG, &livekit_only_session()),
        events::whatsapp_received(
            ORG,
            "SM0123456789abcdef0123456789abcdef",
            "whatsapp:+14155550100",
            Some("whatsapp:+14155552671"),
            "Is my order shipped?",
            0,
        ),
        events::whatsapp_received(ORG, "SM1", "whatsapp:+14155550100", None, "", 2),
        events::whatsapp_reply_sent(
            ORG,
            "SM0123456789abcdef0123456789abcdef",
            "SMfedcba9876543210fedcba9876543210",
            "whatsapp:+14155550100",
        ),
        events::usage_threshold(ORG, "2026-12", 80, 28_900, 36_000),
        events::usage_threshold(ORG, "2026-12", 100, 36_020, 36_000),
        test_event(),
        disabled_event("gone", "it answered 410 Gone"),
        disabled_event(
            "failing",
            "every attempt has failed since 2026-11-29T08:00:00Z",
        ),
    ];
    built.extend(events::outbound_ended(ORG, &twilio_call(transcript)));
    built.extend(events::outbound_ended(ORG, &twilio_call(long_transcript)));
    built.extend(events::outbound_ended(ORG, &bare_elevenlabs_call()));
    built.extend(events::recorded_call_transcribed(
        ORG,
        &recorded_call("EXO123456", json!({})),
        "Speaker A: Hello\nSpeaker B: Hi, my order has not arrived.",
    ));
    built.extend(events::recorded_call_transcribed(
        ORG,
        &scoped,
        &"Speaker A: words ".repeat(5_000),
    ));
    built.extend(events::recorded_call_failed(ORG, &failed));
    built.extend(events::recorded_call_failed(
        ORG,
        &recorded_call("EXO123458", json!({"status": "failed"})),
    ));

    let mut covered = BTreeSet::new();
    for event in &built {
        let envelope = check(&doc, event);
        assert_eq!(envelope["id"], event.id.as_str());
        covered.insert(event.event_type.as_str());
    }
    assert_eq!(covered, known, "an event type no builder above produced");

    // Both shapes of a transcript: inline, and linked once over 64 KiB.
    let ready: Vec<Value> = built
        .iter()
        .filter(|e| e.event_type == "call.transcript.ready")
        .map(|e| e.data.clone())
        .collect();
    assert!(ready.iter().any(|d| d["transcript"].is_string()));
    assert!(ready
        .iter()
        .any(|d| d["transcript"].is_null() && d["transcript_bytes"].is_u64()));

    // The schemas are closed: an unknown field, a missing one or a wrong
    // type is refused, so the checks above mean something.
    let event = events::usage_threshold(ORG, "2026-12", 80, 28_900, 36_000);
    let validator = validator(&doc, schema_of(&doc, "usage.threshold"));
    let envelope: Value = serde_json::from_str(&event.envelope()).unwrap();
    for (field, value) in [
        ("surprise", json!(true)),
        ("threshold_percent", json!(90)),
        ("used_seconds", json!("28900")),
    ] {
        let mut changed = envelope.clone();
        changed["data"][field] = value;
        assert!(
            !errors_of(&validator, &changed).is_empty(),
            "{field} accepted"
        );
    }
    let mut missing = envelope.clone();
    missing["data"].as_object_mut().unwrap().remove("month");
    assert!(
        !errors_of(&validator, &missing).is_empty(),
        "no month accepted"
    );
}

/// Every job sent, instead of SQS.
#[derive(Default)]
struct Captured {
    bodies: Mutex<Vec<String>>,
}

#[async_trait]
impl JobQueue for Captured {
    async fn send_raw(&self, body: String, _delay: Duration) -> Result<(), QueueError> {
        self.bodies.lock().unwrap().push(body);
        Ok(())
    }
}

impl Captured {
    fn take(&self) -> Vec<WebhookJob> {
        self.bodies
            .lock()
            .unwrap()
            .drain(..)
            .map(|body| serde_json::from_str(&body).expect("a webhook job"))
            .collect()
    }
}

/// An endpoint that answers 410 Gone to everything.
struct Gone;

#[async_trait]
impl shared::flows::webhooks::sender::WebhookSender for Gone {
    async fn post(
        &self,
        _url: &str,
        _headers: &[(String, String)],
        _body: &str,
    ) -> shared::flows::webhooks::sender::Answer {
        shared::flows::webhooks::sender::Answer {
            status: Some(410),
            body: None,
            error: Some("answered 410".into()),
            latency_ms: 3,
        }
    }
}

/// `webhook.test` as the endpoints API queues it, and the
/// `webhook.endpoint.disabled` the worker publishes when that test is
/// answered 410: the real producers of the two events no builder makes.
#[tokio::test]
async fn the_test_and_disabled_events_the_api_and_worker_send_match_the_document() {
    use shared::base::time::{Clock, SystemClock};
    use shared::flows::webhooks::admin::WebhookApi;
    use shared::flows::webhooks::dispatch::{DeliverySettings, Dispatcher, Lane, Replayer};
    use shared::flows::webhooks::sender::UrlPolicy;
    use shared::store::api_keys::{self, ApiKeyStore, DynamoApiKeyStore};
    use shared::store::webhooks::{DynamoWebhookStore, WebhookStore};

    let doc = document();
    let stack = Stack::start().await;
    let store: Arc<dyn WebhookStore> = Arc::new(DynamoWebhookStore::new(
        stack.dynamo.clone(),
        stack.resources.table("WebhooksTable"),
    ));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let main = Arc::new(Captured::default());
    let slow = Arc::new(Captured::default());
    let api = WebhookApi {
        access: stack.keyed_access(),
        store: Arc::clone(&store),
        replayer: Replayer {
            store: Arc::clone(&store),
            main_queue: main.clone(),
            slow_queue: slow.clone(),
            clock: Arc::clone(&clock),
        },
        main_queue: main.clone(),
        policy: UrlPolicy { loopback: true },
        clock: Arc::clone(&clock),
        recover_batch: shared::flows::webhooks::admin::MAX_RECOVER,
    };
    let keys = DynamoApiKeyStore::new(stack.dynamo.clone(), stack.resources.table("ApiKeysTable"));
    let (key, record) = api_keys::generate("webhook-payloads", ORG);
    keys.insert(&record).await.unwrap();
    let headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("x-api-key".to_string(), key.clone()),
    ];
    // A description always: DynamoDB Local refuses the empty string an
    // endpoint without one is stored with.
    let body = json!({"url": "http://127.0.0.1:9/gone", "description": "gone"}).to_string();
    let route = "/webhook-endpoints";
    let created = api
        .handle(devstack::server::api_request(
            "POST",
            route,
            route,
            "",
            &headers,
            body.as_bytes(),
        ))
        .await;
    assert_eq!(created.status(), 201);
    let created: Value = serde_json::from_slice(created.body().as_ref()).unwrap();
    let endpoint_id = created["endpoint_id"].as_str().unwrap();
    let path = format!("/webhook-endpoints/{endpoint_id}/test");
    let queued = api
        .handle(devstack::server::api_request(
            "POST",
            "/webhook-endpoints/{endpoint_id}/test",
            &path,
            "",
            &headers,
            b"",
        ))
        .await;
    assert_eq!(queued.status(), 202);

    let jobs = main.take();
    let [job @ WebhookJob::Event { event: test, only }] = jobs.as_slice() else {
        panic!("one event queued: {jobs:?}");
    };
    assert_eq!(only.as_deref(), Some(endpoint_id));
    assert_eq!(check(&doc, test)["data"]["endpoint_id"], endpoint_id);

    // The worker sends it; the endpoint answers 410 and is disabled.
    let dispatcher = Dispatcher {
        store: Arc::clone(&store),
        sender: Arc::new(Gone),
        main_queue: main.clone(),
        slow_queue: slow.clone(),
        notification_queue: None,
        clock: Arc::clone(&clock),
        settings: DeliverySettings::default(),
    };
    dispatcher.handle(job.clone(), Lane::Main).await.unwrap();
    let attempts: Vec<WebhookJob> = main.take().into_iter().chain(slow.take()).collect();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    for attempt in attempts {
        dispatcher.handle(attempt, Lane::Main).await.unwrap();
    }
    let published = main.take();
    let disabled = published
        .iter()
        .find_map(|job| match job {
            WebhookJob::Event { event, .. } if event.event_type == "webhook.endpoint.disabled" => {
                Some(event)
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no webhook.endpoint.disabled published: {published:?}"));
    let envelope = check(&doc, disabled);
    assert_eq!(envelope["data"]["endpoint_id"], endpoint_id);
    assert_eq!(envelope["data"]["reason"], "gone");
}
