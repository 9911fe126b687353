//! Call-start notifications (seed 000): LiveKit's signed webhook and agents
//! reporting starts with an API key, Slack threads for the later transcript.

use shared::api::Route;
use std::sync::Arc;

use devstack::fakes::ScriptedResponse;
use futures_util::future::join_all;
use lambda_http::Request;
use shared::flows::notify::NotificationRoutes;
use shared::store::api_keys::{self, ApiKeyStore, DynamoApiKeyStore};
use shared::store::sessions::SessionStore;

use crate::support::*;

const LK_KEY: &str = "lk-test-key";
const LK_SECRET: &str = "lk-test-secret-0123456789abcdef";

impl Stack {
    fn livekit(&self) -> livekit_webhook::LiveKitWebhook {
        livekit_webhook::LiveKitWebhook {
            api_key: LK_KEY.into(),
            api_secret: shared::base::config::Secret::new(LK_SECRET),
            agent_identity_prefix: "agent-".into(),
            intake: self.call_start_intake(),
        }
    }

    fn api_keys(&self) -> DynamoApiKeyStore {
        DynamoApiKeyStore::new(self.dynamo.clone(), self.resources.table("ApiKeysTable"))
    }

    fn call_started(&self) -> call_started::CallStarted {
        call_started::CallStarted {
            api_keys: Arc::new(self.api_keys()),
            intake: self.call_start_intake(),
        }
    }
}

/// A `participant_joined` event in LiveKit's protobuf-JSON shape.
fn joined(
    event_id: &str,
    room: &str,
    identity: &str,
    metadata: Option<&str>,
    kind: &str,
) -> String {
    let mut participant = serde_json::json!({
        "sid": "PA_abc", "identity": identity, "name": "Alice", "state": "ACTIVE",
        "joinedAt": "1761833709", "kind": kind
    });
    if let Some(metadata) = metadata {
        participant["metadata"] = metadata.into();
    }
    serde_json::json!({
        "event": "participant_joined",
        "room": {"sid": "RM_xyz", "name": room, "emptyTimeout": 300, "creationTime": "1761833700"},
        "participant": participant,
        "id": event_id,
        "createdAt": "1761833709"
    })
    .to_string()
}

fn livekit_request(body: &str, authorization: Option<&str>) -> Request {
    let mut headers = vec![(
        "content-type".to_string(),
        "application/webhook+json".to_string(),
    )];
    if let Some(value) = authorization {
        headers.push(("authorization".into(), value.into()));
    }
    devstack::server::api_request(
        "POST",
        "/webhook/livekit",
        "/webhook/livekit",
        "",
        &headers,
        body.as_bytes(),
    )
}

fn signed(body: &str) -> String {
    devstack::livekit_webhook_token(body.as_bytes(), LK_KEY, LK_SECRET, 300)
}

#[tokio::test]
async fn a_caller_joining_posts_seed_000s_message_and_opens_a_thread() {
    let stack = Stack::start().await;
    let body = joined(
        "EV_1",
        "trial-user-12345",
        "alice",
        Some(r#"{"user_email":"alice@company.com"}"#),
        "STANDARD",
    );
    let response = stack
        .livekit()
        .handle(livekit_request(&body, Some(&signed(&body))))
        .await;
    assert_eq!(response.status(), 200, "{:?}", json_body(&response));
    assert_eq!(json_body(&response)["queued"], true);
    assert_eq!(stack.depth("NotificationQueue").await, 1);

    let notifier = stack.notify_worker(vec![stack.slack_bot()]);
    stack.run_notifications(&notifier).await;
    let posts = stack.slack.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0]["channel"], "#voice-agent-calls");
    assert_eq!(posts[0]["text"], "📞 New call started by alice@company.com");
    assert_eq!(
        posts[0]["blocks"][0]["text"]["text"],
        "*New Trial Call*\nRoom: `trial-user-12345`\nUser: alice@company.com\nTime: 02:15 PM UTC"
    );
    let session = stack
        .sessions()
        .get("trial-user-12345")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.user_email.as_deref(), Some("alice@company.com"));
    assert_eq!(
        session.thread_channel.as_deref(),
        Some("#voice-agent-calls")
    );
    assert!(session.thread_ts.is_some());
}

#[tokio::test]
async fn the_later_transcript_is_a_reply_in_the_call_start_thread() {
    let stack = Stack::start().await;
    let body = joined(
        "EV_T",
        "room-thread",
        "alice",
        Some(r#"{"user_email":"alice@company.com"}"#),
        "STANDARD",
    );
    stack
        .livekit()
        .handle(livekit_request(&body, Some(&signed(&body))))
        .await;
    let notifier = stack.notify_worker(vec![stack.slack_bot()]);
    stack.run_notifications(&notifier).await;
    let thread_ts = stack
        .sessions()
        .get("room-thread")
        .await
        .unwrap()
        .unwrap()
        .thread_ts
        .unwrap();

    let mut payload = seed_payload(&stack, "THREADCALL");
    payload["room_name"] = "room-thread".into();
    let response = stack
        .zapier()
        .handle(zapier_request(
            payload.to_string().as_bytes(),
            Some(&bearer(WEBHOOK_TOKEN)),
        ))
        .await;
    assert_eq!(response.status(), 202);
    stack.run_transcriptions().await;
    stack.run_notifications(&notifier).await;
    let posts = stack.slack.posts();
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[1]["thread_ts"], thread_ts.as_str());
    assert_eq!(posts[1]["channel"], "#voice-agent-calls");
    assert!(posts[1]["text"]
        .as_str()
        .unwrap()
        .starts_with("📞 Support Number:"));
}

#[tokio::test]
async fn bad_signatures_are_refused_and_nothing_is_queued() {
    let stack = Stack::start().await;
    let livekit = stack.livekit();
    let body = joined(
        "EV_BAD",
        "r1",
        "alice",
        Some(r#"{"user_email":"a@b.com"}"#),
        "STANDARD",
    );
    let tampered = body.replace("a@b.com", "evil@b.com");
    let wrong_secret =
        devstack::livekit_webhook_token(body.as_bytes(), LK_KEY, "another-secret-entirely", 300);
    let wrong_issuer =
        devstack::livekit_webhook_token(body.as_bytes(), "someone-else", LK_SECRET, 300);
    let expired = devstack::livekit_webhook_token(body.as_bytes(), LK_KEY, LK_SECRET, -120);
    let cases: Vec<(&str, &str, Option<String>)> = vec![
        ("missing header", &body, None),
        ("tampered body", &tampered, Some(signed(&body))),
        ("wrong secret", &body, Some(wrong_secret)),
        ("wrong issuer", &body, Some(wrong_issuer)),
        ("expired token", &body, Some(expired)),
        ("garbage token", &body, Some("abc.def.ghi".into())),
    ];
    for (name, payload, authorization) in cases {
        println!("case: {name}");
        let response = livekit
            .handle(livekit_request(payload, authorization.as_deref()))
            .await;
        assert_eq!(response.status(), 401, "{name}");
        assert_eq!(json_body(&response)["code"], "unauthorized");
        assert!(!json_body(&response).to_string().contains(LK_SECRET));
    }
    assert_eq!(stack.depth("NotificationQueue").await, 0);
    assert_eq!(stack.item_count("IdempotencyTable").await, 0);
    assert_eq!(stack.item_count("CallsTable").await, 0);

    // Signed but not a LiveKit event: a clear 400, still nothing stored.
    let junk = "{\"not\": \"an event\"";
    let response = livekit
        .handle(livekit_request(junk, Some(&signed(junk))))
        .await;
    assert_eq!(response.status(), 400);
    assert_eq!(json_body(&response)["code"], "invalid_json");
}

#[tokio::test]
async fn duplicate_events_notify_once_sequentially_and_concurrently() {
    let stack = Stack::start().await;
    let livekit = Arc::new(stack.livekit());
    let body = joined(
        "EV_DUP",
        "r-dup",
        "alice",
        Some(r#"{"user_email":"a@b.com"}"#),
        "STANDARD",
    );
    let token = signed(&body);
    let first = livekit.handle(livekit_request(&body, Some(&token))).await;
    assert_eq!(first.status(), 200);
    let again = livekit.handle(livekit_request(&body, Some(&token))).await;
    assert_eq!(again.status(), 200);
    assert_eq!(json_body(&again)["duplicate"], true);

    let body2 = joined("EV_CONC", "r-conc", "bob", None, "STANDARD");
    let token2 = signed(&body2);
    let statuses: Vec<u16> = join_all((0..30).map(|_| {
        let livekit = Arc::clone(&livekit);
        let (body, token) = (body2.clone(), token2.clone());
        tokio::spawn(async move {
            livekit
                .handle(livekit_request(&body, Some(&token)))
                .await
                .status()
                .as_u16()
        })
    }))
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(stack.depth("NotificationQueue").await, 2);
    let notifier = stack.notify_worker(vec![stack.slack_webhook()]);
    stack.run_notifications(&notifier).await;
    assert_eq!(stack.slack.posts().len(), 2);
}

#[tokio::test]
async fn missing_or_malformed_metadata_reads_unknown_and_agents_are_ignored() {
    let stack = Stack::start().await;
    let livekit = stack.livekit();
    for (id, metadata) in [
        ("EV_M1", None),
        ("EV_M2", Some("not json {")),
        ("EV_M3", Some(r#"{"other":1}"#)),
    ] {
        let body = joined(id, &format!("room-{id}"), "caller", metadata, "STANDARD");
        assert_eq!(
            livekit
                .handle(livekit_request(&body, Some(&signed(&body))))
                .await
                .status(),
            200
        );
    }
    for (id, identity, kind) in [
        ("EV_A1", "agent-voice-1", "STANDARD"),
        ("EV_A2", "pandadoc-bot", "AGENT"),
    ] {
        let body = joined(id, "room-agent", identity, None, kind);
        let response = livekit
            .handle(livekit_request(&body, Some(&signed(&body))))
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(json_body(&response)["ignored"], "agent participant");
    }
    let notifier = stack.notify_worker(vec![stack.slack_webhook()]);
    stack.run_notifications(&notifier).await;
    let posts = stack.slack.posts();
    assert_eq!(posts.len(), 3);
    assert!(posts
        .iter()
        .all(|p| p["text"] == "📞 New call started by Unknown"));
}

#[tokio::test]
async fn room_events_record_the_session() {
    let stack = Stack::start().await;
    let livekit = stack.livekit();
    let started = r#"{"event":"room_started","room":{"sid":"RM_1","name":"room-life","creationTime":"1761833700"},"id":"EV_S","createdAt":"1761833700"}"#;
    let finished = r#"{"event":"room_finished","room":{"sid":"RM_1","name":"room-life","creationTime":"1761833700"},"id":"EV_F","createdAt":"1761833825"}"#;
    let other = r#"{"event":"track_published","room":{"name":"room-life"},"id":"EV_O","createdAt":"1761833701"}"#;
    for body in [started, finished, other] {
        let response = livekit
            .handle(livekit_request(body, Some(&signed(body))))
            .await;
        assert_eq!(response.status(), 200);
    }
    let session = stack.sessions().get("room-life").await.unwrap().unwrap();
    assert_eq!(session.room_sid.as_deref(), Some("RM_1"));
    assert_eq!(session.started_at.as_deref(), Some("2025-10-30T14:15:00Z"));
    assert_eq!(session.ended_at.as_deref(), Some("2025-10-30T14:17:05Z"));
    assert_eq!(session.duration_secs, Some(125));
    assert_eq!(stack.depth("NotificationQueue").await, 0);
}

#[tokio::test]
async fn slack_errors_on_call_start_retry_or_dead_letter() {
    let stack = Stack::start().await;
    let livekit = stack.livekit();
    let body = joined("EV_429", "room-429", "alice", None, "STANDARD");
    livekit
        .handle(livekit_request(&body, Some(&signed(&body))))
        .await;
    stack.slack.push_response(ScriptedResponse::RateLimited {
        retry_after_secs: 1,
    });
    let notifier = stack.notify_worker(vec![stack.slack_bot()]);
    stack.run_notifications(&notifier).await;
    assert_eq!(stack.slack.attempts(), 2);
    assert_eq!(stack.slack.posts().len(), 1);

    let body = joined("EV_NIC", "room-nic", "alice", None, "STANDARD");
    livekit
        .handle(livekit_request(&body, Some(&signed(&body))))
        .await;
    stack
        .slack
        .set_always(Some(ScriptedResponse::BotError("not_in_channel".into())));
    stack.run_notifications(&notifier).await;
    assert_eq!(stack.slack.attempts(), 3);
    let dead = stack.peek("NotificationDLQ").await;
    assert_eq!(dead.len(), 1);
    assert!(dead[0].contains("room-nic"));
}

#[tokio::test]
async fn call_start_email_goes_through_ses() {
    let stack = Stack::start().await;
    let body = joined(
        "EV_MAIL",
        "room-mail",
        "alice",
        Some(r#"{"user_email":"alice@company.com"}"#),
        "STANDARD",
    );
    stack
        .livekit()
        .handle(livekit_request(&body, Some(&signed(&body))))
        .await;
    let ses = local().ses().await;
    let address = format!(
        "calls-{}@example.com",
        stack.resources.table("CallsTable").to_lowercase()
    );
    ses.create_email_identity()
        .email_identity(&address)
        .send()
        .await
        .unwrap();
    let email: Arc<dyn shared::flows::notify::NotificationChannel> =
        Arc::new(shared::providers::ses::SesEmailChannel {
            client: ses,
            from: address.clone(),
            to: address.clone(),
        });
    stack
        .run_notifications(&stack.notify_worker(vec![email, stack.slack_webhook()]))
        .await;
    let sent: Vec<_> = local()
        .sent_emails()
        .await
        .unwrap()
        .into_iter()
        .filter(|(from, _, _)| *from == address)
        .collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1, "New Call: alice@company.com");
    assert_eq!(
        sent[0].2,
        "Call started in room room-mail at 2025-10-30T14:15:09Z"
    );
    // Both channels at once.
    assert_eq!(stack.slack.posts().len(), 1);
}

#[tokio::test]
async fn routing_rules_pick_the_slack_channel_by_metadata() {
    let stack = Stack::start().await;
    let body = joined(
        "EV_VIP",
        "room-vip",
        "alice",
        Some(r#"{"user_email":"a@b.com","tier":"enterprise"}"#),
        "STANDARD",
    );
    stack
        .livekit()
        .handle(livekit_request(&body, Some(&signed(&body))))
        .await;
    let plain = joined(
        "EV_STD",
        "room-std",
        "bob",
        Some(r#"{"tier":"trial"}"#),
        "STANDARD",
    );
    stack
        .livekit()
        .handle(livekit_request(&plain, Some(&signed(&plain))))
        .await;
    let mut worker = Arc::try_unwrap(stack.notify_worker(vec![stack.slack_bot()]))
        .ok()
        .unwrap();
    worker.routes = NotificationRoutes::parse(
        r##"[{"field":"tier","equals":"enterprise","slack_channel":"#vip-calls"}]"##,
    )
    .unwrap();
    stack.run_notifications(&Arc::new(worker)).await;
    let mut channels: Vec<String> = stack
        .slack
        .posts()
        .iter()
        .map(|p| p["channel"].as_str().unwrap().to_string())
        .collect();
    channels.sort();
    assert_eq!(channels, vec!["#vip-calls", "#voice-agent-calls"]);
}

fn started_request(body: &str, key: Option<&str>) -> Request {
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    if let Some(key) = key {
        headers.push(("x-api-key".into(), key.into()));
    }
    devstack::server::api_request(
        "POST",
        "/calls/started",
        "/calls/started",
        "",
        &headers,
        body.as_bytes(),
    )
}

#[tokio::test]
async fn agents_report_call_starts_with_an_api_key() {
    let stack = Stack::start().await;
    let (key, record) = api_keys::generate("agent", "acme");
    stack.api_keys().insert(&record).await.unwrap();
    let endpoint = stack.call_started();
    let body = r#"{"room_name": "agent-room-1", "user_email": "carol@example.com", "metadata": {"tier": "trial"}}"#;

    let response = endpoint.handle(started_request(body, Some(&key))).await;
    assert_eq!(response.status(), 202, "{:?}", json_body(&response));
    assert_eq!(
        json_body(&response)["message"],
        "Call start notification queued"
    );
    let again = endpoint.handle(started_request(body, Some(&key))).await;
    assert_eq!(again.status(), 200);
    assert_eq!(json_body(&again)["duplicate"], true);
    stack
        .run_notifications(&stack.notify_worker(vec![stack.slack_webhook()]))
        .await;
    let posts = stack.slack.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0]["text"], "📞 New call started by carol@example.com");

    // Bad keys and bad bodies change nothing.
    let depth_before = stack.depth("NotificationQueue").await;
    let (other_key, _) = api_keys::generate("never stored", "acme");
    let forged = format!("cok_{}_{}", record.key_id, "0".repeat(64));
    for (name, key) in [
        ("no key", None),
        ("unknown key", Some(other_key.as_str())),
        ("forged secret", Some(forged.as_str())),
        ("garbage", Some("hello")),
    ] {
        let response = endpoint
            .handle(started_request(r#"{"room_name":"x"}"#, key))
            .await;
        assert_eq!(response.status(), 401, "{name}");
    }
    let missing_room = endpoint
        .handle(started_request(r#"{"user_email":"a@b.com"}"#, Some(&key)))
        .await;
    assert_eq!(missing_room.status(), 422);
    assert_eq!(json_body(&missing_room)["detail"], "room_name is required");
    let malformed = endpoint.handle(started_request("{nope", Some(&key))).await;
    assert_eq!(malformed.status(), 400);

    // A revoked key stops working at once.
    assert!(stack.api_keys().revoke(&record.key_id).await.unwrap());
    let revoked = endpoint
        .handle(started_request(
            r#"{"room_name":"agent-room-2"}"#,
            Some(&key),
        ))
        .await;
    assert_eq!(revoked.status(), 401);
    assert_eq!(stack.depth("NotificationQueue").await, depth_before);
}

#[tokio::test]
async fn one_room_reported_by_livekit_twice_and_by_the_agent_notifies_once() {
    let stack = Stack::start().await;
    let (key, record) = api_keys::generate("agent", "acme");
    stack.api_keys().insert(&record).await.unwrap();
    let livekit = stack.livekit();
    // LiveKit retries with a new event id; the agent reports the same room too.
    for event_id in ["EV_ROOM_A", "EV_ROOM_B"] {
        let body = joined(event_id, "shared-room", "alice", None, "STANDARD");
        let response = livekit
            .handle(livekit_request(&body, Some(&signed(&body))))
            .await;
        assert_eq!(response.status(), 200, "{:?}", json_body(&response));
    }
    let reported = stack
        .call_started()
        .handle(started_request(
            r#"{"room_name": "shared-room"}"#,
            Some(&key),
        ))
        .await;
    assert!(reported.status().is_success(), "{}", reported.status());
    assert_eq!(json_body(&reported)["duplicate"], true);

    assert_eq!(stack.depth("NotificationQueue").await, 1);
    stack
        .run_notifications(&stack.notify_worker(vec![stack.slack_webhook()]))
        .await;
    assert_eq!(stack.slack.posts().len(), 1);
}

/// The operations each delivery made, as the counting proxy saw them.
fn operations_of(meter: &devstack::bench_cost::Meter) -> Vec<Vec<String>> {
    meter
        .per_invocation()
        .iter()
        .map(|calls| calls.iter().map(|c| c.operation.clone()).collect())
        .collect()
}

#[tokio::test]
async fn a_start_is_acknowledged_after_one_write_and_carried_out_from_the_stream() {
    let mut stack = Stack::start().await;
    let (key, record) = api_keys::generate("agent", "acme");
    stack.api_keys().insert(&record).await.unwrap();
    let meter =
        devstack::bench_cost::Meter::start(local().dynamodb_endpoint(), local().moto_endpoint());
    stack.dynamo = local().dynamodb_at(meter.dynamodb_url()).await;
    stack.sqs = local().sqs_at(meter.moto_url()).await;
    let livekit = stack.livekit();
    let agent = stack.call_started();

    meter.begin_invocation();
    let body = joined("EV_ONE", "one-write-room", "alice", None, "STANDARD");
    let first = livekit
        .handle(livekit_request(&body, Some(&signed(&body))))
        .await;
    assert_eq!(first.status(), 200, "{:?}", json_body(&first));
    meter.begin_invocation();
    let body = joined("EV_TWO", "one-write-room", "bob", None, "STANDARD");
    let later = livekit
        .handle(livekit_request(&body, Some(&signed(&body))))
        .await;
    assert_eq!(json_body(&later)["duplicate"], true);
    meter.begin_invocation();
    let reported = agent
        .handle(started_request(
            r#"{"room_name": "agent-one-write"}"#,
            Some(&key),
        ))
        .await;
    assert_eq!(reported.status(), 202, "{:?}", json_body(&reported));

    let runs = operations_of(&meter);
    // LiveKit's first report: the start record, nothing else.
    assert_eq!(runs[0], ["PutItem"]);
    // A later participant: the refused write (DynamoDB Local leaves the
    // record out of the refusal, so it is read once), then its place in a
    // typed session's list.
    assert_eq!(runs[1], ["PutItem", "GetItem", "UpdateItem"]);
    // The agent's report: its key, then the room's claim and the start in
    // one transaction. Nothing is queued by either route.
    assert_eq!(
        runs[2].last().map(String::as_str),
        Some("TransactWriteItems")
    );
    assert_eq!(
        runs[2].iter().filter(|op| op.contains("Message")).count(),
        0,
        "{:?}",
        runs[2]
    );
    assert_eq!(stack.raw_depth("NotificationQueue").await, 0);

    // The stream carries both starts out: the caller on the session, the
    // agent's session marked reported, one notification each.
    let report = stack.run_calls_stream().await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(stack.raw_depth("NotificationQueue").await, 2);
    let sessions = stack.sessions();
    let session = sessions.get("one-write-room").await.unwrap().unwrap();
    assert_eq!(session.participant_identity.as_deref(), Some("alice"));
    let reported = sessions.get("agent-one-write").await.unwrap().unwrap();
    assert_eq!(reported.reported_by.as_deref(), Some("acme"));
}

#[tokio::test]
async fn a_start_the_stream_cannot_carry_out_is_retried_then_given_to_the_dlq() {
    let stack = Stack::start().await;
    let livekit = stack.livekit();
    let body = joined("EV_DLQ", "stream-dlq-room", "alice", None, "STANDARD");
    let first = livekit
        .handle(livekit_request(&body, Some(&signed(&body))))
        .await;
    assert_eq!(first.status(), 200);
    let missing = format!("{}-missing", stack.resources.queue("NotificationQueue"));
    let dispatcher = shared::flows::call_stream::NewCallRecords {
        notification_queue: Arc::new(shared::queue::jobs::SqsJobQueue::new(
            stack.sqs.clone(),
            missing,
        )),
        ..stack.new_call_records()
    };
    let report = stack.run_calls_stream_with(dispatcher).await;
    assert_eq!((report.delivered, report.on_failure.len()), (6, 1));
    assert_eq!(stack.raw_depth("CallsStreamDLQ").await, 1);
    assert_eq!(stack.raw_depth("NotificationQueue").await, 0);
}

#[tokio::test]
async fn a_start_whose_stream_event_was_lost_is_carried_out_once_by_the_sweep() {
    let stack = Stack::start().await;
    let livekit = stack.livekit();
    for (event, room) in [
        ("EV_LOST", "lost-start-room"),
        ("EV_KEPT", "kept-start-room"),
    ] {
        let body = joined(
            event,
            room,
            "alice",
            Some(r#"{"user_email":"a@b.com"}"#),
            "STANDARD",
        );
        let response = livekit
            .handle(livekit_request(&body, Some(&signed(&body))))
            .await;
        assert_eq!(response.status(), 200);
        if room == "lost-start-room" {
            // Read from the stream and dropped, as a batch given up on.
            assert_eq!(stack.lose_calls_stream_events().await.delivered, 1);
        }
    }
    // The kept one is carried out (and leaves the watch) by the stream.
    assert_eq!(stack.depth("NotificationQueue").await, 1);
    let sweep = stack.stuck_starts();
    let now = shared::base::time::epoch_secs();
    assert!(sweep.sweep(now, 100).await.unwrap().redriven.is_empty());
    let later = now + 601;
    let report = sweep.sweep(later, 100).await.unwrap();
    assert_eq!(report.redriven, ["lost-start-room"]);
    assert_eq!(stack.depth("NotificationQueue").await, 2);
    let session = stack
        .sessions()
        .get("lost-start-room")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.user_email.as_deref(), Some("a@b.com"));
    // Settled: the next look finds nothing, and the sweep's own removal of
    // the watch is no new start for the stream.
    assert!(sweep
        .sweep(later + 601, 100)
        .await
        .unwrap()
        .redriven
        .is_empty());
    assert_eq!(stack.depth("NotificationQueue").await, 2);
    stack
        .run_notifications(&stack.notify_worker(vec![stack.slack_webhook()]))
        .await;
    assert_eq!(stack.slack.posts().len(), 2);
}
