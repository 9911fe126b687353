use health::Health;
use lambda_http::{run, service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::base::telemetry::init();
    let app = Health::from_env().await?;
    let app = &app;
    run(service_fn(move |_request: Request| async move {
        Ok::<_, Error>(app.handle().await)
    }))
    .await
}
