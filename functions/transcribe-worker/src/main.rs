use std::sync::Arc;

use transcribe_worker::TranscribeWorker;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::base::telemetry::init();
    let worker = Arc::new(TranscribeWorker::from_env().await?);
    shared::wiring::serve_sqs(|event| worker.handle(event)).await
}
