use stats::StatsEndpoint;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::base::telemetry::init();
    shared::base::secrets::load().await?;
    let app = StatsEndpoint::from_env().await?;
    shared::wiring::serve_http(|request| app.handle(request)).await
}
