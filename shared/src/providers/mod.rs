//! Outside services' wire formats and clients: what they send us (and how we
//! verify it) and what we send them. A provider imports `base`, the record
//! types of `store` and the errors of `api`; never a flow.

pub mod assemblyai;
pub mod channel;
pub mod elevenlabs;
#[cfg(feature = "livekit")]
pub mod livekit;
pub mod llm;
pub mod org_accounts;
pub mod org_notifications;
pub mod recording;
#[cfg(feature = "ses")]
pub mod ses;
pub mod slack;
pub mod slack_format;
pub mod twilio;
