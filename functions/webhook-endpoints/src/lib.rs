//! The webhook API of an organisation's key: endpoints, their secrets,
//! attempts, replay and recovery (`shared::flows::webhooks::admin`).

use std::sync::Arc;

use shared::base::time::{Clock, SystemClock};
use shared::flows::webhooks::admin::WebhookApi;
use shared::flows::webhooks::sender::UrlPolicy;
use shared::wiring::Wiring;

pub async fn from_env() -> Result<WebhookApi, lambda_http::Error> {
    let aws = Wiring::load().await;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    Ok(WebhookApi {
        access: aws.keyed_access()?,
        store: aws.webhooks()?,
        replayer: aws.webhook_replayer(Arc::clone(&clock))?,
        main_queue: aws.queue("WEBHOOK_QUEUE_URL")?,
        policy: UrlPolicy::from_env()?,
        clock,
        recover_batch: shared::flows::webhooks::admin::MAX_RECOVER,
    })
}
