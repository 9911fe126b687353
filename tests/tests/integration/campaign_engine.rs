//! The campaign engine (issue 23) on a simulated clock: the tick claims,
//! the dialler places each attempt at the fake Twilio (with asynchronous
//! AMD), Twilio's signed callbacks end the calls through `/twilio/status`
//! and the provider-events worker, and the calls stream settles each
//! attempt. Checked from the fake Twilio's own log: no dial outside a
//! recipient's window, none to a do-not-call number, none twice, never
//! more in flight than `max_concurrency`.

use std::collections::{BTreeMap, BTreeSet};
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
use shared::store::api_keys::{self, ApiKeyStore, DynamoApiKeyStore};
use shared::store::directory::{Assistant, DirectoryStore, Organisation, Provider};
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
        let stack = Stack::start().await;
        let now = shared::base::time::now_rfc3339();
        assert!(stack
            .directory()
            .create_organisation(&Organisation {
                org_id: "acme".into(),
                name: "Acme".into(),
                monthly_limit_seconds,
                topup_seconds: 0,
                max_concurrent_calls: cap,
                elevenlabs_agent_id: None,
                elevenlabs_phone_number_id: None,
                phone_numbers: vec![],
                created_at: now.clone(),
                updated_at: now.clone(),
                usage_this_month_seconds: 0,
                reserved_seconds: 0,
                remaining_seconds: 0,
            })
            .await
            .unwrap());
        let assistant = stack
            .directory()
            .create_assistant(Assistant {
                assistant_id: 0,
                org_id: "acme".into(),
                name: "Sarah".into(),
                provider: Provider::Twilio,
                caller_number: Some(CALLER_ID.into()),
                elevenlabs_agent_id: None,
                elevenlabs_phone_number_id: None,
                agent_stream_url: Some("wss://agent.example.com/media".into()),
                default_welcome_message: None,
                max_call_seconds: 600,
                is_active: true,
                created_at: now.clone(),
                updated_at: now,
            })
            .await
            .unwrap()
            .assistant_id;
        let (key, record) = api_keys::generate("crm", "acme");
        DynamoApiKeyStore::new(stack.dynamo.clone(), stack.resources.table("ApiKeysTable"))
            .insert(&record)
            .await
            .unwrap();
        let api = CampaignsApi {
            access: keyed_access(&stack),
            store: Arc::new(stack.campaigns()),
            directory: Arc::new(stack.directory()),
        };
        Self {
            twilio: FakeTwilio::start(ACCOUNT_SID, TWILIO_TOKEN),
            clock: Arc::new(ManualClock::at(next_monday_1400())),
            stack,
            api,
            key,
            assistant,
            seen: BTreeSet::new(),
            ended: BTreeSet::new(),
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
                    base_url: self.twilio.base_url().to_string(),
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
        let request = devstack::server::api_request(
            "POST",
            "/twilio/status",
            "/twilio/status",
            query,
            &headers,
            body.as_bytes(),
        );
        let status = twilio_status::TwilioStatus {
            twilio_auth: shared::providers::twilio::TwilioWebhookAuth::single(
                Secret::new(TWILIO_TOKEN),
                PUBLIC_BASE.into(),
            ),
            intake: self.stack.provider_event_intake(),
            calls: Arc::new(self.stack.outbound_calls()),
        };
        let response = status.handle(request).await;
        assert_eq!(response.status(), 200, "{:?}", json_body(&response));
    }

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
        assert!(report.failed.is_empty(), "{report:?}");
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

    async fn org_slots(&self) -> i64 {
        let out = self
            .stack
            .dynamo
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
            .and_then(|i| i.get("campaign_calls").cloned())
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
