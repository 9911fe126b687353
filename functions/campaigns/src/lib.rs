//! `/campaigns` (API key): outbound calling campaigns: create from JSON or
//! CSV, list, read with their recipients, pause, resume, cancel
//! (`shared::flows::campaigns`).

use shared::flows::campaigns::CampaignsApi;
use shared::wiring::Wiring;

/// `API_KEYS_TABLE`, the rate limit's table, `CAMPAIGNS_TABLE`,
/// `ASSISTANTS_TABLE`, `ORGANISATIONS_TABLE`.
pub async fn from_env() -> Result<CampaignsApi, lambda_http::Error> {
    let aws = Wiring::load().await;
    Ok(CampaignsApi {
        access: aws.keyed_access()?,
        store: aws.campaigns()?,
        directory: aws.directory()?,
    })
}
