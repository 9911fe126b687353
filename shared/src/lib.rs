//! Everything two or more callops functions need: the call domain, the stores
//! and queues behind small traits, the provider clients and the notifiers.
//!
//! Functions depend on this crate; this crate depends on no function.

pub mod admin;
pub mod api;
pub mod api_keys;
pub mod assemblyai;
pub mod aws;
pub mod calls;
pub mod config;
pub mod dedup;
pub mod elevenlabs;
pub mod ingest;
pub mod jobs;
pub mod mask;
pub mod metrics;
pub mod notify;
pub mod outbound;
pub mod phone;
pub mod rate_limit;
pub mod recording;
pub mod sessions;
pub mod sqs_batch;
pub mod stats;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod twilio;
