use std::sync::Arc;

use provider_events_worker::ProviderEventsWorker;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::base::telemetry::init();
    shared::base::secrets::load().await?;
    shared::wiring::serve_worker(Arc::new(ProviderEventsWorker::from_env().await?)).await
}
