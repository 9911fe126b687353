use whatsapp_send::WhatsAppSend;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::base::telemetry::init();
    let app = WhatsAppSend::from_env().await?;
    shared::wiring::serve_route(&app).await
}
