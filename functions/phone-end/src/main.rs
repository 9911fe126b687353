use phone_end::PhoneEnd;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::base::telemetry::init();
    let app = PhoneEnd::from_env().await?;
    shared::wiring::serve_route(&app).await
}
