//! What reading credentials from Secrets Manager adds to a cold start: the
//! same release binary started alternately with its credentials in the
//! environment and in moto's Secrets Manager (`<NAME>_SECRET_ARN`), the
//! median init of each, and the difference.

use std::time::{Duration, Instant};

use devstack::emulators::LocalAws;
use devstack::lambda_runtime::{Outcome, RuntimeApi};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Cold starts per way of passing credentials.
const ROUNDS: usize = 9;

/// The credentials each compared function reads (the ones template.yaml
/// gives it as secrets).
pub fn credentials_of(function: &str) -> Option<&'static [&'static str]> {
    Some(match function {
        "zapier-webhook" => &["WEBHOOK_TOKEN"],
        "twilio-voice" => &["TWILIO_AUTH_TOKEN", "LIVEKIT_API_SECRET"],
        "slack-commands" => &[
            "SLACK_SIGNING_SECRET",
            "LIVEKIT_API_SECRET",
            "ROOM_INVITE_SECRET",
        ],
        _ => return None,
    })
}

pub struct SecretsInit {
    pub function: String,
    pub secrets: usize,
    pub env_init: Duration,
    pub secrets_manager_init: Duration,
}

/// Alternates cold starts of `binary` with `credentials` taken from `env` or
/// from secrets created in moto; each answers `event` once, so a credential
/// that was not read shows as a failed invocation.
pub async fn compare(
    function: &str,
    binary: &std::path::Path,
    env: &[(String, String)],
    credentials: &[&str],
    event: impl Fn() -> String,
    local: &LocalAws,
) -> Result<SecretsInit, Error> {
    let client = aws_sdk_secretsmanager::Client::new(&local.sdk_config().await);
    let mut from_secrets = env.to_vec();
    for name in credentials {
        let value = env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| format!("{function}: no {name} in the bench environment"))?;
        let arn = client
            .create_secret()
            .name(format!("bench-{}-{function}-{name}", std::process::id()))
            .secret_string(value)
            .send()
            .await?
            .arn()
            .unwrap_or_default()
            .to_string();
        from_secrets.retain(|(k, _)| k != name);
        from_secrets.push((format!("{name}{}", shared::base::secrets::ARN_SUFFIX), arn));
    }
    let (mut plain, mut secret) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        plain.push(cold_start(binary, env, event()).await?);
        secret.push(cold_start(binary, &from_secrets, event()).await?);
    }
    Ok(SecretsInit {
        function: function.to_string(),
        secrets: credentials.len(),
        env_init: median(plain),
        secrets_manager_init: median(secret),
    })
}

/// Process start to the first `invocation/next`, after checking the first
/// invocation succeeds.
async fn cold_start(
    binary: &std::path::Path,
    env: &[(String, String)],
    event: String,
) -> Result<Duration, Error> {
    let runtime = RuntimeApi::start().await?;
    let started = Instant::now();
    let mut child = runtime.spawn_quiet(binary, env)?;
    let outcome = tokio::time::timeout(Duration::from_secs(30), runtime.invoke(event))
        .await
        .map_err(|_| format!("{} did not answer", binary.display()))??;
    let init = runtime
        .first_poll()
        .await
        .map(|t| t - started)
        .ok_or("no poll")?;
    child.kill().await?;
    let status = match &outcome {
        Outcome::Response(body) => serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|r| r["statusCode"].as_u64()),
        Outcome::Error(_) => None,
    };
    match status {
        Some(code) if code < 400 => Ok(init),
        _ => Err(format!("{}: first invocation failed: {outcome:?}", binary.display()).into()),
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The report's table.
pub fn table(rows: &[SecretsInit]) -> String {
    let mut out = String::from(
        "| function | secrets | init, credentials in env (ms) | init, credentials from Secrets Manager (ms) | difference (ms) |\n|---|---|---|---|---|\n",
    );
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {:.2} | {:.2} | {:+.2} |\n",
            row.function,
            row.secrets,
            row.env_init.as_secs_f64() * 1000.0,
            row.secrets_manager_init.as_secs_f64() * 1000.0,
            (row.secrets_manager_init.as_secs_f64() - row.env_init.as_secs_f64()) * 1000.0
        ));
    }
    out.push_str(&format!(
        "\nMedian of {ROUNDS} alternating cold starts each; moto's Secrets Manager on 127.0.0.1 (plain HTTP, so no TLS handshake: in AWS add one per concurrent read).\n"
    ));
    out
}
