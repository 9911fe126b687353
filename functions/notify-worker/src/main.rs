use std::sync::Arc;

use notify_worker::NotifyWorker;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::base::telemetry::init();
    shared::base::secrets::load().await?;
    shared::wiring::serve_worker(Arc::new(NotifyWorker::from_env().await?)).await
}
