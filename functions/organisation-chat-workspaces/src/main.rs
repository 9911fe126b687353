//! Admin routes `POST`/`GET /organisations/{org_id}/chat-workspaces` and
//! `DELETE /organisations/{org_id}/chat-workspaces/{platform}/{id}`; the
//! handler is `shared::flows::launchers::workspaces::ChatWorkspaces`.

use shared::flows::launchers::workspaces::ChatWorkspacesConfig;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::base::telemetry::init();
    shared::base::secrets::load().await?;
    let config = &ChatWorkspacesConfig::from_env().await?;
    shared::wiring::serve_http(|request| async move { config.routes().handle(request).await }).await
}
