use std::sync::Arc;

use monitor_worker::MonitorWorker;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::base::telemetry::init();
    shared::base::secrets::load().await?;
    shared::wiring::serve_worker(Arc::new(MonitorWorker::from_env().await?)).await
}
