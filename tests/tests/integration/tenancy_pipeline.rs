//! The recording pipeline per organisation: each organisation's own webhook
//! tokens (created, listed and revoked through the admin routes), its calls
//! kept apart from every other organisation's even under the same call id,
//! and `/call/{call_id}` and `/stats` answering for an organisation's key.

use futures_util::future::join_all;
use lambda_http::{Body, Request, Response};
use serde_json::json;
use shared::api::Route;
use shared::store::api_keys::{self, ApiKeyStore, KeyPurpose};
use shared::store::calls::{scoped_call_id, CallStatus, CallStore};
use shared::store::directory::{DirectoryStore, Organisation};
use shared::store::webhook_tokens::MAX_LIVE_TOKENS;

use crate::support::*;

impl Stack {
    async fn create_org(&self, org_id: &str) {
        let org: Organisation = serde_json::from_value(json!({
            "org_id": org_id, "name": org_id, "monthly_limit_seconds": 3600,
            "created_at": "2026-12-05T00:00:00Z", "updated_at": "2026-12-05T00:00:00Z"
        }))
        .unwrap();
        assert!(self.directory().create_organisation(&org).await.unwrap());
    }

    /// An API key of `org_id`.
    async fn api_key_of(&self, org_id: &str) -> String {
        let (key, record) = api_keys::generate("reader", org_id);
        self.key_store().insert(&record).await.unwrap();
        key
    }

    async fn token_route(
        &self,
        method: &str,
        org_id: &str,
        token_id: Option<&str>,
    ) -> Response<Body> {
        let (route, path) = match token_id {
            None => (
                "/organisations/{org_id}/webhook-tokens".to_string(),
                format!("/organisations/{org_id}/webhook-tokens"),
            ),
            Some(id) => (
                "/organisations/{org_id}/webhook-tokens/{token_id}".to_string(),
                format!("/organisations/{org_id}/webhook-tokens/{id}"),
            ),
        };
        let body: &[u8] = if method == "POST" {
            br#"{"name": "zapier"}"#
        } else {
            b""
        };
        let headers = vec![
            ("authorization".to_string(), bearer(ADMIN_TOKEN)),
            ("content-type".to_string(), "application/json".to_string()),
        ];
        let request = devstack::server::api_request(method, &route, &path, "", &headers, body);
        self.webhook_token_admin().handle(request).await
    }

    /// A new webhook token of `org_id` through the admin route: (id, token).
    async fn webhook_token_of(&self, org_id: &str) -> (String, String) {
        let response = self.token_route("POST", org_id, None).await;
        assert_eq!(response.status(), 201, "{:?}", json_body(&response));
        let created = json_body(&response);
        (
            created["token_id"].as_str().unwrap().to_string(),
            created["token"].as_str().unwrap().to_string(),
        )
    }

    async fn deliver_as(&self, call_id: &str, token: &str) -> Response<Body> {
        let body = seed_payload(self, call_id).to_string();
        self.zapier()
            .handle(zapier_request(body.as_bytes(), Some(&bearer(token))))
            .await
    }
}

fn keyed(request_path: &str, key: &str, query: &str) -> Request {
    let headers = vec![("x-api-key".to_string(), key.to_string())];
    let route = if request_path == "/stats" {
        "/stats"
    } else {
        "/call/{call_id}"
    };
    devstack::server::api_request("GET", route, request_path, query, &headers, b"")
}

fn exotel_form(call_id: &str, stack: &Stack) -> String {
    format!(
        "CallSid={call_id}&Status=completed&From=09876543210&To=09631084471\
         &DateUpdated=2025-10-09+23%3A28%3A27&ConversationDuration=56&RecordingUrl={}",
        url_encode(&stack.recording_url(call_id))
    )
}

fn url_encode(raw: &str) -> String {
    url::form_urlencoded::byte_serialize(raw.as_bytes()).collect()
}

#[tokio::test]
async fn an_organisations_token_records_its_call_which_only_its_key_reads() {
    let stack = Stack::start().await;
    stack.create_org("acme").await;
    stack.create_org("globex").await;
    let (_, token) = stack.webhook_token_of("acme").await;
    let acme_key = stack.api_key_of("acme").await;
    let globex_key = stack.api_key_of("globex").await;

    let response = stack.deliver_as("ORGCALL1", &token).await;
    assert_eq!(response.status(), 202, "{:?}", json_body(&response));
    // The sender sees its own call id; the record sits in acme's space.
    assert_eq!(json_body(&response)["call_id"], "ORGCALL1");
    assert!(stack.calls().get("ORGCALL1").await.unwrap().is_none());
    let record = stack
        .calls()
        .get(&scoped_call_id("acme", "ORGCALL1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.org_id.as_deref(), Some("acme"));

    // Transcribed and notified as any call: the post names the sender's id.
    stack.run_transcriptions().await;
    stack
        .run_notifications(&stack.notify_worker(vec![stack.slack_webhook()]))
        .await;
    assert_eq!(stack.posts_per_call().get("ORGCALL1"), Some(&1));
    let record = stack
        .calls()
        .get(&scoped_call_id("acme", "ORGCALL1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, CallStatus::Notified);

    // acme's key reads it; globex's key gets what a missing call gets.
    let call_get = stack.call_get();
    let found = call_get
        .handle(keyed("/call/ORGCALL1", &acme_key, ""))
        .await;
    assert_eq!(found.status(), 200, "{:?}", json_body(&found));
    let call = json_body(&found);
    assert_eq!(call["call_id"], "ORGCALL1");
    assert_eq!(call["status"], "notified");
    assert!(call["transcription_text"].is_string());
    let foreign = call_get
        .handle(keyed("/call/ORGCALL1", &globex_key, ""))
        .await;
    let missing = call_get
        .handle(keyed("/call/NOSUCHCALL", &globex_key, ""))
        .await;
    assert_eq!(foreign.status(), 404);
    assert_eq!(missing.status(), 404);
    assert_eq!(json_body(&foreign)["code"], json_body(&missing)["code"]);
    assert_eq!(json_body(&foreign)["detail"], "Call ORGCALL1 not found");
    // API_TOKEN: the deployment's own ids, or an organisation's with ?org_id=.
    let bare = call_get
        .handle(call_get_request("ORGCALL1", Some(&bearer(API_TOKEN))))
        .await;
    assert_eq!(bare.status(), 404);
    let headers = vec![("authorization".to_string(), bearer(API_TOKEN))];
    let scoped = call_get
        .handle(devstack::server::api_request(
            "GET",
            "/call/{call_id}",
            "/call/ORGCALL1",
            "org_id=acme",
            &headers,
            b"",
        ))
        .await;
    assert_eq!(scoped.status(), 200);
    assert_eq!(json_body(&scoped)["call_id"], "ORGCALL1");

    // A duplicate from acme replays acme's answer and counts for acme.
    let again = stack.deliver_as("ORGCALL1", &token).await;
    assert_eq!(again.status(), 200);
    assert_eq!(json_body(&again)["duplicate"], true);

    // The counters are the calls stream's: let it run, as Lambda would.
    stack.run_calls_stream().await;
    let stats = stack.stats_endpoint();
    let acme = json_body(&stats.handle(keyed("/stats", &acme_key, "")).await);
    assert_eq!(acme["total_processed"], 1);
    assert_eq!(acme["successfully_posted"], 1);
    assert_eq!(acme["duplicates"], 1);
    let globex = json_body(&stats.handle(keyed("/stats", &globex_key, "")).await);
    assert_eq!(globex["total_processed"], 0);
    assert_eq!(globex["duplicates"], 0);
    let deployment = json_body(&stats.handle(stats_request(None)).await);
    assert_eq!(deployment["total_processed"], 1);
    assert_eq!(deployment["duplicates"], 1);
}

#[tokio::test]
async fn revoked_tokens_and_api_keys_are_no_webhook_tokens_and_store_nothing() {
    let stack = Stack::start().await;
    stack.create_org("acme").await;
    stack.create_org("globex").await;
    let (token_id, token) = stack.webhook_token_of("acme").await;

    // An API key is not a webhook token, on either webhook.
    let key = stack.api_key_of("acme").await;
    let refused = stack.deliver_as("KEYCALL", &key).await;
    assert_eq!(refused.status(), 401);
    assert_eq!(json_body(&refused)["code"], "unauthorized");
    let exotel = stack
        .exotel_webhook()
        .handle(exotel_request(
            &exotel_form("KEYCALL", &stack),
            &format!("token={key}"),
            "application/x-www-form-urlencoded",
        ))
        .await;
    assert_eq!(exotel.status(), 401);
    // ...nor the reverse: a webhook token reads nothing.
    let as_key = stack
        .stats_endpoint()
        .handle(keyed("/stats", &token, ""))
        .await;
    assert_eq!(as_key.status(), 200, "not an API key: the public counters");
    let as_bearer_key = stack
        .call_get()
        .handle(keyed("/call/KEYCALL", &token, ""))
        .await;
    assert_eq!(as_bearer_key.status(), 401);
    // The same id and secret under the API-key prefix is not a key either.
    let swapped = token.replacen("cwt_", "cok_", 1);
    let swapped_read = stack
        .stats_endpoint()
        .handle(keyed("/stats", &swapped, ""))
        .await;
    assert_eq!(swapped_read.status(), 401);

    // Exotel with the organisation's token in its callback URL.
    let accepted = stack
        .exotel_webhook()
        .handle(exotel_request(
            &exotel_form("EXOCALL", &stack),
            &format!("token={token}"),
            "application/x-www-form-urlencoded",
        ))
        .await;
    assert_eq!(accepted.status(), 202, "{:?}", json_body(&accepted));
    assert!(stack
        .calls()
        .get(&scoped_call_id("acme", "EXOCALL"))
        .await
        .unwrap()
        .is_some());

    // Another organisation cannot revoke it; acme can, at once.
    let foreign = stack.token_route("DELETE", "globex", Some(&token_id)).await;
    assert_eq!(foreign.status(), 404);
    let revoked = stack.token_route("DELETE", "acme", Some(&token_id)).await;
    assert_eq!(revoked.status(), 200);
    assert_eq!(
        json_body(&revoked),
        json!({"token_id": token_id, "revoked": true})
    );
    let again = stack.token_route("DELETE", "acme", Some(&token_id)).await;
    assert_eq!(again.status(), 200, "revoking twice changes nothing");

    let after = stack.deliver_as("REVOKEDCALL", &token).await;
    assert_eq!(after.status(), 401);
    assert_eq!(json_body(&after)["code"], "unauthorized");
    assert!(stack
        .calls()
        .get(&scoped_call_id("acme", "REVOKEDCALL"))
        .await
        .unwrap()
        .is_none());
    assert!(stack.calls().get("REVOKEDCALL").await.unwrap().is_none());
    assert!(stack.calls().get("KEYCALL").await.unwrap().is_none());

    // The listing: ids and times, never the token or its hash.
    let listed = stack.token_route("GET", "acme", None).await;
    assert_eq!(listed.status(), 200);
    let listed = json_body(&listed);
    let tokens = listed["webhook_tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0]["token_id"], token_id);
    assert!(tokens[0]["revoked_at"].is_string());
    let text = listed.to_string();
    assert!(!text.contains(&token) && !text.contains("key_hash"));
    // Stored hashed, with its purpose.
    let stored = stack.key_store().find(&token_id).await.unwrap().unwrap();
    assert_eq!(stored.purpose, KeyPurpose::Webhook);
    assert!(!stored.key_hash.contains(&token));
    // The admin tool's revoke is for API keys only (tokens are counted per organisation).
    assert!(!stack.key_store().revoke(&token_id).await.unwrap());

    // Unknown organisations and unauthenticated admins.
    assert_eq!(
        stack.token_route("POST", "nobody", None).await.status(),
        404
    );
    assert_eq!(stack.token_route("GET", "nobody", None).await.status(), 404);
    let anonymous = stack
        .webhook_token_admin()
        .handle(devstack::server::api_request(
            "POST",
            "/organisations/{org_id}/webhook-tokens",
            "/organisations/acme/webhook-tokens",
            "",
            &[],
            b"",
        ))
        .await;
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn two_organisations_sending_the_same_call_id_at_once_get_two_calls() {
    let stack = Stack::start().await;
    stack.create_org("acme").await;
    stack.create_org("globex").await;
    let (_, acme_token) = stack.webhook_token_of("acme").await;
    let (_, globex_token) = stack.webhook_token_of("globex").await;

    let (acme, globex) = tokio::join!(
        stack.deliver_as("SHARED1", &acme_token),
        stack.deliver_as("SHARED1", &globex_token),
    );
    assert_eq!(acme.status(), 202, "{:?}", json_body(&acme));
    assert_eq!(globex.status(), 202, "{:?}", json_body(&globex));
    assert!(json_body(&acme).get("duplicate").is_none());
    assert!(json_body(&globex).get("duplicate").is_none());
    assert_eq!(stack.depth("TranscriptionQueue").await, 2, "two jobs");

    stack.run_transcriptions().await;
    stack
        .run_notifications(&stack.notify_worker(vec![stack.slack_webhook()]))
        .await;
    for org in ["acme", "globex"] {
        let record = stack
            .calls()
            .get(&scoped_call_id(org, "SHARED1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.org_id.as_deref(), Some(org));
        assert_eq!(record.status, CallStatus::Notified, "{org}");
    }
    assert_eq!(stack.posts_per_call().get("SHARED1"), Some(&2));
    // The deployment's own call of that id is a third, untouched by either.
    assert!(stack.calls().get("SHARED1").await.unwrap().is_none());
    let deployment = stack.deliver_as("SHARED1", WEBHOOK_TOKEN).await;
    assert_eq!(deployment.status(), 202);
    assert!(json_body(&deployment).get("duplicate").is_none());
}

#[tokio::test]
async fn the_deployment_token_delivers_for_the_default_organisation() {
    let stack = Stack::start().await;
    stack.create_org("main").await;
    let main_key = stack.api_key_of("main").await;
    let mut zapier = stack.zapier();
    zapier.access.default_org = Some("main".into());
    let body = seed_payload(&stack, "MAINCALL").to_string();
    let response = zapier
        .handle(zapier_request(
            body.as_bytes(),
            Some(&bearer(WEBHOOK_TOKEN)),
        ))
        .await;
    assert_eq!(response.status(), 202);
    // The bare id, as before organisations had tokens, now owned by main.
    let record = stack.calls().get("MAINCALL").await.unwrap().unwrap();
    assert_eq!(record.org_id.as_deref(), Some("main"));
    // main's own token shares those keys: the same call is a duplicate.
    let (_, main_token) = stack.webhook_token_of("main").await;
    let again = zapier
        .handle(zapier_request(body.as_bytes(), Some(&bearer(&main_token))))
        .await;
    assert_eq!(again.status(), 200);
    assert_eq!(json_body(&again)["duplicate"], true);

    let mut call_get = stack.call_get();
    call_get.default_org = Some("main".into());
    let found = call_get
        .handle(keyed("/call/MAINCALL", &main_key, ""))
        .await;
    assert_eq!(found.status(), 200);
    stack.run_calls_stream().await;
    let counters = json_body(
        &stack
            .stats_endpoint()
            .handle(keyed("/stats", &main_key, ""))
            .await,
    );
    assert_eq!(counters["total_processed"], 1);
    assert_eq!(counters["duplicates"], 1);
}

#[tokio::test]
async fn live_tokens_are_bounded_even_when_created_at_once() {
    let stack = Stack::start().await;
    stack.create_org("acme").await;
    let live = MAX_LIVE_TOKENS as usize;
    let mut created = Vec::new();
    for _ in 0..live - 2 {
        let response = stack.token_route("POST", "acme", None).await;
        assert_eq!(response.status(), 201);
        created.push(json_body(&response));
    }
    // The last two places, claimed by four at once: two win, two are refused.
    let responses = join_all((0..4).map(|_| stack.token_route("POST", "acme", None))).await;
    created.extend(
        responses
            .iter()
            .filter(|r| r.status() == 201)
            .map(json_body),
    );
    let refused: Vec<&Response<Body>> = responses.iter().filter(|r| r.status() == 409).collect();
    assert_eq!(created.len(), live);
    assert_eq!(refused.len(), 2);
    assert_eq!(json_body(refused[0])["code"], "webhook_token_limit");

    // Revoking one makes room for exactly one more.
    let first = created[0]["token_id"].as_str().unwrap();
    assert_eq!(
        stack
            .token_route("DELETE", "acme", Some(first))
            .await
            .status(),
        200
    );
    assert_eq!(stack.token_route("POST", "acme", None).await.status(), 201);
    assert_eq!(stack.token_route("POST", "acme", None).await.status(), 409);
    let listed = json_body(&stack.token_route("GET", "acme", None).await);
    let tokens = listed["webhook_tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), MAX_LIVE_TOKENS as usize + 1);
    assert_eq!(
        tokens
            .iter()
            .filter(|t| t.get("revoked_at").is_none())
            .count(),
        MAX_LIVE_TOKENS as usize
    );
}
