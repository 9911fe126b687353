use teams_messages::TeamsMessages;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::base::telemetry::init();
    let app = TeamsMessages::from_env().await?;
    shared::wiring::serve_route(&app).await
}
