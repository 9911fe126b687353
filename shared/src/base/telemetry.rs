//! JSON logs for CloudWatch. Lambda's runtime adds the request id span; the
//! handlers add the call id.

use tracing_subscriber::EnvFilter;

/// Call first in every `main`. `RUST_LOG` sets the level (default `info`).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .without_time() // CloudWatch stamps every line already
        .try_init();
}
