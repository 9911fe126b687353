use session_get::SessionGet;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::base::telemetry::init();
    let app = SessionGet::from_env().await?;
    shared::wiring::serve_route(&app).await
}
