//! The call log (`GET /calls`, `GET /calls/{id}`): every kind of an
//! organisation's calls in one shape, newest first, filtered and paged, at
//! one Query and one BatchGetItem per page whatever the organisation's size.

use devstack::faults::{Dialect, FaultPlan, FaultProxy};
use shared::base::end_reason::EndReason;
use shared::store::call_log::{CallLogStore, DynamoCallLogStore, LogQuery};
use shared::store::calls::{CallRecord, CallStore};
use shared::store::directory::Provider;
use shared::store::outbound_calls::OutboundCall;
use shared::store::sessions::{NewSession, SessionStore};

use super::*;

const RECORDED_FROM: &str = "+919876543210";

impl Outbound {
    fn calls_list(&self) -> calls_list::CallsList {
        calls_list::CallsList {
            access: self.access(10_000),
            log: Arc::new(DynamoCallLogStore {
                client: self.stack.dynamo.clone(),
                table: self.stack.resources.table("CallsTable"),
            }),
        }
    }

    fn call_timeline(&self) -> call_timeline::CallTimelineRoute {
        call_timeline::CallTimelineRoute {
            access: self.access(10_000),
            calls: Arc::new(self.stack.calls()),
            outbound: Arc::new(self.stack.outbound_calls()),
            sessions: Arc::new(self.stack.sessions()),
            default_org: Some("acme".into()),
        }
    }

    async fn log(&self, key: &str, query: &str) -> (u16, serde_json::Value) {
        let headers = vec![("x-api-key".to_string(), key.to_string())];
        let response = self
            .calls_list()
            .handle(devstack::server::api_request(
                "GET", "/calls", "/calls", query, &headers, b"",
            ))
            .await;
        (response.status().as_u16(), json_body(&response))
    }

    async fn timeline(&self, key: &str, id: &str, query: &str) -> (u16, serde_json::Value) {
        let headers = vec![("x-api-key".to_string(), key.to_string())];
        let path = format!("/calls/{}", shared::flows::sessions::url_encode(id));
        let response = self
            .call_timeline()
            .handle(devstack::server::api_request(
                "GET",
                "/calls/{id}",
                &path,
                query,
                &headers,
                b"",
            ))
            .await;
        (response.status().as_u16(), json_body(&response))
    }

    /// A Twilio status callback for one of this test's calls.
    fn status_callback(&self, call_ref: &str, sid: &str, status: &str) -> Request {
        self.twilio_request(
            "POST",
            "/twilio/status",
            &format!("call={call_ref}"),
            &[
                ("CallSid", sid),
                ("AccountSid", ACCOUNT_SID),
                ("CallStatus", status),
                ("CallDuration", "42"),
            ],
            TWILIO_TOKEN,
        )
    }
}

fn ids(page: &serde_json::Value) -> Vec<String> {
    page["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

/// A recording-pipeline call of `org`, received at `received_at`.
fn recording(org: &str, id: &str, received_at: &str) -> CallRecord {
    serde_json::from_value(serde_json::json!({
        "call_id": id,
        "org_id": org,
        "source": "zapier",
        "from_number": RECORDED_FROM,
        "to_number": "09631084471",
        "duration": 125,
        "timestamp": received_at,
        "status": "notified",
        "call_status": "completed",
        "direction": "incoming",
        "slack_posted": true,
        "processed_at": received_at,
        "received_at": received_at,
        "status_history": [{"status": "queued", "at": received_at}],
    }))
    .unwrap()
}

#[tokio::test]
async fn the_call_log_shows_every_kind_of_an_organisations_calls_and_only_its_own() {
    let t = Outbound::start().await;
    t.create_org("acme", 1_000_000, 0).await;
    t.create_org("globex", 1_000_000, 0).await;
    let assistant = t.twilio_assistant("acme").await;
    // A recording-pipeline call from yesterday, a web session, three calls.
    let yesterday = shared::base::time::rfc3339(chrono::Utc::now() - chrono::Duration::days(1));
    t.stack
        .calls()
        .create(&recording("acme", "REC-LOG-1", &yesterday))
        .await
        .unwrap();
    t.stack
        .sessions()
        .open(&NewSession {
            session_id: "web-standup".into(),
            session_type: "web".into(),
            room: "standup".into(),
            org_id: "acme".into(),
            started_at: shared::base::time::now_rfc3339(),
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
    let mut placed = Vec::new();
    for _ in 0..3 {
        let response = t
            .initiate(100_000)
            .handle(t.initiate_request(&seed_call(assistant)))
            .await;
        assert_eq!(response.status(), 200);
        let sid = json_body(&response)["call_sid"]
            .as_str()
            .unwrap()
            .to_string();
        placed.push((call_ref_of(t.twilio.created_calls().last().unwrap()), sid));
    }
    let status = t.status();
    status
        .handle(t.status_callback(&placed[0].0, &placed[0].1, "completed"))
        .await;
    status
        .handle(t.status_callback(&placed[1].0, &placed[1].1, "busy"))
        .await;
    t.stack.run_provider_events().await;
    // Another organisation's call is in the same table.
    let theirs = OutboundCall {
        org_id: Some("globex".into()),
        ..OutboundCall::initiated("oc_globexcall", Provider::Twilio, CUSTOMER)
    };
    t.stack.outbound_calls().create(&theirs).await.unwrap();

    let (code, page) = t.log(&t.key, "").await;
    assert_eq!(code, 200, "{page}");
    let listed = ids(&page);
    assert_eq!(listed.len(), 5, "{page}");
    assert!(!listed.contains(&"oc_globexcall".to_string()));
    assert_eq!(listed.last().unwrap(), "REC-LOG-1", "newest first");
    assert!(page["next_cursor"].is_null());
    let text = page.to_string();
    assert!(!text.contains(&CUSTOMER[2..]), "numbers are masked: {text}");
    assert!(
        !text.contains(&RECORDED_FROM[3..]),
        "numbers are masked: {text}"
    );
    let entry = |id: &str| {
        page["calls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap()
            .clone()
    };
    let done = entry(&placed[0].0);
    assert_eq!(done["kind"], "outbound");
    assert_eq!(done["status"], "ended");
    assert_eq!(done["end_reason"], "completed");
    assert_eq!(done["duration_secs"], 42);
    assert_eq!(done["provider_ids"]["call_sid"], placed[0].1.as_str());
    assert_eq!(
        done["links"]["self"],
        format!("/calls/{}?kind=outbound", placed[0].0)
    );
    assert_eq!(entry(&placed[1].0)["end_reason"], "busy");
    assert_eq!(entry("web-standup")["kind"], "web");
    assert_eq!(entry("web-standup")["status"], "active");
    assert_eq!(entry("REC-LOG-1")["kind"], "recording");
    assert_eq!(entry("REC-LOG-1")["end_reason"], "completed");

    // Filters.
    let count = |query: &'static str| {
        let t = &t;
        async move {
            let (code, page) = t.log(&t.key, query).await;
            assert_eq!(code, 200, "{query}: {page}");
            ids(&page).len()
        }
    };
    assert_eq!(count("kind=outbound").await, 3);
    assert_eq!(count("kind=web").await, 1);
    assert_eq!(count("end_reason=busy").await, 1);
    assert_eq!(
        count("status=active").await,
        2,
        "one call still queued, the room"
    );
    assert_eq!(count("phone=%2B919876543210").await, 1);
    assert_eq!(
        t.log(&t.key, &format!("assistant_id={assistant}")).await.1["calls"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let since_today = format!(
        "from={}",
        shared::flows::sessions::url_encode(&shared::base::time::rfc3339(
            chrono::Utc::now() - chrono::Duration::hours(1)
        ))
    );
    let (_, recent) = t.log(&t.key, &since_today).await;
    assert_eq!(
        ids(&recent).len(),
        4,
        "yesterday's recording is out of range"
    );

    // Pages of two, by cursor, cover every call once.
    let mut seen = Vec::new();
    let mut query = "limit=2".to_string();
    loop {
        let (code, page) = t.log(&t.key, &query).await;
        assert_eq!(code, 200, "{page}");
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, listed);

    // Bad input is a 400 naming it; nothing is read for it.
    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("cursor=not-a-cursor", "invalid_cursor"),
        ("end_reason=hung_up", "invalid_end_reason"),
        ("from=yesterday", "invalid_time"),
        ("phone=12", "invalid_phone"),
    ] {
        let (status, body) = t.log(&t.key, query).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some(code)),
            "{query}"
        );
    }
    let (status, _) = t.log("cok_not_a_key", "").await;
    assert_eq!(status, 401);

    // The timeline: whole numbers, every step in order.
    let (code, detail) = t.timeline(&t.key, &placed[0].0, "kind=outbound").await;
    assert_eq!(code, 200, "{detail}");
    assert_eq!(detail["to"], CUSTOMER);
    assert_eq!(detail["end_reason"], "completed");
    let events: Vec<(String, String)> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_string(),
                e["detail"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(events[0].0, "placed", "{events:?}");
    assert!(
        events.contains(&("status".into(), "completed".into())),
        "{events:?}"
    );
    let times: Vec<&str> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["at"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // Found without a kind too; a session and a recording call likewise.
    assert_eq!(t.timeline(&t.key, &placed[1].0, "").await.0, 200);
    let (code, room) = t.timeline(&t.key, "web-standup", "").await;
    assert_eq!(
        (code, room["timeline"][0]["event"].as_str()),
        (200, Some("opened"))
    );
    let (code, rec) = t.timeline(&t.key, "REC-LOG-1", "kind=recording").await;
    assert_eq!(code, 200, "{rec}");
    assert_eq!(rec["from"], RECORDED_FROM);
    assert_eq!(rec["timeline"][0]["event"], "received");
    // Another organisation's call is as absent as an unknown one.
    assert_eq!(t.timeline(&t.key, "oc_globexcall", "").await.0, 404);
    assert_eq!(t.timeline(&t.key, "oc_nosuchcall", "").await.0, 404);
    let globex_key = t.key_of("globex").await;
    assert_eq!(t.timeline(&globex_key, &placed[0].0, "").await.0, 404);
    assert_eq!(t.timeline(&globex_key, "oc_globexcall", "").await.0, 200);
    let (code, body) = t.timeline(&t.key, &placed[0].0, "kind=fax").await;
    assert_eq!((code, body["code"].as_str()), (400, Some("invalid_kind")));
    assert_eq!(t.timeline(&t.key, &"x".repeat(300), "").await.0, 404);
}

/// A page is one Query of the index and one BatchGetItem, for an
/// organisation with 120 calls as for one with 3; never a Scan.
#[tokio::test]
async fn a_page_costs_one_query_and_one_batch_read_whatever_the_organisations_size() {
    let t = Outbound::start().await;
    let calls = t.stack.outbound_calls();
    let start = chrono::Utc::now() - chrono::Duration::hours(3);
    for (org, n) in [("bigco", 120), ("smallco", 3)] {
        for i in 0..n {
            let at = shared::base::time::rfc3339(start + chrono::Duration::seconds(i));
            let call = OutboundCall {
                org_id: Some(org.into()),
                created_at: at,
                status: "completed".into(),
                end_reason: Some(EndReason::Completed),
                ..OutboundCall::initiated(&format!("oc_{org}{i:04}"), Provider::Twilio, CUSTOMER)
            };
            calls.create(&call).await.unwrap();
        }
    }
    let proxy = FaultProxy::start(
        local().dynamodb_endpoint(),
        Dialect::AwsJson,
        FaultPlan::none(),
    );
    let log = DynamoCallLogStore {
        client: local().dynamodb_at(proxy.base_url()).await,
        table: t.stack.resources.table("CallsTable"),
    };
    let operations = || {
        std::mem::take(
            &mut *proxy
                .counts()
                .operations
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    };
    let expected = vec![
        "DynamoDB_20120810.Query".to_string(),
        "DynamoDB_20120810.BatchGetItem".to_string(),
    ];
    let query = |org: &'static str| LogQuery {
        org,
        from: None,
        to: None,
        limit: 50,
        after: None,
    };
    let big = log.page(&query("bigco")).await.unwrap();
    assert_eq!(operations(), expected);
    assert_eq!(big.records.len(), 50);
    let small = log.page(&query("smallco")).await.unwrap();
    assert_eq!(operations(), expected);
    assert_eq!(small.records.len(), 3);
    assert!(small.next.is_none());
    // Deep in the big one's log, still the same cost.
    let mut cursor = big.next;
    let mut read = 50;
    while let Some(after) = cursor {
        let page = log
            .page(&LogQuery {
                after: Some(&after),
                ..query("bigco")
            })
            .await
            .unwrap();
        assert_eq!(operations(), expected);
        read += page.records.len();
        cursor = page.next;
    }
    assert_eq!(read, 120);
}
