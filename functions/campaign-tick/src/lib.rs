//! Scheduled (EventBridge, every minute): the campaign engine's tick
//! (`shared::flows::campaigns::engine::CampaignTick`). It claims the
//! recipients due now whose calling window is open in every zone they may
//! be in, within the campaign's and organisation's concurrency, and queues
//! one dial job each; it closes expired and cancelled campaigns' pending
//! rows and finishes campaigns with nothing left.

use std::sync::Arc;

use shared::flows::campaigns::engine::CampaignTick;
use shared::wiring::Wiring;

/// `CAMPAIGNS_TABLE`, `ORGANISATIONS_TABLE`, `CAMPAIGN_DIAL_QUEUE_URL`,
/// `CALLS_TABLE`.
pub async fn from_env() -> Result<CampaignTick, lambda_runtime::Error> {
    let aws = Wiring::load().await;
    Ok(CampaignTick {
        store: aws.campaigns()?,
        dial_queue: aws.queue("CAMPAIGN_DIAL_QUEUE_URL")?,
        clock: Arc::new(shared::base::time::SystemClock),
        calls: aws.outbound_calls()?,
    })
}
