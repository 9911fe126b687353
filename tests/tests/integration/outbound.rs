//! Outbound calls (seeds 003 and 004) against fake Twilio and ElevenLabs
//! servers that check auth and the exact fields they receive.

use shared::api::Route;
use shared::queue::sqs_batch::Worker;
use std::sync::Arc;
use std::time::Duration;

use devstack::fakes::{
    call_initiation_failure_body, elevenlabs_signature, post_call_transcription_body,
    twilio_signature, ConversationScript, FakeElevenLabs, FakeTwilio,
};
use lambda_http::{Body, Request, Response};
use shared::base::config::Secret;
use shared::providers::elevenlabs::ElevenLabsClient;
use shared::queue::jobs::SqsJobQueue;
use shared::store::api_keys::{self, ApiKeyStore, DynamoApiKeyStore};
use shared::store::directory::DirectoryStore;

use shared::store::outbound_calls::OutboundCallStore;

use shared::flows::outbound::Providers;
use shared::providers::twilio::TwilioClient;
use shared::store::rate_limits::DynamoRateLimiter;

use crate::support::*;

const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
const TWILIO_TOKEN: &str = "twilio-test-token";
const ELEVEN_KEY: &str = "xi-test-key";
const WEBHOOK_SECRET: &str = "wsec_test_secret";
const ADMIN_TOKEN: &str = "admin-test-token-0123456789";
const PUBLIC_BASE: &str = "https://callops.example.com";
const CUSTOMER: &str = "+14155552671";
const CALLER_ID: &str = "+14155552672";
/// A number the registry gives to a test's second organisation.
const BROKE_CALLER_ID: &str = "+14155552673";

struct Outbound {
    stack: Stack,
    twilio: FakeTwilio,
    eleven: FakeElevenLabs,
    key: String,
}

impl Outbound {
    async fn start() -> Self {
        Self::on(Stack::start().await).await
    }

    /// On a stack whose DynamoDB and SQS requests can be crashed after (`crash.rs`).
    async fn start_crashable() -> Self {
        Self::on(Stack::start_crashable().await).await
    }

    async fn on(stack: Stack) -> Self {
        let (key, record) = api_keys::generate("crm", "acme");
        DynamoApiKeyStore::new(stack.dynamo.clone(), stack.resources.table("ApiKeysTable"))
            .insert(&record)
            .await
            .unwrap();
        Self {
            stack,
            twilio: FakeTwilio::start(ACCOUNT_SID, TWILIO_TOKEN),
            eleven: FakeElevenLabs::start(ELEVEN_KEY),
            key,
        }
    }

    fn providers(&self) -> Providers {
        Providers {
            twilio: Some(TwilioClient {
                http: reqwest::Client::new(),
                base_url: self.twilio.base_url().to_string(),
                account_sid: ACCOUNT_SID.into(),
                auth_token: Secret::new(TWILIO_TOKEN),
                api_key: None,
            }),
            twilio_phone_number: Some(CALLER_ID.into()),
            elevenlabs: Some(self.eleven_client()),
            public_base_url: PUBLIC_BASE.into(),
            org_accounts: None,
        }
    }

    fn eleven_client(&self) -> ElevenLabsClient {
        ElevenLabsClient {
            http: reqwest::Client::new(),
            base_url: self.eleven.base_url().to_string(),
            api_key: Secret::new(ELEVEN_KEY),
        }
    }

    fn api_keys(&self) -> Arc<DynamoApiKeyStore> {
        Arc::new(DynamoApiKeyStore::new(
            self.stack.dynamo.clone(),
            self.stack.resources.table("ApiKeysTable"),
        ))
    }

    fn rate_limiter(&self) -> Arc<DynamoRateLimiter> {
        Arc::new(DynamoRateLimiter {
            client: self.stack.dynamo.clone(),
            table: self.stack.resources.table("IdempotencyTable"),
            // A day-long window: the count cannot reset in the middle of a test.
            window_secs: 86_400,
        })
    }

    fn access(&self, per_window: u64) -> shared::api::access::KeyedAccess {
        shared::api::access::KeyedAccess {
            api_keys: self.api_keys(),
            rate_limiter: self.rate_limiter(),
            per_window,
        }
    }

    fn placement(&self, rate_per_minute: u64) -> shared::flows::outbound::Placement {
        shared::flows::outbound::Placement {
            access: self.access(rate_per_minute),
            directory: Arc::new(self.stack.directory()),
            calls: Arc::new(self.stack.outbound_calls()),
            providers: self.providers(),
            tenancy: Arc::new(self.stack.tenancy()),
            // The default organisation, whose calls may use CALLER_ID.
            default_org: Some("acme".into()),
            dnc: Arc::new(self.stack.dnc()),
        }
    }

    fn queue(&self, logical_id: &str) -> Arc<SqsJobQueue> {
        self.stack.queue(logical_id)
    }

    /// Delivers the monitor queue to the monitor worker until it is empty.
    async fn run_monitor(&self) {
        let monitor = self.monitor();
        self.stack
            .drain("MonitorQueue", |event| {
                let monitor = Arc::clone(&monitor);
                async move { monitor.handle(event).await }
            })
            .await;
    }

    fn initiate(&self, rate_per_minute: u64) -> calls_initiate::CallsInitiate {
        calls_initiate::CallsInitiate {
            placement: self.placement(rate_per_minute),
        }
    }

    fn twiml(&self) -> twiml::Twiml {
        twiml::Twiml {
            twilio_auth: shared::providers::twilio::TwilioWebhookAuth::single(
                Secret::new(TWILIO_TOKEN),
                PUBLIC_BASE.into(),
            ),
            calls: Arc::new(self.stack.outbound_calls()),
            directory: Arc::new(self.stack.directory()),
        }
    }

    fn status(&self) -> twilio_status::TwilioStatus {
        twilio_status::TwilioStatus {
            twilio_auth: shared::providers::twilio::TwilioWebhookAuth::single(
                Secret::new(TWILIO_TOKEN),
                PUBLIC_BASE.into(),
            ),
            intake: self.stack.provider_event_intake(),
            calls: Arc::new(self.stack.outbound_calls()),
        }
    }

    fn outbound_calls(&self) -> outbound_calls::OutboundCalls {
        outbound_calls::OutboundCalls {
            placement: self.placement(30),
            max_call_seconds: 600,
            default_agent_id: Some("agent_default".into()),
            default_phone_number_id: Some("phnum_default".into()),
            monitor_queue: self.queue("MonitorQueue"),
            monitor_interval: Duration::ZERO,
        }
    }

    fn monitor(&self) -> Arc<monitor_worker::MonitorWorker> {
        Arc::new(monitor_worker::MonitorWorker {
            calls: Arc::new(self.stack.outbound_calls()),
            elevenlabs: self.eleven_client(),
            org_accounts: None,
            monitor_queue: self.queue("MonitorQueue"),
            notification_queue: self.queue("NotificationQueue"),
            interval: Duration::ZERO,
        })
    }

    /// The stuck sweep, asking this test's fake Twilio and ElevenLabs.
    fn sweep(&self) -> stuck_sweep::StuckSweep {
        let providers = self.providers();
        stuck_sweep::StuckSweep {
            reconcile: shared::flows::reconcile::Reconciler {
                calls: Arc::new(self.stack.outbound_calls()),
                events: self.stack.provider_event_intake(),
                notifications: self.queue("NotificationQueue"),
                twilio: providers.twilio,
                elevenlabs: providers.elevenlabs,
                org_accounts: None,
                reads_per_provider: 100,
            },
            pipeline: shared::flows::stuck::StuckCalls {
                calls: Arc::new(self.stack.calls()),
                transcription_queue: self.queue("TranscriptionQueue"),
                notification_queue: self.queue("NotificationQueue"),
                redrive_grace: Duration::from_secs(1800),
                transcription_deadline: Duration::from_secs(3600),
            },
            starts: self.stack.stuck_starts(),
            sessions: shared::flows::stuck::StuckSessions {
                sessions: Arc::new(self.stack.sessions()),
                livekit: None,
            },
            replies: None,
            statuses: None,
            webhooks: None,
            batch: 100,
        }
    }

    fn webhook(&self) -> elevenlabs_webhook::ElevenLabsWebhook {
        elevenlabs_webhook::ElevenLabsWebhook {
            secret: Secret::new(WEBHOOK_SECRET),
            intake: self.stack.provider_event_intake(),
        }
    }

    fn admin_request(
        &self,
        method: &str,
        route: &str,
        path: &str,
        body: &str,
        token: Option<&str>,
    ) -> Request {
        admin_request(method, route, path, body, token)
    }

    async fn admin(&self, route: &str, request: Request) -> Response<Body> {
        let directory = self.stack.directory();
        let tenancy = self.stack.tenancy();
        let token = Secret::new(ADMIN_TOKEN);
        let admin = shared::flows::admin::Admin {
            token: &token,
            directory: &directory,
            tenancy: &tenancy,
        };
        match route {
            "assistant-create" => admin.create_assistant(request).await,
            "assistant-get" => admin.get_assistant(request).await,
            "assistant-update" => admin.update_assistant(request).await,
            "assistant-deactivate" => admin.deactivate_assistant(request).await,
            "organisation-create" => admin.create_organisation(request).await,
            "organisation-get" => admin.get_organisation(request).await,
            "organisation-numbers" => admin.numbers(request).await,
            _ => admin.update_organisation(request).await,
        }
    }

    /// A new API key of `org_id`.
    async fn key_of(&self, org_id: &str) -> String {
        let (key, record) = api_keys::generate("crm", org_id);
        self.api_keys().insert(&record).await.unwrap();
        key
    }

    async fn create_org(&self, org_id: &str, limit: u64, topup: u64) {
        let body = serde_json::json!({"org_id": org_id, "name": "Acme", "monthly_limit_seconds": limit, "topup_seconds": topup});
        let response = self
            .admin(
                "organisation-create",
                self.admin_request(
                    "POST",
                    "/organisations",
                    "/organisations",
                    &body.to_string(),
                    Some(ADMIN_TOKEN),
                ),
            )
            .await;
        assert_eq!(response.status(), 201, "{:?}", json_body(&response));
    }

    /// Sets the organisation's `max_concurrent_calls` (default 10): tests
    /// that hold many calls open at once raise it.
    async fn set_max_concurrent_calls(&self, org_id: &str, cap: u32) {
        let patch = serde_json::json!({"max_concurrent_calls": cap});
        let response = self
            .admin(
                "organisation-update",
                self.admin_request(
                    "PATCH",
                    "/organisations/{org_id}",
                    &format!("/organisations/{org_id}"),
                    &patch.to_string(),
                    Some(ADMIN_TOKEN),
                ),
            )
            .await;
        assert_eq!(response.status(), 200, "{:?}", json_body(&response));
    }

    async fn create_assistant(&self, body: serde_json::Value) -> u64 {
        let response = self
            .admin(
                "assistant-create",
                self.admin_request(
                    "POST",
                    "/assistants",
                    "/assistants",
                    &body.to_string(),
                    Some(ADMIN_TOKEN),
                ),
            )
            .await;
        assert_eq!(response.status(), 201, "{:?}", json_body(&response));
        json_body(&response)["assistant_id"].as_u64().unwrap()
    }

    async fn twilio_assistant(&self, org_id: &str) -> u64 {
        self.create_assistant(serde_json::json!({
            "org_id": org_id, "name": "Sarah", "provider": "twilio", "caller_number": CALLER_ID,
            "agent_stream_url": "wss://agent.example.com/media", "default_welcome_message": "Hello from Acme!"
        }))
        .await
    }

    /// A Twilio assistant calling from `number`, which the registry gives
    /// to `org_id` first.
    async fn twilio_assistant_from(&self, org_id: &str, number: &str) -> u64 {
        use shared::store::tenancy::{Kind, TenancyStore};
        self.stack
            .tenancy()
            .claim(&Kind::Voice.key(number), org_id)
            .await
            .unwrap();
        self.create_assistant(serde_json::json!({
            "org_id": org_id, "name": "Sarah", "provider": "twilio", "caller_number": number,
            "agent_stream_url": "wss://agent.example.com/media"
        }))
        .await
    }

    fn initiate_request(&self, body: &serde_json::Value) -> Request {
        let headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("x-api-key".to_string(), self.key.clone()),
        ];
        devstack::server::api_request(
            "POST",
            "/calls/initiate",
            "/calls/initiate",
            "",
            &headers,
            body.to_string().as_bytes(),
        )
    }

    /// A Twilio-signed form request, as Twilio sends it to our public URL.
    fn twilio_request(
        &self,
        method: &str,
        route: &str,
        query: &str,
        params: &[(&str, &str)],
        token: &str,
    ) -> Request {
        let url = format!("{PUBLIC_BASE}{route}?{query}");
        let signed_params: Vec<(&str, &str)> = if method == "GET" {
            vec![]
        } else {
            params.to_vec()
        };
        let signature = twilio_signature(token, &url, &signed_params);
        let body = if method == "GET" {
            String::new()
        } else {
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params)
                .finish()
        };
        let headers = vec![
            (
                "content-type".to_string(),
                "application/x-www-form-urlencoded".to_string(),
            ),
            ("x-twilio-signature".to_string(), signature),
        ];
        devstack::server::api_request(method, route, route, query, &headers, body.as_bytes())
    }
}

fn seed_call(assistant_id: u64) -> serde_json::Value {
    serde_json::json!({
        "assistant_id": assistant_id,
        "to_phone_number": CUSTOMER,
        "welcome_message": "Hi! This is Sarah from TechCorp. Thanks for your interest in our AI solutions!",
        "agenda": "I wanted to follow up on the demo request you submitted yesterday & answer <any> questions."
    })
}

#[tokio::test]
async fn every_validation_error_has_the_seeds_words_and_calls_no_provider() {
    let t = Outbound::start().await;
    t.create_org("acme", 3600, 0).await;
    let assistant = t.twilio_assistant("acme").await;
    t.create_org("broke", 0, 0).await;
    // Not the default organisation: it calls from a number of its own.
    let broke_assistant = t.twilio_assistant_from("broke", BROKE_CALLER_ID).await;
    let inactive = t.twilio_assistant("acme").await;
    let response = t
        .admin(
            "assistant-deactivate",
            t.admin_request(
                "DELETE",
                "/assistants/{assistant_id}",
                &format!("/assistants/{inactive}"),
                "",
                Some(ADMIN_TOKEN),
            ),
        )
        .await;
    assert_eq!(json_body(&response)["is_active"], false);
    let initiate = t.initiate(100);
    let with = |key: &str, value: serde_json::Value| {
        let mut body = seed_call(assistant);
        body[key] = value;
        body
    };
    let without = |key: &str| {
        let mut body = seed_call(assistant);
        body.as_object_mut().unwrap().remove(key);
        body
    };
    let e164 = "Invalid phone number format. Use E.164 format (e.g., +1234567890)";
    let cases: Vec<(&str, serde_json::Value, u16, &str)> = vec![
        (
            "missing +",
            with("to_phone_number", "1234567890".into()),
            400,
            e164,
        ),
        (
            "formatted",
            with("to_phone_number", "(123) 456-7890".into()),
            400,
            e164,
        ),
        (
            "unassigned number",
            with("to_phone_number", "+1234567890".into()),
            400,
            "Phone number +1234567890 is not a valid number in any country; check the country code and number",
        ),
        (
            "letters",
            with("to_phone_number", "+1415555267x".into()),
            400,
            e164,
        ),
        ("missing number", without("to_phone_number"), 400, e164),
        (
            "missing agenda",
            without("agenda"),
            400,
            "agenda is required",
        ),
        (
            "blank agenda",
            with("agenda", "   ".into()),
            400,
            "agenda is required",
        ),
        (
            "long agenda",
            with("agenda", "a".repeat(2001).into()),
            400,
            "agenda must be at most 2000 characters",
        ),
        (
            "long welcome",
            with("welcome_message", "w".repeat(201).into()),
            400,
            "welcome_message must be at most 200 characters",
        ),
        (
            "missing assistant",
            without("assistant_id"),
            400,
            "assistant_id is required and must be an integer",
        ),
        (
            "unknown assistant",
            with("assistant_id", 999_999.into()),
            404,
            "Assistant not found",
        ),
        (
            "inactive assistant",
            with("assistant_id", inactive.into()),
            404,
            "Assistant not found",
        ),
        (
            "another organisation's assistant",
            with("assistant_id", broke_assistant.into()),
            404,
            "Assistant not found",
        ),
    ];
    for (name, body, status, detail) in cases {
        let response = initiate.handle(t.initiate_request(&body)).await;
        assert_eq!(
            response.status(),
            status,
            "{name}: {:?}",
            json_body(&response)
        );
        assert_eq!(json_body(&response)["detail"], detail, "{name}");
    }
    // The exhausted organisation's own key: its month holds no reservation.
    let broke_key = t.key_of("broke").await;
    let body = seed_call(broke_assistant);
    let response = initiate
        .handle(outbound_request_with(&broke_key, "/calls/initiate", &body))
        .await;
    assert_eq!(response.status(), 429, "{:?}", json_body(&response));
    assert_eq!(
        json_body(&response)["detail"],
        "Monthly usage limit exceeded. Please upgrade your plan or add top-up credits."
    );
    let malformed = initiate
        .handle(devstack::server::api_request(
            "POST",
            "/calls/initiate",
            "/calls/initiate",
            "",
            &[("x-api-key".to_string(), t.key.clone())],
            b"{oops",
        ))
        .await;
    assert_eq!(malformed.status(), 400);
    let no_key = initiate
        .handle(devstack::server::api_request(
            "POST",
            "/calls/initiate",
            "/calls/initiate",
            "",
            &[],
            seed_call(assistant).to_string().as_bytes(),
        ))
        .await;
    assert_eq!(no_key.status(), 401);
    assert!(t.twilio.requests().is_empty(), "Twilio was called");
    assert!(t.eleven.requests().is_empty(), "ElevenLabs was called");
}

/// Seed 003's example number is E.164 in form but assigned by no country: it
/// gets its own words, never the format message that cites it.
#[tokio::test]
async fn malformed_and_unassigned_numbers_get_distinct_errors_and_create_nothing() {
    let t = Outbound::start().await;
    t.create_org("acme", 3600, 0).await;
    let assistant = t.twilio_assistant("acme").await;
    let initiate = t.initiate(100);
    for (number, code, detail) in [
        (
            "+1234567890",
            "phone_number_not_valid",
            "Phone number +1234567890 is not a valid number in any country; check the country code and number",
        ),
        (
            "12345",
            "invalid_phone_number",
            "Invalid phone number format. Use E.164 format (e.g., +1234567890)",
        ),
    ] {
        let mut body = seed_call(assistant);
        body["to_phone_number"] = number.into();
        let response = initiate.handle(t.initiate_request(&body)).await;
        assert_eq!(response.status(), 400, "{number}");
        let body = json_body(&response);
        assert_eq!(body["code"], code, "{number}");
        assert_eq!(body["detail"], detail, "{number}");
    }
    assert!(t.twilio.created_calls().is_empty(), "Twilio placed a call");
    assert!(t.twilio.requests().is_empty(), "Twilio was called");
    assert_eq!(
        t.stack.item_count("CallsTable").await,
        0,
        "a call record was stored"
    );
}

#[tokio::test]
async fn a_twilio_call_is_placed_and_its_twiml_carries_the_agenda() {
    let t = Outbound::start().await;
    t.create_org("acme", 3600, 0).await;
    let assistant = t.twilio_assistant("acme").await;
    let response = t
        .initiate(100)
        .handle(t.initiate_request(&seed_call(assistant)))
        .await;
    assert_eq!(response.status(), 200, "{:?}", json_body(&response));
    let result = json_body(&response);
    assert_eq!(result["success"], true);
    assert_eq!(result["message"], "Outbound call initiated successfully");
    assert_eq!(result["assistant_id"], assistant);
    assert_eq!(result["to_phone_number"], CUSTOMER);
    assert_eq!(result["from_phone_number"], CALLER_ID);
    let sid = result["call_sid"].as_str().unwrap().to_string();
    assert!(sid.starts_with("CA"));

    let created = &t.twilio.created_calls()[0];
    let get = |name: &str| {
        created
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(get("To"), vec![CUSTOMER]);
    assert_eq!(get("From"), vec![CALLER_ID]);
    let twiml_url = get("Url").remove(0);
    assert!(
        twiml_url.starts_with(&format!("{PUBLIC_BASE}/twiml?call=oc_")),
        "{twiml_url}"
    );
    assert!(get("StatusCallback")[0].starts_with(&format!("{PUBLIC_BASE}/twilio/status?call=oc_")));
    assert_eq!(
        get("StatusCallbackEvent"),
        vec!["initiated", "ringing", "answered", "completed"]
    );
    // The agenda and greeting never travel in a URL.
    assert!(created
        .iter()
        .all(|(_, v)| !v.contains("demo request") && !v.contains("Sarah from TechCorp")));

    let query = twiml_url.split_once('?').unwrap().1.to_string();
    let params = [
        ("CallSid", sid.as_str()),
        ("AccountSid", ACCOUNT_SID),
        ("From", CALLER_ID),
        ("To", CUSTOMER),
        ("CallStatus", "in-progress"),
        ("Direction", "outbound-api"),
    ];
    for method in ["POST", "GET"] {
        let response = t
            .twiml()
            .handle(t.twilio_request(method, "/twiml", &query, &params, TWILIO_TOKEN))
            .await;
        assert_eq!(response.status(), 200, "{method}");
        assert_eq!(
            response.headers()["content-type"],
            "text/xml; charset=utf-8"
        );
        let xml = String::from_utf8(response.body().as_ref().to_vec()).unwrap();
        assert!(
            xml.contains("<Connect><Stream url=\"wss://agent.example.com/media\">"),
            "{xml}"
        );
        assert!(xml.contains(
            "<Parameter name=\"agenda\" value=\"I wanted to follow up on the demo request you submitted yesterday &amp; answer &lt;any&gt; questions.\"/>"
        ), "{xml}");
        assert!(xml.contains("<Parameter name=\"welcome_message\" value=\"Hi! This is Sarah from TechCorp. Thanks for your interest in our AI solutions!\"/>"));
    }
    // Signature checks: tampered, wrong token, missing header.
    let mut tampered = t.twilio_request("POST", "/twiml", &query, &params, TWILIO_TOKEN);
    *tampered.body_mut() = Body::Text("CallSid=CAevil".into());
    assert_eq!(t.twiml().handle(tampered).await.status(), 403);
    let wrong = t.twilio_request("POST", "/twiml", &query, &params, "not-the-token");
    assert_eq!(t.twiml().handle(wrong).await.status(), 403);
    let mut unsigned = t.twilio_request("POST", "/twiml", &query, &params, TWILIO_TOKEN);
    unsigned.headers_mut().remove("x-twilio-signature");
    assert_eq!(t.twiml().handle(unsigned).await.status(), 400);
}

/// Issue 19: a status callback moves a call only when our side of the call
/// (`From` of a call we placed) is the call's organisation's number;
/// otherwise the worker ignores it (200 already given, record unchanged).
#[tokio::test]
async fn a_status_from_another_organisations_number_moves_nothing() {
    use shared::store::tenancy::{Kind, TenancyStore};
    let t = Outbound::start().await;
    t.create_org("acme", 3600, 0).await;
    t.stack
        .tenancy()
        .claim(&Kind::Voice.key(BROKE_CALLER_ID), "globex")
        .await
        .unwrap();
    let assistant = t.twilio_assistant("acme").await;
    let response = t
        .initiate(100)
        .handle(t.initiate_request(&seed_call(assistant)))
        .await;
    assert_eq!(response.status(), 200, "{:?}", json_body(&response));
    let sid = json_body(&response)["call_sid"]
        .as_str()
        .unwrap()
        .to_string();
    let created = t.twilio.created_calls().remove(0);
    let callback = created
        .iter()
        .find(|(k, _)| k == "StatusCallback")
        .unwrap()
        .1
        .clone();
    let query = callback.split_once('?').unwrap().1.to_string();
    let call_ref = query.trim_start_matches("call=").to_string();
    let status = t.status();
    let send = |from: &'static str| {
        t.twilio_request(
            "POST",
            "/twilio/status",
            &query,
            &[
                ("CallSid", sid.as_str()),
                ("AccountSid", ACCOUNT_SID),
                ("CallStatus", "completed"),
                ("CallDuration", "42"),
                ("Direction", "outbound-api"),
                ("From", from),
                ("To", CUSTOMER),
            ],
            TWILIO_TOKEN,
        )
    };
    assert_eq!(status.handle(send(BROKE_CALLER_ID)).await.status(), 200);
    t.stack.run_provider_events().await;
    let call = t
        .stack
        .outbound_calls()
        .get(&call_ref)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(call.status, "completed");
    assert_eq!(call.duration_secs, None);
    assert_eq!(t.stack.depth("NotificationQueue").await, 0);
    // From the call's own number (the default organisation's), it applies.
    assert_eq!(status.handle(send(CALLER_ID)).await.status(), 200);
    t.stack.run_provider_events().await;
    let call = t
        .stack
        .outbound_calls()
        .get(&call_ref)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(call.status, "completed");
    assert_eq!(call.duration_secs, Some(42));
}

#[tokio::test]
async fn status_callbacks_out_of_order_and_duplicated_count_usage_once() {
    let t = Outbound::start().await;
    t.create_org("acme", 3600, 0).await;
    let assistant = t.twilio_assistant("acme").await;
    let response = t
        .initiate(100)
        .handle(t.initiate_request(&seed_call(assistant)))
        .await;
    let sid = json_body(&response)["call_sid"]
        .as_str()
        .unwrap()
        .to_string();
    let created = t.twilio.created_calls().remove(0);
    let callback = created
        .iter()
        .find(|(k, _)| k == "StatusCallback")
        .unwrap()
        .1
        .clone();
    let query = callback.split_once('?').unwrap().1.to_string();
    let call_ref = query.trim_start_matches("call=").to_string();
    let status = t.status();
    let send = |call_status: &'static str, duration: Option<&'static str>| {
        let mut params = vec![
            ("CallSid", sid.as_str()),
            ("AccountSid", ACCOUNT_SID),
            ("CallStatus", call_status),
        ];
        if let Some(d) = duration {
            params.push(("CallDuration", d));
        }
        t.twilio_request("POST", "/twilio/status", &query, &params, TWILIO_TOKEN)
    };
    for (call_status, duration) in [
        ("ringing", None),
        ("completed", Some("125")),
        ("completed", Some("125")),
        ("in-progress", None),
        ("initiated", None),
    ] {
        let response = status.handle(send(call_status, duration)).await;
        assert_eq!(
            response.status(),
            200,
            "{call_status}: {:?}",
            json_body(&response)
        );
    }
    // Acknowledged first, applied by the worker (in whatever order it gets them).
    t.stack.run_provider_events().await;
    let call = t
        .stack
        .outbound_calls()
        .get(&call_ref)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(call.status, "completed");
    assert_eq!(call.duration_secs, Some(125));
    let org = t
        .stack
        .directory()
        .get_organisation("acme")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(org.usage_this_month_seconds, 125);
    assert_eq!(t.stack.depth("NotificationQueue").await, 1);
    // A forged callback changes nothing.
    let forged = t.twilio_request(
        "POST",
        "/twilio/status",
        &query,
        &[
            ("CallSid", &sid),
            ("CallStatus", "completed"),
            ("CallDuration", "9999"),
        ],
        "wrong",
    );
    assert_eq!(status.handle(forged).await.status(), 403);
    assert_eq!(t.stack.depth("ProviderEventsQueue").await, 0);
    assert_eq!(
        t.stack
            .directory()
            .get_organisation("acme")
            .await
            .unwrap()
            .unwrap()
            .usage_this_month_seconds,
        125
    );

    // Usage now counts against the limit: a 125 s plan is exhausted.
    let patch = serde_json::json!({"monthly_limit_seconds": 125});
    let updated = t
        .admin(
            "organisation-update",
            t.admin_request(
                "PATCH",
                "/organisations/{org_id}",
                "/organisations/acme",
                &patch.to_string(),
                Some(ADMIN_TOKEN),
            ),
        )
        .await;
    assert_eq!(json_body(&updated)["usage_this_month_seconds"], 125);
    let refused = t
        .initiate(100)
        .handle(t.initiate_request(&seed_call(assistant)))
        .await;
    assert_eq!(refused.status(), 429);
    // A top-up lets calls through again.
    let topup = serde_json::json!({"topup_seconds": 600});
    t.admin(
        "organisation-update",
        t.admin_request(
            "PATCH",
            "/organisations/{org_id}",
            "/organisations/acme",
            &topup.to_string(),
            Some(ADMIN_TOKEN),
        ),
    )
    .await;
    assert_eq!(
        t.initiate(100)
            .handle(t.initiate_request(&seed_call(assistant)))
            .await
            .status(),
        200
    );

    // The summary notification.
    let notifier = t.stack.notify_worker(vec![t.stack.slack_webhook()]);
    t.stack.run_notifications(&notifier).await;
    let posts = t.stack.slack.posts();
    assert_eq!(posts.len(), 1);
    let text = posts[0]["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!("📞 Outbound call to {CUSTOMER}")),
        "{text}"
    );
    assert!(
        text.contains("• Status: completed") && text.contains("• Duration: 125s"),
        "{text}"
    );
}

#[tokio::test]
async fn provider_errors_and_rate_limits_are_clear() {
    let t = Outbound::start().await;
    t.create_org("acme", 3600, 0).await;
    let assistant = t.twilio_assistant("acme").await;
    t.twilio
        .fail_next_calls(1, 400, 21211, "Invalid 'To' Phone Number");
    let response = t
        .initiate(100)
        .handle(t.initiate_request(&seed_call(assistant)))
        .await;
    assert_eq!(response.status(), 502);
    assert_eq!(
        json_body(&response)["detail"],
        "Twilio refused the call: Invalid 'To' Phone Number (code 21211)"
    );

    // A fresh key: the limit is per key, and the request above used the other one.
    let (key, record) = api_keys::generate("limited", "acme");
    t.api_keys().insert(&record).await.unwrap();
    let limited = t.initiate(2);
    let statuses: Vec<u16> = {
        let mut out = Vec::new();
        for _ in 0..3 {
            let mut request = t.initiate_request(&seed_call(assistant));
            request
                .headers_mut()
                .insert("x-api-key", key.parse().unwrap());
            out.push(limited.handle(request).await.status().as_u16());
        }
        out
    };
    assert_eq!(statuses, vec![200, 200, 429]);
}

/// Issue 17 item 5: an organisation lists the caller ids it owns; each must
/// be E.164, and a bad one changes nothing.
#[tokio::test]
async fn organisations_list_the_caller_ids_they_own() {
    let t = Outbound::start().await;
    let create = |body: serde_json::Value| {
        t.admin(
            "organisation-create",
            t.admin_request(
                "POST",
                "/organisations",
                "/organisations",
                &body.to_string(),
                Some(ADMIN_TOKEN),
            ),
        )
    };
    let bad = create(serde_json::json!({"org_id": "acme", "name": "Acme", "monthly_limit_seconds": 60, "phone_numbers": ["12345"]})).await;
    assert_eq!(bad.status(), 422);
    assert_eq!(json_body(&bad)["code"], "invalid_phone_number");
    assert!(t
        .stack
        .directory()
        .get_organisation("acme")
        .await
        .unwrap()
        .is_none());
    let created = create(serde_json::json!({"org_id": "acme", "name": "Acme", "monthly_limit_seconds": 60, "phone_numbers": [" +14155552672 ", "+14155552672"]})).await;
    assert_eq!(created.status(), 201);
    assert_eq!(
        json_body(&created)["phone_numbers"],
        serde_json::json!(["+14155552672"])
    );
    let patch = |body: serde_json::Value| {
        t.admin(
            "organisation-update",
            t.admin_request(
                "PATCH",
                "/organisations/{org_id}",
                "/organisations/acme",
                &body.to_string(),
                Some(ADMIN_TOKEN),
            ),
        )
    };
    let refused =
        patch(serde_json::json!({"phone_numbers": ["+14155552673", "not a number"]})).await;
    assert_eq!(refused.status(), 422);
    let updated = patch(serde_json::json!({"phone_numbers": ["+14155552673"]})).await;
    assert_eq!(updated.status(), 200);
    assert_eq!(
        json_body(&updated)["phone_numbers"],
        serde_json::json!(["+14155552673"])
    );
    let stored = t
        .stack
        .directory()
        .get_organisation("acme")
        .await
        .unwrap()
        .unwrap();
    // Issue 19: the registry holds them; the record keeps no list of its own.
    assert!(stored.phone_numbers.is_empty());
    use shared::store::tenancy::TenancyStore;
    let registry = t.stack.tenancy();
    assert_eq!(
        registry
            .owner("voice#+14155552673")
            .await
            .unwrap()
            .as_deref(),
        Some("acme")
    );
    assert_eq!(registry.owner("voice#+14155552672").await.unwrap(), None);
    let fetched = t
        .admin(
            "organisation-get",
            t.admin_request(
                "GET",
                "/organisations/{org_id}",
                "/organisations/acme",
                "",
                Some(ADMIN_TOKEN),
            ),
        )
        .await;
    assert_eq!(
        json_body(&fetched)["phone_numbers"],
        serde_json::json!(["+14155552673"])
    );
}

/// Issue 19: an assistant's caller number must be its organisation's in the
/// number registry when the call is placed (or the deployment's number, for
/// the default organisation); otherwise 403 and no provider is asked.
#[tokio::test]
async fn calls_initiate_uses_only_caller_numbers_the_organisation_owns() {
    use shared::store::tenancy::{Kind, TenancyStore};
    let t = Outbound::start().await;
    t.create_org("acme", 3600, 0).await;
    t.create_org("globex", 3600, 0).await;
    let globex_key = t.key_of("globex").await;
    let initiate = t.initiate(100);
    let place = |key: String, assistant: u64| {
        let initiate = &initiate;
        async move {
            initiate
                .handle(outbound_request_with(
                    &key,
                    "/calls/initiate",
                    &seed_call(assistant),
                ))
                .await
        }
    };
    // The deployment's number is the default organisation's only.
    let borrowing = t.twilio_assistant("globex").await;
    let refused = place(globex_key.clone(), borrowing).await;
    assert_eq!(refused.status(), 403, "{:?}", json_body(&refused));
    assert_eq!(json_body(&refused)["code"], "caller_id_not_owned");
    // Its own registered number is fine...
    let own = t.twilio_assistant_from("globex", BROKE_CALLER_ID).await;
    let placed = place(globex_key.clone(), own).await;
    assert_eq!(placed.status(), 200, "{:?}", json_body(&placed));
    assert_eq!(json_body(&placed)["from_phone_number"], BROKE_CALLER_ID);
    // ...until it is released: checked at call time, not when saved.
    assert!(t
        .stack
        .tenancy()
        .release(&Kind::Voice.key(BROKE_CALLER_ID), "globex")
        .await
        .unwrap());
    let released = place(globex_key, own).await;
    assert_eq!(released.status(), 403);
    // The default organisation keeps calling from the deployment's number.
    let default = t.twilio_assistant("acme").await;
    assert_eq!(place(t.key.clone(), default).await.status(), 200);
    assert_eq!(t.twilio.created_calls().len(), 2);
    assert_eq!(t.org("globex").await.reserved_seconds, 600);
}

/// Issue 17 item 12: an organisation id no organisation can have is 404
/// before any store call, for reading and for changing it.
#[tokio::test]
async fn an_organisation_id_too_long_to_exist_is_404() {
    let t = Outbound::start().await;
    let path = format!("/organisations/{}", "o".repeat(3000));
    for (route, method, body) in [
        ("organisation-get", "GET", ""),
        ("organisation-update", "PATCH", r#"{"name":"x"}"#),
    ] {
        let response = t
            .admin(
                route,
                t.admin_request(
                    method,
                    "/organisations/{org_id}",
                    &path,
                    body,
                    Some(ADMIN_TOKEN),
                ),
            )
            .await;
        assert_eq!(response.status(), 404, "{route}");
        assert_eq!(json_body(&response)["code"], "not_found");
    }
}

#[tokio::test]
async fn admin_routes_need_the_admin_token_and_validate() {
    let t = Outbound::start().await;
    let body = serde_json::json!({"org_id": "acme", "name": "Acme", "monthly_limit_seconds": 60})
        .to_string();
    let unauthorised = t
        .admin(
            "organisation-create",
            t.admin_request("POST", "/organisations", "/organisations", &body, None),
        )
        .await;
    assert_eq!(unauthorised.status(), 401);
    let wrong = t
        .admin(
            "organisation-create",
            t.admin_request(
                "POST",
                "/organisations",
                "/organisations",
                &body,
                Some("nope"),
            ),
        )
        .await;
    assert_eq!(wrong.status(), 401);
    t.create_org("acme", 60, 0).await;
    let again = t
        .admin(
            "organisation-create",
            t.admin_request(
                "POST",
                "/organisations",
                "/organisations",
                &body,
                Some(ADMIN_TOKEN),
            ),
        )
        .await;
    assert_eq!(again.status(), 422);
    let no_stream = serde_json::json!({"org_id": "acme", "name": "x", "provider": "twilio", "agent_stream_url": "https://not-wss"}).to_string();
    let bad = t
        .admin(
            "assistant-create",
            t.admin_request(
                "POST",
                "/assistants",
                "/assistants",
                &no_stream,
                Some(ADMIN_TOKEN),
            ),
        )
        .await;
    assert_eq!(bad.status(), 422);
    assert_eq!(json_body(&bad)["code"], "invalid_stream_url");
    let unknown_org = serde_json::json!({"org_id": "ghost", "name": "x", "provider": "twilio", "agent_stream_url": "wss://a"}).to_string();
    assert_eq!(
        t.admin(
            "assistant-create",
            t.admin_request(
                "POST",
                "/assistants",
                "/assistants",
                &unknown_org,
                Some(ADMIN_TOKEN)
            )
        )
        .await
        .status(),
        422
    );
    let first = t.twilio_assistant("acme").await;
    let second = t.twilio_assistant("acme").await;
    assert_eq!(second, first + 1);
    let got = t
        .admin(
            "assistant-get",
            t.admin_request(
                "GET",
                "/assistants/{assistant_id}",
                &format!("/assistants/{first}"),
                "",
                Some(ADMIN_TOKEN),
            ),
        )
        .await;
    assert_eq!(json_body(&got)["name"], "Sarah");
    let patch =
        serde_json::json!({"name": "Sam", "default_welcome_message": "Hi there"}).to_string();
    let updated = t
        .admin(
            "assistant-update",
            t.admin_request(
                "PATCH",
                "/assistants/{assistant_id}",
                &format!("/assistants/{first}"),
                &patch,
                Some(ADMIN_TOKEN),
            ),
        )
        .await;
    assert_eq!(json_body(&updated)["name"], "Sam");
    assert_eq!(json_body(&updated)["default_welcome_message"], "Hi there");
    let missing = t
        .admin(
            "assistant-get",
            t.admin_request(
                "GET",
                "/assistants/{assistant_id}",
                "/assistants/424242",
                "",
                Some(ADMIN_TOKEN),
            ),
        )
        .await;
    assert_eq!(missing.status(), 404);
    let org = t
        .admin(
            "organisation-get",
            t.admin_request(
                "GET",
                "/organisations/{org_id}",
                "/organisations/acme",
                "",
                Some(ADMIN_TOKEN),
            ),
        )
        .await;
    assert_eq!(json_body(&org)["monthly_limit_seconds"], 60);
}

#[tokio::test]
async fn elevenlabs_assistants_call_with_dynamic_variables_and_the_webhook_completes_them() {
    let t = Outbound::start().await;
    t.create_org("acme", 3600, 0).await;
    let assistant = t
        .create_assistant(serde_json::json!({
            "org_id": "acme", "name": "Donna", "provider": "elevenlabs",
            "elevenlabs_agent_id": "agent_abc", "elevenlabs_phone_number_id": "phnum_xyz"
        }))
        .await;
    let response = t
        .initiate(100)
        .handle(t.initiate_request(&seed_call(assistant)))
        .await;
    assert_eq!(response.status(), 200, "{:?}", json_body(&response));
    let conversation_id = json_body(&response)["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let sent = &t.eleven.outbound_requests()[0];
    assert_eq!(sent["agent_id"], "agent_abc");
    assert_eq!(sent["agent_phone_number_id"], "phnum_xyz");
    assert_eq!(sent["to_number"], CUSTOMER);
    let variables = &sent["conversation_initiation_client_data"]["dynamic_variables"];
    assert!(variables["agenda"]
        .as_str()
        .unwrap()
        .starts_with("I wanted to follow up"));
    assert!(variables["welcome_message"]
        .as_str()
        .unwrap()
        .starts_with("Hi! This is Sarah"));

    let body = post_call_transcription_body(
        "agent_abc",
        &conversation_id,
        "CA123",
        &[("agent", "Hi, this is Donna."), ("user", "Hello!")],
        95,
    );
    let now = chrono::Utc::now().timestamp();
    let webhook = t.webhook();
    let request = |body: &str, signature: Option<String>| {
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        if let Some(signature) = signature {
            headers.push(("elevenlabs-signature".into(), signature));
        }
        devstack::server::api_request(
            "POST",
            "/webhook/elevenlabs",
            "/webhook/elevenlabs",
            "",
            &headers,
            body.as_bytes(),
        )
    };
    // Rejected first: tampered, stale, wrong secret, unsigned.
    let tampered = body.replace("Hello!", "Goodbye!");
    for (name, candidate, signature) in [
        (
            "tampered",
            tampered.as_str(),
            Some(elevenlabs_signature(WEBHOOK_SECRET, now, &body)),
        ),
        (
            "stale",
            body.as_str(),
            Some(elevenlabs_signature(WEBHOOK_SECRET, now - 31 * 60, &body)),
        ),
        (
            "wrong secret",
            body.as_str(),
            Some(elevenlabs_signature("other", now, &body)),
        ),
        ("unsigned", body.as_str(), None),
    ] {
        let response = webhook.handle(request(candidate, signature)).await;
        assert_eq!(response.status(), 401, "{name}");
    }
    assert_eq!(
        t.stack
            .directory()
            .get_organisation("acme")
            .await
            .unwrap()
            .unwrap()
            .usage_this_month_seconds,
        0
    );

    let signed = elevenlabs_signature(WEBHOOK_SECRET, now, &body);
    assert_eq!(
        t.stack.depth("ProviderEventsQueue").await,
        0,
        "rejected, not queued"
    );
    let ok = webhook.handle(request(&body, Some(signed.clone()))).await;
    assert_eq!(ok.status(), 200, "{:?}", json_body(&ok));
    // A duplicate is acknowledged too and applied once, by the worker.
    let dup = webhook.handle(request(&body, Some(signed))).await;
    assert_eq!(dup.status(), 200, "{:?}", json_body(&dup));
    t.stack.run_provider_events().await;
    let call = t
        .stack
        .outbound_calls()
        .get(&conversation_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(call.status, "done");
    assert_eq!(call.duration_secs, Some(95));
    assert_eq!(call.transcript.len(), 2);
    assert_eq!(
        t.stack
            .directory()
            .get_organisation("acme")
            .await
            .unwrap()
            .unwrap()
            .usage_this_month_seconds,
        95
    );
    assert_eq!(t.stack.depth("NotificationQueue").await, 1);

    // The transcript routes read it back.
    let headers = vec![("x-api-key".to_string(), t.key.clone())];
    let transcript_route = conversation_transcript::ConversationTranscript {
        lookup: shared::flows::conversations::ConversationLookup {
            api_keys: t.api_keys(),
            calls: Arc::new(t.stack.outbound_calls()),
            elevenlabs: Some(t.eleven_client()),
            org_accounts: None,
        },
    };
    let path = format!("/conversations/{conversation_id}/transcript");
    let response = transcript_route
        .handle(devstack::server::api_request(
            "GET",
            "/conversations/{conversation_id}/transcript",
            &path,
            "",
            &headers,
            b"",
        ))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        json_body(&response)["transcript"],
        "Agent: Hi, this is Donna.\nUser: Hello!"
    );

    // An initiation failure marks the call failed and notifies.
    let failing = t
        .initiate(100)
        .handle(t.initiate_request(&seed_call(assistant)))
        .await;
    let failed_id = json_body(&failing)["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let failure = call_initiation_failure_body("agent_abc", &failed_id, "busy");
    let response = webhook
        .handle(request(
            &failure,
            Some(elevenlabs_signature(WEBHOOK_SECRET, now, &failure)),
        ))
        .await;
    assert_eq!(response.status(), 200);
    t.stack.run_provider_events().await;
    let failed = t
        .stack
        .outbound_calls()
        .get(&failed_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.status, "failed");
    assert_eq!(failed.failure_reason.as_deref(), Some("busy"));
    t.stack
        .run_notifications(&t.stack.notify_worker(vec![t.stack.slack_webhook()]))
        .await;
    let posts = t.stack.slack.posts();
    assert_eq!(posts.len(), 2);
    assert!(posts.iter().any(|p| p["text"]
        .as_str()
        .unwrap()
        .contains("Agent: Hi, this is Donna.")));
    assert!(posts.iter().any(|p| p["text"]
        .as_str()
        .unwrap()
        .contains("• Status: failed (busy)")));
}

fn outbound_request(key: &str, body: serde_json::Value) -> Request {
    outbound_request_with(key, "/outbound-calls", &body)
}

/// A JSON POST to `route` with an API key.
fn outbound_request_with(key: &str, route: &str, body: &serde_json::Value) -> Request {
    let headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("x-api-key".to_string(), key.to_string()),
    ];
    devstack::server::api_request(
        "POST",
        route,
        route,
        "",
        &headers,
        body.to_string().as_bytes(),
    )
}

#[tokio::test]
async fn seed_004_outbound_calls_add_the_plus_and_monitor_until_done() {
    let t = Outbound::start().await;
    t.create_org("acme", 3600, 0).await;
    t.eleven
        .set_conversation_script(ConversationScript::Finishes {
            polls_before_done: 2,
            transcript: vec![
                ("agent".into(), "Is this about case fraud-123?".into()),
                ("user".into(), "Yes it is.".into()),
            ],
            duration_secs: 61,
        });
    let route = t.outbound_calls();
    let response = route
        .handle(outbound_request(&t.key, serde_json::json!({
            "destination_number": "13473580012",
            "agent_variables": {"case_id": "fraud-123", "customer_org": "Acme Corp", "vendor__legal_name": "Spotify"},
            "monitor": true,
            "monitor_duration": 60
        })))
        .await;
    assert_eq!(response.status(), 200, "{:?}", json_body(&response));
    let result = json_body(&response);
    assert_eq!(result["success"], true);
    assert!(result["error"].is_null());
    let conversation_id = result["conversation_id"].as_str().unwrap().to_string();
    assert_eq!(
        result["dashboard_url"],
        format!("https://elevenlabs.io/app/conversational-ai/history/{conversation_id}")
    );
    let sent = &t.eleven.outbound_requests()[0];
    assert_eq!(sent["to_number"], "+13473580012");
    assert_eq!(sent["agent_id"], "agent_default");
    assert_eq!(
        sent["conversation_initiation_client_data"]["dynamic_variables"]["case_id"],
        "fraud-123"
    );

    t.run_monitor().await;
    assert_eq!(t.eleven.polls(&conversation_id), 3);
    let call = t
        .stack
        .outbound_calls()
        .get(&conversation_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(call.status, "done");
    assert_eq!(call.duration_secs, Some(61));
    assert_eq!(call.transcript[1].message, "Yes it is.");
    assert_eq!(t.stack.depth("NotificationQueue").await, 1);

    let details = conversation_get::ConversationGet {
        lookup: shared::flows::conversations::ConversationLookup {
            api_keys: t.api_keys(),
            calls: Arc::new(t.stack.outbound_calls()),
            elevenlabs: Some(t.eleven_client()),
            org_accounts: None,
        },
    };
    let headers = vec![("x-api-key".to_string(), t.key.clone())];
    let path = format!("/conversations/{conversation_id}");
    let response = details
        .handle(devstack::server::api_request(
            "GET",
            "/conversations/{conversation_id}",
            &path,
            "",
            &headers,
            b"",
        ))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(json_body(&response)["status"], "done");
    assert_eq!(json_body(&response)["callops"]["duration_secs"], 61);
    let unknown = details
        .handle(devstack::server::api_request(
            "GET",
            "/conversations/{conversation_id}",
            "/conversations/conv_nope",
            "",
            &headers,
            b"",
        ))
        .await;
    assert_eq!(unknown.status(), 404);

    // Bad numbers are refused in seed 004's shape, with no provider call.
    let before = t.eleven.outbound_requests().len();
    let bad = route
        .handle(outbound_request(
            &t.key,
            serde_json::json!({"destination_number": "call me"}),
        ))
        .await;
    assert_eq!(bad.status(), 400);
    assert_eq!(json_body(&bad)["success"], false);
    assert_eq!(
        json_body(&bad)["error"],
        "Invalid phone number format. Use E.164 format (e.g., +1234567890)"
    );
    assert_eq!(t.eleven.outbound_requests().len(), before);
}

#[tokio::test]
async fn monitoring_gives_up_at_its_deadline() {
    let t = Outbound::start().await;
    t.create_org("acme", 3600, 0).await;
    t.eleven
        .set_conversation_script(ConversationScript::NeverFinishes);
    let response = t
        .outbound_calls()
        .handle(outbound_request(&t.key, serde_json::json!({"destination_number": "+14155552671", "monitor": true, "monitor_duration": 0})))
        .await;
    let conversation_id = json_body(&response)["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();
    t.run_monitor().await;
    assert_eq!(t.eleven.polls(&conversation_id), 1);
    let call = t
        .stack
        .outbound_calls()
        .get(&conversation_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(call.status, "initiated");
    assert_eq!(t.stack.depth("NotificationQueue").await, 0);
}

/// DynamoDB Local runs transactions one at a time, so it never cancels one
/// with TransactionConflict (checked: 40 concurrent transactions on one item
/// all commit). This connector answers every other TransactWriteItems with
/// the cancellation real DynamoDB sends under contention or throttling,
/// without forwarding it, so nothing is written, as in DynamoDB.
#[derive(Debug)]
struct CancelTransactions {
    inner: aws_sdk_dynamodb::config::SharedHttpClient,
    seen: Arc<std::sync::atomic::AtomicUsize>,
    /// Cancel one transaction in `every` (1: all of them).
    every: usize,
}

impl aws_sdk_dynamodb::config::HttpClient for CancelTransactions {
    fn http_connector(
        &self,
        settings: &aws_smithy_runtime_api::client::http::HttpConnectorSettings,
        components: &aws_sdk_dynamodb::config::RuntimeComponents,
    ) -> aws_smithy_runtime_api::client::http::SharedHttpConnector {
        aws_smithy_runtime_api::client::http::SharedHttpConnector::new(CancellingConnector {
            inner: self.inner.http_connector(settings, components),
            seen: Arc::clone(&self.seen),
            every: self.every,
        })
    }
}

#[derive(Debug)]
struct CancellingConnector {
    inner: aws_smithy_runtime_api::client::http::SharedHttpConnector,
    seen: Arc<std::sync::atomic::AtomicUsize>,
    every: usize,
}

impl aws_smithy_runtime_api::client::http::HttpConnector for CancellingConnector {
    fn call(
        &self,
        request: aws_sdk_dynamodb::config::http::HttpRequest,
    ) -> aws_smithy_runtime_api::client::http::HttpConnectorFuture {
        use aws_smithy_runtime_api::client::http::HttpConnectorFuture;
        let transaction =
            request.headers().get("x-amz-target") == Some("DynamoDB_20120810.TransactWriteItems");
        if !transaction {
            return self.inner.call(request);
        }
        let n = self.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if !n.is_multiple_of(self.every) {
            return self.inner.call(request);
        }
        // Index 0 is the call item, index 1 the organisation all calls share.
        let code = if n.is_multiple_of(2 * self.every) {
            "TransactionConflict"
        } else {
            "ThrottlingError"
        };
        let body = serde_json::json!({
            "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
            "message": format!("Transaction cancelled, please refer cancellation reasons for specific reasons [None, {code}]"),
            "CancellationReasons": [{"Code": "None"}, {"Code": code, "Message": "injected"}],
        });
        let mut response = aws_sdk_dynamodb::config::http::HttpResponse::new(
            400u16.try_into().unwrap(),
            aws_smithy_types::body::SdkBody::from(body.to_string()),
        );
        response
            .headers_mut()
            .insert("content-type", "application/x-amz-json-1.0");
        HttpConnectorFuture::ready(Ok(response))
    }
}

/// The stack's outbound call store behind [`CancelTransactions`], and the
/// count of transactions it has seen.
fn cancelling_store(
    t: &Outbound,
    every: usize,
) -> (
    shared::store::outbound_calls::DynamoOutboundCallStore,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let config = t
        .stack
        .dynamo
        .config()
        .to_builder()
        .http_client(CancelTransactions {
            // DynamoDB Local is plain http on loopback.
            inner: aws_smithy_http_client::Builder::new().build_http(),
            seen: Arc::clone(&seen),
            every,
        })
        .build();
    let store = shared::store::outbound_calls::DynamoOutboundCallStore {
        client: aws_sdk_dynamodb::Client::from_conf(config),
        ..t.stack.outbound_calls()
    };
    (store, seen)
}

/// Calls of one organisation ending at once: their transactions all add to
/// the same organisation item, so DynamoDB cancels some with
/// TransactionConflict (or throttles them). None of those may be read as
/// "already counted".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_call_endings_of_one_organisation_lose_and_double_nothing() {
    use shared::store::directory::Provider;
    use shared::store::outbound_calls::{
        Budget, OutboundCall, Reservation, Reserve, UsageRecorded,
    };

    let t = Outbound::start().await;
    t.create_org("acme", 1_000_000, 0).await;
    let (store, cancelled) = cancelling_store(&t, 2);
    let store = Arc::new(store);
    let calls: Vec<(String, u64)> = (0..20u64)
        .map(|i| (format!("oc_concurrent_{i:02}"), 100 + i * 7))
        .collect();
    let budget = Budget {
        monthly_limit_seconds: 1_000_000,
        topup_seconds: 0,
    };
    let mut records = std::collections::HashMap::new();
    for (call_ref, _) in &calls {
        let call = OutboundCall {
            org_id: Some("acme".into()),
            reservation: Some(Reservation {
                org_id: "acme".into(),
                seconds: 600,
                month: shared::store::directory::usage_month(shared::base::time::now()),
                release_after: shared::base::time::epoch_secs() + 900,
                call_slot: false,
            }),
            ..OutboundCall::initiated(call_ref, Provider::Twilio, CUSTOMER)
        };
        assert_eq!(
            store.create_reserved(&call, budget).await.unwrap(),
            Reserve::Reserved
        );
        records.insert(call_ref.clone(), call);
    }
    let records = Arc::new(records);
    // Each call is recorded twice at once (a duplicated status callback); an
    // error is redelivered, as SQS or Twilio would.
    let tasks = calls.iter().flat_map(|(call_ref, seconds)| {
        [0, 1].map(|_| {
            let store = Arc::clone(&store);
            let records = Arc::clone(&records);
            let call_ref = call_ref.clone();
            let seconds = *seconds;
            tokio::spawn(async move {
                let mut errors = 0;
                loop {
                    match store.record_duration(&records[&call_ref], seconds).await {
                        Ok(recorded) => return (recorded, errors),
                        Err(err) => {
                            errors += 1;
                            assert!(errors < 20, "{call_ref}: {err}");
                        }
                    }
                }
            })
        })
    });
    let results: Vec<(UsageRecorded, u32)> = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let counted = results
        .iter()
        .filter(|(r, _)| *r == UsageRecorded::Counted)
        .count();
    let redelivered: u32 = results.iter().map(|(_, errors)| errors).sum();
    let expected: u64 = calls.iter().map(|(_, seconds)| seconds).sum();
    let usage = t
        .stack
        .directory()
        .get_organisation("acme")
        .await
        .unwrap()
        .unwrap()
        .usage_this_month_seconds;
    let transactions = cancelled.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!(
        "concurrent record_duration: {transactions} transactions sent, {} cancelled by the \
         connector; counted {counted}/20, redelivered {redelivered}; usage {usage} of \
         {expected} (lost {})",
        transactions.div_ceil(2),
        expected as i64 - usage as i64
    );
    assert!(transactions >= 40, "the connector saw no transactions");
    assert_eq!(usage, expected, "usage lost or doubled");
    let org = t
        .stack
        .directory()
        .get_organisation("acme")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(org.reserved_seconds, 0, "every reservation settled");
    assert_eq!(org.remaining_seconds, 1_000_000 - expected);
    assert_eq!(counted, calls.len(), "each call counted exactly once");
    for (call_ref, seconds) in &calls {
        let call = store.get(call_ref).await.unwrap().unwrap();
        assert_eq!(call.duration_secs, Some(*seconds), "{call_ref}");
    }
}

/// A call item that does not exist is an error to retry or investigate,
/// never "already counted" (which would complete the dedup record).
#[tokio::test]
async fn recording_a_missing_calls_duration_is_an_error() {
    let t = Outbound::start().await;
    t.create_org("acme", 3600, 0).await;
    let result = t
        .stack
        .outbound_calls()
        .record_duration(
            &shared::store::outbound_calls::OutboundCall {
                org_id: Some("acme".into()),
                ..shared::store::outbound_calls::OutboundCall::initiated(
                    "oc_never_created",
                    shared::store::directory::Provider::Twilio,
                    CUSTOMER,
                )
            },
            42,
        )
        .await;
    assert!(result.is_err(), "{result:?}");
    let org = t
        .stack
        .directory()
        .get_organisation("acme")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(org.usage_this_month_seconds, 0);
}

/// Twilio never retries a status callback, so one whose usage cannot be
/// recorded now (every transaction cancelled) is still answered 200: the
/// event waits on the queue and is applied once the store works again.
#[tokio::test]
async fn a_status_callback_whose_usage_is_not_recorded_is_retried() {
    let t = Outbound::start().await;
    t.create_org("acme", 3600, 0).await;
    let assistant = t.twilio_assistant("acme").await;
    let (call_ref, sid) = t.place_twilio_call(assistant).await;
    let acked = t.status().handle(t.completed(&call_ref, &sid, 90)).await;
    assert_eq!(acked.status(), 200, "{:?}", json_body(&acked));
    let usage = || async { t.org("acme").await.usage_this_month_seconds };

    // The worker's store fails: the message is reported failed and stays.
    let (busy, seen) = cancelling_store(&t, 1);
    let busy_worker = t.stack.provider_events_worker_with(Arc::new(busy));
    let report = t
        .stack
        .poller("ProviderEventsQueue")
        .poll_once(|event| {
            let worker = Arc::clone(&busy_worker);
            async move { worker.handle(event).await }
        })
        .await
        .unwrap();
    assert_eq!((report.received, report.failed.len()), (1, 1), "{report:?}");
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        6,
        "bounded local retries"
    );
    assert_eq!(usage().await, 0);
    assert_eq!(
        t.stack.depth("ProviderEventsQueue").await,
        1,
        "nothing lost"
    );

    // Redelivered to a working store: counted once, and a duplicate callback changes nothing.
    let again = t.status().handle(t.completed(&call_ref, &sid, 90)).await;
    assert_eq!(again.status(), 200);
    t.stack.run_provider_events().await;
    assert_eq!(usage().await, 90);
    assert_eq!(t.org("acme").await.reserved_seconds, 0);
    assert_eq!(t.stack.depth("NotificationQueue").await, 1);
}

/// The calls table is gone when the callback arrives: Twilio still gets
/// 200, and the event is applied once the table is back.
#[tokio::test]
async fn a_status_callback_survives_a_missing_calls_table() {
    let t = Outbound::start().await;
    t.create_org("acme", 3600, 0).await;
    let assistant = t.twilio_assistant("acme").await;
    let (call_ref, sid) = t.place_twilio_call(assistant).await;
    let missing = shared::store::outbound_calls::DynamoOutboundCallStore {
        calls_table: format!("{}-missing", t.stack.resources.table("CallsTable")),
        ..t.stack.outbound_calls()
    };
    let acked = t.status().handle(t.completed(&call_ref, &sid, 75)).await;
    assert_eq!(acked.status(), 200, "{:?}", json_body(&acked));
    let broken = t.stack.provider_events_worker_with(Arc::new(missing));
    let report = t
        .stack
        .poller("ProviderEventsQueue")
        .poll_once(|event| {
            let worker = Arc::clone(&broken);
            async move { worker.handle(event).await }
        })
        .await
        .unwrap();
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(t.org("acme").await.usage_this_month_seconds, 0);
    t.stack.run_provider_events().await;
    assert_eq!(t.org("acme").await.usage_this_month_seconds, 75);
}

/// A signed ElevenLabs request with an arbitrary body.
fn elevenlabs_request(body: &str) -> Request {
    let signature = elevenlabs_signature(WEBHOOK_SECRET, chrono::Utc::now().timestamp(), body);
    let headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("elevenlabs-signature".to_string(), signature),
    ];
    devstack::server::api_request(
        "POST",
        "/webhook/elevenlabs",
        "/webhook/elevenlabs",
        "",
        &headers,
        body.as_bytes(),
    )
}

/// A post-call body of several MB (per-turn tool results and metrics, a
/// long analysis) is accepted, stored in parts, and applied from them.
#[tokio::test]
async fn a_three_megabyte_post_call_body_is_stored_in_parts_and_applied() {
    let t = Outbound::start().await;
    t.create_org("acme", 3600, 0).await;
    let assistant = t
        .create_assistant(serde_json::json!({
            "org_id": "acme", "name": "Donna", "provider": "elevenlabs",
            "elevenlabs_agent_id": "agent_abc", "elevenlabs_phone_number_id": "phnum_xyz"
        }))
        .await;
    let response = t
        .initiate(100)
        .handle(t.initiate_request(&seed_call(assistant)))
        .await;
    let conversation_id = json_body(&response)["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let turns: Vec<(&str, &str)> = (0..40)
        .map(|i| {
            if i % 2 == 0 {
                ("agent", "Anything else?")
            } else {
                ("user", "Yes.")
            }
        })
        .collect();
    let mut body: serde_json::Value = serde_json::from_str(&post_call_transcription_body(
        "agent_abc",
        &conversation_id,
        "CA123",
        &turns,
        321,
    ))
    .unwrap();
    for line in body["data"]["transcript"].as_array_mut().unwrap() {
        line["tool_results"] = serde_json::json!([{"result_value": "r".repeat(70_000)}]);
    }
    body["data"]["analysis"]["transcript_summary"] = "s".repeat(300_000).into();
    let body = body.to_string();
    assert!(body.len() > 3_000_000, "{}", body.len());

    let response = t.webhook().handle(elevenlabs_request(&body)).await;
    assert_eq!(response.status(), 200, "{:?}", json_body(&response));
    let queued = t.stack.peek("ProviderEventsQueue").await;
    assert_eq!(queued.len(), 1);
    assert!(
        queued[0].len() < 1024,
        "the message refers to the body: {}",
        queued[0]
    );
    let event: shared::queue::jobs::ProviderEvent = serde_json::from_str(&queued[0]).unwrap();
    let shared::queue::jobs::ProviderEvent::Elevenlabs {
        body: shared::queue::jobs::EventBody::Stored(stored),
        ..
    } = event
    else {
        panic!("not stored: {event:?}");
    };
    assert_eq!(stored.bytes, body.len());
    assert_eq!(stored.parts as usize, body.len().div_ceil(350 * 1024));

    t.stack.run_provider_events().await;
    let call = t
        .stack
        .outbound_calls()
        .get(&conversation_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(call.status, "done");
    assert_eq!(call.duration_secs, Some(321));
    assert_eq!(call.transcript.len(), 40);
    assert_eq!(t.org("acme").await.usage_this_month_seconds, 321);
}

/// `post_call_audio` (base64 audio, large) is acknowledged and ignored;
/// a body that is not JSON after a valid signature is still 400; neither
/// stores or queues anything.
#[tokio::test]
async fn audio_webhooks_are_ignored_and_malformed_ones_refused() {
    let t = Outbound::start().await;
    let audio = serde_json::json!({
        "type": "post_call_audio",
        "event_timestamp": chrono::Utc::now().timestamp(),
        "data": {"agent_id": "agent_abc", "conversation_id": "conv_audio", "full_audio": "QUJD".repeat(300_000)},
    })
    .to_string();
    let response = t.webhook().handle(elevenlabs_request(&audio)).await;
    assert_eq!(response.status(), 200, "{:?}", json_body(&response));
    assert_eq!(json_body(&response)["ignored"], "post_call_audio");

    for malformed in [
        "{\"type\": \"post_call_transcription\", \"data\": ",
        "{\"type\": \"post_call_transcription\", \"data\": {}}",
    ] {
        let response = t.webhook().handle(elevenlabs_request(malformed)).await;
        assert_eq!(
            response.status(),
            400,
            "{malformed}: {:?}",
            json_body(&response)
        );
    }
    assert_eq!(t.stack.depth("ProviderEventsQueue").await, 0);
    assert_eq!(t.stack.item_count("CallsTable").await, 0);
}

/// The `call=` ref from a created call's status callback URL.
fn call_ref_of(created: &[(String, String)]) -> String {
    let callback = created
        .iter()
        .find(|(k, _)| k == "StatusCallback")
        .unwrap()
        .1
        .clone();
    callback.split_once("?call=").unwrap().1.to_string()
}

impl Outbound {
    /// Places one Twilio call for `assistant` (the first this test places)
    /// and returns its ref and Twilio's sid.
    async fn place_twilio_call(&self, assistant: u64) -> (String, String) {
        let response = self
            .initiate(100)
            .handle(self.initiate_request(&seed_call(assistant)))
            .await;
        assert_eq!(response.status(), 200, "{:?}", json_body(&response));
        let sid = json_body(&response)["call_sid"]
            .as_str()
            .unwrap()
            .to_string();
        (call_ref_of(&self.twilio.created_calls().remove(0)), sid)
    }

    /// The Twilio sid stored on the call with this ref.
    async fn sid_of(&self, call_ref: &str) -> String {
        self.stack
            .outbound_calls()
            .get(call_ref)
            .await
            .unwrap()
            .unwrap()
            .call_sid
            .unwrap()
    }

    /// The organisation item's count of calls holding a concurrency slot.
    async fn calls_in_flight(&self, org_id: &str) -> i64 {
        self.stack
            .harness_dynamo
            .get_item()
            .table_name(self.stack.resources.table("OrganisationsTable"))
            .key(
                "org_id",
                aws_sdk_dynamodb::types::AttributeValue::S(org_id.into()),
            )
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
            .and_then(|i| i.get("calls_in_flight").cloned())
            .map_or(0, |v| v.as_n().unwrap().parse().unwrap())
    }

    async fn org(&self, org_id: &str) -> shared::store::directory::Organisation {
        self.stack
            .directory()
            .get_organisation(org_id)
            .await
            .unwrap()
            .unwrap()
    }

    /// A signed `completed` callback for the call with this ref and sid.
    fn completed(&self, call_ref: &str, sid: &str, seconds: u64) -> Request {
        let seconds = seconds.to_string();
        self.twilio_request(
            "POST",
            "/twilio/status",
            &format!("call={call_ref}"),
            &[
                ("CallSid", sid),
                ("AccountSid", ACCOUNT_SID),
                ("CallStatus", "completed"),
                ("CallDuration", &seconds),
            ],
            TWILIO_TOKEN,
        )
    }

    /// A signed ElevenLabs post-call webhook.
    fn post_call(&self, conversation_id: &str, seconds: u64) -> Request {
        let body = post_call_transcription_body(
            "agent_abc",
            conversation_id,
            "CA123",
            &[("agent", "Hi."), ("user", "Hello!")],
            seconds,
        );
        let signature = elevenlabs_signature(WEBHOOK_SECRET, chrono::Utc::now().timestamp(), &body);
        let headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("elevenlabs-signature".to_string(), signature),
        ];
        devstack::server::api_request(
            "POST",
            "/webhook/elevenlabs",
            "/webhook/elevenlabs",
            "",
            &headers,
            body.as_bytes(),
        )
    }
}

/// Delivers a request until it is answered 200, as a retrying sender
/// would (409 while another delivery holds the claim, 503 on contention).
async fn deliver_until_ok<F, Fut>(mut send: F) -> u32
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Response<Body>>,
{
    for attempt in 1..=50 {
        let response = send().await;
        match response.status().as_u16() {
            200 => return attempt,
            409 | 503 => tokio::time::sleep(Duration::from_millis(20)).await,
            other => panic!("unexpected {other}: {:?}", json_body(&response)),
        }
    }
    panic!("never answered 200");
}

/// The month holds exactly three reservations: of 30 concurrent requests,
/// three calls are placed and 27 are refused with seed 003's words, and once
/// the three end, usage is their real durations and nothing stays reserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_concurrent_calls_fit_exactly_three_reservations() {
    let t = Outbound::start().await;
    t.create_org("acme", 200, 0).await;
    let assistant = t
        .create_assistant(serde_json::json!({
            "org_id": "acme", "name": "Sarah", "provider": "twilio", "caller_number": CALLER_ID,
            "agent_stream_url": "wss://agent.example.com/media", "max_call_seconds": 60
        }))
        .await;
    let initiate = Arc::new(t.initiate(1000));
    let tasks = (0..30).map(|_| {
        let initiate = Arc::clone(&initiate);
        let request = t.initiate_request(&seed_call(assistant));
        tokio::spawn(async move {
            let response = initiate.handle(request).await;
            (response.status().as_u16(), json_body(&response))
        })
    });
    let results: Vec<(u16, serde_json::Value)> = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let placed: Vec<&serde_json::Value> = results
        .iter()
        .filter(|(status, _)| *status == 200)
        .map(|(_, body)| body)
        .collect();
    let refused = results.iter().filter(|(status, _)| *status == 429).count();
    assert_eq!(placed.len(), 3, "{results:?}");
    assert_eq!(refused, 27, "{results:?}");
    for (status, body) in &results {
        if *status == 429 {
            assert_eq!(
                body["detail"],
                "Monthly usage limit exceeded. Please upgrade your plan or add top-up credits."
            );
        }
    }
    let created = t.twilio.created_calls();
    assert_eq!(created.len(), 3, "Twilio was asked for exactly three calls");
    for call in &created {
        assert!(call.contains(&("TimeLimit".to_string(), "60".to_string())));
    }
    let org = t.org("acme").await;
    assert_eq!((org.reserved_seconds, org.remaining_seconds), (180, 20));

    let status = t.status();
    for (call, seconds) in created.iter().zip([11u64, 22, 33]) {
        let call_ref = call_ref_of(call);
        let sid = t.sid_of(&call_ref).await;
        let response = status.handle(t.completed(&call_ref, &sid, seconds)).await;
        assert_eq!(response.status(), 200, "{:?}", json_body(&response));
    }
    t.stack.run_provider_events().await;
    let org = t.org("acme").await;
    assert_eq!(org.usage_this_month_seconds, 66);
    assert_eq!(org.reserved_seconds, 0);
    assert_eq!(org.remaining_seconds, 200 - 66);
}

/// Twenty calls of one organisation end at the same moment, Twilio status
/// callbacks and ElevenLabs webhooks interleaved, each delivered twice:
/// usage is the sum of their durations, nothing lost, nothing doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_calls_ending_at_once_are_each_counted_once() {
    let t = Outbound::start().await;
    t.create_org("acme", 1_000_000, 0).await;
    t.set_max_concurrent_calls("acme", 100).await;
    let twilio_assistant = t.twilio_assistant("acme").await;
    let eleven_assistant = t
        .create_assistant(serde_json::json!({
            "org_id": "acme", "name": "Donna", "provider": "elevenlabs",
            "elevenlabs_agent_id": "agent_abc", "elevenlabs_phone_number_id": "phnum_xyz"
        }))
        .await;
    let initiate = t.initiate(1000);
    let mut endings: Vec<Request> = Vec::new();
    let mut expected = 0;
    for i in 0..10u64 {
        let response = initiate
            .handle(t.initiate_request(&seed_call(twilio_assistant)))
            .await;
        assert_eq!(response.status(), 200, "{:?}", json_body(&response));
        let sid = json_body(&response)["call_sid"]
            .as_str()
            .unwrap()
            .to_string();
        let call_ref = call_ref_of(&t.twilio.created_calls()[i as usize]);
        let seconds = 30 + i * 3;
        expected += seconds;
        endings.push(t.completed(&call_ref, &sid, seconds));
        endings.push(t.completed(&call_ref, &sid, seconds));

        let response = initiate
            .handle(t.initiate_request(&seed_call(eleven_assistant)))
            .await;
        assert_eq!(response.status(), 200, "{:?}", json_body(&response));
        let conversation_id = json_body(&response)["conversation_id"]
            .as_str()
            .unwrap()
            .to_string();
        let seconds = 40 + i * 5;
        expected += seconds;
        endings.push(t.post_call(&conversation_id, seconds));
        endings.push(t.post_call(&conversation_id, seconds));
    }
    let status = Arc::new(t.status());
    let webhook = Arc::new(t.webhook());
    let tasks = endings.into_iter().map(|request| {
        let status = Arc::clone(&status);
        let webhook = Arc::clone(&webhook);
        tokio::spawn(async move {
            let (parts, body) = request.into_parts();
            deliver_until_ok(|| {
                let request = Request::from_parts(parts.clone(), body.clone());
                let status = Arc::clone(&status);
                let webhook = Arc::clone(&webhook);
                async move {
                    if request.uri().path() == "/twilio/status" {
                        status.handle(request).await
                    } else {
                        webhook.handle(request).await
                    }
                }
            })
            .await
        })
    });
    for attempts in futures_util::future::join_all(tasks).await {
        assert_eq!(attempts.unwrap(), 1, "every delivery acknowledged at once");
    }
    t.stack.run_provider_events().await;
    let org = t.org("acme").await;
    assert_eq!(
        org.usage_this_month_seconds, expected,
        "usage lost or doubled"
    );
    assert_eq!(org.reserved_seconds, 0, "every reservation settled");
}

/// A key reaches only its own organisation: another's assistant, call,
/// conversation and transcript are 404 alike; an exhausted organisation's
/// /outbound-calls is 429; a key of no organisation is refused until assigned.
#[tokio::test]
async fn keys_reach_only_their_own_organisation() {
    let t = Outbound::start().await;
    t.create_org("acme", 3600, 0).await;
    t.create_org("globex", 3600, 0).await;
    t.create_org("broke", 0, 0).await;
    let globex_key = t.key_of("globex").await;
    let globex_assistant = t
        .create_assistant(serde_json::json!({
            "org_id": "globex", "name": "Gail", "provider": "elevenlabs",
            "elevenlabs_agent_id": "agent_abc", "elevenlabs_phone_number_id": "phnum_xyz"
        }))
        .await;
    let initiate = t.initiate(1000);
    // acme's key (t.key) cannot start globex's assistant.
    let response = initiate
        .handle(t.initiate_request(&seed_call(globex_assistant)))
        .await;
    assert_eq!(response.status(), 404);
    assert_eq!(json_body(&response)["detail"], "Assistant not found");
    assert!(t.eleven.outbound_requests().is_empty());
    // globex's own key can, and its conversation is globex's alone.
    let response = initiate
        .handle(outbound_request_with(
            &globex_key,
            "/calls/initiate",
            &seed_call(globex_assistant),
        ))
        .await;
    assert_eq!(response.status(), 200, "{:?}", json_body(&response));
    let conversation_id = json_body(&response)["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let lookup = || shared::flows::conversations::ConversationLookup {
        api_keys: t.api_keys(),
        calls: Arc::new(t.stack.outbound_calls()),
        elevenlabs: Some(t.eleven_client()),
        org_accounts: None,
    };
    let get = |key: &str, route: &str, path: String| {
        devstack::server::api_request(
            "GET",
            route,
            &path,
            "",
            &[("x-api-key".to_string(), key.to_string())],
            b"",
        )
    };
    let details = conversation_get::ConversationGet { lookup: lookup() };
    let transcript = conversation_transcript::ConversationTranscript { lookup: lookup() };
    let details_path = format!("/conversations/{conversation_id}");
    let transcript_path = format!("/conversations/{conversation_id}/transcript");
    let route = "/conversations/{conversation_id}";
    let transcript_route = "/conversations/{conversation_id}/transcript";
    let other = details
        .handle(get(&t.key, route, details_path.clone()))
        .await;
    assert_eq!(other.status(), 404, "{:?}", json_body(&other));
    assert_eq!(json_body(&other)["detail"], "Conversation not found");
    let other = transcript
        .handle(get(&t.key, transcript_route, transcript_path.clone()))
        .await;
    assert_eq!(other.status(), 404, "{:?}", json_body(&other));
    let own = details.handle(get(&globex_key, route, details_path)).await;
    assert_eq!(own.status(), 200, "{:?}", json_body(&own));
    assert_eq!(json_body(&own)["callops"]["org_id"], "globex");

    // An exhausted organisation's /outbound-calls is refused before ElevenLabs is called.
    let broke_key = t.key_of("broke").await;
    let before = t.eleven.outbound_requests().len();
    let response = t
        .outbound_calls()
        .handle(outbound_request(
            &broke_key,
            serde_json::json!({"destination_number": CUSTOMER}),
        ))
        .await;
    assert_eq!(response.status(), 429, "{:?}", json_body(&response));
    assert_eq!(
        json_body(&response)["detail"],
        "Monthly usage limit exceeded. Please upgrade your plan or add top-up credits."
    );
    assert_eq!(t.eleven.outbound_requests().len(), before);

    // A key made before keys had organisations: refused with how to fix it, then assigned.
    let (orphan, mut record) = api_keys::generate("old", "acme");
    record.org_id = None;
    t.api_keys().insert(&record).await.unwrap();
    let response = t
        .outbound_calls()
        .handle(outbound_request(
            &orphan,
            serde_json::json!({"destination_number": CUSTOMER}),
        ))
        .await;
    assert_eq!(response.status(), 403, "{:?}", json_body(&response));
    assert_eq!(json_body(&response)["code"], "api_key_without_organisation");
    assert!(json_body(&response)["detail"]
        .as_str()
        .unwrap()
        .contains("callops-admin api-keys assign"));
    assert!(t.api_keys().assign(&record.key_id, "acme").await.unwrap());
    let response = t
        .outbound_calls()
        .handle(outbound_request(
            &orphan,
            serde_json::json!({"destination_number": CUSTOMER}),
        ))
        .await;
    assert_eq!(response.status(), 200, "{:?}", json_body(&response));
}

/// A call the provider refuses is marked failed with the provider's error
/// and holds no budget.
#[tokio::test]
async fn a_refused_call_releases_its_reservation() {
    let t = Outbound::start().await;
    t.create_org("acme", 3600, 0).await;
    let assistant = t.twilio_assistant("acme").await;
    t.twilio
        .fail_next_calls(1, 400, 21211, "Invalid 'To' Phone Number");
    let response = t
        .initiate(100)
        .handle(t.initiate_request(&seed_call(assistant)))
        .await;
    assert_eq!(response.status(), 502);
    let org = t.org("acme").await;
    assert_eq!((org.reserved_seconds, org.usage_this_month_seconds), (0, 0));
    assert_eq!(org.remaining_seconds, 3600);
    // The refused Create Call still carried the call's ref in its callback URL.
    let attempt = t
        .twilio
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path.ends_with("/Calls.json"))
        .unwrap();
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&attempt.body)
        .into_owned()
        .collect();
    let call_ref = call_ref_of(&form);
    let call = t
        .stack
        .outbound_calls()
        .get(&call_ref)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(call.status, "failed");
    assert!(call.failure_reason.unwrap().contains("21211"));
    assert!(call.usage_counted);
}

/// The organisation's `max_concurrent_calls` bounds its single calls too:
/// racing requests past the cap are refused before Twilio is asked, and a
/// call's end gives its slot back exactly once.
#[tokio::test]
async fn single_calls_beyond_the_organisations_concurrency_cap_are_refused_until_one_ends() {
    let t = Outbound::start().await;
    t.create_org("acme", 3600, 0).await;
    let assistant = t.twilio_assistant("acme").await;
    t.set_max_concurrent_calls("acme", 2).await;

    let initiate = t.initiate(100);
    let answers = futures_util::future::join_all(
        (0..4).map(|_| initiate.handle(t.initiate_request(&seed_call(assistant)))),
    )
    .await;
    let mut statuses: Vec<u16> = answers.iter().map(|a| a.status().as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 429, 429]);
    for refused in answers.iter().filter(|a| a.status() == 429) {
        let body = json_body(refused);
        assert_eq!(body["code"], "concurrency_limit", "{body}");
        assert!(
            body["detail"].as_str().unwrap().contains("2 calls"),
            "{body}"
        );
    }
    let created = t.twilio.created_calls();
    assert_eq!(created.len(), 2, "refused calls never reach Twilio");
    assert_eq!(t.calls_in_flight("acme").await, 2);
    // Refused before anything was written: only the two placed reserved.
    assert_eq!(t.org("acme").await.reserved_seconds, 2 * 600);

    // One ends; its callback, delivered twice, frees one slot.
    let call_ref = call_ref_of(&created[0]);
    let sid = t.sid_of(&call_ref).await;
    for _ in 0..2 {
        let acked = t.status().handle(t.completed(&call_ref, &sid, 42)).await;
        assert_eq!(acked.status(), 200);
        t.stack.run_provider_events().await;
    }
    assert_eq!(t.calls_in_flight("acme").await, 1);
    let next = initiate
        .handle(t.initiate_request(&seed_call(assistant)))
        .await;
    assert_eq!(next.status(), 200, "{:?}", json_body(&next));
    let full = initiate
        .handle(t.initiate_request(&seed_call(assistant)))
        .await;
    assert_eq!(full.status(), 429);

    // A call Twilio refuses gives its slot back at once.
    let ended = call_ref_of(&t.twilio.created_calls()[1]);
    let sid = t.sid_of(&ended).await;
    let acked = t.status().handle(t.completed(&ended, &sid, 5)).await;
    assert_eq!(acked.status(), 200);
    t.stack.run_provider_events().await;
    assert_eq!(t.calls_in_flight("acme").await, 1);
    t.twilio
        .fail_next_calls(1, 400, 21211, "Invalid 'To' Phone Number");
    let refused = initiate
        .handle(t.initiate_request(&seed_call(assistant)))
        .await;
    assert_eq!(refused.status(), 502);
    assert_eq!(t.calls_in_flight("acme").await, 1);
    assert_eq!(t.org("acme").await.usage_this_month_seconds, 47);
}

/// Twilio's answer to Create Call is lost: after it took the call (the
/// connection closes once it is made), or before (it closes before the
/// request arrives). Either way the caller cannot know, so the call is held,
/// never released as refused: the first is settled by its own status
/// callback, which also tells its sid; the second is released by the sweep
/// once Twilio shows no such call.
#[tokio::test]
async fn a_call_whose_twilio_answer_is_lost_is_held_until_twilio_says() {
    use devstack::faults::{Dialect, Fault, FaultPlan, FaultProxy};
    let t = Outbound::start().await;
    t.create_org("acme", 3600, 0).await;
    let assistant = t.twilio_assistant("acme").await;
    let proxy = FaultProxy::start(
        t.twilio.base_url(),
        Dialect::Http,
        FaultPlan {
            per_mille: 1000,
            faults: vec![Fault::DropAfter],
            seed: 5,
        },
    );
    let mut placement = t.placement(100);
    placement.providers.twilio.as_mut().unwrap().base_url = proxy.base_url().to_string();
    let initiate = calls_initiate::CallsInitiate { placement };

    let lost = initiate
        .handle(t.initiate_request(&seed_call(assistant)))
        .await;
    assert_eq!(lost.status(), 502);
    let body = json_body(&lost);
    assert_eq!(body["code"], "call_unconfirmed", "{body}");
    let placed = t.twilio.created_calls_with_sids();
    assert_eq!(placed.len(), 1, "Twilio took the call");
    let (sid, form) = &placed[0];
    let call_ref = call_ref_of(form);
    assert!(body["detail"].as_str().unwrap().contains(&call_ref));
    let held = t
        .stack
        .outbound_calls()
        .get(&call_ref)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (held.status.as_str(), held.call_sid.as_deref()),
        ("initiating", None)
    );
    assert!(!held.usage_counted, "not released as refused");
    assert_eq!(t.org("acme").await.reserved_seconds, 600);
    assert_eq!(t.calls_in_flight("acme").await, 1);
    // Twilio reports the call's end: the callback names its sid, and settles it.
    let acked = t.status().handle(t.completed(&call_ref, sid, 33)).await;
    assert_eq!(acked.status(), 200);
    t.stack.run_provider_events().await;
    let settled = t
        .stack
        .outbound_calls()
        .get(&call_ref)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(settled.call_sid.as_deref(), Some(sid.as_str()));
    assert_eq!(settled.duration_secs, Some(33));
    let org = t.org("acme").await;
    assert_eq!(
        (org.reserved_seconds, org.usage_this_month_seconds),
        (0, 33)
    );
    assert_eq!(t.calls_in_flight("acme").await, 0);

    // Lost before it reached Twilio: held too, until the sweep looks.
    proxy.set_plan(FaultPlan {
        per_mille: 1000,
        faults: vec![Fault::DropBefore],
        seed: 5,
    });
    // Another number: two calls to one number within seconds cannot be
    // told apart at Twilio (the sweep then holds them and asks again).
    let mut other = seed_call(assistant);
    other["to_phone_number"] = "+14155552699".into();
    let lost = initiate.handle(t.initiate_request(&other)).await;
    assert_eq!(
        json_body(&lost)["code"],
        "call_unconfirmed",
        "{:?}",
        json_body(&lost)
    );
    assert_eq!(t.twilio.created_calls().len(), 1, "nothing reached Twilio");
    assert_eq!(t.org("acme").await.reserved_seconds, 600);
    assert_eq!(t.calls_in_flight("acme").await, 1);
    let sweep = t.sweep();
    let later = shared::base::time::epoch_secs() + 600 + 301;
    let report = sweep.run_at(later).await.unwrap();
    assert_eq!(report.calls.released.len(), 1, "{report:?}");
    let released = t
        .stack
        .outbound_calls()
        .get(&report.calls.released[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(released.status, "failed");
    assert_eq!(
        released.failure_reason.as_deref(),
        Some(shared::flows::reconcile::NEVER_PLACED)
    );
    let org = t.org("acme").await;
    assert_eq!(
        (org.reserved_seconds, org.usage_this_month_seconds),
        (0, 33)
    );
    assert_eq!(t.calls_in_flight("acme").await, 0);
}

/// The placing function stops between Twilio's answer and recording the
/// call sid: the record stays `initiating` with its reservation. Once its
/// window has passed, the sweep looks for the call among Twilio's calls to
/// its number, attaches the sid and settles it with Twilio's duration.
#[tokio::test]
async fn a_crash_after_placing_leaves_a_record_the_sweep_finds_at_twilio() {
    crash_after_placing(true).await;
}

/// The placing function stops before Twilio got the request: Twilio has no
/// call to the number, so the sweep releases the reservation at zero as
/// never placed (end reason `failed`).
#[tokio::test]
async fn a_crash_before_twilio_placed_the_call_is_released_as_never_placed() {
    crash_after_placing(false).await;
}

async fn crash_after_placing(placed_at_twilio: bool) {
    use shared::store::outbound_calls::{new_call_ref, Budget, OutboundCall, Reservation, Reserve};
    let t = Outbound::start().await;
    t.create_org("acme", 3600, 0).await;
    let calls = Arc::new(t.stack.outbound_calls());
    // What `outbound::reserve` writes, with a window that has already passed.
    let call_ref = new_call_ref();
    let call = OutboundCall {
        org_id: Some("acme".into()),
        status: "initiating".into(),
        status_rank: 0,
        reservation: Some(Reservation {
            org_id: "acme".into(),
            seconds: 600,
            month: shared::store::directory::usage_month(shared::base::time::now()),
            release_after: shared::base::time::epoch_secs() - 1,
            call_slot: true,
        }),
        ..OutboundCall::initiated(
            &call_ref,
            shared::store::directory::Provider::Twilio,
            CUSTOMER,
        )
    };
    let budget = Budget {
        monthly_limit_seconds: 3600,
        topup_seconds: 0,
    };
    assert_eq!(
        calls.create_reserved(&call, budget).await.unwrap(),
        Reserve::Reserved
    );
    // A second call still within its window stays reserved.
    let running = OutboundCall {
        reservation: Some(Reservation {
            release_after: shared::base::time::epoch_secs() + 900,
            call_slot: true,
            ..call.reservation.clone().unwrap()
        }),
        ..OutboundCall::initiated(
            &new_call_ref(),
            shared::store::directory::Provider::Twilio,
            CUSTOMER,
        )
    };
    let running = OutboundCall {
        org_id: Some("acme".into()),
        status: "initiating".into(),
        status_rank: 0,
        ..running
    };
    assert_eq!(
        calls.create_reserved(&running, budget).await.unwrap(),
        Reserve::Reserved
    );
    // The provider placed the call; then the function died (no attach_provider_ids).
    let placed_sid = if placed_at_twilio {
        Some(
            t.providers()
                .twilio
                .unwrap()
                .create_call(&shared::providers::twilio::NewCall {
                    to: CUSTOMER,
                    from: CALLER_ID,
                    twiml_url: &format!("{PUBLIC_BASE}/twiml?call={call_ref}"),
                    status_callback: &format!("{PUBLIC_BASE}/twilio/status?call={call_ref}"),
                    time_limit_secs: 600,
                    amd_callback: None,
                })
                .await
                .unwrap(),
        )
    } else {
        None
    };
    assert_eq!(t.org("acme").await.reserved_seconds, 1200);
    assert_eq!(t.calls_in_flight("acme").await, 2);

    let sweep = t.sweep();
    let now = shared::base::time::epoch_secs();
    let report = sweep.run_at(now).await.unwrap();
    let Some(sid) = placed_sid else {
        assert_eq!(report.calls.released, vec![call_ref.clone()]);
        let swept = calls.get(&call_ref).await.unwrap().unwrap();
        assert_eq!(swept.status, "failed");
        assert_eq!(
            swept.failure_reason.as_deref(),
            Some(shared::flows::reconcile::NEVER_PLACED)
        );
        assert_eq!(
            swept.end_reason,
            Some(shared::base::end_reason::EndReason::Failed)
        );
        let org = t.org("acme").await;
        assert_eq!(
            (org.reserved_seconds, org.usage_this_month_seconds),
            (600, 0)
        );
        // A second run finds nothing more to do; the running call keeps its hold.
        assert_eq!(
            sweep.run_at(now).await.unwrap(),
            stuck_sweep::SweepReport::default()
        );
        assert_eq!(t.org("acme").await.reserved_seconds, 600);
        assert_eq!(
            t.calls_in_flight("acme").await,
            1,
            "the sweep freed its slot"
        );
        return;
    };
    // Found at Twilio by its number: its sid attached, still queued there.
    assert_eq!(
        report.calls.still_open,
        vec![call_ref.clone()],
        "{report:?}"
    );
    let found = calls.get(&call_ref).await.unwrap().unwrap();
    assert_eq!(found.call_sid.as_deref(), Some(sid.as_str()));
    assert_eq!(t.org("acme").await.reserved_seconds, 1200, "still held");
    // It happened: Twilio says 75 s.
    t.twilio.advance_call(&sid, "completed", Some(75));
    let later = sweep.run_at(now + 300).await.unwrap();
    assert_eq!(later.calls.reconciled, vec![call_ref.clone()]);
    t.stack.run_provider_events().await;
    let settled = calls.get(&call_ref).await.unwrap().unwrap();
    assert_eq!(settled.duration_secs, Some(75));
    assert!(settled.reconciled);
    let org = t.org("acme").await;
    assert_eq!(
        (org.reserved_seconds, org.usage_this_month_seconds),
        (600, 75)
    );
    assert_eq!(
        t.calls_in_flight("acme").await,
        1,
        "settled once, one slot freed"
    );
}

/// A call placed on the last day of a month and ending on the first of the
/// next is counted once, in the month it was placed (its reservation's).
#[tokio::test]
async fn a_call_spanning_midnight_on_the_first_counts_in_the_month_it_was_placed() {
    use shared::store::outbound_calls::{new_call_ref, Budget, OutboundCall, Reservation, Reserve};
    let t = Outbound::start().await;
    t.create_org("acme", 3600, 0).await;
    let calls = t.stack.outbound_calls();
    let call = OutboundCall {
        org_id: Some("acme".into()),
        reservation: Some(Reservation {
            org_id: "acme".into(),
            seconds: 600,
            month: "2026-10".into(),
            release_after: shared::base::time::epoch_secs() + 900,
            call_slot: false,
        }),
        ..OutboundCall::initiated(
            &new_call_ref(),
            shared::store::directory::Provider::Twilio,
            CUSTOMER,
        )
    };
    let budget = Budget {
        monthly_limit_seconds: 3600,
        topup_seconds: 0,
    };
    assert_eq!(
        calls.create_reserved(&call, budget).await.unwrap(),
        Reserve::Reserved
    );
    for _ in 0..2 {
        calls.record_duration(&call, 45).await.unwrap();
    }
    let item = t
        .stack
        .dynamo
        .get_item()
        .table_name(t.stack.resources.table("OrganisationsTable"))
        .key(
            "org_id",
            aws_sdk_dynamodb::types::AttributeValue::S("acme".into()),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let number = |name: &str| item.get(name).and_then(|v| v.as_n().ok()).cloned();
    assert_eq!(number("usage#2026-10").as_deref(), Some("45"));
    assert_eq!(number("reserved#2026-10").as_deref(), Some("0"));
    assert_eq!(number("held#2026-10").as_deref(), Some("45"));
    // The month it ended in (now) is untouched.
    let org = t.org("acme").await;
    assert_eq!((org.usage_this_month_seconds, org.reserved_seconds), (0, 0));
}

/// The provider-events worker killed right after each of its writes (the
/// Twilio status event's dedup claim, status, usage, notification): SQS's
/// redelivery finishes it, usage is counted once and one summary is queued.
#[tokio::test]
async fn the_provider_events_worker_killed_after_any_write_finishes_once() {
    use crate::crash::{event_of, redeliver_until_settled, run_or_crash};
    let t = Outbound::start_crashable().await;
    t.create_org("acme", 1_000_000, 0).await;
    let assistant = t.twilio_assistant("acme").await;
    let initiate = t.initiate(1000);
    let status = t.status();
    let mut worker = Arc::try_unwrap(
        t.stack
            .provider_events_worker_with(Arc::new(t.stack.outbound_calls())),
    )
    .ok()
    .expect("a fresh worker");
    // Short, so a killed worker's claim frees within the test.
    worker.processor.lease = Duration::from_secs(1);
    let worker = Arc::new(worker);

    // Places a call and has Twilio report it completed; returns the queued event.
    let mut placed = 0;
    let mut next_event = |seconds: u64| {
        placed += 1;
        let n = placed - 1;
        let initiate = &initiate;
        let status = &status;
        let t = &t;
        async move {
            let response = initiate
                .handle(t.initiate_request(&seed_call(assistant)))
                .await;
            assert_eq!(response.status(), 200, "{:?}", json_body(&response));
            let sid = json_body(&response)["call_sid"]
                .as_str()
                .unwrap()
                .to_string();
            let call_ref = call_ref_of(&t.twilio.created_calls()[n]);
            let answer = status.handle(t.completed(&call_ref, &sid, seconds)).await;
            assert_eq!(answer.status(), 200);
            let message = t.stack.peek("ProviderEventsQueue").await.remove(0);
            t.stack.discard_queued("ProviderEventsQueue").await;
            message
        }
    };

    let clean = next_event(10).await;
    t.stack.crash.count();
    assert!(worker
        .handle(event_of(clean, 1))
        .await
        .batch_item_failures
        .is_empty());
    let writes = t.stack.crash.seen();
    assert!(writes >= 3, "{writes}");
    let mut expected = 10;
    for k in 1..=writes {
        let seconds = 20 + k;
        expected += seconds;
        let message = next_event(seconds).await;
        t.stack.crash.arm(k);
        let handler = Arc::clone(&worker);
        let event = event_of(message.clone(), 1);
        let _ = run_or_crash(&t.stack, async move { handler.handle(event).await }).await;
        t.stack.crash.count();
        redeliver_until_settled(&worker, &message, &format!("crash after write {k}")).await;
    }
    let org = t.org("acme").await;
    assert_eq!(
        org.usage_this_month_seconds, expected,
        "usage lost or doubled"
    );
    assert_eq!(org.reserved_seconds, 0);
    // A job re-sent by a redelivery is the same notification (same id), which
    // the notify worker posts once.
    let mut summaries: Vec<String> = Vec::new();
    for _ in 0..5 {
        for body in t.stack.peek("NotificationQueue").await {
            let job: serde_json::Value = serde_json::from_str(&body).unwrap();
            summaries.push(job["notification_id"].as_str().unwrap().to_string());
        }
    }
    summaries.sort();
    summaries.dedup();
    assert_eq!(
        summaries.len() as u64,
        writes + 1,
        "one summary per call: {summaries:?}"
    );
}

/// The monitor worker killed right after each of its writes while it ends a
/// finished conversation (transcript, status, usage, summary): SQS's
/// redelivery finishes it and usage is counted once.
#[tokio::test]
async fn the_monitor_worker_killed_after_any_write_finishes_once() {
    use crate::crash::{event_of, redeliver_until_settled, run_or_crash};
    let t = Outbound::start_crashable().await;
    t.create_org("acme", 1_000_000, 0).await;
    t.eleven
        .set_conversation_script(ConversationScript::Finishes {
            polls_before_done: 0,
            transcript: vec![("agent".into(), "Hello.".into())],
            duration_secs: 33,
        });
    let route = t.outbound_calls();
    let monitor = t.monitor();
    let next_job = || async {
        let response = route
            .handle(outbound_request(
                &t.key,
                serde_json::json!({"destination_number": CUSTOMER, "monitor": true, "monitor_duration": 600}),
            ))
            .await;
        assert_eq!(response.status(), 200, "{:?}", json_body(&response));
        let job = t.stack.peek("MonitorQueue").await.remove(0);
        t.stack.discard_queued("MonitorQueue").await;
        job
    };

    let clean = next_job().await;
    t.stack.crash.count();
    assert!(monitor
        .handle(event_of(clean, 1))
        .await
        .batch_item_failures
        .is_empty());
    let writes = t.stack.crash.seen();
    assert!(writes >= 3, "{writes}");
    for k in 1..=writes {
        let job = next_job().await;
        t.stack.crash.arm(k);
        let handler = Arc::clone(&monitor);
        let event = event_of(job.clone(), 1);
        let _ = run_or_crash(&t.stack, async move { handler.handle(event).await }).await;
        t.stack.crash.count();
        redeliver_until_settled(&monitor, &job, &format!("crash after write {k}")).await;
        // A redelivered job may have queued its own re-check; finish those too.
        t.run_monitor().await;
    }
    let org = t.org("acme").await;
    assert_eq!(
        org.usage_this_month_seconds,
        33 * (writes + 1),
        "usage lost or doubled"
    );
    assert_eq!(org.reserved_seconds, 0);
}

#[path = "reconcile.rs"]
mod reconciliation;

#[path = "call_log.rs"]
mod call_log;

impl Outbound {
    fn dnc(&self) -> shared::flows::dnc::DncApi {
        shared::flows::dnc::DncApi {
            access: self.access(1000),
            store: Arc::new(self.stack.dnc()),
        }
    }
}

/// A `/dnc` request with an API key.
fn dnc_request(key: &str, method: &str, path: &str, query: &str, body: &str) -> Request {
    let headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("x-api-key".to_string(), key.to_string()),
    ];
    let route = if path.starts_with("/dnc/") {
        "/dnc/{number}"
    } else {
        "/dnc"
    };
    devstack::server::api_request(method, route, path, query, &headers, body.as_bytes())
}

#[tokio::test]
async fn the_do_not_call_list_is_added_to_listed_and_removed_per_organisation() {
    let t = Outbound::start().await;
    let dnc = t.dnc();
    let added = dnc
        .handle(dnc_request(
            &t.key,
            "POST",
            "/dnc",
            "",
            r#"{"numbers": ["+14155550100", "+442071838750", "+14155550100"], "reason": "asked not to be called"}"#,
        ))
        .await;
    assert_eq!(added.status(), 200, "{:?}", json_body(&added));
    assert_eq!(json_body(&added)["added"], 2);

    // One bad row refuses the request, naming every bad row; nothing is added.
    let refused = dnc
        .handle(dnc_request(
            &t.key,
            "POST",
            "/dnc",
            "",
            r#"{"numbers": ["+12025550143", "hello", "+1"]}"#,
        ))
        .await;
    assert_eq!(refused.status(), 422);
    let body = json_body(&refused);
    assert_eq!(body["code"], "invalid_numbers");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("row 2") && detail.contains("row 3"),
        "{detail}"
    );
    for (body, code) in [
        ("{}", "missing_field"),
        (r#"{"numbers": []}"#, "missing_field"),
        (
            r#"{"number": "+14155550100", "numbers": ["+14155550100"]}"#,
            "ambiguous_body",
        ),
    ] {
        let response = dnc
            .handle(dnc_request(&t.key, "POST", "/dnc", "", body))
            .await;
        assert_eq!(response.status(), 422, "{body}");
        assert_eq!(json_body(&response)["code"], code, "{body}");
    }
    let too_many: Vec<String> = (0..1001).map(|i| format!("+1415555{i:04}")).collect();
    let response = dnc
        .handle(dnc_request(
            &t.key,
            "POST",
            "/dnc",
            "",
            &serde_json::json!({ "numbers": too_many }).to_string(),
        ))
        .await;
    assert_eq!(json_body(&response)["code"], "too_many_numbers");
    let malformed = dnc
        .handle(dnc_request(&t.key, "POST", "/dnc", "", "{nope"))
        .await;
    assert_eq!(malformed.status(), 400);

    // A page at a time, in number order.
    let first = dnc
        .handle(dnc_request(&t.key, "GET", "/dnc", "limit=1", ""))
        .await;
    let first = json_body(&first);
    assert_eq!(first["numbers"][0]["number"], "+14155550100");
    assert_eq!(first["numbers"][0]["reason"], "asked not to be called");
    let next = first["next"].as_str().unwrap().to_string();
    let second = dnc
        .handle(dnc_request(
            &t.key,
            "GET",
            "/dnc",
            &format!("limit=1&after=%2B{}", &next[1..]),
            "",
        ))
        .await;
    let second = json_body(&second);
    assert_eq!(second["numbers"][0]["number"], "+442071838750");
    let bad_limit = dnc
        .handle(dnc_request(&t.key, "GET", "/dnc", "limit=0", ""))
        .await;
    assert_eq!(bad_limit.status(), 400);

    // Another organisation's list is its own.
    let (globex_key, record) = api_keys::generate("globex crm", "globex");
    t.api_keys().insert(&record).await.unwrap();
    let theirs = dnc
        .handle(dnc_request(&globex_key, "GET", "/dnc", "", ""))
        .await;
    assert_eq!(json_body(&theirs)["numbers"], serde_json::json!([]));
    let not_theirs = dnc
        .handle(dnc_request(
            &globex_key,
            "DELETE",
            "/dnc/+14155550100",
            "",
            "",
        ))
        .await;
    assert_eq!(not_theirs.status(), 404);

    let removed = dnc
        .handle(dnc_request(&t.key, "DELETE", "/dnc/%2B14155550100", "", ""))
        .await;
    assert_eq!(removed.status(), 200, "{:?}", json_body(&removed));
    assert_eq!(json_body(&removed)["removed"], "+14155550100");
    let again = dnc
        .handle(dnc_request(&t.key, "DELETE", "/dnc/+14155550100", "", ""))
        .await;
    assert_eq!(again.status(), 404);
    let bad = dnc
        .handle(dnc_request(&t.key, "DELETE", "/dnc/hello", "", ""))
        .await;
    assert_eq!(bad.status(), 422);
    let unsigned = dnc.handle(dnc_request("", "GET", "/dnc", "", "")).await;
    assert_eq!(unsigned.status(), 401);
}

#[tokio::test]
async fn a_number_on_the_do_not_call_list_is_never_dialled() {
    let t = Outbound::start().await;
    t.create_org("acme", 3600, 0).await;
    let assistant = t.twilio_assistant("acme").await;
    let listed = t
        .dnc()
        .handle(dnc_request(
            &t.key,
            "POST",
            "/dnc",
            "",
            &serde_json::json!({ "number": CUSTOMER }).to_string(),
        ))
        .await;
    assert_eq!(listed.status(), 200);

    let refused = t
        .initiate(100)
        .handle(t.initiate_request(&seed_call(assistant)))
        .await;
    assert_eq!(refused.status(), 403);
    assert_eq!(json_body(&refused)["code"], "dnc");
    let refused = t
        .outbound_calls()
        .handle(outbound_request(
            &t.key,
            serde_json::json!({"destination_number": CUSTOMER}),
        ))
        .await;
    assert_eq!(refused.status(), 403);
    assert_eq!(json_body(&refused)["code"], "dnc");
    assert!(t.twilio.created_calls().is_empty());
    assert!(t.eleven.outbound_requests().is_empty());
    // Nothing reserved on the budget either.
    let org = t
        .stack
        .directory()
        .get_organisation("acme")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(org.reserved_seconds, 0);

    // Off the list, the same call goes through.
    let removed = t
        .dnc()
        .handle(dnc_request(
            &t.key,
            "DELETE",
            &format!("/dnc/{CUSTOMER}"),
            "",
            "",
        ))
        .await;
    assert_eq!(removed.status(), 200);
    let placed = t
        .initiate(100)
        .handle(t.initiate_request(&seed_call(assistant)))
        .await;
    assert_eq!(placed.status(), 200, "{:?}", json_body(&placed));
    assert_eq!(t.twilio.created_calls().len(), 1);
}
