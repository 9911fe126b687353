//! What every other layer uses and that imports nothing of ours:
//! configuration (plain or from Secrets Manager), time, masking for logs, telemetry, metrics, phone numbers,
//! the end reasons every provider maps to, and (`campaigns`) the zones a number
//! may ring in and the calling windows checked there.

pub mod aws;
pub mod calling_window;
pub mod config;
pub mod end_reason;
pub mod mask;
pub mod metrics;
pub mod phone;
#[cfg(feature = "campaigns")]
pub mod phone_zones;
pub mod secrets;
pub mod telemetry;
pub mod time;
