//! Admin route; the handler is `shared::flows::admin::Admin::get_assistant`.

use shared::flows::admin::AdminConfig;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::base::telemetry::init();
    shared::base::secrets::load().await?;
    let config = &AdminConfig::from_env().await?;
    shared::wiring::serve_http(|request| async move { config.admin().get_assistant(request).await })
        .await
}
