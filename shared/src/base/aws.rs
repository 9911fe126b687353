//! AWS SDK configuration, loaded once per cold start. Endpoints come from the
//! SDK's own `AWS_ENDPOINT_URL[_<SERVICE>]` variables, so local runs need no
//! code path of their own.

pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}
