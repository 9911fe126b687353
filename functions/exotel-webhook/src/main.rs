use exotel_webhook::ExotelWebhook;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::base::telemetry::init();
    shared::base::secrets::load().await?;
    let app = ExotelWebhook::from_env().await?;
    shared::wiring::serve_route(&app).await
}
