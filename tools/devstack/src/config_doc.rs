//! The configuration reference of `docs/configuration.md`, generated from
//! template.yaml so it cannot drift from what deploys: every Parameter, the
//! variable it becomes, the functions that get it, its default and whether
//! it is a secret; then the variables functions get from no parameter, and
//! those the template sets for no function (`crate::dev_env`).
//! `cargo run -p devstack --bin config-doc` writes it between [`BEGIN`] and
//! [`END`]; `tests/configuration_doc.rs` fails when the page is out of step.

use std::collections::{BTreeMap, BTreeSet};

use crate::template::{references, short_form, ParameterSpec, Template};

pub const BEGIN: &str = "<!-- generated from template.yaml by `cargo run -p devstack --bin config-doc`: do not edit between these markers -->";
pub const END: &str = "<!-- end of generated reference -->";

/// In AWS a credential reaches a function as the ARN of its secret, in
/// `<NAME>_SECRET_ARN`; the code reads `<NAME>` (`base::config::optional`).
const SECRET_ARN_SUFFIX: &str = "_SECRET_ARN";

/// Where a parameter goes: variable name -> the function crates that get it.
type Uses = BTreeMap<String, BTreeSet<String>>;

struct Reference {
    /// parameter -> its variables.
    parameters: BTreeMap<String, Uses>,
    /// (variable, value as written) -> functions, for variables from no parameter.
    others: BTreeMap<(String, String), BTreeSet<String>>,
    all_functions: BTreeSet<String>,
}

fn collect(template: &Template) -> Reference {
    let parameter_names: BTreeSet<&str> = template
        .parameters
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    let kinds: BTreeMap<&str, &str> = template
        .resources
        .iter()
        .map(|r| (r.logical_id.as_str(), r.kind.as_str()))
        .collect();
    let mut reference = Reference {
        parameters: BTreeMap::new(),
        others: BTreeMap::new(),
        all_functions: template
            .functions
            .iter()
            .map(|f| f.binary.clone())
            .collect(),
    };
    for function in &template.functions {
        for (variable, value) in &function.env_source {
            let mut from_parameter = false;
            for name in references(value) {
                let (parameter, variable) = if parameter_names.contains(name.as_str()) {
                    (name, variable.clone())
                } else if let Some(parameter) = template.secrets.get(&name) {
                    let read_as = variable
                        .strip_suffix(SECRET_ARN_SUFFIX)
                        .unwrap_or(variable)
                        .to_string();
                    (parameter.clone(), read_as)
                } else {
                    continue;
                };
                from_parameter = true;
                reference
                    .parameters
                    .entry(parameter)
                    .or_default()
                    .entry(variable)
                    .or_default()
                    .insert(function.binary.clone());
            }
            if !from_parameter {
                reference
                    .others
                    .entry((variable.clone(), describe_value(value, &kinds)))
                    .or_default()
                    .insert(function.binary.clone());
            }
        }
    }
    reference
}

/// A value from no parameter: a literal, a resource's name or URL, or the
/// expression as written.
fn describe_value(value: &serde_yaml_ng::Value, kinds: &BTreeMap<&str, &str>) -> String {
    // Not `as_str`: it sees through tags (`!Ref X` would read as `X`).
    if let serde_yaml_ng::Value::String(text) = value {
        return format!("`{text}`");
    }
    let written = short_form(value);
    if let Some(id) = written.strip_prefix("!Ref ") {
        match kinds.get(id) {
            Some(&"AWS::DynamoDB::Table") => return format!("name of table `{id}`"),
            Some(&"AWS::SQS::Queue") => return format!("URL of queue `{id}`"),
            Some(&"AWS::S3::Bucket") => return format!("name of bucket `{id}`"),
            _ => {}
        }
    }
    format!("`{written}`")
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn functions_cell(functions: &BTreeSet<String>, all: &BTreeSet<String>) -> String {
    if functions == all {
        format!("all {} functions", all.len())
    } else {
        functions.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

fn default_cell(parameter: &ParameterSpec) -> String {
    match parameter.default.as_deref() {
        None => "**required**".to_string(),
        Some("") => "empty".to_string(),
        Some(value) => format!("`{}`", cell(value)),
    }
}

fn parameter_rows(parameter: &ParameterSpec, reference: &Reference, template: &Template) -> String {
    let description = cell(parameter.description.as_deref().unwrap_or(""));
    let default = default_cell(parameter);
    let secret = if parameter.no_echo { " (secret)" } else { "" };
    let mut rows = String::new();
    match reference.parameters.get(&parameter.name) {
        Some(uses) => {
            for (variable, functions) in uses {
                rows.push_str(&format!(
                    "| `{}` | `{variable}`{secret} | {} | {default} | {description} |\n",
                    parameter.name,
                    functions_cell(functions, &reference.all_functions),
                ));
            }
        }
        None => {
            let users: Vec<String> = template
                .resources
                .iter()
                .filter(|r| r.kind != "AWS::Serverless::Function")
                .filter(|r| r.references.contains(&parameter.name))
                .map(|r| format!("`{}`", r.logical_id))
                .collect();
            let used = if users.is_empty() {
                "none".to_string()
            } else {
                format!("none (used by {})", users.join(", "))
            };
            rows.push_str(&format!(
                "| `{}` | no variable{secret} | {used} | {default} | {description} |\n",
                parameter.name
            ));
        }
    }
    rows
}

const PARAMETER_HEADER: &str =
    "| Parameter | Variable | Functions | Default | Description |\n|---|---|---|---|---|\n";

/// The generated reference for `template_text` (without the markers).
pub fn render(template_text: &str) -> Result<String, String> {
    let template = Template::parse(template_text)?;
    let reference = collect(&template);
    let by_name: BTreeMap<&str, &ParameterSpec> = template
        .parameters
        .iter()
        .map(|p| (p.name.as_str(), p))
        .collect();
    let mut out = String::new();
    let variables: usize = reference.parameters.values().map(BTreeMap::len).sum();
    out.push_str(&format!(
        "{} parameters ({} secret), {} variables from parameters, {} from none, {} functions.\n",
        template.parameters.len(),
        template.parameters.iter().filter(|p| p.no_echo).count(),
        variables,
        reference
            .others
            .keys()
            .map(|(v, _)| v)
            .collect::<BTreeSet<_>>()
            .len(),
        reference.all_functions.len(),
    ));
    let mut listed = BTreeSet::new();
    let mut groups: Vec<(String, Vec<&ParameterSpec>)> = Vec::new();
    for group in &template.parameter_groups {
        let members = group
            .parameters
            .iter()
            .filter_map(|name| by_name.get(name.as_str()).copied())
            .filter(|p| listed.insert(p.name.clone()))
            .collect();
        groups.push((group.label.clone(), members));
    }
    let rest: Vec<&ParameterSpec> = template
        .parameters
        .iter()
        .filter(|p| !listed.contains(&p.name))
        .collect();
    if !rest.is_empty() {
        groups.push(("Parameters in no console group".to_string(), rest));
    }
    for (label, members) in groups {
        if members.is_empty() {
            continue;
        }
        out.push_str(&format!("\n### {label}\n\n{PARAMETER_HEADER}"));
        for parameter in members {
            out.push_str(&parameter_rows(parameter, &reference, &template));
        }
    }
    out.push_str(
        "\n### Variables from no parameter\n\n| Variable | Value | Functions |\n|---|---|---|\n",
    );
    for ((variable, value), functions) in &reference.others {
        out.push_str(&format!(
            "| `{variable}` | {} | {} |\n",
            cell(value),
            functions_cell(functions, &reference.all_functions)
        ));
    }
    out.push_str(&not_in_template());
    Ok(out)
}

/// The variables of `devstack::dev_env`: read with a default by functions
/// but set by the template for none, then the dev server's own.
fn not_in_template() -> String {
    let mut out = String::from(
        "\n### Variables the template does not set\n\n\
         The code reads these with a default; the template gives them to no \
         function, so deployed functions use the default unless you add the \
         variable to the template. The dev server's own come last.\n\n\
         | Variable | Read by | Meaning |\n|---|---|---|\n",
    );
    for variable in crate::dev_env::NOT_IN_TEMPLATE
        .iter()
        .chain(&crate::dev_env::DEV_SERVER)
    {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            variable.name,
            cell(variable.read_by),
            cell(variable.meaning)
        ));
    }
    out
}

/// The variables functions read that come from a stack parameter, under the
/// name the code reads (a secret's `<NAME>`, not `<NAME>_SECRET_ARN`).
pub fn parameter_variables(template_text: &str) -> Result<BTreeSet<String>, String> {
    let template = Template::parse(template_text)?;
    Ok(collect(&template)
        .parameters
        .into_values()
        .flat_map(BTreeMap::into_keys)
        .collect())
}

/// The text between the markers of `page`, if it has them.
pub fn generated_part(page: &str) -> Option<&str> {
    let start = page.find(BEGIN)? + BEGIN.len();
    let end = page[start..].find(END)? + start;
    Some(page[start..end].trim_matches('\n'))
}

/// `page` with `generated` between its markers; the rest untouched.
pub fn splice(page: &str, generated: &str) -> Result<String, String> {
    let missing = || format!("the page has no `{BEGIN}` ... `{END}` markers");
    let start = page.find(BEGIN).ok_or_else(missing)? + BEGIN.len();
    let end = page[start..].find(END).ok_or_else(missing)? + start;
    Ok(format!(
        "{}\n\n{}\n\n{}",
        &page[..start],
        generated.trim_matches('\n'),
        &page[end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = r#"
Metadata:
  AWS::CloudFormation::Interface:
    ParameterGroups:
      - Label: {default: Secrets}
        Parameters: [Token]
Parameters:
  Host:
    Type: String
    Default: example.com
    Description: >-
      Host the worker
      calls.
  Token:
    Type: String
    NoEcho: true
    Description: A | token.
  Mode:
    Type: Number
    Default: 5
  Alarm:
    Type: String
    Default: ""
Globals:
  Function:
    Environment:
      Variables:
        RUST_LOG: info
Resources:
  TokenSecret:
    Type: AWS::SecretsManager::Secret
    Properties: {Name: !Sub "${AWS::StackName}/Token", SecretString: !Ref Token}
  Jobs:
    Type: AWS::SQS::Queue
  Topic:
    Type: AWS::SNS::Subscription
    Properties:
      Endpoint: !Ref Alarm
  WorkerFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: target/lambda/worker/
      Environment:
        Variables:
          BASE_URL: !Sub "https://${Host}/v1"
          TOKEN_SECRET_ARN: !If [HasToken, !Ref TokenSecret, !Ref AWS::NoValue]
          JOBS_QUEUE_URL: !Ref Jobs
          ENABLED: !If [HasToken, "true", "false"]
  ApiFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: target/lambda/api/
      Environment:
        Variables:
          MODE: !Ref Mode
"#;

    #[test]
    fn follows_ref_sub_if_and_secrets_to_the_variables() {
        let doc = render(TEMPLATE).unwrap();
        assert!(doc.starts_with(
            "4 parameters (1 secret), 3 variables from parameters, 3 from none, 2 functions.\n"
        ));
        // The grouped one first, then the rest in template order.
        let secrets = doc.find("### Secrets").unwrap();
        let rest = doc.find("### Parameters in no console group").unwrap();
        assert!(secrets < rest);
        assert!(
            doc.contains("| `Token` | `TOKEN` (secret) | worker | **required** | A \\| token. |\n")
        );
        assert!(doc.contains(
            "| `Host` | `BASE_URL` | worker | `example.com` | Host the worker calls. |\n"
        ));
        assert!(doc.contains("| `Mode` | `MODE` | api | `5` |  |\n"));
        assert!(doc.contains("| `Alarm` | no variable | none (used by `Topic`) | empty |  |\n"));
        assert!(doc.contains("| `JOBS_QUEUE_URL` | URL of queue `Jobs` | worker |\n"));
        assert!(doc.contains("| `ENABLED` | `!If [HasToken, \"true\", \"false\"]` | worker |\n"));
        assert!(doc.contains("| `RUST_LOG` | `info` | all 2 functions |\n"));
        assert!(doc.find("### Secrets").unwrap() < doc.find("`Host`").unwrap());
    }

    #[test]
    fn splices_between_the_markers_only() {
        let page = format!("intro\n{BEGIN}\nold\n{END}\noutro\n");
        let new = splice(&page, "new table").unwrap();
        assert_eq!(
            new,
            format!("intro\n{BEGIN}\n\nnew table\n\n{END}\noutro\n")
        );
        assert_eq!(generated_part(&new), Some("new table"));
        assert_eq!(splice(&new, "new table").unwrap(), new);
        assert!(splice("no markers", "x").is_err());
    }
}
