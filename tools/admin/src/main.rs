//! `callops-admin`: API keys. Every key belongs to one organisation, whose
//! calls, usage and conversations it alone can reach.
//!
//! ```text
//! callops-admin api-keys create --org <org_id> <name>   prints the new key once; only its hash is stored
//! callops-admin api-keys assign <key_id> --org <org_id> gives an older key (made without one) an organisation
//! callops-admin api-keys list
//! callops-admin api-keys revoke <key_id>
//! ```
//! The table comes from `API_KEYS_TABLE` (the stack's `ApiKeysTableName`
//! output); AWS credentials and endpoints from the usual AWS variables.

use shared::store::api_keys::{self, ApiKeyStore, DynamoApiKeyStore};

const USAGE: &str = "usage: callops-admin api-keys (create --org <org_id> <name> | \
                     assign <key_id> --org <org_id> | list | revoke <key_id>)";

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
                    "{}  {:<24}  {org:<20}  created {}  {state}",
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
