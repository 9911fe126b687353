//! `shared/openapi.json` against what it describes: the HttpApi events of
//! template.yaml (both ways), its own examples (each validates against its
//! schema, draft 2020-12), its rules (3.1, security, the common error
//! shape), and real responses of the handlers, validated against the schema
//! the document gives for their route and status. A route added, a field
//! renamed or an error status introduced without the document fails here.
//! The `webhooks` section (the events sent to organisations' endpoints) is
//! held to its own rules here; `webhook_payloads.rs` checks the events the
//! code builds against it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use devstack::fakes::FakeLiveKit;
use lambda_http::{Body, Request, Response};
use serde_json::{json, Value};
use shared::api::Route;
use shared::base::config::Secret;
use shared::flows::webhooks::EVENT_TYPES;
use shared::store::api_keys::{self, ApiKeyStore, DynamoApiKeyStore};

use crate::support::*;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The only operations anyone may call without a credential.
const PUBLIC: [(&str, &str); 3] = [
    ("GET", "/health"),
    ("GET", "/openapi.json"),
    ("GET", "/stats"),
];

/// Error statuses whose body is not the common error shape: `/health`
/// answers 503 with the health document itself (seed 001).
const NOT_ERROR_SHAPED: [(&str, &str, &str); 1] = [("GET", "/health", "503")];

pub(crate) fn document() -> Value {
    serde_json::from_str(::openapi::DOCUMENT).expect("shared/openapi.json is JSON")
}

/// Every (METHOD, path) with its operation object.
fn operations(doc: &Value) -> BTreeMap<(String, String), &Value> {
    let mut found = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                found.insert((method.to_uppercase(), path.clone()), operation);
            }
        }
    }
    found
}

/// Every (METHOD, `webhooks/{event type}`) of the `webhooks` section with
/// its operation object: the requests callops sends, not routes it serves.
fn webhook_operations(doc: &Value) -> BTreeMap<(String, String), &Value> {
    let mut found = BTreeMap::new();
    for (name, item) in doc["webhooks"].as_object().expect("webhooks") {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                found.insert(
                    (method.to_uppercase(), format!("webhooks/{name}")),
                    operation,
                );
            }
        }
    }
    found
}

/// The (METHOD, path) of every HttpApi event of every function in template.yaml.
fn template_routes() -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(devstack::repo_root().join("template.yaml")).unwrap();
    let template: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let mut routes = BTreeSet::new();
    for (_, resource) in template["Resources"].as_mapping().expect("Resources") {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let Some(events) = resource["Properties"]["Events"].as_mapping() else {
            continue;
        };
        for (_, event) in events {
            if event["Type"].as_str() == Some("HttpApi") {
                let properties = &event["Properties"];
                routes.insert((
                    properties["Method"].as_str().unwrap().to_uppercase(),
                    properties["Path"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    routes
}

/// Follows local `$ref`s (responses, examples, parameters) to the object.
pub(crate) fn resolve<'a>(doc: &'a Value, mut value: &'a Value) -> &'a Value {
    while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{reference}: only local $refs are used"));
        value = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("{reference} resolves to nothing"));
    }
    value
}

/// A draft 2020-12 validator for `schema`, whose `$ref`s point into the
/// document's `components` (carried along under the same name).
pub(crate) fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let mut root = schema.clone();
    root.as_object_mut()
        .expect("schemas are objects")
        .insert("components".into(), doc["components"].clone());
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("schema does not compile: {e}\n{schema:#}"))
}

pub(crate) fn errors_of(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// The named examples of a media type, `example` included.
fn examples_of<'a>(doc: &'a Value, media: &'a Value) -> Vec<(String, &'a Value)> {
    let mut found = Vec::new();
    if let Some(value) = media.get("example") {
        found.push(("example".to_string(), value));
    }
    if let Some(named) = media.get("examples").and_then(Value::as_object) {
        for (name, example) in named {
            let example = resolve(doc, example);
            let value = example
                .get("value")
                .unwrap_or_else(|| panic!("example {name} has no inline value"));
            found.push((name.clone(), value));
        }
    }
    found
}

#[test]
fn every_template_route_is_documented_and_every_documented_route_exists() {
    let doc = document();
    let documented: BTreeSet<(String, String)> = operations(&doc).into_keys().collect();
    let template = template_routes();
    assert!(template.len() >= 40, "template routes: {template:?}");
    let undocumented: Vec<_> = template.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&template).collect();
    assert!(
        undocumented.is_empty(),
        "HttpApi events missing from shared/openapi.json: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "shared/openapi.json documents routes template.yaml does not have: {unrouted:?}"
    );
}

#[test]
fn every_example_validates_against_its_schema() {
    let doc = document();
    let mut checked = 0;
    let mut failures = Vec::new();
    // The events callops sends show theirs as much as the routes it serves.
    let every = operations(&doc).into_iter().chain(webhook_operations(&doc));
    for ((method, path), operation) in every {
        let mut media_types = Vec::new();
        if let Some(body) = operation.get("requestBody") {
            let body = resolve(&doc, body);
            for (content_type, media) in body["content"].as_object().unwrap() {
                media_types.push(("request".to_string(), content_type.clone(), media));
            }
        }
        for (status, response) in operation["responses"].as_object().unwrap() {
            let response = resolve(&doc, response);
            for (content_type, media) in response
                .get("content")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                media_types.push((status.clone(), content_type.clone(), media));
            }
        }
        for (place, content_type, media) in media_types {
            let at = format!("{method} {path} {place} {content_type}");
            let schema = media
                .get("schema")
                .unwrap_or_else(|| panic!("{at}: no schema"));
            let examples = examples_of(&doc, media);
            // Every request body and success response shows one.
            if place == "request" || place.starts_with('2') {
                assert!(!examples.is_empty(), "{at}: no example");
            }
            let validator = validator(&doc, schema);
            for (name, value) in examples {
                checked += 1;
                let errors = errors_of(&validator, value);
                if !errors.is_empty() {
                    failures.push(format!("{at} example {name}: {errors:?}"));
                }
            }
        }
        for parameter in operation
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let parameter = resolve(&doc, parameter);
            if let Some(example) = parameter.get("example") {
                checked += 1;
                let errors = errors_of(&validator(&doc, &parameter["schema"]), example);
                if !errors.is_empty() {
                    failures.push(format!(
                        "{method} {path} parameter {}: {errors:?}",
                        parameter["name"]
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // One per request body and success response at least, and most errors.
    assert!(checked > 200, "only {checked} examples checked");
}

/// Every `$ref` anywhere in the document points at something.
fn refs_resolve(doc: &Value, value: &Value, broken: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
                let target = reference.strip_prefix('#').and_then(|p| doc.pointer(p));
                if target.is_none() {
                    broken.push(reference.to_string());
                }
            }
            map.values().for_each(|v| refs_resolve(doc, v, broken));
        }
        Value::Array(items) => items.iter().for_each(|v| refs_resolve(doc, v, broken)),
        _ => {}
    }
}

/// Whether a response schema is the common error shape: `Error` itself, or
/// a component that is `Error` plus fields (`allOf` with it).
fn is_error_shaped(doc: &Value, schema: &Value) -> bool {
    const ERROR: &str = "#/components/schemas/Error";
    match schema.get("$ref").and_then(Value::as_str) {
        Some(ERROR) => true,
        Some(_) => is_error_shaped(doc, resolve(doc, schema)),
        None => schema["allOf"]
            .as_array()
            .is_some_and(|parts| parts.iter().any(|p| p["$ref"] == ERROR)),
    }
}

#[test]
fn the_document_is_openapi_3_1_with_security_and_the_common_error_shape() {
    let doc = document();
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1."), "openapi: {version}");
    assert_eq!(
        doc["jsonSchemaDialect"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    let mut broken = Vec::new();
    refs_resolve(&doc, &doc, &mut broken);
    assert!(broken.is_empty(), "unresolved $refs: {broken:?}");

    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    let error_schema = &doc["components"]["schemas"]["Error"];
    assert_eq!(error_schema["required"], json!(["detail", "code"]));

    let mut public = BTreeSet::new();
    let mut operation_ids = BTreeSet::new();
    for ((method, path), operation) in operations(&doc) {
        let at = format!("{method} {path}");
        let id = operation["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{at}: no operationId"));
        assert!(
            operation_ids.insert(id.to_string()),
            "{at}: operationId {id} used twice"
        );

        let responses = operation["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{at}: no responses"));
        // A redirect (3xx) is the success of a link a person opens.
        assert!(
            responses
                .keys()
                .any(|status| status.starts_with('2') || status.starts_with('3')),
            "{at}: no success response"
        );

        let security = operation["security"].as_array().unwrap_or_else(|| {
            panic!("{at}: says nothing about security (public routes say `[]`)")
        });
        if security.is_empty() {
            public.insert((method.clone(), path.clone()));
        }
        for requirement in security {
            let requirement = requirement.as_object().unwrap();
            assert!(
                !requirement.is_empty(),
                "{at}: an empty requirement makes it optional"
            );
            for scheme in requirement.keys() {
                assert!(
                    schemes.contains_key(scheme),
                    "{at}: unknown scheme {scheme}"
                );
            }
        }

        for (status, response) in responses {
            if !(status.starts_with('4') || status.starts_with('5')) {
                continue;
            }
            if NOT_ERROR_SHAPED.contains(&(method.as_str(), path.as_str(), status.as_str())) {
                continue;
            }
            let response = resolve(&doc, response);
            let schema = &response["content"]["application/json"]["schema"];
            assert!(
                is_error_shaped(&doc, schema),
                "{at} {status}: not the common error schema: {schema}"
            );
        }

        // Path template parameters and `in: path` parameters are the same names.
        let in_template: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        let declared: BTreeSet<&str> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| resolve(&doc, p))
            .filter(|p| p["in"] == "path")
            .map(|p| {
                assert_eq!(p["required"], true, "{at}: path parameters are required");
                p["name"].as_str().unwrap()
            })
            .collect();
        assert_eq!(in_template, declared, "{at}: path parameters");
    }
    let expected: BTreeSet<(String, String)> = PUBLIC
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        public, expected,
        "operations documented without credentials"
    );
}

/// What every event callops sends carries (Standard Webhooks).
const SIGNATURE_HEADERS: [&str; 3] = ["webhook-id", "webhook-timestamp", "webhook-signature"];

#[test]
fn the_webhooks_section_describes_every_event_type_signed_and_acknowledged() {
    let doc = document();
    let webhooks = doc["webhooks"].as_object().expect("a `webhooks` section");
    let documented: BTreeSet<&str> = webhooks.keys().map(String::as_str).collect();
    let known: BTreeSet<&str> = EVENT_TYPES.into_iter().collect();
    assert_eq!(documented, known, "`webhooks` and EVENT_TYPES");
    assert_eq!(
        doc["components"]["schemas"]["WebhookEventType"]["enum"],
        json!(EVENT_TYPES),
        "the subscription's vocabulary is EVENT_TYPES, in order"
    );

    let tags: BTreeSet<&str> = doc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tag| tag["name"].as_str().unwrap())
        .collect();
    let mut operation_ids: BTreeSet<String> = operations(&doc)
        .values()
        .map(|operation| operation["operationId"].as_str().unwrap().to_string())
        .collect();
    for (name, item) in webhooks {
        let methods: Vec<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(methods, ["post"], "{name}: events are POSTed");
        let operation = &item["post"];
        let id = operation["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no operationId"));
        assert!(
            operation_ids.insert(id.to_string()),
            "{name}: operationId {id} used twice"
        );
        for tag in operation["tags"].as_array().into_iter().flatten() {
            assert!(
                tags.contains(tag.as_str().unwrap()),
                "{name}: tag {tag} not declared"
            );
        }

        let headers: BTreeSet<&str> = operation["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: no signature headers"))
            .iter()
            .map(|p| resolve(&doc, p))
            .map(|p| {
                assert_eq!(p["in"], "header", "{name}: {}", p["name"]);
                assert_eq!(p["required"], true, "{name}: {}", p["name"]);
                p["name"].as_str().unwrap()
            })
            .collect();
        assert_eq!(
            headers,
            SIGNATURE_HEADERS.into_iter().collect(),
            "{name}: signature headers"
        );

        let body = resolve(&doc, &operation["requestBody"]);
        assert_eq!(body["required"], true, "{name}: the body is always sent");
        let media = &body["content"]["application/json"];
        let schema = &media["schema"];
        assert!(
            schema["allOf"].as_array().is_some_and(|parts| parts
                .iter()
                .any(|p| p["$ref"] == "#/components/schemas/WebhookEnvelope")),
            "{name}: not the envelope: {schema}"
        );
        assert_eq!(
            schema["properties"]["type"]["const"],
            name.as_str(),
            "{name}: type"
        );
        assert!(
            schema["properties"]["data"]["$ref"].is_string(),
            "{name}: data"
        );

        // The `const` bites: its example under another type is refused.
        let validator = validator(&doc, schema);
        let examples = examples_of(&doc, media);
        assert!(!examples.is_empty(), "{name}: no example");
        for (example, value) in examples {
            assert_eq!(value["type"], name.as_str(), "{name} example {example}");
            let mut retyped = value.clone();
            retyped["type"] = json!(if name == "webhook.test" {
                "call.started"
            } else {
                "webhook.test"
            });
            assert!(
                !errors_of(&validator, &retyped).is_empty(),
                "{name} example {example} validates as another type"
            );
        }

        let responses = operation["responses"].as_object().unwrap();
        for status in ["2XX", "410"] {
            assert!(responses.contains_key(status), "{name}: no {status}");
        }
    }
}

// ---------------------------------------------------------------------------
// Real responses, validated against what the document says of them.

pub(crate) struct Documented {
    doc: Value,
}

impl Documented {
    pub(crate) fn new() -> Self {
        Self { doc: document() }
    }

    /// Asserts `response` is documented for `method route` with its status
    /// and content type, and that its body validates against that schema.
    /// Returns the body for the caller's own assertions.
    pub(crate) fn check(&self, method: &str, route: &str, response: &Response<Body>) -> Value {
        let status = response.status().as_str().to_string();
        let at = format!("{method} {route} {status}");
        let operation = &self.doc["paths"][route][method.to_lowercase()];
        assert!(operation.is_object(), "{method} {route} is not documented");
        let documented = operation["responses"]
            .get(&status)
            .unwrap_or_else(|| panic!("{at}: status not documented; body {:?}", text(response)));
        let documented = resolve(&self.doc, documented);
        // A response documented without content (a redirect): no body, and
        // every header the document names.
        if documented.get("content").is_none() {
            assert!(
                response.body().is_empty(),
                "{at}: a body {:?}",
                text(response)
            );
            let headers = documented["headers"].as_object().into_iter().flatten();
            for (name, header) in headers {
                let value = response
                    .headers()
                    .get(name.as_str())
                    .unwrap_or_else(|| panic!("{at}: no {name} header"))
                    .to_str()
                    .unwrap();
                let errors = errors_of(&validator(&self.doc, &header["schema"]), &json!(value));
                assert!(errors.is_empty(), "{at}: {name}: {errors:#?}");
            }
            return Value::Null;
        }
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let media_type = content_type.split(';').next().unwrap().trim();
        let media = documented["content"]
            .get(media_type)
            .unwrap_or_else(|| panic!("{at}: {media_type} not documented"));
        let body = if media_type == "application/json" {
            serde_json::from_str(&text(response))
                .unwrap_or_else(|e| panic!("{at}: body is not JSON ({e}): {}", text(response)))
        } else {
            Value::String(text(response))
        };
        let errors = errors_of(&validator(&self.doc, &media["schema"]), &body);
        assert!(
            errors.is_empty(),
            "{at}: the body does not match the document: {errors:#?}\n{body:#}"
        );
        body
    }
}

fn text(response: &Response<Body>) -> String {
    String::from_utf8_lossy(response.body().as_ref()).into_owned()
}

fn request(
    method: &str,
    route: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Request {
    let mut all = vec![("content-type".to_string(), "application/json".to_string())];
    all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    devstack::server::api_request(method, route, path, query, &all, body.as_bytes())
}

#[tokio::test]
async fn the_openapi_route_serves_a_document_that_matches_itself() {
    let documented = Documented::new();
    let app = ::openapi::OpenApiDocument::from_env().await.unwrap();
    let response = app
        .handle(request("GET", "/openapi.json", "/openapi.json", &[], None))
        .await;
    let body = documented.check("GET", "/openapi.json", &response);
    assert_eq!(body, documented.doc);
    assert!(response.headers().contains_key("cache-control"));
}

#[tokio::test]
async fn recording_pipeline_responses_match_the_document() {
    let documented = Documented::new();
    let stack = Stack::start().await;
    let payload = seed_payload(&stack, "OPENAPI1").to_string();
    let auth = bearer(WEBHOOK_TOKEN);

    let route = "/webhook/zapier";
    let accepted = stack
        .zapier()
        .handle(zapier_request(payload.as_bytes(), Some(&auth)))
        .await;
    assert_eq!(accepted.status(), 202);
    assert_eq!(
        documented.check("POST", route, &accepted)["call_id"],
        "OPENAPI1"
    );
    let duplicate = stack
        .zapier()
        .handle(zapier_request(payload.as_bytes(), Some(&auth)))
        .await;
    assert_eq!(duplicate.status(), 200);
    assert_eq!(
        documented.check("POST", route, &duplicate)["duplicate"],
        true
    );
    let unauthorized = stack
        .zapier()
        .handle(zapier_request(payload.as_bytes(), Some("Bearer wrong")))
        .await;
    assert_eq!(unauthorized.status(), 401);
    assert_eq!(
        documented.check("POST", route, &unauthorized)["code"],
        "unauthorized"
    );
    let not_json = stack
        .zapier()
        .handle(zapier_request(b"call_id=1", Some(&auth)))
        .await;
    assert_eq!(not_json.status(), 400);
    documented.check("POST", route, &not_json);
    let bad_duration = json!({"call_id": "OPENAPI2", "from_number": "+919876543210",
        "to_number": "09631084471", "duration": "long"})
    .to_string();
    let invalid = stack
        .zapier()
        .handle(zapier_request(bad_duration.as_bytes(), Some(&auth)))
        .await;
    assert_eq!(invalid.status(), 422);
    assert_eq!(
        documented.check("POST", route, &invalid)["code"],
        "invalid_duration"
    );

    let exotel = stack.exotel_webhook();
    let form = format!(
        "CallSid=OPENAPI3&Status=completed&From=09876543210&To=09631084471\
         &DateUpdated=2025-10-09+23%3A30%3A12&ConversationDuration=105&RecordingUrl={}",
        url::form_urlencoded::byte_serialize(stack.recording_url("OPENAPI3").as_bytes())
            .collect::<String>()
    );
    let content_type = "application/x-www-form-urlencoded";
    let query = format!("token={WEBHOOK_TOKEN}");
    let accepted = exotel
        .handle(exotel_request(&form, &query, content_type))
        .await;
    assert_eq!(accepted.status(), 202, "{}", text(&accepted));
    documented.check("POST", "/webhook/exotel", &accepted);
    let unauthorized = exotel
        .handle(exotel_request(&form, "token=wrong", content_type))
        .await;
    assert_eq!(unauthorized.status(), 401);
    documented.check("POST", "/webhook/exotel", &unauthorized);
    let not_a_form = exotel
        .handle(exotel_request(&form, &query, "application/json"))
        .await;
    assert_eq!(not_a_form.status(), 400);
    assert_eq!(
        documented.check("POST", "/webhook/exotel", &not_a_form)["code"],
        "invalid_form"
    );

    // Transcribed and notified: the call record in full.
    stack.run_transcriptions().await;
    stack
        .run_notifications(&stack.notify_worker(vec![stack.slack_webhook()]))
        .await;
    let call_get = stack.call_get();
    let found = call_get
        .handle(call_get_request("OPENAPI1", Some(&bearer(API_TOKEN))))
        .await;
    assert_eq!(found.status(), 200);
    let call = documented.check("GET", "/call/{call_id}", &found);
    assert_eq!(call["status"], "notified");
    assert!(!call["utterances"].as_array().unwrap().is_empty());
    let missing = call_get
        .handle(call_get_request("NOPE", Some(&bearer(API_TOKEN))))
        .await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        documented.check("GET", "/call/{call_id}", &missing)["code"],
        "not_found"
    );
    let unauthorized = call_get.handle(call_get_request("OPENAPI1", None)).await;
    assert_eq!(unauthorized.status(), 401);
    documented.check("GET", "/call/{call_id}", &unauthorized);

    let health = health::Health {
        stats: Arc::new(stack.stats()),
        transcription_enabled: true,
        slack_enabled: true,
    };
    let healthy = health.handle().await;
    assert_eq!(healthy.status(), 200);
    assert_eq!(
        documented.check("GET", "/health", &healthy)["status"],
        "healthy"
    );
    let stats = stack.stats_endpoint();
    let counters = stats.handle(stats_request(None)).await;
    assert_eq!(counters.status(), 200);
    assert!(documented.check("GET", "/stats", &counters)["total_processed"].as_u64() >= Some(2));
}

const ORG: &str = "acme";
const LIVEKIT_KEY: &str = "lk-openapi-key";
const LIVEKIT_SECRET: &str = "lk-openapi-secret-0123456789abcdef012345";

#[tokio::test]
async fn session_and_room_responses_match_the_document() {
    use shared::flows::sessions::{url_encode, JoinTokens, RoomAccess, DEFAULT_ROOM_URL_TEMPLATE};
    use shared::providers::livekit::AccessTokens;

    let documented = Documented::new();
    let stack = Stack::start().await;
    let keys = DynamoApiKeyStore::new(stack.dynamo.clone(), stack.resources.table("ApiKeysTable"));
    let (key, record) = api_keys::generate("openapi", ORG);
    keys.insert(&record).await.unwrap();
    let livekit = FakeLiveKit::start(LIVEKIT_KEY, LIVEKIT_SECRET);
    let client = livekit_client(livekit.url(), LIVEKIT_KEY, LIVEKIT_SECRET);
    let tokens = || JoinTokens {
        tokens: AccessTokens {
            api_key: LIVEKIT_KEY.into(),
            api_secret: Secret::new(LIVEKIT_SECRET),
        },
        ttl: Duration::from_secs(600),
    };
    let invites = || {
        shared::api::invites::RoomInvites::new(
            Secret::new("invite-secret"),
            Duration::from_secs(600),
        )
    };
    let keyed = [("x-api-key", key.as_str())];

    let room_create = room_create::RoomCreate {
        access: stack.keyed_access(),
        lifecycle: stack.session_lifecycle(Arc::clone(&client)),
        access_links: RoomAccess {
            tokens: tokens(),
            invites: invites(),
            client_url: client.client_url(),
            room_url_template: DEFAULT_ROOM_URL_TEMPLATE.into(),
        },
        lease: Duration::from_secs(30),
    };
    let create = |body: Value, headers: &[(&str, &str)]| {
        room_create.handle(request(
            "POST",
            "/room/create",
            "/room/create",
            headers,
            Some(body),
        ))
    };
    let created = create(
        json!({"roomName": "openapi-room", "hostName": "Ada"}),
        &keyed,
    )
    .await;
    assert_eq!(created.status(), 201, "{}", text(&created));
    let room = documented.check("POST", "/room/create", &created);
    assert_eq!(room["sessionId"], "web-openapi-room");
    let reserved = create(json!({"roomName": "twilio-CA1"}), &keyed).await;
    assert_eq!(reserved.status(), 422);
    assert_eq!(
        documented.check("POST", "/room/create", &reserved)["code"],
        "reserved_room_name"
    );
    let unknown_field = create(json!({"roomName": "r", "colour": "red"}), &keyed).await;
    assert_eq!(unknown_field.status(), 400);
    documented.check("POST", "/room/create", &unknown_field);
    let keyless = create(json!({"roomName": "r"}), &[]).await;
    assert_eq!(keyless.status(), 401);
    documented.check("POST", "/room/create", &keyless);

    let room_join = room_join::RoomJoin {
        access: stack.keyed_access(),
        lifecycle: stack.session_lifecycle(Arc::clone(&client)),
        tokens: tokens(),
        invites: invites(),
        client_url: client.client_url(),
    };
    let joined = room_join
        .handle(request(
            "POST",
            "/room/join",
            "/room/join",
            &[],
            Some(
                json!({"roomName": "openapi-room", "participantIdentity": "guest-1",
                "invite": room["invite"]}),
            ),
        ))
        .await;
    assert_eq!(joined.status(), 200, "{}", text(&joined));
    documented.check("POST", "/room/join", &joined);

    let room_revoke = room_invites_revoke::RoomInvitesRevoke {
        access: stack.keyed_access(),
        lifecycle: stack.session_lifecycle(Arc::clone(&client)),
        invites: invites(),
    };
    let revoke = |room: &str| {
        let path = format!("/room/{room}/invites/revoke");
        room_revoke.handle(request(
            "POST",
            "/room/{roomName}/invites/revoke",
            &path,
            &keyed,
            None,
        ))
    };
    let revoked = revoke("openapi-room").await;
    assert_eq!(revoked.status(), 200, "{}", text(&revoked));
    assert!(
        documented.check("POST", "/room/{roomName}/invites/revoke", &revoked)["invite"].is_string()
    );
    let missing = revoke("no-such-room").await;
    assert_eq!(missing.status(), 404);
    documented.check("POST", "/room/{roomName}/invites/revoke", &missing);

    // The shared link, with the invite the revocation handed out.
    let fresh = documented.check(
        "POST",
        "/room/{roomName}/invites/revoke",
        &revoke("openapi-room").await,
    )["invite"]
        .as_str()
        .unwrap()
        .to_string();
    let room_join_link = room_join_link::RoomJoinLink {
        lifecycle: stack.session_lifecycle(Arc::clone(&client)),
        access: RoomAccess {
            tokens: tokens(),
            invites: invites(),
            client_url: client.client_url(),
            room_url_template: DEFAULT_ROOM_URL_TEMPLATE.into(),
        },
    };
    let open_link = |room: &str, query: String| {
        let path = format!("/room/{room}/join?{query}");
        room_join_link.handle(request("GET", "/room/{roomName}/join", &path, &[], None))
    };
    let invite_query = format!("invite={}&name=Grace", url_encode(&fresh));
    let redirected = open_link("openapi-room", invite_query.clone()).await;
    assert_eq!(redirected.status(), 302, "{}", text(&redirected));
    documented.check("GET", "/room/{roomName}/join", &redirected);
    let uninvited = open_link("openapi-room", String::new()).await;
    assert_eq!(uninvited.status(), 401);
    documented.check("GET", "/room/{roomName}/join", &uninvited);
    let elsewhere = open_link("no-such-room", invite_query).await;
    assert_eq!(elsewhere.status(), 401, "the invite names another room");
    documented.check("GET", "/room/{roomName}/join", &elsewhere);
    let unnamed = open_link(
        "openapi-room",
        format!("invite={}&name=", url_encode(&fresh)),
    )
    .await;
    assert_eq!(unnamed.status(), 422);
    documented.check("GET", "/room/{roomName}/join", &unnamed);

    let room_agent = room_agent::RoomAgent {
        access: stack.keyed_access(),
        lifecycle: stack.session_lifecycle(Arc::clone(&client)),
    };
    let toggle = |room: &str, body: Value| {
        let path = format!("/room/{room}/agent");
        room_agent.handle(request(
            "POST",
            "/room/{roomName}/agent",
            &path,
            &keyed,
            Some(body),
        ))
    };
    let off = toggle("openapi-room", json!({"enable": false})).await;
    assert_eq!(off.status(), 200, "{}", text(&off));
    assert_eq!(
        documented.check("POST", "/room/{roomName}/agent", &off)["agentActive"],
        false
    );
    let elsewhere = toggle("no-such-room", json!({"enable": true})).await;
    assert_eq!(elsewhere.status(), 404);
    documented.check("POST", "/room/{roomName}/agent", &elsewhere);
    let no_enable = toggle("openapi-room", json!({})).await;
    assert_eq!(no_enable.status(), 422);
    documented.check("POST", "/room/{roomName}/agent", &no_enable);

    let sessions_list = sessions_list::SessionsList {
        access: stack.keyed_access(),
        sessions: Arc::new(stack.sessions()),
    };
    let list = |query: &str, headers: &[(&str, &str)]| {
        sessions_list.handle(request(
            "GET",
            "/sessions",
            &format!("/sessions{query}"),
            headers,
            None,
        ))
    };
    let listed = list("", &keyed).await;
    assert_eq!(listed.status(), 200);
    let listing = documented.check("GET", "/sessions", &listed);
    assert_eq!(listing["byType"]["web"], 1);
    let bad_filter = list("?status=paused", &keyed).await;
    assert_eq!(bad_filter.status(), 400);
    documented.check("GET", "/sessions", &bad_filter);
    let keyless = list("", &[]).await;
    assert_eq!(keyless.status(), 401);
    documented.check("GET", "/sessions", &keyless);

    let session_get = session_get::SessionGet {
        access: stack.keyed_access(),
        sessions: Arc::new(stack.sessions()),
    };
    let get = |id: &str| {
        let path = format!("/sessions/{id}");
        session_get.handle(request("GET", "/sessions/{id}", &path, &keyed, None))
    };
    let found = get("web-openapi-room").await;
    assert_eq!(found.status(), 200);
    assert_eq!(
        documented.check("GET", "/sessions/{id}", &found)["type"],
        "web"
    );
    let missing = get("phone-CA0000").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        documented.check("GET", "/sessions/{id}", &missing)["code"],
        "not_found"
    );
}

#[tokio::test]
async fn admin_and_call_start_responses_match_the_document() {
    let documented = Documented::new();
    let stack = Stack::start().await;
    let directory = stack.directory();
    let tenancy = stack.tenancy();
    let token = Secret::new("openapi-admin-token");
    let admin = shared::flows::admin::Admin {
        token: &token,
        directory: &directory,
        tenancy: &tenancy,
    };
    let auth = bearer("openapi-admin-token");
    let authorised = [("authorization", auth.as_str())];

    let organisation = json!({"org_id": ORG, "name": "Acme Corp", "monthly_limit_seconds": 36000});
    let created = admin
        .create_organisation(request(
            "POST",
            "/organisations",
            "/organisations",
            &authorised,
            Some(organisation.clone()),
        ))
        .await;
    assert_eq!(created.status(), 201, "{}", text(&created));
    documented.check("POST", "/organisations", &created);
    let exists = admin
        .create_organisation(request(
            "POST",
            "/organisations",
            "/organisations",
            &authorised,
            Some(organisation),
        ))
        .await;
    assert_eq!(exists.status(), 422);
    assert_eq!(
        documented.check("POST", "/organisations", &exists)["code"],
        "organisation_exists"
    );
    let fetched = admin
        .get_organisation(request(
            "GET",
            "/organisations/{org_id}",
            "/organisations/acme",
            &authorised,
            None,
        ))
        .await;
    assert_eq!(fetched.status(), 200);
    documented.check("GET", "/organisations/{org_id}", &fetched);

    // The organisation's recording-webhook tokens.
    let tokens = stack.webhook_token_admin();
    let admin_auth = bearer(ADMIN_TOKEN);
    let token_auth = [("authorization", admin_auth.as_str())];
    let tokens_route = "/organisations/{org_id}/webhook-tokens";
    let token_route = "/organisations/{org_id}/webhook-tokens/{token_id}";
    let created = tokens
        .handle(request(
            "POST",
            tokens_route,
            "/organisations/acme/webhook-tokens",
            &token_auth,
            Some(json!({"name": "zapier"})),
        ))
        .await;
    assert_eq!(created.status(), 201, "{}", text(&created));
    let token_id = documented.check("POST", tokens_route, &created)["token_id"]
        .as_str()
        .unwrap()
        .to_string();
    let bad_name = tokens
        .handle(request(
            "POST",
            tokens_route,
            "/organisations/acme/webhook-tokens",
            &token_auth,
            Some(json!({"name": ""})),
        ))
        .await;
    assert_eq!(
        documented.check("POST", tokens_route, &bad_name)["code"],
        "invalid_name"
    );
    let no_org = tokens
        .handle(request(
            "POST",
            tokens_route,
            "/organisations/nobody/webhook-tokens",
            &token_auth,
            None,
        ))
        .await;
    assert_eq!(
        documented.check("POST", tokens_route, &no_org)["code"],
        "not_found"
    );
    let listed = tokens
        .handle(request(
            "GET",
            tokens_route,
            "/organisations/acme/webhook-tokens",
            &token_auth,
            None,
        ))
        .await;
    assert_eq!(listed.status(), 200);
    documented.check("GET", tokens_route, &listed);
    let path = format!("/organisations/acme/webhook-tokens/{token_id}");
    let revoked = tokens
        .handle(request("DELETE", token_route, &path, &token_auth, None))
        .await;
    assert_eq!(revoked.status(), 200);
    documented.check("DELETE", token_route, &revoked);
    let foreign = tokens
        .handle(request(
            "DELETE",
            token_route,
            "/organisations/acme/webhook-tokens/000000000000",
            &token_auth,
            None,
        ))
        .await;
    assert_eq!(
        documented.check("DELETE", token_route, &foreign)["code"],
        "not_found"
    );
    let unauthorised = tokens
        .handle(request(
            "GET",
            tokens_route,
            "/organisations/acme/webhook-tokens",
            &[],
            None,
        ))
        .await;
    documented.check("GET", tokens_route, &unauthorised);

    // Issue 19: the number registry's routes.
    let numbers = "/organisations/{org_id}/numbers";
    let assign = |org: &str, number: &str, channel: &str| {
        admin.numbers(request(
            "POST",
            numbers,
            &format!("/organisations/{org}/numbers"),
            &authorised,
            Some(json!({"number": number, "channel": channel})),
        ))
    };
    for (status, number, channel) in [
        (201, "+14155552671", "voice"),
        (200, "+14155552671", "voice"),
        (201, "+14155552671", "whatsapp"),
        (422, "4155552671", "voice"),
        (422, "+14155552671", "sms"),
    ] {
        let response = assign(ORG, number, channel).await;
        assert_eq!(response.status(), status, "{}", text(&response));
        documented.check("POST", numbers, &response);
    }
    let ghost = assign("ghost", "+14155552671", "voice").await;
    assert_eq!(ghost.status(), 404);
    documented.check("POST", numbers, &ghost);
    let other = json!({"org_id": "globex", "name": "Globex", "monthly_limit_seconds": 60, "phone_numbers": ["+14155552671"]});
    let taken = admin
        .create_organisation(request(
            "POST",
            "/organisations",
            "/organisations",
            &authorised,
            Some(other),
        ))
        .await;
    assert_eq!(taken.status(), 409);
    assert_eq!(
        documented.check("POST", "/organisations", &taken)["code"],
        "number_taken"
    );
    let listed = admin
        .numbers(request(
            "GET",
            numbers,
            "/organisations/acme/numbers",
            &authorised,
            None,
        ))
        .await;
    assert_eq!(listed.status(), 200);
    assert_eq!(
        documented.check("GET", numbers, &listed)["numbers"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let one = "/organisations/{org_id}/numbers/{channel}/{number}";
    for status in [204, 404] {
        let released = admin
            .numbers(request(
                "DELETE",
                one,
                "/organisations/acme/numbers/whatsapp/%2B14155552671",
                &authorised,
                None,
            ))
            .await;
        assert_eq!(released.status(), status, "{}", text(&released));
        documented.check("DELETE", one, &released);
    }

    let assistant = json!({"org_id": ORG, "name": "Sarah", "provider": "twilio",
        "caller_number": "+14155552672", "agent_stream_url": "wss://agent.example.com/media"});
    let created = admin
        .create_assistant(request(
            "POST",
            "/assistants",
            "/assistants",
            &authorised,
            Some(assistant),
        ))
        .await;
    assert_eq!(created.status(), 201, "{}", text(&created));
    let id = documented.check("POST", "/assistants", &created)["assistant_id"].clone();
    let deactivated = admin
        .deactivate_assistant(request(
            "DELETE",
            "/assistants/{assistant_id}",
            &format!("/assistants/{id}"),
            &authorised,
            None,
        ))
        .await;
    assert_eq!(deactivated.status(), 200, "{}", text(&deactivated));
    assert_eq!(
        documented.check("DELETE", "/assistants/{assistant_id}", &deactivated)["is_active"],
        false
    );
    let missing = admin
        .get_assistant(request(
            "GET",
            "/assistants/{assistant_id}",
            "/assistants/999999",
            &authorised,
            None,
        ))
        .await;
    assert_eq!(missing.status(), 404);
    documented.check("GET", "/assistants/{assistant_id}", &missing);
    let unauthorised = admin
        .get_assistant(request(
            "GET",
            "/assistants/{assistant_id}",
            "/assistants/1",
            &[],
            None,
        ))
        .await;
    assert_eq!(unauthorised.status(), 401);
    documented.check("GET", "/assistants/{assistant_id}", &unauthorised);

    let keys = DynamoApiKeyStore::new(stack.dynamo.clone(), stack.resources.table("ApiKeysTable"));
    let (key, record) = api_keys::generate("openapi", ORG);
    keys.insert(&record).await.unwrap();
    let call_started = call_started::CallStarted {
        api_keys: Arc::new(keys),
        intake: stack.call_start_intake(),
    };
    let report = json!({"room_name": "openapi-trial", "user_email": "alice@company.com", "metadata": {"tier": "trial"}});
    let bearer_key = bearer(&key);
    let keyed = [("authorization", bearer_key.as_str())];
    let route = "/calls/started";
    let queued = call_started
        .handle(request("POST", route, route, &keyed, Some(report.clone())))
        .await;
    assert_eq!(queued.status(), 202, "{}", text(&queued));
    documented.check("POST", route, &queued);
    let duplicate = call_started
        .handle(request("POST", route, route, &keyed, Some(report)))
        .await;
    assert_eq!(duplicate.status(), 200);
    assert_eq!(
        documented.check("POST", route, &duplicate)["duplicate"],
        true
    );
    let bad_email = call_started
        .handle(request(
            "POST",
            route,
            route,
            &keyed,
            Some(json!({"room_name": "r", "user_email": "nobody"})),
        ))
        .await;
    assert_eq!(bad_email.status(), 422);
    assert_eq!(
        documented.check("POST", route, &bad_email)["code"],
        "invalid_email"
    );
}

const TWILIO_ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const TWILIO_TOKEN: &str = "twilio-openapi-token";
const PUBLIC_BASE: &str = "https://callops.example.com";

/// A form POST signed like Twilio signs it (or with `signature` as given).
fn twilio_form(route: &str, params: &[(&str, &str)], signature: Option<&str>) -> Request {
    let signed =
        devstack::fakes::twilio_signature(TWILIO_TOKEN, &format!("{PUBLIC_BASE}{route}"), params);
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let mut headers = vec![(
        "content-type".to_string(),
        "application/x-www-form-urlencoded".to_string(),
    )];
    if let Some(signature) = signature
        .map(str::to_string)
        .or(Some(signed))
        .filter(|s| !s.is_empty())
    {
        headers.push(("x-twilio-signature".to_string(), signature));
    }
    devstack::server::api_request("POST", route, route, "", &headers, body.as_bytes())
}

#[tokio::test]
async fn twilio_signed_and_phone_responses_match_the_document() {
    use shared::flows::phone::{CallFlow, ConnectMode};
    use shared::flows::sessions::SessionKind;
    use shared::providers::twilio::{TwilioClient, TwilioWebhookAuth};

    let documented = Documented::new();
    let stack = Stack::start().await;
    let livekit = FakeLiveKit::start(LIVEKIT_KEY, LIVEKIT_SECRET);
    let client = livekit_client(livekit.url(), LIVEKIT_KEY, LIVEKIT_SECRET);
    let twilio = devstack::fakes::FakeTwilio::start(TWILIO_ACCOUNT, TWILIO_TOKEN);
    let auth = || TwilioWebhookAuth::single(Secret::new(TWILIO_TOKEN), PUBLIC_BASE.into());
    let voice = twilio_voice::TwilioVoice {
        webhook: shared::flows::voice::VoiceWebhook {
            kind: SessionKind::Phone,
            twilio_auth: auth(),
            flow: CallFlow {
                mode: ConnectMode::Stream {
                    url: "wss://agent.example.com/twilio".into(),
                },
                greeting: Some("Please wait while we connect you.".into()),
                voice: Some("Polly.Joanna".into()),
                menu: None,
                public_base_url: PUBLIC_BASE.into(),
            },
            lifecycle: stack.session_lifecycle(Arc::clone(&client)),
            inbound_org: Some(ORG.into()),
            tenancy: Arc::new(stack.tenancy()),
            lease: Duration::from_secs(30),
        },
    };
    let call_sid = "CA0123456789abcdef0123456789abcdef";
    let inbound = [
        ("CallSid", call_sid),
        ("From", "+14155550100"),
        ("To", "+14155550199"),
        ("Direction", "inbound"),
        ("AccountSid", TWILIO_ACCOUNT),
        ("CallStatus", "ringing"),
    ];
    let route = "/twilio/voice";
    let answered = voice.handle(twilio_form(route, &inbound, None)).await;
    assert_eq!(answered.status(), 200, "{}", text(&answered));
    let twiml = documented.check("POST", route, &answered);
    assert!(
        twiml.as_str().unwrap().contains("<Connect><Stream"),
        "{twiml}"
    );
    let unsigned = voice.handle(twilio_form(route, &inbound, Some(""))).await;
    assert_eq!(unsigned.status(), 400);
    assert_eq!(
        documented.check("POST", route, &unsigned)["code"],
        "missing_signature"
    );
    let forged = voice
        .handle(twilio_form(route, &inbound, Some("Zm9yZ2Vk")))
        .await;
    assert_eq!(forged.status(), 403);
    assert_eq!(
        documented.check("POST", route, &forged)["code"],
        "invalid_signature"
    );

    // The session that call opened, with its call fields.
    let keys = DynamoApiKeyStore::new(stack.dynamo.clone(), stack.resources.table("ApiKeysTable"));
    let (key, record) = api_keys::generate("openapi", ORG);
    keys.insert(&record).await.unwrap();
    let keyed = [("x-api-key", key.as_str())];
    let session_get = session_get::SessionGet {
        access: stack.keyed_access(),
        sessions: Arc::new(stack.sessions()),
    };
    let session_id = format!("phone-{call_sid}");
    let found = session_get
        .handle(request(
            "GET",
            "/sessions/{id}",
            &format!("/sessions/{session_id}"),
            &keyed,
            None,
        ))
        .await;
    assert_eq!(found.status(), 200, "{}", text(&found));
    assert_eq!(
        documented.check("GET", "/sessions/{id}", &found)["call_sid"],
        call_sid
    );

    let status = twilio_status::TwilioStatus {
        twilio_auth: auth(),
        intake: stack.provider_event_intake(),
        calls: Arc::new(stack.outbound_calls()),
    };
    let route = "/twilio/status";
    let completed = [
        ("CallSid", call_sid),
        ("CallStatus", "completed"),
        ("CallDuration", "42"),
    ];
    let queued = status.handle(twilio_form(route, &completed, None)).await;
    assert_eq!(queued.status(), 200, "{}", text(&queued));
    assert_eq!(documented.check("POST", route, &queued)["queued"], true);
    let incomplete = status
        .handle(twilio_form(route, &[("CallSid", call_sid)], None))
        .await;
    assert_eq!(incomplete.status(), 422);
    assert_eq!(
        documented.check("POST", route, &incomplete)["code"],
        "missing_field"
    );

    let phone_end = phone_end::PhoneEnd {
        access: stack.keyed_access(),
        twilio: TwilioClient {
            http: reqwest::Client::new(),
            base_url: twilio.base_url().to_string(),
            account_sid: TWILIO_ACCOUNT.into(),
            auth_token: Secret::new(TWILIO_TOKEN),
            api_key: None,
        }
        .into(),
        lifecycle: stack.session_lifecycle(client),
    };
    let end = || {
        let path = format!("/phone/end/{call_sid}");
        phone_end.handle(request("POST", "/phone/end/{callSid}", &path, &keyed, None))
    };
    let ended = end().await;
    assert_eq!(ended.status(), 200, "{}", text(&ended));
    assert_eq!(
        documented.check("POST", "/phone/end/{callSid}", &ended)["status"],
        "ended"
    );
    let gone = end().await;
    assert_eq!(gone.status(), 404);
    documented.check("POST", "/phone/end/{callSid}", &gone);
}

#[tokio::test]
async fn webhook_endpoint_responses_match_the_document() {
    use shared::base::time::{Clock, SystemClock};
    use shared::flows::webhooks::admin::WebhookApi;
    use shared::flows::webhooks::dispatch::Replayer;
    use shared::flows::webhooks::events;
    use shared::flows::webhooks::sender::UrlPolicy;
    use shared::store::webhooks::{
        AttemptOutcome, AttemptRecord, DynamoWebhookStore, StoredMessage, WebhookStore,
    };

    let documented = Documented::new();
    let stack = Stack::start().await;
    let store: Arc<dyn WebhookStore> = Arc::new(DynamoWebhookStore::new(
        stack.dynamo.clone(),
        stack.resources.table("WebhooksTable"),
    ));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let api = WebhookApi {
        access: stack.keyed_access(),
        store: Arc::clone(&store),
        replayer: Replayer {
            store: Arc::clone(&store),
            main_queue: stack.queue("WebhookQueue"),
            slow_queue: stack.queue("WebhookSlowQueue"),
            clock: Arc::clone(&clock),
        },
        main_queue: stack.queue("WebhookQueue"),
        policy: UrlPolicy { loopback: true },
        clock: Arc::clone(&clock),
        recover_batch: shared::flows::webhooks::admin::MAX_RECOVER,
    };
    let keys = DynamoApiKeyStore::new(stack.dynamo.clone(), stack.resources.table("ApiKeysTable"));
    let (key, record) = api_keys::generate("openapi", ORG);
    keys.insert(&record).await.unwrap();
    let (globex_key, record) = api_keys::generate("openapi", "globex");
    keys.insert(&record).await.unwrap();
    let (orphan_key, mut record) = api_keys::generate("openapi", ORG);
    record.org_id = None;
    keys.insert(&record).await.unwrap();
    let keyed = [("x-api-key", key.as_str())];
    let globex_auth = bearer(&globex_key);
    let globex = [("authorization", globex_auth.as_str())];
    let orphan = [("x-api-key", orphan_key.as_str())];

    let call = |method: &str, route: &str, path: &str, headers: &[(&str, &str)], body| {
        api.handle(request(method, route, path, headers, body))
    };
    let endpoints = "/webhook-endpoints";
    let one = "/webhook-endpoints/{endpoint_id}";

    // Created: the secret shown once, the event types deduplicated.
    let new = json!({"url": "http://127.0.0.1:9/hooks", "description": "openapi",
        "event_types": ["call.ended", "session.started", "call.ended"]});
    let created = call("POST", endpoints, endpoints, &keyed, Some(new)).await;
    assert_eq!(created.status(), 201, "{}", text(&created));
    let endpoint = documented.check("POST", endpoints, &created);
    assert_eq!(
        endpoint["event_types"],
        json!(["call.ended", "session.started"])
    );
    let first_secret = endpoint["secret"].as_str().unwrap().to_string();
    let id = endpoint["endpoint_id"].as_str().unwrap().to_string();
    let path = format!("/webhook-endpoints/{id}");

    for (body, status, code) in [
        (
            json!({"url": "https://user:pw@hooks.example.com/"}),
            422,
            "invalid_url",
        ),
        (
            json!({"url": "ftp://hooks.example.com/"}),
            422,
            "invalid_url",
        ),
        (
            json!({"url": "https://hooks.example.com/", "event_types": ["call.exploded"]}),
            422,
            "invalid_event_types",
        ),
        (
            json!({"url": "https://hooks.example.com/", "description": "d".repeat(257)}),
            422,
            "invalid_description",
        ),
        (json!({"colour": "red"}), 400, "invalid_json"),
        (
            json!({"url": "https://hooks.example.com/", "description": "d".repeat(17_000)}),
            413,
            "payload_too_large",
        ),
    ] {
        let refused = call("POST", endpoints, endpoints, &keyed, Some(body)).await;
        assert_eq!(refused.status(), status, "{}", text(&refused));
        assert_eq!(documented.check("POST", endpoints, &refused)["code"], code);
    }
    let keyless = call("POST", endpoints, endpoints, &[], None).await;
    assert_eq!(keyless.status(), 401);
    documented.check("POST", endpoints, &keyless);
    let no_organisation = call("GET", endpoints, endpoints, &orphan, None).await;
    assert_eq!(no_organisation.status(), 403);
    assert_eq!(
        documented.check("GET", endpoints, &no_organisation)["code"],
        "api_key_without_organisation"
    );

    let listed = call("GET", endpoints, endpoints, &keyed, None).await;
    assert_eq!(listed.status(), 200, "{}", text(&listed));
    let listing = documented.check("GET", endpoints, &listed);
    assert_eq!(listing["endpoints"].as_array().unwrap().len(), 1);
    assert!(listing["endpoints"][0].get("secret").is_none());

    let found = call("GET", one, &path, &keyed, None).await;
    assert_eq!(found.status(), 200);
    assert_eq!(
        documented.check("GET", one, &found)["endpoint_id"],
        id.as_str()
    );
    // Another organisation's endpoint is not found, nor is an id not of ours.
    for (headers, path) in [
        (&globex, path.as_str()),
        (&keyed, "/webhook-endpoints/nope"),
    ] {
        let missing = call("GET", one, path, headers, None).await;
        assert_eq!(missing.status(), 404, "{}", text(&missing));
        assert_eq!(documented.check("GET", one, &missing)["code"], "not_found");
    }

    let disabled = call("PATCH", one, &path, &keyed, Some(json!({"enabled": false}))).await;
    assert_eq!(disabled.status(), 200, "{}", text(&disabled));
    assert_eq!(documented.check("PATCH", one, &disabled)["enabled"], false);
    let enabled = call("PATCH", one, &path, &keyed, Some(json!({"enabled": true}))).await;
    assert_eq!(enabled.status(), 200);
    assert!(documented
        .check("PATCH", one, &enabled)
        .get("disabled_reason")
        .is_none());
    let unknown_field = call("PATCH", one, &path, &keyed, Some(json!({"secret": "x"}))).await;
    assert_eq!(unknown_field.status(), 400);
    documented.check("PATCH", one, &unknown_field);
    let bad_url = call(
        "PATCH",
        one,
        &path,
        &keyed,
        Some(json!({"url": "not a url"})),
    )
    .await;
    assert_eq!(bad_url.status(), 422);
    assert_eq!(
        documented.check("PATCH", one, &bad_url)["code"],
        "invalid_url"
    );

    let rotate = "/webhook-endpoints/{endpoint_id}/rotate-secret";
    let rotated = call(
        "POST",
        rotate,
        &format!("{path}/rotate-secret"),
        &keyed,
        None,
    )
    .await;
    assert_eq!(rotated.status(), 200, "{}", text(&rotated));
    let rotation = documented.check("POST", rotate, &rotated);
    assert_ne!(rotation["secret"], first_secret.as_str());
    assert!(rotation["previous_secret_until"].is_string());

    let test = "/webhook-endpoints/{endpoint_id}/test";
    let queued = call("POST", test, &format!("{path}/test"), &keyed, None).await;
    assert_eq!(queued.status(), 202, "{}", text(&queued));
    assert_eq!(documented.check("POST", test, &queued)["attempt"], 0);
    let foreign = call("POST", test, &format!("{path}/test"), &globex, None).await;
    assert_eq!(foreign.status(), 404);
    documented.check("POST", test, &foreign);

    // An event and one failed attempt to the endpoint, as the worker stores them.
    let event = events::usage_threshold(ORG, "2026-12", 80, 28_900, 36_000);
    let now = clock.now();
    store
        .put_message(&StoredMessage {
            message_id: event.id.clone(),
            org_id: ORG.into(),
            event_type: event.event_type.clone(),
            timestamp: event.timestamp.clone(),
            body: event.envelope(),
            expires_at: now + 86_400,
        })
        .await
        .unwrap();
    store
        .record_attempt(&AttemptRecord {
            message_id: event.id.clone(),
            endpoint_id: id.clone(),
            org_id: ORG.into(),
            event_type: event.event_type.clone(),
            attempt: 0,
            at: shared::base::time::now_rfc3339(),
            at_ms: now * 1000,
            outcome: AttemptOutcome::Failed,
            status_code: Some(500),
            latency_ms: 212,
            response: Some("Internal Server Error".into()),
            error: Some("answered 500".into()),
            trigger: "scheduled".into(),
            expires_at: now + 86_400,
        })
        .await
        .unwrap();

    let attempts = "/webhook-endpoints/{endpoint_id}/attempts";
    let page = call(
        "GET",
        attempts,
        &format!("{path}/attempts?status=failed&limit=10"),
        &keyed,
        None,
    )
    .await;
    assert_eq!(page.status(), 200, "{}", text(&page));
    let page = documented.check("GET", attempts, &page);
    assert_eq!(page["attempts"][0]["message_id"], event.id.as_str());
    for (query, code) in [
        ("status=paused", "invalid_status"),
        ("since=yesterday", "invalid_time"),
        ("limit=0", "invalid_limit"),
        ("cursor=not-a-cursor", "invalid_cursor"),
    ] {
        let refused = call(
            "GET",
            attempts,
            &format!("{path}/attempts?{query}"),
            &keyed,
            None,
        )
        .await;
        assert_eq!(refused.status(), 400, "{query}: {}", text(&refused));
        assert_eq!(documented.check("GET", attempts, &refused)["code"], code);
    }

    let message = "/webhook-messages/{message_id}";
    let message_path = format!("/webhook-messages/{}", event.id);
    let shown = call("GET", message, &message_path, &keyed, None).await;
    assert_eq!(shown.status(), 200, "{}", text(&shown));
    let shown = documented.check("GET", message, &shown);
    assert_eq!(shown["payload"]["data"]["threshold_percent"], 80);
    assert_eq!(shown["attempts"].as_array().unwrap().len(), 1);
    for (headers, path) in [
        (&globex, message_path.clone()),
        (
            &keyed,
            "/webhook-messages/msg_000000000000000000000000".to_string(),
        ),
    ] {
        let missing = call("GET", message, &path, headers, None).await;
        assert_eq!(missing.status(), 404);
        documented.check("GET", message, &missing);
    }
    let bad_status = call(
        "GET",
        message,
        &format!("{message_path}?status=lost"),
        &keyed,
        None,
    )
    .await;
    assert_eq!(bad_status.status(), 400);
    documented.check("GET", message, &bad_status);

    let replay = "/webhook-endpoints/{endpoint_id}/messages/{message_id}/replay";
    let replay_path = format!("{path}/messages/{}/replay", event.id);
    let replayed = call("POST", replay, &replay_path, &keyed, None).await;
    assert_eq!(replayed.status(), 202, "{}", text(&replayed));
    assert_eq!(
        documented.check("POST", replay, &replayed)["message_id"],
        event.id.as_str()
    );
    let unknown = format!("{path}/messages/msg_000000000000000000000000/replay");
    let missing = call("POST", replay, &unknown, &keyed, None).await;
    assert_eq!(missing.status(), 404);
    documented.check("POST", replay, &missing);

    let recover = "/webhook-endpoints/{endpoint_id}/recover";
    let recover_path = format!("{path}/recover");
    let since = json!({"since": "2026-01-01T00:00:00+05:30"});
    let recovered = call("POST", recover, &recover_path, &keyed, Some(since)).await;
    assert_eq!(recovered.status(), 202, "{}", text(&recovered));
    assert_eq!(
        documented.check("POST", recover, &recovered)["since"],
        "2025-12-31T18:30:00Z"
    );
    for (body, code) in [
        (json!({"since": "yesterday"}), "invalid_time"),
        (json!({}), "invalid_json"),
    ] {
        let refused = call("POST", recover, &recover_path, &keyed, Some(body)).await;
        assert_eq!(refused.status(), 400);
        assert_eq!(documented.check("POST", recover, &refused)["code"], code);
    }

    for status in [200, 404] {
        let deleted = call("DELETE", one, &path, &keyed, None).await;
        assert_eq!(deleted.status(), status, "{}", text(&deleted));
        documented.check("DELETE", one, &deleted);
    }

    // At most 20 endpoints per organisation.
    for n in 0..20 {
        // A description always: DynamoDB Local refuses the empty string an
        // endpoint without one is stored with.
        let body = json!({"url": format!("http://127.0.0.1:9/hooks/{n}"), "description": "hook"});
        let created = call("POST", endpoints, endpoints, &globex, Some(body)).await;
        assert_eq!(created.status(), 201, "{}", text(&created));
    }
    let body = json!({"url": "http://127.0.0.1:9/hooks/20", "description": "hook"});
    let full = call("POST", endpoints, endpoints, &globex, Some(body)).await;
    assert_eq!(full.status(), 409, "{}", text(&full));
    assert_eq!(
        documented.check("POST", endpoints, &full)["code"],
        "webhook_endpoint_limit"
    );
    let listed = call("GET", endpoints, endpoints, &globex, None).await;
    assert_eq!(
        documented.check("GET", endpoints, &listed)["endpoints"]
            .as_array()
            .unwrap()
            .len(),
        20
    );
}
