//! `/dnc` (API key): the organisation's do-not-call list: add (one or in
//! bulk), list, remove (`shared::flows::dnc`). Every dial checks it.

use shared::flows::dnc::DncApi;
use shared::wiring::Wiring;

/// `API_KEYS_TABLE`, the rate limit's table, `TENANCY_TABLE`.
pub async fn from_env() -> Result<DncApi, lambda_http::Error> {
    let aws = Wiring::load().await;
    Ok(DncApi {
        access: aws.keyed_access()?,
        store: aws.dnc()?,
    })
}
