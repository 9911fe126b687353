//! The flows that tie state, queues and providers together: intake of
//! recordings, outbound calls, notifications, sessions and their chat
//! launchers, and the admin routes.

pub mod admin;
pub mod call_start;
pub mod conversations;
pub mod ingest;
pub mod launchers;
pub mod notify;
pub mod outbound;
pub mod phone;
pub mod provider_events;
pub mod sessions;
pub mod stuck;
pub mod voice;
pub mod whatsapp;
