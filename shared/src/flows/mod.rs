//! The flows that tie state, queues and providers together: intake of
//! recordings, outbound calls, notifications, sessions and their chat
//! launchers, and the admin routes.

// Features of `shared` (Cargo.toml) gate what needs an optional dependency.
#[cfg(feature = "phone")]
pub mod admin;
pub mod call_log;
pub mod call_start;
pub mod call_stream;
pub mod conversations;
// E.164 checks of the numbers listed.
pub mod campaign_calls;
#[cfg(feature = "campaigns")]
pub mod campaigns;
#[cfg(feature = "phone")]
pub mod dnc;
pub mod ingest;
#[cfg(feature = "livekit")]
pub mod launchers;
#[cfg(feature = "ses")]
pub mod notify;
pub mod outbound;
pub mod phone;
pub mod provider_events;
pub mod reconcile;
// Uses the admin routes' id rules.
#[cfg(feature = "phone")]
pub mod provider_accounts;
pub mod sessions;
pub mod stuck;
pub mod tenancy;
#[cfg(feature = "livekit")]
pub mod voice;
pub mod webhooks;
pub mod whatsapp;
