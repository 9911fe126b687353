use openapi::OpenApiDocument;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::base::telemetry::init();
    shared::base::secrets::load().await?;
    let app = OpenApiDocument::from_env().await?;
    shared::wiring::serve_http(|request| app.handle(request)).await
}
