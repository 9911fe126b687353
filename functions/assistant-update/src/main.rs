//! Admin route; the handler is `shared::admin::Admin::update_assistant`.

use lambda_http::{run, service_fn, Error, Request};
use shared::admin::AdminConfig;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let config = AdminConfig::from_env().await?;
    let config = &config;
    run(service_fn(move |request: Request| async move {
        Ok::<_, Error>(config.admin().update_assistant(request).await)
    }))
    .await
}
