//! The console's parameter groups (`AWS::CloudFormation::Interface`) name
//! every parameter once, the "Secrets" group holds exactly the `NoEcho`
//! ones, so a deployer sees every credential together and nothing else.

use std::collections::BTreeMap;

use serde_yaml_ng::Value;

#[test]
fn every_parameter_is_in_one_group_and_secrets_are_the_noecho_ones() {
    let text = std::fs::read_to_string(devstack::repo_root().join("template.yaml")).unwrap();
    let template: Value = serde_yaml_ng::from_str(&text).unwrap();
    let parameters = template["Parameters"].as_mapping().unwrap();
    let groups = template["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
        .as_sequence()
        .unwrap();
    let mut group_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for group in groups {
        let label = group["Label"]["default"].as_str().unwrap().to_string();
        for name in group["Parameters"].as_sequence().unwrap() {
            let name = name.as_str().unwrap().to_string();
            assert!(
                parameters.contains_key(name.as_str()),
                "group {label} names unknown {name}"
            );
            group_of.entry(name).or_default().push(label.clone());
        }
    }
    for (name, spec) in parameters {
        let name = name.as_str().unwrap();
        let labels = group_of.get(name).cloned().unwrap_or_default();
        assert_eq!(labels.len(), 1, "{name} is in groups {labels:?}");
        let secret = spec["NoEcho"].as_bool().unwrap_or(false);
        assert_eq!(
            labels[0] == "Secrets",
            secret,
            "{name} (NoEcho: {secret}) is in group {:?}",
            labels[0]
        );
    }
}
