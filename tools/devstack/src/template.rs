//! The parts of template.yaml the local stack needs. Reading them from the
//! template keeps local tables, queues and routes from drifting from what
//! deploys.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_yaml_ng::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct KeyAttribute {
    pub name: String,
    /// `S`, `N` or `B`.
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableSpec {
    pub logical_id: String,
    pub hash_key: KeyAttribute,
    pub range_key: Option<KeyAttribute>,
    pub ttl_attribute: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueSpec {
    pub logical_id: String,
    pub visibility_timeout: Option<i64>,
    /// Logical id of the dead-letter queue and the receive count that sends there.
    pub dead_letter: Option<(String, i64)>,
}

/// An environment value as written in the template.
#[derive(Debug, Clone, PartialEq)]
pub enum EnvValue {
    Literal(String),
    /// `!Ref X`: a resource (table name, queue URL) or a parameter.
    Ref(String),
    /// Conditions and other intrinsics: the local environment decides.
    Computed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpRoute {
    pub method: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SqsTrigger {
    pub queue: String,
    pub batch_size: i32,
    pub reports_batch_item_failures: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FunctionSpec {
    pub logical_id: String,
    /// The crate and binary name.
    pub binary: String,
    pub env: BTreeMap<String, EnvValue>,
    pub routes: Vec<HttpRoute>,
    pub sqs: Option<SqsTrigger>,
    /// Each variable's value as written (Globals included), for tools that
    /// need more than [`EnvValue`] keeps, such as the configuration reference.
    pub env_source: BTreeMap<String, Value>,
}

/// A template Parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ParameterSpec {
    pub name: String,
    /// `String`, `Number`, `CommaDelimitedList`...
    pub kind: String,
    /// `None`: the parameter has no default, so every deploy must give it.
    pub default: Option<String>,
    /// `NoEcho: true`: a credential.
    pub no_echo: bool,
    pub description: Option<String>,
}

/// A console group of `Metadata: AWS::CloudFormation::Interface: ParameterGroups`.
#[derive(Debug, Clone, PartialEq)]
pub struct ParameterGroup {
    pub label: String,
    pub parameters: Vec<String>,
}

/// A resource declared outside `Fn::ForEach`, with every name its
/// definition references (`!Ref`, `!GetAtt`, `${...}` of `!Sub`).
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceSpec {
    pub logical_id: String,
    pub kind: String,
    pub references: Vec<String>,
}

/// A function event of type `Schedule` or `ScheduleV2` (EventBridge): the
/// dev server runs the function every `every`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSpec {
    /// The function's crate and binary name.
    pub function: String,
    /// The function's logical id.
    pub logical_id: String,
    pub every: Duration,
    /// `Enabled: false` or `State: DISABLED`: deployed but never fired.
    pub enabled: bool,
}

/// `rate(N unit)` as EventBridge accepts it: N a positive integer and the
/// unit singular exactly when N is 1 (`rate(1 minute)`, `rate(5 minutes)`).
/// `cron(...)` and `at(...)` are refused: the dev server runs rates only.
pub fn parse_rate(expression: &str) -> Result<Duration, String> {
    let expression = expression.trim();
    if expression.starts_with("cron(") || expression.starts_with("at(") {
        return Err(format!(
            "{expression}: the dev server runs only rate(...) schedules, not cron(...) or at(...)"
        ));
    }
    let inner = expression
        .strip_prefix("rate(")
        .and_then(|rest| rest.strip_suffix(')'))
        .ok_or(format!(
            "{expression}: expected rate(N minute|minutes|hour|hours|day|days)"
        ))?;
    let (count, unit) = inner
        .trim()
        .split_once(char::is_whitespace)
        .ok_or(format!("{expression}: expected rate(N unit)"))?;
    let count: u64 = count
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or(format!("{expression}: {count} is not a positive integer"))?;
    let (seconds, singular) = match unit.trim() {
        "minute" => (60, true),
        "minutes" => (60, false),
        "hour" => (3600, true),
        "hours" => (3600, false),
        "day" => (86_400, true),
        "days" => (86_400, false),
        other => {
            return Err(format!(
                "{expression}: unit {other} is not minute(s), hour(s) or day(s)"
            ))
        }
    };
    if singular != (count == 1) {
        return Err(format!(
            "{expression}: EventBridge wants a singular unit for 1 and a plural one otherwise"
        ));
    }
    Ok(Duration::from_secs(count * seconds))
}

/// A `Fn::ForEach::<name>` entry of Resources (AWS::LanguageExtensions). The
/// dev server needs nothing it generates (log groups, alarms), so it is not
/// expanded; it is kept so tests can check what it covers.
#[derive(Debug, Clone, PartialEq)]
pub struct ForEachLoop {
    /// The part after `Fn::ForEach::`.
    pub name: String,
    pub identifier: String,
    /// The literal collection; empty when it is an intrinsic (`!Ref` to a list).
    pub collection: Vec<String>,
    /// Logical ids as written, e.g. `${Name}FunctionLogGroup`.
    pub output_keys: Vec<String>,
}

impl ForEachLoop {
    /// The logical ids the loop generates: every output key for every item.
    pub fn generated_ids(&self) -> Vec<String> {
        let dollar = format!("${{{}}}", self.identifier);
        let ampersand = format!("&{{{}}}", self.identifier);
        let mut ids = Vec::new();
        for item in &self.collection {
            let alnum: String = item.chars().filter(char::is_ascii_alphanumeric).collect();
            for key in &self.output_keys {
                ids.push(key.replace(&dollar, item).replace(&ampersand, &alnum));
            }
        }
        ids
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub tables: Vec<TableSpec>,
    pub queues: Vec<QueueSpec>,
    pub functions: Vec<FunctionSpec>,
    /// Every `Schedule`/`ScheduleV2` event of every function, in template order.
    pub schedules: Vec<ScheduleSpec>,
    pub for_each: Vec<ForEachLoop>,
    /// In template order.
    pub parameters: Vec<ParameterSpec>,
    pub parameter_groups: Vec<ParameterGroup>,
    /// Every resource declared outside `Fn::ForEach`, in template order.
    pub resources: Vec<ResourceSpec>,
    /// `AWS::SecretsManager::Secret` logical id -> the parameter its
    /// `SecretString` is (`!Ref Parameter`).
    pub secrets: BTreeMap<String, String>,
}

fn tag_name(value: &Value) -> Option<(String, &Value)> {
    match value {
        Value::Tagged(tagged) => Some((
            tagged.tag.to_string().trim_start_matches('!').to_string(),
            &tagged.value,
        )),
        Value::Mapping(map) if map.len() == 1 => {
            let (k, v) = map.iter().next()?;
            let k = k.as_str()?;
            k.strip_prefix("Fn::")
                .or((k == "Ref").then_some("Ref"))
                .map(|name| (name.to_string(), v))
        }
        _ => None,
    }
}

/// `!Ref X` -> X; `!GetAtt X.Arn` (or its long forms) -> X.
fn referenced_resource(value: &Value) -> Option<String> {
    let (tag, inner) = tag_name(value)?;
    match tag.as_str() {
        "Ref" => inner.as_str().map(str::to_string),
        "GetAtt" => match inner {
            Value::String(s) => s.split('.').next().map(str::to_string),
            Value::Sequence(seq) => seq.first().and_then(Value::as_str).map(str::to_string),
            _ => None,
        },
        _ => None,
    }
}

/// The `${Name}` and `${Name.Attribute}` of a `!Sub` string, without
/// `${!Literal}` escapes.
fn sub_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        let inner = after[..end].trim();
        if !inner.starts_with('!') {
            names.push(inner.split('.').next().unwrap_or(inner).to_string());
        }
        rest = &after[end + 1..];
    }
    names
}

fn collect_references(value: &Value, out: &mut Vec<String>) {
    if let Some((tag, inner)) = tag_name(value) {
        match tag.as_str() {
            "Ref" | "GetAtt" => out.extend(referenced_resource(value)),
            "Sub" => match inner {
                Value::String(text) => out.extend(sub_names(text)),
                Value::Sequence(parts) => {
                    let local: Vec<&str> = parts
                        .get(1)
                        .and_then(Value::as_mapping)
                        .map(|m| m.keys().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    if let Some(text) = parts.first().and_then(Value::as_str) {
                        out.extend(
                            sub_names(text)
                                .into_iter()
                                .filter(|n| !local.contains(&n.as_str())),
                        );
                    }
                    for part in parts.iter().skip(1) {
                        collect_references(part, out);
                    }
                }
                _ => {}
            },
            // The first item names a condition, not a parameter or resource.
            "If" => {
                for branch in inner.as_sequence().into_iter().flatten().skip(1) {
                    collect_references(branch, out);
                }
            }
            "Condition" => {}
            _ => collect_references(inner, out),
        }
        return;
    }
    match value {
        Value::Sequence(items) => items.iter().for_each(|v| collect_references(v, out)),
        Value::Mapping(map) => map.values().for_each(|v| collect_references(v, out)),
        Value::Tagged(tagged) => collect_references(&tagged.value, out),
        _ => {}
    }
}

/// The parameters and resources `value` references through `!Ref`,
/// `!GetAtt` and `!Sub` (also inside `!If` branches and other intrinsics),
/// in order of appearance, without pseudo parameters (`AWS::Region`).
pub fn references(value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    collect_references(value, &mut out);
    let mut seen = Vec::new();
    for name in out {
        if !name.starts_with("AWS::") && !seen.contains(&name) {
            seen.push(name);
        }
    }
    seen
}

/// A template value written back in CloudFormation's short form, on one
/// line: `!If [HasX, !Ref X, ""]`.
pub fn short_form(value: &Value) -> String {
    fn nested(value: &Value) -> String {
        match value {
            // Quoted where YAML would read it as something else.
            Value::String(s)
                if s.is_empty()
                    || s.chars().any(|c| " ,[]{}:#\"'".contains(c))
                    || serde_yaml_ng::from_str::<Value>(s).is_ok_and(|v| !v.is_string()) =>
            {
                format!("{s:?}")
            }
            other => short_form(other),
        }
    }
    if let Some((tag, inner)) = tag_name(value) {
        return format!("!{tag} {}", nested(inner));
    }
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Sequence(items) => format!(
            "[{}]",
            items.iter().map(nested).collect::<Vec<_>>().join(", ")
        ),
        Value::Mapping(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", nested(k), nested(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Tagged(tagged) => format!("{} {}", tagged.tag, nested(&tagged.value)),
    }
}

/// A scalar default as CloudFormation reads it (numbers and booleans as text).
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Sequence(items) => Some(
            items
                .iter()
                .filter_map(scalar_text)
                .collect::<Vec<_>>()
                .join(","),
        ),
        _ => None,
    }
}

fn parameters(doc: &Value) -> Result<Vec<ParameterSpec>, String> {
    let mut specs = Vec::new();
    for (name, body) in doc
        .get("Parameters")
        .and_then(Value::as_mapping)
        .into_iter()
        .flatten()
    {
        let name = name.as_str().ok_or("parameter name is not a string")?;
        specs.push(ParameterSpec {
            name: name.to_string(),
            kind: body
                .get("Type")
                .and_then(Value::as_str)
                .ok_or(format!("parameter {name}: no Type"))?
                .to_string(),
            default: body.get("Default").and_then(scalar_text),
            no_echo: body
                .get("NoEcho")
                .is_some_and(|v| v.as_bool() == Some(true) || v.as_str() == Some("true")),
            description: body
                .get("Description")
                .and_then(Value::as_str)
                .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" ")),
        });
    }
    Ok(specs)
}

fn parameter_groups(doc: &Value) -> Vec<ParameterGroup> {
    doc.get("Metadata")
        .and_then(|m| m.get("AWS::CloudFormation::Interface"))
        .and_then(|i| i.get("ParameterGroups"))
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .map(|group| ParameterGroup {
            label: group
                .get("Label")
                .and_then(|l| l.get("default"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            parameters: group
                .get("Parameters")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect(),
        })
        .collect()
}

fn env_value(value: &Value) -> EnvValue {
    match value {
        Value::String(s) => EnvValue::Literal(s.clone()),
        Value::Number(n) => EnvValue::Literal(n.to_string()),
        Value::Bool(b) => EnvValue::Literal(b.to_string()),
        other => match tag_name(other) {
            Some((tag, Value::String(name))) if tag == "Ref" => EnvValue::Ref(name.clone()),
            _ => EnvValue::Computed,
        },
    }
}

fn env_map(value: Option<&Value>) -> BTreeMap<String, EnvValue> {
    env_source_map(value)
        .into_iter()
        .map(|(k, v)| (k, env_value(&v)))
        .collect()
}

fn env_source_map(value: Option<&Value>) -> BTreeMap<String, Value> {
    value
        .and_then(|v| v.get("Environment"))
        .and_then(|v| v.get("Variables"))
        .and_then(Value::as_mapping)
        .map(|vars| {
            vars.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.clone())))
                .collect()
        })
        .unwrap_or_default()
}

fn key_attribute(props: &Value, key_type: &str) -> Option<KeyAttribute> {
    let name = props
        .get("KeySchema")?
        .as_sequence()?
        .iter()
        .find(|k| k.get("KeyType").and_then(Value::as_str) == Some(key_type))?
        .get("AttributeName")?
        .as_str()?
        .to_string();
    let kind = props
        .get("AttributeDefinitions")?
        .as_sequence()?
        .iter()
        .find(|a| a.get("AttributeName").and_then(Value::as_str) == Some(name.as_str()))?
        .get("AttributeType")?
        .as_str()?
        .to_string();
    Some(KeyAttribute { name, kind })
}

/// The binary a function runs: the last folder of its `CodeUri`, which is
/// where `cargo lambda build --lambda-dir target/lambda` writes that binary's
/// `bootstrap` (`target/lambda/<binary>/`).
pub fn binary_of_code_uri(code_uri: &str) -> Option<String> {
    let folder = code_uri.trim().trim_end_matches('/');
    let (parent, binary) = folder.rsplit_once('/')?;
    (parent.trim_end_matches('/').ends_with("target/lambda")
        && !binary.is_empty()
        && binary != "."
        && binary != "..")
        .then(|| binary.to_string())
}

/// Resource types the dev server reads: a loop must not generate them, or
/// they would silently be missing locally.
const READ_TYPES: [&str; 3] = [
    "AWS::DynamoDB::Table",
    "AWS::SQS::Queue",
    "AWS::Serverless::Function",
];

fn for_each_loop(id: &str, name: &str, value: &Value) -> Result<ForEachLoop, String> {
    let parts = value
        .as_sequence()
        .filter(|p| p.len() == 3)
        .ok_or(format!("{id}: expected [Identifier, Collection, Fragment]"))?;
    let identifier = parts[0]
        .as_str()
        .ok_or(format!("{id}: identifier is not a string"))?
        .to_string();
    let collection = parts[1]
        .as_sequence()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let fragment = parts[2]
        .as_mapping()
        .ok_or(format!("{id}: fragment is not a mapping"))?;
    let mut output_keys = Vec::new();
    for (key, resource) in fragment {
        let key = key
            .as_str()
            .ok_or(format!("{id}: output key is not a string"))?;
        let kind = resource.get("Type").and_then(Value::as_str);
        if key.starts_with("Fn::ForEach::") || kind.is_some_and(|k| READ_TYPES.contains(&k)) {
            return Err(format!(
                "{id}: {key} ({}) would be missing from the dev server, which does not \
                 expand Fn::ForEach; declare it outside the loop",
                kind.unwrap_or("a nested loop")
            ));
        }
        output_keys.push(key.to_string());
    }
    Ok(ForEachLoop {
        name: name.to_string(),
        identifier,
        collection,
        output_keys,
    })
}

impl Template {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let doc: Value =
            serde_yaml_ng::from_str(text).map_err(|e| format!("template.yaml: {e}"))?;
        let globals = env_map(doc.get("Globals").and_then(|g| g.get("Function")));
        let global_sources = env_source_map(doc.get("Globals").and_then(|g| g.get("Function")));
        let resources = doc
            .get("Resources")
            .and_then(Value::as_mapping)
            .ok_or("template.yaml has no Resources")?;
        let mut template = Template {
            tables: Vec::new(),
            queues: Vec::new(),
            functions: Vec::new(),
            schedules: Vec::new(),
            for_each: Vec::new(),
            parameters: parameters(&doc)?,
            parameter_groups: parameter_groups(&doc),
            resources: Vec::new(),
            secrets: BTreeMap::new(),
        };
        for (id, resource) in resources {
            let id = id
                .as_str()
                .ok_or("resource id is not a string")?
                .to_string();
            // AWS::LanguageExtensions loops (per-function log groups and alarms).
            if let Some(name) = id.strip_prefix("Fn::ForEach::") {
                template.for_each.push(for_each_loop(&id, name, resource)?);
                continue;
            }
            let props = resource.get("Properties").cloned().unwrap_or(Value::Null);
            let kind = resource.get("Type").and_then(Value::as_str);
            template.resources.push(ResourceSpec {
                logical_id: id.clone(),
                kind: kind.unwrap_or_default().to_string(),
                references: references(resource),
            });
            match kind {
                Some("AWS::SecretsManager::Secret") => {
                    if let Some(parameter) = props.get("SecretString").and_then(|v| match v {
                        Value::String(_) => None,
                        other => match tag_name(other) {
                            Some((tag, Value::String(name))) if tag == "Ref" => Some(name.clone()),
                            _ => None,
                        },
                    }) {
                        template.secrets.insert(id, parameter);
                    }
                }
                Some("AWS::DynamoDB::Table") => template.tables.push(TableSpec {
                    hash_key: key_attribute(&props, "HASH").ok_or(format!("{id}: no HASH key"))?,
                    range_key: key_attribute(&props, "RANGE"),
                    ttl_attribute: props
                        .get("TimeToLiveSpecification")
                        .and_then(|t| t.get("AttributeName"))
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    logical_id: id,
                }),
                Some("AWS::SQS::Queue") => template.queues.push(QueueSpec {
                    visibility_timeout: props.get("VisibilityTimeout").and_then(Value::as_i64),
                    dead_letter: props.get("RedrivePolicy").and_then(|r| {
                        Some((
                            referenced_resource(r.get("deadLetterTargetArn")?)?,
                            r.get("maxReceiveCount")?.as_i64()?,
                        ))
                    }),
                    logical_id: id,
                }),
                Some("AWS::Serverless::Function") => {
                    let binary = props
                        .get("CodeUri")
                        .and_then(Value::as_str)
                        .and_then(binary_of_code_uri)
                        .ok_or(format!(
                            "{id}: CodeUri must be the folder cargo lambda builds, \
                             target/lambda/<binary>/"
                        ))?;
                    let mut env = globals.clone();
                    env.extend(env_map(Some(&props)));
                    let mut env_source = global_sources.clone();
                    env_source.extend(env_source_map(Some(&props)));
                    let mut routes = Vec::new();
                    let mut sqs = None;
                    for (event_id, event) in props
                        .get("Events")
                        .and_then(Value::as_mapping)
                        .into_iter()
                        .flatten()
                    {
                        let event_props = event.get("Properties").cloned().unwrap_or(Value::Null);
                        match event.get("Type").and_then(Value::as_str) {
                            Some("HttpApi") => routes.push(HttpRoute {
                                method: event_props
                                    .get("Method")
                                    .and_then(Value::as_str)
                                    .unwrap_or("ANY")
                                    .to_uppercase(),
                                path: event_props
                                    .get("Path")
                                    .and_then(Value::as_str)
                                    .ok_or(format!("{id}: HttpApi event without Path"))?
                                    .to_string(),
                            }),
                            Some("SQS") => {
                                sqs = Some(SqsTrigger {
                                    queue: event_props
                                        .get("Queue")
                                        .and_then(referenced_resource)
                                        .ok_or(format!("{id}: SQS event without Queue"))?,
                                    batch_size: event_props
                                        .get("BatchSize")
                                        .and_then(Value::as_i64)
                                        .unwrap_or(10)
                                        as i32,
                                    reports_batch_item_failures: event_props
                                        .get("FunctionResponseTypes")
                                        .and_then(Value::as_sequence)
                                        .is_some_and(|t| {
                                            t.iter().any(|v| {
                                                v.as_str() == Some("ReportBatchItemFailures")
                                            })
                                        }),
                                });
                            }
                            Some(kind @ ("Schedule" | "ScheduleV2")) => {
                                let event_id = event_id.as_str().unwrap_or("?");
                                let expression = event_props
                                    .get("Schedule")
                                    .or(event_props.get("ScheduleExpression"))
                                    .ok_or(format!(
                                        "{id} ({binary}): {kind} event {event_id} without \
                                         Schedule or ScheduleExpression"
                                    ))?
                                    .as_str()
                                    .ok_or(format!(
                                        "{id} ({binary}): {kind} event {event_id}: the \
                                         expression must be a literal string"
                                    ))?;
                                let every = parse_rate(expression).map_err(|e| {
                                    format!("{id} ({binary}): {kind} event {event_id}: {e}")
                                })?;
                                let enabled = event_props.get("Enabled").and_then(Value::as_bool)
                                    != Some(false)
                                    && event_props.get("State").and_then(Value::as_str)
                                        != Some("DISABLED");
                                template.schedules.push(ScheduleSpec {
                                    function: binary.clone(),
                                    logical_id: id.clone(),
                                    every,
                                    enabled,
                                });
                            }
                            _ => {}
                        }
                    }
                    template.functions.push(FunctionSpec {
                        logical_id: id,
                        binary,
                        env,
                        routes,
                        sqs,
                        env_source,
                    });
                }
                _ => {}
            }
        }
        Ok(template)
    }

    pub fn function(&self, binary: &str) -> Option<&FunctionSpec> {
        self.functions.iter().find(|f| f.binary == binary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_repository_template() {
        let template = Template::load(&crate::repo_root().join("template.yaml")).unwrap();
        let ids: Vec<&str> = template
            .tables
            .iter()
            .map(|t| t.logical_id.as_str())
            .collect();
        assert!(
            ids.contains(&"CallsTable")
                && ids.contains(&"IdempotencyTable")
                && ids.contains(&"StatsTable")
        );
        let calls = template
            .tables
            .iter()
            .find(|t| t.logical_id == "CallsTable")
            .unwrap();
        assert_eq!(calls.range_key.as_ref().unwrap().name, "item");
        let queue = template
            .queues
            .iter()
            .find(|q| q.logical_id == "TranscriptionQueue")
            .unwrap();
        assert_eq!(queue.dead_letter, Some(("TranscriptionDLQ".to_string(), 5)));
        let zapier = template.function("zapier-webhook").unwrap();
        assert_eq!(
            zapier.routes,
            vec![HttpRoute {
                method: "POST".into(),
                path: "/webhook/zapier".into()
            }]
        );
        assert_eq!(
            zapier.env.get("CALLS_TABLE"),
            Some(&EnvValue::Ref("CallsTable".into()))
        );
        assert_eq!(
            zapier.env.get("RUST_LOG"),
            Some(&EnvValue::Literal("info".into()))
        );
        let worker = template
            .function("transcribe-worker")
            .unwrap()
            .sqs
            .clone()
            .unwrap();
        assert_eq!(worker.queue, "TranscriptionQueue");
        assert!(worker.reports_batch_item_failures);
        // Every queue consumer must report partial batch failures.
        assert!(template
            .functions
            .iter()
            .filter_map(|f| f.sqs.as_ref())
            .all(|s| s.reports_batch_item_failures));
    }

    fn repository_template() -> (Template, Value) {
        let path = crate::repo_root().join("template.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        (
            Template::parse(&text).unwrap(),
            serde_yaml_ng::from_str(&text).unwrap(),
        )
    }

    /// The `AWS::Serverless::Function` logical ids, read straight from the YAML.
    fn declared_function_ids(doc: &Value) -> Vec<String> {
        doc["Resources"]
            .as_mapping()
            .unwrap()
            .iter()
            .filter(|(_, r)| {
                r.get("Type").and_then(Value::as_str) == Some("AWS::Serverless::Function")
            })
            .map(|(id, _)| id.as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn finds_every_function_and_skips_the_for_each_loop() {
        let (template, doc) = repository_template();
        assert!(doc["Transform"]
            .as_sequence()
            .is_some_and(|t| t.first().and_then(Value::as_str) == Some("AWS::LanguageExtensions")));
        let found: Vec<&str> = template
            .functions
            .iter()
            .map(|f| f.logical_id.as_str())
            .collect();
        assert_eq!(found, declared_function_ids(&doc));
        assert!(template.functions.iter().all(|f| !f.binary.is_empty()));
        let mut ids = template
            .functions
            .iter()
            .map(|f| &f.logical_id)
            .chain(template.tables.iter().map(|t| &t.logical_id))
            .chain(template.queues.iter().map(|q| &q.logical_id));
        assert!(ids.all(|id| !id.starts_with("Fn::")));
        let logs = template
            .for_each
            .iter()
            .find(|l| l.name == "FunctionLogs")
            .expect("Fn::ForEach::FunctionLogs in template.yaml");
        assert_eq!(logs.identifier, "Name");
        assert_eq!(
            logs.output_keys,
            [
                "${Name}FunctionLogGroup",
                "${Name}ErrorsAlarm",
                "${Name}ThrottlesAlarm"
            ]
        );
    }

    /// A function without a log group keeps its logs forever, and one without
    /// alarms fails silently: every function must be in the loop that makes them.
    #[test]
    fn every_function_has_a_log_group_and_alarms() {
        let (template, doc) = repository_template();
        let logs = template
            .for_each
            .iter()
            .find(|l| l.name == "FunctionLogs")
            .unwrap();
        let generated = logs.generated_ids();
        for function in &template.functions {
            let stem = function
                .logical_id
                .strip_suffix("Function")
                .unwrap_or_else(|| {
                    panic!("{}: logical id must end in Function", function.logical_id)
                });
            assert!(
                logs.collection.iter().any(|n| n == stem),
                "add {stem} to Fn::ForEach::FunctionLogs in template.yaml"
            );
            for suffix in ["FunctionLogGroup", "ErrorsAlarm", "ThrottlesAlarm"] {
                assert!(generated.contains(&format!("{stem}{suffix}")));
            }
        }
        // No stale names, and no generated id clashing with a declared one.
        assert_eq!(logs.collection.len(), template.functions.len());
        let declared = doc["Resources"].as_mapping().unwrap();
        assert!(generated
            .iter()
            .all(|id| !declared.contains_key(id.as_str())));
    }

    const SYNTHETIC: &str = r#"
Transform:
  - AWS::LanguageExtensions
  - AWS::Serverless-2016-10-31
Resources:
  Jobs:
    Type: AWS::SQS::Queue
  WorkerFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: target/lambda/worker/
      Events:
        Jobs:
          Type: SQS
          Properties:
            Queue: !GetAtt Jobs.Arn
  Fn::ForEach::Logs:
    - Name
    - [Worker, my-api]
    - ${Name}Alarm:
        Type: AWS::CloudWatch::Alarm
        Properties:
          Dimensions:
            - Name: FunctionName
              Value:
                Ref: !Sub ${Name}Function
      Log&{Name}:
        Type: AWS::Logs::LogGroup
"#;

    #[test]
    fn skips_a_for_each_loop_and_records_what_it_generates() {
        let template = Template::parse(SYNTHETIC).unwrap();
        assert_eq!(template.functions.len(), 1);
        assert_eq!(
            template
                .function("worker")
                .unwrap()
                .sqs
                .as_ref()
                .unwrap()
                .queue,
            "Jobs"
        );
        assert_eq!(template.queues.len(), 1);
        assert_eq!(
            template.for_each,
            vec![ForEachLoop {
                name: "Logs".into(),
                identifier: "Name".into(),
                collection: vec!["Worker".into(), "my-api".into()],
                output_keys: vec!["${Name}Alarm".into(), "Log&{Name}".into()],
            }]
        );
        assert_eq!(
            template.for_each[0].generated_ids(),
            ["WorkerAlarm", "LogWorker", "my-apiAlarm", "Logmyapi"]
        );
    }

    const SCHEDULED: &str = r#"
Resources:
  SweepFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: target/lambda/stuck-sweep/
      Events:
        Every5:
          Type: Schedule
          Properties:
            Schedule: rate(5 minutes)
        Hourly:
          Type: ScheduleV2
          Properties:
            ScheduleExpression: rate(1 hour)
        Paused:
          Type: Schedule
          Properties:
            Schedule: rate(1 day)
            Enabled: false
  ReportFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: target/lambda/report/
      Events:
        Daily:
          Type: ScheduleV2
          Properties:
            ScheduleExpression: rate(2 days)
            State: DISABLED
        Api:
          Type: HttpApi
          Properties:
            Path: /report
            Method: get
"#;

    #[test]
    fn reads_schedule_events() {
        let template = Template::parse(SCHEDULED).unwrap();
        let schedule = |every: u64, function: &str, logical_id: &str, enabled: bool| ScheduleSpec {
            function: function.into(),
            logical_id: logical_id.into(),
            every: Duration::from_secs(every),
            enabled,
        };
        assert_eq!(
            template.schedules,
            vec![
                schedule(300, "stuck-sweep", "SweepFunction", true),
                schedule(3600, "stuck-sweep", "SweepFunction", true),
                schedule(86_400, "stuck-sweep", "SweepFunction", false),
                schedule(2 * 86_400, "report", "ReportFunction", false),
            ]
        );
        // Schedules are not routes or queue consumers.
        let sweep = template.function("stuck-sweep").unwrap();
        assert!(sweep.routes.is_empty() && sweep.sqs.is_none());
        assert_eq!(template.function("report").unwrap().routes.len(), 1);
    }

    #[test]
    fn parses_rates_with_singular_and_plural_units() {
        for (expression, seconds) in [
            ("rate(1 minute)", 60),
            ("rate(5 minutes)", 300),
            ("rate(1 hour)", 3600),
            ("rate(12 hours)", 43_200),
            ("rate(1 day)", 86_400),
            ("rate(7 days)", 604_800),
            (" rate( 10 minutes ) ", 600),
        ] {
            assert_eq!(
                parse_rate(expression),
                Ok(Duration::from_secs(seconds)),
                "{expression}"
            );
        }
        for bad in [
            "rate(5 minute)",
            "rate(1 minutes)",
            "rate(0 minutes)",
            "rate(-1 minutes)",
            "rate(5 weeks)",
            "rate(5)",
            "rate(five minutes)",
            "every 5 minutes",
            "cron(0/5 * * * ? *)",
            "at(2030-01-01T00:00:00)",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad} should be refused");
        }
        assert!(parse_rate("cron(0 12 * * ? *)")
            .unwrap_err()
            .contains("only rate(...)"));
    }

    #[test]
    fn a_bad_schedule_names_the_function() {
        for (from, to) in [
            ("rate(5 minutes)", "rate(5 fortnights)"),
            ("rate(5 minutes)", "cron(0/5 * * * ? *)"),
            ("Schedule: rate(5 minutes)", "Schedule: !Ref Rate"),
            ("Schedule: rate(5 minutes)", "Enabled: true"),
        ] {
            let err = Template::parse(&SCHEDULED.replace(from, to)).unwrap_err();
            assert!(
                err.contains("SweepFunction")
                    && err.contains("stuck-sweep")
                    && err.contains("Every5"),
                "{to}: {err}"
            );
        }
    }

    #[test]
    fn takes_the_binary_from_the_code_uri_folder() {
        for (code_uri, binary) in [
            ("target/lambda/zapier-webhook/", Some("zapier-webhook")),
            ("target/lambda/zapier-webhook", Some("zapier-webhook")),
            ("./target/lambda/stuck-sweep//", Some("stuck-sweep")),
            (".", None),
            ("target/lambda/", None),
            ("functions/zapier-webhook/", None),
            ("s3://bucket/code.zip", None),
        ] {
            assert_eq!(
                binary_of_code_uri(code_uri).as_deref(),
                binary,
                "{code_uri}"
            );
        }
        let err = Template::parse(&SCHEDULED.replace("target/lambda/report/", ".")).unwrap_err();
        assert!(
            err.contains("ReportFunction") && err.contains("CodeUri"),
            "{err}"
        );
    }

    #[test]
    fn rejects_a_loop_that_generates_what_the_dev_server_reads() {
        let text = SYNTHETIC.replace("AWS::Logs::LogGroup", "AWS::Serverless::Function");
        let err = Template::parse(&text).unwrap_err();
        assert!(
            err.contains("Log&{Name}") && err.contains("AWS::Serverless::Function"),
            "{err}"
        );
    }
}
