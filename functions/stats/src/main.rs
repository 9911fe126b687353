use stats::StatsEndpoint;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::base::telemetry::init();
    let app = StatsEndpoint::from_env().await?;
    shared::wiring::serve_http(|_request| app.handle()).await
}
