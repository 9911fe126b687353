use std::sync::Arc;

use monitor_worker::MonitorWorker;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::base::telemetry::init();
    let worker = Arc::new(MonitorWorker::from_env().await?);
    shared::wiring::serve_sqs(|event| worker.handle(event)).await
}
