use room_join_link::RoomJoinLink;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::base::telemetry::init();
    shared::base::secrets::load().await?;
    let app = RoomJoinLink::from_env().await?;
    shared::wiring::serve_http(|request| app.handle(request)).await
}
