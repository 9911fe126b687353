//! `callops-admin`: API keys for `/calls/started` (and later `/calls/initiate`).
//!
//! ```text
//! callops-admin api-keys create <name>    prints the new key once; only its hash is stored
//! callops-admin api-keys list
//! callops-admin api-keys revoke <key_id>
//! ```
//! The table comes from `API_KEYS_TABLE` (the stack's `ApiKeysTableName`
//! output); AWS credentials and endpoints from the usual AWS variables.

use shared::store::api_keys::{self, ApiKeyStore, DynamoApiKeyStore};

const USAGE: &str = "usage: callops-admin api-keys (create <name> | list | revoke <key_id>)";

#[tokio::main]
async fn main() {
    if let Err(message) = run(std::env::args().skip(1).collect()).await {
        eprintln!("callops-admin: {message}");
        std::process::exit(2);
    }
}

async fn run(args: Vec<String>) -> Result<(), String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let table = shared::base::config::required("API_KEYS_TABLE").map_err(|e| e.to_string())?;
    let sdk = shared::base::aws::sdk_config().await;
    let store = DynamoApiKeyStore::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    match args.as_slice() {
        ["api-keys", "create", name] => {
            let (key, record) = api_keys::generate(name);
            store.insert(&record).await.map_err(|e| e.to_string())?;
            println!(
                "key_id: {}\nname:   {}\nkey:    {key}\n(store the key now: it is not shown again)",
                record.key_id, record.name
            );
        }
        ["api-keys", "list"] => {
            for record in store.list().await.map_err(|e| e.to_string())? {
                let state = record
                    .revoked_at
                    .map(|at| format!("revoked {at}"))
                    .unwrap_or_else(|| "active".into());
                println!(
                    "{}  {:<24}  created {}  {state}",
                    record.key_id, record.name, record.created_at
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
