//! Admin route; the handler is `shared::flows::admin::Admin::update_organisation`.

use lambda_http::{run, service_fn, Error, Request};
use shared::flows::admin::AdminConfig;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::base::telemetry::init();
    let config = AdminConfig::from_env().await?;
    let config = &config;
    run(service_fn(move |request: Request| async move {
        Ok::<_, Error>(config.admin().update_organisation(request).await)
    }))
    .await
}
