use reservation_sweep::ReservationSweep;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::base::telemetry::init();
    let sweep = ReservationSweep::from_env().await?;
    shared::wiring::serve_scheduled(|| sweep.run()).await
}
