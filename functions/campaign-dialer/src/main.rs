use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::base::telemetry::init();
    shared::base::secrets::load().await?;
    shared::wiring::serve_worker(Arc::new(
        campaign_dialer::CampaignDialWorker::from_env().await?,
    ))
    .await
}
