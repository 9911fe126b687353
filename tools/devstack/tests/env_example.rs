//! `env.example` covers every variable `make dev` reads and names none that
//! nothing reads. The lists come from the code, never from a copy here:
//! `devstack::dev_env` (the dev server's own variables and those the
//! template sets for no function), the template's parameter variables
//! (`config_doc::parameter_variables`), and the variable names the sources
//! of `shared`, the functions and the dev server pass to a reader.

use std::collections::BTreeSet;
use std::path::Path;

use devstack::{config_doc, dev_env};

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `SOME_NAME`: upper case, digits and underscores.
fn is_variable(name: &str) -> bool {
    name.len() >= 3
        && name.starts_with(|c: char| c.is_ascii_uppercase())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The string literals passed as first argument to any of `readers` in
/// `text` (calls split over lines included), before its unit tests.
fn literal_arguments(text: &str, readers: &[&str]) -> BTreeSet<String> {
    let text = text.split("#[cfg(test)]").next().unwrap_or(text);
    let mut found = BTreeSet::new();
    for reader in readers {
        for (at, _) in text.match_indices(reader) {
            let rest = text[at + reader.len()..].trim_start();
            if let Some(rest) = rest.strip_prefix('"') {
                if let Some(end) = rest.find('"') {
                    if is_variable(&rest[..end]) {
                        found.insert(rest[..end].to_string());
                    }
                }
            }
        }
    }
    found
}

/// How functions read configuration: `base::config`'s helpers (also through
/// a local `seconds(...)` wrapper), `std::env`, and `Wiring::queue`.
const FUNCTION_READERS: [&str; 9] = [
    "required(",
    "optional(",
    "parsed_or(",
    "required_secret(",
    "optional_secret(",
    "base_url_or(",
    "seconds(",
    "env::var(",
    ".queue(",
];

/// Every variable the functions read (`shared/src` and `functions/*/src`).
fn function_reads(root: &Path) -> BTreeSet<String> {
    let mut files = Vec::new();
    rust_files(&root.join("shared/src"), &mut files);
    for entry in std::fs::read_dir(root.join("functions")).unwrap() {
        let src = entry.unwrap().path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    files
        .iter()
        .flat_map(|f| literal_arguments(&read(f), &FUNCTION_READERS))
        .collect()
}

/// The dev server's sources (`make dev` runs `--bin devstack`).
const DEV_SERVER_SOURCES: [&str; 3] = [
    "tools/devstack/src/main.rs",
    "tools/devstack/src/server.rs",
    "tools/devstack/src/emulators.rs",
];

/// Variables the dev server reads, or defaults for the functions, by name.
fn dev_server_reads(root: &Path) -> BTreeSet<String> {
    DEV_SERVER_SOURCES
        .iter()
        .flat_map(|f| {
            literal_arguments(
                &read(&root.join(f)),
                &["env::var(", "env::var_os(", "default_env("],
            )
        })
        .collect()
}

/// Names in `env.example`, set (`NAME=`) or shown commented (`# NAME=`).
fn example_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(|line| line.trim_start_matches('#').trim())
        .filter_map(|line| line.split_once('='))
        .map(|(name, _)| name.trim())
        .filter(|name| is_variable(name))
        .map(str::to_string)
        .collect()
}

#[test]
fn env_example_names_every_variable_make_dev_reads_and_nothing_else() {
    let root = devstack::repo_root();
    let example = example_names(&read(&root.join("env.example")));
    let template = read(&root.join("template.yaml"));
    let from_parameters = config_doc::parameter_variables(&template).unwrap();
    let functions = function_reads(&root);
    let dev_server = dev_server_reads(&root);
    let own: BTreeSet<String> = dev_env::DEV_SERVER
        .iter()
        .map(|v| v.name.to_string())
        .collect();
    let not_in_template: BTreeSet<String> = dev_env::NOT_IN_TEMPLATE
        .iter()
        .map(|v| v.name.to_string())
        .collect();
    let runtime: BTreeSet<String> = dev_env::LAMBDA_RUNTIME
        .iter()
        .map(|v| v.to_string())
        .collect();
    assert!(functions.contains("CALLS_TABLE") && functions.contains("WEBHOOK_TOKEN"));
    assert!(dev_server.contains("LIVEKIT_URL"));

    // Wanted: everything a user may set for `make dev`: the dev server's
    // own, what it reads or defaults, the parameters' variables and the
    // template-less ones, as far as code reads them.
    let mut wanted: BTreeSet<String> = own.clone();
    wanted.extend(dev_server.iter().cloned());
    wanted.extend(not_in_template.iter().cloned());
    wanted.extend(from_parameters.intersection(&functions).cloned());
    wanted.retain(|name| !runtime.contains(name));
    let missing: Vec<&String> = wanted.difference(&example).collect();
    assert!(
        missing.is_empty(),
        "env.example lacks variables make dev reads; add each, in its capability's group, \
         with a one-line comment: {missing:?}"
    );

    let read_by_something: BTreeSet<String> = functions.union(&own).cloned().collect();
    let unread: Vec<&String> = example.difference(&read_by_something).collect();
    assert!(
        unread.is_empty(),
        "env.example names variables nothing reads: {unread:?}"
    );
}

#[test]
fn every_variable_functions_read_is_in_the_template_or_in_dev_env() {
    let root = devstack::repo_root();
    let text = read(&root.join("template.yaml"));
    let template = devstack::template::Template::parse(&text).unwrap();
    let mut known: BTreeSet<String> = template
        .functions
        .iter()
        .flat_map(|f| f.env.keys())
        .map(|name| {
            name.strip_suffix(shared::base::secrets::ARN_SUFFIX)
                .unwrap_or(name)
                .to_string()
        })
        .collect();
    known.extend(dev_env::NOT_IN_TEMPLATE.iter().map(|v| v.name.to_string()));
    known.extend(dev_env::DEV_SERVER.iter().map(|v| v.name.to_string()));
    known.extend(dev_env::LAMBDA_RUNTIME.iter().map(|v| v.to_string()));
    let undocumented: Vec<String> = function_reads(&root)
        .into_iter()
        .filter(|name| !known.contains(name))
        .collect();
    assert!(
        undocumented.is_empty(),
        "functions read variables the template sets for no function; add each to \
         devstack::dev_env::NOT_IN_TEMPLATE (it becomes a row of docs/configuration.md: \
         run `cargo run -p devstack --bin config-doc`) and to env.example: {undocumented:?}"
    );
}

#[test]
fn the_dev_server_names_its_own_variables_through_dev_env() {
    let root = devstack::repo_root();
    for name in dev_env::DEV_SERVER.iter().map(|v| v.name) {
        for file in DEV_SERVER_SOURCES {
            let text = read(&root.join(file));
            assert!(
                !text.contains(&format!("\"{name}\"")),
                "{file} spells \"{name}\": use devstack::dev_env's constant, so the lists \
                 env.example and docs/configuration.md are checked against stay complete"
            );
        }
    }
}

#[test]
fn the_scanner_follows_calls_over_lines() {
    let found = literal_arguments(
        "parsed_or(\n    \"A_B\",\n 3) optional(\"POST\") x(\"C_D\")",
        &["parsed_or(", "optional("],
    );
    assert_eq!(
        found,
        BTreeSet::from(["A_B".to_string(), "POST".to_string()])
    );
}
