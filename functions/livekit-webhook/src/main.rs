use livekit_webhook::LiveKitWebhook;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::base::telemetry::init();
    let app = LiveKitWebhook::from_env().await?;
    shared::wiring::serve_route(&app).await
}
