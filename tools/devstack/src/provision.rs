//! Creates the template's tables (with their streams) and queues in the
//! emulators. A prefix keeps parallel tests apart; `make dev` uses a fixed one.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;

use crate::emulators::LocalAws;
use crate::template::{EnvValue, FunctionSpec, IndexSpec, KeyAttribute, Template};

/// Physical names for the template's logical ids.
#[derive(Debug, Clone, Default)]
pub struct Resources {
    /// Table logical id -> table name.
    pub tables: HashMap<String, String>,
    /// Queue logical id -> queue URL.
    pub queues: HashMap<String, String>,
}

impl Resources {
    pub fn table(&self, logical_id: &str) -> String {
        self.tables
            .get(logical_id)
            .cloned()
            .unwrap_or_else(|| panic!("no table {logical_id} in template"))
    }

    pub fn queue(&self, logical_id: &str) -> String {
        self.queues
            .get(logical_id)
            .cloned()
            .unwrap_or_else(|| panic!("no queue {logical_id} in template"))
    }

    /// A function's environment as the template declares it, with resource
    /// references resolved; parameter references are left to the caller's environment.
    pub fn function_env(&self, function: &FunctionSpec) -> Vec<(String, String)> {
        function
            .env
            .iter()
            .filter_map(|(name, value)| match value {
                EnvValue::Literal(v) => Some((name.clone(), v.clone())),
                EnvValue::Ref(id) => self
                    .tables
                    .get(id)
                    .or_else(|| self.queues.get(id))
                    .map(|v| (name.clone(), v.clone())),
                EnvValue::Computed => None,
            })
            .collect()
    }
}

fn key_element(key: &KeyAttribute, key_type: KeyType) -> Result<KeySchemaElement, String> {
    KeySchemaElement::builder()
        .attribute_name(&key.name)
        .key_type(key_type)
        .build()
        .map_err(|e| e.to_string())
}

fn attribute_definition(key: &KeyAttribute) -> Result<AttributeDefinition, String> {
    AttributeDefinition::builder()
        .attribute_name(&key.name)
        .attribute_type(attribute_type(key))
        .build()
        .map_err(|e| e.to_string())
}

fn global_index(index: &IndexSpec) -> Result<GlobalSecondaryIndex, String> {
    let mut builder = GlobalSecondaryIndex::builder()
        .index_name(&index.name)
        .key_schema(key_element(&index.hash_key, KeyType::Hash)?)
        .projection(
            Projection::builder()
                .projection_type(match index.projection.as_str() {
                    "KEYS_ONLY" => ProjectionType::KeysOnly,
                    _ => ProjectionType::All,
                })
                .build(),
        );
    if let Some(range) = &index.range_key {
        builder = builder.key_schema(key_element(range, KeyType::Range)?);
    }
    builder.build().map_err(|e| e.to_string())
}

fn attribute_type(key: &KeyAttribute) -> ScalarAttributeType {
    match key.kind.as_str() {
        "N" => ScalarAttributeType::N,
        "B" => ScalarAttributeType::B,
        _ => ScalarAttributeType::S,
    }
}

pub async fn provision(
    local: &LocalAws,
    template: &Template,
    prefix: &str,
) -> Result<Resources, String> {
    let dynamo = local.dynamodb().await;
    let sqs = local.sqs().await;
    let mut resources = Resources::default();
    for table in &template.tables {
        let name = format!("{prefix}-{}", table.logical_id);
        let mut keys = vec![(&table.hash_key, KeyType::Hash)];
        if let Some(range) = &table.range_key {
            keys.push((range, KeyType::Range));
        }
        let mut create = dynamo
            .create_table()
            .table_name(&name)
            .billing_mode(BillingMode::PayPerRequest);
        // Each attribute is defined once, whether a table key, an index key or both.
        let mut defined: Vec<&str> = Vec::new();
        for (key, key_type) in keys {
            defined.push(&key.name);
            create = create
                .attribute_definitions(attribute_definition(key)?)
                .key_schema(key_element(key, key_type)?);
        }
        for index in &table.indexes {
            for key in std::iter::once(&index.hash_key).chain(&index.range_key) {
                if !defined.contains(&key.name.as_str()) {
                    defined.push(&key.name);
                    create = create.attribute_definitions(attribute_definition(key)?);
                }
            }
            create = create.global_secondary_indexes(global_index(index)?);
        }
        if let Some(view) = &table.stream_view {
            create = create.stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::from(view.as_str()))
                    .build()
                    .map_err(|e| e.to_string())?,
            );
        }
        create.send().await.map_err(|e| {
            format!(
                "create table {name}: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(e)
            )
        })?;
        if let Some(attribute) = &table.ttl_attribute {
            dynamo
                .update_time_to_live()
                .table_name(&name)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(attribute)
                        .enabled(true)
                        .build()
                        .map_err(|e| e.to_string())?,
                )
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "ttl on {name}: {}",
                        aws_sdk_dynamodb::error::DisplayErrorContext(e)
                    )
                })?;
        }
        resources.tables.insert(table.logical_id.clone(), name);
    }
    // Dead-letter queues first: a redrive policy names its DLQ's ARN.
    let mut queues = template.queues.clone();
    queues.sort_by_key(|q| q.dead_letter.is_some());
    let mut arns: HashMap<String, String> = HashMap::new();
    for queue in &queues {
        let name = format!("{prefix}-{}", queue.logical_id);
        let mut create = sqs.create_queue().queue_name(&name);
        if let Some(visibility) = queue.visibility_timeout {
            create = create.attributes(
                QueueAttributeName::VisibilityTimeout,
                visibility.to_string(),
            );
        }
        if let Some((dlq, max_receive)) = &queue.dead_letter {
            let arn = arns.get(dlq).ok_or(format!(
                "{}: dead-letter queue {dlq} unknown",
                queue.logical_id
            ))?;
            create = create.attributes(
                QueueAttributeName::RedrivePolicy,
                serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": max_receive})
                    .to_string(),
            );
        }
        let url = create
            .send()
            .await
            .map_err(|e| {
                format!(
                    "create queue {name}: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(e)
                )
            })?
            .queue_url
            .ok_or("queue without URL")?;
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "queue arn {name}: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(e)
                )
            })?
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .ok_or("queue without ARN")?;
        arns.insert(queue.logical_id.clone(), arn);
        resources.queues.insert(queue.logical_id.clone(), url);
    }
    Ok(resources)
}
