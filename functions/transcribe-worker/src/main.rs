use std::sync::Arc;

use transcribe_worker::TranscribeWorker;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::base::telemetry::init();
    shared::base::secrets::load().await?;
    shared::wiring::serve_worker(Arc::new(TranscribeWorker::from_env().await?)).await
}
