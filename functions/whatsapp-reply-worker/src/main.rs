use std::sync::Arc;

use whatsapp_reply_worker::WhatsAppReplyWorker;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::base::telemetry::init();
    shared::base::secrets::load().await?;
    shared::wiring::serve_worker(Arc::new(WhatsAppReplyWorker::from_env().await?)).await
}
