//! Local AWS for callops, shared by `make dev` and the integration tests so
//! both run the same emulators, the same resources and the same plumbing:
//!
//! - [`emulators`]: DynamoDB Local and moto (SQS, SES) on 127.0.0.1;
//! - [`template`]: tables, queues, routes, consumers and schedules read from template.yaml;
//! - [`provision`]: those resources created in the emulators;
//! - [`poller`]: SQS delivery to a worker the way Lambda does it;
//! - [`streams`]: DynamoDB stream delivery the same way, filtered by [`event_filter`];
//! - [`fakes`]: AssemblyAI, Exotel, Slack, Twilio, ElevenLabs and LiveKit servers speaking their wire formats;
//! - [`launchers`]: Slack, Discord and Teams request signing with the dev secrets;
//! - [`lambda_runtime`]: Lambda's Runtime API, to run a function's real binary;
//! - [`server`]: API Gateway's HTTP-to-Lambda translation for the dev server;
//! - [`registry`]: which crate serves (or consumes, or runs on a schedule) each function of the template;
//! - [`config_doc`]: the configuration reference of `docs/configuration.md`, generated from template.yaml.

pub mod bench_cost;
pub mod config_doc;
pub mod dev_env;
pub mod emulators;
pub mod event_filter;
pub mod fakes;
pub mod faults;
pub mod lambda_runtime;
pub mod launchers;
pub mod poller;
pub mod provision;
pub mod registry;
pub mod server;
pub mod streams;
pub mod template;

use std::path::PathBuf;

/// LiveKit credentials of the local stack; public on purpose, like the dev tokens.
pub const DEV_LIVEKIT_API_KEY: &str = "devkey";
pub const DEV_LIVEKIT_API_SECRET: &str = "dev-livekit-secret-change-me-0123456789";

/// A LiveKit webhook `Authorization` token for `body`, made the way LiveKit
/// makes it: HS256 with the API secret, issuer the API key, `sha256` the
/// base64 SHA-256 of the body.
pub fn livekit_webhook_token(
    body: &[u8],
    api_key: &str,
    api_secret: &str,
    valid_for_secs: i64,
) -> String {
    use base64::Engine;
    use sha2::Digest;
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({
        "iss": api_key,
        "nbf": now - 5,
        "exp": now + valid_for_secs,
        "sha256": base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body)),
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(api_secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}

/// The repository root (this crate lives in `tools/devstack`).
pub fn repo_root() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}
