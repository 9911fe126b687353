//! Seed 002: phone calls and web rooms as sessions on LiveKit, against the
//! fake LiveKit (which checks each call's JWT grants) and fake Twilio.

use std::sync::Arc;
use std::time::Duration;

use devstack::fakes::{twilio_signature, FakeLiveKit, FakeTwilio};
use http::StatusCode;
use lambda_http::{Body, Request, Response};
use shared::api::access::KeyedAccess;
use shared::api::invites::RoomInvites;
use shared::api::Route;
use shared::base::config::Secret;
use shared::flows::phone::{CallFlow, ConnectMode};
use shared::flows::sessions::{JoinTokens, RecordingStorage, SessionKind, SessionLifecycle};
use shared::flows::voice::{CallPlacer, VoiceWebhook};
use shared::providers::livekit::{AccessTokens, LiveKitClient};
use shared::providers::twilio::{TwilioClient, TwilioWebhookAuth};
use shared::queue::sqs_batch::Worker;
use shared::store::api_keys::{self, ApiKeyStore, DynamoApiKeyStore};
use shared::store::sessions::SessionStore;

use crate::support::*;

const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
const TWILIO_TOKEN: &str = "twilio-test-token";
const LIVEKIT_KEY: &str = "lk-test-key";
const LIVEKIT_SECRET: &str = "lk-test-secret-0123456789abcdef0123456789";
const INVITE_SECRET: &str = "invite-test-secret";
const PUBLIC_BASE: &str = "https://callops.example.com";
const STREAM_URL: &str = "wss://agent.example.com/twilio";
const ORG: &str = "acme";
const OTHER_ORG: &str = "globex";
/// `TWILIO_PHONE_NUMBER` of the test deployment, owned by `ORG` (its `INBOUND_ORG_ID`).
const DEFAULT_CALLER_ID: &str = "+14155552672";
/// A second number `ORG` lists in its record.
const LISTED_CALLER_ID: &str = "+14155552673";
const TIME_LIMIT_SECS: u64 = 600;

struct Rooms {
    stack: Stack,
    twilio: FakeTwilio,
    livekit: FakeLiveKit,
    key: String,
    other_key: String,
}

impl Rooms {
    async fn start() -> Self {
        let stack = Stack::start().await;
        let keys =
            DynamoApiKeyStore::new(stack.dynamo.clone(), stack.resources.table("ApiKeysTable"));
        let (key, record) = api_keys::generate("web", ORG);
        keys.insert(&record).await.unwrap();
        let (other_key, record) = api_keys::generate("web", OTHER_ORG);
        keys.insert(&record).await.unwrap();
        let rooms = Self {
            stack,
            twilio: FakeTwilio::start(ACCOUNT_SID, TWILIO_TOKEN),
            livekit: FakeLiveKit::start(LIVEKIT_KEY, LIVEKIT_SECRET),
            key,
            other_key,
        };
        rooms
            .create_org(ORG, 100 * TIME_LIMIT_SECS, &[LISTED_CALLER_ID])
            .await;
        rooms
            .create_org(OTHER_ORG, 100 * TIME_LIMIT_SECS, &[])
            .await;
        rooms
    }

    fn tokens() -> AccessTokens {
        AccessTokens {
            api_key: LIVEKIT_KEY.into(),
            api_secret: Secret::new(LIVEKIT_SECRET),
        }
    }

    fn livekit_client(&self) -> Arc<LiveKitClient> {
        livekit_client(self.livekit.url(), LIVEKIT_KEY, LIVEKIT_SECRET)
    }

    fn lifecycle(&self) -> SessionLifecycle {
        self.stack.session_lifecycle(self.livekit_client())
    }

    fn access(&self) -> KeyedAccess {
        self.stack.keyed_access()
    }

    fn twilio_client(&self) -> TwilioClient {
        TwilioClient {
            http: reqwest::Client::new(),
            base_url: self.twilio.base_url().to_string(),
            account_sid: ACCOUNT_SID.into(),
            auth_token: Secret::new(TWILIO_TOKEN),
            api_key: None,
        }
    }

    fn flow(mode: ConnectMode, menu: Option<&str>) -> CallFlow {
        CallFlow {
            mode,
            greeting: Some("Please wait while we connect you to our AI assistant.".into()),
            voice: Some("Polly.Joanna".into()),
            menu: menu.map(|m| serde_json::from_str(m).unwrap()),
            public_base_url: PUBLIC_BASE.into(),
        }
    }

    fn stream() -> ConnectMode {
        ConnectMode::Stream {
            url: STREAM_URL.into(),
        }
    }

    fn twilio_auth() -> TwilioWebhookAuth {
        TwilioWebhookAuth::single(Secret::new(TWILIO_TOKEN), PUBLIC_BASE.into())
    }

    fn voice_with(&self, flow: CallFlow) -> twilio_voice::TwilioVoice {
        twilio_voice::TwilioVoice {
            webhook: self.voice_webhook(SessionKind::Phone, flow),
        }
    }

    fn voice_webhook(&self, kind: SessionKind, flow: CallFlow) -> VoiceWebhook {
        VoiceWebhook {
            kind,
            twilio_auth: Self::twilio_auth(),
            flow,
            lifecycle: self.lifecycle(),
            inbound_org: Some(ORG.into()),
            tenancy: Arc::new(self.stack.tenancy()),
            lease: Duration::from_secs(30),
        }
    }

    fn voice(&self) -> twilio_voice::TwilioVoice {
        self.voice_with(Self::flow(Self::stream(), None))
    }

    fn session_get(&self) -> session_get::SessionGet {
        session_get::SessionGet {
            access: self.access(),
            sessions: Arc::new(self.stack.sessions()),
        }
    }

    fn sessions_list(&self) -> sessions_list::SessionsList {
        sessions_list::SessionsList {
            access: self.access(),
            sessions: Arc::new(self.stack.sessions()),
        }
    }

    fn phone_end(&self) -> phone_end::PhoneEnd {
        phone_end::PhoneEnd {
            access: self.access(),
            twilio: self.twilio_client().into(),
            lifecycle: self.lifecycle(),
        }
    }

    fn phone_call(&self) -> phone_call::PhoneCall {
        phone_call::PhoneCall {
            placer: self.placer(SessionKind::Phone),
        }
    }

    fn placer(&self, kind: SessionKind) -> CallPlacer {
        CallPlacer {
            kind,
            access: self.access(),
            twilio: self.twilio_client().into(),
            lifecycle: self.lifecycle(),
            default_from: Some(DEFAULT_CALLER_ID.into()),
            public_base_url: PUBLIC_BASE.into(),
            time_limit_secs: TIME_LIMIT_SECS,
            lease: Duration::from_secs(30),
            directory: Arc::new(self.stack.directory()),
            calls: Arc::new(self.stack.outbound_calls()),
            inbound_org: Some(ORG.into()),
            tenancy: Arc::new(self.stack.tenancy()),
        }
    }

    /// An organisation record: its monthly budget and the caller ids it owns.
    async fn create_org(&self, org_id: &str, monthly_limit_seconds: u64, numbers: &[&str]) {
        use shared::store::directory::DirectoryStore;
        let org = shared::store::directory::Organisation {
            org_id: org_id.into(),
            name: org_id.into(),
            monthly_limit_seconds,
            topup_seconds: 0,
            max_concurrent_calls: 10,
            elevenlabs_agent_id: None,
            elevenlabs_phone_number_id: None,
            phone_numbers: Vec::new(),
            created_at: shared::base::time::now_rfc3339(),
            updated_at: shared::base::time::now_rfc3339(),
            usage_this_month_seconds: 0,
            reserved_seconds: 0,
            remaining_seconds: 0,
        };
        assert!(self
            .stack
            .directory()
            .create_organisation(&org)
            .await
            .unwrap());
        // The caller ids it owns are in the number registry.
        use shared::store::tenancy::{Claim, Kind, TenancyStore};
        for number in numbers {
            let key = Kind::Voice.key(number);
            let claim = self.stack.tenancy().claim(&key, org_id).await.unwrap();
            assert_eq!(claim, Claim::Claimed);
        }
    }

    async fn org(&self, org_id: &str) -> shared::store::directory::Organisation {
        use shared::store::directory::DirectoryStore;
        self.stack
            .directory()
            .get_organisation(org_id)
            .await
            .unwrap()
            .unwrap()
    }

    fn invites() -> RoomInvites {
        RoomInvites::new(Secret::new(INVITE_SECRET), Duration::from_secs(3600))
    }

    fn join_tokens() -> JoinTokens {
        JoinTokens {
            tokens: Self::tokens(),
            ttl: Duration::from_secs(600),
        }
    }

    fn room_create(&self) -> room_create::RoomCreate {
        room_create::RoomCreate {
            access: self.access(),
            lifecycle: self.lifecycle(),
            access_links: shared::flows::sessions::RoomAccess {
                tokens: Self::join_tokens(),
                invites: Self::invites(),
                client_url: self.livekit_client().client_url(),
                room_url_template: shared::flows::sessions::DEFAULT_ROOM_URL_TEMPLATE.into(),
            },
            lease: Duration::from_secs(30),
        }
    }

    fn room_join(&self) -> room_join::RoomJoin {
        room_join::RoomJoin {
            access: self.access(),
            lifecycle: self.lifecycle(),
            tokens: Self::join_tokens(),
            invites: Self::invites(),
            client_url: self.livekit_client().client_url(),
        }
    }

    /// A chat launcher opening rooms for `ORG` (as `INBOUND_ORG_ID` would).
    fn launcher(&self) -> shared::flows::launchers::Launcher {
        shared::flows::launchers::Launcher {
            lifecycle: self.lifecycle(),
            access: self.room_create().access_links,
            tenancy: std::sync::Arc::new(self.stack.tenancy()),
            fallback_org: Some(ORG.into()),
            lease: Duration::from_secs(30),
        }
    }

    /// Starts (or reopens) the Slack room of `user`; the launcher's invite.
    async fn slack_call(&self, user: &str) -> String {
        let launch = shared::flows::launchers::Launch {
            kind: SessionKind::Slack,
            key: user,
            user_id: user,
            user_name: Some("Ada"),
            workspace: None,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let started = self
            .launcher()
            .start(&launch, None, deadline)
            .await
            .unwrap_or_else(|e| panic!("launcher: {e}"));
        started.links.invite
    }

    fn room_agent(&self) -> room_agent::RoomAgent {
        room_agent::RoomAgent {
            access: self.access(),
            lifecycle: self.lifecycle(),
        }
    }

    fn room_recording(&self) -> room_recording::RoomRecording {
        room_recording::RoomRecording {
            access: self.access(),
            lifecycle: self.lifecycle(),
            storage: RecordingStorage {
                bucket: "callops-recordings-test".into(),
                region: "us-east-1".into(),
                role_arn: Some("arn:aws:iam::123456789012:role/livekit-egress".into()),
                external_id: Some("ext-123".into()),
            },
        }
    }

    fn provider_events_worker(&self) -> Arc<provider_events_worker::ProviderEventsWorker> {
        Arc::new(provider_events_worker::ProviderEventsWorker {
            processor: shared::flows::provider_events::ProviderEventProcessor {
                calls: Arc::new(self.stack.outbound_calls()),
                dedup: self.stack.dedup(),
                bodies: self.stack.event_bodies(),
                notification_queue: self.stack.queue("NotificationQueue"),
                lease: Duration::from_secs(30),
                sessions: Some(Arc::new(self.lifecycle())),
                tenancy: Arc::new(self.stack.tenancy()),
                default_org: Some(ORG.into()),
            },
        })
    }

    async fn run_provider_events(&self) {
        let worker = self.provider_events_worker();
        self.stack
            .drain("ProviderEventsQueue", |event| {
                let worker = Arc::clone(&worker);
                async move { worker.handle(event).await }
            })
            .await;
    }
}

/// A Twilio-signed form POST to our public URL.
fn twilio_post(route: &str, query: &str, params: &[(&str, &str)]) -> Request {
    let url = if query.is_empty() {
        format!("{PUBLIC_BASE}{route}")
    } else {
        format!("{PUBLIC_BASE}{route}?{query}")
    };
    let signature = twilio_signature(TWILIO_TOKEN, &url, params);
    twilio_post_signed(route, query, params, Some(&signature))
}

fn twilio_post_signed(
    route: &str,
    query: &str,
    params: &[(&str, &str)],
    signature: Option<&str>,
) -> Request {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let mut headers = vec![(
        "content-type".to_string(),
        "application/x-www-form-urlencoded".to_string(),
    )];
    if let Some(signature) = signature {
        headers.push(("x-twilio-signature".to_string(), signature.to_string()));
    }
    devstack::server::api_request("POST", route, route, query, &headers, body.as_bytes())
}

fn inbound(call_sid: &str) -> Vec<(&str, &str)> {
    vec![
        ("CallSid", call_sid),
        ("From", "+14155550100"),
        ("To", "+14155550199"),
        ("Direction", "inbound"),
        ("AccountSid", ACCOUNT_SID),
        ("CallStatus", "ringing"),
    ]
}

/// A JSON API request; `key` goes in `X-Api-Key`.
fn api(
    method: &str,
    route: &str,
    path: &str,
    query: &str,
    key: Option<&str>,
    body: Option<serde_json::Value>,
) -> Request {
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    if let Some(key) = key {
        headers.push(("x-api-key".to_string(), key.to_string()));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    devstack::server::api_request(method, route, path, query, &headers, body.as_bytes())
}

fn text(response: &Response<Body>) -> String {
    match response.body() {
        Body::Text(text) => text.clone(),
        Body::Binary(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Body::Empty => String::new(),
        _ => String::new(),
    }
}

impl Rooms {
    async fn get_session(&self, id: &str, key: &str) -> Response<Body> {
        self.session_get()
            .handle(api(
                "GET",
                "/sessions/{id}",
                &format!("/sessions/{id}"),
                "",
                Some(key),
                None,
            ))
            .await
    }

    async fn create_room(&self, room: &str) -> Response<Body> {
        self.room_create()
            .handle(api(
                "POST",
                "/room/create",
                "/room/create",
                "",
                Some(&self.key),
                Some(serde_json::json!({
                    "roomName": room, "hostIdentity": "host-1", "hostName": "Ada",
                })),
            ))
            .await
    }

    async fn join(&self, body: serde_json::Value, key: Option<&str>) -> Response<Body> {
        self.room_join()
            .handle(api("POST", "/room/join", "/room/join", "", key, Some(body)))
            .await
    }

    async fn toggle(&self, what: &str, room: &str, enable: bool, key: &str) -> Response<Body> {
        let route = format!("/room/{{roomName}}/{what}");
        let path = format!("/room/{room}/{what}");
        let request = api(
            "POST",
            &route,
            &path,
            "",
            Some(key),
            Some(serde_json::json!({ "enable": enable })),
        );
        match what {
            "agent" => self.room_agent().handle(request).await,
            _ => self.room_recording().handle(request).await,
        }
    }
}

/// Seed 002's own integration test: voice webhook -> session active ->
/// /phone/end -> the session is gone (404), and its room with it.
#[tokio::test]
async fn seed_end_to_end_phone_call() {
    let t = Rooms::start().await;
    let response = t
        .voice()
        .handle(twilio_post("/twilio/voice", "", &inbound("CAtest123")))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/xml; charset=utf-8"
    );
    let twiml = text(&response);
    assert!(
        twiml.contains("<Connect><Stream url=\"wss://agent.example.com/twilio\">"),
        "{twiml}"
    );
    assert!(twiml.contains("<Parameter name=\"roomName\" value=\"twilio-CAtest123\"/>"));
    assert!(twiml.contains("<Say voice=\"Polly.Joanna\">"));
    assert!(t.livekit.room_exists("twilio-CAtest123"));
    assert_eq!(t.livekit.dispatches("twilio-CAtest123").len(), 1);

    let session = t.get_session("phone-CAtest123", &t.key).await;
    assert_eq!(session.status(), StatusCode::OK);
    let session = json_body(&session);
    assert_eq!(session["status"], "active");
    assert_eq!(session["type"], "phone");
    assert_eq!(session["room_name"], "twilio-CAtest123");
    assert_eq!(session["agent_active"], true);
    assert_eq!(session["call_sid"], "CAtest123");

    let ended = t
        .phone_end()
        .handle(api(
            "POST",
            "/phone/end/{callSid}",
            "/phone/end/CAtest123",
            "",
            Some(&t.key),
            None,
        ))
        .await;
    assert_eq!(ended.status(), StatusCode::OK, "{}", text(&ended));
    assert_eq!(json_body(&ended)["sessionId"], "phone-CAtest123");
    assert_eq!(
        t.get_session("phone-CAtest123", &t.key).await.status(),
        StatusCode::NOT_FOUND
    );
    assert!(!t.livekit.room_exists("twilio-CAtest123"));
    // Ended sessions stay queryable on request.
    let kept = t
        .session_get()
        .handle(api(
            "GET",
            "/sessions/{id}",
            "/sessions/phone-CAtest123",
            "status=ended",
            Some(&t.key),
            None,
        ))
        .await;
    assert_eq!(kept.status(), StatusCode::OK);
    let kept = json_body(&kept);
    assert_eq!(kept["status"], "ended");
    assert_eq!(kept["end_reason"], "ended by API");
    // Ending again: the call is unknown now.
    let again = t
        .phone_end()
        .handle(api(
            "POST",
            "/phone/end/{callSid}",
            "/phone/end/CAtest123",
            "",
            Some(&t.key),
            None,
        ))
        .await;
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    // One call-start notification for the session.
    assert_eq!(t.stack.depth("NotificationQueue").await, 1);
}

#[tokio::test]
async fn duplicate_voice_deliveries_open_one_room() {
    let t = Rooms::start().await;
    let voice = Arc::new(t.voice());
    let mut deliveries = Vec::new();
    for _ in 0..10 {
        let voice = Arc::clone(&voice);
        deliveries.push(tokio::spawn(async move {
            voice
                .handle(twilio_post("/twilio/voice", "", &inbound("CAdup1")))
                .await
        }));
    }
    let mut answers = Vec::new();
    for delivery in deliveries {
        let response = delivery.await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        answers.push(text(&response));
    }
    assert!(answers.iter().all(|a| a == &answers[0]));
    assert!(answers[0].contains("<Connect>"));
    let created = |method: &str| {
        t.livekit
            .requests()
            .iter()
            .filter(|r| r.path.ends_with(method))
            .count()
    };
    assert_eq!(created("/CreateRoom"), 1);
    assert_eq!(created("/CreateDispatch"), 1);
    assert_eq!(t.livekit.dispatches("twilio-CAdup1").len(), 1);
    assert_eq!(t.stack.depth("NotificationQueue").await, 1);
}

#[tokio::test]
async fn unsigned_or_forged_voice_webhooks_create_nothing() {
    let t = Rooms::start().await;
    let voice = t.voice();
    let unsigned = voice
        .handle(twilio_post_signed(
            "/twilio/voice",
            "",
            &inbound("CAx1"),
            None,
        ))
        .await;
    assert_eq!(unsigned.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_body(&unsigned)["code"], "missing_signature");
    let forged = voice
        .handle(twilio_post_signed(
            "/twilio/voice",
            "",
            &inbound("CAx1"),
            Some("bm90IGEgc2lnbmF0dXJl"),
        ))
        .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    // Signed for another org than the URL says: the signature covers the query.
    let url = format!("{PUBLIC_BASE}/twilio/voice?org={ORG}");
    let signature = twilio_signature(TWILIO_TOKEN, &url, &inbound("CAx1"));
    let moved = voice
        .handle(twilio_post_signed(
            "/twilio/voice",
            &format!("org={OTHER_ORG}"),
            &inbound("CAx1"),
            Some(&signature),
        ))
        .await;
    assert_eq!(moved.status(), StatusCode::FORBIDDEN);
    let bad_sid = voice
        .handle(twilio_post("/twilio/voice", "", &inbound("CA../x")))
        .await;
    assert_eq!(bad_sid.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(t.livekit.requests().is_empty());
    assert!(t
        .stack
        .sessions()
        .get("twilio-CAx1")
        .await
        .unwrap()
        .is_none());
    assert_eq!(t.stack.depth("NotificationQueue").await, 0);
}

#[tokio::test]
async fn livekit_down_means_spoken_try_again_for_twilio_and_502_for_the_api() {
    let t = Rooms::start().await;
    t.livekit.fail_next(100, StatusCode::SERVICE_UNAVAILABLE);
    let response = t
        .voice()
        .handle(twilio_post("/twilio/voice", "", &inbound("CAdown1")))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let twiml = text(&response);
    assert!(twiml.contains("try again"), "{twiml}");
    assert!(twiml.ends_with("<Hangup/></Response>"));
    assert!(t
        .stack
        .sessions()
        .get("twilio-CAdown1")
        .await
        .unwrap()
        .is_none());

    let created = t.create_room("down-room").await;
    assert_eq!(created.status(), StatusCode::BAD_GATEWAY);
    let body = json_body(&created);
    assert_eq!(body["code"], "livekit_unavailable");
    assert!(body["detail"].as_str().unwrap().contains("LiveKit"));

    // LiveKit back: the next delivery of the same call connects it.
    t.livekit.fail_next(0, StatusCode::SERVICE_UNAVAILABLE);
    let retried = t
        .voice()
        .handle(twilio_post("/twilio/voice", "", &inbound("CAdown1")))
        .await;
    assert!(text(&retried).contains("<Connect>"));
    assert!(t.livekit.room_exists("twilio-CAdown1"));
}

#[tokio::test]
async fn livekit_unreachable_is_the_same_as_refusing() {
    let t = Rooms::start().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let mut voice = t.voice();
    voice.webhook.lifecycle.livekit = Arc::new(LiveKitClient {
        http: reqwest::Client::new(),
        api_url: dead_url,
        tokens: Rooms::tokens(),
        empty_timeout_secs: 300,
    });
    let response = voice
        .handle(twilio_post("/twilio/voice", "", &inbound("CAdead1")))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(text(&response).contains("try again"));
}

#[tokio::test]
async fn sip_mode_and_the_dtmf_menu() {
    let t = Rooms::start().await;
    let menu = r#"{"prompt":"Press 1 for sales, 2 for support, or stay on the line.",
        "options":{"1":{"action":"dial","number":"+14155550123"},
                   "2":{"action":"say","message":"Support is open 9 to 5."}}}"#;
    let sip = ConnectMode::Sip {
        endpoint: "abc123.sip.livekit.cloud".into(),
        username: Some("twilio-trunk".into()),
        password: Some(Secret::new("trunk-pass")),
    };
    let voice = t.voice_with(Rooms::flow(sip.clone(), Some(menu)));
    let twiml = text(
        &voice
            .handle(twilio_post("/twilio/voice", "", &inbound("CAsip1")))
            .await,
    );
    assert!(twiml.contains(&format!(
        "<Gather input=\"dtmf\" numDigits=\"1\" timeout=\"5\" action=\"{PUBLIC_BASE}/twilio/routing\" method=\"POST\">"
    )));
    assert!(twiml.contains(
        "<Dial><Sip username=\"twilio-trunk\" password=\"trunk-pass\">sip:twilio-CAsip1@abc123.sip.livekit.cloud;transport=tcp</Sip></Dial>"
    ));
    assert!(t.livekit.room_exists("twilio-CAsip1"));

    let routing = twilio_routing::TwilioRouting {
        twilio_auth: Rooms::twilio_auth(),
        flow: Rooms::flow(sip, Some(menu)),
    };
    let pressed = |digit: &'static str| {
        twilio_post(
            "/twilio/routing",
            "",
            &[
                ("CallSid", "CAsip1"),
                ("Digits", digit),
                ("AccountSid", ACCOUNT_SID),
            ],
        )
    };
    assert!(text(&routing.handle(pressed("1")).await).contains("<Dial>+14155550123</Dial>"));
    assert!(text(&routing.handle(pressed("2")).await)
        .contains("Support is open 9 to 5.</Say><Hangup/>"));
    assert!(text(&routing.handle(pressed("9")).await).contains("<Sip"));
    let unsigned = routing
        .handle(twilio_post_signed(
            "/twilio/routing",
            "",
            &[("CallSid", "CAsip1"), ("Digits", "1")],
            Some("AAAA"),
        ))
        .await;
    assert_eq!(unsigned.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn web_room_create_join_agent_and_recording() {
    let t = Rooms::start().await;
    let created = t.create_room("demo-room").await;
    assert_eq!(created.status(), StatusCode::CREATED, "{}", text(&created));
    let created = json_body(&created);
    assert_eq!(created["roomName"], "demo-room");
    assert_eq!(created["sessionId"], "web-demo-room");
    let url = created["url"].as_str().unwrap();
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
    let room_url = created["roomUrl"].as_str().unwrap();
    assert!(room_url.starts_with("https://meet.livekit.io/custom?liveKitUrl=ws%3A%2F%2F127.0.0.1"));
    let host = t
        .livekit
        .verify_join_token(created["token"].as_str().unwrap())
        .expect("host token verifies");
    assert_eq!(host["sub"], "host-1");
    assert_eq!(host["video"]["room"], "demo-room");
    assert_eq!(host["video"]["roomJoin"], true);
    assert!(host["exp"].as_i64().unwrap() - host["nbf"].as_i64().unwrap() <= 600);
    let invite = created["invite"].as_str().unwrap().to_string();

    // A browser with only the invite may join that room.
    let joined = t
        .join(
            serde_json::json!({
                "roomName": "demo-room", "participantIdentity": "user-1",
                "participantName": "Grace", "invite": invite,
            }),
            None,
        )
        .await;
    assert_eq!(joined.status(), StatusCode::OK, "{}", text(&joined));
    let joined = json_body(&joined);
    assert_eq!(joined["agentPresent"], true);
    let claims = t
        .livekit
        .verify_join_token(joined["token"].as_str().unwrap())
        .unwrap();
    assert_eq!(claims["sub"], "guest-user-1");
    assert_eq!(joined["participantIdentity"], "guest-user-1");
    assert_eq!(claims["name"], "Grace");
    // Without an invite or key: 401. An invite opens no other room.
    let bare = t
        .join(
            serde_json::json!({"roomName": "demo-room", "participantIdentity": "user-2"}),
            None,
        )
        .await;
    assert_eq!(bare.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        t.create_room("other-room").await.status(),
        StatusCode::CREATED
    );
    let elsewhere = t
        .join(
            serde_json::json!({"roomName": "other-room", "participantIdentity": "u", "invite": invite}),
            None,
        )
        .await;
    assert_eq!(elsewhere.status(), StatusCode::UNAUTHORIZED);
    // Another organisation's key: as if the room did not exist.
    let foreign = t
        .join(
            serde_json::json!({"roomName": "demo-room", "participantIdentity": "u"}),
            Some(&t.other_key),
        )
        .await;
    assert_eq!(foreign.status(), StatusCode::NOT_FOUND);
    let with_key = t
        .join(
            serde_json::json!({"roomName": "demo-room", "participantIdentity": "u3"}),
            Some(&t.key),
        )
        .await;
    assert_eq!(with_key.status(), StatusCode::OK);

    // Agent off: its dispatch and its participant go.
    let off = t.toggle("agent", "demo-room", false, &t.key).await;
    assert_eq!(off.status(), StatusCode::OK, "{}", text(&off));
    assert_eq!(json_body(&off)["agentActive"], false);
    assert!(t.livekit.dispatches("demo-room").is_empty());
    let rejoin = json_body(
        &t.join(
            serde_json::json!({"roomName": "demo-room", "participantIdentity": "u4"}),
            Some(&t.key),
        )
        .await,
    );
    assert_eq!(rejoin["agentPresent"], false);
    let on = t.toggle("agent", "demo-room", true, &t.key).await;
    assert_eq!(json_body(&on)["agentActive"], true);
    assert_eq!(t.livekit.dispatches("demo-room").len(), 1);
    assert_eq!(
        t.toggle("agent", "demo-room", true, &t.other_key)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    // Recording: started once, its location kept, stopped once.
    let started = t.toggle("recording", "demo-room", true, &t.key).await;
    assert_eq!(started.status(), StatusCode::OK, "{}", text(&started));
    let started = json_body(&started);
    assert_eq!(started["recording"], true);
    let egress_id = started["egressId"].as_str().unwrap().to_string();
    assert!(!egress_id.is_empty());
    let again = json_body(&t.toggle("recording", "demo-room", true, &t.key).await);
    assert_eq!(again["egressId"], egress_id.as_str());
    assert_eq!(t.livekit.egresses().len(), 1);
    let session = json_body(&t.get_session("web-demo-room", &t.key).await);
    assert_eq!(session["recording"], true);
    let location = session["recording_location"].as_str().unwrap();
    assert!(location.starts_with("s3://callops-recordings-test/recordings/web-demo-room/"));
    assert!(location.ends_with(".mp4"));
    let stopped = json_body(&t.toggle("recording", "demo-room", false, &t.key).await);
    assert_eq!(stopped["recording"], false);
    assert_eq!(stopped["egressId"], egress_id.as_str());
    assert_eq!(
        t.toggle("recording", "demo-room", false, &t.key)
            .await
            .status(),
        StatusCode::CONFLICT
    );
    let egress_request = t
        .livekit
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/StartRoomCompositeEgress"))
        .unwrap()
        .json();
    assert_eq!(egress_request["room_name"], "demo-room");
    let s3 = &egress_request["file_outputs"][0]["s3"];
    assert_eq!(s3["bucket"], "callops-recordings-test");
    assert_eq!(
        s3["assume_role_arn"],
        "arn:aws:iam::123456789012:role/livekit-egress"
    );
}

#[tokio::test]
async fn sessions_are_counted_by_type_under_twenty_concurrent_calls() {
    let t = Arc::new(Rooms::start().await);
    let mut tasks = Vec::new();
    for i in 0..10 {
        let phone = Arc::clone(&t);
        tasks.push(tokio::spawn(async move {
            let t = phone;
            let sid = format!("CAconc{i}");
            let response = t
                .voice()
                .handle(twilio_post("/twilio/voice", "", &inbound(&sid)))
                .await;
            assert!(text(&response).contains("<Connect>"));
        }));
        let web = Arc::clone(&t);
        tasks.push(tokio::spawn(async move {
            let t = web;
            let response = t.create_room(&format!("meeting-{i}")).await;
            assert_eq!(response.status(), StatusCode::CREATED);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let list = |key: String, query: &'static str| {
        let t = Arc::clone(&t);
        async move {
            json_body(
                &t.sessions_list()
                    .handle(api(
                        "GET",
                        "/sessions",
                        "/sessions",
                        query,
                        Some(&key),
                        None,
                    ))
                    .await,
            )
        }
    };
    let listing = list(t.key.clone(), "").await;
    assert_eq!(listing["total"], 20);
    assert_eq!(listing["byType"]["phone"], 10);
    assert_eq!(listing["byType"]["web"], 10);
    assert_eq!(listing["byType"]["whatsapp"], 0);
    assert_eq!(listing["sessions"].as_array().unwrap().len(), 20);
    let other = list(t.other_key.clone(), "").await;
    assert_eq!(other["total"], 0);

    // A finished call leaves the active list for the ended one.
    let status = twilio_post(
        "/twilio/status",
        "",
        &[
            ("CallSid", "CAconc3"),
            ("CallStatus", "completed"),
            ("CallDuration", "42"),
            ("AccountSid", ACCOUNT_SID),
        ],
    );
    let intake = twilio_status::TwilioStatus {
        twilio_auth: Rooms::twilio_auth(),
        intake: t.stack.provider_event_intake(),
        calls: Arc::new(t.stack.outbound_calls()),
    };
    assert_eq!(intake.handle(status).await.status(), StatusCode::OK);
    t.run_provider_events().await;
    let listing = list(t.key.clone(), "").await;
    assert_eq!(listing["byType"]["phone"], 9);
    let ended = list(t.key.clone(), "status=ended").await;
    assert_eq!(ended["total"], 1);
    assert_eq!(ended["sessions"][0]["session_id"], "phone-CAconc3");
    assert_eq!(ended["sessions"][0]["duration"], 42);
    assert_eq!(ended["sessions"][0]["end_reason"], "completed");
    assert!(!t.livekit.room_exists("twilio-CAconc3"));
}

#[tokio::test]
async fn an_outbound_phone_call_is_connected_like_an_inbound_one() {
    let t = Rooms::start().await;
    let placed = t
        .phone_call()
        .handle(api(
            "POST",
            "/phone/call",
            "/phone/call",
            "",
            Some(&t.key),
            Some(serde_json::json!({"to": "+14155550100"})),
        ))
        .await;
    assert_eq!(placed.status(), StatusCode::OK, "{}", text(&placed));
    let placed = json_body(&placed);
    let call_sid = placed["callSid"].as_str().unwrap().to_string();
    assert_eq!(placed["sessionId"], format!("phone-{call_sid}"));
    assert_eq!(placed["status"], "queued");
    let form = &t.twilio.created_calls()[0];
    let get = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("Url"), format!("{PUBLIC_BASE}/twilio/voice?org={ORG}"));
    assert!(get("StatusCallback").starts_with(&format!(
        "{PUBLIC_BASE}/twilio/status?session=phone&placed=oc_"
    )));
    assert_eq!(get("From"), "+14155552672");
    assert!(t.livekit.room_exists(&format!("twilio-{call_sid}")));

    // Twilio fetches the voice URL when answered: same session, same room.
    let answered = t
        .voice()
        .handle(twilio_post(
            "/twilio/voice",
            &format!("org={ORG}"),
            &[
                ("CallSid", call_sid.as_str()),
                ("From", "+14155552672"),
                ("To", "+14155550100"),
                ("Direction", "outbound-api"),
            ],
        ))
        .await;
    assert!(text(&answered).contains("<Connect>"));
    assert_eq!(t.livekit.dispatches(&format!("twilio-{call_sid}")).len(), 1);
    let session = json_body(&t.get_session(&format!("phone-{call_sid}"), &t.key).await);
    assert_eq!(session["direction"], "outbound-api");
    // The other organisation cannot see or end it.
    assert_eq!(
        t.get_session(&format!("phone-{call_sid}"), &t.other_key)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let foreign_end = t
        .phone_end()
        .handle(api(
            "POST",
            "/phone/end/{callSid}",
            &format!("/phone/end/{call_sid}"),
            "",
            Some(&t.other_key),
            None,
        ))
        .await;
    assert_eq!(foreign_end.status(), StatusCode::NOT_FOUND);
    assert!(t.twilio.ended_calls().is_empty());
    // Ringing then no-answer: the status is kept, then the session ends.
    let intake = twilio_status::TwilioStatus {
        twilio_auth: Rooms::twilio_auth(),
        intake: t.stack.provider_event_intake(),
        calls: Arc::new(t.stack.outbound_calls()),
    };
    for status in ["ringing", "no-answer"] {
        let callback = twilio_post(
            "/twilio/status",
            "",
            &[
                ("CallSid", call_sid.as_str()),
                ("CallStatus", status),
                ("AccountSid", ACCOUNT_SID),
            ],
        );
        assert_eq!(intake.handle(callback).await.status(), StatusCode::OK);
        t.run_provider_events().await;
    }
    let session = t
        .stack
        .sessions()
        .get(&format!("twilio-{call_sid}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.call_status.as_deref(), Some("ringing"));
    assert_eq!(session.end_reason.as_deref(), Some("no-answer"));
    assert!(session.ended());
}

#[tokio::test]
async fn bad_input_is_refused_with_json_and_changes_nothing() {
    let t = Rooms::start().await;
    let create = |body: &str, key: Option<&str>| {
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        if let Some(key) = key {
            headers.push(("x-api-key".to_string(), key.to_string()));
        }
        devstack::server::api_request(
            "POST",
            "/room/create",
            "/room/create",
            "",
            &headers,
            body.as_bytes(),
        )
    };
    let key = Some(t.key.as_str());
    for (body, key, status, code) in [
        (
            r#"{"roomName":"a"}"#,
            None,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        ("{not json", key, StatusCode::BAD_REQUEST, "invalid_json"),
        (
            r#"{"hostName":"x"}"#,
            key,
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_field",
        ),
        (
            r#"{"roomName":"has space"}"#,
            key,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_room_name",
        ),
        (
            r#"{"roomName":"twilio-CA1"}"#,
            key,
            StatusCode::UNPROCESSABLE_ENTITY,
            "reserved_room_name",
        ),
        (
            r#"{"roomName":"ok","hostIdentity":""}"#,
            key,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_identity",
        ),
    ] {
        let response = t.room_create().handle(create(body, key)).await;
        assert_eq!(response.status(), status, "{body}");
        assert_eq!(json_body(&response)["code"], code, "{body}");
    }
    for (body, code) in [
        (serde_json::json!({}), "missing_field"),
        (serde_json::json!({"to": "12345"}), "invalid_phone_number"),
        (
            serde_json::json!({"to": "+1234567890"}),
            "phone_number_not_valid",
        ),
        (
            serde_json::json!({"to": "+14155550100", "from": "nope"}),
            "invalid_phone_number",
        ),
    ] {
        let response = t
            .phone_call()
            .handle(api(
                "POST",
                "/phone/call",
                "/phone/call",
                "",
                key,
                Some(body.clone()),
            ))
            .await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}"
        );
        assert_eq!(json_body(&response)["code"], code, "{body}");
    }
    assert!(t.twilio.created_calls().is_empty());
    let missing_enable = t
        .room_agent()
        .handle(api(
            "POST",
            "/room/{roomName}/agent",
            "/room/nowhere/agent",
            "",
            key,
            Some(serde_json::json!({})),
        ))
        .await;
    assert_eq!(missing_enable.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        t.toggle("agent", "nowhere", true, &t.key).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        t.toggle("recording", "nowhere", true, &t.key)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    for id in ["phone-", "fax-1", "nothing", "phone-CAnope"] {
        assert_eq!(
            t.get_session(id, &t.key).await.status(),
            StatusCode::NOT_FOUND,
            "{id}"
        );
    }
    let bad_status = t
        .sessions_list()
        .handle(api(
            "GET",
            "/sessions",
            "/sessions",
            "status=paused",
            key,
            None,
        ))
        .await;
    assert_eq!(bad_status.status(), StatusCode::BAD_REQUEST);
    let no_key = t
        .sessions_list()
        .handle(api("GET", "/sessions", "/sessions", "", None, None))
        .await;
    assert_eq!(no_key.status(), StatusCode::UNAUTHORIZED);
    assert!(t.livekit.requests().is_empty());
}

#[tokio::test]
async fn room_finished_ends_a_web_session_once() {
    let t = Rooms::start().await;
    assert_eq!(
        t.create_room("finish-me").await.status(),
        StatusCode::CREATED
    );
    let sessions = t.stack.sessions();
    sessions
        .room_finished("finish-me", "2030-01-01T00:00:00Z", Some(61), None)
        .await
        .unwrap();
    let record = sessions.get("finish-me").await.unwrap().unwrap();
    assert!(record.ended());
    assert_eq!(record.duration_secs, Some(61));
    // A second ender (say, the sweep) finds nothing to do.
    assert!(!sessions
        .end_stale("finish-me", "2030-01-01T01:00:00Z", "stale", None)
        .await
        .unwrap());
    let listing = json_body(
        &t.sessions_list()
            .handle(api("GET", "/sessions", "/sessions", "", Some(&t.key), None))
            .await,
    );
    assert_eq!(listing["total"], 0);
    // An ended room is not reopened under the same name.
    let reopened = t.create_room("finish-me").await;
    assert_eq!(reopened.status(), StatusCode::CONFLICT);
    assert_eq!(json_body(&reopened)["code"], "session_ended");
}

/// LiveKit's own webhooks about a session's room: a caller joining is listed
/// on the session without a second call-start notification; `room_finished`
/// ends the session and moves it to the ended list.
#[tokio::test]
async fn livekit_webhooks_fill_in_and_end_a_web_session() {
    let t = Rooms::start().await;
    assert_eq!(t.create_room("lk-room").await.status(), StatusCode::CREATED);
    assert_eq!(t.stack.depth("NotificationQueue").await, 1);
    let webhook = livekit_webhook::LiveKitWebhook {
        api_key: LIVEKIT_KEY.into(),
        api_secret: Secret::new(LIVEKIT_SECRET),
        agent_identity_prefix: "agent-".into(),
        intake: t.stack.call_start_intake(),
    };
    let deliver = |body: serde_json::Value| {
        let body = body.to_string();
        let token =
            devstack::livekit_webhook_token(body.as_bytes(), LIVEKIT_KEY, LIVEKIT_SECRET, 300);
        devstack::server::api_request(
            "POST",
            "/webhook/livekit",
            "/webhook/livekit",
            "",
            &[
                (
                    "content-type".to_string(),
                    "application/webhook+json".to_string(),
                ),
                ("authorization".to_string(), token),
            ],
            body.as_bytes(),
        )
    };
    // LiveKit names the room it created by its sid.
    let sid = t.livekit.room_sid("lk-room").unwrap();
    let joined = webhook
        .handle(deliver(serde_json::json!({
            "event": "participant_joined", "id": "EV_join_1",
            "room": {"name": "lk-room", "sid": sid},
            "participant": {"identity": "guest-7", "kind": "STANDARD"},
            "createdAt": "1795269800",
        })))
        .await;
    assert_eq!(joined.status(), StatusCode::OK);
    let session = json_body(&t.get_session("web-lk-room", &t.key).await);
    assert_eq!(session["participants"], serde_json::json!(["guest-7"]));
    // The room was announced when it opened: still one notification.
    assert_eq!(t.stack.depth("NotificationQueue").await, 1);
    let finished = webhook
        .handle(deliver(serde_json::json!({
            "event": "room_finished", "id": "EV_fin_1",
            "room": {"name": "lk-room", "sid": sid, "creationTime": "1795269700"},
            "createdAt": "1795269800",
        })))
        .await;
    assert_eq!(finished.status(), StatusCode::OK);
    assert_eq!(
        t.get_session("web-lk-room", &t.key).await.status(),
        StatusCode::NOT_FOUND
    );
    let ended = json_body(
        &t.sessions_list()
            .handle(api(
                "GET",
                "/sessions",
                "/sessions",
                "status=ended",
                Some(&t.key),
                None,
            ))
            .await,
    );
    assert_eq!(ended["total"], 1);
    assert_eq!(ended["sessions"][0]["duration"], 100);
}

/// Chat launchers keep one room per user: a new `/call` after the last one
/// ended starts a new session there, announced on its own; a room that may
/// not be reopened stays refused.
#[tokio::test]
async fn a_launcher_room_is_reopened_for_a_new_conversation() {
    use shared::flows::sessions::Opening;
    let t = Rooms::start().await;
    let lifecycle = t.lifecycle();
    let opening = |reopen| Opening {
        kind: SessionKind::Slack,
        key: "U024BE7LH".into(),
        org_id: ORG.into(),
        call_sid: None,
        direction: None,
        from_number: None,
        to_number: None,
        host_identity: Some("U024BE7LH".into()),
        caller: Some("Ada".into()),
        reopen,
    };
    let first = lifecycle
        .open(&opening(true), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(first.room, "slack-U024BE7LH");
    assert_eq!(first.session_id, "slack-U024BE7LH");
    let ending = shared::store::sessions::Ending {
        ended_at: shared::base::time::now_rfc3339(),
        duration_secs: Some(30),
        reason: Some("room finished".into()),
        ..Default::default()
    };
    assert!(lifecycle.end(&first.room, &ending).await.unwrap());
    assert!(lifecycle
        .open(&opening(false), Duration::from_secs(30))
        .await
        .is_err());
    let again = lifecycle
        .open(&opening(true), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(again.room, first.room);
    let session = json_body(&t.get_session("slack-U024BE7LH", &t.key).await);
    assert_eq!(session["status"], "active");
    assert_eq!(session["type"], "slack");
    assert!(session.get("duration").is_none() && session.get("end_reason").is_none());
    let listing = json_body(
        &t.sessions_list()
            .handle(api("GET", "/sessions", "/sessions", "", Some(&t.key), None))
            .await,
    );
    assert_eq!(listing["byType"]["slack"], 1);
    assert_eq!(
        t.stack.depth("NotificationQueue").await,
        2,
        "one per conversation"
    );
    assert!(t.livekit.room_exists("slack-U024BE7LH"));
}

/// WhatsApp calls are phone calls with `whatsapp:` addresses and their own
/// room and session names; placing one is refused until it is enabled.
#[tokio::test]
async fn whatsapp_calls_open_whatsapp_sessions() {
    let t = Rooms::start().await;
    let voice = whatsapp_voice::WhatsAppVoice {
        webhook: t.voice_webhook(SessionKind::Whatsapp, Rooms::flow(Rooms::stream(), None)),
    };
    let answered = voice
        .handle(twilio_post(
            "/whatsapp/voice",
            "",
            &[
                ("CallSid", "CAwa1"),
                ("From", "whatsapp:+14155550100"),
                ("To", "whatsapp:+14155550199"),
                ("Direction", "inbound"),
            ],
        ))
        .await;
    let twiml = text(&answered);
    assert!(
        twiml.contains("<Parameter name=\"roomName\" value=\"whatsapp-CAwa1\"/>"),
        "{twiml}"
    );
    assert!(t.livekit.room_exists("whatsapp-CAwa1"));
    let session = json_body(&t.get_session("whatsapp-CAwa1", &t.key).await);
    assert_eq!(session["type"], "whatsapp");
    assert_eq!(session["from"], "whatsapp:+14155550100");

    let call = |placer| whatsapp_call::WhatsAppCall { placer };
    let request = || {
        api(
            "POST",
            "/whatsapp/call",
            "/whatsapp/call",
            "",
            Some(&t.key),
            Some(serde_json::json!({"to": "whatsapp:+14155550123"})),
        )
    };
    let disabled = call(None).handle(request()).await;
    assert_eq!(disabled.status(), StatusCode::FORBIDDEN);
    assert_eq!(json_body(&disabled)["code"], "whatsapp_calling_disabled");
    assert!(t.twilio.created_calls().is_empty());
    let placed = call(Some(t.placer(SessionKind::Whatsapp)))
        .handle(request())
        .await;
    assert_eq!(placed.status(), StatusCode::OK, "{}", text(&placed));
    let call_sid = json_body(&placed)["callSid"].as_str().unwrap().to_string();
    assert_eq!(
        json_body(&placed)["sessionId"],
        format!("whatsapp-{call_sid}")
    );
    let form = &t.twilio.created_calls()[0];
    let get = |name: &str| form.iter().find(|(k, _)| k == name).unwrap().1.clone();
    assert_eq!(get("To"), "whatsapp:+14155550123");
    assert_eq!(get("From"), "whatsapp:+14155552672");
    assert_eq!(
        get("Url"),
        format!("{PUBLIC_BASE}/whatsapp/voice?org={ORG}")
    );
    assert!(get("StatusCallback").starts_with(&format!(
        "{PUBLIC_BASE}/twilio/status?session=whatsapp&placed=oc_"
    )));

    // Its status callback carries ?session=whatsapp and ends that session.
    let intake = twilio_status::TwilioStatus {
        twilio_auth: Rooms::twilio_auth(),
        intake: t.stack.provider_event_intake(),
        calls: Arc::new(t.stack.outbound_calls()),
    };
    let completed = twilio_post(
        "/twilio/status",
        "session=whatsapp",
        &[
            ("CallSid", call_sid.as_str()),
            ("CallStatus", "completed"),
            ("CallDuration", "7"),
        ],
    );
    assert_eq!(intake.handle(completed).await.status(), StatusCode::OK);
    t.run_provider_events().await;
    assert_eq!(
        t.get_session(&format!("whatsapp-{call_sid}"), &t.key)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert!(!t.livekit.room_exists(&format!("whatsapp-{call_sid}")));
}

/// The room a TwiML answer puts the caller in: the stream's `roomName`
/// parameter, or in SIP mode the room LiveKit's callee dispatch rule makes
/// of the URI's user part (README: `roomPrefix` empty, `randomize: false`).
fn connected_room(twiml: &str) -> String {
    const SIP_ROOM_PREFIX: &str = "";
    if let Some(rest) = twiml.split("<Parameter name=\"roomName\" value=\"").nth(1) {
        return rest.split('"').next().unwrap().to_string();
    }
    let uri = twiml
        .split("sip:")
        .nth(1)
        .unwrap_or_else(|| panic!("no stream or SIP target in {twiml}"));
    format!("{SIP_ROOM_PREFIX}{}", uri.split('@').next().unwrap())
}

/// A WhatsApp call answered by `/whatsapp/voice` with `flow`; if the answer
/// has a menu, the caller presses `digit` (or nothing) and Twilio posts to
/// the `<Gather>` action exactly as given, signing that URL. Returns the
/// room the caller ends up in; the test then looks for the agent there.
async fn whatsapp_caller_room(
    t: &Rooms,
    flow: CallFlow,
    call_sid: &str,
    digit: Option<&str>,
) -> String {
    let voice = whatsapp_voice::WhatsAppVoice {
        webhook: t.voice_webhook(SessionKind::Whatsapp, flow.clone()),
    };
    let mut params = vec![
        ("CallSid", call_sid),
        ("From", "whatsapp:+14155550100"),
        ("To", "whatsapp:+14155550199"),
        ("Direction", "inbound"),
    ];
    let twiml = text(
        &voice
            .handle(twilio_post("/whatsapp/voice", "", &params))
            .await,
    );
    let Some(gather) = twiml.split("<Gather ").nth(1) else {
        return connected_room(&twiml);
    };
    let action = gather
        .split("action=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let action = action.replace("&amp;", "&");
    let path_and_query = action
        .strip_prefix(PUBLIC_BASE)
        .expect("action under our base");
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    assert_eq!(path, "/twilio/routing");
    if let Some(digit) = digit {
        params.push(("Digits", digit));
    }
    let routing = twilio_routing::TwilioRouting {
        twilio_auth: Rooms::twilio_auth(),
        flow,
    };
    let routed = routing.handle(twilio_post(path, query, &params)).await;
    assert_eq!(routed.status(), StatusCode::OK, "{}", text(&routed));
    connected_room(&text(&routed))
}

const WHATSAPP_MENU: &str = r#"{"prompt":"Press 0 for the assistant.",
    "options":{"0":{"action":"agent"},"2":{"action":"say","message":"Bye."}}}"#;

fn sip_mode() -> ConnectMode {
    ConnectMode::Sip {
        endpoint: "abc123.sip.livekit.cloud".into(),
        username: None,
        password: None,
    }
}

/// Issue 17 item 9: a WhatsApp caller who goes through the menu (pressing
/// the agent's key, an unknown key, or nothing) reaches `whatsapp-{CallSid}`,
/// the room the agent was dispatched to, not a phone call's `twilio-` room.
#[tokio::test]
async fn a_whatsapp_caller_at_the_menu_meets_the_agent_in_its_own_room() {
    let t = Rooms::start().await;
    for (call_sid, digit) in [
        ("CAwamenu0", Some("0")),
        ("CAwamenu7", Some("7")),
        ("CAwamenuN", None),
    ] {
        let flow = Rooms::flow(Rooms::stream(), Some(WHATSAPP_MENU));
        let room = whatsapp_caller_room(&t, flow, call_sid, digit).await;
        assert_eq!(room, format!("whatsapp-{call_sid}"));
        assert_eq!(t.livekit.dispatches(&room).len(), 1, "no agent in {room}");
    }
}

/// Item 9 in SIP mode, with and without the menu: the SIP target lands the
/// caller in the WhatsApp room the agent waits in.
#[tokio::test]
async fn a_whatsapp_caller_in_sip_mode_meets_the_agent_in_its_own_room() {
    let t = Rooms::start().await;
    for (call_sid, menu) in [("CAwasip1", None), ("CAwasip2", Some(WHATSAPP_MENU))] {
        let room = whatsapp_caller_room(&t, Rooms::flow(sip_mode(), menu), call_sid, None).await;
        assert_eq!(room, format!("whatsapp-{call_sid}"));
        assert_eq!(t.livekit.dispatches(&room).len(), 1, "no agent in {room}");
    }
    // A phone call in SIP mode still lands in its own twilio- room.
    let voice = t.voice_with(Rooms::flow(sip_mode(), None));
    let twiml = text(
        &voice
            .handle(twilio_post("/twilio/voice", "", &inbound("CAphsip1")))
            .await,
    );
    assert_eq!(connected_room(&twiml), "twilio-CAphsip1");
    assert_eq!(t.livekit.dispatches("twilio-CAphsip1").len(), 1);
}

/// Item 9 in stream mode without a menu: the stream names the WhatsApp room.
#[tokio::test]
async fn a_whatsapp_caller_in_stream_mode_meets_the_agent_in_its_own_room() {
    let t = Rooms::start().await;
    let room =
        whatsapp_caller_room(&t, Rooms::flow(Rooms::stream(), None), "CAwastream1", None).await;
    assert_eq!(room, "whatsapp-CAwastream1");
    assert_eq!(t.livekit.dispatches(&room).len(), 1, "no agent in {room}");
}

/// `/twilio/routing` takes only the voice kinds; the kind is inside the
/// signed URL, so a forged one is refused by the signature first.
#[tokio::test]
async fn routing_refuses_a_kind_it_does_not_know() {
    let routing = twilio_routing::TwilioRouting {
        twilio_auth: Rooms::twilio_auth(),
        flow: Rooms::flow(Rooms::stream(), Some(WHATSAPP_MENU)),
    };
    let params = [("CallSid", "CAkind1"), ("Digits", "0")];
    let web = routing
        .handle(twilio_post("/twilio/routing", "kind=web", &params))
        .await;
    assert_eq!(web.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json_body(&web)["code"], "invalid_kind");
    // Signed for the phone URL, replayed with ?kind=whatsapp: 403.
    let url = format!("{PUBLIC_BASE}/twilio/routing");
    let signature = twilio_signature(TWILIO_TOKEN, &url, &params);
    let replayed = routing
        .handle(twilio_post_signed(
            "/twilio/routing",
            "kind=whatsapp",
            &params,
            Some(&signature),
        ))
        .await;
    assert_eq!(replayed.status(), StatusCode::FORBIDDEN);
}

/// Issue 17 item 12: a session id whose room could never exist is 404 before
/// any store call (DynamoDB's key limit used to make it a 503 that paged).
#[tokio::test]
async fn a_session_id_too_long_to_exist_is_404() {
    let t = Rooms::start().await;
    let response = t
        .get_session(&format!("web-{}", "r".repeat(3000)), &t.key)
        .await;
    assert_eq!(
        response.status(),
        StatusCode::NOT_FOUND,
        "{}",
        text(&response)
    );
    assert_eq!(json_body(&response)["code"], "not_found");
}

/// Item 12: `/phone/end` while DynamoDB fails is 503 (retry), not 404 "Call
/// not found"; Twilio is not asked to hang up and the session stays open.
#[tokio::test]
async fn ending_a_call_while_the_session_store_fails_is_503() {
    use devstack::faults::{Dialect, Fault, FaultPlan, FaultProxy};
    let t = Rooms::start().await;
    let voice = t.voice();
    let answered = voice
        .handle(twilio_post("/twilio/voice", "", &inbound("CAoutage1")))
        .await;
    assert!(text(&answered).contains("<Connect>"));
    let outage = FaultProxy::start(
        local().dynamodb_endpoint(),
        Dialect::AwsJson,
        FaultPlan {
            per_mille: 1000,
            faults: vec![Fault::ServerError],
            seed: 17,
        },
    );
    let failing = local().dynamodb_at(outage.base_url()).await;
    let mut phone_end = t.phone_end();
    phone_end.lifecycle.sessions = Arc::new(shared::store::sessions::DynamoSessionStore::new(
        failing,
        t.stack.resources.table("CallsTable"),
    ));
    let response = phone_end
        .handle(api(
            "POST",
            "/phone/end/{callSid}",
            "/phone/end/CAoutage1",
            "",
            Some(&t.key),
            None,
        ))
        .await;
    assert_eq!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        text(&response)
    );
    assert_eq!(json_body(&response)["code"], "unavailable");
    assert!(t.twilio.ended_calls().is_empty());
    let record = t
        .stack
        .sessions()
        .get("twilio-CAoutage1")
        .await
        .unwrap()
        .unwrap();
    assert!(!record.ended());
}

/// `/phone/end` on a call we placed: Twilio is asked to complete it, the
/// session ends with the API as its reason, and the room goes.
#[tokio::test]
async fn ending_a_placed_call_completes_it_at_twilio() {
    let t = Rooms::start().await;
    let placed = t
        .phone_call()
        .handle(api(
            "POST",
            "/phone/call",
            "/phone/call",
            "",
            Some(&t.key),
            Some(serde_json::json!({"to": "+14155550100", "from": "+14155552673"})),
        ))
        .await;
    assert_eq!(placed.status(), StatusCode::OK, "{}", text(&placed));
    let call_sid = json_body(&placed)["callSid"].as_str().unwrap().to_string();
    let form = &t.twilio.created_calls()[0];
    assert!(form.contains(&("From".to_string(), "+14155552673".to_string())));
    let ended = t
        .phone_end()
        .handle(api(
            "POST",
            "/phone/end/{callSid}",
            &format!("/phone/end/{call_sid}"),
            "",
            Some(&t.key),
            None,
        ))
        .await;
    assert_eq!(ended.status(), StatusCode::OK, "{}", text(&ended));
    assert_eq!(json_body(&ended)["status"], "ended");
    assert_eq!(t.twilio.ended_calls(), vec![call_sid.clone()]);
    let record = t
        .stack
        .sessions()
        .get(&format!("twilio-{call_sid}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.end_reason.as_deref(), Some("ended by API"));
    assert!(!t.livekit.room_exists(&format!("twilio-{call_sid}")));
    // Twilio's own "completed" callback afterwards changes nothing.
    let intake = twilio_status::TwilioStatus {
        twilio_auth: Rooms::twilio_auth(),
        intake: t.stack.provider_event_intake(),
        calls: Arc::new(t.stack.outbound_calls()),
    };
    let completed = twilio_post(
        "/twilio/status",
        "",
        &[
            ("CallSid", call_sid.as_str()),
            ("CallStatus", "completed"),
            ("CallDuration", "5"),
        ],
    );
    assert_eq!(intake.handle(completed).await.status(), StatusCode::OK);
    t.run_provider_events().await;
    let after = t
        .stack
        .sessions()
        .get(&format!("twilio-{call_sid}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.end_reason.as_deref(), Some("ended by API"));
    assert_eq!(after.ended_at, record.ended_at);
}

impl Rooms {
    async fn place_phone_call(&self, key: &str, body: serde_json::Value) -> Response<Body> {
        self.phone_call()
            .handle(api(
                "POST",
                "/phone/call",
                "/phone/call",
                "",
                Some(key),
                Some(body),
            ))
            .await
    }

    /// Twilio's status callback for a placed call, posted to the
    /// `StatusCallback` URL it was given (signed over that whole URL).
    async fn callback(&self, status_url: &str, call_sid: &str, status: &str, duration: &str) {
        let path_and_query = status_url.strip_prefix(PUBLIC_BASE).unwrap();
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let mut params = vec![("CallSid", call_sid), ("CallStatus", status)];
        if !duration.is_empty() {
            params.push(("CallDuration", duration));
        }
        let intake = twilio_status::TwilioStatus {
            twilio_auth: Rooms::twilio_auth(),
            intake: self.stack.provider_event_intake(),
            calls: Arc::new(self.stack.outbound_calls()),
        };
        let response = intake.handle(twilio_post(path, query, &params)).await;
        assert_eq!(response.status(), StatusCode::OK, "{}", text(&response));
        self.run_provider_events().await;
    }
}

/// Issue 17 item 5: `/phone/call` places calls only from a caller id the
/// key's organisation owns; anything else is 403 and Twilio is never asked.
#[tokio::test]
async fn a_phone_call_from_a_caller_id_the_organisation_does_not_own_is_refused() {
    let t = Rooms::start().await;
    for (key, body) in [
        // A number nobody here owns.
        (
            &t.key,
            serde_json::json!({"to": "+14155550100", "from": "+14155559876"}),
        ),
        // The deployment's number belongs to INBOUND_ORG_ID only...
        (
            &t.other_key,
            serde_json::json!({"to": "+14155550100", "from": DEFAULT_CALLER_ID}),
        ),
        // ...and is not another organisation's default either.
        (&t.other_key, serde_json::json!({"to": "+14155550100"})),
        // Another organisation's listed number.
        (
            &t.other_key,
            serde_json::json!({"to": "+14155550100", "from": LISTED_CALLER_ID}),
        ),
    ] {
        let refused = t.place_phone_call(key, body.clone()).await;
        assert_eq!(
            refused.status(),
            StatusCode::FORBIDDEN,
            "{body}: {}",
            text(&refused)
        );
        assert_eq!(json_body(&refused)["code"], "caller_id_not_owned");
    }
    // A key whose organisation has no record has no budget and no numbers.
    let (ghost_key, record) = api_keys::generate("web", "ghost");
    DynamoApiKeyStore::new(
        t.stack.dynamo.clone(),
        t.stack.resources.table("ApiKeysTable"),
    )
    .insert(&record)
    .await
    .unwrap();
    let ghost = t
        .place_phone_call(&ghost_key, serde_json::json!({"to": "+14155550100"}))
        .await;
    assert_eq!(ghost.status(), StatusCode::FORBIDDEN);
    assert_eq!(json_body(&ghost)["code"], "no_organisation");
    assert!(t.twilio.created_calls().is_empty());
    assert!(t.livekit.rooms().is_empty());
    assert_eq!(t.org(OTHER_ORG).await.reserved_seconds, 0);
    // Its own listed number and, for INBOUND_ORG_ID, the default one are fine.
    for from in [LISTED_CALLER_ID, DEFAULT_CALLER_ID] {
        let placed = t
            .place_phone_call(
                &t.key,
                serde_json::json!({"to": "+14155550100", "from": from}),
            )
            .await;
        assert_eq!(placed.status(), StatusCode::OK, "{}", text(&placed));
    }
    assert_eq!(t.twilio.created_calls().len(), 2);
}

/// Item 5: a month that cannot hold another call's time limit refuses it
/// with /calls/initiate's code, before Twilio is asked.
#[tokio::test]
async fn a_phone_call_over_the_monthly_budget_is_refused_before_twilio() {
    let t = Rooms::start().await;
    t.create_org("tight", TIME_LIMIT_SECS - 1, &["+14155552674"])
        .await;
    let (key, record) = api_keys::generate("web", "tight");
    DynamoApiKeyStore::new(
        t.stack.dynamo.clone(),
        t.stack.resources.table("ApiKeysTable"),
    )
    .insert(&record)
    .await
    .unwrap();
    let refused = t
        .place_phone_call(
            &key,
            serde_json::json!({"to": "+14155550100", "from": "+14155552674"}),
        )
        .await;
    assert_eq!(
        refused.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        text(&refused)
    );
    assert_eq!(json_body(&refused)["code"], "usage_limit_exceeded");
    assert!(t.twilio.created_calls().is_empty());
    assert!(t.livekit.rooms().is_empty());
    let org = t.org("tight").await;
    assert_eq!((org.reserved_seconds, org.usage_this_month_seconds), (0, 0));
}

/// Item 5: a placed call holds its time limit on the budget; its completed
/// status settles the real duration once (a duplicate callback changes
/// nothing); a call Twilio refuses releases what it held.
#[tokio::test]
async fn a_placed_phone_call_is_reserved_then_settled_once_with_its_real_duration() {
    let t = Rooms::start().await;
    let placed = t
        .place_phone_call(&t.key, serde_json::json!({"to": "+14155550100"}))
        .await;
    assert_eq!(placed.status(), StatusCode::OK, "{}", text(&placed));
    let call_sid = json_body(&placed)["callSid"].as_str().unwrap().to_string();
    let held = t.org(ORG).await;
    assert_eq!(held.reserved_seconds, TIME_LIMIT_SECS);
    assert_eq!(held.remaining_seconds, 99 * TIME_LIMIT_SECS);
    let form = &t.twilio.created_calls()[0];
    let status_url = form
        .iter()
        .find(|(k, _)| k == "StatusCallback")
        .unwrap()
        .1
        .clone();

    // The ref rides in the signed URL; one that is not ours is refused.
    let intake = twilio_status::TwilioStatus {
        twilio_auth: Rooms::twilio_auth(),
        intake: t.stack.provider_event_intake(),
        calls: Arc::new(t.stack.outbound_calls()),
    };
    let forged = intake
        .handle(twilio_post(
            "/twilio/status",
            "session=phone&placed=oc_nope",
            &[("CallSid", call_sid.as_str()), ("CallStatus", "completed")],
        ))
        .await;
    assert_eq!(forged.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json_body(&forged)["code"], "invalid_placed");
    t.callback(&status_url, &call_sid, "in-progress", "").await;
    assert_eq!(t.org(ORG).await.reserved_seconds, TIME_LIMIT_SECS);
    t.callback(&status_url, &call_sid, "completed", "42").await;
    let settled = t.org(ORG).await;
    assert_eq!(settled.reserved_seconds, 0);
    assert_eq!(settled.usage_this_month_seconds, 42);
    assert_eq!(settled.remaining_seconds, 100 * TIME_LIMIT_SECS - 42);
    // The session ended on the same callback.
    assert_eq!(
        t.get_session(&format!("phone-{call_sid}"), &t.key)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    // Twilio repeats itself, even with another duration: nothing moves.
    t.callback(&status_url, &call_sid, "completed", "42").await;
    t.callback(&status_url, &call_sid, "completed", "99").await;
    assert_eq!(t.org(ORG).await.usage_this_month_seconds, 42);
    assert_eq!(t.org(ORG).await.reserved_seconds, 0);

    // Twilio refuses the next call: no session, and nothing stays held.
    t.twilio.fail_next_calls(
        1,
        400,
        21211,
        "The 'To' number is not a valid phone number.",
    );
    let refused = t
        .place_phone_call(&t.key, serde_json::json!({"to": "+14155550101"}))
        .await;
    assert_eq!(
        refused.status(),
        StatusCode::BAD_GATEWAY,
        "{}",
        text(&refused)
    );
    let after = t.org(ORG).await;
    assert_eq!(
        (after.reserved_seconds, after.usage_this_month_seconds),
        (0, 42)
    );
}

/// Checks followed by acts would send two agents: a double-clicked
/// /room/create, or two "agent on" toggles at once, each dispatch once.
#[tokio::test]
async fn concurrent_opens_and_toggles_dispatch_one_agent() {
    let t = Arc::new(Rooms::start().await);
    let mut creates = Vec::new();
    for _ in 0..5 {
        let t = Arc::clone(&t);
        creates.push(tokio::spawn(async move {
            t.create_room("double-click").await.status()
        }));
    }
    for create in creates {
        assert_eq!(create.await.unwrap(), StatusCode::CREATED);
    }
    assert_eq!(t.livekit.dispatches("double-click").len(), 1);
    assert_eq!(t.stack.depth("NotificationQueue").await, 1);

    let off = t.toggle("agent", "double-click", false, &t.key).await;
    assert_eq!(json_body(&off)["agentActive"], false);
    let mut toggles = Vec::new();
    for _ in 0..5 {
        let t = Arc::clone(&t);
        toggles.push(tokio::spawn(async move {
            let response = t.toggle("agent", "double-click", true, &t.key).await;
            (
                response.status(),
                json_body(&response)["agentActive"].clone(),
            )
        }));
    }
    for toggle in toggles {
        let (status, active) = toggle.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(active, true);
    }
    assert_eq!(t.livekit.dispatches("double-click").len(), 1);
    let creates = t
        .livekit
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/CreateDispatch"))
        .count();
    assert_eq!(creates, 2, "one at creation, one when switched back on");
}

/// Two "start recording"s at once start one egress; stopping a room that
/// never recorded is a 409, not a LiveKit call.
#[tokio::test]
async fn concurrent_recording_starts_start_one_egress() {
    let t = Arc::new(Rooms::start().await);
    assert_eq!(
        t.create_room("rec-race").await.status(),
        StatusCode::CREATED
    );
    let never = t.toggle("recording", "rec-race", false, &t.key).await;
    assert_eq!(never.status(), StatusCode::CONFLICT);
    assert_eq!(json_body(&never)["code"], "not_recording");
    let mut starts = Vec::new();
    for _ in 0..5 {
        let t = Arc::clone(&t);
        starts.push(tokio::spawn(async move {
            t.toggle("recording", "rec-race", true, &t.key)
                .await
                .status()
        }));
    }
    let mut ok = 0;
    for start in starts {
        let status = start.await.unwrap();
        assert!(
            status == StatusCode::OK || status == StatusCode::CONFLICT,
            "{status}"
        );
        ok += usize::from(status == StatusCode::OK);
    }
    assert!(ok >= 1);
    assert_eq!(t.livekit.egresses().len(), 1);
    let stopped = t.toggle("recording", "rec-race", false, &t.key).await;
    assert_eq!(stopped.status(), StatusCode::OK);
}

/// Joins `room` with `invite` as `identity`; the answer.
async fn join_with_invite(t: &Rooms, room: &str, identity: &str, invite: &str) -> Response<Body> {
    t.join(
        serde_json::json!({"roomName": room, "participantIdentity": identity, "invite": invite}),
        None,
    )
    .await
}

/// Issue 17 item 2: identities the server assigns (the room's host, the
/// agent, a launcher's user) cannot be taken through `/room/join`.
#[tokio::test]
async fn a_join_never_takes_the_host_the_agent_or_a_launcher_users_identity() {
    let t = Rooms::start().await;
    let created = json_body(&t.create_room("ident-room").await);
    let invite = created["invite"].as_str().unwrap().to_string();
    let launcher_invite = t.slack_call("U0LAUNCH").await;
    for (room, asked, invite) in [
        ("ident-room", "host-1", &invite),
        ("ident-room", "host", &invite),
        ("ident-room", "agent-x", &invite),
        ("slack-U0LAUNCH", "U0LAUNCH", &launcher_invite),
    ] {
        let joined = join_with_invite(&t, room, asked, invite).await;
        assert_eq!(
            joined.status(),
            StatusCode::OK,
            "{asked}: {}",
            text(&joined)
        );
        let joined = json_body(&joined);
        let claims = t
            .livekit
            .verify_join_token(joined["token"].as_str().unwrap())
            .unwrap();
        assert_ne!(claims["sub"], asked, "a join took `{asked}`");
        assert_eq!(claims["sub"], format!("guest-{asked}"));
        assert_eq!(joined["participantIdentity"], claims["sub"]);
    }
    // With an API key too: every join is a guest.
    let keyed = json_body(
        &t.join(
            serde_json::json!({"roomName": "ident-room", "participantIdentity": "host-1"}),
            Some(&t.key),
        )
        .await,
    );
    assert_eq!(keyed["participantIdentity"], "guest-host-1");
    // A host may not take the guests' or the agent's namespace either.
    for host in ["guest-1", "agent-x"] {
        let refused = t
            .room_create()
            .handle(api(
                "POST",
                "/room/create",
                "/room/create",
                "",
                Some(&t.key),
                Some(serde_json::json!({"roomName": "host-ns-room", "hostIdentity": host})),
            ))
            .await;
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY, "{host}");
        assert_eq!(json_body(&refused)["code"], "reserved_identity");
    }
    assert!(!t.livekit.room_exists("host-ns-room"));
}

/// Issue 17 item 2: names get the identities' checks (length, control characters).
#[tokio::test]
async fn participant_and_host_names_with_control_characters_or_129_chars_are_422() {
    let t = Rooms::start().await;
    let created = json_body(&t.create_room("names-room").await);
    let invite = created["invite"].as_str().unwrap();
    for name in ["Gr\u{7}ace".to_string(), "x".repeat(129)] {
        let refused = t
            .join(
                serde_json::json!({"roomName": "names-room", "participantIdentity": "u1",
                    "participantName": name, "invite": invite}),
                None,
            )
            .await;
        assert_eq!(
            refused.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name:?}"
        );
        let body = json_body(&refused);
        assert_eq!(body["code"], "invalid_identity");
        assert!(body["detail"].as_str().unwrap().contains("participantName"));

        let room = format!("names-host-{}", name.len());
        let refused = t
            .room_create()
            .handle(api(
                "POST",
                "/room/create",
                "/room/create",
                "",
                Some(&t.key),
                Some(serde_json::json!({"roomName": room, "hostName": name})),
            ))
            .await;
        assert_eq!(
            refused.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name:?}"
        );
        let body = json_body(&refused);
        assert_eq!(body["code"], "invalid_identity");
        assert!(body["detail"].as_str().unwrap().contains("hostName"));
        assert!(!t.livekit.room_exists(&room), "nothing created");
        assert!(t.stack.sessions().get(&room).await.unwrap().is_none());
    }
}

/// Issue 17 item 4: an invite belongs to its conversation; the launcher's
/// room reopened for a new one refuses the last one's invites.
#[tokio::test]
async fn an_invite_of_the_last_conversation_is_refused_once_the_launcher_room_reopens() {
    let t = Rooms::start().await;
    let room = "slack-U0REOPEN";
    let first = t.slack_call("U0REOPEN").await;
    let joined = join_with_invite(&t, room, "early", &first).await;
    assert_eq!(joined.status(), StatusCode::OK, "{}", text(&joined));
    let ending = shared::store::sessions::Ending {
        ended_at: shared::base::time::now_rfc3339(),
        duration_secs: Some(5),
        reason: Some("room finished".into()),
        ..Default::default()
    };
    assert!(t.lifecycle().end(room, &ending).await.unwrap());
    let second = t.slack_call("U0REOPEN").await;
    assert!(!t.stack.sessions().get(room).await.unwrap().unwrap().ended());

    let stale = join_with_invite(&t, room, "late", &first).await;
    assert_eq!(stale.status(), StatusCode::UNAUTHORIZED, "{}", text(&stale));
    assert_eq!(json_body(&stale)["code"], "unauthorized");
    let current = join_with_invite(&t, room, "late", &second).await;
    assert_eq!(current.status(), StatusCode::OK, "{}", text(&current));
}

impl Rooms {
    fn revoke_route(&self) -> room_invites_revoke::RoomInvitesRevoke {
        room_invites_revoke::RoomInvitesRevoke {
            access: self.access(),
            lifecycle: self.lifecycle(),
            invites: Self::invites(),
        }
    }

    async fn revoke(&self, room: &str, key: &str) -> Response<Body> {
        self.revoke_route()
            .handle(api(
                "POST",
                "/room/{roomName}/invites/revoke",
                &format!("/room/{room}/invites/revoke"),
                "",
                Some(key),
                None,
            ))
            .await
    }
}

/// Issue 17 item 4: the organisation revokes a room's invites; the old
/// ones are refused, one issued after works.
#[tokio::test]
async fn revoked_invites_are_refused_and_one_issued_after_works() {
    let t = Rooms::start().await;
    let created = json_body(&t.create_room("revoke-room").await);
    let old = created["invite"].as_str().unwrap().to_string();
    assert_eq!(
        join_with_invite(&t, "revoke-room", "g1", &old)
            .await
            .status(),
        StatusCode::OK
    );

    let revoked = t.revoke("revoke-room", &t.key).await;
    assert_eq!(revoked.status(), StatusCode::OK, "{}", text(&revoked));
    let revoked = json_body(&revoked);
    assert_eq!(revoked["roomName"], "revoke-room");
    let fresh = revoked["invite"].as_str().unwrap().to_string();

    let refused = join_with_invite(&t, "revoke-room", "g2", &old).await;
    assert_eq!(
        refused.status(),
        StatusCode::UNAUTHORIZED,
        "{}",
        text(&refused)
    );
    assert_eq!(json_body(&refused)["code"], "unauthorized");
    let admitted = join_with_invite(&t, "revoke-room", "g3", &fresh).await;
    assert_eq!(admitted.status(), StatusCode::OK, "{}", text(&admitted));
    // /room/create again for the open room hands out a working invite too.
    let again = json_body(&t.create_room("revoke-room").await);
    let reissued = again["invite"].as_str().unwrap();
    assert_eq!(
        join_with_invite(&t, "revoke-room", "g4", reissued)
            .await
            .status(),
        StatusCode::OK
    );
}

/// Issue 17 item 4: only the room's organisation revokes; another's key
/// learns nothing (404) and changes nothing.
#[tokio::test]
async fn another_organisation_revoking_a_rooms_invites_is_404_and_changes_nothing() {
    let t = Rooms::start().await;
    let created = json_body(&t.create_room("owned-room").await);
    let invite = created["invite"].as_str().unwrap().to_string();
    let before = t.stack.sessions().get("owned-room").await.unwrap().unwrap();

    let foreign = t.revoke("owned-room", &t.other_key).await;
    assert_eq!(
        foreign.status(),
        StatusCode::NOT_FOUND,
        "{}",
        text(&foreign)
    );
    assert_eq!(json_body(&foreign)["code"], "not_found");
    let missing = t.revoke("no-such-room", &t.key).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let after = t.stack.sessions().get("owned-room").await.unwrap().unwrap();
    assert_eq!(before.invite_key, after.invite_key);
    assert_eq!(
        join_with_invite(&t, "owned-room", "g1", &invite)
            .await
            .status(),
        StatusCode::OK
    );
}

impl Rooms {
    fn join_link_route(&self) -> room_join_link::RoomJoinLink {
        room_join_link::RoomJoinLink {
            lifecycle: self.lifecycle(),
            access: shared::flows::sessions::RoomAccess {
                tokens: Self::join_tokens(),
                invites: Self::invites(),
                client_url: self.livekit_client().client_url(),
                room_url_template: shared::flows::sessions::DEFAULT_ROOM_URL_TEMPLATE.into(),
            },
        }
    }

    /// `GET /room/{room}/join?{query}`.
    async fn open_join_link(&self, room: &str, query: &str) -> Response<Body> {
        self.join_link_route()
            .handle(api(
                "GET",
                "/room/{roomName}/join",
                &format!("/room/{room}/join"),
                query,
                None,
                None,
            ))
            .await
    }

    /// A visit of the link with `invite` (and `extra` query) that must be
    /// redirected: the claims of the token in `Location`.
    async fn guest_by_link(&self, room: &str, invite: &str, extra: &str) -> serde_json::Value {
        let query = format!(
            "invite={}{extra}",
            shared::flows::sessions::url_encode(invite)
        );
        let opened = self.open_join_link(room, &query).await;
        assert_eq!(opened.status(), StatusCode::FOUND, "{}", text(&opened));
        assert_eq!(opened.headers()["cache-control"], "no-store");
        assert_eq!(opened.headers()["referrer-policy"], "no-referrer");
        let location = opened.headers()["location"].to_str().unwrap();
        let token = location
            .split_once("&token=")
            .map(|(_, token)| token)
            .unwrap_or_else(|| panic!("no token in {location}"));
        let claims = self
            .livekit
            .verify_join_token(token)
            .unwrap_or_else(|e| panic!("{e}: {location}"));
        assert_eq!(claims["video"]["room"], room);
        claims
    }
}

fn refused_as(response: &Response<Body>, status: StatusCode, code: &str) {
    assert_eq!(response.status(), status, "{}", text(response));
    assert_eq!(json_body(response)["code"], code);
}

/// Issue 17 item 4: a link a whole channel may see mints a token for a new
/// guest on every visit, and stops working once the room's invites are
/// revoked.
#[tokio::test]
async fn a_shared_join_link_mints_a_new_guest_per_visit_until_revoked() {
    let t = Rooms::start().await;
    let created = json_body(&t.create_room("link-room").await);
    let invite = created["invite"].as_str().unwrap().to_string();

    let first = t.guest_by_link("link-room", &invite, "").await;
    let second = t.guest_by_link("link-room", &invite, "&name=Grace").await;
    for claims in [&first, &second] {
        let identity = claims["sub"].as_str().unwrap();
        assert!(identity.starts_with("guest-"), "{identity}");
    }
    assert_ne!(first["sub"], second["sub"], "two visitors, one identity");
    assert_eq!(first["name"], "Guest");
    assert_eq!(second["name"], "Grace");

    let revoked = json_body(&t.revoke("link-room", &t.key).await);
    let fresh = revoked["invite"].as_str().unwrap();
    let query = format!("invite={}", shared::flows::sessions::url_encode(&invite));
    refused_as(
        &t.open_join_link("link-room", &query).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    t.guest_by_link("link-room", fresh, "").await;
}

/// Every refusal of `/room/{roomName}/join`: no invite, another room's,
/// a tampered or over-long one (401); a room no longer open (404); a bad
/// room name or display name (422).
#[tokio::test]
async fn a_join_link_refuses_missing_foreign_and_stale_invites() {
    use shared::flows::sessions::url_encode;
    let t = Rooms::start().await;
    let a = json_body(&t.create_room("link-a").await)["invite"]
        .as_str()
        .unwrap()
        .to_string();
    let b = json_body(&t.create_room("link-b").await)["invite"]
        .as_str()
        .unwrap()
        .to_string();
    let rooms = &t;
    let unauthorized = |query: String| async move {
        refused_as(
            &rooms.open_join_link("link-a", &query).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        );
    };
    unauthorized(String::new()).await;
    unauthorized("name=Grace".into()).await;
    unauthorized(format!("invite={}", url_encode(&b))).await;
    unauthorized(format!("invite={}x", url_encode(&a))).await;
    unauthorized(format!("invite={}", "v".repeat(5000))).await;

    for (room, query) in [
        ("bad!room", format!("invite={}", url_encode(&a))),
        ("link-a", format!("invite={}&name=", url_encode(&a))),
        ("link-a", format!("invite={}&name=a%07b", url_encode(&a))),
    ] {
        let refused = t.open_join_link(room, &query).await;
        assert_eq!(
            refused.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{room} {query}"
        );
    }

    let ending = shared::store::sessions::Ending {
        ended_at: shared::base::time::now_rfc3339(),
        duration_secs: Some(5),
        reason: Some("room finished".into()),
        ..Default::default()
    };
    assert!(t.lifecycle().end("link-a", &ending).await.unwrap());
    refused_as(
        &t.open_join_link("link-a", &format!("invite={}", url_encode(&a)))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    // The other room's link still works.
    t.guest_by_link("link-b", &b, "").await;
}

#[path = "session_races.rs"]
mod races;

#[path = "two_organisations.rs"]
mod two_organisations;

/// Issue 19: `/twilio/voice` and `/whatsapp/voice` answer for the
/// organisation owning the number called (`To`; WhatsApp senders for
/// WhatsApp); a number nobody owns is `INBOUND_ORG_ID`'s, or, without it,
/// hears that the number is not in service: no room, no session, nothing
/// stored.
#[tokio::test]
async fn inbound_calls_belong_to_the_owner_of_the_number_called() {
    use shared::store::tenancy::{Kind, TenancyStore};
    let t = Rooms::start().await;
    let registry = t.stack.tenancy();
    for (kind, route, prefix, address, registry_kind) in [
        (
            SessionKind::Phone,
            "/twilio/voice",
            "phone",
            "",
            Kind::Voice,
        ),
        (
            SessionKind::Whatsapp,
            "/whatsapp/voice",
            "whatsapp",
            "whatsapp:",
            Kind::WhatsApp,
        ),
    ] {
        let ours = "+14155552681";
        let theirs = "+14155552682";
        let nobodys = "+14155552683";
        registry.claim(&registry_kind.key(ours), ORG).await.unwrap();
        registry
            .claim(&registry_kind.key(theirs), OTHER_ORG)
            .await
            .unwrap();
        let call = |webhook: VoiceWebhook, sid: String, to: &str| {
            let to = format!("{address}{to}");
            let from = format!("{address}+14155550100");
            async move {
                let params = [
                    ("CallSid", sid.as_str()),
                    ("From", from.as_str()),
                    ("To", to.as_str()),
                    ("Direction", "inbound"),
                ];
                text(&webhook.handle(twilio_post(route, "", &params)).await)
            }
        };
        let flow = || Rooms::flow(Rooms::stream(), None);
        for (sid, to, owner_key, other_key) in [
            ("CAown1", ours, &t.key, &t.other_key),
            ("CAown2", theirs, &t.other_key, &t.key),
            // With INBOUND_ORG_ID, a number nobody registered is its.
            ("CAown3", nobodys, &t.key, &t.other_key),
        ] {
            let sid = format!("{sid}{prefix}");
            let twiml = call(t.voice_webhook(kind, flow()), sid.clone(), to).await;
            assert!(twiml.contains("<Connect>"), "{twiml}");
            let session = format!("{prefix}-{sid}");
            let seen = t.get_session(&session, owner_key).await;
            assert_eq!(seen.status(), StatusCode::OK, "{session}: {}", text(&seen));
            assert_eq!(
                t.get_session(&session, other_key).await.status(),
                StatusCode::NOT_FOUND
            );
        }
        // Without INBOUND_ORG_ID: a polite goodbye, and nothing at all kept.
        let calls_before = t.stack.item_count("CallsTable").await;
        let notifications_before = t.stack.depth("NotificationQueue").await;
        let webhook = VoiceWebhook {
            inbound_org: None,
            ..t.voice_webhook(kind, flow())
        };
        let sid = format!("CAnobody{prefix}");
        let twiml = call(webhook, sid.clone(), nobodys).await;
        assert!(twiml.contains("not in service"), "{twiml}");
        assert!(
            twiml.contains("<Hangup/>") && !twiml.contains("<Connect>"),
            "{twiml}"
        );
        assert!(!t.livekit.room_exists(&format!(
            "{}-{sid}",
            if prefix == "phone" {
                "twilio"
            } else {
                "whatsapp"
            }
        )));
        assert_eq!(t.stack.item_count("CallsTable").await, calls_before);
        assert_eq!(
            t.stack.depth("NotificationQueue").await,
            notifications_before
        );
        // An owned number still routes to its owner without the fallback.
        let webhook = VoiceWebhook {
            inbound_org: None,
            ..t.voice_webhook(kind, flow())
        };
        let sid = format!("CAowned{prefix}");
        assert!(call(webhook, sid.clone(), theirs)
            .await
            .contains("<Connect>"));
        let session = format!("{prefix}-{sid}");
        assert_eq!(
            t.get_session(&session, &t.other_key).await.status(),
            StatusCode::OK
        );
        registry
            .release(&registry_kind.key(ours), ORG)
            .await
            .unwrap();
        registry
            .release(&registry_kind.key(theirs), OTHER_ORG)
            .await
            .unwrap();
    }
}

#[path = "session_reconcile.rs"]
mod reconcile;
