//! Lambda refuses a function whose environment (names and values) exceeds
//! 4 KB, and CloudFormation only finds out halfway through a deploy. Every
//! function's environment is bounded here from the template alone: a
//! parameter by its `MaxLength`/`AllowedValues` (a free-text parameter
//! without one fails this test), a resource reference by the longest name,
//! URL or ARN AWS gives such a resource in a stack whose name has at most
//! `STACK_NAME_BOUND` characters (docs/deploy.md says so).

use std::collections::BTreeMap;

use devstack::template::{references, Template};
use serde_yaml_ng::Value;

/// Lambda's limit on a function's environment variables, names included.
const LAMBDA_ENV_LIMIT: usize = 4096;

/// The longest stack name docs/deploy.md allows.
const STACK_NAME_BOUND: usize = 40;

/// The longest value a `!Ref` of a resource becomes.
fn resource_bound(kind: &str, logical_id: &str) -> usize {
    // "arn:aws-us-gov:secretsmanager:" + region + ":" + account + ":secret:"
    let arn_prefix = 30 + 14 + 1 + 12 + 8;
    match kind {
        // CloudFormation names it <stack>-<logical id>-<13 characters>.
        "AWS::DynamoDB::Table" => STACK_NAME_BOUND + 1 + logical_id.len() + 1 + 13,
        // https://sqs.<region>.amazonaws.com/<account>/<name of at most 80>
        "AWS::SQS::Queue" => 12 + 14 + 15 + 12 + 1 + 80,
        // Named <stack>/<parameter>; AWS appends -<6 characters>.
        "AWS::SecretsManager::Secret" => arn_prefix + STACK_NAME_BOUND + 1 + logical_id.len() + 7,
        "AWS::S3::Bucket" => 63,
        // An API id: ten lower-case letters and digits.
        "AWS::Serverless::HttpApi" => 10,
        // arn:<partition>:iam::<account>:role/<name of at most 64>
        "AWS::IAM::Role" => 14 + 6 + 12 + 6 + 64,
        other => panic!("no bound for a reference to {other} ({logical_id})"),
    }
}

/// Parameters whose values are identifiers, URLs or numbers of a bounded
/// kind get this bound when they carry no `MaxLength`; free text must say
/// its own bound (listed in `FREE_TEXT`).
const IDENTIFIER_BOUND: usize = 100;

/// A `Number` parameter's longest value (a 64-bit integer).
const NUMBER_BOUND: usize = 20;

/// Parameters a deployer writes prose or lists into: each must carry a
/// `MaxLength` so a long prompt cannot push a function past the limit.
const FREE_TEXT: &[&str] = &[
    "AgentSystemPrompt",
    "CallGreeting",
    "CallMenu",
    "WhatsAppFallbackReply",
    "WhatsAppMediaReply",
    "NotificationRoutes",
    "RecordingAllowedHosts",
    "CallStartTitle",
];

fn parameter_bounds(raw: &Value) -> BTreeMap<String, usize> {
    let mut bounds = BTreeMap::new();
    for (name, spec) in raw["Parameters"].as_mapping().unwrap() {
        let name = name.as_str().unwrap().to_string();
        let max_length = spec["MaxLength"].as_u64().map(|n| n as usize);
        let allowed = spec["AllowedValues"].as_sequence().map(|values| {
            values
                .iter()
                .map(|v| v.as_str().map_or(20, str::len))
                .max()
                .unwrap_or(0)
        });
        let bound = match (max_length, allowed) {
            (Some(n), _) | (None, Some(n)) => n,
            (None, None) if spec["Type"].as_str() == Some("Number") => NUMBER_BOUND,
            (None, None) => {
                assert!(
                    !FREE_TEXT.contains(&name.as_str()),
                    "{name} is free text and needs a MaxLength in template.yaml"
                );
                IDENTIFIER_BOUND
            }
        };
        bounds.insert(name, bound);
    }
    bounds
}

/// The longest string `value` can become: the longest of its literal and
/// referenced alternatives (`!If` picks one; `!Sub` strings are counted
/// whole plus what they reference).
fn value_bound(
    value: &Value,
    parameters: &BTreeMap<String, usize>,
    kinds: &BTreeMap<&str, &str>,
    raw: &Value,
) -> usize {
    let literal = match value {
        Value::String(s) => s.len(),
        // `!Sub "text ${Name}"`: the text plus every name it substitutes.
        Value::Tagged(tagged) if tagged.tag == "Sub" => {
            let text = tagged.value.as_str().unwrap_or_default();
            // Pseudo parameters are not references: count the stack name at
            // its longest (the text already holds its 17-character name).
            let stack_names = text.matches("${AWS::StackName}").count();
            return text.len()
                + stack_names * STACK_NAME_BOUND
                + references(value)
                    .iter()
                    .map(|name| match parameters.get(name) {
                        Some(bound) => *bound,
                        None => {
                            resource_bound(kinds.get(name.as_str()).unwrap_or(&"unknown"), name)
                        }
                    })
                    .sum::<usize>();
        }
        Value::Number(n) => n.to_string().len(),
        Value::Bool(_) => 5,
        _ => 0,
    };
    let referenced = references(value)
        .iter()
        // `!If`'s first item names a condition, not a value.
        .filter(|name| raw["Conditions"].get(name.as_str()).is_none())
        .map(|name| match parameters.get(name) {
            Some(bound) => *bound,
            None => resource_bound(kinds.get(name.as_str()).unwrap_or(&"unknown"), name),
        })
        .max()
        .unwrap_or(0);
    literal.max(referenced)
}

#[test]
fn every_function_environment_fits_lambdas_4_kb_at_the_longest_values() {
    let path = devstack::repo_root().join("template.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let raw: Value = serde_yaml_ng::from_str(&text).unwrap();
    let parameters = parameter_bounds(&raw);
    let template = Template::load(&path).unwrap();
    // Loop-generated resources (Fn::ForEach) included.
    let kinds: BTreeMap<&str, &str> = template
        .resources
        .iter()
        .map(|r| (r.logical_id.as_str(), r.kind.as_str()))
        .collect();
    let mut largest = (0, String::new());
    for function in &template.functions {
        let sizes: Vec<(&String, usize)> = function
            .env_source
            .iter()
            .map(|(name, value)| {
                (
                    name,
                    name.len() + value_bound(value, &parameters, &kinds, &raw),
                )
            })
            .collect();
        let size: usize = sizes.iter().map(|(_, n)| n).sum();
        assert!(
            size <= LAMBDA_ENV_LIMIT,
            "{} can reach {size} bytes of environment (limit {LAMBDA_ENV_LIMIT}): \
             lower a MaxLength or move a value out of its environment; {sizes:?}",
            function.binary
        );
        if size > largest.0 {
            largest = (size, function.binary.clone());
        }
    }
    assert!(largest.0 > 0, "no function environment was read");
    println!(
        "largest worst-case environment: {} ({} bytes)",
        largest.1, largest.0
    );
}
