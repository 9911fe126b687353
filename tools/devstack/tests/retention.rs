//! Customer data outlives the stack: every table and bucket is kept when
//! the stack is deleted or the resource replaced (`sam delete`, a change
//! that forces replacement), so a teardown never takes call records,
//! keys, budgets or recordings with it.

use serde_yaml_ng::Value;

#[test]
fn every_table_and_bucket_is_retained_on_delete_and_replace() {
    let text = std::fs::read_to_string(devstack::repo_root().join("template.yaml")).unwrap();
    let template: Value = serde_yaml_ng::from_str(&text).unwrap();
    let resources = template["Resources"].as_mapping().unwrap();
    let mut stores = 0;
    for (name, resource) in resources {
        let kind = resource["Type"].as_str().unwrap_or_default();
        if !matches!(kind, "AWS::DynamoDB::Table" | "AWS::S3::Bucket") {
            continue;
        }
        stores += 1;
        for policy in ["DeletionPolicy", "UpdateReplacePolicy"] {
            assert_eq!(
                resource[policy].as_str(),
                Some("Retain"),
                "{name:?} ({kind}) lacks {policy}: Retain"
            );
        }
    }
    assert!(stores >= 8, "found only {stores} tables and buckets");
}
