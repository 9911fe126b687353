use call_timeline::CallTimelineRoute;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::base::telemetry::init();
    shared::base::secrets::load().await?;
    let app = CallTimelineRoute::from_env().await?;
    shared::wiring::serve_route(&app).await
}
