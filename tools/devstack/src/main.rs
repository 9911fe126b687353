//! `make dev`: the whole system on 127.0.0.1. Emulators, tables and queues
//! from template.yaml, every HTTP function at its template path, every queue
//! consumer polling its queue, every stream consumer reading its table's
//! stream through the template's filters, every scheduled function run at its rate
//! (`DEV_SCHEDULE_SECONDS=n` runs them all every n seconds instead), and, for
//! providers without credentials, the same fakes the tests use (the console
//! channel prints notifications).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use devstack::dev_env;
use devstack::emulators::LocalAws;
use devstack::fakes::{FakeAssemblyAi, FakeExotel};
use devstack::poller::QueuePoller;
use devstack::provision::provision;
use devstack::registry::{
    http_handler, queue_consumer, scheduled_job, stream_consumer, ScheduledJob,
};
use devstack::server::{serve, Cors, Route};
use devstack::streams::StreamPoller;
use devstack::template::Template;

type Error = Box<dyn std::error::Error + Send + Sync>;

const DEV_WEBHOOK_TOKEN: &str = "dev-webhook-token-change-me";
const DEV_API_TOKEN: &str = "dev-api-token-change-me";
const DEV_ADMIN_TOKEN: &str = "dev-admin-token-change-me";
/// The organisation the dev API key belongs to: the one
/// `events/payloads/organisation.json` creates, so the README's walk-through
/// places calls with the printed key.
const DEV_ORG_ID: &str = "acme";
/// The second organisation of the two-organisation walk-through.
const DEV_SECOND_ORG_ID: &str = "globex";
/// `caller_number` of events/payloads/assistant.json, registered to `acme`.
const DEV_ASSISTANT_CALLER_ID: &str = "+14155552672";
const DEV_ROOM_INVITE_SECRET: &str = "dev-room-invite-secret-change-me";
const DEV_ELEVENLABS_WEBHOOK_SECRET: &str = "dev-elevenlabs-webhook-secret";
const DEV_TWILIO_ACCOUNT_SID: &str = "AC00000000000000000000000000000dev";
const DEV_TWILIO_AUTH_TOKEN: &str = "dev-twilio-auth-token";
/// A second account the fake Twilio serves: an organisation's own account
/// for the walk-through in docs/tenancy.md.
const DEV_ORG_TWILIO_ACCOUNT_SID: &str = "AC00000000000000000000000000000b0b";
const DEV_ORG_TWILIO_AUTH_TOKEN: &str = "dev-org-twilio-auth-token";
/// The bot token organisations give as their own Slack in `make dev`: the
/// fake Slack accepts it in any channel and prints each post.
const DEV_ORG_SLACK_BOT_TOKEN: &str = "xoxb-dev-org-slack-token";
const DEV_LLM_API_KEY: &str = "dev-llm-key";
const DEV_ELEVENLABS_API_KEY: &str = "dev-elevenlabs-key";
/// Sample recordings live here so `events/` payloads can name a fixed URL
/// (`FAKE_EXOTEL_PORT` moves it).
const FAKE_EXOTEL_PORT: u16 = 3100;
/// Where a web front end's dev server (Vite's default port) runs, so a
/// browser app can call `make dev` without configuring anything.
const DEV_ALLOWED_ORIGINS: &str = "http://localhost:5173,http://127.0.0.1:5173";

/// `KEY=VALUE` lines from `.env`; the real environment wins.
fn load_dotenv() {
    let Ok(text) = std::fs::read_to_string(devstack::repo_root().join(".env")) else {
        return;
    };
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if let Some((key, value)) = line.split_once('=') {
            let key = key.trim().trim_start_matches("export ").trim();
            let value = value.trim().trim_matches('"').trim_matches('\'');
            if std::env::var_os(key).is_none() {
                std::env::set_var(key, value);
            }
        }
    }
}

fn default_env(key: &str, value: &str) {
    if std::env::var(key).map(|v| v.is_empty()).unwrap_or(true) {
        std::env::set_var(key, value);
    }
}

/// `DEV_SCHEDULE_SECONDS=n`: run every scheduled function every n seconds
/// instead of at its template rate, so a 5-minute sweep can be watched locally.
fn schedule_override() -> Result<Option<Duration>, Error> {
    match std::env::var(dev_env::DEV_SCHEDULE_SECONDS) {
        Ok(value) if !value.trim().is_empty() => match value.trim().parse::<u64>() {
            Ok(seconds) if seconds > 0 => Ok(Some(Duration::from_secs(seconds))),
            _ => Err(format!(
                "{}={value}: expected a positive number of seconds",
                dev_env::DEV_SCHEDULE_SECONDS
            )
            .into()),
        },
        _ => Ok(None),
    }
}

/// `5m`, `1h`, `2d`, `90s`.
fn short_duration(every: Duration) -> String {
    let seconds = every.as_secs();
    match seconds {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Prints the documented dev default, never a token the user configured.
fn shown_token(key: &str, dev_default: &str) -> String {
    match std::env::var(key) {
        Ok(value) if value == dev_default => value,
        _ => "(from your environment)".into(),
    }
}

/// The fake Exotel's address: `FAKE_EXOTEL_PORT` (default 3100), or a free
/// port when that one is taken (a second `make dev`, or one beside
/// `make test`), said on the console since `events/` payloads name 3100.
fn fake_exotel_addr() -> Result<String, Error> {
    let port = match std::env::var(dev_env::FAKE_EXOTEL_PORT) {
        Ok(port) => port
            .parse::<u16>()
            .map_err(|e| format!("{}={port:?} is not a port: {e}", dev_env::FAKE_EXOTEL_PORT))?,
        Err(_) => FAKE_EXOTEL_PORT,
    };
    loopback_port_or_free(port)
}

/// `127.0.0.1:<port>` if it can be bound now, else a free loopback port.
fn loopback_port_or_free(port: u16) -> Result<String, Error> {
    if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
        return Ok(format!("127.0.0.1:{port}"));
    }
    let free = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    println!(
        "127.0.0.1:{port} is taken: fake Exotel recordings at 127.0.0.1:{free} instead \
         (the sample payloads in events/ name port {port})"
    );
    Ok(format!("127.0.0.1:{free}"))
}

fn main() -> Result<(), Error> {
    load_dotenv();
    shared::base::telemetry::init();
    let port: u16 = std::env::var(dev_env::PORT)
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let schedule_every = schedule_override()?;
    // A real agent LLM only when one is configured before the template's defaults apply.
    let real_llm = std::env::var("AGENT_LLM_BASE_URL")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let local = LocalAws::start()?;
    let template = Template::load(&devstack::repo_root().join("template.yaml"))?;

    // Provision on a throwaway runtime; the environment is set before the
    // real runtime starts threads that read it.
    let resources = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(provision(&local, &template, "callops-dev"))?;
    for (key, value) in local.aws_env() {
        std::env::set_var(key, value);
    }
    let mut env: HashMap<String, String> = HashMap::new();
    for function in &template.functions {
        env.extend(resources.function_env(function));
    }
    for (key, value) in &env {
        if key != dev_env::RUST_LOG {
            std::env::set_var(key, value);
        }
    }
    default_env("WEBHOOK_TOKEN", DEV_WEBHOOK_TOKEN);
    default_env("API_TOKEN", DEV_API_TOKEN);
    default_env("TRANSCRIPTION_RECHECK_SECONDS", "2");
    default_env("LIVEKIT_API_KEY", devstack::DEV_LIVEKIT_API_KEY);
    default_env("ADMIN_API_TOKEN", DEV_ADMIN_TOKEN);
    default_env("ELEVENLABS_WEBHOOK_SECRET", DEV_ELEVENLABS_WEBHOOK_SECRET);
    default_env("PUBLIC_BASE_URL", &format!("http://127.0.0.1:{port}"));
    default_env("MONITOR_INTERVAL_SECONDS", "2");
    // Organisations' own provider accounts live in moto's Secrets Manager.
    default_env("ORG_SECRETS_PREFIX", "callops/callops-dev/org");
    default_env(dev_env::ALLOWED_ORIGINS, DEV_ALLOWED_ORIGINS);
    // Seed 002: calls to the dev number belong to the dev organisation; the
    // agent's media stream is a placeholder (no agent runs locally); the
    // invite secret is public like the other dev tokens.
    default_env("INBOUND_ORG_ID", DEV_ORG_ID);
    default_env("AGENT_STREAM_URL", "wss://agent.invalid/twilio");
    default_env("ROOM_INVITE_SECRET", DEV_ROOM_INVITE_SECRET);
    default_env("RECORDINGS_BUCKET", "callops-dev-recordings");
    // WhatsApp: Twilio's sandbox sender; a fake LLM unless AGENT_LLM_BASE_URL is set.
    default_env("TWILIO_WHATSAPP_NUMBER", "+14155238886");
    default_env(
        "WHATSAPP_FALLBACK_REPLY",
        "Sorry, I cannot answer right now. Please try again later.",
    );
    if let Some(url) = &real_llm {
        std::env::set_var("AGENT_LLM_BASE_URL", url);
    }
    // Chat launchers: public dev secrets, so requests signed with
    // `--bin launcher-sign` (the dev Discord key pair included) are accepted.
    default_env(
        "SLACK_SIGNING_SECRET",
        devstack::launchers::DEV_SLACK_SIGNING_SECRET,
    );
    default_env(
        "DISCORD_PUBLIC_KEY",
        &devstack::launchers::dev_discord_public_key(),
    );
    default_env(
        "TEAMS_WEBHOOK_SECRET",
        devstack::launchers::DEV_TEAMS_WEBHOOK_SECRET,
    );
    let cors = Cors::from_env();
    let fake_telephony = std::env::var("TWILIO_ACCOUNT_SID")
        .map(|v| v.is_empty())
        .unwrap_or(true)
        && std::env::var("ELEVENLABS_API_KEY")
            .map(|v| v.is_empty())
            .unwrap_or(true);
    if fake_telephony {
        std::env::set_var("TWILIO_ACCOUNT_SID", DEV_TWILIO_ACCOUNT_SID);
        std::env::set_var("TWILIO_AUTH_TOKEN", DEV_TWILIO_AUTH_TOKEN);
        default_env("TWILIO_PHONE_NUMBER", "+14155550100");
        std::env::set_var("ELEVENLABS_API_KEY", DEV_ELEVENLABS_API_KEY);
        default_env("ELEVEN_LABS_AGENT_ID", "agent_dev");
        default_env("PHONE_NUMBER_ID", "phnum_dev");
    }
    default_env("LIVEKIT_API_SECRET", devstack::DEV_LIVEKIT_API_SECRET);
    let fake_providers = std::env::var("ASSEMBLYAI_API_KEY")
        .map(|v| v.is_empty())
        .unwrap_or(true);
    let exotel_addr = fake_exotel_addr()?;
    if fake_providers {
        default_env("EXOTEL_API_KEY", "dev-exotel-key");
        default_env("EXOTEL_API_TOKEN", "dev-exotel-token");
        let allowed = std::env::var("RECORDING_ALLOWED_HOSTS")
            .unwrap_or_else(|_| shared::flows::ingest::DEFAULT_RECORDING_HOSTS.into());
        std::env::set_var(
            "RECORDING_ALLOWED_HOSTS",
            format!("{allowed},{exotel_addr}"),
        );
    }

    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async move {
        // Kept alive for the life of the server.
        let _fakes = if fake_providers {
            let exotel = FakeExotel::start_at(
                &exotel_addr,
                &std::env::var("EXOTEL_API_KEY")?,
                &std::env::var("EXOTEL_API_TOKEN")?,
            );
            let assemblyai = FakeAssemblyAi::start("dev-assemblyai-key");
            std::env::set_var("ASSEMBLYAI_API_KEY", "dev-assemblyai-key");
            std::env::set_var("ASSEMBLYAI_BASE_URL", assemblyai.base_url());
            std::env::set_var("EXOTEL_BASE_URL", exotel.base_url());
            println!("fake AssemblyAI at {} and fake Exotel recordings at {}", assemblyai.base_url(), exotel.base_url());
            Some((exotel, assemblyai))
        } else {
            None
        };

        // SES (moto) sends only from verified identities, as the real one does.
        for key in ["NOTIFICATION_EMAIL", "NOTIFICATION_FROM_EMAIL"] {
            if let Ok(address) = std::env::var(key) {
                if !address.is_empty() {
                    local.ses().await.create_email_identity().email_identity(address).send().await?;
                }
            }
        }

        // A ready-to-use API key of organisation `acme` (dev only: printed below).
        // And one of `globex`, the second organisation of docs/tenancy.md's walk-through.
        let store = shared::store::api_keys::DynamoApiKeyStore::new(local.dynamodb().await, resources.table("ApiKeysTable"));
        let mut dev_keys = Vec::new();
        for org in [DEV_ORG_ID, DEV_SECOND_ORG_ID] {
            let (key, record) = shared::store::api_keys::generate("dev", org);
            shared::store::api_keys::ApiKeyStore::insert(&store, &record).await?;
            dev_keys.push(key);
        }
        let (dev_api_key, second_api_key) = (&dev_keys[0], &dev_keys[1]);
        // The caller number of the sample assistant (events/payloads/assistant.json)
        // is `acme`'s, so docs/outbound-calls.md's /calls/initiate works as written:
        // an organisation calls only from numbers the registry gives it.
        let tenancy = shared::store::tenancy::DynamoTenancyStore::new(local.dynamodb().await, resources.table("TenancyTable"));
        shared::store::tenancy::TenancyStore::claim(
            &tenancy,
            &shared::store::tenancy::Kind::Voice.key(DEV_ASSISTANT_CALLER_ID),
            DEV_ORG_ID,
        )
        .await?;

        // Fake telephony providers when none are configured, kept alive with the server.
        let _telephony = if fake_telephony {
            let twilio = devstack::fakes::FakeTwilio::start(DEV_TWILIO_ACCOUNT_SID, DEV_TWILIO_AUTH_TOKEN);
            twilio.add_account(DEV_ORG_TWILIO_ACCOUNT_SID, DEV_ORG_TWILIO_AUTH_TOKEN);
            // Placed calls play out: TwiML fetched, status callbacks, a 42 s call.
            twilio.simulate_calls(42);
            // Sent WhatsApp messages report their statuses like Twilio's.
            twilio.simulate_message_statuses(&["sent", "delivered", "read"]);
            let elevenlabs = devstack::fakes::FakeElevenLabs::start(DEV_ELEVENLABS_API_KEY);
            std::env::set_var("TWILIO_API_BASE_URL", twilio.base_url());
            std::env::set_var("ELEVENLABS_BASE_URL", elevenlabs.base_url());
            println!("fake Twilio at {} and fake ElevenLabs at {}", twilio.base_url(), elevenlabs.base_url());
            println!(
                "fake Twilio also serves account {DEV_ORG_TWILIO_ACCOUNT_SID} (auth token {DEV_ORG_TWILIO_AUTH_TOKEN}) for an organisation of its own"
            );
            Some((twilio, elevenlabs))
        } else {
            None
        };
        // Organisations' own Slack bots post to a fake Slack that prints what
        // it gets, unless a real Slack API is configured.
        let _org_slack = if std::env::var("SLACK_API_BASE_URL").map(|v| v.is_empty()).unwrap_or(true)
            && std::env::var("SLACK_BOT_TOKEN").map(|v| v.is_empty()).unwrap_or(true)
        {
            let slack = devstack::fakes::FakeSlack::start();
            slack.set_bot_token(DEV_ORG_SLACK_BOT_TOKEN);
            slack.echo_posts();
            std::env::set_var("SLACK_API_BASE_URL", format!("{}/api", slack.base_url()));
            println!("fake Slack at {} for organisations' own notification routes (bot token {DEV_ORG_SLACK_BOT_TOKEN}, any channel)", slack.base_url());
            Some(slack)
        } else {
            None
        };
        // Fake LiveKit unless a real one is configured, with the key and
        // secret the functions sign with (the dev pair unless set), kept
        // alive with the server.
        let _livekit = if std::env::var("LIVEKIT_URL").map(|v| v.is_empty()).unwrap_or(true) {
            let key = std::env::var("LIVEKIT_API_KEY").unwrap_or_else(|_| devstack::DEV_LIVEKIT_API_KEY.into());
            let secret = std::env::var("LIVEKIT_API_SECRET").unwrap_or_else(|_| devstack::DEV_LIVEKIT_API_SECRET.into());
            let livekit = devstack::fakes::FakeLiveKit::start(&key, &secret);
            std::env::set_var("LIVEKIT_URL", livekit.url());
            println!("fake LiveKit at {}", livekit.url());
            Some(livekit)
        } else {
            None
        };
        default_env("LIVEKIT_AGENT_NAME", "callops-agent");
        // Fake OpenAI-compatible LLM for the WhatsApp agent, kept alive with the server.
        let _llm = if real_llm.is_none() {
            let llm = devstack::fakes::FakeLlm::start(DEV_LLM_API_KEY);
            std::env::set_var("AGENT_LLM_BASE_URL", llm.base_url());
            std::env::set_var("AGENT_LLM_API_KEY", DEV_LLM_API_KEY);
            println!("fake LLM at {} (set AGENT_LLM_BASE_URL and AGENT_LLM_API_KEY for a real one)", llm.base_url());
            Some(llm)
        } else {
            None
        };

        let sqs = local.sqs().await;
        for function in template.functions.iter() {
            if function.sqs.is_empty() {
                continue;
            }
            let consumer = queue_consumer(&function.binary).await?;
            for trigger in function.sqs.clone() {
            let worker = Arc::clone(&consumer);
            let poller = QueuePoller {
                sqs: sqs.clone(),
                queue_url: resources.queue(&trigger.queue),
                batch_size: trigger.batch_size,
                wait: Duration::from_secs(2),
                retry_after: Duration::from_secs(5),
            };
            let name = function.binary.clone();
            tokio::spawn(async move {
                loop {
                    let worker = Arc::clone(&worker);
                    match poller.poll_once(move |event| worker(event)).await {
                        Ok(report) if !report.failed.is_empty() => {
                            tracing::warn!(consumer = %name, failed = report.failed.len(), "messages left for retry");
                        }
                        Ok(_) => {}
                        Err(err) => {
                            tracing::error!(consumer = %name, error = %err, "poll failed");
                            tokio::time::sleep(Duration::from_secs(2)).await;
                        }
                    }
                }
            });
            }
        }

        // Stream consumers: a poll every 200 ms when there is nothing to
        // hand over, or after a failed batch (Lambda backs off before a retry).
        let streams = local.dynamodb_streams().await;
        for function in template.functions.iter() {
            if function.streams.is_empty() {
                continue;
            }
            let consumer = stream_consumer(&function.binary).await?;
            for trigger in function.streams.clone() {
                println!(
                    "  stream of {} ({} filter{})  -> {}",
                    trigger.table,
                    trigger.filters.len(),
                    if trigger.filters.len() == 1 { "" } else { "s" },
                    function.binary
                );
                let on_failure = trigger.on_failure.as_ref().map(|queue| resources.queue(queue));
                let mut poller = StreamPoller::new(
                    local.dynamodb().await,
                    streams.clone(),
                    resources.table(&trigger.table),
                    trigger,
                    on_failure,
                    sqs.clone(),
                )
                .for_function(&function.binary);
                let worker = Arc::clone(&consumer);
                let name = function.binary.clone();
                tokio::spawn(async move {
                    loop {
                        let worker = Arc::clone(&worker);
                        let idle = match poller.poll_once(move |event| worker(event)).await {
                            Ok(report) => {
                                if !report.failed.is_empty() {
                                    tracing::warn!(consumer = %name, failed = report.failed.len(), "records left for retry");
                                }
                                if !report.on_failure.is_empty() {
                                    tracing::error!(consumer = %name, batches = report.on_failure.len(), "retries exhausted: sent to the on-failure queue");
                                }
                                report.batches == 0 || !report.failed.is_empty()
                            }
                            Err(err) => {
                                tracing::error!(consumer = %name, error = %err, "stream poll failed");
                                tokio::time::sleep(Duration::from_secs(2)).await;
                                false
                            }
                        };
                        if idle {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                });
            }
        }

        let mut routes = Vec::new();
        for function in &template.functions {
            if function.routes.is_empty() {
                continue;
            }
            let handler = http_handler(&function.binary).await?;
            for route in &function.routes {
                println!("  {:<6} http://127.0.0.1:{port}{}  -> {}", route.method, route.path, function.binary);
                routes.push(Route {
                    method: route.method.clone(),
                    path: route.path.clone(),
                    handler: Arc::clone(&handler),
                });
            }
        }
        // Scheduled functions: first run one interval after start, like a new
        // EventBridge rule; runs of one schedule never overlap locally.
        let mut jobs: HashMap<String, ScheduledJob> = HashMap::new();
        let mut scheduled = Vec::new();
        for schedule in &template.schedules {
            let rate = short_duration(schedule.every);
            if !schedule.enabled {
                println!("  every {rate:<4} (disabled in template.yaml, not run)  -> {}", schedule.function);
                continue;
            }
            let job = match jobs.get(&schedule.function) {
                Some(job) => Arc::clone(job),
                None => {
                    let job = scheduled_job(&schedule.function).await?;
                    jobs.insert(schedule.function.clone(), Arc::clone(&job));
                    job
                }
            };
            let every = schedule_every.unwrap_or(schedule.every);
            match schedule_every {
                Some(every) => println!("  every {:<4} (template: {rate}; DEV_SCHEDULE_SECONDS)  -> {}", short_duration(every), schedule.function),
                None => println!("  every {rate:<4}  -> {}", schedule.function),
            }
            let name = schedule.function.clone();
            scheduled.push(tokio::spawn(async move {
                let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    // Its own task, so a panic fails this run only, as it would one invocation.
                    let run = tokio::spawn(job()).await.unwrap_or_else(|e| Err(format!("panicked: {e}")));
                    match run {
                        Ok(result) => tracing::info!(schedule = %name, %result, "scheduled run finished"),
                        Err(err) => tracing::error!(schedule = %name, error = %err, "scheduled run failed"),
                    }
                }
            }));
        }
        println!(
            "callops dev server on http://127.0.0.1:{port}\n  DynamoDB Local {}  moto {}  logs in {}\n  WEBHOOK_TOKEN={}  API_TOKEN={}",
            local.dynamodb_endpoint,
            local.moto_endpoint,
            local.log_dir().display(),
            shown_token("WEBHOOK_TOKEN", DEV_WEBHOOK_TOKEN),
            shown_token("API_TOKEN", DEV_API_TOKEN),
        );
        println!(
            "  ADMIN_API_TOKEN={}  ELEVENLABS_WEBHOOK_SECRET={}",
            shown_token("ADMIN_API_TOKEN", DEV_ADMIN_TOKEN),
            shown_token("ELEVENLABS_WEBHOOK_SECRET", DEV_ELEVENLABS_WEBHOOK_SECRET),
        );
        println!(
            "  API key of organisation {DEV_ORG_ID} for /calls/started, /calls/initiate, /outbound-calls, /conversations (dev only): {dev_api_key}\n  LiveKit dev key/secret: {} / {}  (sign bodies with: cargo run -q -p devstack --bin livekit-sign -- FILE)",
            shown_token("LIVEKIT_API_KEY", devstack::DEV_LIVEKIT_API_KEY),
            shown_token("LIVEKIT_API_SECRET", devstack::DEV_LIVEKIT_API_SECRET),
        );
        println!(
            "  Chat launchers: SLACK_SIGNING_SECRET={}  TEAMS_WEBHOOK_SECRET={}  DISCORD_PUBLIC_KEY={}\n  (sign bodies with: cargo run -q -p devstack --bin launcher-sign -- slack|discord|teams FILE | curl -K - ...; the dev Discord key pair's private half is DEV_DISCORD_PRIVATE_KEY in tools/devstack/src/launchers.rs)",
            shown_token("SLACK_SIGNING_SECRET", devstack::launchers::DEV_SLACK_SIGNING_SECRET),
            shown_token("TEAMS_WEBHOOK_SECRET", devstack::launchers::DEV_TEAMS_WEBHOOK_SECRET),
            std::env::var("DISCORD_PUBLIC_KEY").unwrap_or_default(),
        );
        println!("  API key of organisation {DEV_SECOND_ORG_ID} (docs/tenancy.md, two organisations): {second_api_key}");
        println!("  CORS origins (ALLOWED_ORIGINS): {}", cors.origins().join(", "));
        tokio::select! {
            served = serve(([127, 0, 0, 1], port).into(), routes, cors) => served?,
            _ = tokio::signal::ctrl_c() => println!("stopping"),
        }
        for task in scheduled {
            task.abort();
        }
        drop(local);
        Ok::<_, Error>(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_falls_back_to_a_free_one() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let addr = loopback_port_or_free(port).unwrap();
        assert_ne!(addr, format!("127.0.0.1:{port}"));
        assert!(std::net::TcpListener::bind(addr.as_str()).is_ok());
        drop(taken);
        assert_eq!(
            loopback_port_or_free(port).unwrap(),
            format!("127.0.0.1:{port}")
        );
    }
}
