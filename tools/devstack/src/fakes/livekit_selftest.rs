//! The real LiveKit client (`shared::providers::livekit`) against the fake:
//! what one sends the other accepts, grants are enforced per call, and
//! failures reach the client as the errors the session flows act on.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use shared::base::config::Secret;
use shared::providers::livekit::{
    AccessTokens, JoinGrant, LiveKitClient, LiveKitError, LiveKitRooms, RecordingTarget,
};

use super::FakeLiveKit;

const KEY: &str = "APItestkey";
const SECRET: &str = "test-livekit-secret-0123456789abcdef";

fn tokens(secret: &str) -> AccessTokens {
    AccessTokens {
        api_key: KEY.into(),
        api_secret: Secret::new(secret),
    }
}

fn client_at(url: &str, secret: &str) -> LiveKitClient {
    LiveKitClient {
        http: reqwest::Client::new(),
        api_url: url.into(),
        tokens: tokens(secret),
        empty_timeout_secs: 300,
    }
}

fn started() -> (FakeLiveKit, LiveKitClient) {
    let fake = FakeLiveKit::start(KEY, SECRET);
    let client = client_at(fake.url(), SECRET);
    (fake, client)
}

fn target(key: &str) -> RecordingTarget {
    RecordingTarget {
        bucket: "callops-recordings".into(),
        region: "eu-west-1".into(),
        key: key.into(),
        assume_role_arn: Some("arn:aws:iam::123456789012:role/livekit-egress".into()),
        assume_role_external_id: Some("ext-42".into()),
    }
}

/// POSTs `body` to a Twirp method with `token`; the status and Twirp body.
async fn raw_call(
    fake: &FakeLiveKit,
    method: &str,
    token: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/twirp/{method}", fake.url()))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.expect("Twirp answers JSON"))
}

#[tokio::test]
async fn rooms_are_created_idempotently_listed_and_deleted() {
    let (fake, client) = started();
    assert_eq!(
        client.client_url(),
        fake.url().replacen("http://", "ws://", 1)
    );

    let room = client
        .create_room("web-demo-1", "{\"org\":\"acme\"}")
        .await
        .unwrap();
    assert!(room.sid.starts_with("RM_"), "{room:?}");
    assert_eq!(room.name, "web-demo-1");
    assert_eq!(room.metadata, "{\"org\":\"acme\"}");
    let again = client.create_room("web-demo-1", "other").await.unwrap();
    assert_eq!(again, room, "CreateRoom returns the existing room");
    assert_eq!(fake.rooms(), vec!["web-demo-1".to_owned()]);

    // What went over the wire: Twirp JSON, protobuf field names, a room-create grant.
    let sent = &fake.requests()[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, "/twirp/livekit.RoomService/CreateRoom");
    assert_eq!(
        sent.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        sent.json(),
        json!({"name": "web-demo-1", "empty_timeout": 300, "metadata": "{\"org\":\"acme\"}"})
    );

    assert!(client
        .list_participants("web-demo-1")
        .await
        .unwrap()
        .is_empty());
    fake.add_participant("web-demo-1", "caller-1", "STANDARD");
    let participants = client.list_participants("web-demo-1").await.unwrap();
    assert_eq!(participants.len(), 1);
    assert_eq!(participants[0].identity, "caller-1");
    assert!(participants[0].sid.starts_with("PA_"));
    assert!(!participants[0].is_agent("agent-"));

    client
        .remove_participant("web-demo-1", "caller-1")
        .await
        .unwrap();
    assert!(fake.participants("web-demo-1").is_empty());
    client
        .remove_participant("web-demo-1", "caller-1")
        .await
        .expect("removing someone already gone is Ok");

    client.delete_room("web-demo-1").await.unwrap();
    assert!(!fake.room_exists("web-demo-1"));
    client
        .delete_room("web-demo-1")
        .await
        .expect("deleting a missing room is Ok");
    assert!(matches!(
        client.list_participants("web-demo-1").await,
        Err(LiveKitError::NotFound(_))
    ));
    assert!(matches!(
        client.remove_participant("no-such-room", "x").await,
        Ok(())
    ));
}

#[tokio::test]
async fn a_dispatch_brings_the_agent_and_deleting_it_takes_the_agent_away() {
    let (fake, client) = started();
    let dispatch = client
        .create_dispatch("web-demo-2", "callops-agent", "{\"session\":\"s1\"}")
        .await
        .unwrap();
    assert!(dispatch.id.starts_with("AD_"), "{dispatch:?}");
    assert_eq!(dispatch.agent_name, "callops-agent");
    assert_eq!(dispatch.room, "web-demo-2");
    assert_eq!(dispatch.metadata, "{\"session\":\"s1\"}");
    assert!(
        fake.room_exists("web-demo-2"),
        "explicit dispatch creates the room"
    );

    let participants = client.list_participants("web-demo-2").await.unwrap();
    assert_eq!(participants.len(), 1);
    assert_eq!(participants[0].identity, format!("agent-{}", dispatch.id));
    assert_eq!(participants[0].kind, "AGENT");
    assert!(participants[0].is_agent(""));

    assert_eq!(
        client.list_dispatches("web-demo-2").await.unwrap(),
        vec![dispatch.clone()]
    );
    assert!(client
        .list_dispatches("no-such-room")
        .await
        .unwrap()
        .is_empty());

    client
        .delete_dispatch("web-demo-2", &dispatch.id)
        .await
        .unwrap();
    assert!(fake.dispatches("web-demo-2").is_empty());
    assert!(fake.participants("web-demo-2").is_empty(), "the agent left");
    client
        .delete_dispatch("web-demo-2", &dispatch.id)
        .await
        .expect("deleting a dispatch already gone is Ok");

    fake.set_agent_joins(false);
    let quiet = client
        .create_dispatch("web-demo-2", "callops-agent", "")
        .await
        .unwrap();
    assert!(fake.participants("web-demo-2").is_empty());
    assert_eq!(fake.dispatches("web-demo-2")[0].id, quiet.id);

    // Deleting the room takes its dispatches with it.
    client.delete_room("web-demo-2").await.unwrap();
    assert!(fake.dispatches("web-demo-2").is_empty());
}

#[tokio::test]
async fn recordings_start_stop_and_stop_again() {
    let (fake, client) = started();
    let key = "recordings/web-demo/2026-11-21T10-00-00Z.mp4";
    assert!(matches!(
        client.start_recording("web-demo-3", &target(key)).await,
        Err(LiveKitError::NotFound(_))
    ));

    client.create_room("web-demo-3", "").await.unwrap();
    let egress = client
        .start_recording("web-demo-3", &target(key))
        .await
        .unwrap();
    assert!(egress.egress_id.starts_with("EG_"), "{egress:?}");
    assert_eq!(egress.room_name, "web-demo-3");
    assert_eq!(egress.status, "EGRESS_STARTING");
    let recorded = fake.egresses();
    assert_eq!(recorded.len(), 1);
    let recorded = &recorded[0];
    assert_eq!(recorded.file_type, "MP4");
    assert!(recorded.audio_only);
    assert_eq!(recorded.filepath, key);
    assert_eq!(recorded.s3_bucket, "callops-recordings");
    assert_eq!(recorded.s3_region, "eu-west-1");
    assert_eq!(
        recorded.assume_role_arn,
        "arn:aws:iam::123456789012:role/livekit-egress"
    );
    assert_eq!(recorded.assume_role_external_id, "ext-42");

    let stopped = client.stop_recording(&egress.egress_id).await.unwrap();
    assert_eq!(stopped.status, "EGRESS_COMPLETE");
    assert_eq!(stopped.egress_id, egress.egress_id);
    let again = client.stop_recording(&egress.egress_id).await.unwrap();
    assert_eq!(again.status, "EGRESS_COMPLETE");
    assert_eq!(again.egress_id, egress.egress_id);
    let unknown = client.stop_recording("EG_unknown").await.unwrap();
    assert_eq!(unknown.status, "EGRESS_COMPLETE");

    // The second stop was a Twirp failed_precondition the client absorbed.
    let (status, body) = raw_call(
        &fake,
        "livekit.Egress/StopEgress",
        Some(&fake_server_token(json!({"roomRecord": true}))),
        json!({"egress_id": egress.egress_id}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::PRECONDITION_FAILED, Some("failed_precondition"))
    );

    // A room's end ends its recording.
    let second = client
        .start_recording("web-demo-3", &target("b.mp4"))
        .await
        .unwrap();
    client.delete_room("web-demo-3").await.unwrap();
    let ended = fake
        .egresses()
        .into_iter()
        .find(|e| e.id == second.egress_id)
        .unwrap();
    assert_eq!(ended.status, "EGRESS_COMPLETE");
}

fn join(room: &str) -> JoinGrant<'_> {
    JoinGrant {
        room,
        identity: "caller-9",
        name: "Caller",
        ttl: Duration::from_secs(600),
    }
}

#[tokio::test]
async fn grants_are_checked_per_call() {
    let (fake, client) = started();
    client.create_room("r-a", "").await.unwrap();
    let join_token = tokens(SECRET).join_token(&join("r-a")).unwrap();

    // A participant token cannot create rooms.
    let (status, body) = raw_call(
        &fake,
        "livekit.RoomService/CreateRoom",
        Some(&join_token),
        json!({"name": "r-b"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "permission_denied");
    assert!(!fake.room_exists("r-b"));

    // Nor administer the room it may join.
    let (status, body) = raw_call(
        &fake,
        "livekit.RoomService/ListParticipants",
        Some(&join_token),
        json!({"room": "r-a"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("permission_denied"))
    );

    // No token, or one signed with another secret: unauthenticated.
    let (status, body) = raw_call(
        &fake,
        "livekit.RoomService/CreateRoom",
        None,
        json!({"name": "r-b"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
    );
    let wrong = client_at(fake.url(), "not-the-secret-at-all-0123456789");
    assert!(matches!(
        wrong.create_room("r-b", "").await,
        Err(LiveKitError::Refused { code, .. }) if code == "unauthenticated"
    ));
    assert!(!fake.room_exists("r-b"));

    // An unknown method is a bad route, which the client does not mistake
    // for a missing room; a misspelt field is refused, not ignored.
    let (status, body) = raw_call(
        &fake,
        "livekit.RoomService/ExplodeRoom",
        Some(&join_token),
        json!({}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("bad_route"))
    );
    let (status, body) = raw_call(
        &fake,
        "livekit.RoomService/CreateRoom",
        Some(&fake_server_token(json!({"roomCreate": true}))),
        json!({"name": "r-c", "emptyTimeout": 10, "metadatas": "x"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("malformed"))
    );
    // lowerCamelCase names are as good as protobuf names.
    let (status, body) = raw_call(
        &fake,
        "livekit.RoomService/CreateRoom",
        Some(&fake_server_token(json!({"roomCreate": true}))),
        json!({"name": "r-c", "emptyTimeout": 10}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["empty_timeout"], 10);

    // Room admin of one room is nobody in another.
    let (status, _) = raw_call(
        &fake,
        "livekit.AgentDispatchService/CreateDispatch",
        Some(&fake_server_token(
            json!({"roomAdmin": true, "room": "r-a"}),
        )),
        json!({"room": "r-c", "agent_name": "callops-agent"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(fake.dispatches("r-c").is_empty());
}

/// A token made here rather than by the client, with exactly `video`.
fn fake_server_token(video: Value) -> String {
    let now = chrono::Utc::now().timestamp();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"iss": KEY, "nbf": now, "exp": now + 60, "video": video}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn join_tokens_pass_the_fakes_participant_check() {
    let fake = FakeLiveKit::start(KEY, SECRET);
    let token = tokens(SECRET).join_token(&join("web-demo-4")).unwrap();
    let claims = fake.verify_join_token(&token).unwrap();
    assert_eq!(claims["sub"], "caller-9");
    assert_eq!(claims["video"]["room"], "web-demo-4");
    assert_eq!(claims["video"]["roomJoin"], true);

    let other_secret = tokens("some-other-secret-0123456789abcdef")
        .join_token(&join("web-demo-4"))
        .unwrap();
    assert!(fake.verify_join_token(&other_secret).is_err());
    let sign = |claims: Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let now = chrono::Utc::now().timestamp();
    let server = fake_server_token(json!({"roomCreate": true}));
    assert!(fake
        .verify_join_token(&server)
        .unwrap_err()
        .contains("identity"));
    let no_join = sign(json!({"iss": KEY, "sub": "x", "nbf": now, "exp": now + 60,
                              "video": {"roomCreate": true, "room": "web-demo-4"}}));
    assert!(fake
        .verify_join_token(&no_join)
        .unwrap_err()
        .contains("roomJoin"));
    let no_room = sign(json!({"iss": KEY, "sub": "x", "nbf": now, "exp": now + 60,
                              "video": {"roomJoin": true}}));
    assert!(fake
        .verify_join_token(&no_room)
        .unwrap_err()
        .contains("room"));
    let other_key = sign(
        json!({"iss": "someone-else", "sub": "x", "nbf": now, "exp": now + 60,
                                "video": {"roomJoin": true, "room": "web-demo-4"}}),
    );
    assert!(fake.verify_join_token(&other_key).is_err());
    let expired = sign(
        json!({"iss": KEY, "sub": "x", "nbf": now - 900, "exp": now - 300,
                              "video": {"roomJoin": true, "room": "web-demo-4"}}),
    );
    assert!(fake.verify_join_token(&expired).is_err());
}

#[tokio::test]
async fn failures_reach_the_client_as_unavailable_or_refused() {
    let (fake, client) = started();
    fake.fail_next(1, StatusCode::SERVICE_UNAVAILABLE);
    assert!(matches!(
        client.create_room("r", "").await,
        Err(LiveKitError::Unavailable(text)) if text.contains("503")
    ));
    client
        .create_room("r", "")
        .await
        .expect("only the next call failed");

    fake.fail_next(2, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(matches!(
        client.delete_room("r").await,
        Err(LiveKitError::Unavailable(_))
    ));
    assert!(matches!(
        client.stop_recording("EG_x").await,
        Err(LiveKitError::Unavailable(_))
    ));

    fake.fail_next(1, StatusCode::FORBIDDEN);
    assert!(matches!(
        client.list_dispatches("r").await,
        Err(LiveKitError::Refused { code, .. }) if code == "permission_denied"
    ));
    client.delete_room("r").await.unwrap();
}

#[tokio::test]
async fn a_closed_port_is_unavailable_without_the_url_in_the_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = client_at(&format!("http://127.0.0.1:{port}"), SECRET);
    let Err(LiveKitError::Unavailable(text)) = client.create_room("r", "").await else {
        panic!("a closed port is Unavailable");
    };
    assert!(
        !text.contains("/twirp/") && !text.contains(&port.to_string()),
        "{text}"
    );
}

#[tokio::test]
async fn a_hung_livekit_is_given_up_on() {
    // Connections are queued by the kernel but never answered.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = client_at(
        &format!("http://{}", listener.local_addr().unwrap()),
        SECRET,
    );
    let began = Instant::now();
    let result = client.list_participants("r").await;
    assert!(
        matches!(&result, Err(LiveKitError::Unavailable(text)) if text.contains("timed out")),
        "{result:?}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(8),
        "{:?}",
        began.elapsed()
    );
    drop(listener);
}
