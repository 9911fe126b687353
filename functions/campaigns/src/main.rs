use shared::api::Route;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::base::telemetry::init();
    let api = &campaigns::from_env().await?;
    shared::wiring::serve_http(|request| async move { api.handle(request).await }).await
}
