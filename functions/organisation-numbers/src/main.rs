//! Admin route; the handler is `shared::flows::admin::Admin::numbers`
//! (POST and GET `/organisations/{org_id}/numbers`, DELETE
//! `/organisations/{org_id}/numbers/{channel}/{number}`).

use shared::flows::admin::AdminConfig;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::base::telemetry::init();
    shared::base::secrets::load().await?;
    let config = &AdminConfig::from_env().await?;
    shared::wiring::serve_http(|request| async move { config.admin().numbers(request).await }).await
}
