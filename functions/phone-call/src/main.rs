use phone_call::PhoneCall;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::base::telemetry::init();
    let app = PhoneCall::from_env().await?;
    shared::wiring::serve_route(&app).await
}
