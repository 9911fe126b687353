//! What `callops-admin` does, as a library so the integration tests drive
//! the same code an operator runs.

pub mod dlq;
