//! Work that leaves a request: the job types on each SQS queue, the queue
//! trait, the batch runner every SQS-triggered worker uses, and the
//! batches of the DynamoDB stream consumers.

pub mod jobs;
pub mod sqs_batch;
pub mod stream_batch;
