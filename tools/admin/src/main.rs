//! `callops-admin`: API keys. Every key belongs to one organisation, whose
//! calls, usage and conversations it alone can reach.
//!
//! ```text
//! callops-admin api-keys create --org <org_id> <name>   prints the new key once; only its hash is stored
//! callops-admin api-keys assign <key_id> --org <org_id> gives an older key (made without one) an organisation
//! callops-admin api-keys list
//! callops-admin api-keys revoke <key_id>
//! callops-admin discord register-command                registers the Discord app's global /call command
//! callops-admin dlq list    --queue <name>                  dead letters, bodies masked
//! callops-admin dlq show    --queue <name> <message_id>
//! callops-admin dlq replay  --queue <name> (<message_id> | --all)   back to the source queue
//! callops-admin dlq purge   --queue <name> [--yes]          asks for the queue name unless --yes
//! ```
//! The table comes from `API_KEYS_TABLE` (the stack's `ApiKeysTableName`
//! output), queues from `CALLOPS_STACK` (the stack name, default `callops`;
//! `callops-dev` for `make dev`); AWS credentials and endpoints from the
//! usual AWS variables. `discord register-command` reads
//! `DISCORD_APPLICATION_ID` and `DISCORD_BOT_TOKEN` (`DISCORD_API_BASE_URL`
//! overrides Discord's API).

mod discord;

use admin::dlq;
use shared::store::api_keys;

const USAGE: &str = "usage: callops-admin api-keys (create --org <org_id> <name> | \
                     assign <key_id> --org <org_id> | list | revoke <key_id>) | \
                     callops-admin discord register-command";

#[tokio::main]
async fn main() {
    if let Err(message) = run(std::env::args().skip(1).collect()).await {
        eprintln!("callops-admin: {message}");
        std::process::exit(2);
    }
}

async fn run(args: Vec<String>) -> Result<(), String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if args.first() == Some(&"dlq") {
        return dead_letters(&args[1..]).await;
    }
    if let ["discord", rest @ ..] = args.as_slice() {
        return match rest {
            ["register-command"] => register_discord_command().await,
            _ => Err(USAGE.into()),
        };
    }
    // The same store the functions build (wiring reads API_KEYS_TABLE).
    let store = shared::wiring::Wiring::load()
        .await
        .api_keys()
        .map_err(|e| e.to_string())?;
    match args.as_slice() {
        ["api-keys", "create", "--org", org_id, name]
        | ["api-keys", "create", name, "--org", org_id] => {
            let (key, record) = api_keys::generate(name, org_id);
            store.insert(&record).await.map_err(|e| e.to_string())?;
            println!(
                "key_id: {}\nname:   {}\norg:    {org_id}\nkey:    {key}\n(store the key now: it is not shown again)",
                record.key_id, record.name
            );
        }
        ["api-keys", "create", ..] => {
            return Err(format!("every key belongs to an organisation: {USAGE}"))
        }
        ["api-keys", "assign", key_id, "--org", org_id] => {
            if store
                .assign(key_id, org_id)
                .await
                .map_err(|e| e.to_string())?
            {
                println!("key {key_id} now belongs to {org_id}");
            } else {
                return Err(format!("no key with id {key_id}"));
            }
        }
        ["api-keys", "list"] => {
            for record in store.list().await.map_err(|e| e.to_string())? {
                let state = record
                    .revoked_at
                    .map(|at| format!("revoked {at}"))
                    .unwrap_or_else(|| "active".into());
                let org = record.org_id.as_deref().unwrap_or("(no organisation)");
                println!(
                    "{}  {:<7}  {:<24}  {org:<20}  created {}  {state}",
                    record.key_id,
                    record.purpose.as_str(),
                    record.name,
                    record.created_at
                );
            }
        }
        ["api-keys", "revoke", key_id] => {
            if store.revoke(key_id).await.map_err(|e| e.to_string())? {
                println!("revoked {key_id}");
            } else {
                return Err(format!("no key with id {key_id}"));
            }
        }
        _ => return Err(USAGE.into()),
    }
    Ok(())
}

const DLQ_USAGE: &str = "usage: callops-admin dlq (list --queue <name> | show --queue <name> <message_id> | \
                         replay --queue <name> (<message_id> | --all) | purge --queue <name> [--yes])";

async fn dead_letters(args: &[&str]) -> Result<(), String> {
    let (command, name, rest) = match args {
        [command, "--queue", name, rest @ ..] => (*command, *name, rest),
        _ => return Err(DLQ_USAGE.into()),
    };
    let stack = shared::base::config::optional("CALLOPS_STACK").unwrap_or_else(|| "callops".into());
    let sdk = shared::base::aws::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue = dlq::find(&sqs, &stack, name).await?;
    let hold = std::time::Duration::from_secs(60);
    match (command, rest) {
        ("list", []) => {
            let letters = dlq::read_all(&sqs, &queue, std::time::Duration::from_secs(5)).await?;
            println!("{}: {} message(s)", queue.name, letters.len());
            for letter in letters {
                let body: String = letter.body.chars().take(160).collect();
                println!(
                    "{}  sent {}  received {}x  {body}",
                    letter.message_id,
                    letter.sent_at.as_deref().unwrap_or("?"),
                    letter.receive_count.as_deref().unwrap_or("?")
                );
            }
        }
        ("show", [id]) => {
            let letters = dlq::read_all(&sqs, &queue, std::time::Duration::from_secs(5)).await?;
            let letter = letters
                .iter()
                .find(|l| l.message_id == *id)
                .ok_or_else(|| format!("no message {id} in {}", queue.name))?;
            println!(
                "message {}\nsent     {}\nreceived {}x\nbody     {}",
                letter.message_id,
                letter.sent_at.as_deref().unwrap_or("?"),
                letter.receive_count.as_deref().unwrap_or("?"),
                letter.body
            );
        }
        ("replay", [which]) => {
            let letters = dlq::read_all(&sqs, &queue, hold).await?;
            let chosen: Vec<_> = letters
                .into_iter()
                .filter(|l| *which == "--all" || l.message_id == *which)
                .collect();
            if chosen.is_empty() {
                return Err(format!("nothing to replay in {}", queue.name));
            }
            let replayed = dlq::replay(&sqs, &queue, &chosen).await?;
            println!(
                "replayed {replayed} message(s) from {} to their source queue",
                queue.name
            );
        }
        ("purge", flags) => {
            let confirmed = match flags {
                ["--yes"] => true,
                [] => {
                    println!(
                        "purge every message of {}? type its name to confirm:",
                        queue.name
                    );
                    let mut answer = String::new();
                    std::io::stdin()
                        .read_line(&mut answer)
                        .map_err(|e| e.to_string())?;
                    answer.trim() == queue.name
                }
                _ => return Err(DLQ_USAGE.into()),
            };
            if !confirmed {
                return Err("not confirmed; nothing purged".into());
            }
            dlq::purge(&sqs, &queue).await?;
            println!("purged {}", queue.name);
        }
        _ => return Err(DLQ_USAGE.into()),
    }
    Ok(())
}

async fn register_discord_command() -> Result<(), String> {
    use shared::base::config;
    let application_id = config::required("DISCORD_APPLICATION_ID").map_err(|e| e.to_string())?;
    let bot_token = config::required_secret("DISCORD_BOT_TOKEN").map_err(|e| e.to_string())?;
    let base_url = config::base_url_or("DISCORD_API_BASE_URL", discord::DEFAULT_API_BASE_URL)
        .map_err(|e| e.to_string())?;
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(15))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let command =
        discord::register_command(&http, &base_url, &application_id, bot_token.expose()).await?;
    println!(
        "registered global command /{} (id {}) for application {application_id}\n{}",
        command["name"].as_str().unwrap_or("call"),
        command["id"].as_str().unwrap_or("?"),
        serde_json::to_string_pretty(&command).unwrap_or_default()
    );
    Ok(())
}
