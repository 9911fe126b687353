//! Local AWS for callops, shared by `make dev` and the integration tests so
//! both run the same emulators, the same resources and the same plumbing:
//!
//! - [`emulators`]: DynamoDB Local and moto (SQS, SES) on 127.0.0.1;
//! - [`template`]: tables, queues, routes and consumers read from template.yaml;
//! - [`provision`]: those resources created in the emulators;
//! - [`poller`]: SQS delivery to a worker the way Lambda does it;
//! - [`fakes`]: AssemblyAI, Exotel and Slack servers speaking their wire formats;
//! - [`server`]: API Gateway's HTTP-to-Lambda translation for the dev server.

pub mod emulators;
pub mod fakes;
pub mod poller;
pub mod provision;
pub mod server;
pub mod template;

use std::path::PathBuf;

/// The repository root (this crate lives in `tools/devstack`).
pub fn repo_root() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}
