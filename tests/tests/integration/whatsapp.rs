//! WhatsApp through Twilio (seed 002): incoming messages stored and answered
//! exactly once by the agent (fake LLM, fake Twilio Messages API), tenant
//! sends and templates, ordered statuses, and the conversation read.

use std::sync::Arc;
use std::time::Duration;

use devstack::fakes::{twilio_signature, FakeLlm, FakeTwilio, LlmScript};
use lambda_http::{Body, Request, Response};
use shared::api::access::KeyedAccess;
use shared::api::Route;
use shared::base::config::Secret;
use shared::flows::whatsapp::{ReplyAgent, ReplySettings, WhatsAppIntake, WhatsAppSender};
use shared::providers::llm::ChatClient;
use shared::providers::twilio::{TwilioClient, TwilioWebhookAuth};
use shared::queue::sqs_batch::Worker;
use shared::store::api_keys::{self, ApiKeyStore, DynamoApiKeyStore};
use shared::store::whatsapp::DynamoWhatsAppStore;

use crate::crash::run_or_crash;
use crate::support::*;

const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
const TWILIO_TOKEN: &str = "twilio-test-token";
const LLM_KEY: &str = "llm-test-key";
const PUBLIC_BASE: &str = "https://callops.example.com";
const OUR_NUMBER: &str = "whatsapp:+14155238886";
const ORG: &str = "acme";
const OTHER_ORG: &str = "globex";
const USER: &str = "14155550100";
const MEDIA_REPLY: &str = "Thanks for the picture!";

struct WhatsApp {
    stack: Stack,
    twilio: FakeTwilio,
    llm: FakeLlm,
    key: String,
    other_key: String,
}

impl WhatsApp {
    async fn start() -> Self {
        Self::on(Stack::start().await).await
    }

    async fn on(stack: Stack) -> Self {
        let keys = DynamoApiKeyStore::new(
            stack.harness_dynamo.clone(),
            stack.resources.table("ApiKeysTable"),
        );
        let (key, record) = api_keys::generate("wa", ORG);
        keys.insert(&record).await.unwrap();
        let (other_key, record) = api_keys::generate("wa", OTHER_ORG);
        keys.insert(&record).await.unwrap();
        Self {
            stack,
            twilio: FakeTwilio::start(ACCOUNT_SID, TWILIO_TOKEN),
            llm: FakeLlm::start(LLM_KEY),
            key,
            other_key,
        }
    }

    fn store(&self) -> Arc<DynamoWhatsAppStore> {
        Arc::new(DynamoWhatsAppStore {
            client: self.stack.dynamo.clone(),
            table: self.stack.resources.table("WhatsAppTable"),
            retention: Duration::from_secs(30 * 86_400),
        })
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

    fn auth() -> TwilioWebhookAuth {
        TwilioWebhookAuth::single(Secret::new(TWILIO_TOKEN), PUBLIC_BASE.into())
    }

    fn access(&self) -> KeyedAccess {
        self.stack.keyed_access()
    }

    fn message_route(&self) -> whatsapp_message::WhatsAppMessage {
        whatsapp_message::WhatsAppMessage {
            twilio_auth: Self::auth(),
            intake: WhatsAppIntake {
                store: self.store(),
                tenancy: Arc::new(self.stack.tenancy()),
                inbound_org: Some(ORG.into()),
            },
        }
    }

    fn status_route(&self) -> whatsapp_status::WhatsAppStatus {
        whatsapp_status::WhatsAppStatus {
            twilio_auth: Self::auth(),
            store: self.store(),
            tenancy: Arc::new(self.stack.tenancy()),
            default_org: Some(ORG.into()),
        }
    }

    fn send_route(&self) -> whatsapp_send::WhatsAppSend {
        whatsapp_send::WhatsAppSend {
            access: self.access(),
            sender: WhatsAppSender {
                store: self.store(),
                twilio: self.twilio_client().into(),
                from: OUR_NUMBER.into(),
                status_callback: Some(format!("{PUBLIC_BASE}/whatsapp/status")),
                twilio_timeout: Duration::from_secs(5),
                tenancy: Arc::new(self.stack.tenancy()),
                default_org: Some(ORG.into()),
            },
        }
    }

    fn conversations_route(&self) -> whatsapp_conversations::WhatsAppConversations {
        whatsapp_conversations::WhatsAppConversations {
            access: self.access(),
            store: self.store(),
        }
    }

    fn worker_with(
        &self,
        fallback: Option<&str>,
        lease: Duration,
    ) -> Arc<whatsapp_reply_worker::WhatsAppReplyWorker> {
        Arc::new(whatsapp_reply_worker::WhatsAppReplyWorker {
            agent: ReplyAgent {
                dedup: self.stack.dedup(),
                store: self.store(),
                twilio: self.twilio_client().into(),
                llm: ChatClient {
                    http: reqwest::Client::new(),
                    base_url: self.llm.base_url().to_string(),
                    api_key: Secret::new(LLM_KEY),
                    model: "test-model".into(),
                },
                settings: ReplySettings {
                    from: OUR_NUMBER.into(),
                    system_prompt: "You are the test agent.".into(),
                    media_reply: MEDIA_REPLY.into(),
                    fallback_reply: fallback.map(str::to_string),
                    history: 10,
                    llm_timeout: Duration::from_secs(2),
                    twilio_timeout: Duration::from_secs(5),
                    status_callback: Some(format!("{PUBLIC_BASE}/whatsapp/status")),
                },
                lease,
            },
            webhook_queue: Some(self.stack.queue("WebhookQueue")),
        })
    }

    fn worker(&self) -> Arc<whatsapp_reply_worker::WhatsAppReplyWorker> {
        self.worker_with(None, Duration::from_secs(30))
    }

    async fn run_replies(&self, worker: &Arc<whatsapp_reply_worker::WhatsAppReplyWorker>) {
        self.stack
            .drain("WhatsAppReplyQueue", |event| {
                let worker = Arc::clone(worker);
                async move { worker.handle(event).await }
            })
            .await;
    }

    async fn deliver(&self, sid: &str, body: &str) -> Response<Body> {
        self.message_route()
            .handle(signed("/whatsapp/message", &incoming(sid, body, 0)))
            .await
    }

    async fn conversation(&self, key: &str, wa_id: &str) -> Response<Body> {
        let path = format!("/whatsapp/conversations/{wa_id}");
        let headers = vec![("x-api-key".to_string(), key.to_string())];
        let request = devstack::server::api_request(
            "GET",
            "/whatsapp/conversations/{waId}",
            &path,
            "",
            &headers,
            b"",
        );
        self.conversations_route().handle(request).await
    }

    async fn send(&self, body: serde_json::Value) -> Response<Body> {
        let headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("x-api-key".to_string(), self.key.clone()),
        ];
        let request = devstack::server::api_request(
            "POST",
            "/whatsapp/send",
            "/whatsapp/send",
            "",
            &headers,
            body.to_string().as_bytes(),
        );
        self.send_route().handle(request).await
    }

    async fn status(&self, sid: &str, status: &str, error_code: Option<&str>) -> Response<Body> {
        let mut params = vec![
            ("MessageSid", sid),
            ("MessageStatus", status),
            ("AccountSid", ACCOUNT_SID),
            ("ChannelPrefix", "whatsapp"),
        ];
        if let Some(code) = error_code {
            params.push(("ErrorCode", code));
        }
        self.status_route()
            .handle(signed("/whatsapp/status", &params))
            .await
    }

    fn sent_bodies(&self) -> Vec<String> {
        self.twilio
            .sent_messages()
            .iter()
            .map(|form| field(form, "Body").unwrap_or_default())
            .collect()
    }
}

fn field(form: &[(String, String)], name: &str) -> Option<String> {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

fn sid(n: u32) -> String {
    format!("SM{n:032x}")
}

fn incoming<'a>(sid: &'a str, body: &'a str, media: u32) -> Vec<(&'a str, String)> {
    vec![
        ("SmsMessageSid", sid.to_string()),
        ("MessageSid", sid.to_string()),
        ("NumMedia", media.to_string()),
        ("ProfileName", "Ana".to_string()),
        ("MessageType", "text".to_string()),
        ("WaId", USER.to_string()),
        ("SmsStatus", "received".to_string()),
        ("Body", body.to_string()),
        ("To", OUR_NUMBER.to_string()),
        ("From", format!("whatsapp:+{USER}")),
        ("AccountSid", ACCOUNT_SID.to_string()),
        ("ApiVersion", "2010-04-01".to_string()),
    ]
}

fn signed<V: AsRef<str>>(route: &str, params: &[(&str, V)]) -> Request {
    let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_ref())).collect();
    let signature = twilio_signature(TWILIO_TOKEN, &format!("{PUBLIC_BASE}{route}"), &pairs);
    post_form(route, &pairs, Some(&signature))
}

fn post_form(route: &str, params: &[(&str, &str)], signature: Option<&str>) -> Request {
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
    devstack::server::api_request("POST", route, route, "", &headers, body.as_bytes())
}

fn text(response: &Response<Body>) -> String {
    String::from_utf8_lossy(response.body().as_ref()).into_owned()
}

#[tokio::test]
async fn an_incoming_message_is_stored_queued_and_answered_with_empty_twiml() {
    let wa = WhatsApp::start().await;
    let response = wa.deliver(&sid(1), "What are your opening hours?").await;
    assert_eq!(response.status(), 200, "{}", text(&response));
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/xml"
    );
    assert_eq!(
        text(&response),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>"
    );
    // Durable before the answer: the message and its job.
    assert_eq!(wa.stack.depth("WhatsAppReplyQueue").await, 1);
    wa.llm.script([LlmScript::Answer("We open at 9.".into())]);
    wa.run_replies(&wa.worker()).await;
    let sent = wa.twilio.sent_messages();
    assert_eq!(sent.len(), 1);
    assert_eq!(field(&sent[0], "From").as_deref(), Some(OUR_NUMBER));
    assert_eq!(
        field(&sent[0], "To").as_deref(),
        Some("whatsapp:+14155550100")
    );
    assert_eq!(field(&sent[0], "Body").as_deref(), Some("We open at 9."));
    let completions = wa.llm.completions();
    assert_eq!(completions.len(), 1);
    assert_eq!(completions[0]["model"], "test-model");
    assert_eq!(completions[0]["messages"][0]["role"], "system");
    assert_eq!(completions[0]["messages"][1]["role"], "user");
    assert_eq!(
        completions[0]["messages"][1]["content"],
        "What are your opening hours?"
    );

    // The next message carries the conversation so far.
    wa.deliver(&sid(2), "And on Sundays?").await;
    wa.run_replies(&wa.worker()).await;
    let completions = wa.llm.completions();
    let roles: Vec<_> = completions[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);

    let conversation = wa.conversation(&wa.key, USER).await;
    assert_eq!(conversation.status(), 200);
    let body = json_body(&conversation);
    let messages = body["messages"].as_array().unwrap();
    let directions: Vec<_> = messages
        .iter()
        .map(|m| m["direction"].as_str().unwrap())
        .collect();
    assert_eq!(directions, ["inbound", "outbound", "inbound", "outbound"]);
    assert_eq!(messages[0]["messageSid"], sid(1));
    assert_eq!(messages[0]["body"], "What are your opening hours?");
    assert_eq!(messages[1]["body"], "We open at 9.");
    assert_eq!(messages[1]["status"], "queued");
    // Another organisation's key sees nothing.
    assert_eq!(wa.conversation(&wa.other_key, USER).await.status(), 404);
    assert_eq!(wa.conversation(&wa.key, "14155550199").await.status(), 404);
}

#[tokio::test]
async fn ten_concurrent_duplicates_get_one_reply_and_one_llm_call() {
    let wa = WhatsApp::start().await;
    let route = Arc::new(wa.message_route());
    let deliveries = (0..10).map(|_| {
        let route = Arc::clone(&route);
        async move {
            route
                .handle(signed("/whatsapp/message", &incoming(&sid(7), "hello", 0)))
                .await
                .status()
        }
    });
    let statuses = futures_util::future::join_all(deliveries).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // Every duplicate also reaches the worker (SQS may deliver twice too).
    let worker = wa.worker();
    let job = wa.stack.peek("WhatsAppReplyQueue").await;
    assert_eq!(job.len(), 1, "one job for one message: {job:?}");
    let extra = futures_util::future::join_all((0..5).map(|_| {
        let worker = Arc::clone(&worker);
        let body = job[0].clone();
        async move { worker.handle(crate::crash::event_of(body, 1)).await }
    }))
    .await;
    drop(extra);
    wa.run_replies(&worker).await;
    assert_eq!(wa.twilio.sent_messages().len(), 1);
    assert_eq!(wa.llm.completions().len(), 1);
    // Its webhook events: the same event id however often the job ran (the
    // webhook worker stores each id once), one reply sent.
    let events: Vec<serde_json::Value> = wa
        .stack
        .peek("WebhookQueue")
        .await
        .iter()
        .map(|body| serde_json::from_str(body).unwrap())
        .collect();
    let ids = |kind: &str| -> std::collections::BTreeSet<String> {
        events
            .iter()
            .filter(|job| job["event"]["type"] == kind)
            .map(|job| job["event"]["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids("whatsapp.message.received").len(), 1, "{events:?}");
    assert_eq!(ids("whatsapp.reply.sent").len(), 1, "{events:?}");
}

#[tokio::test]
async fn a_send_that_fails_after_the_llm_answered_is_resent_without_asking_again() {
    let wa = WhatsApp::start().await;
    wa.deliver(&sid(3), "Can I change my order?").await;
    wa.llm
        .script([LlmScript::Answer("Yes, until it ships.".into())]);
    wa.twilio
        .fail_next_message(500, 20500, "Internal Server Error");
    wa.run_replies(&wa.worker()).await;
    assert_eq!(wa.twilio.message_requests(), 2, "one refused, one accepted");
    assert_eq!(wa.sent_bodies(), ["Yes, until it ships."]);
    assert_eq!(wa.llm.completions().len(), 1, "the stored text was re-sent");
}

#[tokio::test]
async fn a_reply_worker_killed_after_any_write_sends_exactly_one_reply() {
    let wa = WhatsApp::on(Stack::start_crashable().await).await;
    // A clean run first, counting the worker's writes.
    wa.deliver(&sid(100), "count").await;
    let job = wa.stack.peek("WhatsAppReplyQueue").await.remove(0);
    wa.stack.discard_queued("WhatsAppReplyQueue").await;
    let worker = wa.worker_with(None, Duration::from_secs(1));
    wa.stack.crash.count();
    worker.handle(crate::crash::event_of(job, 1)).await;
    let writes = wa.stack.crash.seen();
    assert!(
        writes >= 4,
        "claim, text, reply record, completion: {writes}"
    );
    assert_eq!(wa.twilio.sent_messages().len(), 1);

    for k in 1..=writes {
        let n = 100 + k as u32;
        wa.stack.crash.count();
        wa.deliver(&sid(n), &format!("message {n}")).await;
        let job = wa.stack.peek("WhatsAppReplyQueue").await.remove(0);
        wa.stack.discard_queued("WhatsAppReplyQueue").await;
        let llm_before = wa.llm.completions().len();
        let sent_before = wa.twilio.sent_messages().len();
        wa.stack.crash.arm(k);
        let killed = Arc::clone(&worker);
        let first = job.clone();
        let outcome = run_or_crash(&wa.stack, async move {
            killed.handle(crate::crash::event_of(first, 1)).await
        })
        .await;
        assert!(
            outcome.is_none(),
            "the worker was not killed after write {k}"
        );
        wa.stack.crash.count();
        crate::crash::redeliver_until_settled(&worker, &job, "whatsapp reply").await;
        let sent: Vec<_> = wa.sent_bodies()[sent_before..].to_vec();
        assert_eq!(sent.len(), 1, "after write {k}: {sent:?}");
        let asked = wa.llm.completions().len() - llm_before;
        assert!(
            (1..=2).contains(&asked),
            "after write {k}: {asked} LLM calls"
        );
        if k >= 2 {
            // The text was stored (write 2) before the crash: never asked twice.
            assert_eq!(asked, 1, "after write {k}: the LLM was asked again");
        }
    }
}

#[tokio::test]
async fn media_only_messages_get_the_media_reply_without_the_llm() {
    let wa = WhatsApp::start().await;
    let response = wa
        .message_route()
        .handle(signed("/whatsapp/message", &incoming(&sid(4), "", 1)))
        .await;
    assert_eq!(response.status(), 200);
    wa.run_replies(&wa.worker()).await;
    assert_eq!(wa.sent_bodies(), [MEDIA_REPLY]);
    assert!(wa.llm.completions().is_empty());
}

#[tokio::test]
async fn an_llm_failure_sends_the_fallback_once_or_nothing() {
    let wa = WhatsApp::start().await;
    wa.llm.script([LlmScript::Fail(500), LlmScript::Unreadable]);
    wa.deliver(&sid(5), "first").await;
    wa.run_replies(&wa.worker_with(Some("Sorry, try again later."), Duration::from_secs(30)))
        .await;
    assert_eq!(wa.sent_bodies(), ["Sorry, try again later."]);
    wa.deliver(&sid(6), "second").await;
    wa.run_replies(&wa.worker()).await;
    assert_eq!(
        wa.sent_bodies().len(),
        1,
        "no fallback configured: no reply"
    );
    // A slow LLM is a failure too (timeout 2 s).
    wa.llm
        .script([LlmScript::Slow(Duration::from_secs(4), "late".into())]);
    wa.deliver(&sid(8), "third").await;
    wa.run_replies(&wa.worker_with(Some("Sorry!"), Duration::from_secs(30)))
        .await;
    assert_eq!(wa.sent_bodies().last().map(String::as_str), Some("Sorry!"));
    assert_eq!(wa.sent_bodies().len(), 2);
}

#[tokio::test]
async fn bad_or_missing_signatures_store_nothing() {
    let wa = WhatsApp::start().await;
    let message_sid = sid(9);
    let params = incoming(&message_sid, "hi", 0);
    let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let missing = wa
        .message_route()
        .handle(post_form("/whatsapp/message", &pairs, None))
        .await;
    assert_eq!(missing.status(), 400);
    let wrong = wa
        .message_route()
        .handle(post_form("/whatsapp/message", &pairs, Some("bm90IGl0")))
        .await;
    assert_eq!(wrong.status(), 403);
    assert_eq!(json_body(&wrong)["code"], "invalid_signature");
    let status = wa
        .status_route()
        .handle(post_form(
            "/whatsapp/status",
            &[
                ("MessageSid", message_sid.as_str()),
                ("MessageStatus", "read"),
            ],
            Some("bm90IGl0"),
        ))
        .await;
    assert_eq!(status.status(), 403);
    assert_eq!(wa.stack.item_count("WhatsAppTable").await, 0);
    assert_eq!(wa.stack.depth("WhatsAppReplyQueue").await, 0);
}

#[tokio::test]
async fn statuses_only_move_forward_and_failures_keep_their_code() {
    let wa = WhatsApp::start().await;
    let sent = wa
        .send(serde_json::json!({"to": "whatsapp:+14155550100", "message": "Your order shipped."}))
        .await;
    assert_eq!(sent.status(), 200, "{}", text(&sent));
    let first = json_body(&sent);
    assert_eq!(first["status"], "queued");
    let first_sid = first["messageSid"].as_str().unwrap().to_string();
    let form = &wa.twilio.sent_messages()[0];
    assert_eq!(field(form, "To").as_deref(), Some("whatsapp:+14155550100"));
    assert_eq!(field(form, "From").as_deref(), Some(OUR_NUMBER));
    assert_eq!(
        field(form, "StatusCallback").as_deref(),
        Some("https://callops.example.com/whatsapp/status")
    );

    // Out of order: read, then a late sent and delivered.
    for status in ["read", "sent", "delivered"] {
        assert_eq!(wa.status(&first_sid, status, None).await.status(), 200);
    }
    let second = json_body(
        &wa.send(serde_json::json!({"to": "+14155550100", "message": "Still there?"}))
            .await,
    );
    let second_sid = second["messageSid"].as_str().unwrap().to_string();
    assert_eq!(wa.status(&second_sid, "sent", None).await.status(), 200);
    assert_eq!(
        wa.status(&second_sid, "undelivered", Some("63024"))
            .await
            .status(),
        200
    );
    // Final: a late delivered does not revive it.
    wa.status(&second_sid, "delivered", None).await;
    // Sids not recorded (yet) are acknowledged and kept for their record.
    let unknown = wa.status(&sid(999), "read", None).await;
    assert_eq!(unknown.status(), 200);
    assert_eq!(json_body(&unknown)["outcome"], "kept");

    let body = json_body(&wa.conversation(&wa.key, USER).await);
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["messageSid"], first_sid);
    assert_eq!(messages[0]["status"], "read");
    assert_eq!(messages[0]["errorCode"], serde_json::Value::Null);
    assert_eq!(messages[1]["status"], "undelivered");
    assert_eq!(messages[1]["errorCode"], "63024");
    assert_eq!(wa.conversation(&wa.other_key, USER).await.status(), 404);
}

#[tokio::test]
async fn twilio_refusals_become_clear_client_errors() {
    let wa = WhatsApp::start().await;
    wa.twilio.fail_next_message(
        400,
        63016,
        "Failed to send freeform message because you are outside the allowed window. Please use a Template.",
    );
    let outside = wa
        .send(serde_json::json!({"to": "+14155550100", "message": "hello again"}))
        .await;
    assert_eq!(outside.status(), 422);
    let body = json_body(&outside);
    assert_eq!(body["code"], "outside_session_window");
    assert!(
        body["detail"].as_str().unwrap().contains("contentSid"),
        "{body}"
    );

    wa.twilio
        .fail_next_message(400, 21211, "Invalid 'To' Phone Number");
    let invalid = wa
        .send(serde_json::json!({"to": "+14155550100", "message": "hi"}))
        .await;
    assert!(invalid.status().is_client_error(), "{}", invalid.status());
    assert!(json_body(&invalid)["detail"]
        .as_str()
        .unwrap()
        .contains("21211"));

    wa.twilio
        .fail_next_message(503, 20503, "Service Unavailable");
    let outage = wa
        .send(serde_json::json!({"to": "+14155550100", "message": "hi"}))
        .await;
    assert_eq!(outage.status(), 502);

    let bad_to = wa
        .send(serde_json::json!({"to": "14155550100", "message": "hi"}))
        .await;
    assert_eq!(bad_to.status(), 422);
    assert!(wa.twilio.sent_messages().is_empty());
    // Nothing was recorded for refused messages.
    assert_eq!(wa.conversation(&wa.key, USER).await.status(), 404);
}

#[tokio::test]
async fn templates_carry_content_sid_and_variables() {
    let wa = WhatsApp::start().await;
    let response = wa
        .send(serde_json::json!({
            "to": "whatsapp:+14155550100",
            "contentSid": "HXb5b62575e6e4ff6129ad7c8efe1f983e",
            "contentVariables": {"1": "John", "2": "12/1"}
        }))
        .await;
    assert_eq!(response.status(), 200, "{}", text(&response));
    let form = &wa.twilio.sent_messages()[0];
    assert_eq!(
        field(form, "ContentSid").as_deref(),
        Some("HXb5b62575e6e4ff6129ad7c8efe1f983e")
    );
    let variables: serde_json::Value =
        serde_json::from_str(&field(form, "ContentVariables").unwrap()).unwrap();
    assert_eq!(variables, serde_json::json!({"1": "John", "2": "12/1"}));
    assert_eq!(field(form, "Body"), None);
    let body = json_body(&wa.conversation(&wa.key, USER).await);
    assert_eq!(
        body["messages"][0]["contentSid"], "HXb5b62575e6e4ff6129ad7c8efe1f983e",
        "{body}"
    );
    assert_eq!(
        body["messages"][0]["contentSid"],
        "HXb5b62575e6e4ff6129ad7c8efe1f983e"
    );
}

/// Twilio's 21211 text as it really reads: it quotes the number.
const REFUSAL_WITH_NUMBER: &str = "The 'To' number +14155550100 is not a valid phone number.";

impl WhatsApp {
    /// The reply record of `inbound_sid` as stored, every attribute.
    async fn reply_item(&self, inbound_sid: &str) -> serde_json::Value {
        let out = self
            .stack
            .harness_dynamo
            .get_item()
            .table_name(self.stack.resources.table("WhatsAppTable"))
            .key(
                "conversation",
                aws_sdk_dynamodb::types::AttributeValue::S(format!("{ORG}#{USER}")),
            )
            .key(
                "item",
                aws_sdk_dynamodb::types::AttributeValue::S(format!("reply#{inbound_sid}")),
            )
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        let item = out.item.unwrap_or_default();
        item.iter()
            .map(|(k, v)| {
                let v = v
                    .as_s()
                    .cloned()
                    .or_else(|_| v.as_n().cloned())
                    .unwrap_or_default();
                (k.clone(), serde_json::Value::String(v))
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

#[tokio::test]
async fn a_refusal_quoting_the_number_is_stored_and_answered_masked() {
    let wa = WhatsApp::start().await;
    // The reply worker: the refusal is settled with its reason, masked.
    wa.deliver(&sid(40), "hi").await;
    wa.llm.script([LlmScript::Answer("Hello!".into())]);
    wa.twilio.fail_next_message(400, 21211, REFUSAL_WITH_NUMBER);
    wa.run_replies(&wa.worker()).await;
    let record = wa.reply_item(&sid(40)).await;
    assert_eq!(record["state"], "failed", "{record}");
    let reason = record["reason"].as_str().unwrap();
    assert!(reason.contains("21211"), "{reason}");
    assert!(!reason.contains("4155550100"), "number stored: {reason}");

    // A tenant's send: the client's detail keeps the code, not the number.
    wa.twilio.fail_next_message(400, 21211, REFUSAL_WITH_NUMBER);
    let refused = wa
        .send(serde_json::json!({"to": "+14155550100", "message": "hi"}))
        .await;
    assert_eq!(refused.status(), 422);
    let detail = json_body(&refused)["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("21211"), "{detail}");
    assert!(!detail.contains("4155550100"), "number answered: {detail}");
}

impl WhatsApp {
    fn stuck_replies(&self) -> shared::flows::whatsapp::StuckReplies {
        shared::flows::whatsapp::StuckReplies {
            store: self.store(),
            reply_queue: self.stack.queue("WhatsAppReplyQueue"),
            grace: Duration::from_secs(300),
            max_redrives: 3,
        }
    }
}

#[tokio::test]
async fn a_message_whose_stream_event_was_lost_gets_200_and_the_sweep_queues_its_reply() {
    let wa = WhatsApp::start().await;
    let response = wa
        .message_route()
        .handle(signed(
            "/whatsapp/message",
            &incoming(&sid(50), "Are you open?", 0),
        ))
        .await;
    assert_eq!(response.status(), 200, "{}", text(&response));
    // The entry's INSERT is read and lost (a batch given up on).
    assert_eq!(wa.stack.lose_whatsapp_stream_events().await.delivered, 1);
    assert_eq!(wa.stack.depth("WhatsAppReplyQueue").await, 0);

    let now = shared::base::time::epoch_secs();
    let sweep = wa.stuck_replies();
    // Not due yet: the reply job may still be on its way.
    assert!(sweep.sweep(now, 100).await.unwrap().requeued.is_empty());
    let later = now + 301;
    let report = sweep.sweep(later, 100).await.unwrap();
    assert_eq!(report.requeued, [sid(50)]);
    wa.llm.script([LlmScript::Answer("Yes, until 6.".into())]);
    wa.run_replies(&wa.worker()).await;
    assert_eq!(wa.sent_bodies(), ["Yes, until 6."]);
    // Answered: the next look drops the entry and queues nothing.
    let report = sweep.sweep(later + 301, 100).await.unwrap();
    assert_eq!((report.settled, report.requeued.len()), (1, 0));
    assert_eq!(wa.stack.depth("WhatsAppReplyQueue").await, 0);
}

#[tokio::test]
async fn a_reply_job_the_stream_cannot_queue_is_retried_then_given_to_its_dlq_and_the_sweep() {
    let wa = WhatsApp::start().await;
    let response = wa
        .message_route()
        .handle(signed("/whatsapp/message", &incoming(&sid(52), "hi", 0)))
        .await;
    assert_eq!(response.status(), 200, "{}", text(&response));
    // A queue that refuses every send: the consumer reports the record,
    // the mapping retries it 5 times, then gives the batch up.
    let missing = format!("{}-missing", wa.stack.resources.queue("WhatsAppReplyQueue"));
    let consumer = whatsapp_stream::WhatsAppStream {
        dispatcher: shared::flows::whatsapp::NewIncomingMessages {
            reply_queue: Arc::new(shared::queue::jobs::SqsJobQueue::new(
                wa.stack.sqs.clone(),
                missing,
            )),
        },
    };
    let report = wa
        .stack
        .run_stream_by("whatsapp-stream", |event| consumer.handle(event))
        .await;
    assert_eq!((report.delivered, report.on_failure.len()), (6, 1));
    assert_eq!(wa.stack.raw_depth("WhatsAppStreamDLQ").await, 1);
    assert_eq!(wa.stack.depth("WhatsAppReplyQueue").await, 0);
    // The message's watch entry is still there for the sweep.
    let later = shared::base::time::epoch_secs() + 301;
    assert_eq!(
        wa.stuck_replies().sweep(later, 100).await.unwrap().requeued,
        [sid(52)]
    );
}

#[tokio::test]
async fn a_delivery_configured_with_connection_overrides_verifies() {
    let wa = WhatsApp::start().await;
    // Configured in Twilio as `.../whatsapp/message#rc=3&rp=all`. A fragment
    // never travels in an HTTP request, so Twilio signs (and we see) the URL
    // it requested: the fragment is not part of it.
    let configured = format!("{PUBLIC_BASE}/whatsapp/message#rc=3&rp=all");
    let mut requested = url::Url::parse(&configured).unwrap();
    requested.set_fragment(None);
    let message_sid = sid(51);
    let params = incoming(&message_sid, "hi", 0);
    let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let signature = twilio_signature(TWILIO_TOKEN, requested.as_str(), &pairs);
    let response = wa
        .message_route()
        .handle(post_form(requested.path(), &pairs, Some(&signature)))
        .await;
    assert_eq!(response.status(), 200, "{}", text(&response));
    assert_eq!(wa.stack.depth("WhatsAppReplyQueue").await, 1);
}

#[tokio::test]
async fn a_delivered_status_that_beats_the_reply_record_is_kept_and_applied() {
    let wa = WhatsApp::start().await;
    wa.deliver(&sid(60), "hi").await;
    // Twilio accepted the reply as `reply_sid` and reported it delivered
    // before the worker recorded the sid.
    let reply_sid = sid(61);
    let early = wa.status(&reply_sid, "delivered", None).await;
    assert_eq!(early.status(), 200);
    assert_eq!(json_body(&early)["outcome"], "kept");
    // A lower status after it does not win later either.
    wa.status(&reply_sid, "sent", None).await;
    let reply = shared::store::whatsapp::StoredMessage::new(
        format!("{ORG}#{USER}"),
        &reply_sid,
        shared::store::whatsapp::Direction::Outbound,
        "Hello!",
        "queued",
    );
    use shared::store::whatsapp::WhatsAppStore;
    wa.store()
        .finish_send(&sid(60), 0, 1, &reply)
        .await
        .unwrap();
    let body = json_body(&wa.conversation(&wa.key, USER).await);
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages[1]["messageSid"], reply_sid);
    assert_eq!(messages[1]["status"], "delivered", "{body}");
}

#[tokio::test]
async fn a_long_llm_reply_reaches_the_customer_in_parts_within_the_body_limit() {
    let wa = WhatsApp::start().await;
    let sentence = "Our returns policy covers every item bought in the last thirty days. ";
    let long = sentence.repeat(58); // ~4,000 characters
    assert!(long.chars().count() > 3900);
    wa.deliver(&sid(70), "What is your returns policy?").await;
    wa.llm.script([LlmScript::Answer(long.clone())]);
    // The second part fails once: the redelivery must not resend the first.
    wa.twilio
        .fail_message_after(1, 500, 20500, "Internal Server Error");
    wa.run_replies(&wa.worker()).await;
    assert_eq!(wa.twilio.message_requests(), wa.sent_bodies().len() + 1);
    let bodies = wa.sent_bodies();
    assert!(bodies.len() >= 3, "{}", bodies.len());
    for body in &bodies {
        assert!(body.chars().count() <= 1600, "{}", body.chars().count());
    }
    let words: Vec<_> = long.split_whitespace().collect();
    assert_eq!(
        bodies.join(" ").split_whitespace().collect::<Vec<_>>(),
        words,
        "the parts, in order, are the whole reply"
    );
    assert_eq!(wa.llm.completions().len(), 1);
    let body = json_body(&wa.conversation(&wa.key, USER).await);
    let outbound = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["direction"] == "outbound")
        .count();
    assert_eq!(outbound, bodies.len(), "each part is recorded");
}

#[tokio::test]
async fn a_message_that_cannot_be_stored_is_503_and_the_retry_stores_it() {
    let wa = WhatsApp::start().await;
    let mut route = wa.message_route();
    // Nothing durable holds the message: 503 (Twilio re-posts it only with
    // `#rc=` overrides), and the claim is released for that retry.
    route.intake.store = Arc::new(DynamoWhatsAppStore {
        client: wa.stack.dynamo.clone(),
        table: "no-such-table".into(),
        retention: Duration::from_secs(86_400),
    });
    let message_sid = sid(80);
    let params = incoming(&message_sid, "hello?", 0);
    let refused = route.handle(signed("/whatsapp/message", &params)).await;
    assert_eq!(refused.status(), 503, "{}", text(&refused));
    assert_eq!(json_body(&refused)["code"], "unavailable");
    assert_eq!(wa.stack.depth("WhatsAppReplyQueue").await, 0);
    let retried = wa
        .message_route()
        .handle(signed("/whatsapp/message", &params))
        .await;
    assert_eq!(retried.status(), 200, "{}", text(&retried));
    assert_eq!(wa.stack.depth("WhatsAppReplyQueue").await, 1);
}

#[tokio::test]
async fn a_reply_that_never_settles_is_requeued_three_times_then_given_up() {
    let wa = WhatsApp::start().await;
    wa.deliver(&sid(90), "anyone?").await;
    wa.stack.discard_queued("WhatsAppReplyQueue").await;
    let sweep = wa.stuck_replies();
    let mut at = shared::base::time::epoch_secs();
    for round in 1..=3 {
        at += 301;
        let report = sweep.sweep(at, 100).await.unwrap();
        assert_eq!(report.requeued, [sid(90)], "round {round}");
    }
    assert_eq!(wa.stack.depth("WhatsAppReplyQueue").await, 3);
    let report = sweep.sweep(at + 301, 100).await.unwrap();
    assert_eq!(report.given_up, [sid(90)]);
    // Dropped: later sweeps leave it alone.
    let report = sweep.sweep(at + 602, 100).await.unwrap();
    assert_eq!(report, Default::default());
}

/// A message from the test user to `to`.
async fn to(
    sid: &str,
    body: &str,
    to: &str,
    route: &whatsapp_message::WhatsAppMessage,
) -> Response<Body> {
    let mut params = incoming(sid, body, 0);
    params.retain(|(name, _)| *name != "To");
    params.push(("To", to.to_string()));
    route.handle(signed("/whatsapp/message", &params)).await
}

/// Issue 19: a message belongs to the organisation owning the number it was
/// sent to (`To`, a WhatsApp sender in the registry), and its reply comes
/// from that number; a number nobody owns is `INBOUND_ORG_ID`'s, or,
/// without it, gets empty TwiML and keeps nothing.
#[tokio::test]
async fn messages_belong_to_the_owner_of_the_number_written_to() {
    use shared::store::tenancy::{Kind, TenancyStore};
    let wa = WhatsApp::start().await;
    let registry = wa.stack.tenancy();
    let (ours, theirs) = ("whatsapp:+14155552691", "whatsapp:+14155552692");
    registry
        .claim(&Kind::WhatsApp.key("+14155552691"), ORG)
        .await
        .unwrap();
    registry
        .claim(&Kind::WhatsApp.key("+14155552692"), OTHER_ORG)
        .await
        .unwrap();
    let route = wa.message_route();
    for (n, body, number) in [
        (11, "to acme", ours),
        (12, "to globex", theirs),
        (13, "to the deployment's number", OUR_NUMBER),
    ] {
        let answered = to(&sid(n), body, number, &route).await;
        assert_eq!(answered.status(), 200, "{}", text(&answered));
    }
    let bodies = |response: Response<Body>| -> Vec<String> {
        json_body(&response)["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["body"].as_str().unwrap().to_string())
            .collect()
    };
    // The unregistered number falls back to INBOUND_ORG_ID (ORG here).
    assert_eq!(
        bodies(wa.conversation(&wa.key, USER).await),
        ["to acme", "to the deployment's number"]
    );
    assert_eq!(
        bodies(wa.conversation(&wa.other_key, USER).await),
        ["to globex"]
    );
    // Each reply goes out from the number its message reached.
    wa.run_replies(&wa.worker()).await;
    let mut froms: Vec<String> = wa
        .twilio
        .sent_messages()
        .iter()
        .map(|form| field(form, "From").unwrap())
        .collect();
    froms.sort();
    let mut expected = vec![ours.to_string(), theirs.to_string(), OUR_NUMBER.to_string()];
    expected.sort();
    assert_eq!(froms, expected);

    // Without INBOUND_ORG_ID: empty TwiML; no message, no reply, no record.
    let messages_before = wa.stack.item_count("WhatsAppTable").await;
    let dedup_before = wa.stack.item_count("IdempotencyTable").await;
    let strict = whatsapp_message::WhatsAppMessage {
        intake: WhatsAppIntake {
            inbound_org: None,
            ..wa.message_route().intake
        },
        ..wa.message_route()
    };
    let dropped = to(&sid(14), "anyone there?", "whatsapp:+14155552693", &strict).await;
    assert_eq!(dropped.status(), 200);
    assert_eq!(
        text(&dropped),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>"
    );
    assert_eq!(wa.stack.item_count("WhatsAppTable").await, messages_before);
    assert_eq!(wa.stack.item_count("IdempotencyTable").await, dedup_before);
    assert_eq!(wa.stack.depth("WhatsAppReplyQueue").await, 0);
    // A redelivery is answered the same, still storing nothing.
    let again = to(&sid(14), "anyone there?", "whatsapp:+14155552693", &strict).await;
    assert_eq!(again.status(), 200);
    assert_eq!(wa.stack.item_count("WhatsAppTable").await, messages_before);
    // An owned number still reaches its owner without the fallback.
    assert_eq!(
        to(&sid(15), "still globex", theirs, &strict).await.status(),
        200
    );
    assert_eq!(
        bodies(wa.conversation(&wa.other_key, USER).await),
        [
            "to globex",
            "(fake agent) You said: to globex",
            "still globex"
        ]
    );
}

/// Issue 19: `/whatsapp/send` sends only from a WhatsApp sender the key's
/// organisation owns; the deployment's number is the default organisation's.
#[tokio::test]
async fn tenants_send_only_from_their_own_whatsapp_senders() {
    use shared::store::tenancy::{Kind, TenancyStore};
    let wa = WhatsApp::start().await;
    let send_as = |key: String, body: serde_json::Value| {
        let route = wa.send_route();
        async move {
            let headers = vec![
                ("content-type".to_string(), "application/json".to_string()),
                ("x-api-key".to_string(), key),
            ];
            let request = devstack::server::api_request(
                "POST",
                "/whatsapp/send",
                "/whatsapp/send",
                "",
                &headers,
                body.to_string().as_bytes(),
            );
            route.handle(request).await
        }
    };
    let to = format!("whatsapp:+{USER}");
    // No sender of its own, and the deployment's is not its.
    for body in [
        serde_json::json!({"to": to, "message": "hi"}),
        serde_json::json!({"to": to, "message": "hi", "from": OUR_NUMBER}),
    ] {
        let refused = send_as(wa.other_key.clone(), body).await;
        assert_eq!(refused.status(), 403, "{}", text(&refused));
        assert_eq!(json_body(&refused)["code"], "sender_not_owned");
    }
    assert!(wa.twilio.sent_messages().is_empty());
    wa.stack
        .tenancy()
        .claim(&Kind::WhatsApp.key("+14155552692"), OTHER_ORG)
        .await
        .unwrap();
    let sent = send_as(
        wa.other_key.clone(),
        serde_json::json!({"to": to, "message": "hi"}),
    )
    .await;
    assert_eq!(sent.status(), 200, "{}", text(&sent));
    // The default organisation: the deployment's number, not another's.
    let own = send_as(
        wa.key.clone(),
        serde_json::json!({"to": to, "message": "hello"}),
    )
    .await;
    assert_eq!(own.status(), 200, "{}", text(&own));
    let borrowed = send_as(
        wa.key.clone(),
        serde_json::json!({"to": to, "message": "hello", "from": "whatsapp:+14155552692"}),
    )
    .await;
    assert_eq!(borrowed.status(), 403);
    let froms: Vec<String> = wa
        .twilio
        .sent_messages()
        .iter()
        .map(|form| field(form, "From").unwrap())
        .collect();
    assert_eq!(froms, ["whatsapp:+14155552692", OUR_NUMBER]);
}

/// Issue 19: a status callback moves a message only when its sender
/// (`From`, our number) belongs to the message's organisation.
#[tokio::test]
async fn a_status_from_another_organisations_sender_moves_nothing() {
    use shared::store::tenancy::{Kind, TenancyStore};
    let wa = WhatsApp::start().await;
    wa.stack
        .tenancy()
        .claim(&Kind::WhatsApp.key("+14155552692"), OTHER_ORG)
        .await
        .unwrap();
    let sent = wa
        .send(serde_json::json!({"to": format!("whatsapp:+{USER}"), "message": "hello"}))
        .await;
    assert_eq!(sent.status(), 200, "{}", text(&sent));
    let message_sid = json_body(&sent)["messageSid"].as_str().unwrap().to_string();
    let status_from = |from: &'static str, status: &'static str| {
        let route = wa.status_route();
        let sid = message_sid.clone();
        async move {
            let params = [
                ("MessageSid", sid.as_str()),
                ("MessageStatus", status),
                ("AccountSid", ACCOUNT_SID),
                ("From", from),
                ("To", "whatsapp:+14155550100"),
            ];
            json_body(&route.handle(signed("/whatsapp/status", &params)).await)
        }
    };
    let ignored = status_from("whatsapp:+14155552692", "read").await;
    assert_eq!(ignored["outcome"], "ignored");
    let status_of = || async {
        json_body(&wa.conversation(&wa.key, USER).await)["messages"][0]["status"].clone()
    };
    assert_ne!(status_of().await, "read");
    // From the message's own sender (the deployment's, ORG's), it applies.
    assert_eq!(status_from(OUR_NUMBER, "read").await["outcome"], "applied");
    assert_eq!(status_of().await, "read");
}

#[path = "whatsapp_status_reconcile.rs"]
mod status_reconcile;

#[tokio::test]
async fn a_message_is_acknowledged_after_its_owner_lookup_and_one_write() {
    let mut stack = Stack::start().await;
    let meter =
        devstack::bench_cost::Meter::start(local().dynamodb_endpoint(), local().moto_endpoint());
    stack.dynamo = local().dynamodb_at(meter.dynamodb_url()).await;
    stack.sqs = local().sqs_at(meter.moto_url()).await;
    let wa = WhatsApp::on(stack).await;
    let route = wa.message_route();
    for _ in 0..2 {
        meter.begin_invocation();
        let response = route
            .handle(signed("/whatsapp/message", &incoming(&sid(60), "hello", 0)))
            .await;
        assert_eq!(response.status(), 200, "{}", text(&response));
    }
    let runs: Vec<Vec<String>> = meter
        .per_invocation()
        .iter()
        .map(|calls| calls.iter().map(|c| c.operation.clone()).collect())
        .collect();
    // The number's owner, then the message with its reply's watch entry;
    // a duplicate's transaction is refused. Nothing is queued here.
    assert_eq!(runs[0], ["GetItem", "TransactWriteItems"]);
    assert_eq!(runs[1], ["GetItem", "TransactWriteItems"]);
    assert_eq!(wa.stack.raw_depth("WhatsAppReplyQueue").await, 0);
    // The stream queues the one reply job.
    assert_eq!(wa.stack.depth("WhatsAppReplyQueue").await, 1);
}
