//! The campaign engine (issue 23) on a simulated clock: the tick claims,
//! the dialler places each attempt at the fake Twilio (with asynchronous
//! AMD), Twilio's signed callbacks end the calls through `/twilio/status`
//! and the provider-events worker, and the calls stream settles each
//! attempt. Checked from the fake Twilio's own log: no dial outside a
//! recipient's window, none to a do-not-call number, none twice, never
//! more in flight than `max_concurrency`. The 1,000-recipient run does so
//! with 5% of DynamoDB, SQS and Twilio requests failing (Twilio's answer
//! lost before or after it took a call among them) and one dial per step
//! killed after its k-th request, k = 1..12 in turn.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::{Datelike, TimeZone};
use devstack::fakes::{twilio_signature, FakeTwilio};
use shared::api::Route;
use shared::base::config::Secret;
use shared::base::time::{Clock, ManualClock};
use shared::flows::campaigns::engine::{CampaignTick, TickReport};
use shared::flows::campaigns::CampaignsApi;
use shared::flows::outbound::{Placement, Providers};
use shared::providers::twilio::TwilioClient;
use shared::queue::sqs_batch::Worker;
use shared::store::api_keys::DynamoApiKeyStore;
use shared::store::directory::DirectoryStore;
use shared::store::outbound_calls::OutboundCallStore;
use shared::store::rate_limits::DynamoRateLimiter;

use crate::support::*;

const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
const TWILIO_TOKEN: &str = "twilio-test-token";
const PUBLIC_BASE: &str = "https://callops.example.com";
const CALLER_ID: &str = "+14155552672";
const AGENDA: &str = "Remind the customer of their appointment tomorrow.";

struct Engine {
    stack: Stack,
    twilio: FakeTwilio,
    clock: Arc<ManualClock>,
    api: CampaignsApi,
    key: String,
    assistant: u64,
    /// Call refs placed so far, and those ended.
    seen: BTreeSet<String>,
    ended: BTreeSet<String>,
    /// DynamoDB and SQS fail now and then (`Stack::start_faulty`).
    faulty: bool,
    /// Where the functions reach Twilio: the fake, or a fault proxy before it.
    twilio_base: String,
}

/// The next Monday, 14:00 UTC, at least a day from now: 09:00 in New York,
/// 06:00 in Los Angeles, 14:00 in London.
fn next_monday_1400() -> i64 {
    let mut day = chrono::Utc::now().date_naive() + chrono::Duration::days(1);
    while day.weekday() != chrono::Weekday::Mon {
        day += chrono::Duration::days(1);
    }
    chrono::Utc
        .from_utc_datetime(&day.and_hms_opt(14, 0, 0).unwrap())
        .timestamp()
}

impl Engine {
    async fn start(cap: u32, monthly_limit_seconds: u64) -> Self {
        Self::on(Stack::start().await, cap, monthly_limit_seconds).await
    }

    /// On `stack` (faulty or not): the organisation, its assistant and key
    /// are written by the harness's own clients, which never fail.
    async fn on(stack: Stack, cap: u32, monthly_limit_seconds: u64) -> Self {
        let key = stack
            .seed_organisation("acme", monthly_limit_seconds, cap)
            .await;
        let assistant = stack.seed_twilio_assistant("acme", CALLER_ID).await;
        let api = CampaignsApi {
            access: keyed_access(&stack),
            store: Arc::new(stack.campaigns()),
            directory: Arc::new(stack.directory()),
        };
        let twilio = FakeTwilio::start(ACCOUNT_SID, TWILIO_TOKEN);
        Self {
            twilio_base: twilio.base_url().to_string(),
            twilio,
            clock: Arc::new(ManualClock::at(next_monday_1400())),
            stack,
            api,
            key,
            assistant,
            seen: BTreeSet::new(),
            ended: BTreeSet::new(),
            faulty: false,
        }
    }

    fn placement(&self) -> Placement {
        Placement {
            access: keyed_access(&self.stack),
            directory: Arc::new(self.stack.directory()),
            calls: Arc::new(self.stack.outbound_calls()),
            providers: Providers {
                twilio: Some(TwilioClient {
                    http: reqwest::Client::new(),
                    base_url: self.twilio_base.clone(),
                    account_sid: ACCOUNT_SID.into(),
                    auth_token: Secret::new(TWILIO_TOKEN),
                    api_key: None,
                }),
                twilio_phone_number: Some(CALLER_ID.into()),
                elevenlabs: None,
                public_base_url: PUBLIC_BASE.into(),
                org_accounts: None,
            },
            tenancy: Arc::new(self.stack.tenancy()),
            default_org: Some("acme".into()),
            dnc: Arc::new(self.stack.dnc()),
        }
    }

    fn dialer(&self) -> Arc<campaign_dialer::CampaignDialWorker> {
        Arc::new(campaign_dialer::CampaignDialWorker {
            dialer: shared::flows::campaigns::engine::CampaignDialer {
                store: Arc::new(self.stack.campaigns()),
                placement: self.placement(),
                notifications: self.stack.queue("NotificationQueue"),
                clock: self.clock.clone(),
            },
        })
    }

    async fn tick(&self) -> TickReport {
        CampaignTick {
            store: Arc::new(self.stack.campaigns()),
            dial_queue: self.stack.queue("CampaignDialQueue"),
            clock: self.clock.clone(),
            calls: Arc::new(self.stack.outbound_calls()),
        }
        .run()
        .await
        .unwrap()
    }

    async fn dial(&self) {
        let dialer = self.dialer();
        self.stack
            .drain("CampaignDialQueue", |event| {
                let dialer = Arc::clone(&dialer);
                async move { dialer.handle(event).await }
            })
            .await;
    }

    /// A tick, then its dials; returns the calls placed, as (call ref, To).
    async fn step(&mut self) -> (TickReport, Vec<(String, String)>) {
        let report = self.tick().await;
        self.dial().await;
        let mut new = Vec::new();
        for form in self.twilio.created_calls() {
            let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let call_ref = get("StatusCallback")
                .unwrap()
                .split_once("?call=")
                .unwrap()
                .1
                .to_string();
            if self.seen.insert(call_ref.clone()) {
                assert_eq!(get("MachineDetection").as_deref(), Some("Enable"));
                assert_eq!(get("AsyncAmd").as_deref(), Some("true"));
                assert_eq!(
                    get("AsyncAmdStatusCallback"),
                    Some(format!("{PUBLIC_BASE}/twilio/status?call={call_ref}&amd=1"))
                );
                new.push((call_ref, get("To").unwrap()));
            }
        }
        (report, new)
    }

    fn in_flight(&self) -> usize {
        self.seen.len() - self.ended.len()
    }

    async fn callback(&self, query: &str, params: &[(&str, &str)]) {
        let url = format!("{PUBLIC_BASE}/twilio/status?{query}");
        let signature = twilio_signature(TWILIO_TOKEN, &url, params);
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let headers = vec![
            (
                "content-type".to_string(),
                "application/x-www-form-urlencoded".to_string(),
            ),
            ("x-twilio-signature".to_string(), signature),
        ];
        let status = twilio_status::TwilioStatus {
            twilio_auth: shared::providers::twilio::TwilioWebhookAuth::single(
                Secret::new(TWILIO_TOKEN),
                PUBLIC_BASE.into(),
            ),
            intake: self.stack.provider_event_intake(),
            calls: Arc::new(self.stack.outbound_calls()),
        };
        // Twilio would not retry a callback refused with a 5xx (the
        // reconciler finds such calls, tested apart); here it is sent again
        // until stored, so every call of the simulation ends.
        for _ in 0..20 {
            let request = devstack::server::api_request(
                "POST",
                "/twilio/status",
                "/twilio/status",
                query,
                &headers,
                body.as_bytes(),
            );
            let response = status.handle(request).await;
            if response.status() == 200 {
                return;
            }
            assert_eq!(response.status(), 503, "{:?}", json_body(&response));
        }
        panic!("a callback refused 20 times");
    }

    async fn sid_of(&self, call_ref: &str) -> String {
        self.harness_calls()
            .get(call_ref)
            .await
            .unwrap()
            .unwrap()
            .call_sid
            .unwrap()
    }

    /// Twilio's asynchronous AMD verdict for the call.
    async fn answered_by(&self, call_ref: &str, verdict: &str) {
        let sid = self.sid_of(call_ref).await;
        self.callback(
            &format!("call={call_ref}&amd=1"),
            &[
                ("CallSid", sid.as_str()),
                ("AccountSid", ACCOUNT_SID),
                ("AnsweredBy", verdict),
            ],
        )
        .await;
    }

    /// The call ends with Twilio's `status`: its callback, the worker that
    /// applies it, and the stream that settles the attempt.
    async fn end(&mut self, call_ref: &str, status: &str, seconds: u64) {
        let sid = self.sid_of(call_ref).await;
        let duration = seconds.to_string();
        let mut params = vec![
            ("CallSid", sid.as_str()),
            ("AccountSid", ACCOUNT_SID),
            ("CallStatus", status),
        ];
        if status == "completed" {
            params.push(("CallDuration", &duration));
        }
        self.callback(&format!("call={call_ref}"), &params).await;
        self.stack.run_provider_events().await;
        self.settle().await;
        self.ended.insert(call_ref.to_string());
    }

    /// `stuck-sweep`'s reconciler, reaching Twilio as the dialler does.
    fn reconciler(&self) -> shared::flows::reconcile::Reconciler {
        shared::flows::reconcile::Reconciler {
            calls: Arc::new(self.stack.outbound_calls()),
            events: self.stack.provider_event_intake(),
            notifications: self.stack.queue("NotificationQueue"),
            twilio: self.placement().providers.twilio,
            elevenlabs: None,
            org_accounts: None,
            reads_per_provider: 100,
        }
    }

    /// The reconciler on the engine's clock, then what it queued applied
    /// and settled; returns the calls it released.
    async fn sweep(&self) -> usize {
        let report = self.reconciler().run(self.clock.now(), 100).await.unwrap();
        self.stack.run_provider_events().await;
        self.settle().await;
        report.released.len()
    }

    /// The calls stream, with the engine's clock.
    async fn settle(&self) {
        let dispatcher = shared::flows::call_stream::NewCallRecords {
            campaign_calls: shared::flows::campaign_calls::CampaignCallEnds {
                store: Arc::new(self.stack.campaigns()),
                clock: self.clock.clone(),
            },
            ..self.stack.new_call_records()
        };
        let report = self.stack.run_calls_stream_with(dispatcher).await;
        // On a faulty stack a failed record is retried, and one given up on
        // is settled by the tick's check.
        assert!(self.faulty || report.failed.is_empty(), "{report:?}");
    }

    async fn create(&self, body: serde_json::Value) -> String {
        let headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("x-api-key".to_string(), self.key.clone()),
        ];
        let request = devstack::server::api_request(
            "POST",
            "/campaigns",
            "/campaigns",
            "",
            &headers,
            body.to_string().as_bytes(),
        );
        let response = self.api.handle(request).await;
        let body = json_body(&response);
        assert_eq!(response.status(), 201, "{body}");
        body["campaign"]["campaign_id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn get(&self, path: &str, query: &str) -> serde_json::Value {
        let headers = vec![("x-api-key".to_string(), self.key.clone())];
        let route = if path.ends_with("/recipients") {
            "/campaigns/{campaign_id}/recipients"
        } else {
            "/campaigns/{campaign_id}"
        };
        let request = devstack::server::api_request("GET", route, path, query, &headers, b"");
        json_body(&self.api.handle(request).await)
    }

    async fn post(&self, path: &str) -> serde_json::Value {
        let headers = vec![("x-api-key".to_string(), self.key.clone())];
        let request = devstack::server::api_request(
            "POST",
            "/campaigns/{campaign_id}/{action}",
            path,
            "",
            &headers,
            b"",
        );
        json_body(&self.api.handle(request).await)
    }

    /// Recipients by row.
    async fn recipients(&self, id: &str) -> BTreeMap<u64, serde_json::Value> {
        let page = self
            .get(&format!("/campaigns/{id}/recipients"), "limit=100")
            .await;
        page["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["row"].as_u64().unwrap(), r.clone()))
            .collect()
    }

    fn harness_calls(&self) -> shared::store::outbound_calls::DynamoOutboundCallStore {
        shared::store::outbound_calls::DynamoOutboundCallStore {
            client: self.stack.harness_dynamo.clone(),
            calls_table: self.stack.resources.table("CallsTable"),
            organisations_table: self.stack.resources.table("OrganisationsTable"),
        }
    }

    async fn org_slots(&self) -> i64 {
        let out = self
            .stack
            .harness_dynamo
            .get_item()
            .table_name(self.stack.resources.table("OrganisationsTable"))
            .key(
                "org_id",
                aws_sdk_dynamodb::types::AttributeValue::S("acme".into()),
            )
            .send()
            .await
            .unwrap();
        out.item
            .and_then(|i| i.get("calls_in_flight").cloned())
            .and_then(|v| v.as_n().ok().and_then(|n| n.parse().ok()))
            .unwrap_or(0)
    }
}

fn keyed_access(stack: &Stack) -> shared::api::access::KeyedAccess {
    shared::api::access::KeyedAccess {
        api_keys: Arc::new(DynamoApiKeyStore::new(
            stack.dynamo.clone(),
            stack.resources.table("ApiKeysTable"),
        )),
        rate_limiter: Arc::new(DynamoRateLimiter {
            client: stack.dynamo.clone(),
            table: stack.resources.table("IdempotencyTable"),
            window_secs: 86_400,
        }),
        per_window: 10_000,
    }
}

/// Whether `window` 09:00-17:00 Monday to Friday is open in `zone` at `at`.
fn open_in(zone: &str, at: i64) -> bool {
    let window: shared::base::calling_window::CallingWindow =
        serde_json::from_value(serde_json::json!({"start": "09:00", "end": "17:00"})).unwrap();
    window.is_open(&[zone], at)
}

/// How one call ends: Twilio's final status, its AMD verdict, seconds.
type Ending = (&'static str, Option<&'static str>, u64);

/// Requests one dial makes at most: the 1,000-recipient run kills a dial
/// after each of them in turn.
const CRASH_POINTS: u64 = 12;

const NY: &str = "+12125550101";
const LA: &str = "+14155550102";
const LONDON: &str = "+447123456789";
const LISTED: &str = "+12125550104";
const NY2: &str = "+12125550105";

fn zone_of(number: &str) -> &'static str {
    match number {
        NY | LISTED | NY2 => "America/New_York",
        LA => "America/Los_Angeles",
        _ => "Europe/London",
    }
}

#[tokio::test]
async fn a_campaign_dials_each_recipient_inside_its_window_within_its_slots_and_retries_by_outcome()
{
    let mut t = Engine::start(2, 36_000).await;
    // Listed before the campaign: skipped at dial time, never dialled.
    use shared::store::dnc::DoNotCallStore;
    t.stack
        .dnc()
        .add(
            "acme",
            &[shared::store::dnc::DncEntry {
                number: LISTED.into(),
                added_at: shared::base::time::now_rfc3339(),
                reason: None,
            }],
        )
        .await
        .unwrap();
    let id = t
        .create(serde_json::json!({
            "name": "Reminders",
            "assistant_id": t.assistant,
            "agenda": AGENDA,
            "window": {"start": "09:00", "end": "17:00"},
            "max_concurrency": 2,
            "retry": {
                "no_answer": {"max_attempts": 2, "spacing_minutes": 30},
                "voicemail": {"max_attempts": 1, "spacing_minutes": 60},
            },
            "recipients": [
                {"phone_number": NY, "agent_variables": {"first_name": "Ada"}},
                {"phone_number": LA},
                {"phone_number": LONDON, "timezone": "Europe/London"},
                {"phone_number": LISTED},
                {"phone_number": NY2},
            ],
        }))
        .await;

    // How each number's calls end, attempt after attempt.
    let mut script: BTreeMap<&str, Vec<Ending>> = BTreeMap::from([
        (
            NY,
            vec![("no-answer", None, 0), ("completed", Some("human"), 40)],
        ),
        (LA, vec![("completed", Some("human"), 25)]),
        (LONDON, vec![("completed", Some("machine_end_beep"), 12)]),
        (NY2, vec![("busy", None, 0), ("completed", None, 33)]),
    ]);
    let mut used = 0u64;
    let mut dialled: Vec<String> = Vec::new();
    // Every 15 minutes of the simulated day, up to 10 hours.
    for _ in 0..40 {
        let (report, placed) = t.step().await;
        assert!(report.claimed <= 2, "{report:?}");
        for (call_ref, to) in &placed {
            let now = t.clock.now();
            assert!(
                open_in(zone_of(to), now),
                "{to} dialled at {now} outside its window"
            );
            assert_ne!(to, LISTED, "a do-not-call number was dialled");
            dialled.push(to.clone());
            let _ = call_ref;
        }
        assert!(t.in_flight() <= 2, "{} calls in flight", t.in_flight());
        assert!(t.org_slots().await <= 2);
        // The calls in flight end as scripted.
        for (call_ref, to) in placed {
            let (status, verdict, seconds) = script.get_mut(to.as_str()).unwrap().remove(0);
            if let Some(verdict) = verdict {
                t.answered_by(&call_ref, verdict).await;
            }
            t.end(&call_ref, status, seconds).await;
            used += seconds;
        }
        let campaign = t.get(&format!("/campaigns/{id}"), "").await;
        if campaign["state"] == "finished" {
            break;
        }
        t.clock.advance(15 * 60);
    }

    let campaign = t.get(&format!("/campaigns/{id}"), "").await;
    assert_eq!(campaign["state"], "finished", "{campaign:#}");
    assert_eq!(campaign["in_flight"], 0);
    assert_eq!(t.org_slots().await, 0, "every slot given back");
    let recipients = t.recipients(&id).await;
    let state = |row: u64| {
        (
            recipients[&row]["state"].as_str().unwrap().to_string(),
            recipients[&row]["reason"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            recipients[&row]["attempts"].as_u64().unwrap(),
        )
    };
    assert_eq!(state(1), ("completed".into(), "answered".into(), 2));
    assert_eq!(state(2), ("completed".into(), "answered".into(), 1));
    assert_eq!(
        state(3),
        ("failed".into(), "voicemail after 1 attempts".into(), 1)
    );
    assert_eq!(state(4), ("skipped".into(), "dnc".into(), 0));
    assert_eq!(state(5), ("completed".into(), "answered".into(), 2));
    let first = &recipients[&1]["calls"];
    assert_eq!(first[0]["outcome"], "no_answer");
    assert_eq!(first[1]["outcome"], "answered");
    assert_eq!(first[1]["duration_secs"], 40);
    assert_eq!(recipients[&3]["calls"][0]["outcome"], "voicemail");
    for counts in ["pending", "dialling"] {
        assert_eq!(campaign["counts"][counts], 0);
    }
    assert_eq!(campaign["counts"]["completed"], 3);
    assert_eq!(campaign["counts"]["skipped"], 1);

    // Each number dialled as often as its script says, never twice per attempt.
    let mut per_number: BTreeMap<&str, usize> = BTreeMap::new();
    for to in &dialled {
        *per_number.entry(to.as_str()).or_default() += 1;
    }
    assert_eq!(
        per_number,
        BTreeMap::from([(NY, 2), (LA, 1), (LONDON, 1), (NY2, 2)])
    );
    assert_eq!(t.twilio.created_calls().len(), 6);
    // Usage is the sum of the calls' durations.
    let org = t
        .stack
        .directory()
        .get_organisation("acme")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(org.usage_this_month_seconds, used);
    assert_eq!(org.reserved_seconds, 0);
}

fn reminders(assistant: u64, numbers: &[&str], max_concurrency: u32) -> serde_json::Value {
    let recipients: Vec<serde_json::Value> = numbers
        .iter()
        .map(|n| serde_json::json!({"phone_number": n}))
        .collect();
    serde_json::json!({
        "name": "Reminders",
        "assistant_id": assistant,
        "agenda": AGENDA,
        "window": {"start": "09:00", "end": "17:00"},
        "max_concurrency": max_concurrency,
        "recipients": recipients,
    })
}

#[tokio::test]
async fn a_spent_budget_pauses_the_campaign_once_with_a_notice_and_resuming_continues() {
    // One call reserves the assistant's 600 s: the month holds one at a time.
    let mut t = Engine::start(5, 600).await;
    let id = t
        .create(reminders(t.assistant, &[NY, NY2, "+12125550106"], 3))
        .await;
    let (report, placed) = t.step().await;
    assert_eq!(report.claimed, 3, "{report:?}");
    assert_eq!(placed.len(), 1, "the budget holds one call");
    let campaign = t.get(&format!("/campaigns/{id}"), "").await;
    assert_eq!(
        (
            campaign["state"].as_str(),
            campaign["paused_reason"].as_str()
        ),
        (Some("paused"), Some("budget"))
    );
    assert_eq!(
        campaign["in_flight"], 1,
        "the unplaced claims were given back"
    );
    assert_eq!(campaign["counts"]["pending"], 2);
    assert_eq!(t.org_slots().await, 1);
    let notices: Vec<String> = t
        .stack
        .peek_all("NotificationQueue")
        .await
        .into_iter()
        .filter(|body| body.contains("paused"))
        .collect();
    assert_eq!(notices.len(), 1, "one notice per pause: {notices:?}");
    assert!(notices[0].contains("budget"), "{}", notices[0]);
    let recipients = t.recipients(&id).await;
    let waiting: Vec<u64> = recipients
        .values()
        .filter(|r| r["state"] == "pending")
        .map(|r| r["attempts"].as_u64().unwrap())
        .collect();
    assert_eq!(waiting, [0, 0], "a given-back claim is not an attempt");

    let (call_ref, _) = placed[0].clone();
    t.end(&call_ref, "completed", 60).await;
    // Paused: nothing is claimed however often the tick runs.
    t.clock.advance(60);
    let (report, placed) = t.step().await;
    assert_eq!((report.claimed, placed.len()), (0, 0), "{report:?}");

    // The budget raised and the campaign resumed: it continues where it stopped.
    t.stack
        .directory()
        .update_organisation(
            "acme",
            &shared::store::directory::OrganisationPatch {
                monthly_limit_seconds: Some(36_000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let resumed = t.post(&format!("/campaigns/{id}/resume")).await;
    assert_eq!(resumed["state"], "active", "{resumed}");
    let (_, placed) = t.step().await;
    assert_eq!(placed.len(), 2);
    for (call_ref, _) in placed {
        t.end(&call_ref, "completed", 30).await;
    }
    t.clock.advance(60);
    t.step().await;
    let campaign = t.get(&format!("/campaigns/{id}"), "").await;
    assert_eq!(campaign["state"], "finished", "{campaign:#}");
    assert_eq!(campaign["counts"]["completed"], 3);
    let org = t
        .stack
        .directory()
        .get_organisation("acme")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(org.usage_this_month_seconds, 120);
}

/// Single calls and campaign calls share the organisation's cap: a single
/// call holds a slot a campaign cannot claim, a full organisation refuses
/// the next single call, and each end frees its own slot.
#[tokio::test]
async fn single_calls_and_campaign_calls_share_the_organisations_cap() {
    let mut t = Engine::start(2, 36_000).await;
    let initiate = calls_initiate::CallsInitiate {
        placement: t.placement(),
    };
    let (key, assistant) = (t.key.clone(), t.assistant);
    let request = |to: &str| {
        let body = serde_json::json!({
            "assistant_id": assistant,
            "to_phone_number": to,
            "agenda": AGENDA,
        });
        devstack::server::api_request(
            "POST",
            "/calls/initiate",
            "/calls/initiate",
            "",
            &[
                ("content-type".to_string(), "application/json".to_string()),
                ("x-api-key".to_string(), key.clone()),
            ],
            body.to_string().as_bytes(),
        )
    };
    let single = initiate.handle(request("+12125550177")).await;
    assert_eq!(single.status(), 200, "{:?}", json_body(&single));
    // Its ref is in the status callback URL it gave Twilio.
    let created = t.twilio.created_calls();
    let callback = created[0]
        .iter()
        .find(|(k, _)| k == "StatusCallback")
        .unwrap()
        .1
        .clone();
    let single_ref = callback.split_once("?call=").unwrap().1.to_string();
    t.seen.insert(single_ref.clone());
    assert_eq!(t.org_slots().await, 1);

    let id = t
        .create(reminders(t.assistant, &[NY, NY2, "+12125550106"], 2))
        .await;
    let (report, placed) = t.step().await;
    assert_eq!(
        (report.claimed, placed.len()),
        (1, 1),
        "one slot left of two: {report:?}"
    );
    assert_eq!(t.org_slots().await, 2);
    let refused = initiate.handle(request("+12125550178")).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(json_body(&refused)["code"], "concurrency_limit");
    assert_eq!(
        t.twilio.created_calls().len(),
        2,
        "the refused call never reached Twilio"
    );

    // The single call ends: its slot goes to the campaign's next claim.
    t.end(&single_ref, "completed", 30).await;
    assert_eq!(t.org_slots().await, 1);
    t.clock.advance(60);
    let (report, placed) = t.step().await;
    assert_eq!((report.claimed, placed.len()), (1, 1), "{report:?}");
    let campaign = t.get(&format!("/campaigns/{id}"), "").await;
    assert_eq!(campaign["in_flight"], 2);
    assert_eq!(t.org_slots().await, 2);

    // The campaign's calls end: every slot is free again.
    let running: Vec<String> = t.seen.difference(&t.ended).cloned().collect();
    for call_ref in running {
        t.end(&call_ref, "completed", 10).await;
    }
    assert_eq!(t.org_slots().await, 0);
}

#[tokio::test]
async fn a_dial_job_delivered_twice_or_lost_places_one_call_and_a_cancel_closes_the_rest() {
    let mut t = Engine::start(5, 36_000).await;
    let id = t
        .create(reminders(t.assistant, &[NY, NY2, "+12125550106"], 1))
        .await;

    // The first claim's job, delivered twice: one call.
    let report = t.tick().await;
    assert_eq!(report.claimed, 1);
    let jobs = t.stack.peek_all("CampaignDialQueue").await;
    assert_eq!(jobs.len(), 1);
    t.dial().await;
    let queue = t.stack.queue("CampaignDialQueue");
    shared::queue::jobs::JobQueue::send_raw(
        queue.as_ref(),
        jobs[0].clone(),
        std::time::Duration::ZERO,
    )
    .await
    .unwrap();
    t.dial().await;
    assert_eq!(
        t.twilio.created_calls().len(),
        1,
        "a redelivered job placed nothing"
    );
    let (_, placed) = t.step().await;
    let first = placed.into_iter().next().unwrap().0;
    t.end(&first, "completed", 20).await;

    // The next claim's job is lost: the tick sends it again once its check is due.
    t.clock.advance(60);
    let report = t.tick().await;
    assert_eq!(report.claimed, 1);
    t.stack.discard_queued("CampaignDialQueue").await;
    t.dial().await;
    assert_eq!(t.twilio.created_calls().len(), 1);
    t.clock
        .advance(shared::flows::campaigns::engine::DIAL_CHECK_SECS + 1);
    let (report, placed) = t.step().await;
    assert_eq!(report.resent, 1, "{report:?}");
    assert_eq!(placed.len(), 1);
    // Its check comes again while the call goes on: sent again, nothing placed.
    t.clock
        .advance(shared::flows::campaigns::engine::DIAL_CHECK_SECS + 1);
    let (_, again) = t.step().await;
    assert!(again.is_empty());
    assert_eq!(t.twilio.created_calls().len(), 2);

    // Cancelled with one call in flight and one recipient pending: the
    // pending one is closed, the call's end settles it, nothing is retried.
    let cancelled = t.post(&format!("/campaigns/{id}/cancel")).await;
    assert_eq!(cancelled["state"], "cancelled");
    let report = t.tick().await;
    assert_eq!(report.closed, 1, "{report:?}");
    let call_ref = placed[0].0.clone();
    t.end(&call_ref, "busy", 0).await;
    let report = t.tick().await;
    assert_eq!(report.finished, 1, "{report:?}");
    let recipients = t.recipients(&id).await;
    // Which row each claim took is the index's order: compare as a set.
    let mut states: Vec<(&str, &str)> = recipients
        .values()
        .map(|r| {
            (
                r["state"].as_str().unwrap(),
                r["reason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    states.sort();
    assert_eq!(
        states,
        [
            ("cancelled", "cancelled"),
            ("cancelled", "cancelled"),
            ("completed", "answered"),
        ]
    );
    assert_eq!(t.org_slots().await, 0);
    assert_eq!(t.twilio.created_calls().len(), 2);
    // The tick no longer looks at it.
    assert_eq!(t.tick().await.campaigns, 0);
}

/// A stable pseudo-random number of `text`, 0 to 99.
fn percentile(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    // DefaultHasher::new() has fixed keys: the same number every run.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish() % 100
}

#[tokio::test]
async fn a_thousand_recipients_across_zones_with_faults_are_each_called_inside_their_window_once_per_attempt(
) {
    use crate::crash::{event_of, redeliver_until_settled, run_or_crash};
    use devstack::faults::{Dialect, FaultPlan, FaultProxy};
    use shared::store::campaigns::CampaignStore;
    let plan = FaultPlan::all(50, 23);
    let stack = Stack::start_faulty(plan.clone()).await;
    let mut t = Engine::on(stack, 100, 10_000_000).await;
    t.faulty = true;
    // Twilio fails 5% of requests too: throttled, a 500, a connection lost
    // before the request reached it (nothing placed) or after (placed, the
    // answer lost), or late. It shares the crash switch.
    let twilio_faults = FaultProxy::start_with_switch(
        t.twilio.base_url(),
        Dialect::Http,
        FaultPlan { seed: 24, ..plan },
        Arc::clone(&t.stack.crash),
    );
    t.twilio_base = twilio_faults.base_url().to_string();
    let harness = shared::store::campaigns::DynamoCampaignStore {
        client: t.stack.harness_dynamo.clone(),
        table: t.stack.resources.table("CampaignsTable"),
        organisations_table: t.stack.resources.table("OrganisationsTable"),
    };

    // Four zones' worth of numbers; Australian mobiles may ring in every
    // Australian zone, so their window must hold in all of them at once.
    let mut rows = Vec::new();
    for i in 0..300 {
        rows.push(serde_json::json!({"phone_number": format!("+1212555{i:04}")}));
        rows.push(serde_json::json!({"phone_number": format!("+1415555{i:04}")}));
    }
    for i in 0..200 {
        rows.push(serde_json::json!({"phone_number": format!("+447123456{i:03}"), "timezone": "Europe/London"}));
        rows.push(serde_json::json!({"phone_number": format!("+6141234{i:04}")}));
    }
    // Twenty of them asked not to be called.
    let listed: Vec<String> = (0..10)
        .flat_map(|i| [format!("+1212555{i:04}"), format!("+6141234{i:04}")])
        .collect();
    shared::store::dnc::DoNotCallStore::add(
        &shared::store::dnc::DynamoDncStore {
            client: t.stack.harness_dynamo.clone(),
            table: t.stack.resources.table("TenancyTable"),
        },
        "acme",
        &listed
            .iter()
            .map(|number| shared::store::dnc::DncEntry {
                number: number.clone(),
                added_at: shared::base::time::now_rfc3339(),
                reason: None,
            })
            .collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    let body = serde_json::json!({
        "assistant_id": t.assistant,
        "agenda": AGENDA,
        "window": {"start": "09:00", "end": "20:00"},
        "max_concurrency": 100,
        "recipients": rows,
    });
    // Created through the faulty stack: retried with its key until it answers.
    let headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("x-api-key".to_string(), t.key.clone()),
        ("idempotency-key".to_string(), "thousand".to_string()),
    ];
    let mut id = None;
    for _ in 0..20 {
        let request = devstack::server::api_request(
            "POST",
            "/campaigns",
            "/campaigns",
            "",
            &headers,
            body.to_string().as_bytes(),
        );
        let response = t.api.handle(request).await;
        if response.status().is_success() {
            id = json_body(&response)["campaign"]["campaign_id"]
                .as_str()
                .map(str::to_string);
            break;
        }
        assert_eq!(response.status(), 503, "{:?}", json_body(&response));
    }
    let id = id.expect("created within 20 tries");
    let zones_of = |number: &str| -> Vec<String> {
        if number.starts_with("+44") {
            vec!["Europe/London".to_string()]
        } else {
            shared::base::phone_zones::zones_for(number)
                .iter()
                .map(|z| z.to_string())
                .collect()
        }
    };
    let window: shared::base::calling_window::CallingWindow =
        serde_json::from_value(serde_json::json!({"start": "09:00", "end": "20:00"})).unwrap();

    let mut dialled: BTreeMap<String, usize> = BTreeMap::new();
    let mut most_in_flight = 0;
    let mut used = 0u64;
    let mut steps = 0;
    let (mut crashes, mut killed, mut swept_released) = (0u64, 0u64, 0usize);
    let dialer = t.dialer();
    // The stuck-calls sweep, through the faulty Twilio: it settles a call
    // whose placing Twilio never confirmed and that it has no record of.
    let sweep = t.reconciler();
    let began = std::time::Instant::now();
    // Ten-minute steps over at most five simulated days.
    for step in 0..720 {
        steps = step;
        let tick = CampaignTick {
            store: Arc::new(t.stack.campaigns()),
            dial_queue: t.stack.queue("CampaignDialQueue"),
            clock: t.clock.clone(),
            calls: Arc::new(t.stack.outbound_calls()),
        }
        .run()
        .await;
        // A tick that failed, or claimed or resent something, may have
        // queued dials (a failed tick's claims are resent by a later one).
        if tick
            .as_ref()
            .map_or(true, |r| r.claimed > 0 || r.resent > 0)
        {
            // The first job of the step is killed after its k-th request
            // (k = 1, 2, ... in turn), then redelivered with the rest.
            let jobs = t.stack.peek_all("CampaignDialQueue").await;
            t.stack.discard_queued("CampaignDialQueue").await;
            if let Some(first) = jobs.first() {
                crashes += 1;
                t.stack.crash.arm(crashes % CRASH_POINTS + 1);
                let handler = Arc::clone(&dialer);
                let event = event_of(first.clone(), 1);
                if run_or_crash(&t.stack, async move { handler.handle(event).await })
                    .await
                    .is_none()
                {
                    killed += 1;
                }
                t.stack.crash.count();
            }
            for chunk in jobs.chunks(10) {
                futures_util::future::join_all(
                    chunk
                        .iter()
                        .map(|job| redeliver_until_settled(&dialer, job, "a dial job")),
                )
                .await;
            }
        }
        // The calls the fake Twilio took since the last step, whatever the
        // dialler heard back.
        let mut placed = Vec::new();
        for (sid, form) in t.twilio.created_calls_with_sids() {
            let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let call_ref = get("StatusCallback")
                .unwrap()
                .split_once("?call=")
                .unwrap()
                .1
                .to_string();
            if t.seen.insert(call_ref.clone()) {
                placed.push((call_ref, sid, get("To").unwrap()));
            }
        }
        let now = t.clock.now();
        for (_, _, to) in &placed {
            let zones = zones_of(to);
            let names: Vec<&str> = zones.iter().map(String::as_str).collect();
            assert!(
                window.is_open(&names, now),
                "{to} dialled at {now}, outside its window in {zones:?}"
            );
            assert!(!listed.contains(to), "{to} is on the do-not-call list");
            *dialled.entry(to.clone()).or_default() += 1;
        }
        most_in_flight = most_in_flight.max(t.in_flight());
        assert!(t.in_flight() <= 100, "{} in flight", t.in_flight());
        // Every call in flight ends within the step, as its number's luck
        // says; Twilio's callbacks name the call's sid.
        let mut endings = Vec::new();
        for (call_ref, sid, _) in &placed {
            let luck = percentile(call_ref);
            let ending: Ending = match luck {
                0..=59 => ("completed", Some("human"), 10 + luck),
                60..=74 => ("no-answer", None, 0),
                75..=84 => ("busy", None, 0),
                85..=94 => ("completed", Some("machine_end_beep"), 5 + luck % 20),
                _ => ("failed", None, 0),
            };
            used += ending.2;
            t.ended.insert(call_ref.clone());
            // Twilio's own record of the call ends too: what the sweep reads
            // for a call whose callback was lost on our side.
            t.twilio.advance_call(
                sid,
                ending.0,
                Some(ending.2).filter(|_| ending.0 == "completed"),
            );
            endings.push((call_ref.clone(), sid.clone(), ending));
        }
        let t_ref = &t;
        for chunk in endings.chunks(20) {
            futures_util::future::join_all(chunk.iter().map(
                |(call_ref, sid, (status, verdict, seconds))| async move {
                    if let Some(verdict) = verdict {
                        t_ref
                            .callback(
                                &format!("call={call_ref}&amd=1"),
                                &[
                                    ("CallSid", sid.as_str()),
                                    ("AccountSid", ACCOUNT_SID),
                                    ("AnsweredBy", verdict),
                                ],
                            )
                            .await;
                    }
                    let duration = seconds.to_string();
                    let mut params = vec![
                        ("CallSid", sid.as_str()),
                        ("AccountSid", ACCOUNT_SID),
                        ("CallStatus", *status),
                    ];
                    if *status == "completed" {
                        params.push(("CallDuration", duration.as_str()));
                    }
                    t_ref.callback(&format!("call={call_ref}"), &params).await;
                },
            ))
            .await;
        }
        // Twilio's callbacks applied, and the attempts they ended settled.
        let apply_and_settle = || async {
            // A claim left by a delivery whose answer was lost is taken
            // over after the lease: short here, as a short worker timeout.
            let mut worker = t
                .stack
                .provider_events_worker_with(Arc::new(t.stack.outbound_calls()));
            Arc::get_mut(&mut worker).unwrap().processor.lease = std::time::Duration::from_secs(1);
            t.stack
                .drain("ProviderEventsQueue", |event| {
                    let worker = Arc::clone(&worker);
                    async move { worker.handle(event).await }
                })
                .await;
            t.settle().await;
        };
        if !placed.is_empty() {
            apply_and_settle().await;
        }
        // Left open now are calls whose placing Twilio never confirmed: the
        // sweep (on the simulation's clock) finds them at Twilio or releases
        // them as never placed.
        let swept = sweep.run(now, 100).await;
        swept_released += swept.as_ref().map_or(0, |r| r.released.len());
        if swept.map_or(true, |r| r != Default::default()) {
            apply_and_settle().await;
        }
        if !placed.is_empty() {
            eprintln!(
                "step {step}: {} placed at {now} ({:?} since the start)",
                placed.len(),
                began.elapsed()
            );
        }
        let campaign = harness.get(&id).await.unwrap().unwrap();
        if campaign.state == shared::store::campaigns::CampaignState::Finished {
            break;
        }
        // Nothing placed: on to the next recipient due, at least ten minutes on.
        let next = if placed.is_empty() {
            harness
                .due(&id, i64::MAX, 1)
                .await
                .unwrap()
                .first()
                .and_then(|r| r.due_at)
                .unwrap_or(now)
        } else {
            now
        };
        t.clock.set(next.max(now + 600));
    }

    let campaign = harness.get(&id).await.unwrap().unwrap();
    if campaign.state != shared::store::campaigns::CampaignState::Finished {
        // What the recipients left open are waiting on, for the failure.
        let mut open = Vec::new();
        for state in ["dialling", "pending"] {
            let state: shared::store::campaigns::RecipientState =
                serde_json::from_value(serde_json::json!(state)).unwrap();
            let page = harness
                .recipients(&id, Some(state), 20, None)
                .await
                .unwrap();
            for r in page.items {
                let call = match &r.dial_call_ref {
                    Some(call_ref) => {
                        format!("{:?}", t.harness_calls().get(call_ref).await.unwrap())
                    }
                    None => "no call".into(),
                };
                open.push(format!(
                    "row {} {:?} due {:?}: {call}",
                    r.row, r.state, r.due_at
                ));
            }
        }
        panic!(
            "after {steps} steps: {:?}; ProviderEventsDLQ {}, CampaignDialDLQ {}; open: {open:#?}",
            campaign.counts,
            t.stack.depth("ProviderEventsDLQ").await,
            t.stack.depth("CampaignDialDLQ").await,
        );
    }
    assert_eq!(campaign.in_flight, 0);
    assert_eq!(t.org_slots().await, 0);
    // Every recipient final, with a reason, its attempts its calls.
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = harness.recipients(&id, None, 100, after).await.unwrap();
        all.extend(page.items);
        match page.next {
            Some(next) => after = Some(next.parse().unwrap()),
            None => break,
        }
    }
    assert_eq!(all.len(), 1000);
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &all {
        *by_state.entry(r.state.as_str()).or_default() += 1;
        assert!(r.reason.is_some(), "row {} ended without a reason", r.row);
        assert!(
            matches!(r.state.as_str(), "completed" | "failed" | "skipped"),
            "row {}: {:?}",
            r.row,
            r.state
        );
        // Each recorded attempt is one call at the fake, or one Twilio
        // never took (refused, or lost before it arrived, or the dial was
        // killed before it asked): its record has no sid; never two.
        let placed = dialled.get(&r.phone_number).copied().unwrap_or(0);
        let mut refused = 0;
        for call in &r.calls {
            if !t.seen.contains(&call.call_ref) {
                let record = t
                    .harness_calls()
                    .get(&call.call_ref)
                    .await
                    .unwrap()
                    .unwrap();
                assert!(
                    record.call_sid.is_none(),
                    "row {}: a call the fake never saw",
                    r.row
                );
                assert_eq!(call.outcome.as_deref(), Some("failed"));
                refused += 1;
            }
        }
        assert_eq!(
            placed + refused,
            r.calls.len(),
            "row {}: dialled {placed} times and refused {refused}, {} attempts recorded",
            r.row,
            r.calls.len()
        );
        assert!(
            r.calls.len() <= 3,
            "row {}: more attempts than the policy allows",
            r.row
        );
        if listed.contains(&r.phone_number) {
            assert_eq!(
                (r.state.as_str(), r.reason.as_deref()),
                ("skipped", Some("dnc"))
            );
        }
        // Retries as the policy says: each attempt after one that was not
        // answered, never after an answered one.
        for (i, call) in r.calls.iter().enumerate() {
            let last = i + 1 == r.calls.len();
            assert!(
                last || call.outcome.as_deref() != Some("answered"),
                "row {}: retried after an answer",
                r.row
            );
        }
    }
    assert_eq!(by_state.get("skipped"), Some(&20), "{by_state:?}");
    assert_eq!(
        dialled.values().sum::<usize>(),
        t.seen.len(),
        "one call per attempt"
    );
    assert_eq!(
        t.twilio.created_calls().len(),
        t.seen.len(),
        "a call ref placed twice"
    );
    let org = shared::store::directory::DynamoDirectoryStore {
        client: t.stack.harness_dynamo.clone(),
        assistants_table: t.stack.resources.table("AssistantsTable"),
        organisations_table: t.stack.resources.table("OrganisationsTable"),
        stats_table: t.stack.resources.table("StatsTable"),
    }
    .get_organisation("acme")
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        org.usage_this_month_seconds, used,
        "usage is the sum of the calls' durations"
    );
    assert_eq!(org.reserved_seconds, 0);
    // The faults happened: Twilio's among them, and the dials killed.
    let twilio_counts = twilio_faults.counts();
    assert!(
        twilio_counts.dropped_before.load(Ordering::SeqCst) > 0
            && twilio_counts.dropped_after.load(Ordering::SeqCst) > 0
            && twilio_counts.server_errors.load(Ordering::SeqCst) > 0,
        "{}",
        twilio_counts.summary()
    );
    assert!(killed > 10, "{killed} dials killed");
    assert!(
        swept_released > 0,
        "no unconfirmed call released by the sweep"
    );
    eprintln!(
        "1000 recipients: {steps} steps, {} calls, at most {most_in_flight} in flight, {by_state:?}; \
         Twilio {}; DynamoDB and SQS {} and {} faults; {killed} of {crashes} dials killed; \
         {swept_released} unconfirmed calls released by the sweep",
        t.seen.len(),
        twilio_counts.summary(),
        t.stack.faults[0].counts().injected(),
        t.stack.faults[1].counts().injected(),
    );
}

#[tokio::test]
async fn a_dialler_killed_after_any_write_of_a_dial_never_places_a_second_call() {
    use crate::crash::{event_of, redeliver_until_settled, run_or_crash};
    let mut t = Engine::on(Stack::start_crashable().await, 5, 10_000_000).await;
    let numbers: Vec<String> = (0..30).map(|i| format!("+1212555{:04}", 100 + i)).collect();
    let refs: Vec<&str> = numbers.iter().map(String::as_str).collect();
    t.create(reminders(t.assistant, &refs, 1)).await;
    let dialer = t.dialer();

    // One claim's job, taken off the queue to be handed over by hand.
    async fn next_job(t: &Engine) -> String {
        let report = t.tick().await;
        assert_eq!(report.claimed, 1, "{report:?}");
        let job = t.stack.peek("CampaignDialQueue").await.remove(0);
        t.stack.discard_queued("CampaignDialQueue").await;
        job
    }

    // A clean dial, counting its writes.
    let clean = next_job(&t).await;
    t.stack.crash.count();
    assert!(dialer
        .handle(event_of(clean, 1))
        .await
        .batch_item_failures
        .is_empty());
    let writes = t.stack.crash.seen();
    assert!(writes >= 4, "{writes}");
    let (_, placed) = t.step().await;
    let mut ended = placed.len();
    for (call_ref, _) in placed {
        t.end(&call_ref, "completed", 10).await;
    }
    assert_eq!(t.twilio.created_calls().len(), 1);
    let mut released = 0;

    for k in 1..=writes {
        t.clock.advance(60);
        let job = next_job(&t).await;
        let before = t.twilio.created_calls().len();
        t.stack.crash.arm(k);
        let handler = Arc::clone(&dialer);
        let event = event_of(job.clone(), 1);
        let _ = run_or_crash(&t.stack, async move { handler.handle(event).await }).await;
        t.stack.crash.count();
        redeliver_until_settled(&dialer, &job, &format!("crash after write {k}")).await;
        // The tick's check of the claim sends it again, too: still one call.
        t.clock
            .advance(shared::flows::campaigns::engine::DIAL_CHECK_SECS + 1);
        t.tick().await;
        t.dial().await;
        let after = t.twilio.created_calls().len();
        assert!(
            after - before <= 1,
            "crash after write {k}: {} calls for one attempt",
            after - before
        );
        let (_, placed) = t.step().await;
        assert!(placed.len() <= 1);
        for (call_ref, _) in placed {
            ended += 1;
            t.end(&call_ref, "completed", 10).await;
        }
        // Killed after its reservation and before Twilio: the record exists
        // without a sid, so nothing dials it again; the sweep, on the
        // simulation's clock, finds no such call at Twilio and releases it.
        released += t.sweep().await;
    }
    // Every call placed went to a different recipient, once.
    let to: BTreeSet<String> = t
        .twilio
        .created_calls()
        .iter()
        .filter_map(|form| form.iter().find(|(k, _)| k == "To").map(|(_, v)| v.clone()))
        .collect();
    assert_eq!(
        to.len(),
        t.twilio.created_calls().len(),
        "a recipient dialled twice"
    );
    assert_eq!(ended, t.twilio.created_calls().len());
    assert!(
        released > 0,
        "no dial was killed between its record and Twilio"
    );
    assert_eq!(t.org_slots().await, 0, "every slot given back");
}
