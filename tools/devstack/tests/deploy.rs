//! `make deploy`'s parameters (scripts/deploy_params.py): the checked-in
//! minimal file names only template parameters and no secret, secrets come
//! from the environment or `<Name>_FILE` and reach SAM unchanged, a missing
//! required secret stops the deploy, and no secret is ever printed.

use std::path::PathBuf;
use std::process::{Command, Output};

/// A private scratch folder, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("callops-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const TRICKY: &str = r#"tok,en with "quotes", spaces\and=signs"#;

fn python() -> PathBuf {
    devstack::emulators::cache_dir().join("venv/bin/python")
}

/// Runs deploy_params.py with `env` (and nothing of ours inherited).
fn params(file: &str, out: &std::path::Path, env: &[(&str, &str)]) -> Output {
    let root = devstack::repo_root();
    let mut command = Command::new(python());
    command
        .arg(root.join("scripts/deploy_params.py"))
        .arg(root.join("template.yaml"))
        .arg(root.join(file))
        .arg(out)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

const REQUIRED: [(&str, &str); 4] = [
    ("WebhookToken", TRICKY),
    ("ApiToken", "api-token-0123456789"),
    ("AdminApiToken", "admin-token-0123456789"),
    (
        "RoomInviteSecret",
        "room-invite-secret-0123456789abcdef0123",
    ),
];

/// What SAM itself reads from the overrides file.
fn as_sam_reads(path: &std::path::Path) -> serde_json::Value {
    let script = "import json,sys\nfrom samcli.cli.types import CfnParameterOverridesType\n\
                  print(json.dumps(CfnParameterOverridesType().convert('file://' + sys.argv[1], None, None)))";
    let out = Command::new(python())
        .args(["-c", script])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_minimal_deploy_passes_secrets_from_the_environment_unchanged_and_never_prints_them() {
    let dir = Scratch::new("deploy-ok");
    let out = dir.path().join("overrides.yaml");
    let key_file = dir.path().join("assemblyai.key");
    std::fs::write(&key_file, "aai-key-from-a-file\n").unwrap();
    let mut env = REQUIRED.to_vec();
    let key_path = key_file.to_string_lossy().into_owned();
    env.push(("AssemblyAiApiKey_FILE", &key_path));
    let run = params("deploy/minimal.env", &out, &env);
    let printed =
        String::from_utf8_lossy(&run.stdout).into_owned() + &String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{printed}");
    let sam = as_sam_reads(&out);
    for (name, value) in REQUIRED {
        assert_eq!(sam[name], value, "{name}");
        assert!(!printed.contains(value), "{name}'s value was printed");
        assert!(printed.contains(&format!("{name}=***")));
    }
    assert_eq!(sam["AssemblyAiApiKey"], "aai-key-from-a-file");
    assert_eq!(sam["SlackChannelId"], "#voice-agent-calls");
    // Optional credentials not given stay out, so their features stay off.
    for off in [
        "SlackBotToken",
        "TwilioAuthToken",
        "LiveKitApiSecret",
        "AlarmEmail",
    ] {
        assert!(sam.get(off).is_none(), "{off} was passed");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the overrides file is readable by others");
    }
}

#[test]
fn a_missing_secret_a_secret_in_the_file_or_an_unknown_name_stops_the_deploy() {
    let dir = Scratch::new("deploy-refused");
    let out = dir.path().join("overrides.yaml");
    let missing = params("deploy/minimal.env", &out, &REQUIRED[1..]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("WebhookToken"));
    assert!(!out.exists(), "nothing written before the check");

    for (content, why) in [
        ("WebhookToken=in-the-file-0123456789\n", "is a secret"),
        ("NoSuchParameter=1\n", "is not a parameter"),
        ("just words\n", "not Name=value"),
    ] {
        let file = dir.path().join("bad.env");
        std::fs::write(&file, content).unwrap();
        let run = params(file.to_str().unwrap(), &out, &REQUIRED);
        assert_eq!(run.status.code(), Some(2), "{content}");
        assert!(
            String::from_utf8_lossy(&run.stderr).contains(why),
            "{content}"
        );
        assert!(!String::from_utf8_lossy(&run.stderr).contains("in-the-file-0123456789"));
    }
}
