use call_get::CallGet;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::base::telemetry::init();
    shared::base::secrets::load().await?;
    let app = CallGet::from_env().await?;
    shared::wiring::serve_route(&app).await
}
