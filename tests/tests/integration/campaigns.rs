//! `/campaigns` (issue 23): creation from JSON and CSV with every bad row
//! named, idempotent retries, listing, recipients by state, and the state
//! changes, against DynamoDB Local. Every answer is checked against the
//! OpenAPI document.

use std::sync::Arc;

use lambda_http::{Body, Request, Response};
use shared::api::Route;
use shared::flows::campaigns::CampaignsApi;
use shared::store::api_keys::DynamoApiKeyStore;
use shared::store::rate_limits::DynamoRateLimiter;

use crate::openapi::Documented;
use crate::support::*;

const AGENDA: &str = "Remind the customer of their appointment tomorrow.";

struct Campaigns {
    stack: Stack,
    api: CampaignsApi,
    doc: Documented,
    /// Organisation `acme`'s key and its active Twilio assistant.
    key: String,
    assistant: u64,
}

impl Campaigns {
    async fn start() -> Self {
        let stack = Stack::start().await;
        let api = CampaignsApi {
            access: shared::api::access::KeyedAccess {
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
            },
            store: Arc::new(stack.campaigns()),
            directory: Arc::new(stack.directory()),
        };
        let mut t = Self {
            stack,
            api,
            doc: Documented::new(),
            key: String::new(),
            assistant: 0,
        };
        t.key = t.organisation("acme", 3).await;
        t.assistant = t.assistant_of("acme").await;
        t
    }

    /// A new organisation with this concurrency cap, and a key of it.
    async fn organisation(&self, org_id: &str, cap: u32) -> String {
        self.stack.seed_organisation(org_id, 36_000, cap).await
    }

    async fn assistant_of(&self, org_id: &str) -> u64 {
        self.stack
            .seed_twilio_assistant(org_id, "+14155552672")
            .await
    }

    /// Sends a request, checks its answer against the document, returns
    /// the status and the body.
    async fn send(&self, request: Request, route: &str) -> (u16, serde_json::Value) {
        let method = request.method().to_string();
        let response: Response<Body> = self.api.handle(request).await;
        let body = self.doc.check(&method, route, &response);
        (response.status().as_u16(), body)
    }

    async fn call(
        &self,
        key: &str,
        method: &str,
        path: &str,
        query: &str,
        body: &str,
    ) -> (u16, serde_json::Value) {
        self.call_with(key, method, path, query, body, &[]).await
    }

    async fn call_with(
        &self,
        key: &str,
        method: &str,
        path: &str,
        query: &str,
        body: &str,
        extra: &[(&str, &str)],
    ) -> (u16, serde_json::Value) {
        let route = route_of(path);
        let mut headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("x-api-key".to_string(), key.to_string()),
        ];
        for (name, value) in extra {
            headers.retain(|(n, _)| n != name);
            headers.push((name.to_string(), value.to_string()));
        }
        let request =
            devstack::server::api_request(method, &route, path, query, &headers, body.as_bytes());
        self.send(request, &route).await
    }

    async fn create(&self, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.call(&self.key, "POST", "/campaigns", "", &body.to_string())
            .await
    }

    /// Every campaign of `key`'s organisation.
    async fn listed(&self, key: &str) -> Vec<serde_json::Value> {
        let (status, body) = self.call(key, "GET", "/campaigns", "", "").await;
        assert_eq!(status, 200, "{body}");
        body["campaigns"].as_array().unwrap().clone()
    }
}

/// The documented route of a path.
fn route_of(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    match parts.as_slice() {
        ["campaigns"] => "/campaigns".into(),
        ["campaigns", _] => "/campaigns/{campaign_id}".into(),
        ["campaigns", _, tail] => format!("/campaigns/{{campaign_id}}/{tail}"),
        _ => path.into(),
    }
}

/// A valid row per zone kind: derived from a US area code, given by the
/// row, derived from an Australian mobile (every Australian zone).
fn rows() -> serde_json::Value {
    serde_json::json!([
        {"phone_number": "+12125550123", "agent_variables": {"first_name": "Ada"}},
        {"phone_number": "+447123456789", "timezone": "Europe/London"},
        {"phone_number": "+61412345678", "agenda": "Ask about the delivery."},
        {"phone_number": "+919876543210", "welcome_message": "Namaste!"},
    ])
}

fn campaign(assistant: u64, recipients: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "name": "December reminders",
        "assistant_id": assistant,
        "agenda": AGENDA,
        "window": {"start": "09:00", "end": "20:00", "days": ["Mon", "tue", "wed", "thu", "fri", "sat"]},
        "max_concurrency": 2,
        "recipients": recipients,
    })
}

#[tokio::test]
async fn a_campaign_is_created_listed_and_read_back_with_its_recipients_by_state() {
    let t = Campaigns::start().await;
    let (status, created) = t.create(campaign(t.assistant, rows())).await;
    assert_eq!(status, 201, "{created}");
    let c = &created["campaign"];
    let id = c["campaign_id"].as_str().unwrap().to_string();
    assert_eq!(c["state"], "active");
    assert_eq!(c["recipients"], 4);
    assert_eq!(c["counts"]["pending"], 4);
    assert_eq!(c["counts"]["completed"], 0);
    assert_eq!(c["window"]["days"][0], "mon", "days are stored lowercase");
    assert_eq!(c["retry"]["no_answer"]["max_attempts"], 3, "default policy");
    assert_eq!(created["skipped_rows"], serde_json::json!([]));

    let (status, got) = t
        .call(&t.key, "GET", &format!("/campaigns/{id}"), "", "")
        .await;
    assert_eq!(status, 200);
    assert_eq!(got, *c);

    // Recipients in row order, a page at a time, each with its zones.
    let (_, first) = t
        .call(
            &t.key,
            "GET",
            &format!("/campaigns/{id}/recipients"),
            "limit=2",
            "",
        )
        .await;
    let page: Vec<&serde_json::Value> = first["recipients"].as_array().unwrap().iter().collect();
    assert_eq!(page.len(), 2);
    assert_eq!(page[0]["row"], 1);
    assert_eq!(page[0]["zones"], serde_json::json!(["America/New_York"]));
    assert_eq!(page[0]["zone_source"], "number");
    assert_eq!(page[0]["agent_variables"]["first_name"], "Ada");
    assert_eq!(page[1]["zones"], serde_json::json!(["Europe/London"]));
    assert_eq!(page[1]["zone_source"], "row");
    let next = first["next"].as_str().unwrap();
    let (_, second) = t
        .call(
            &t.key,
            "GET",
            &format!("/campaigns/{id}/recipients"),
            &format!("limit=2&after={next}"),
            "",
        )
        .await;
    let rest = second["recipients"].as_array().unwrap();
    assert_eq!(rest[0]["row"], 3);
    assert!(
        rest[0]["zones"].as_array().unwrap().len() > 3,
        "an Australian mobile may ring in every Australian zone: {}",
        rest[0]["zones"]
    );
    assert_eq!(rest[1]["zones"], serde_json::json!(["Asia/Kolkata"]));

    // By state, through the index.
    let (_, pending) = t
        .call(
            &t.key,
            "GET",
            &format!("/campaigns/{id}/recipients"),
            "state=pending",
            "",
        )
        .await;
    assert_eq!(pending["recipients"].as_array().unwrap().len(), 4);
    let (_, none) = t
        .call(
            &t.key,
            "GET",
            &format!("/campaigns/{id}/recipients"),
            "state=completed",
            "",
        )
        .await;
    assert_eq!(none["recipients"], serde_json::json!([]));
    let (status, bad) = t
        .call(
            &t.key,
            "GET",
            &format!("/campaigns/{id}/recipients"),
            "state=done",
            "",
        )
        .await;
    assert_eq!((status, bad["code"].as_str()), (400, Some("invalid_state")));

    // Listed newest first, a page at a time.
    let (status, newer) = t
        .create(campaign(
            t.assistant,
            serde_json::json!([{"phone_number": "+12125550199"}]),
        ))
        .await;
    assert_eq!(status, 201, "{newer}");
    let (_, page) = t.call(&t.key, "GET", "/campaigns", "limit=1", "").await;
    assert_eq!(
        page["campaigns"][0]["campaign_id"],
        newer["campaign"]["campaign_id"]
    );
    let after = page["next"].as_str().unwrap();
    let (_, page) = t
        .call(
            &t.key,
            "GET",
            "/campaigns",
            &format!("limit=1&after={}", urlencode(after)),
            "",
        )
        .await;
    assert_eq!(page["campaigns"][0]["campaign_id"], id.as_str());

    // Another organisation sees none of it.
    let other = t.organisation("globex", 5).await;
    assert!(t.listed(&other).await.is_empty());
    for (method, path) in [
        ("GET", format!("/campaigns/{id}")),
        ("GET", format!("/campaigns/{id}/recipients")),
        ("POST", format!("/campaigns/{id}/cancel")),
    ] {
        let (status, body) = t.call(&other, method, &path, "", "").await;
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    let (status, _) = t
        .call(&t.key, "GET", "/campaigns/cmp_not-an-id", "", "")
        .await;
    assert_eq!(status, 404);
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test]
async fn every_bad_row_is_named_and_nothing_is_created_unless_skip_invalid() {
    let t = Campaigns::start().await;
    let recipients = serde_json::json!([
        {"phone_number": "+12125550123"},
        {"phone_number": "not a number"},
        {"phone_number": "+447123456789", "timezone": "Mars/Olympus"},
        {"phone_number": "+12125550123"},
        {"timezone": "Europe/Paris"},
        {"phone_number": "+33612345678", "agent_variables": {"callops_call_ref": "mine"}},
        {"phone_number": "+33612345679", "agent_variables": ["not", "an", "object"]},
        {"phone_number": "+33612345670", "note": "unknown field"},
    ]);
    let (status, refused) = t.create(campaign(t.assistant, recipients.clone())).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["code"], "invalid_recipients");
    let named: Vec<(u64, &str)> = refused["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["row"].as_u64().unwrap(), r["field"].as_str().unwrap()))
        .collect();
    assert_eq!(
        named,
        [
            (2, "phone_number"),
            (3, "timezone"),
            (4, "phone_number"),
            (5, "phone_number"),
            (6, "agent_variables.callops_call_ref"),
            (7, "agent_variables"),
            (8, "note"),
        ]
    );
    assert!(t.listed(&t.key).await.is_empty(), "nothing was created");

    // With skip_invalid the valid row is created and the rest reported.
    let mut body = campaign(t.assistant, recipients);
    body["skip_invalid"] = true.into();
    let (status, created) = t.create(body).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["campaign"]["recipients"], 1);
    assert_eq!(created["campaign"]["skipped_rows"], 7);
    assert_eq!(created["skipped_rows"].as_array().unwrap().len(), 7);

    // Only bad rows: nothing to create.
    let mut body = campaign(t.assistant, serde_json::json!([{"phone_number": "+1"}]));
    body["skip_invalid"] = true.into();
    let (status, none) = t.create(body).await;
    assert_eq!(
        (status, none["code"].as_str()),
        (422, Some("no_recipients"))
    );
    assert_eq!(t.listed(&t.key).await.len(), 1);
}

#[tokio::test]
async fn the_campaigns_own_fields_are_refused_with_their_codes_and_nothing_is_created() {
    let t = Campaigns::start().await;
    let other = t.organisation("globex", 5).await;
    let foreign_assistant = t.assistant_of("globex").await;
    let one = serde_json::json!([{"phone_number": "+12125550123"}]);
    let with = |patch: serde_json::Value| {
        let mut body = campaign(t.assistant, one.clone());
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        body.to_string()
    };
    let too_many: Vec<serde_json::Value> = (0..10_001)
        .map(|i| serde_json::json!({"phone_number": format!("+1212555{:04}", i % 10_000)}))
        .collect();
    let cases: Vec<(String, u16, &str)> = vec![
        (
            with(serde_json::json!({"assistant_id": null})),
            422,
            "missing_field",
        ),
        (
            with(serde_json::json!({"recipients": null})),
            422,
            "missing_field",
        ),
        (
            with(serde_json::json!({"recipients_csv": "phone_number\n+12125550123\n"})),
            422,
            "ambiguous_body",
        ),
        (
            with(serde_json::json!({"assistant_id": foreign_assistant})),
            404,
            "not_found",
        ),
        (
            with(serde_json::json!({"max_concurrency": 4})),
            422,
            "invalid_max_concurrency",
        ),
        (
            with(serde_json::json!({"max_concurrency": 0})),
            422,
            "invalid_max_concurrency",
        ),
        (
            with(serde_json::json!({"window": {"start": "20:00", "end": "09:00"}})),
            422,
            "invalid_window",
        ),
        (
            with(
                serde_json::json!({"window": {"start": "09:00", "end": "17:00", "days": ["someday"]}}),
            ),
            422,
            "invalid_window",
        ),
        (
            with(
                serde_json::json!({"start_at": "2027-01-10T09:00:00Z", "end_at": "2027-01-09T09:00:00Z"}),
            ),
            422,
            "invalid_time",
        ),
        (
            with(serde_json::json!({"start_at": "tomorrow"})),
            422,
            "invalid_time",
        ),
        (
            with(serde_json::json!({"retry": {"busy": {"max_attempts": 0, "spacing_minutes": 5}}})),
            422,
            "invalid_retry",
        ),
        (
            with(serde_json::json!({"name": "n".repeat(201)})),
            422,
            "field_too_long",
        ),
        (
            with(serde_json::json!({"recipients": too_many})),
            422,
            "too_many_recipients",
        ),
        (
            with(serde_json::json!({"colour": "red"})),
            400,
            "invalid_json",
        ),
        ("{not json".to_string(), 400, "invalid_json"),
    ];
    for (body, status, code) in cases {
        let (got, answer) = t.call(&t.key, "POST", "/campaigns", "", &body).await;
        assert_eq!(
            (got, answer["code"].as_str()),
            (status, Some(code)),
            "{}: {answer}",
            body.chars().take(120).collect::<String>()
        );
    }
    let huge = format!(
        r#"{{"assistant_id": 1, "recipients_csv": "{}"}}"#,
        "x".repeat(shared::flows::campaigns::MAX_BODY_BYTES)
    );
    let (status, _) = t.call(&t.key, "POST", "/campaigns", "", &huge).await;
    assert_eq!(status, 413);
    let (status, _) = t
        .call(
            "cok_wrong",
            "POST",
            "/campaigns",
            "",
            &with(serde_json::json!({})),
        )
        .await;
    assert_eq!(status, 401);
    assert!(t.listed(&t.key).await.is_empty());
    assert!(t.listed(&other).await.is_empty());
}

#[tokio::test]
async fn a_csv_body_or_csv_text_creates_a_campaign_with_extra_columns_as_agent_variables() {
    let t = Campaigns::start().await;
    let csv = "phone_number,timezone,first_name,appointment\n\
               +12125550123,,Ada,Tuesday 10:00\n\
               +447123456789,Europe/London,Grace,\n\
               +12125550124,America/Chicago\n";
    let query = format!(
        "assistant_id={}&agenda={}&window_start=08:30&window_end=19:00&window_days=mon,wed&max_concurrency=3&skip_invalid=true&name=CSV",
        t.assistant,
        urlencode(AGENDA)
    );
    let (status, created) = t
        .call_with(
            &t.key,
            "POST",
            "/campaigns",
            &query,
            csv,
            &[("content-type", "text/csv; charset=utf-8")],
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let c = &created["campaign"];
    assert_eq!(c["recipients"], 2);
    assert_eq!(c["max_concurrency"], 3);
    assert_eq!(
        c["window"],
        serde_json::json!({"start": "08:30", "end": "19:00", "days": ["mon", "wed"]})
    );
    assert_eq!(created["skipped_rows"][0]["row"], 3, "the short row");
    let id = c["campaign_id"].as_str().unwrap();
    let (_, page) = t
        .call(
            &t.key,
            "GET",
            &format!("/campaigns/{id}/recipients"),
            "",
            "",
        )
        .await;
    let rows = page["recipients"].as_array().unwrap();
    assert_eq!(
        rows[0]["agent_variables"],
        serde_json::json!({"first_name": "Ada", "appointment": "Tuesday 10:00"})
    );
    assert_eq!(
        rows[1]["agent_variables"],
        serde_json::json!({"first_name": "Grace"})
    );

    // The same CSV as text in JSON.
    let (status, created) = t
        .create(serde_json::json!({
            "assistant_id": t.assistant, "agenda": AGENDA,
            "recipients_csv": "phone_number\n+12125550123\n+12125550124\n",
        }))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["campaign"]["recipients"], 2);

    for (content_type, query, body, code) in [
        (
            "text/csv",
            query.as_str(),
            "number\n+12125550123\n",
            "invalid_csv",
        ),
        ("text/csv", "assistant_id=x", csv, "invalid_query"),
        ("text/csv", "colour=red", csv, "invalid_query"),
    ] {
        let (status, answer) = t
            .call_with(
                &t.key,
                "POST",
                "/campaigns",
                query,
                body,
                &[("content-type", content_type)],
            )
            .await;
        assert_eq!(answer["code"], code, "{query}: {answer}");
        assert!(status == 400 || status == 422);
    }
}

#[tokio::test]
async fn a_retried_creation_with_its_idempotency_key_answers_the_one_campaign() {
    let t = Campaigns::start().await;
    let body = campaign(t.assistant, rows()).to_string();
    let key = [("idempotency-key", "order-2026-12-07")];
    // Five at once, as a client whose requests timed out might send them.
    let answers = futures_util::future::join_all(
        (0..5).map(|_| t.call_with(&t.key, "POST", "/campaigns", "", &body, &key)),
    )
    .await;
    let ids: std::collections::BTreeSet<&str> = answers
        .iter()
        .map(|(status, answer)| {
            assert!(*status == 201 || *status == 200, "{answer}");
            answer["campaign"]["campaign_id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 1);
    assert!(answers.iter().any(|(status, _)| *status == 201));
    let listed = t.listed(&t.key).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["counts"]["pending"], 4);

    let (status, again) = t
        .call_with(&t.key, "POST", "/campaigns", "", &body, &key)
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["duplicate"], true);

    // The same key with another request is refused, never answered with the first.
    let other = campaign(
        t.assistant,
        serde_json::json!([{"phone_number": "+12125550199"}]),
    );
    let (status, refused) = t
        .call_with(&t.key, "POST", "/campaigns", "", &other.to_string(), &key)
        .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (409, Some("idempotency_key_reused"))
    );
    // Another organisation's same key is its own.
    let globex = t.organisation("globex", 5).await;
    let globex_assistant = t.assistant_of("globex").await;
    let (status, theirs) = t
        .call_with(
            &globex,
            "POST",
            "/campaigns",
            "",
            &campaign(globex_assistant, rows()).to_string(),
            &key,
        )
        .await;
    assert_eq!(status, 201, "{theirs}");
    assert_ne!(
        theirs["campaign"]["campaign_id"],
        again["campaign"]["campaign_id"]
    );
    let (status, bad) = t
        .call_with(
            &t.key,
            "POST",
            "/campaigns",
            "",
            &body,
            &[("idempotency-key", "")],
        )
        .await;
    assert_eq!(
        (status, bad["code"].as_str()),
        (400, Some("invalid_idempotency_key"))
    );
}

#[tokio::test]
async fn a_campaign_creation_stopped_part_way_is_never_active_and_its_key_finishes_it() {
    use shared::store::campaigns::CampaignStore;
    let t = Campaigns::start().await;
    let body = campaign(t.assistant, rows()).to_string();
    let key = [("idempotency-key", "stopped")];
    let (status, created) = t
        .call_with(&t.key, "POST", "/campaigns", "", &body, &key)
        .await;
    assert_eq!(status, 201);
    let id = created["campaign"]["campaign_id"]
        .as_str()
        .unwrap()
        .to_string();
    // As if the first request had stopped after its first write.
    let store = t.stack.campaigns();
    t.stack
        .dynamo
        .update_item()
        .table_name(t.stack.resources.table("CampaignsTable"))
        .key(
            "campaign_id",
            aws_sdk_dynamodb::types::AttributeValue::S(id.clone()),
        )
        .key(
            "item",
            aws_sdk_dynamodb::types::AttributeValue::S("campaign".into()),
        )
        .update_expression("SET #s = :creating REMOVE #c")
        .expression_attribute_names("#s", "state")
        .expression_attribute_names("#c", "counts")
        .expression_attribute_values(
            ":creating",
            aws_sdk_dynamodb::types::AttributeValue::S("creating".into()),
        )
        .send()
        .await
        .unwrap();
    let (_, shown) = t
        .call(&t.key, "GET", &format!("/campaigns/{id}"), "", "")
        .await;
    assert_eq!(shown["state"], "creating");
    let (status, pause) = t
        .call(&t.key, "POST", &format!("/campaigns/{id}/pause"), "", "")
        .await;
    assert_eq!(
        (status, pause["code"].as_str()),
        (409, Some("invalid_campaign_state"))
    );

    let (status, finished) = t
        .call_with(&t.key, "POST", "/campaigns", "", &body, &key)
        .await;
    assert_eq!(status, 200, "{finished}");
    assert_eq!(finished["campaign"]["state"], "active");
    assert_eq!(finished["campaign"]["counts"]["pending"], 4);
    let stored = store.get(&id).await.unwrap().unwrap();
    assert_eq!(
        stored.state,
        shared::store::campaigns::CampaignState::Active
    );
}

#[tokio::test]
async fn pause_resume_and_cancel_each_apply_once_and_say_why_a_state_cannot_change() {
    let t = Campaigns::start().await;
    let (_, created) = t.create(campaign(t.assistant, rows())).await;
    let id = created["campaign"]["campaign_id"]
        .as_str()
        .unwrap()
        .to_string();
    let act = |action: &'static str| {
        let path = format!("/campaigns/{id}/{action}");
        let t = &t;
        async move { t.call(&t.key, "POST", &path, "", "").await }
    };
    let (status, paused) = act("pause").await;
    assert_eq!(status, 200);
    assert_eq!(
        (paused["state"].as_str(), paused["paused_reason"].as_str()),
        (Some("paused"), Some("user"))
    );
    let (status, again) = act("pause").await;
    assert_eq!((status, again["state"].as_str()), (200, Some("paused")));
    let (status, resumed) = act("resume").await;
    assert_eq!(status, 200);
    assert_eq!(resumed["state"], "active");
    assert!(resumed.get("paused_reason").is_none(), "{resumed}");

    // A pause and a cancel at once: both answer, the cancel holds.
    let (pause, cancel) = tokio::join!(act("pause"), act("cancel"));
    assert_eq!(cancel.0, 200, "{}", cancel.1);
    assert!(pause.0 == 200 || pause.0 == 409, "{}", pause.1);
    let (_, shown) = t
        .call(&t.key, "GET", &format!("/campaigns/{id}"), "", "")
        .await;
    assert_eq!(shown["state"], "cancelled");
    assert!(shown["finished_at"].is_string());
    let (status, again) = act("cancel").await;
    assert_eq!((status, again["state"].as_str()), (200, Some("cancelled")));
    for action in ["resume", "pause"] {
        let (status, refused) = act(action).await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (409, Some("invalid_campaign_state")),
            "{action}"
        );
    }
    // Not a route: answered 404 by the function itself.
    let request = devstack::server::api_request(
        "POST",
        "/campaigns/{campaign_id}/{action}",
        &format!("/campaigns/{id}/restart"),
        "",
        &[("x-api-key".to_string(), t.key.clone())],
        b"",
    );
    assert_eq!(t.api.handle(request).await.status(), 404);
}

#[tokio::test]
async fn ten_thousand_rows_are_checked_and_stored_in_one_request() {
    let t = Campaigns::start().await;
    let recipients: Vec<serde_json::Value> = (0..10_000)
        .map(|i| {
            serde_json::json!({
                "phone_number": format!("+1{}555{:04}", ["212", "312", "415", "206"][i % 4], i),
                "agent_variables": {"n": i},
            })
        })
        .collect();
    let (status, created) = t
        .create(campaign(t.assistant, serde_json::Value::Array(recipients)))
        .await;
    assert_eq!(
        status,
        201,
        "{}",
        created.to_string().chars().take(500).collect::<String>()
    );
    assert_eq!(created["campaign"]["recipients"], 10_000);
    let id = created["campaign"]["campaign_id"].as_str().unwrap();
    let (_, last) = t
        .call(
            &t.key,
            "GET",
            &format!("/campaigns/{id}/recipients"),
            "state=pending&after=9998",
            "",
        )
        .await;
    let last = &last["recipients"][0];
    assert_eq!(last["row"], 9_999);
    assert_eq!(last["zones"], serde_json::json!(["America/Los_Angeles"]));
    assert_eq!(last["agent_variables"]["n"], 9_998);
}
