//! Admin routes `POST|GET /organisations/{org_id}/webhook-tokens` and
//! `DELETE /organisations/{org_id}/webhook-tokens/{token_id}`; the handler is
//! `shared::flows::admin::webhook_tokens::WebhookTokenAdmin`.

use shared::flows::admin::webhook_tokens::WebhookTokenAdmin;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::base::telemetry::init();
    shared::base::secrets::load().await?;
    let admin = &WebhookTokenAdmin::from_env().await?;
    shared::wiring::serve_http(|request| async move { admin.handle(request).await }).await
}
