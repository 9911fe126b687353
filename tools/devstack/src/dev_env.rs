//! The variables that are not in template.yaml's function environments, in
//! one place: what the dev server itself reads, and what functions read
//! with a default that the template never sets. The dev server reads its
//! own through these constants; `docs/configuration.md`'s table of them is
//! generated from [`NOT_IN_TEMPLATE`] and [`DEV_SERVER`] (`config_doc`), and
//! `tests/env_example.rs` checks `env.example` against them, the template
//! and the names the code reads.

/// A variable outside the template, for the configuration reference.
#[derive(Debug, Clone, Copy)]
pub struct Variable {
    pub name: &'static str,
    /// Who reads it (function crates, or "dev server").
    pub read_by: &'static str,
    /// What it changes, with its default.
    pub meaning: &'static str,
}

/// The dev server's port (default 3000).
pub const PORT: &str = "PORT";
/// The fake Exotel's port (default 3100, the one `events/` payloads name).
pub const FAKE_EXOTEL_PORT: &str = "FAKE_EXOTEL_PORT";
/// Browser origins answered with CORS headers.
pub const ALLOWED_ORIGINS: &str = "ALLOWED_ORIGINS";
/// Run every scheduled function every n seconds.
pub const DEV_SCHEDULE_SECONDS: &str = "DEV_SCHEDULE_SECONDS";
/// Where bootstrap put DynamoDB Local and moto.
pub const CALLOPS_CACHE_DIR: &str = "CALLOPS_CACHE_DIR";
/// Log filter of the dev server and every function in it.
pub const RUST_LOG: &str = "RUST_LOG";

/// Variables the dev server (`make dev`) reads for itself.
pub const DEV_SERVER: [Variable; 6] = [
    Variable {
        name: PORT,
        read_by: "dev server",
        meaning: "port of the dev server on 127.0.0.1 (default 3000)",
    },
    Variable {
        name: FAKE_EXOTEL_PORT,
        read_by: "dev server",
        meaning: "port of the fake Exotel's sample recordings (default 3100, the port `events/` payloads name; a free one when it is taken)",
    },
    Variable {
        name: ALLOWED_ORIGINS,
        read_by: "dev server",
        meaning: "comma-separated browser origins answered with CORS headers (default `http://localhost:5173,http://127.0.0.1:5173`); the deployed API's are the `AllowedOrigins` parameter",
    },
    Variable {
        name: DEV_SCHEDULE_SECONDS,
        read_by: "dev server",
        meaning: "run every scheduled function every n seconds instead of at its template `rate(...)` (unset: the template rate)",
    },
    Variable {
        name: CALLOPS_CACHE_DIR,
        read_by: "dev server, tests",
        meaning: "where `scripts/bootstrap.sh` installed DynamoDB Local and moto (default `.cache/` in the repository)",
    },
    Variable {
        name: RUST_LOG,
        read_by: "dev server, all functions",
        meaning: "log filter (the template sets `info`; locally the environment's value wins)",
    },
];

/// Variables functions read with a default that template.yaml gives to no
/// function: deployed functions use the default unless the template adds it.
pub const NOT_IN_TEMPLATE: [Variable; 18] = [
    Variable {
        name: "ORG_SECRETS_TTL_SECONDS",
        read_by: "functions that place, end or verify Twilio/ElevenLabs traffic",
        meaning: "how long an organisation's provider account read from Secrets Manager is used before it is read again, so a rotation takes effect without a cold start (default 60; 0 reads on every use)",
    },
    Variable {
        name: "ORG_SECRETS_CACHE_SIZE",
        read_by: "functions that place, end or verify Twilio/ElevenLabs traffic",
        meaning: "most organisation secrets one warm instance keeps (default 1000; the oldest read is dropped first)",
    },
    Variable {
        name: "ALLOW_LOOPBACK_RECORDINGS",
        read_by: "webhooks, transcribe-worker",
        meaning: "`true` allows plain-http recordings on loopback; default `true` outside Lambda, `false` in Lambda (`AWS_LAMBDA_FUNCTION_NAME` set)",
    },
    Variable {
        name: "ALLOW_LOOPBACK_WEBHOOKS",
        read_by: "webhook-endpoints, webhook-worker",
        meaning: "`true` allows webhook endpoints on plain http and loopback addresses; default `true` outside Lambda (tests, `make dev`), `false` in Lambda, where only https to public addresses is allowed",
    },
    Variable {
        name: "TRANSCRIPTION_RECHECK_SECONDS",
        read_by: "transcribe-worker",
        meaning: "first re-check delay, doubling up to 300 s (default 10)",
    },
    Variable {
        name: "LIVEKIT_AGENT_IDENTITY_PREFIX",
        read_by: "livekit-webhook, session functions",
        meaning: "identities that are the agent itself (default `agent-`); may not overlap the guests' `guest-`",
    },
    Variable {
        name: "LIVEKIT_EMPTY_TIMEOUT_SECONDS",
        read_by: "functions that create LiveKit rooms",
        meaning: "how long LiveKit keeps an empty room (default 300)",
    },
    Variable {
        name: "SWEEP_BATCH",
        read_by: "stuck-sweep",
        meaning: "most recording-pipeline calls, sessions and WhatsApp replies looked at per run (default 100)",
    },
    Variable {
        name: "RECONCILE_READS_PER_PROVIDER",
        read_by: "stuck-sweep",
        meaning: "most reads of Twilio and of ElevenLabs per run when asking about calls whose end never came (default 150)",
    },
    Variable {
        name: "STUCK_REDRIVE_GRACE_SECONDS",
        read_by: "stuck-sweep",
        meaning: "how long a re-driven call has before it is ended `failed` (default 1800)",
    },
    Variable {
        name: "MONITOR_INTERVAL_SECONDS",
        read_by: "outbound-calls, monitor-worker",
        meaning: "re-check interval (default 5)",
    },
    Variable {
        name: "DEDUP_RETENTION_SECONDS",
        read_by: "functions that claim in the idempotency table",
        meaning: "how long a processed key answers duplicates (default 7 days); not the recording intake, whose answer lives on the call record",
    },
    Variable {
        name: "DEDUP_LEASE_SECONDS",
        read_by: "webhooks",
        meaning: "in-progress lease when the Lambda deadline is unknown (default 30)",
    },
    Variable {
        name: "NOTIFY_PART_LEASE_SECONDS",
        read_by: "notify-worker",
        meaning: "how long a worker holds a part's delivery record; keep it above NotificationQueue's visibility timeout (default 240)",
    },
    Variable {
        name: "AGENT_LLM_TIMEOUT_SECONDS",
        read_by: "whatsapp-reply-worker",
        meaning: "how long one LLM call may take before the fallback reply (default 25)",
    },
    Variable {
        name: "TWILIO_TIMEOUT_SECONDS",
        read_by: "whatsapp-reply-worker, whatsapp-send",
        meaning: "timeout of each Twilio message request (default 8)",
    },
    Variable {
        name: "WHATSAPP_HISTORY_TURNS",
        read_by: "whatsapp-reply-worker",
        meaning: "earlier messages of the conversation sent to the LLM (default 10)",
    },
    Variable {
        name: "WHATSAPP_REPLY_LEASE_SECONDS",
        read_by: "whatsapp-reply-worker",
        meaning: "how long a worker holds its claim on a reply (default 60)",
    },
];

/// Set by the Lambda runtime, not by anyone configuring callops; the dev
/// server sets `AWS_REGION` for the emulators.
pub const LAMBDA_RUNTIME: [&str; 2] = ["AWS_LAMBDA_FUNCTION_NAME", "AWS_REGION"];

/// The value of `name`, unless unset or empty.
pub fn get(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}
