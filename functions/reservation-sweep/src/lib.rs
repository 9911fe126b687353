//! Scheduled (EventBridge, every five minutes): releases the budget held by
//! outbound calls that never reported an end. A call's reservation is
//! settled by its final status callback, the post-call webhook or the
//! monitor; one still open after the assistant's `max_call_seconds` plus a
//! margin (Twilio's `TimeLimit` has ended the call by then) is released at
//! zero seconds and the call marked `failed`, so a lost callback, or a
//! crash between placing the call and recording the provider's id, cannot
//! hold an organisation's budget forever.

use std::sync::Arc;

use serde::Serialize;
use shared::base::config;
use shared::store::outbound_calls::{OutboundCallStore, UsageRecorded};
use shared::store::StoreError;
use shared::wiring::Wiring;
use tracing::{info, warn};

/// Why the sweep ended a call; shown on the call record.
pub const NO_END_REPORTED: &str =
    "no end reported within max_call_seconds plus the margin; reservation released";

pub struct ReservationSweep {
    pub calls: Arc<dyn OutboundCallStore>,
    /// Most reservations released per run (`SWEEP_BATCH`); the rest wait
    /// for the next run.
    pub batch: i32,
}

/// What one run did.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Calls whose reservation this run released.
    pub released: Vec<String>,
    /// Calls settled by someone else between the ledger read and ours.
    pub already_settled: usize,
}

impl ReservationSweep {
    pub async fn from_env() -> Result<Self, lambda_runtime::Error> {
        Ok(Self {
            calls: Wiring::load().await.outbound_calls()?,
            batch: config::parsed_or("SWEEP_BATCH", 100)?,
        })
    }

    /// Releases every reservation due now. An error stops the run (the next
    /// run picks up where it stopped: the ledger only loses settled entries).
    pub async fn run(&self) -> Result<SweepReport, StoreError> {
        let now = shared::base::time::epoch_secs();
        let mut report = SweepReport::default();
        for call_ref in self.calls.due_reservations(now, self.batch).await? {
            let Some(call) = self.calls.get(&call_ref).await? else {
                warn!(%call_ref, "open reservation without a call record");
                continue;
            };
            self.calls
                .advance_status(&call_ref, "failed", Some(NO_END_REPORTED))
                .await?;
            match self.calls.record_duration(&call, 0).await? {
                UsageRecorded::Counted => {
                    info!(%call_ref, "reservation released by the sweep");
                    report.released.push(call_ref);
                }
                UsageRecorded::AlreadyCounted => report.already_settled += 1,
            }
        }
        if !report.released.is_empty() {
            shared::base::metrics::count_n(
                shared::base::metrics::Metric::ReservationsReleased,
                report.released.len() as u64,
            );
        }
        Ok(report)
    }
}
