//! Credentials from Secrets Manager (moto), the path production takes: the
//! real `twilio-routing` binary reads its Twilio token and SIP password at
//! cold start; a missing secret, or one the role may not read, fails the cold
//! start with the variable's name and never falls back to another value.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use devstack::emulators::IamEnforcingMoto;
use devstack::lambda_runtime::{api_gateway_event, Outcome, RuntimeApi};
use shared::base::secrets::{self, SecretRef, SecretsError};
use tokio::sync::OnceCell;

use crate::support::local;

const PUBLIC_BASE: &str = "https://secrets.callops.example.com";
const ROUTE: &str = "/twilio/routing";
/// What the environment says; the secret must win over it.
const STALE_ENV_TOKEN: &str = "stale-token-from-the-environment";

fn unique(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::new_v4().simple())
}

async fn secrets_client(sdk: &aws_config::SdkConfig) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(sdk)
}

async fn create_secret(client: &aws_sdk_secretsmanager::Client, value: &str) -> String {
    client
        .create_secret()
        .name(unique("callops-test"))
        .secret_string(value)
        .send()
        .await
        .expect("create secret in moto")
        .arn()
        .expect("moto returns the ARN")
        .to_string()
}

fn wanted(name: &str, secret_id: &str) -> SecretRef {
    SecretRef {
        name: name.into(),
        secret_id: secret_id.into(),
    }
}

/// The debug build of `twilio-routing`, beside this test binary
/// (`cargo test --workspace` builds it; a narrower run builds it here).
async fn routing_binary() -> PathBuf {
    static BUILT: OnceCell<PathBuf> = OnceCell::const_new();
    BUILT
        .get_or_init(|| async {
            let exe = std::env::current_exe().expect("test binary path");
            let dir = exe
                .parent()
                .and_then(|deps| deps.parent())
                .expect("target/<profile>/deps");
            let binary = dir.join("twilio-routing");
            if !binary.exists() {
                let status = tokio::process::Command::new(env!("CARGO"))
                    .args(["build", "-p", "twilio-routing", "--bin", "twilio-routing"])
                    .status()
                    .await
                    .expect("run cargo build");
                assert!(status.success(), "cargo build -p twilio-routing failed");
            }
            binary
        })
        .await
        .clone()
}

/// Starts `twilio-routing` as Lambda would, with `aws` (endpoints and
/// credentials) and `env`, against a fresh Runtime API.
async fn cold_start(
    aws: &[(&str, String)],
    env: &[(&str, String)],
) -> (tokio::process::Child, RuntimeApi) {
    let runtime = RuntimeApi::start().await.expect("runtime API");
    let child = tokio::process::Command::new(routing_binary().await)
        .env_clear()
        .envs(aws.iter().map(|(k, v)| (*k, v.as_str())))
        .envs(runtime.lambda_env())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("PUBLIC_BASE_URL", PUBLIC_BASE)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start twilio-routing");
    (child, runtime)
}

/// The process's whole output once it has exited (a failed cold start).
async fn failed_start(child: tokio::process::Child) -> String {
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("a failing cold start exits")
        .expect("collect output");
    assert!(
        !output.status.success(),
        "the cold start must fail, exited {}",
        output.status
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn routing_event(token: &str, call_sid: &str) -> String {
    let params = [("CallSid", call_sid), ("From", "+14155550100")];
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let signature =
        shared::providers::twilio::signature(token, &format!("{PUBLIC_BASE}{ROUTE}"), &owned);
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    api_gateway_event(
        "POST",
        ROUTE,
        ROUTE,
        "",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-twilio-signature", &signature),
        ],
        &body,
    )
}

/// The API Gateway response a function posted: (status, body).
fn http_response(outcome: Outcome) -> (u16, String) {
    let Outcome::Response(bytes) = outcome else {
        panic!("the invocation failed: {outcome:?}");
    };
    let response: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON response");
    (
        response["statusCode"].as_u64().unwrap_or_default() as u16,
        response["body"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn fetch_reads_every_requested_secret_concurrently() {
    let client = secrets_client(&local().sdk_config().await).await;
    let token = create_secret(&client, "twilio-token-value").await;
    let password = create_secret(&client, "sip-password-value").await;
    let values = secrets::fetch(
        &client,
        &[
            wanted("TWILIO_AUTH_TOKEN", &token),
            wanted("LIVEKIT_SIP_PASSWORD", &password),
        ],
    )
    .await
    .expect("both secrets read");
    assert_eq!(values.len(), 2);
    assert_eq!(values["TWILIO_AUTH_TOKEN"], "twilio-token-value");
    assert_eq!(values["LIVEKIT_SIP_PASSWORD"], "sip-password-value");
}

#[tokio::test]
async fn a_missing_secret_is_refused_by_its_variable_name() {
    let client = secrets_client(&local().sdk_config().await).await;
    let present = create_secret(&client, "present").await;
    let missing = format!("{}-gone", unique("callops-test"));
    let err = secrets::fetch(
        &client,
        &[
            wanted("TWILIO_AUTH_TOKEN", &present),
            wanted("WEBHOOK_TOKEN", &missing),
        ],
    )
    .await
    .expect_err("a missing secret fails the load");
    match &err {
        SecretsError::NotFound { name, secret_id } => {
            assert_eq!(name, "WEBHOOK_TOKEN");
            assert_eq!(secret_id, &missing);
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(
        err.to_string().contains("WEBHOOK_TOKEN_SECRET_ARN"),
        "{err}"
    );
}

#[tokio::test]
async fn an_empty_secret_is_refused_not_used() {
    let client = secrets_client(&local().sdk_config().await).await;
    let blank = create_secret(&client, "   ").await;
    let err = secrets::fetch(&client, &[wanted("API_TOKEN", &blank)])
        .await
        .expect_err("a blank secret is no credential");
    assert!(matches!(err, SecretsError::Empty { .. }), "{err:?}");
}

#[tokio::test]
async fn a_function_reads_its_credentials_from_secrets_manager_at_cold_start() {
    let client = secrets_client(&local().sdk_config().await).await;
    let token_value = "twilio-token-kept-in-secrets-manager";
    let token = create_secret(&client, token_value).await;
    let password = create_secret(&client, "sip-password-kept-in-secrets-manager").await;
    let (mut child, runtime) = cold_start(
        &local().aws_env(),
        &[
            ("TWILIO_AUTH_TOKEN_SECRET_ARN", token),
            ("LIVEKIT_SIP_PASSWORD_SECRET_ARN", password),
            ("TWILIO_AUTH_TOKEN", STALE_ENV_TOKEN.into()),
            ("TWILIO_CONNECT_MODE", "sip".into()),
            ("LIVEKIT_SIP_ENDPOINT", "sip.example.livekit.cloud".into()),
            ("LIVEKIT_SIP_USERNAME", "callops".into()),
        ],
    )
    .await;

    let call_sid = "CA0123456789abcdef0123456789abcdef";
    let (status, twiml) = http_response(
        runtime
            .invoke(routing_event(token_value, call_sid))
            .await
            .expect("invocation answered"),
    );
    assert_eq!(status, 200, "{twiml}");
    assert!(
        twiml.contains("password=\"sip-password-kept-in-secrets-manager\""),
        "the SIP password comes from its secret: {twiml}"
    );
    assert!(twiml.contains(call_sid), "{twiml}");

    // The environment's value is not a fallback: a request signed with it is refused.
    let (status, body) = http_response(
        runtime
            .invoke(routing_event(STALE_ENV_TOKEN, call_sid))
            .await
            .expect("invocation answered"),
    );
    assert!((400..500).contains(&status), "{status} {body}");
    let _ = child.kill().await;
}

#[tokio::test]
async fn a_missing_secret_fails_the_cold_start_by_name() {
    let missing = format!(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:{}",
        unique("gone")
    );
    let (child, runtime) = cold_start(
        &local().aws_env(),
        &[
            ("TWILIO_AUTH_TOKEN_SECRET_ARN", missing.clone()),
            ("TWILIO_AUTH_TOKEN", STALE_ENV_TOKEN.into()),
            ("AGENT_STREAM_URL", "wss://agent.example.com/stream".into()),
        ],
    )
    .await;
    let output = failed_start(child).await;
    assert!(output.contains("TWILIO_AUTH_TOKEN"), "{output}");
    assert!(output.contains("does not exist"), "{output}");
    assert!(output.contains(&missing), "{output}");
    assert!(
        !output.contains(STALE_ENV_TOKEN),
        "no value in the logs: {output}"
    );
    assert!(
        runtime.first_poll().await.is_none(),
        "a function that failed its cold start never asks for work"
    );
}

/// moto's IAM API (query protocol), during its unauthenticated setup phase.
async fn iam(endpoint: &str, params: &[(&str, &str)]) -> String {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .append_pair("Version", "2010-05-08")
        .finish();
    let response = reqwest::Client::new()
        .post(endpoint)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0",
        )
        .send()
        .await
        .expect("moto IAM");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "IAM {params:?}: {status} {text}");
    text
}

fn xml_field(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml.find(&open).expect(tag) + open.len();
    let end = xml[start..].find(&format!("</{tag}>")).expect(tag) + start;
    xml[start..end].to_string()
}

/// A user with an access key, allowed `secretsmanager:GetSecretValue` or not.
async fn user(endpoint: &str, name: &str, may_read_secrets: bool) -> (String, String) {
    iam(endpoint, &[("Action", "CreateUser"), ("UserName", name)]).await;
    if may_read_secrets {
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]
        })
        .to_string();
        iam(
            endpoint,
            &[
                ("Action", "PutUserPolicy"),
                ("UserName", name),
                ("PolicyName", "read-secrets"),
                ("PolicyDocument", &policy),
            ],
        )
        .await;
    }
    let key = iam(
        endpoint,
        &[("Action", "CreateAccessKey"), ("UserName", name)],
    )
    .await;
    (
        xml_field(&key, "AccessKeyId"),
        xml_field(&key, "SecretAccessKey"),
    )
}

#[tokio::test]
async fn a_secret_the_role_may_not_read_fails_the_cold_start() {
    // Setup, unauthenticated: one secret, a reader (user, policy, key) and a
    // user without the permission (user, key). Everything after is checked.
    let moto = IamEnforcingMoto::start(6).expect("moto with IAM enforced");
    let setup = secrets_client(&moto.sdk_config("test", "test").await).await;
    let token = create_secret(&setup, "twilio-token-behind-iam").await;
    let reader = user(&moto.endpoint, "reader", true).await;
    let outsider = user(&moto.endpoint, "outsider", false).await;

    // The enforcement discriminates: the reader may read it...
    let as_reader = secrets_client(&moto.sdk_config(&reader.0, &reader.1).await).await;
    let values = secrets::fetch(&as_reader, &[wanted("TWILIO_AUTH_TOKEN", &token)])
        .await
        .expect("the reader may read");
    assert_eq!(values["TWILIO_AUTH_TOKEN"], "twilio-token-behind-iam");

    // ...the other role may not, and its function does not start.
    let as_outsider = secrets_client(&moto.sdk_config(&outsider.0, &outsider.1).await).await;
    let err = secrets::fetch(&as_outsider, &[wanted("TWILIO_AUTH_TOKEN", &token)])
        .await
        .expect_err("no permission, no secret");
    assert!(matches!(err, SecretsError::Forbidden { .. }), "{err:?}");

    let (child, runtime) = cold_start(
        &[
            ("AWS_ENDPOINT_URL", moto.endpoint.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", outsider.0.clone()),
            ("AWS_SECRET_ACCESS_KEY", outsider.1.clone()),
        ],
        &[
            ("TWILIO_AUTH_TOKEN_SECRET_ARN", token.clone()),
            ("TWILIO_AUTH_TOKEN", STALE_ENV_TOKEN.into()),
            ("AGENT_STREAM_URL", "wss://agent.example.com/stream".into()),
        ],
    )
    .await;
    let output = failed_start(child).await;
    assert!(output.contains("TWILIO_AUTH_TOKEN"), "{output}");
    assert!(output.contains("may not read"), "{output}");
    assert!(output.contains("secretsmanager:GetSecretValue"), "{output}");
    assert!(runtime.first_poll().await.is_none());
}
