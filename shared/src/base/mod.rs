//! What every other layer uses and that imports nothing of ours:
//! configuration (plain or from Secrets Manager), time, masking for logs, telemetry, metrics, phone numbers,
//! the end reasons every provider maps to.

pub mod aws;
pub mod config;
pub mod end_reason;
pub mod mask;
pub mod metrics;
pub mod phone;
pub mod secrets;
pub mod telemetry;
pub mod time;
