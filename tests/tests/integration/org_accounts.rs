//! Organisations' own provider accounts (issue 19): set through the admin
//! routes into Secrets Manager (moto), used for the organisation's calls
//! (two fake Twilio accounts plus the deployment's), and the key to its
//! callbacks. Read with a TTL of zero, so a rotation shows at once.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use devstack::fakes::{twilio_signature, FakeTwilio};
use lambda_http::{Body, Request, Response};
use shared::api::Route;
use shared::base::config::Secret;
use shared::flows::outbound::{Placement, Providers};
use shared::flows::provider_accounts::ProviderAccountsAdmin;
use shared::providers::org_accounts::{OrgAccountSettings, OrgAccounts, OrgTwilioTokens};
use shared::providers::twilio::{TwilioClient, TwilioWebhookAuth};
use shared::store::api_keys::DynamoApiKeyStore;
use shared::store::org_secrets::{
    OrgSecretError, OrgSecretStore, SecretKind, SecretsManagerOrgSecrets,
};
use shared::store::rate_limits::DynamoRateLimiter;
use shared::store::tenancy::TenancyStore;

use crate::support::*;

const ADMIN_TOKEN: &str = "admin-test-token-0123456789";
const PUBLIC_BASE: &str = "https://callops.example.com";
const CUSTOMER: &str = "+14155552671";
const CALLER_ID: &str = "+14155552672";
/// `INBOUND_ORG_ID`: the organisation that may use the deployment's numbers.
const DEFAULT_ORG: &str = "acme";
const DEPLOYMENT_SID: &str = "ACdddddddddddddddddddddddddddddddd";
const DEPLOYMENT_TOKEN: &str = "deployment-token-0123456789abcdef";
const SID_A: &str = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const TOKEN_A: &str = "account-a-token-0123456789abcdef";
const SID_B: &str = "ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const TOKEN_B: &str = "account-b-token-0123456789abcdef";

/// Fails reads of one organisation's secrets (an outage, a denial) and
/// passes everything else to moto.
pub(crate) struct Failing {
    pub(crate) inner: SecretsManagerOrgSecrets,
    pub(crate) org: String,
}

#[async_trait]
impl OrgSecretStore for Failing {
    async fn read(&self, org_id: &str, kind: SecretKind) -> Result<Option<Secret>, OrgSecretError> {
        if org_id == self.org {
            return Err(OrgSecretError::Unavailable {
                name: format!("{}/{org_id}/{}", self.inner.prefix, kind.as_str()),
                reason: "ThrottlingException".into(),
            });
        }
        self.inner.read(org_id, kind).await
    }
    async fn write(&self, o: &str, k: SecretKind, v: &Secret) -> Result<(), OrgSecretError> {
        self.inner.write(o, k, v).await
    }
    async fn changed_at(&self, o: &str, k: SecretKind) -> Result<Option<String>, OrgSecretError> {
        self.inner.changed_at(o, k).await
    }
    async fn delete(&self, o: &str, k: SecretKind) -> Result<bool, OrgSecretError> {
        self.inner.delete(o, k).await
    }
}

/// Log lines written while a test runs (this thread's subscriber).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Every log line of this test binary from now on (INFO and above, as
    /// in Lambda), kept in memory. Global: a scoped subscriber misses
    /// events whose callsites other test threads registered first.
    fn capture() -> Logs {
        static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = Logs::default();
            let writer = logs.clone();
            tracing::subscriber::set_global_default(
                tracing_subscriber::fmt()
                    .with_writer(move || writer.clone())
                    .with_max_level(tracing::Level::INFO)
                    .finish(),
            )
            .expect("no other global subscriber in the integration tests");
            logs
        })
        .clone()
    }
}

pub(crate) struct Tenants {
    pub(crate) stack: Stack,
    pub(crate) twilio: FakeTwilio,
    pub(crate) secrets: Arc<SecretsManagerOrgSecrets>,
    pub(crate) sm: aws_sdk_secretsmanager::Client,
}

impl Tenants {
    pub(crate) async fn start() -> Self {
        let stack = Stack::start().await;
        let twilio = FakeTwilio::start(DEPLOYMENT_SID, DEPLOYMENT_TOKEN);
        twilio.add_account(SID_A, TOKEN_A);
        twilio.add_account(SID_B, TOKEN_B);
        let sm = aws_sdk_secretsmanager::Client::new(&local().sdk_config().await);
        let prefix = format!("callops/t{}/org", uuid::Uuid::new_v4().simple());
        Self {
            stack,
            twilio,
            secrets: Arc::new(SecretsManagerOrgSecrets {
                client: sm.clone(),
                prefix,
            }),
            sm,
        }
    }

    pub(crate) fn admin(&self) -> ProviderAccountsAdmin {
        ProviderAccountsAdmin {
            token: Secret::new(ADMIN_TOKEN),
            directory: Arc::new(self.stack.directory()),
            secrets: self.secrets.clone(),
            tenancy: Arc::new(self.stack.tenancy()),
        }
    }

    pub(crate) fn org_accounts(&self, store: Arc<dyn OrgSecretStore>) -> Arc<OrgAccounts> {
        Arc::new(OrgAccounts::new(
            store,
            OrgAccountSettings {
                ttl: Duration::ZERO,
                capacity: 100,
                http: reqwest::Client::new(),
                twilio_base_url: self.twilio.base_url().to_string(),
                elevenlabs_base_url: "http://127.0.0.1:9".into(),
            },
        ))
    }

    fn deployment_twilio(&self) -> TwilioClient {
        TwilioClient {
            http: reqwest::Client::new(),
            base_url: self.twilio.base_url().to_string(),
            account_sid: DEPLOYMENT_SID.into(),
            auth_token: Secret::new(DEPLOYMENT_TOKEN),
            api_key: None,
        }
    }

    fn initiate(&self, orgs: Arc<OrgAccounts>) -> calls_initiate::CallsInitiate {
        calls_initiate::CallsInitiate {
            placement: Placement {
                access: shared::api::access::KeyedAccess {
                    api_keys: Arc::new(self.api_keys()),
                    rate_limiter: Arc::new(DynamoRateLimiter {
                        client: self.stack.dynamo.clone(),
                        table: self.stack.resources.table("IdempotencyTable"),
                        window_secs: 86_400,
                    }),
                    per_window: 100,
                },
                directory: Arc::new(self.stack.directory()),
                calls: Arc::new(self.stack.outbound_calls()),
                providers: Providers {
                    twilio: Some(self.deployment_twilio()),
                    twilio_phone_number: Some(CALLER_ID.into()),
                    elevenlabs: None,
                    public_base_url: PUBLIC_BASE.into(),
                    org_accounts: Some(orgs),
                },
                tenancy: Arc::new(self.stack.tenancy()),
                default_org: Some(DEFAULT_ORG.into()),
                dnc: Arc::new(self.stack.dnc()),
            },
        }
    }

    fn callback_auth(&self, orgs: Arc<OrgAccounts>) -> TwilioWebhookAuth {
        TwilioWebhookAuth {
            auth_token: Secret::new(DEPLOYMENT_TOKEN),
            public_base_url: PUBLIC_BASE.into(),
            account_sid: Some(DEPLOYMENT_SID.into()),
            accounts: Some(Arc::new(OrgTwilioTokens {
                tenancy: Arc::new(self.stack.tenancy()),
                orgs,
            })),
        }
    }

    fn status(&self, orgs: Arc<OrgAccounts>) -> twilio_status::TwilioStatus {
        twilio_status::TwilioStatus {
            twilio_auth: self.callback_auth(orgs),
            intake: self.stack.provider_event_intake(),
            calls: Arc::new(self.stack.outbound_calls()),
        }
    }

    fn api_keys(&self) -> DynamoApiKeyStore {
        DynamoApiKeyStore::new(
            self.stack.dynamo.clone(),
            self.stack.resources.table("ApiKeysTable"),
        )
    }

    /// An organisation with a Twilio assistant and an API key: (key, assistant id).
    /// `acme` is the default organisation (`INBOUND_ORG_ID`) and calls from
    /// the deployment's number; the others own a number each in the registry.
    pub(crate) async fn organisation(&self, org_id: &str) -> (String, u64) {
        let caller_number = match org_id {
            DEFAULT_ORG => CALLER_ID.to_string(),
            other => {
                let number = format!("+1415555{:04}", 3000 + other.len());
                let key = shared::store::tenancy::Kind::Voice.key(&number);
                self.stack.tenancy().claim(&key, other).await.unwrap();
                number
            }
        };
        let key = self.stack.seed_organisation(org_id, 36_000, 10).await;
        let assistant = self
            .stack
            .seed_twilio_assistant(org_id, &caller_number)
            .await;
        (key, assistant)
    }

    pub(crate) async fn admin_call(&self, method: &str, path: &str, body: &str) -> Response<Body> {
        let route = if path.ends_with("/providers") {
            "/organisations/{org_id}/providers"
        } else {
            "/organisations/{org_id}/providers/{provider}"
        };
        let headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("authorization".to_string(), bearer(ADMIN_TOKEN)),
        ];
        let request =
            devstack::server::api_request(method, route, path, "", &headers, body.as_bytes());
        self.admin().handle(request).await
    }

    async fn put_twilio(&self, org_id: &str, sid: &str, token: &str) -> Response<Body> {
        let body = serde_json::json!({"account_sid": sid, "auth_token": token});
        self.admin_call(
            "PUT",
            &format!("/organisations/{org_id}/providers/twilio"),
            &body.to_string(),
        )
        .await
    }

    async fn place(&self, orgs: &Arc<OrgAccounts>, key: &str, assistant: u64) -> Response<Body> {
        let body = serde_json::json!({
            "assistant_id": assistant, "to_phone_number": CUSTOMER, "agenda": "Follow up on the demo."
        });
        let headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("x-api-key".to_string(), key.to_string()),
        ];
        let request = devstack::server::api_request(
            "POST",
            "/calls/initiate",
            "/calls/initiate",
            "",
            &headers,
            body.to_string().as_bytes(),
        );
        self.initiate(Arc::clone(orgs)).handle(request).await
    }
}

/// A Twilio form POST to `route` (with `query`), signed with `token` for
/// this stack's public URL, as Twilio sends it.
fn signed_form(route: &str, query: &str, params: &[(&str, &str)], token: &str) -> Request {
    let url = match query {
        "" => format!("{PUBLIC_BASE}{route}"),
        query => format!("{PUBLIC_BASE}{route}?{query}"),
    };
    let signature = twilio_signature(token, &url, params);
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
    devstack::server::api_request("POST", route, route, query, &headers, body.as_bytes())
}

/// A status callback as account `sid` would send it, signed with `token`.
fn status_callback(sid: &str, token: &str) -> Request {
    let params = [
        ("CallSid", "CA0123456789abcdef0123456789abcdef"),
        ("AccountSid", sid),
        ("CallStatus", "ringing"),
    ];
    signed_form("/twilio/status", "call=oc_0123456789abcdef", &params, token)
}

fn text(response: &Response<Body>) -> String {
    String::from_utf8_lossy(response.body().as_ref()).into_owned()
}

#[tokio::test]
async fn each_organisations_calls_go_through_its_own_account_and_no_secret_comes_back() {
    let logs = Logs::capture();
    let t = Tenants::start().await;
    let (key_a, assistant_a) = t.organisation("acme").await;
    let (key_b, assistant_b) = t.organisation("globex").await;
    let (key_c, assistant_c) = t.organisation("initech").await;
    let mut bodies = Vec::new();
    for (org, sid, token) in [("acme", SID_A, TOKEN_A), ("globex", SID_B, TOKEN_B)] {
        let response = t.put_twilio(org, sid, token).await;
        assert_eq!(response.status(), 200, "{}", text(&response));
        assert_eq!(json_body(&response)["provider"]["account_sid"], sid);
        bodies.push(text(&response));
    }
    // Another organisation cannot take an account that is already someone's.
    let taken = t.put_twilio("initech", SID_A, TOKEN_A).await;
    assert_eq!(taken.status(), 409, "{}", text(&taken));
    assert_eq!(json_body(&taken)["code"], "account_in_use");
    assert!(!text(&taken).contains("acme"), "never names the owner");
    bodies.push(text(&taken));

    let orgs = t.org_accounts(t.secrets.clone());
    for (key, assistant) in [
        (&key_a, assistant_a),
        (&key_b, assistant_b),
        (&key_c, assistant_c),
    ] {
        let response = t.place(&orgs, key, assistant).await;
        assert_eq!(response.status(), 200, "{}", text(&response));
        bodies.push(text(&response));
    }
    assert_eq!(
        t.twilio.created_calls_of(SID_A).len(),
        1,
        "acme's call, on A only"
    );
    assert_eq!(
        t.twilio.created_calls_of(SID_B).len(),
        1,
        "globex's call, on B only"
    );
    assert_eq!(
        t.twilio.created_calls_of(DEPLOYMENT_SID).len(),
        1,
        "initech has no account of its own: the deployment's"
    );

    let listed = t
        .admin_call("GET", "/organisations/acme/providers", "")
        .await;
    assert_eq!(listed.status(), 200);
    let listed_json = json_body(&listed);
    assert_eq!(listed_json["providers"][0]["provider"], "twilio");
    assert_eq!(listed_json["providers"][0]["configured"], true);
    assert_eq!(listed_json["providers"][0]["account_sid"], SID_A);
    assert!(listed_json["providers"][0]["updated_at"].is_string());
    assert_eq!(listed_json["providers"][1]["configured"], false);
    bodies.push(text(&listed));

    let logged = logs.text();
    assert!(
        logged.contains("organisation's provider account set"),
        "{logged}"
    );
    for secret in [TOKEN_A, TOKEN_B] {
        for body in &bodies {
            assert!(!body.contains(secret), "a response carries a token: {body}");
        }
        assert!(
            !logged.contains(secret),
            "a log line carries a token: {logged}"
        );
    }
}

#[tokio::test]
async fn callbacks_are_verified_with_the_token_of_the_account_that_sent_them() {
    let t = Tenants::start().await;
    t.organisation("acme").await;
    t.organisation("globex").await;
    assert_eq!(t.put_twilio("acme", SID_A, TOKEN_A).await.status(), 200);
    assert_eq!(t.put_twilio("globex", SID_B, TOKEN_B).await.status(), 200);
    let orgs = t.org_accounts(t.secrets.clone());
    let status = t.status(Arc::clone(&orgs));

    let ok = status.handle(status_callback(SID_A, TOKEN_A)).await;
    assert!(ok.status().is_success(), "{}", text(&ok));
    let verified = t
        .callback_auth(Arc::clone(&orgs))
        .verify_account(&status_callback(SID_A, TOKEN_A))
        .await
        .unwrap();
    assert_eq!(verified.org_id.as_deref(), Some("acme"));
    let deployment = t
        .callback_auth(Arc::clone(&orgs))
        .verify_account(&status_callback(DEPLOYMENT_SID, DEPLOYMENT_TOKEN))
        .await
        .unwrap();
    assert_eq!(deployment.org_id, None);

    // Account A's call, signed with account B's token: refused.
    let crossed = status.handle(status_callback(SID_A, TOKEN_B)).await;
    assert_eq!(crossed.status(), 403, "{}", text(&crossed));
    // An account nobody has, even signed with the deployment's token.
    let unknown = "ACeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";
    let stranger = status
        .handle(status_callback(unknown, DEPLOYMENT_TOKEN))
        .await;
    assert_eq!(stranger.status(), 403);
    assert_eq!(
        json_body(&stranger),
        json_body(&crossed),
        "refused like a bad signature"
    );
    // Once acme's account is removed, its callbacks are an unknown account's.
    let removed = t
        .admin_call("DELETE", "/organisations/acme/providers/twilio", "")
        .await;
    assert_eq!(removed.status(), 200, "{}", text(&removed));
    let gone = status.handle(status_callback(SID_A, TOKEN_A)).await;
    assert_eq!(gone.status(), 403);
    let again = t
        .admin_call("DELETE", "/organisations/acme/providers/twilio", "")
        .await;
    assert_eq!(again.status(), 404);
    // The released account may now be another organisation's.
    t.organisation("initech").await;
    assert_eq!(t.put_twilio("initech", SID_A, TOKEN_A).await.status(), 200);
}

#[tokio::test]
async fn a_rotated_token_is_used_for_calls_and_callbacks_without_a_cold_start() {
    let t = Tenants::start().await;
    let (key, assistant) = t.organisation("acme").await;
    assert_eq!(t.put_twilio("acme", SID_A, TOKEN_A).await.status(), 200);
    let orgs = t.org_accounts(t.secrets.clone());
    let status = t.status(Arc::clone(&orgs));
    assert!(status
        .handle(status_callback(SID_A, TOKEN_A))
        .await
        .status()
        .is_success());

    // Rotate at Twilio, then here.
    let rotated = "account-a-rotated-0123456789abcd";
    t.twilio.add_account(SID_A, rotated);
    assert_eq!(t.put_twilio("acme", SID_A, rotated).await.status(), 200);
    let old = status.handle(status_callback(SID_A, TOKEN_A)).await;
    assert_eq!(old.status(), 403, "the old token no longer verifies");
    assert!(status
        .handle(status_callback(SID_A, rotated))
        .await
        .status()
        .is_success());
    let placed = t.place(&orgs, &key, assistant).await;
    assert_eq!(placed.status(), 200, "{}", text(&placed));
    assert_eq!(t.twilio.created_calls_of(SID_A).len(), 1);
}

#[tokio::test]
async fn an_unreadable_account_fails_its_organisation_only_and_names_the_setting() {
    let t = Tenants::start().await;
    let (key_a, assistant_a) = t.organisation("acme").await;
    let (key_b, assistant_b) = t.organisation("globex").await;
    let (key_c, assistant_c) = t.organisation("initech").await;
    assert_eq!(t.put_twilio("acme", SID_A, TOKEN_A).await.status(), 200);
    assert_eq!(t.put_twilio("globex", SID_B, TOKEN_B).await.status(), 200);
    let failing = Arc::new(Failing {
        inner: SecretsManagerOrgSecrets {
            client: t.sm.clone(),
            prefix: t.secrets.prefix.clone(),
        },
        org: "acme".into(),
    });
    let orgs = t.org_accounts(failing);

    let refused = t.place(&orgs, &key_a, assistant_a).await;
    assert_eq!(refused.status(), 503, "{}", text(&refused));
    let body = json_body(&refused);
    assert_eq!(body["code"], "org_account_unavailable");
    assert_eq!(
        body["detail"],
        "organisation acme's Twilio account could not be read; retry shortly"
    );
    assert!(!text(&refused).contains(TOKEN_A));
    assert!(t.twilio.created_calls_of(SID_A).is_empty());
    assert!(
        t.twilio.created_calls_of(DEPLOYMENT_SID).is_empty(),
        "no fallback"
    );
    // acme's callbacks cannot be checked now: 503, so Twilio retries.
    let status = t.status(Arc::clone(&orgs));
    assert_eq!(
        status
            .handle(status_callback(SID_A, TOKEN_A))
            .await
            .status(),
        503
    );

    // The others are untouched.
    let other = t.place(&orgs, &key_b, assistant_b).await;
    assert_eq!(other.status(), 200, "{}", text(&other));
    assert_eq!(t.twilio.created_calls_of(SID_B).len(), 1);

    // A secret that is not an account (changed by hand): 502, never its text.
    let name = format!("{}/initech/twilio", t.secrets.prefix);
    t.sm.create_secret()
        .name(&name)
        .secret_string("{\"account_sid\": \"not-a-sid\", \"auth_token\": \"hand-typed-secret\"}")
        .send()
        .await
        .unwrap();
    let malformed = t.place(&orgs, &key_c, assistant_c).await;
    assert_eq!(malformed.status(), 502, "{}", text(&malformed));
    assert_eq!(json_body(&malformed)["code"], "org_account_unreadable");
    assert!(text(&malformed).contains("initech's Twilio account"));
    assert!(!text(&malformed).contains("hand-typed-secret"));
}

#[tokio::test]
async fn the_admin_routes_check_the_token_the_organisation_and_the_shape() {
    let t = Tenants::start().await;
    t.organisation("acme").await;
    let unauthenticated = devstack::server::api_request(
        "GET",
        "/organisations/{org_id}/providers",
        "/organisations/acme/providers",
        "",
        &[],
        b"",
    );
    assert_eq!(t.admin().handle(unauthenticated).await.status(), 401);
    let missing = t.put_twilio("nobody", SID_A, TOKEN_A).await;
    assert_eq!(missing.status(), 404);
    for (body, field) in [
        (
            serde_json::json!({"account_sid": "AC123", "auth_token": TOKEN_A}),
            "account_sid",
        ),
        (
            serde_json::json!({"account_sid": SID_A, "auth_token": "short"}),
            "auth_token",
        ),
        (
            serde_json::json!({"account_sid": SID_A, "auth_token": TOKEN_A, "api_key_sid": "SKnope", "api_key_secret": "api-key-secret-value"}),
            "api_key_sid",
        ),
    ] {
        let response = t
            .admin_call(
                "PUT",
                "/organisations/acme/providers/twilio",
                &body.to_string(),
            )
            .await;
        assert_eq!(response.status(), 422, "{}", text(&response));
        assert!(json_body(&response)["detail"]
            .as_str()
            .unwrap()
            .contains(field));
        assert!(!text(&response).contains(TOKEN_A));
    }
    let unknown = t
        .admin_call("PUT", "/organisations/acme/providers/exotel", "{}")
        .await;
    assert_eq!(unknown.status(), 404);
    // Nothing was stored or claimed by the refused requests.
    let listed = json_body(
        &t.admin_call("GET", "/organisations/acme/providers", "")
            .await,
    );
    assert_eq!(listed["providers"][0]["configured"], false);
    assert!(t
        .stack
        .tenancy()
        .list("acme", "twilio#")
        .await
        .unwrap()
        .is_empty());
    // ElevenLabs keys are kept the same way.
    let eleven = t
        .admin_call(
            "PUT",
            "/organisations/acme/providers/elevenlabs",
            "{\"api_key\": \"xi-acme-key-0123456789\"}",
        )
        .await;
    assert_eq!(eleven.status(), 200, "{}", text(&eleven));
    assert!(!text(&eleven).contains("xi-acme-key-0123456789"));
}

#[tokio::test]
async fn whatsapp_messages_are_sent_from_the_organisations_own_account() {
    let t = Tenants::start().await;
    let (key_a, _) = t.organisation("acme").await;
    let (key_c, _) = t.organisation("initech").await;
    // initech sends from its own WhatsApp sender; acme from the deployment's.
    let sender = shared::store::tenancy::Kind::WhatsApp.key("+14155550177");
    t.stack.tenancy().claim(&sender, "initech").await.unwrap();
    assert_eq!(t.put_twilio("acme", SID_A, TOKEN_A).await.status(), 200);
    let orgs = t.org_accounts(t.secrets.clone());
    let send = whatsapp_send::WhatsAppSend {
        access: shared::api::access::KeyedAccess {
            api_keys: Arc::new(t.api_keys()),
            rate_limiter: Arc::new(DynamoRateLimiter {
                client: t.stack.dynamo.clone(),
                table: t.stack.resources.table("IdempotencyTable"),
                window_secs: 86_400,
            }),
            per_window: 100,
        },
        sender: shared::flows::whatsapp::WhatsAppSender {
            store: Arc::new(shared::store::whatsapp::DynamoWhatsAppStore {
                client: t.stack.dynamo.clone(),
                table: t.stack.resources.table("WhatsAppTable"),
                retention: Duration::from_secs(86_400),
            }),
            twilio: shared::providers::org_accounts::TwilioAccounts {
                deployment: t.deployment_twilio(),
                orgs: Some(orgs),
            },
            from: "whatsapp:+14155238886".into(),
            status_callback: None,
            twilio_timeout: Duration::from_secs(5),
            tenancy: Arc::new(t.stack.tenancy()),
            default_org: Some(DEFAULT_ORG.into()),
        },
    };
    for key in [&key_a, &key_c] {
        let headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("x-api-key".to_string(), key.to_string()),
        ];
        let body = serde_json::json!({"to": CUSTOMER, "message": "Your order shipped."});
        let request = devstack::server::api_request(
            "POST",
            "/whatsapp/send",
            "/whatsapp/send",
            "",
            &headers,
            body.to_string().as_bytes(),
        );
        let response = send.handle(request).await;
        assert_eq!(response.status(), 200, "{}", text(&response));
    }
    assert_eq!(t.twilio.sent_messages_of(SID_A).len(), 1, "acme's, on A");
    assert_eq!(
        t.twilio.sent_messages_of(DEPLOYMENT_SID).len(),
        1,
        "initech's, on the deployment's"
    );
    assert!(t.twilio.sent_messages_of(SID_B).is_empty());
}

/// A WhatsApp message to `to`, from account `sid`, signed with `token`.
fn whatsapp_message(sid: &str, token: &str, message_sid: &str, to: &str) -> Request {
    let params = [
        ("MessageSid", message_sid),
        ("AccountSid", sid),
        ("From", "whatsapp:+14155552671"),
        ("To", to),
        ("WaId", "14155552671"),
        ("Body", "hello"),
        ("NumMedia", "0"),
    ];
    signed_form("/whatsapp/message", "", &params, token)
}

#[tokio::test]
async fn an_organisations_account_speaks_only_for_its_own_numbers() {
    let t = Tenants::start().await;
    t.organisation("acme").await;
    t.organisation("globex").await;
    assert_eq!(t.put_twilio("acme", SID_A, TOKEN_A).await.status(), 200);
    assert_eq!(t.put_twilio("globex", SID_B, TOKEN_B).await.status(), 200);
    let globex_sender = "+14155550188";
    t.stack
        .tenancy()
        .claim(
            &shared::store::tenancy::Kind::WhatsApp.key(globex_sender),
            "globex",
        )
        .await
        .unwrap();
    let orgs = t.org_accounts(t.secrets.clone());
    let store = Arc::new(shared::store::whatsapp::DynamoWhatsAppStore {
        client: t.stack.dynamo.clone(),
        table: t.stack.resources.table("WhatsAppTable"),
        retention: Duration::from_secs(86_400),
    });
    let route = whatsapp_message::WhatsAppMessage {
        twilio_auth: t.callback_auth(orgs),
        intake: shared::flows::whatsapp::WhatsAppIntake {
            store,
            tenancy: Arc::new(t.stack.tenancy()),
            // Even with a fallback, a number another organisation owns is
            // not acme's to answer for.
            inbound_org: Some(DEFAULT_ORG.into()),
        },
    };
    let to = format!("whatsapp:{globex_sender}");
    // Signed by acme's own account, for globex's sender: dropped, nothing stored.
    let crossed = route
        .handle(whatsapp_message(
            SID_A,
            TOKEN_A,
            "SM00000000000000000000000000000001",
            &to,
        ))
        .await;
    assert_eq!(crossed.status(), 200, "{}", text(&crossed));
    assert_eq!(t.stack.item_count("WhatsAppTable").await, 0);
    assert_eq!(t.stack.depth("WhatsAppReplyQueue").await, 0);
    // Signed by globex's account: globex's conversation, one reply job.
    let own = route
        .handle(whatsapp_message(
            SID_B,
            TOKEN_B,
            "SM00000000000000000000000000000002",
            &to,
        ))
        .await;
    assert_eq!(own.status(), 200, "{}", text(&own));
    assert_eq!(t.stack.depth("WhatsAppReplyQueue").await, 1);
    assert!(t.stack.item_count("WhatsAppTable").await > 0);
}
