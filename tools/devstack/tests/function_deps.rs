//! Each Lambda links only the outside services it calls (issue 12). SAM
//! builds one function at a time, so features are resolved per function:
//! `cargo tree -p <function>` does the same resolution without building
//! (`cargo metadata` unifies the whole workspace, tools included, so it
//! cannot tell). A few seconds, no compilation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use devstack::template::Template;

/// The HTTP routes outside services call. None of them dials or stores a
/// number it was given, so none carries libphonenumber or SES.
const WEBHOOKS: [&str; 14] = [
    "zapier-webhook",
    "exotel-webhook",
    "twilio-status",
    "twilio-voice",
    "twilio-routing",
    "elevenlabs-webhook",
    "livekit-webhook",
    "call-started",
    "whatsapp-message",
    "whatsapp-status",
    "whatsapp-voice",
    "slack-commands",
    "discord-interactions",
    "teams-messages",
];

/// Webhooks that open sessions and so drive LiveKit rooms.
const SESSION_WEBHOOKS: [&str; 5] = [
    "twilio-voice",
    "whatsapp-voice",
    "slack-commands",
    "discord-interactions",
    "teams-messages",
];

/// One function's resolved graph: package name -> versions and the
/// features enabled on it.
struct Graph {
    packages: BTreeMap<String, Vec<(String, BTreeSet<String>)>>,
}

impl Graph {
    fn of(root: &Path, package: &str) -> Self {
        let output = Command::new(env!("CARGO"))
            .current_dir(root)
            .args([
                "tree", "--locked", "-p", package, "-e", "normal", "--prefix", "none", "--format",
                "{p}|{f}",
            ])
            .output()
            .expect("cargo tree runs");
        assert!(
            output.status.success(),
            "cargo tree -p {package}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut packages: BTreeMap<String, Vec<(String, BTreeSet<String>)>> = BTreeMap::new();
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let Some((id, features)) = line.split_once('|') else {
                continue;
            };
            let mut words = id.split_whitespace();
            let (Some(name), Some(version)) = (words.next(), words.next()) else {
                continue;
            };
            let features = features
                .trim_end_matches("(*)")
                .split(',')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(String::from)
                .collect();
            let versions = packages.entry(name.to_string()).or_default();
            if !versions.iter().any(|(v, _)| v == version) {
                versions.push((version.to_string(), features));
            }
        }
        assert!(
            packages.contains_key(package),
            "{package} not in its own tree"
        );
        Self { packages }
    }

    fn has(&self, name: &str) -> bool {
        self.packages.contains_key(name)
    }

    fn has_version(&self, name: &str, prefix: &str) -> bool {
        self.packages
            .get(name)
            .is_some_and(|versions| versions.iter().any(|(v, _)| v.starts_with(prefix)))
    }

    fn shared_features(&self) -> BTreeSet<String> {
        self.packages
            .get("shared")
            .and_then(|versions| versions.first())
            .map(|(_, features)| features.clone())
            .unwrap_or_default()
    }
}

#[test]
fn each_function_links_only_what_it_calls() {
    let root = devstack::repo_root();
    let template = Template::load(&root.join("template.yaml")).unwrap();
    // Four resolutions at a time: each is a short single-threaded cargo run.
    let mut graphs = BTreeMap::new();
    for chunk in template.functions.chunks(4) {
        std::thread::scope(|scope| {
            let running: Vec<_> = chunk
                .iter()
                .map(|f| {
                    (
                        f.binary.as_str(),
                        scope.spawn(|| Graph::of(&root, &f.binary)),
                    )
                })
                .collect();
            for (name, handle) in running {
                graphs.insert(name, handle.join().expect("cargo tree thread"));
            }
        });
    }
    let mut problems = Vec::new();
    for function in &template.functions {
        let name = function.binary.as_str();
        let graph = &graphs[name];
        let features = graph.shared_features();
        let mut problem = |what: String| problems.push(format!("{name}: {what}"));

        // Every function: one HTTP stack, no SSO clients, no regex-based log filter.
        for (crate_name, version, why) in [
            (
                "hyper",
                "v0.14",
                "the AWS SDK's legacy client (SDK `rustls` default feature)",
            ),
            (
                "rustls",
                "v0.21",
                "the AWS SDK's legacy client (SDK `rustls` default feature)",
            ),
            ("aws-sdk-sso", "v", "aws-config's `sso` feature"),
            ("aws-sdk-ssooidc", "v", "aws-config's `sso` feature"),
        ] {
            if graph.has_version(crate_name, version) {
                problem(format!("links {crate_name} {version}: {why}"));
            }
        }

        if WEBHOOKS.contains(&name) {
            for crate_name in ["aws-sdk-sesv2", "phonenumber"] {
                if graph.has(crate_name) {
                    problem(format!("a webhook linking {crate_name}"));
                }
            }
            for feature in ["ses", "phone"] {
                if features.contains(feature) {
                    problem(format!("a webhook with shared's `{feature}` feature"));
                }
            }
            if !SESSION_WEBHOOKS.contains(&name) && features.contains("livekit") {
                problem("opens no session but has shared's `livekit` feature".into());
            }
        }
        if graph.has("aws-sdk-sesv2") != (name == "notify-worker") {
            problem("only notify-worker sends email (aws-sdk-sesv2)".into());
        }

        // template.yaml gives a function `<NAME>_SECRET_ARN` for each secret it reads.
        let reads_secret = function
            .env
            .keys()
            .any(|variable| variable.ends_with(shared::base::secrets::ARN_SUFFIX));
        if reads_secret != features.contains("secrets") {
            problem(format!(
                "reads a secret in template.yaml: {reads_secret}, shared's `secrets` feature: {}",
                features.contains("secrets")
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
