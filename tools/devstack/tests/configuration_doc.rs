//! `docs/configuration.md` carries a reference generated from template.yaml
//! (`devstack::config_doc`); like the OpenAPI drift test, this fails when
//! the page and the template are out of step.

use devstack::config_doc;
use serde_yaml_ng::Value;

fn read(path: &str) -> String {
    std::fs::read_to_string(devstack::repo_root().join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn configuration_md_is_generated_from_the_current_template() {
    let expected = config_doc::render(&read("template.yaml")).unwrap();
    let page = read("docs/configuration.md");
    let actual = config_doc::generated_part(&page).unwrap_or_else(|| {
        panic!(
            "docs/configuration.md has lost its markers `{}` ... `{}`; put them back and run \
             `cargo run -p devstack --bin config-doc`",
            config_doc::BEGIN,
            config_doc::END
        )
    });
    let expected = expected.trim_matches('\n');
    if actual != expected {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "docs/configuration.md is out of step with template.yaml: run \
             `cargo run -p devstack --bin config-doc` and commit the page.\n\
             first difference at line {} of the generated part:\n  page:     {}\n  template: {}",
            first + 1,
            actual.lines().nth(first).unwrap_or("(end)"),
            expected.lines().nth(first).unwrap_or("(end)"),
        );
    }
}

/// The functions whose environment has `variable`, read straight from the
/// YAML (not through `devstack::template`), sorted; `all N functions` for a
/// variable of `Globals: Function`.
fn functions_with(doc: &Value, variable: &str) -> String {
    let functions: Vec<&Value> = doc["Resources"]
        .as_mapping()
        .unwrap()
        .values()
        .filter(|r| r["Type"].as_str() == Some("AWS::Serverless::Function"))
        .collect();
    let has = |env: &Value| env.as_mapping().is_some_and(|v| v.contains_key(variable));
    if has(&doc["Globals"]["Function"]["Environment"]["Variables"]) {
        return format!("all {} functions", functions.len());
    }
    let mut names: Vec<String> = functions
        .into_iter()
        .filter(|r| has(&r["Properties"]["Environment"]["Variables"]))
        .map(|r| {
            // CodeUri is target/lambda/<binary>/.
            let code_uri = r["Properties"]["CodeUri"].as_str().unwrap();
            code_uri
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    names.sort();
    names.join(", ")
}

/// Spot checks of the generator against the template read another way.
#[test]
fn a_secret_is_listed_under_the_name_the_code_reads_with_its_functions() {
    let text = read("template.yaml");
    let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
    let generated = config_doc::render(&text).unwrap();
    let twilio = functions_with(&doc, "TWILIO_AUTH_TOKEN_SECRET_ARN");
    assert!(!twilio.is_empty());
    assert!(
        generated.contains(&format!(
            "| `TwilioAuthToken` | `TWILIO_AUTH_TOKEN` (secret) | {twilio} | empty |"
        )),
        "{generated}"
    );
    let inbound = functions_with(&doc, "INBOUND_ORG_ID");
    assert!(generated.contains(&format!(
        "| `InboundOrgId` | `INBOUND_ORG_ID` | {inbound} | empty |"
    )));
    let webhook = functions_with(&doc, "WEBHOOK_TOKEN_SECRET_ARN");
    assert!(generated.contains(&format!(
        "| `WebhookToken` | `WEBHOOK_TOKEN` (secret) | {webhook} | **required** |"
    )));
    // Every parameter has a row.
    for name in doc["Parameters"].as_mapping().unwrap().keys() {
        let name = name.as_str().unwrap();
        assert!(
            generated.contains(&format!("| `{name}` |")),
            "{name} has no row"
        );
    }
}
