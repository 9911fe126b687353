use whatsapp_call::WhatsAppCall;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::base::telemetry::init();
    let app = WhatsAppCall::from_env().await?;
    shared::wiring::serve_route(&app).await
}
