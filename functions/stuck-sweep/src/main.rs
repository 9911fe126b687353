use stuck_sweep::StuckSweep;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::base::telemetry::init();
    shared::base::secrets::load().await?;
    let sweep = StuckSweep::from_env().await?;
    shared::wiring::serve_scheduled(|| sweep.run()).await
}
