use std::sync::Arc;

use notify_worker::NotifyWorker;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::base::telemetry::init();
    let worker = Arc::new(NotifyWorker::from_env().await?);
    shared::wiring::serve_sqs(|event| worker.handle(event)).await
}
