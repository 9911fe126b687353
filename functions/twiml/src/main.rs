use lambda_http::{run, service_fn, Error, Request};
use twiml::Twiml;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::base::telemetry::init();
    let app = Twiml::from_env().await?;
    let app = &app;
    run(service_fn(move |request: Request| async move {
        Ok::<_, Error>(app.handle(request).await)
    }))
    .await
}
