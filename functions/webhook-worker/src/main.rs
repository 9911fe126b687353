use std::sync::Arc;

use webhook_worker::WebhookWorker;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::base::telemetry::init();
    shared::wiring::serve_worker(Arc::new(WebhookWorker::from_env().await?)).await
}
