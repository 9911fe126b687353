use room_recording::RoomRecording;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::base::telemetry::init();
    shared::base::secrets::load().await?;
    let app = RoomRecording::from_env().await?;
    shared::wiring::serve_route(&app).await
}
