//! The error every store trait returns. Store failures are always worth a
//! retry from the caller's point of view; the detail is for logs only.

use aws_sdk_dynamodb::error::SdkError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("dynamodb: {0}")]
    Dynamo(String),
    #[error("stored item is malformed: {0}")]
    Malformed(String),
}

impl<E, R> From<SdkError<E, R>> for StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    fn from(err: SdkError<E, R>) -> Self {
        // DisplayErrorContext walks the source chain; plain Display says only "service error".
        Self::Dynamo(aws_sdk_dynamodb::error::DisplayErrorContext(err).to_string())
    }
}

impl From<serde_dynamo::Error> for StoreError {
    fn from(err: serde_dynamo::Error) -> Self {
        Self::Malformed(err.to_string())
    }
}
