//! Webhooks out, end to end: the organisation's API (`webhook-endpoints`),
//! the worker on both lanes, the sweep's retry ledger, and a customer's
//! receiver on 127.0.0.1 that checks every Standard Webhooks signature.
//!
//! Time is a simulated clock: SQS delays are held by [`SimDelayQueue`] until
//! the clock reaches them and the sweep runs whenever a ledger entry comes
//! within reach, so a day of retries runs in seconds and every attempt's
//! time is checked exactly.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use devstack::fakes::{FakeReceiver, ReceiverAnswer};
use devstack::poller::QueuePoller;
use serde_json::{json, Value};
use shared::base::time::{rfc3339, Clock, ManualClock};
use shared::flows::webhooks::admin::WebhookApi;
use shared::flows::webhooks::dispatch::{DeliverySettings, Dispatcher, Replayer};
use shared::flows::webhooks::sender::{HttpSender, UrlPolicy, WebhookSender};
use shared::flows::webhooks::sweep::RetryQueuer;
use shared::flows::webhooks::{WebhookEvent, WebhookJob};
use shared::queue::jobs::{self, JobQueue, QueueError};
use shared::queue::sqs_batch::Worker;
use shared::store::api_keys::{self, ApiKeyStore};
use shared::store::webhooks::{DeliveryState, DynamoWebhookStore, WebhookStore};

use crate::crash::{event_of, redeliver_until_settled, run_or_crash};
use crate::support::*;

/// The simulated clock's start.
const T0: i64 = 1_800_000_000;

/// SQS's `DelaySeconds` on the simulated clock: a delayed message waits
/// here until the clock reaches it, then goes to the real queue.
struct SimDelayQueue {
    inner: Arc<dyn JobQueue>,
    clock: Arc<ManualClock>,
    held: Mutex<Vec<(i64, String)>>,
}

#[async_trait]
impl JobQueue for SimDelayQueue {
    async fn send_raw(&self, body: String, delay: Duration) -> Result<(), QueueError> {
        if delay.is_zero() {
            return self.inner.send_raw(body, Duration::ZERO).await;
        }
        let due = self.clock.now() + delay.as_secs() as i64;
        self.held.lock().unwrap().push((due, body));
        Ok(())
    }
}

impl SimDelayQueue {
    /// Sends what is due; `true` if anything was.
    async fn release(&self) -> bool {
        let now = self.clock.now();
        let due: Vec<String> = {
            let mut held = self.held.lock().unwrap();
            let (due, later): (Vec<_>, Vec<_>) = held.drain(..).partition(|(at, _)| *at <= now);
            *held = later;
            due.into_iter().map(|(_, body)| body).collect()
        };
        for body in &due {
            self.inner
                .send_raw(body.clone(), Duration::ZERO)
                .await
                .unwrap();
        }
        !due.is_empty()
    }

    fn next_due(&self) -> Option<i64> {
        self.held.lock().unwrap().iter().map(|(at, _)| *at).min()
    }
}

struct Hooks {
    stack: Stack,
    clock: Arc<ManualClock>,
    store: Arc<dyn WebhookStore>,
    main: Arc<SimDelayQueue>,
    slow: Arc<SimDelayQueue>,
    worker: Arc<webhook_worker::WebhookWorker>,
    retries: RetryQueuer,
    key: String,
    recover_batch: usize,
}

impl Hooks {
    async fn start() -> Self {
        Self::on(Stack::start().await).await
    }

    async fn on(stack: Stack) -> Self {
        let clock = Arc::new(ManualClock::at(T0));
        let store: Arc<dyn WebhookStore> = Arc::new(DynamoWebhookStore::new(
            stack.dynamo.clone(),
            stack.resources.table("WebhooksTable"),
        ));
        let sim = |logical: &str| {
            Arc::new(SimDelayQueue {
                inner: stack.queue(logical),
                clock: Arc::clone(&clock),
                held: Mutex::default(),
            })
        };
        let (main, slow) = (sim("WebhookQueue"), sim("WebhookSlowQueue"));
        let worker = Arc::new(webhook_worker::WebhookWorker {
            dispatcher: Dispatcher {
                store: Arc::clone(&store),
                sender: Arc::new(HttpSender::new(UrlPolicy { loopback: true }).unwrap()),
                main_queue: main.clone(),
                slow_queue: slow.clone(),
                notification_queue: Some(stack.queue("NotificationQueue")),
                clock: clock.clone(),
                settings: DeliverySettings::default(),
            },
        });
        let retries = RetryQueuer {
            store: Arc::clone(&store),
            slow_queue: slow.clone(),
            lost_after: 300,
        };
        let hooks = Self {
            stack,
            clock,
            store,
            main,
            slow,
            worker,
            retries,
            key: String::new(),
            recover_batch: shared::flows::webhooks::admin::MAX_RECOVER,
        };
        let key = hooks.key_of("acme").await;
        Self { key, ..hooks }
    }

    async fn key_of(&self, org: &str) -> String {
        let (key, record) = api_keys::generate("crm", org);
        self.stack.key_store().insert(&record).await.unwrap();
        key
    }

    fn api(&self, policy: UrlPolicy) -> WebhookApi {
        WebhookApi {
            access: self.stack.keyed_access(),
            store: Arc::clone(&self.store),
            replayer: Replayer {
                store: Arc::clone(&self.store),
                main_queue: self.main.clone(),
                slow_queue: self.slow.clone(),
                clock: self.clock.clone(),
            },
            main_queue: self.main.clone(),
            policy,
            clock: self.clock.clone(),
            recover_batch: self.recover_batch,
        }
    }

    /// One API call with `key`: (status, body).
    async fn call_as(
        &self,
        key: &str,
        method: &str,
        route: &str,
        path: &str,
        query: &str,
        body: &str,
    ) -> (u16, Value) {
        self.call_with(
            UrlPolicy { loopback: true },
            key,
            method,
            route,
            path,
            query,
            body,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn call_with(
        &self,
        policy: UrlPolicy,
        key: &str,
        method: &str,
        route: &str,
        path: &str,
        query: &str,
        body: &str,
    ) -> (u16, Value) {
        let headers = vec![
            ("x-api-key".to_string(), key.to_string()),
            ("content-type".to_string(), "application/json".to_string()),
        ];
        let response = self
            .api(policy)
            .handle(devstack::server::api_request(
                method,
                route,
                path,
                query,
                &headers,
                body.as_bytes(),
            ))
            .await;
        (response.status().as_u16(), json_body(&response))
    }

    async fn call(
        &self,
        method: &str,
        route: &str,
        path: &str,
        query: &str,
        body: &str,
    ) -> (u16, Value) {
        self.call_as(&self.key, method, route, path, query, body)
            .await
    }

    /// A new endpoint of acme at `url`: its id and secret.
    async fn endpoint(&self, url: &str, types: Option<&[&str]>) -> (String, String) {
        let mut body = json!({"url": url, "description": "CRM"});
        if let Some(types) = types {
            body["event_types"] = json!(types);
        }
        let (status, created) = self
            .call(
                "POST",
                "/webhook-endpoints",
                "/webhook-endpoints",
                "",
                &body.to_string(),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        (
            created["endpoint_id"].as_str().unwrap().to_string(),
            created["secret"].as_str().unwrap().to_string(),
        )
    }

    /// An event of acme, published as a producer does; its id.
    async fn publish(&self, event_type: &str, source: &str) -> String {
        let event = WebhookEvent::new(
            "acme",
            event_type,
            source,
            rfc3339(chrono::DateTime::from_timestamp(self.clock.now(), 0).unwrap()),
            json!({"call_id": source}),
        );
        let id = event.id.clone();
        shared::flows::webhooks::publish(self.main.as_ref(), event)
            .await
            .unwrap();
        id
    }

    fn poller(&self, logical: &str) -> QueuePoller {
        QueuePoller {
            sqs: self.stack.harness_sqs.clone(),
            queue_url: self.stack.resources.queue(logical),
            batch_size: 10,
            wait: Duration::ZERO,
            retry_after: Duration::ZERO,
        }
    }

    /// Runs one queue until it is empty.
    async fn drain(&self, logical: &str) {
        let poller = self.poller(logical);
        for _ in 0..500 {
            let worker = Arc::clone(&self.worker);
            let report = poller
                .poll_once(|event| async move { worker.handle(event).await })
                .await
                .unwrap();
            if report.received == 0 && self.stack.depth(logical).await == 0 {
                return;
            }
        }
        panic!("{logical} did not drain");
    }

    /// Everything due at the clock's time: held messages, the sweep's
    /// retries, both lanes, until nothing moves.
    async fn settle(&self) {
        for _ in 0..50 {
            let released = self.main.release().await | self.slow.release().await;
            let swept = self.retries.run(self.clock.now(), 500).await.unwrap();
            self.drain("WebhookQueue").await;
            self.drain("WebhookSlowQueue").await;
            if !released
                && swept.queued + swept.requeued == 0
                && self.main.next_due().is_none_or(|at| at > self.clock.now())
                && self.slow.next_due().is_none_or(|at| at > self.clock.now())
            {
                return;
            }
        }
        panic!("webhook work never settled");
    }

    /// The next time anything is due: a held message, or a ledger entry
    /// coming within SQS's reach (when the sweep queues it).
    async fn next_due(&self) -> Option<i64> {
        let ledger = self
            .store
            .due_retries(999_999_999_999, 1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|entry| !entry.queued)
            .map(|entry| entry.due - 900)
            .min();
        [self.main.next_due(), self.slow.next_due(), ledger]
            .into_iter()
            .flatten()
            .min()
    }

    /// Moves the clock to `until`, doing all that falls due on the way at
    /// its own time.
    async fn advance_to(&self, until: i64) {
        self.settle().await;
        while let Some(next) = self.next_due().await {
            if next > until {
                break;
            }
            self.clock.set(next.max(self.clock.now()));
            self.settle().await;
        }
        self.clock.set(until);
        self.settle().await;
    }

    async fn attempts(&self, endpoint: &str, query: &str) -> Vec<Value> {
        let path = format!("/webhook-endpoints/{endpoint}/attempts");
        let (status, page) = self
            .call(
                "GET",
                "/webhook-endpoints/{endpoint_id}/attempts",
                &path,
                query,
                "",
            )
            .await;
        assert_eq!(status, 200, "{page}");
        page["attempts"].as_array().unwrap().clone()
    }

    async fn get_endpoint(&self, endpoint: &str) -> Value {
        let path = format!("/webhook-endpoints/{endpoint}");
        let (status, body) = self
            .call("GET", "/webhook-endpoints/{endpoint_id}", &path, "", "")
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

fn at(epoch: i64) -> String {
    rfc3339(chrono::DateTime::from_timestamp(epoch, 0).unwrap())
}

#[tokio::test]
async fn a_failing_receiver_is_retried_on_the_schedule_with_one_id_until_it_succeeds() {
    let hooks = Hooks::start().await;
    let receiver = FakeReceiver::start();
    let (endpoint, secret) = hooks.endpoint(&receiver.url(), None).await;
    receiver.set_secrets(&[&secret]);
    receiver.push(ReceiverAnswer::Fail(500), 5);

    let id = hooks.publish("call.ended", "CA-retry").await;
    hooks.settle().await;
    assert_eq!(receiver.deliveries().len(), 1);
    // Immediately, then 5 s, 5 min, 30 min, 2 h and 5 h after each failure.
    let mut expected = vec![T0];
    for wait in [5, 300, 1_800, 7_200, 18_000] {
        let due = expected.last().unwrap() + wait;
        hooks.advance_to(due - 1).await;
        assert_eq!(
            receiver.deliveries().len(),
            expected.len(),
            "nothing before {due}"
        );
        hooks.advance_to(due).await;
        expected.push(due);
        assert_eq!(receiver.deliveries().len(), expected.len(), "one at {due}");
    }
    // The sixth succeeded: nothing more, ever.
    hooks.advance_to(T0 + 3 * 86_400).await;
    let deliveries = receiver.deliveries();
    assert_eq!(deliveries.len(), 6);
    let times: Vec<i64> = deliveries.iter().map(|d| d.timestamp).collect();
    assert_eq!(times, expected);
    assert!(deliveries.iter().all(|d| d.id == id && d.verified));
    assert!(deliveries
        .iter()
        .all(|d| d.json()["type"] == "call.ended" && d.json()["id"] == id.as_str()));
    let delivery = hooks.store.delivery(&id, &endpoint).await.unwrap().unwrap();
    assert_eq!(delivery.state, DeliveryState::Succeeded);

    // Every attempt is readable, newest first, filtered by status.
    let all = hooks.attempts(&endpoint, "").await;
    assert_eq!(all.len(), 6);
    assert_eq!(all[0]["status"], "succeeded");
    assert_eq!(all[0]["response_status_code"], 200);
    let failed = hooks.attempts(&endpoint, "status=failed").await;
    assert_eq!(failed.len(), 5);
    assert!(failed.iter().all(|a| a["response_status_code"] == 500
        && a["response"] == "receiver failed with 500"
        && a["message_id"] == id.as_str()));
    assert_eq!(hooks.attempts(&endpoint, "status=succeeded").await.len(), 1);
    let page = hooks.attempts(&endpoint, "limit=4").await;
    assert_eq!(page.len(), 4);
    let path = format!("/webhook-messages/{id}");
    let (status, message) = hooks
        .call("GET", "/webhook-messages/{message_id}", &path, "", "")
        .await;
    assert_eq!(status, 200, "{message}");
    assert_eq!(message["type"], "call.ended");
    assert_eq!(message["payload"]["data"]["call_id"], "CA-retry");
    let attempts = message["attempts"].as_array().unwrap();
    let numbers: Vec<u64> = attempts
        .iter()
        .map(|a| a["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [0, 1, 2, 3, 4, 5]);
    let (_, failed_only) = hooks
        .call(
            "GET",
            "/webhook-messages/{message_id}",
            &path,
            "status=failed",
            "",
        )
        .await;
    assert_eq!(failed_only["attempts"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn a_delivery_failing_every_attempt_ends_failed_then_is_recovered_and_replayed() {
    let hooks = Hooks::start().await;
    let receiver = FakeReceiver::start();
    let (endpoint, secret) = hooks.endpoint(&receiver.url(), None).await;
    receiver.set_secrets(&[&secret]);
    receiver.set_always(ReceiverAnswer::Fail(503));

    let id = hooks.publish("call.started", "CA-exhaust").await;
    hooks.advance_to(T0 + 2 * 86_400).await;
    // Eight attempts in about 28 hours, then the delivery is failed.
    let deliveries = receiver.of(&id);
    assert_eq!(deliveries.len(), 8);
    assert_eq!(deliveries.last().unwrap().timestamp - T0, 99_305);
    let delivery = hooks.store.delivery(&id, &endpoint).await.unwrap().unwrap();
    assert_eq!(delivery.state, DeliveryState::Failed);
    assert_eq!(delivery.last_status, Some(503));
    assert!(hooks
        .store
        .due_retries(999_999_999_999, 100)
        .await
        .unwrap()
        .is_empty());

    // The receiver is fixed: recover everything that failed since T0.
    receiver.set_always(ReceiverAnswer::Accept);
    let path = format!("/webhook-endpoints/{endpoint}/recover");
    let (status, recovered) = hooks
        .call(
            "POST",
            "/webhook-endpoints/{endpoint_id}/recover",
            &path,
            "",
            &json!({"since": at(T0)}).to_string(),
        )
        .await;
    assert_eq!(status, 202, "{recovered}");
    assert_eq!(recovered["recovered"], 1);
    assert_eq!(recovered["message_ids"], json!([id]));
    hooks.settle().await;
    assert_eq!(receiver.of(&id).len(), 9);
    let delivery = hooks.store.delivery(&id, &endpoint).await.unwrap().unwrap();
    assert_eq!(delivery.state, DeliveryState::Succeeded);
    let latest = &hooks.attempts(&endpoint, "").await[0];
    assert_eq!(latest["trigger"], "recover");
    assert_eq!(latest["status"], "succeeded");
    // Recovering again finds nothing failed.
    let (_, again) = hooks
        .call(
            "POST",
            "/webhook-endpoints/{endpoint_id}/recover",
            &path,
            "",
            &json!({"since": at(T0)}).to_string(),
        )
        .await;
    assert_eq!(again["recovered"], 0);

    // Replay one message: the same id once more.
    let replay = format!("/webhook-endpoints/{endpoint}/messages/{id}/replay");
    let route = "/webhook-endpoints/{endpoint_id}/messages/{message_id}/replay";
    let (status, queued) = hooks.call("POST", route, &replay, "", "").await;
    assert_eq!(status, 202, "{queued}");
    hooks.settle().await;
    let all = receiver.of(&id);
    assert_eq!(all.len(), 10);
    assert!(all.iter().all(|d| d.verified));
    assert_eq!(hooks.attempts(&endpoint, "").await[0]["trigger"], "replay");
    // Unknown and foreign messages are not found.
    let missing =
        format!("/webhook-endpoints/{endpoint}/messages/msg_000000000000000000000000/replay");
    assert_eq!(hooks.call("POST", route, &missing, "", "").await.0, 404);
    let globex = hooks.key_of("globex").await;
    let (status, _) = hooks
        .call_as(
            &globex,
            "GET",
            "/webhook-messages/{message_id}",
            &format!("/webhook-messages/{id}"),
            "",
            "",
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_rotated_secret_keeps_signing_beside_the_new_one_for_a_day() {
    let hooks = Hooks::start().await;
    let receiver = FakeReceiver::start();
    let (endpoint, old) = hooks.endpoint(&receiver.url(), None).await;
    let path = format!("/webhook-endpoints/{endpoint}/rotate-secret");
    let (status, rotated) = hooks
        .call(
            "POST",
            "/webhook-endpoints/{endpoint_id}/rotate-secret",
            &path,
            "",
            "",
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_string();
    assert!(new.starts_with("whsec_") && new != old);
    assert_eq!(
        hooks.get_endpoint(&endpoint).await["previous_secret_until"],
        at(T0 + 86_400)
    );
    assert!(hooks.get_endpoint(&endpoint).await.get("secret").is_none());

    // During the overlap both sign: a receiver with either secret verifies.
    receiver.set_secrets(&[&old]);
    let first = hooks.publish("call.ended", "CA-rot-1").await;
    hooks.settle().await;
    receiver.set_secrets(&[&new]);
    let second = hooks.publish("call.ended", "CA-rot-2").await;
    hooks.settle().await;
    for id in [&first, &second] {
        let delivery = &receiver.of(id)[0];
        assert!(delivery.verified, "{id}");
        assert_eq!(delivery.signature.split(' ').count(), 2);
    }

    // After a day only the new secret signs.
    hooks.advance_to(T0 + 86_400).await;
    receiver.set_secrets(&[&old]);
    let late = hooks.publish("call.ended", "CA-rot-3").await;
    hooks.settle().await;
    let delivery = &receiver.of(&late)[0];
    assert_eq!(delivery.signature.split(' ').count(), 1);
    assert!(!delivery.verified, "the old secret no longer signs");
    assert!(shared::flows::webhooks::signing::verify(
        &new,
        &delivery.id,
        delivery.timestamp,
        delivery.body.as_bytes(),
        &delivery.signature
    ));
    assert!(hooks
        .get_endpoint(&endpoint)
        .await
        .get("previous_secret_until")
        .is_none());
}

#[tokio::test]
async fn private_metadata_and_plain_http_urls_are_refused_and_redirects_never_followed() {
    let hooks = Hooks::start().await;
    let lambda = UrlPolicy { loopback: false };
    for url in [
        "http://hooks.example.com/callops",
        "https://10.1.2.3/hooks",
        "https://192.168.0.10/hooks",
        "https://169.254.169.254/latest/meta-data/",
        "https://100.64.0.7/hooks",
        "https://127.0.0.1:8443/hooks",
        "https://[::1]/hooks",
        "https://localhost/hooks",
        "https://user:secret@hooks.example.com/",
    ] {
        let (status, body) = hooks
            .call_with(
                lambda,
                &hooks.key,
                "POST",
                "/webhook-endpoints",
                "/webhook-endpoints",
                "",
                &json!({"url": url}).to_string(),
            )
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (422, Some("invalid_url")),
            "{url}: {body}"
        );
    }
    let (_, list) = hooks
        .call("GET", "/webhook-endpoints", "/webhook-endpoints", "", "")
        .await;
    assert_eq!(list["endpoints"], json!([]), "nothing was created");

    // A Lambda sender refuses them at send time too, before any connection.
    let receiver = FakeReceiver::start();
    let sender = HttpSender::new(lambda).unwrap();
    let port = receiver.base_url().rsplit(':').next().unwrap().to_string();
    for url in [
        format!("https://127.0.0.1:{port}/hooks"),
        format!("http://127.0.0.1:{port}/hooks"),
        "https://169.254.169.254/latest/meta-data/".to_string(),
    ] {
        let answer = sender.post(&url, &[], "{}").await;
        assert_eq!(answer.status, None, "{url}");
        assert!(answer.error.unwrap().starts_with("refused"), "{url}");
    }
    assert!(receiver.requests().is_empty());

    // A redirect is an answer, not a hop: the target never hears of it.
    let target = FakeReceiver::start();
    let redirecting = FakeReceiver::start();
    redirecting.set_always(ReceiverAnswer::Redirect(target.url()));
    let (endpoint, _) = hooks.endpoint(&redirecting.url(), None).await;
    hooks.publish("call.ended", "CA-redirect").await;
    hooks.settle().await;
    assert_eq!(redirecting.deliveries().len(), 1);
    assert!(target.requests().is_empty());
    let attempt = &hooks.attempts(&endpoint, "").await[0];
    assert_eq!(attempt["status"], "failed");
    assert_eq!(attempt["response_status_code"], 302);
    assert!(attempt["error"]
        .as_str()
        .unwrap()
        .contains("redirects are not followed"));
}

/// The notice the organisation is sent, if one is queued.
async fn notices(stack: &Stack) -> Vec<Value> {
    stack
        .peek("NotificationQueue")
        .await
        .iter()
        .map(|body| serde_json::from_str::<Value>(body).unwrap())
        .filter(|job| job["kind"] == "notice")
        .collect()
}

#[tokio::test]
async fn an_endpoint_answering_410_is_disabled_at_once_and_its_organisation_told() {
    let hooks = Hooks::start().await;
    let gone = FakeReceiver::start();
    gone.set_always(ReceiverAnswer::Gone);
    let (endpoint, _) = hooks.endpoint(&gone.url(), None).await;
    let other = FakeReceiver::start();
    hooks.endpoint(&other.url(), None).await;

    hooks.publish("call.ended", "CA-gone-1").await;
    hooks.advance_to(T0 + 86_400).await;
    assert_eq!(gone.deliveries().len(), 1, "no retry after 410");
    let shown = hooks.get_endpoint(&endpoint).await;
    assert_eq!(shown["enabled"], false);
    assert!(shown["disabled_reason"]
        .as_str()
        .unwrap()
        .starts_with("gone"));
    let notices = notices(&hooks.stack).await;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0]["org_id"], "acme");
    assert!(notices[0]["notice"]["text"]
        .as_str()
        .unwrap()
        .contains(&endpoint));
    // The organisation's other endpoint hears of it as an event.
    let types: Vec<String> = other
        .deliveries()
        .iter()
        .map(|d| d.json()["type"].as_str().unwrap().to_string())
        .collect();
    assert!(
        types.contains(&"webhook.endpoint.disabled".to_string()),
        "{types:?}"
    );

    hooks.publish("call.ended", "CA-gone-2").await;
    hooks.settle().await;
    assert_eq!(
        gone.deliveries().len(),
        1,
        "a disabled endpoint gets nothing"
    );

    // Enabled again, it receives new events.
    gone.set_always(ReceiverAnswer::Accept);
    let path = format!("/webhook-endpoints/{endpoint}");
    let (status, enabled) = hooks
        .call(
            "PATCH",
            "/webhook-endpoints/{endpoint_id}",
            &path,
            "",
            r#"{"enabled": true}"#,
        )
        .await;
    assert_eq!(status, 200, "{enabled}");
    assert_eq!(enabled["enabled"], true);
    assert!(enabled.get("disabled_reason").is_none());
    hooks.publish("call.ended", "CA-gone-3").await;
    hooks.settle().await;
    assert_eq!(gone.deliveries().len(), 2);
}

#[tokio::test]
async fn an_endpoint_failing_every_attempt_for_five_days_is_disabled_once() {
    let hooks = Hooks::start().await;
    let failing = FakeReceiver::start();
    failing.set_always(ReceiverAnswer::Fail(500));
    let (endpoint, _) = hooks.endpoint(&failing.url(), None).await;

    // An event every day; every attempt fails.
    for day in 0..5 {
        hooks.advance_to(T0 + day * 86_400).await;
        hooks.publish("call.ended", &format!("CA-day-{day}")).await;
        hooks.settle().await;
    }
    hooks.advance_to(T0 + 5 * 86_400 - 1).await;
    assert_eq!(hooks.get_endpoint(&endpoint).await["enabled"], true);
    assert_eq!(hooks.get_endpoint(&endpoint).await["failing_since"], at(T0));
    // The first failure at or after five days disables it.
    hooks.advance_to(T0 + 5 * 86_400).await;
    hooks.publish("call.ended", "CA-day-5").await;
    hooks.settle().await;
    let shown = hooks.get_endpoint(&endpoint).await;
    assert_eq!(shown["enabled"], false, "{shown}");
    assert!(shown["disabled_reason"]
        .as_str()
        .unwrap()
        .starts_with("failing"));
    assert_eq!(notices(&hooks.stack).await.len(), 1);
    let sent = failing.deliveries().len();
    // Nothing more is sent: waiting retries end without a request.
    hooks.publish("call.ended", "CA-day-5b").await;
    hooks.advance_to(T0 + 8 * 86_400).await;
    assert_eq!(failing.deliveries().len(), sent);
    assert!(hooks
        .store
        .due_retries(999_999_999_999, 100)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(notices(&hooks.stack).await.len(), 1, "told once");
}

#[tokio::test]
async fn a_hanging_endpoint_delays_no_other_endpoints_first_attempts() {
    let hooks = Hooks::start().await;
    let hanging = FakeReceiver::start();
    hanging.set_always(ReceiverAnswer::Hang(Duration::from_secs(15)));
    let fast = FakeReceiver::start();
    let (hanging_id, _) = hooks.endpoint(&hanging.url(), None).await;
    let (_, secret) = hooks.endpoint(&fast.url(), None).await;
    fast.set_secrets(&[&secret]);

    // The main lane, four invocations at a time as Lambda would run them;
    // the slow lane is not run at all, so nothing the fast endpoint gets
    // can depend on the hanging one's attempts finishing.
    let done = Arc::new(AtomicBool::new(false));
    let lanes: Vec<_> = (0..4)
        .map(|_| {
            let poller = hooks.poller("WebhookQueue");
            let worker = Arc::clone(&hooks.worker);
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                while !done.load(Ordering::SeqCst) {
                    let worker = Arc::clone(&worker);
                    poller
                        .poll_once(|event| async move { worker.handle(event).await })
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    // Events arrive while the lanes run, as producers would send them.
    let mut ids = HashSet::new();
    for n in 0..1000 {
        ids.insert(hooks.publish("call.ended", &format!("CA-iso-{n}")).await);
    }
    for _ in 0..6_000 {
        if fast.deliveries().len() >= 1000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done.store(true, Ordering::SeqCst);
    for lane in lanes {
        lane.await.unwrap();
    }
    let delivered = fast.deliveries();
    assert_eq!(
        delivered.len(),
        1000,
        "every event reached the fast endpoint"
    );
    let got: HashSet<String> = delivered.iter().map(|d| d.id.clone()).collect();
    assert_eq!(got, ids, "each once");
    assert!(delivered.iter().all(|d| d.verified));
    // The hanging endpoint held at most the attempts in flight when it
    // first kept the lane waiting (4 invocations of 10); each was given up
    // on the main lane and moved, and everything else went straight to the
    // slow lane.
    let hung = hanging.deliveries().len();
    let moved = hooks
        .attempts(&hanging_id, "status=unknown&limit=200")
        .await;
    assert!(
        hung <= moved.len() && moved.len() <= 40,
        "{hung} requests, {} attempts given up on the main lane",
        moved.len()
    );
    assert!(moved
        .iter()
        .all(|a| a["error"].as_str().unwrap().contains("slow lane")));
    // What is left on the main lane is the hanging endpoint's, now
    // forwarded at once; then every one of its events waits on the slow lane
    // (a redelivered event may have queued a second copy of a first
    // attempt: its claim lets one through).
    hooks.drain("WebhookQueue").await;
    assert_eq!(fast.deliveries().len(), 1000, "nothing sent twice");
    let waiting = hooks.stack.depth("WebhookSlowQueue").await;
    assert!(waiting >= 1000, "{waiting} jobs on the slow lane");
}

#[tokio::test]
async fn workers_killed_after_any_write_deliver_each_event_once() {
    let hooks = Hooks::on(Stack::start_crashable().await).await;
    let receiver = FakeReceiver::start();
    hooks.endpoint(&receiver.url(), None).await;

    // A clean run of each job, counting its requests.
    hooks.publish("call.ended", "CA-clean").await;
    let event_job = hooks.stack.peek("WebhookQueue").await.remove(0);
    hooks.stack.discard_queued("WebhookQueue").await;
    hooks.stack.crash.count();
    let _ = hooks.worker.handle(event_of(event_job, 1)).await;
    let event_writes = hooks.stack.crash.seen();
    let attempt_job = hooks.stack.peek("WebhookQueue").await.remove(0);
    hooks.stack.discard_queued("WebhookQueue").await;
    hooks.stack.crash.count();
    let _ = hooks.worker.handle(event_of(attempt_job, 1)).await;
    let attempt_writes = hooks.stack.crash.seen();
    assert!(event_writes >= 3 && attempt_writes >= 2);
    println!("crash: a webhook event makes {event_writes} requests, an attempt {attempt_writes}");

    for (job, writes) in [("event", event_writes), ("attempt", attempt_writes)] {
        for k in 1..=writes {
            let id = hooks.publish("call.ended", &format!("CA-{job}-{k}")).await;
            let mut message = hooks.stack.peek("WebhookQueue").await.remove(0);
            hooks.stack.discard_queued("WebhookQueue").await;
            if job == "attempt" {
                let _ = hooks.worker.handle(event_of(message, 1)).await;
                message = hooks.stack.peek("WebhookQueue").await.remove(0);
                hooks.stack.discard_queued("WebhookQueue").await;
            }
            hooks.stack.crash.arm(k);
            let worker = Arc::clone(&hooks.worker);
            let killed = event_of(message.clone(), 1);
            let _ = run_or_crash(&hooks.stack, async move { worker.handle(killed).await }).await;
            hooks.stack.crash.count();
            // SQS hands the message over again once its visibility (longer
            // than the claim's lease) runs out.
            hooks.clock.advance(61);
            redeliver_until_settled(&hooks.worker, &message, &format!("{job} {k}")).await;
            hooks.settle().await;
            let got = receiver.of(&id);
            assert_eq!(got.len(), 1, "{job} killed after request {k}: {got:?}");
        }
    }
}

#[tokio::test]
async fn endpoints_are_the_organisations_own_and_bad_input_changes_nothing() {
    let hooks = Hooks::start().await;
    let receiver = FakeReceiver::start();
    let (endpoint, _) = hooks.endpoint(&receiver.url(), Some(&["call.ended"])).await;
    let globex = hooks.key_of("globex").await;
    let path = format!("/webhook-endpoints/{endpoint}");
    let route = "/webhook-endpoints/{endpoint_id}";
    for (method, body) in [
        ("GET", ""),
        ("PATCH", r#"{"enabled": false}"#),
        ("DELETE", ""),
    ] {
        let (status, _) = hooks.call_as(&globex, method, route, &path, "", body).await;
        assert_eq!(status, 404, "{method}");
    }
    for (method, suffix) in [
        ("GET", "attempts"),
        ("POST", "rotate-secret"),
        ("POST", "test"),
    ] {
        let full = format!("{path}/{suffix}");
        let route = format!("{route}/{suffix}");
        let (status, _) = hooks.call_as(&globex, method, &route, &full, "", "").await;
        assert_eq!(status, 404, "{suffix}");
    }
    let (_, theirs) = hooks
        .call_as(
            &globex,
            "GET",
            "/webhook-endpoints",
            "/webhook-endpoints",
            "",
            "",
        )
        .await;
    assert_eq!(theirs["endpoints"], json!([]));
    assert_eq!(hooks.get_endpoint(&endpoint).await["enabled"], true);
    // No key, no access.
    let (status, _) = hooks
        .call_as(
            "cok_nope",
            "GET",
            "/webhook-endpoints",
            "/webhook-endpoints",
            "",
            "",
        )
        .await;
    assert_eq!(status, 401);

    // Only subscribed types are sent.
    hooks.publish("call.started", "CA-types").await;
    let wanted = hooks.publish("call.ended", "CA-types").await;
    hooks.settle().await;
    let got: Vec<String> = receiver.deliveries().iter().map(|d| d.id.clone()).collect();
    assert_eq!(got, [wanted]);

    // Bad input: a clear 4xx and nothing created.
    let hooks_ref = &hooks;
    let create = |body: String| async move {
        hooks_ref
            .call(
                "POST",
                "/webhook-endpoints",
                "/webhook-endpoints",
                "",
                &body,
            )
            .await
    };
    for (body, status, code) in [
        ("{not json".to_string(), 400, "invalid_json"),
        (
            r#"{"description": "no url"}"#.to_string(),
            400,
            "invalid_json",
        ),
        (
            r#"{"url": "https://e.com", "colour": "red"}"#.to_string(),
            400,
            "invalid_json",
        ),
        (r#"{"url": "not a url"}"#.to_string(), 422, "invalid_url"),
        (
            r#"{"url": "https://e.com", "event_types": ["call.exploded"]}"#.to_string(),
            422,
            "invalid_event_types",
        ),
        (
            json!({"url": "https://e.com", "description": "d".repeat(300)}).to_string(),
            422,
            "invalid_description",
        ),
        (
            json!({"url": "https://e.com", "description": "d".repeat(20_000)}).to_string(),
            413,
            "payload_too_large",
        ),
    ] {
        let (got, answer) = create(body.clone()).await;
        assert_eq!(got, status, "{body:.60}: {answer}");
        if status != 413 {
            assert_eq!(answer["code"], code, "{answer}");
        }
    }
    let attempts = format!("{path}/attempts");
    let attempts_route = "/webhook-endpoints/{endpoint_id}/attempts";
    for query in ["status=maybe", "since=yesterday", "limit=0", "cursor=zzz"] {
        let (status, _) = hooks
            .call("GET", attempts_route, &attempts, query, "")
            .await;
        assert_eq!(status, 400, "{query}");
    }
    let (status, _) = hooks
        .call("GET", route, "/webhook-endpoints/ep_x..y", "", "")
        .await;
    assert_eq!(status, 404);
    let (_, list) = hooks
        .call("GET", "/webhook-endpoints", "/webhook-endpoints", "", "")
        .await;
    assert_eq!(list["endpoints"].as_array().unwrap().len(), 1);

    // At most 20 per organisation, counted in the same write as the endpoint.
    let mut creates = Vec::new();
    for n in 0..25 {
        creates.push(
            create(json!({"url": format!("https://hooks{n}.example.com/")}).to_string()).await,
        );
    }
    let created = creates.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(created, 19, "20 in all with the first");
    assert!(creates
        .iter()
        .filter(|(s, _)| *s != 201)
        .all(|(s, b)| *s == 409 && b["code"] == "webhook_endpoint_limit"));
    let (status, _) = hooks.call("DELETE", route, &path, "", "").await;
    assert_eq!(status, 200);
    assert_eq!(hooks.call("GET", route, &path, "", "").await.0, 404);
    let (status, _) = create(json!({"url": "https://again.example.com/"}).to_string()).await;
    assert_eq!(status, 201, "a deleted endpoint frees its place");
}

#[tokio::test]
async fn the_test_event_and_the_flows_events_reach_the_endpoint() {
    let hooks = Hooks::start().await;
    let receiver = FakeReceiver::start();
    let (endpoint, secret) = hooks.endpoint(&receiver.url(), None).await;
    receiver.set_secrets(&[&secret]);
    let path = format!("/webhook-endpoints/{endpoint}/test");
    let (status, queued) = hooks
        .call(
            "POST",
            "/webhook-endpoints/{endpoint_id}/test",
            &path,
            "",
            "",
        )
        .await;
    assert_eq!(status, 202, "{queued}");
    hooks.settle().await;
    let test = &receiver.of(queued["message_id"].as_str().unwrap())[0];
    assert_eq!(test.json()["type"], "webhook.test");
    assert!(test.verified);

    // A call start the notify worker handles is published as call.started.
    let notifier = hooks.stack.notify_worker(vec![hooks.stack.slack_webhook()]);
    let job = shared::queue::jobs::NotificationJob::call_started(
        "start-evt-1",
        shared::queue::jobs::CallStart {
            room_name: "room-webhooks".into(),
            user_email: Some("ada@example.com".into()),
            started_at: at(T0),
            metadata: serde_json::Map::new(),
        },
    )
    .of_org(Some("acme"));
    jobs::send(
        hooks.stack.queue("NotificationQueue").as_ref(),
        &job,
        Duration::ZERO,
    )
    .await
    .unwrap();
    hooks.stack.run_notifications(&notifier).await;
    hooks.settle().await;
    let started: Vec<Value> = receiver
        .deliveries()
        .iter()
        .map(|d| d.json())
        .filter(|body| body["type"] == "call.started")
        .collect();
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0]["data"]["room"], "room-webhooks");
    assert_eq!(started[0]["data"]["user_email"], "ada@example.com");
    assert!(receiver.deliveries().iter().all(|d| d.verified));
}

#[tokio::test]
async fn an_event_published_twice_is_one_event() {
    let hooks = Hooks::start().await;
    let receiver = FakeReceiver::start();
    hooks.endpoint(&receiver.url(), None).await;
    let job = |timestamp: &str| WebhookJob::Event {
        event: WebhookEvent::new(
            "acme",
            "usage.threshold",
            "2027-01#80",
            timestamp,
            json!({}),
        ),
        only: None,
    };
    for timestamp in ["2027-01-03T00:00:00Z", "2027-01-09T00:00:00Z"] {
        jobs::send(hooks.main.as_ref(), &job(timestamp), Duration::ZERO)
            .await
            .unwrap();
    }
    hooks.settle().await;
    // Whichever copy was stored first is the one every endpoint gets.
    assert_eq!(receiver.deliveries().len(), 1);
    let sent = receiver.deliveries()[0].json()["timestamp"].clone();
    assert!(sent == "2027-01-03T00:00:00Z" || sent == "2027-01-09T00:00:00Z");
}

#[tokio::test]
async fn a_sessions_end_is_published_by_the_sweep_once() {
    use shared::store::sessions::{Ending, NewSession, SessionStore};
    let hooks = Hooks::start().await;
    let receiver = FakeReceiver::start();
    let (_, secret) = hooks
        .endpoint(&receiver.url(), Some(&["session.ended"]))
        .await;
    receiver.set_secrets(&[&secret]);
    let sessions = Arc::new(hooks.stack.sessions());
    sessions
        .open(&NewSession {
            session_id: "web-retro".into(),
            session_type: "web".into(),
            room: "retro".into(),
            org_id: "acme".into(),
            started_at: at(T0),
            agent_active: true,
            dispatch_id: None,
            call_sid: None,
            direction: None,
            from_number: None,
            to_number: None,
            host_identity: Some("host-1".into()),
            reopen: false,
            conversation: "c1".into(),
            room_sid: None,
        })
        .await
        .unwrap();
    let ending = Ending {
        ended_at: at(T0 + 95),
        duration_secs: Some(95),
        ..Ending::default()
    };
    assert!(sessions.end("retro", &ending).await.unwrap().is_some());
    let announcer = shared::flows::webhooks::sweep::EndedSessions {
        sessions: sessions.clone(),
        webhook_queue: hooks.main.clone(),
    };
    assert_eq!(announcer.run(100).await.unwrap(), 1);
    // Announced once: the next sweep finds nothing.
    assert_eq!(announcer.run(100).await.unwrap(), 0);
    hooks.settle().await;
    let ended: Vec<Value> = receiver.deliveries().iter().map(|d| d.json()).collect();
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0]["type"], "session.ended");
    assert_eq!(ended[0]["data"]["session_id"], "web-retro");
    assert_eq!(ended[0]["data"]["duration_secs"], 95);
    assert_eq!(ended[0]["data"]["end_reason"], "completed");
    assert!(receiver.deliveries()[0].verified);
}

#[tokio::test]
async fn outbound_calls_publish_call_ended_and_usage_thresholds_once_a_month() {
    use shared::store::directory::{DirectoryStore, Organisation};
    use shared::store::outbound_calls::{OutboundCall, OutboundCallStore};
    let hooks = Hooks::start().await;
    let receiver = FakeReceiver::start();
    let (_, secret) = hooks.endpoint(&receiver.url(), None).await;
    receiver.set_secrets(&[&secret]);
    let directory = hooks.stack.directory();
    let now = shared::base::time::now_rfc3339();
    let organisation: Organisation = serde_json::from_value(json!({
        "org_id": "acme", "name": "Acme", "monthly_limit_seconds": 100,
        "created_at": now, "updated_at": now,
    }))
    .unwrap();
    assert!(directory.create_organisation(&organisation).await.unwrap());
    let outbound = hooks.stack.outbound_calls();
    let notifier = hooks.stack.notify_worker(vec![hooks.stack.slack_webhook()]);
    // 85 s, then 20 s more: past 80% with the first, past 100% with the second.
    for (call_ref, seconds) in [("oc_usage_1", 85), ("oc_usage_2", 20)] {
        let call: OutboundCall = serde_json::from_value(json!({
            "call_id": call_ref, "provider": "twilio", "org_id": "acme",
            "to_number": "+14155552671", "from_number": "+14155552672",
            "status": "completed", "duration_secs": seconds, "end_reason": "completed",
            "transcript": [{"role": "agent", "message": "Hello"}, {"role": "user", "message": "Hi"}],
            "created_at": now,
        }))
        .unwrap();
        assert!(outbound.create(&call).await.unwrap());
        outbound.record_duration(&call, seconds).await.unwrap();
        let job = shared::queue::jobs::NotificationJob::for_call(
            call_ref,
            shared::queue::jobs::NotificationKind::OutboundCallSummary,
        )
        .of_org(Some("acme"));
        jobs::send(
            hooks.stack.queue("NotificationQueue").as_ref(),
            &job,
            Duration::ZERO,
        )
        .await
        .unwrap();
        hooks.stack.run_notifications(&notifier).await;
        hooks.settle().await;
    }
    let events: Vec<Value> = receiver.deliveries().iter().map(|d| d.json()).collect();
    let of = |kind: &str| -> Vec<&Value> { events.iter().filter(|e| e["type"] == kind).collect() };
    assert_eq!(of("call.ended").len(), 2);
    assert_eq!(of("call.ended")[0]["data"]["duration_secs"], 85);
    assert_eq!(of("call.transcript.ready").len(), 2);
    assert_eq!(
        of("call.transcript.ready")[0]["data"]["transcript"],
        "Agent: Hello\nUser: Hi"
    );
    let thresholds: Vec<u64> = of("usage.threshold")
        .iter()
        .map(|e| e["data"]["threshold_percent"].as_u64().unwrap())
        .collect();
    assert_eq!(thresholds, [80, 100], "each once: {events:?}");
    assert_eq!(of("usage.threshold")[1]["data"]["used_seconds"], 105);
    assert!(receiver.deliveries().iter().all(|d| d.verified));
}

#[tokio::test]
async fn recovery_is_bounded_per_call_and_continues_from_its_cursor() {
    let mut hooks = Hooks::start().await;
    hooks.recover_batch = 2;
    let receiver = FakeReceiver::start();
    let (endpoint, _) = hooks.endpoint(&receiver.url(), None).await;
    receiver.set_always(ReceiverAnswer::Fail(503));
    let mut ids = HashSet::new();
    for n in 0..5 {
        ids.insert(
            hooks
                .publish("call.ended", &format!("CA-recover-{n}"))
                .await,
        );
    }
    hooks.advance_to(T0 + 2 * 86_400).await;
    assert_eq!(receiver.deliveries().len(), 5 * 8);
    receiver.set_always(ReceiverAnswer::Accept);

    let path = format!("/webhook-endpoints/{endpoint}/recover");
    let route = "/webhook-endpoints/{endpoint_id}/recover";
    let mut recovered = Vec::new();
    let mut cursor: Option<String> = None;
    for call in 0..5 {
        let mut body = json!({"since": at(T0)});
        if let Some(cursor) = &cursor {
            body["cursor"] = json!(cursor);
        }
        let (status, answer) = hooks
            .call("POST", route, &path, "", &body.to_string())
            .await;
        assert_eq!(status, 202, "{answer}");
        assert!(answer["recovered"].as_u64().unwrap() <= 2);
        recovered.extend(
            answer["message_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|id| id.as_str().unwrap().to_string()),
        );
        hooks.settle().await;
        match answer["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => {
                assert!(call >= 2, "five messages take three calls of two");
                break;
            }
        }
    }
    let unique: HashSet<String> = recovered.iter().cloned().collect();
    assert_eq!(unique, ids, "every failed message, once");
    assert_eq!(recovered.len(), 5);
    for id in &ids {
        assert_eq!(receiver.of(id).len(), 9, "eight failures, one recovery");
    }
}
