//! DynamoDB Local and moto (SQS, SES) on free loopback ports. `scripts/bootstrap.sh`
//! installs both under `.cache/`; this module only starts and stops them.
//!
//! The children get `PR_SET_PDEATHSIG` from a thread that lives as long as the
//! process, so they die with it even when a test run panics or is killed.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a cold JVM or Python start may take before we give up.
const START_TIMEOUT: Duration = Duration::from_secs(90);

pub struct LocalAws {
    pub dynamodb_endpoint: String,
    pub moto_endpoint: String,
    children: Vec<Child>,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_for_port(port: u16, child: &mut Child, name: &str) -> Result<(), String> {
    let started = Instant::now();
    while started.elapsed() < START_TIMEOUT {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{name} exited during start-up with {status}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "{name} did not listen on 127.0.0.1:{port} within {START_TIMEOUT:?}"
    ))
}

/// Spawns from a thread that never exits, so the parent-death signal fires
/// only when the whole process ends (it is tied to the spawning thread).
fn spawn_tied_to_process(mut command: Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(command.spawn());
        loop {
            std::thread::park();
        }
    });
    receiver
        .recv()
        .map_err(|_| std::io::Error::other("spawner thread died"))?
}

/// Where bootstrap puts the tools.
pub fn cache_dir() -> PathBuf {
    std::env::var_os(crate::dev_env::CALLOPS_CACHE_DIR)
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join(".cache"))
}

impl LocalAws {
    /// Starts both emulators and waits until they accept connections.
    pub fn start() -> Result<Self, String> {
        let cache = cache_dir();
        let jar_dir = cache.join("dynamodb-local");
        let moto = cache.join("venv/bin/moto_server");
        for needed in [jar_dir.join("DynamoDBLocal.jar"), moto.clone()] {
            if !needed.exists() {
                return Err(format!(
                    "{} is missing: run `make test` or `scripts/bootstrap.sh` to install the emulators",
                    needed.display()
                ));
            }
        }
        let log_dir = cache.join("logs");
        std::fs::create_dir_all(&log_dir).map_err(|e| e.to_string())?;
        let dynamodb_port = free_port().map_err(|e| e.to_string())?;
        let moto_port = free_port().map_err(|e| e.to_string())?;

        let mut dynamodb = Command::new("java");
        dynamodb
            .current_dir(&jar_dir)
            .arg(format!(
                "-Djava.library.path={}",
                jar_dir.join("DynamoDBLocal_lib").display()
            ))
            .args([
                "-Xms64m",
                "-Xmx512m",
                "-jar",
                "DynamoDBLocal.jar",
                "-inMemory",
            ])
            .args(["-port", &dynamodb_port.to_string()])
            // No browser has any business talking to it.
            .args(["-cors", "http://127.0.0.1"]);
        let mut moto_cmd = Command::new(&moto);
        moto_cmd.args(["-H", "127.0.0.1", "-p", &moto_port.to_string()]);

        let mut children = Vec::new();
        for (name, mut command) in [("dynamodb-local", dynamodb), ("moto", moto_cmd)] {
            let log = std::fs::File::create(log_dir.join(format!("{name}.log")))
                .map_err(|e| e.to_string())?;
            let log_err = log.try_clone().map_err(|e| e.to_string())?;
            command.stdin(Stdio::null()).stdout(log).stderr(log_err);
            children
                .push(spawn_tied_to_process(command).map_err(|e| format!("start {name}: {e}"))?);
        }
        let mut local = Self {
            dynamodb_endpoint: format!("http://127.0.0.1:{dynamodb_port}"),
            moto_endpoint: format!("http://127.0.0.1:{moto_port}"),
            children,
        };
        wait_for_port(dynamodb_port, &mut local.children[0], "DynamoDB Local")?;
        wait_for_port(moto_port, &mut local.children[1], "moto")?;
        Ok(local)
    }

    /// SDK configuration pointing at the emulators, with dummy credentials.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "test", "test", None, None, "local",
            ))
            .endpoint_url(&self.moto_endpoint)
            .load()
            .await
    }

    pub async fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        let config = aws_sdk_dynamodb::config::Builder::from(&self.sdk_config().await)
            .endpoint_url(&self.dynamodb_endpoint)
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }

    pub async fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk_config().await)
    }

    pub fn dynamodb_endpoint(&self) -> &str {
        &self.dynamodb_endpoint
    }

    /// moto's endpoint (SQS, SES, and every service but DynamoDB).
    pub fn moto_endpoint(&self) -> &str {
        &self.moto_endpoint
    }

    /// A DynamoDB client for another endpoint (a fault proxy in front of DynamoDB Local).
    pub async fn dynamodb_at(&self, endpoint: &str) -> aws_sdk_dynamodb::Client {
        let config = aws_sdk_dynamodb::config::Builder::from(&self.sdk_config().await)
            .endpoint_url(endpoint)
            .retry_config(proxied_retries())
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }

    /// DynamoDB Streams, which DynamoDB Local serves on its own endpoint.
    pub async fn dynamodb_streams(&self) -> aws_sdk_dynamodbstreams::Client {
        self.dynamodb_streams_at(&self.dynamodb_endpoint).await
    }

    /// A DynamoDB Streams client for another endpoint (a fault proxy in front of DynamoDB Local).
    pub async fn dynamodb_streams_at(&self, endpoint: &str) -> aws_sdk_dynamodbstreams::Client {
        let config = aws_sdk_dynamodbstreams::config::Builder::from(&self.sdk_config().await)
            .endpoint_url(endpoint)
            .retry_config(proxied_retries())
            .build();
        aws_sdk_dynamodbstreams::Client::from_conf(config)
    }

    /// An SQS client for another endpoint (a fault proxy in front of moto).
    pub async fn sqs_at(&self, endpoint: &str) -> aws_sdk_sqs::Client {
        let config = aws_sdk_sqs::config::Builder::from(&self.sdk_config().await)
            .endpoint_url(endpoint)
            .retry_config(proxied_retries())
            .build();
        aws_sdk_sqs::Client::from_conf(config)
    }

    /// SES v2 on moto; identities must be verified with `create_email_identity` first.
    pub async fn ses(&self) -> aws_sdk_sesv2::Client {
        aws_sdk_sesv2::Client::new(&self.sdk_config().await)
    }

    /// Emails moto has accepted, from its model dump: `(source, subject, body)`.
    pub async fn sent_emails(&self) -> Result<Vec<(String, String, String)>, String> {
        let url = format!("{}/moto-api/data.json", self.moto_endpoint);
        let data: serde_json::Value = reqwest::get(url)
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        Ok(data["ses"]["Message"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                let field = |k: &str| m[k].as_str().unwrap_or_default().to_string();
                (field("source"), field("subject"), field("body"))
            })
            .collect())
    }

    /// The environment a function process needs to reach the emulators.
    pub fn aws_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.moto_endpoint.clone()),
            ("AWS_ENDPOINT_URL_DYNAMODB", self.dynamodb_endpoint.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ]
    }

    pub fn log_dir(&self) -> PathBuf {
        cache_dir().join("logs")
    }
}

/// A moto of its own that enforces IAM: after its first `unauthenticated`
/// requests (the setup: secrets, users, policies, keys), every request must
/// be signed by a user it knows and allowed by that user's policies. Tests of
/// what a role may not do use it; the shared moto allows everything.
pub struct IamEnforcingMoto {
    pub endpoint: String,
    child: Child,
}

impl IamEnforcingMoto {
    pub fn start(unauthenticated: usize) -> Result<Self, String> {
        let moto = cache_dir().join("venv/bin/moto_server");
        let port = free_port().map_err(|e| e.to_string())?;
        let mut command = Command::new(&moto);
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", unauthenticated.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = spawn_tied_to_process(command).map_err(|e| format!("start moto: {e}"))?;
        wait_for_port(port, &mut child, "moto (IAM enforced)")?;
        Ok(Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
        })
    }

    /// SDK configuration for this moto with the given access key.
    pub async fn sdk_config(&self, access_key: &str, secret_key: &str) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                access_key, secret_key, None, None, "local",
            ))
            .endpoint_url(&self.endpoint)
            .load()
            .await
    }
}

impl Drop for IamEnforcingMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LocalAws {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Retries for clients behind a fault proxy: the SDK's standard policy with
/// a 10 ms first backoff instead of a second, so that thousands of injected
/// faults cost the suite milliseconds, not minutes of sleeping. What is
/// retried, and how often, stays the SDK's own.
fn proxied_retries() -> aws_config::retry::RetryConfig {
    aws_config::retry::RetryConfig::standard()
        .with_initial_backoff(std::time::Duration::from_millis(10))
}
