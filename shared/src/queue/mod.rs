//! Work that leaves a request: the job types on each SQS queue, the queue
//! trait, and the batch runner every SQS-triggered worker uses.

pub mod jobs;
pub mod sqs_batch;
