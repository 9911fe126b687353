//! AWS SDK configuration, loaded once per cold start. Endpoints come from the
//! SDK's own `AWS_ENDPOINT_URL[_<SERVICE>]` variables, so local runs need no
//! code path of their own.

use tokio::sync::OnceCell;

static LAMBDA_SDK_CONFIG: OnceCell<aws_config::SdkConfig> = OnceCell::const_new();

/// The SDK configuration. In Lambda it is loaded once and shared, so the
/// secrets read at cold start and the stores built after them use one HTTP
/// client (one set of TLS roots, one credentials cache). Elsewhere each call
/// loads its own: tests run many Tokio runtimes in one process, and a client's
/// connections must not outlive the runtime that opened them.
pub async fn sdk_config() -> aws_config::SdkConfig {
    if !crate::base::config::in_lambda() {
        return load().await;
    }
    LAMBDA_SDK_CONFIG.get_or_init(load).await.clone()
}

async fn load() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}
