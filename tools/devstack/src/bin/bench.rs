//! `make bench`: cold start, warm latency and peak memory of the release
//! binaries, each run as Lambda runs it: the process talks to a Runtime API
//! (`devstack::lambda_runtime`) while its AWS calls go to the local emulators.
//!
//! Figures are from this machine (x86_64 release builds); Lambda arm64 at
//! 128 MB is slower per CPU-second, so treat them as relative, not absolute.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use devstack::emulators::LocalAws;
use devstack::lambda_runtime::{api_gateway_event as http_event, Outcome, RuntimeApi};
use devstack::provision::provision;
use devstack::template::Template;

#[path = "bench/calls_stream.rs"]
mod calls_stream;
#[path = "bench/campaign_tick.rs"]
mod campaign_tick;
#[path = "bench/secrets_init.rs"]
mod secrets_init;

type Error = Box<dyn std::error::Error + Send + Sync>;

const WARM_INVOCATIONS: usize = 200;
/// Warm invocations of the second run, through the counting proxy.
const METERED_INVOCATIONS: usize = 20;
const WEBHOOK_TOKEN: &str = "bench-webhook-token-0123456789";
const API_TOKEN: &str = "bench-api-token-0123456789";
const TWILIO_TOKEN: &str = "bench-twilio-token";
const PUBLIC_BASE: &str = "https://bench.callops.example.com";

struct Measurement {
    function: String,
    init: Duration,
    first_invoke: Duration,
    p50: Duration,
    p95: Duration,
    p99: Duration,
    peak_rss_kib: u64,
    binary_bytes: u64,
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

async fn measure(
    binary: &std::path::Path,
    env: &[(String, String)],
    events: Vec<String>,
    meter: Option<&devstack::bench_cost::Meter>,
) -> Result<(Duration, Duration, Vec<Duration>, u64), Error> {
    let runtime = RuntimeApi::start().await?;
    let started = Instant::now();
    let mut child = runtime.spawn_quiet(binary, env)?;
    let pid = child.id().unwrap_or(0);
    let mut latencies = Vec::new();
    for event in events {
        if let Some(meter) = meter {
            meter.begin_invocation();
        }
        let sent = Instant::now();
        if let Outcome::Error(body) = runtime.invoke(event).await? {
            return Err(format!("invocation failed: {}", String::from_utf8_lossy(&body)).into());
        }
        latencies.push(sent.elapsed());
    }
    let init = runtime
        .first_poll()
        .await
        .map(|t| t - started)
        .unwrap_or_default();
    let rss = peak_rss_kib(pid);
    child.kill().await?;
    let first = latencies.remove(0);
    Ok((init, first, latencies, rss))
}

/// A stream consumer (`calls-stream`, `whatsapp-stream`) on every batch
/// its stream holds: one run for the figures (the first batch cold), a
/// second through the counting proxy for each record's share of the AWS
/// calls and cost.
async fn bench_stream(
    function: &'static str,
    release: &std::path::Path,
    local: &LocalAws,
    template: &Template,
    resources: &devstack::provision::Resources,
) -> Result<(Measurement, devstack::bench_cost::StreamShare), Error> {
    let batches = calls_stream::batches(function, local, template, resources).await?;
    if batches.len() < 3 {
        return Err(format!(
            "{function}: {} batches in the stream; bench an intake that feeds it first",
            batches.len()
        )
        .into());
    }
    let spec = template
        .function(function)
        .ok_or_else(|| format!("{function} missing from template"))?;
    let mut env: Vec<(String, String)> = resources.function_env(spec);
    env.extend(local.aws_env().into_iter().map(|(k, v)| (k.to_string(), v)));
    let binary = release.join(function);
    let events: Vec<String> = batches.iter().map(|b| b.event.clone()).collect();
    let (init, first, warm, rss) = measure(&binary, &env, events.clone(), None).await?;
    let meter =
        devstack::bench_cost::Meter::start(local.dynamodb_endpoint(), local.moto_endpoint());
    measure(&binary, &meter.env(&env), events, Some(&meter)).await?;
    let used = meter.per_invocation();
    // Warm batches: each with its unmetered duration and its metered calls.
    let shares: Vec<(Duration, usize, devstack::bench_cost::Usage)> = batches[1..]
        .iter()
        .zip(&warm)
        .zip(used.get(1..).unwrap_or_default())
        .map(|((batch, duration), calls)| {
            (
                *duration,
                batch.records,
                devstack::bench_cost::Usage::of(calls),
            )
        })
        .collect();
    let share = devstack::bench_cost::stream_share(&devstack::bench_cost::US_EAST_1, &shares);
    let mut sorted = warm.clone();
    sorted.sort();
    Ok((
        Measurement {
            function: format!("{function} (per batch)"),
            init,
            first_invoke: first,
            p50: percentile(&sorted, 0.5),
            p95: percentile(&sorted, 0.95),
            p99: percentile(&sorted, 0.99),
            peak_rss_kib: rss,
            binary_bytes: std::fs::metadata(&binary)?.len(),
        },
        share,
    ))
}

/// Now, as the launchers' timestamp headers carry it.
fn epoch_secs() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
        .to_string()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let root = devstack::repo_root();
    let release = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("release");
    let local = LocalAws::start()?;
    let template = Template::load(&root.join("template.yaml"))?;
    let resources = provision(&local, &template, &format!("bench{}", std::process::id())).await?;
    let payload = std::fs::read_to_string(root.join("events/payloads/zapier-call.json"))?;
    let payload: serde_json::Value = serde_json::from_str(&payload)?;

    let (api_key, api_key_record) = shared::store::api_keys::generate("bench", "bench");
    shared::store::api_keys::ApiKeyStore::insert(
        &shared::store::api_keys::DynamoApiKeyStore::new(
            local.dynamodb().await,
            resources.table("ApiKeysTable"),
        ),
        &api_key_record,
    )
    .await?;
    // Seed 002's routes talk to LiveKit: the fake, on loopback like the emulators.
    let livekit = devstack::fakes::FakeLiveKit::start(
        devstack::DEV_LIVEKIT_API_KEY,
        devstack::DEV_LIVEKIT_API_SECRET,
    );
    let mut results = Vec::new();
    let mut secrets_rows = Vec::new();
    let mut costs = Vec::new();
    for function in [
        "health",
        "stats",
        "zapier-webhook",
        "exotel-webhook",
        "call-get",
        "livekit-webhook",
        "call-started",
        "whatsapp-message",
        "twilio-voice",
        "room-create",
        "room-join",
        "session-get",
        "sessions-list",
        "slack-commands",
        "discord-interactions",
        "teams-messages",
    ]
    .into_iter()
    .filter(|f| devstack::bench_cost::selected(f))
    {
        let spec = template
            .function(function)
            .ok_or("function missing from template")?;
        let mut env: Vec<(String, String)> = resources.function_env(spec);
        env.extend(local.aws_env().into_iter().map(|(k, v)| (k.to_string(), v)));
        env.push(("WEBHOOK_TOKEN".into(), WEBHOOK_TOKEN.into()));
        env.push(("API_TOKEN".into(), API_TOKEN.into()));
        env.push(("RECORDING_ALLOWED_HOSTS".into(), "127.0.0.1:3100".into()));
        // The bench sets AWS_LAMBDA_FUNCTION_NAME, which alone would refuse loopback recordings.
        env.push(("ALLOW_LOOPBACK_RECORDINGS".into(), "true".into()));
        env.push((
            "LIVEKIT_API_KEY".into(),
            devstack::DEV_LIVEKIT_API_KEY.into(),
        ));
        env.push((
            "LIVEKIT_API_SECRET".into(),
            devstack::DEV_LIVEKIT_API_SECRET.into(),
        ));
        for (name, value) in [
            ("LIVEKIT_URL", livekit.url().to_string()),
            ("TWILIO_AUTH_TOKEN", TWILIO_TOKEN.into()),
            ("PUBLIC_BASE_URL", PUBLIC_BASE.into()),
            ("AGENT_STREAM_URL", "wss://agent.invalid/twilio".into()),
            ("TWILIO_CONNECT_MODE", "stream".into()),
            ("INBOUND_ORG_ID", "bench".into()),
            ("ROOM_INVITE_SECRET", "bench-invite-secret".into()),
            // The per-key limit would otherwise answer 429 after 30 requests.
            ("CALLS_RATE_LIMIT_PER_MINUTE", "1000000".into()),
            // Chat launchers: the dev secrets their events are signed with.
            (
                "SLACK_SIGNING_SECRET",
                devstack::launchers::DEV_SLACK_SIGNING_SECRET.into(),
            ),
            (
                "DISCORD_PUBLIC_KEY",
                devstack::launchers::dev_discord_public_key(),
            ),
            (
                "TEAMS_WEBHOOK_SECRET",
                devstack::launchers::DEV_TEAMS_WEBHOOK_SECRET.into(),
            ),
            // No bot token: the Slack direct message would leave the machine.
            ("SLACK_BOT_TOKEN", String::new()),
        ] {
            env.retain(|(k, _)| k != name);
            env.push((name.into(), value));
        }
        let auth = format!("Bearer {WEBHOOK_TOKEN}");
        let api_auth = format!("Bearer {API_TOKEN}");
        let mut events: Vec<String> = (0..=WARM_INVOCATIONS + METERED_INVOCATIONS)
            .map(|i| match function {
                // New calls every time: the full claim, store, queue, complete path.
                "zapier-webhook" => {
                    let mut body = payload.clone();
                    body["call_id"] = format!("BENCHZ{i}").into();
                    http_event("POST", "/webhook/zapier", "/webhook/zapier", "", &[("authorization", &auth), ("content-type", "application/json")], &body.to_string())
                }
                "exotel-webhook" => http_event(
                    "POST",
                    "/webhook/exotel",
                    "/webhook/exotel",
                    &format!("token={WEBHOOK_TOKEN}"),
                    &[("content-type", "application/x-www-form-urlencoded")],
                    &format!("CallSid=BENCHE{i}&Status=completed&RecordingUrl=http%3A%2F%2F127.0.0.1%3A3100%2Fr.mp3&From=09876543210&To=09631084471&DateUpdated=2025-10-09+23%3A30%3A12"),
                ),
                // Every event new: verify, claim, record the session, queue the notification job.
                "livekit-webhook" => {
                    let body = serde_json::json!({
                        "event": "participant_joined",
                        "room": {"sid": "RM_bench", "name": format!("bench-room-{i}")},
                        "participant": {"identity": "caller", "metadata": "{\"user_email\":\"a@b.com\"}"},
                        "id": format!("EV_bench_{i}"),
                        "createdAt": "1761833709"
                    })
                    .to_string();
                    let token = devstack::livekit_webhook_token(
                        body.as_bytes(),
                        devstack::DEV_LIVEKIT_API_KEY,
                        devstack::DEV_LIVEKIT_API_SECRET,
                        600,
                    );
                    http_event("POST", "/webhook/livekit", "/webhook/livekit", "", &[("authorization", &token), ("content-type", "application/webhook+json")], &body)
                }
                "call-started" => http_event(
                    "POST",
                    "/calls/started",
                    "/calls/started",
                    "",
                    &[("x-api-key", &api_key), ("content-type", "application/json")],
                    &format!("{{\"room_name\":\"bench-started-{i}\",\"user_email\":\"a@b.com\"}}"),
                ),
                // A new message each time: verify, owner lookup, store, reply job.
                "whatsapp-message" => {
                    let sid = format!("SMbench{i:026}");
                    let params = [("MessageSid", sid.as_str()), ("From", "whatsapp:+14155550100"), ("To", "whatsapp:+14155550199"), ("WaId", "14155550100"), ("Body", "Hello"), ("NumMedia", "0")];
                    let signature = devstack::fakes::twilio_signature(TWILIO_TOKEN, &format!("{PUBLIC_BASE}/whatsapp/message"), &params);
                    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
                    http_event("POST", "/whatsapp/message", "/whatsapp/message", "", &[("x-twilio-signature", &signature), ("content-type", "application/x-www-form-urlencoded")], &body)
                }
                // A new call each time: verify, dedup claim, room, dispatch, session, notification.
                "twilio-voice" => {
                    let sid = format!("CAbench{i}");
                    let params = [("CallSid", sid.as_str()), ("From", "+14155550100"), ("To", "+14155550199"), ("Direction", "inbound")];
                    let signature = devstack::fakes::twilio_signature(TWILIO_TOKEN, &format!("{PUBLIC_BASE}/twilio/voice"), &params);
                    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
                    http_event("POST", "/twilio/voice", "/twilio/voice", "", &[("x-twilio-signature", &signature), ("content-type", "application/x-www-form-urlencoded")], &body)
                }
                "room-create" => http_event(
                    "POST",
                    "/room/create",
                    "/room/create",
                    "",
                    &[("x-api-key", &api_key), ("content-type", "application/json")],
                    &format!("{{\"roomName\":\"bench-web-{i}\",\"hostIdentity\":\"host\",\"hostName\":\"Ada\"}}"),
                ),
                "room-join" => http_event(
                    "POST",
                    "/room/join",
                    "/room/join",
                    "",
                    &[("x-api-key", &api_key), ("content-type", "application/json")],
                    &format!("{{\"roomName\":\"bench-web-{}\",\"participantIdentity\":\"user-{i}\",\"participantName\":\"Grace\"}}", i % 50),
                ),
                "session-get" => http_event("GET", "/sessions/{id}", &format!("/sessions/web-bench-web-{}", i % 50), "", &[("x-api-key", &api_key)], ""),
                "sessions-list" => http_event("GET", "/sessions", "/sessions", "", &[("x-api-key", &api_key)], ""),
                // Launchers: a new user, channel or conversation each time, so
                // every event verifies, opens a room, dispatches and announces.
                // Signed when built; the bench runs well inside their 5 minutes.
                "slack-commands" => {
                    let body = format!("team_id=T0BENCH&channel_id=C0BENCH&user_id=U0BENCH{i}&user_name=bench&command=%2Fcall&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2Fbench&trigger_id=bench");
                    let timestamp = epoch_secs();
                    let signature = devstack::launchers::slack_signature(devstack::launchers::DEV_SLACK_SIGNING_SECRET, &timestamp, body.as_bytes());
                    http_event("POST", "/slack/commands", "/slack/commands", "", &[("x-slack-request-timestamp", &timestamp), ("x-slack-signature", &signature), ("content-type", "application/x-www-form-urlencoded")], &body)
                }
                "discord-interactions" => {
                    let body = serde_json::json!({
                        "type": 2, "id": format!("{i}"), "application_id": "1300000000000000000", "token": "bench", "version": 1,
                        "channel_id": format!("13000000000{i:07}"),
                        "member": {"user": {"id": "1300000000000000030", "username": "bench"}},
                        "data": {"id": "1300000000000000040", "name": "call", "type": 1},
                    })
                    .to_string();
                    let timestamp = epoch_secs();
                    let signature = devstack::launchers::discord_signature(&devstack::launchers::DEV_DISCORD_PRIVATE_KEY, &timestamp, body.as_bytes());
                    http_event("POST", "/discord/interactions", "/discord/interactions", "", &[("x-signature-timestamp", &timestamp), ("x-signature-ed25519", &signature), ("content-type", "application/json")], &body)
                }
                "teams-messages" => {
                    let body = serde_json::json!({
                        "type": "message", "text": "<at>callops</at> call",
                        "from": {"id": "29:1bench", "name": "Bench"},
                        "conversation": {"id": format!("19:bench{i}@thread.tacv2")},
                    })
                    .to_string();
                    let authorization = devstack::launchers::teams_authorization(devstack::launchers::DEV_TEAMS_WEBHOOK_SECRET, body.as_bytes());
                    http_event("POST", "/teams/messages", "/teams/messages", "", &[("authorization", &authorization), ("content-type", "application/json")], &body)
                }
                "call-get" => http_event("GET", "/call/{call_id}", &format!("/call/BENCHZ{}", i % 50), "", &[("authorization", &api_auth)], ""),
                other => http_event("GET", &format!("/{other}"), &format!("/{other}"), "", &[], ""),
            })
            .collect();
        let binary = release.join(function);
        if let Some(credentials) = secrets_init::credentials_of(function) {
            let first = events[0].clone();
            secrets_rows.push(
                secrets_init::compare(
                    function,
                    &binary,
                    &env,
                    credentials,
                    || first.clone(),
                    &local,
                )
                .await?,
            );
        }
        let metered_events = events.split_off(WARM_INVOCATIONS + 1);
        let (init, first, mut warm, rss) = measure(&binary, &env, events, None).await?;
        warm.sort();
        // A second run, through the counting proxy, for the AWS calls and units.
        let meter =
            devstack::bench_cost::Meter::start(local.dynamodb_endpoint(), local.moto_endpoint());
        measure(&binary, &meter.env(&env), metered_events, Some(&meter)).await?;
        let (usage, estimated_units) = meter.warm_usage();
        costs.push(devstack::bench_cost::Row {
            function: function.to_string(),
            warm_p50: percentile(&warm, 0.5),
            warm_p99: percentile(&warm, 0.99),
            usage,
            estimated_units,
            operations: meter.warm_operations(),
        });
        results.push(Measurement {
            function: function.to_string(),
            init,
            first_invoke: first,
            p50: percentile(&warm, 0.5),
            p95: percentile(&warm, 0.95),
            p99: percentile(&warm, 0.99),
            peak_rss_kib: rss,
            binary_bytes: std::fs::metadata(&binary)?.len(),
        });
    }

    // The stream consumers last: their batches are the records the intake
    // benches above wrote.
    let mut stream_shares = Vec::new();
    for function in ["calls-stream", "whatsapp-stream"] {
        if devstack::bench_cost::selected(function) {
            let (measurement, share) =
                bench_stream(function, &release, &local, &template, &resources).await?;
            results.push(measurement);
            stream_shares.push((function.to_string(), share));
        }
    }

    // The campaign tick last: it seeds its own 20,000 recipients.
    let campaign_ticks = if devstack::bench_cost::selected("campaign-tick") {
        campaign_tick::bench(&release, &local, &template, &resources).await?
    } else {
        Vec::new()
    };

    let mut report = String::from(
        "| function | init (ms) | first invoke (ms) | warm p50 (ms) | warm p95 (ms) | warm p99 (ms) | peak RSS (MiB) | x86_64 release binary (MiB) |\n|---|---|---|---|---|---|---|---|\n",
    );
    for m in &results {
        report.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.1} | {:.1} |\n",
            m.function,
            ms(m.init),
            ms(m.first_invoke),
            ms(m.p50),
            ms(m.p95),
            ms(m.p99),
            m.peak_rss_kib as f64 / 1024.0,
            m.binary_bytes as f64 / (1024.0 * 1024.0)
        ));
    }
    report.push_str(&format!(
        "\n{WARM_INVOCATIONS} warm invocations per function after one cold one; AWS calls go to DynamoDB Local and moto on 127.0.0.1, LiveKit calls to the fake LiveKit on 127.0.0.1. sessions-list lists the bench organisation's ~400 active sessions (every room and call opened above). The chat launchers open a new room per event (their sessions belong to INBOUND_ORG_ID) and answer with a join link; no Slack direct message is sent.\n"
    ));
    report.push_str(&devstack::bench_cost::report(
        &costs,
        METERED_INVOCATIONS,
        &stream_shares,
    ));
    if !campaign_ticks.is_empty() {
        report.push_str(&campaign_tick::table(&campaign_ticks));
    }
    report.push_str("\n### Credentials from Secrets Manager at cold start\n\n");
    report.push_str(&secrets_init::table(&secrets_rows));
    println!("{report}");
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("report.md"), report)?;
    Ok(())
}
