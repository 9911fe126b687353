use health::Health;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::base::telemetry::init();
    shared::base::secrets::load().await?;
    let app = Health::from_env().await?;
    shared::wiring::serve_http(|_request| app.handle()).await
}
