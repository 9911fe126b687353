//! Integration tests: the real handlers against DynamoDB Local, moto's SQS
//! and SES, and fake providers on 127.0.0.1. One binary so the emulators
//! start once.

mod bad_input;
mod call_start;
mod campaign_engine;
mod campaigns;
mod crash;
mod delivery;
mod dlq;
mod events;
mod intake;
mod launchers;
mod notifications;
mod numbers;
mod openapi;
mod org_accounts;
mod org_notifications;
mod outbound;
mod pipeline;
mod read_api;
mod recording_fetch;
mod secrets;
mod sessions;
mod soak;
mod stuck;
mod support;
mod tenancy;
mod tenancy_pipeline;
mod webhook_payloads;
mod webhooks;
mod whatsapp;
mod worker_failures;
