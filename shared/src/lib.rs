//! Everything two or more callops functions need. Functions depend on this
//! crate; it depends on no function. Layers, lowest first (a layer imports
//! only the ones above it in this list):
//!
//! - `base`: config, time, masking, telemetry, metrics, phone numbers.
//! - `store`: durable state in DynamoDB, one small trait per store.
//! - `queue`: SQS job types, the queue trait, the worker batch runner.
//! - `api`: the HTTP surface: errors as `{"detail", "code"}`, bodies, API keys.
//! - `providers`: outside services' wire formats and clients; never a flow.
//! - `flows`: intake, outbound calls, notifications, admin: where they meet.
//! - `wiring`: one constructor per store, queue and client, read from the
//!   environment once per cold start, and the Lambda entry points.

pub mod api;
pub mod base;
pub mod flows;
pub mod providers;
pub mod queue;
pub mod store;
pub mod wiring;
