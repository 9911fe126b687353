//! Admin routes of an organisation's own provider accounts (PUT, DELETE and
//! GET of `/organisations/{org_id}/providers...`); the handler is
//! `shared::flows::provider_accounts::ProviderAccountsAdmin::handle`.

use shared::flows::provider_accounts::ProviderAccountsAdmin;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::base::telemetry::init();
    shared::base::secrets::load().await?;
    let admin = &ProviderAccountsAdmin::from_env().await?;
    shared::wiring::serve_http(|request| async move { admin.handle(request).await }).await
}
