#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::base::telemetry::init();
    let tick = campaign_tick::from_env().await?;
    shared::wiring::serve_scheduled(|| tick.run()).await
}
