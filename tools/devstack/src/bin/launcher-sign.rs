//! Signs a chat-launcher request body as Slack, Discord or Teams would, or a
//! Twilio form for a URL (`launcher-sign twilio BODY_FILE URL`), with the
//! dev stack's secrets (or `SLACK_SIGNING_SECRET`, `DISCORD_PRIVATE_KEY` as
//! hex, `TEAMS_WEBHOOK_SECRET`, `TWILIO_AUTH_TOKEN`), and prints the
//! headers as a curl config to pipe into `curl -K -`:
//!
//! ```text
//! launcher-sign slack events/payloads/slack-call.txt | curl -s -K - \
//!   --data-binary @events/payloads/slack-call.txt http://127.0.0.1:3000/slack/commands
//! ```
//! Slack and Discord refuse a timestamp older than five minutes: sign just
//! before sending.

use devstack::launchers;

fn fail(message: &str) -> ! {
    eprintln!("launcher-sign: {message}");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (platform, path, url) = match args.as_slice() {
        [platform, path] => (platform, path, None),
        [platform, path, url] if platform == "twilio" => (platform, path, Some(url)),
        _ => fail("usage: launcher-sign slack|discord|teams BODY_FILE, or twilio BODY_FILE URL"),
    };
    let body = std::fs::read(path).unwrap_or_else(|e| fail(&format!("{path}: {e}")));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
        .to_string();
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let headers = match platform.as_str() {
        "slack" => {
            let secret = env("SLACK_SIGNING_SECRET")
                .unwrap_or_else(|| launchers::DEV_SLACK_SIGNING_SECRET.into());
            vec![
                "Content-Type: application/x-www-form-urlencoded".to_string(),
                format!("X-Slack-Request-Timestamp: {now}"),
                format!(
                    "X-Slack-Signature: {}",
                    launchers::slack_signature(&secret, &now, &body)
                ),
            ]
        }
        "discord" => {
            let key = match env("DISCORD_PRIVATE_KEY") {
                Some(hex_key) => hex::decode(hex_key)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .unwrap_or_else(|| fail("DISCORD_PRIVATE_KEY must be 64 hex digits")),
                None => launchers::DEV_DISCORD_PRIVATE_KEY,
            };
            vec![
                "Content-Type: application/json".to_string(),
                format!("X-Signature-Timestamp: {now}"),
                format!(
                    "X-Signature-Ed25519: {}",
                    launchers::discord_signature(&key, &now, &body)
                ),
            ]
        }
        "teams" => {
            let secret = env("TEAMS_WEBHOOK_SECRET")
                .unwrap_or_else(|| launchers::DEV_TEAMS_WEBHOOK_SECRET.into());
            if base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &secret).is_err()
            {
                fail("TEAMS_WEBHOOK_SECRET must be base64, as Teams shows it");
            }
            vec![
                "Content-Type: application/json".to_string(),
                format!(
                    "Authorization: {}",
                    launchers::teams_authorization(&secret, &body)
                ),
            ]
        }
        "twilio" => {
            // Twilio signs the URL it calls and the decoded form fields.
            let token = env("TWILIO_AUTH_TOKEN").unwrap_or_else(|| "dev-twilio-auth-token".into());
            let url = url.unwrap_or_else(|| fail("twilio needs the URL: twilio BODY_FILE URL"));
            let fields: Vec<(String, String)> =
                url::form_urlencoded::parse(&body).into_owned().collect();
            let params: Vec<(&str, &str)> = fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            vec![
                "Content-Type: application/x-www-form-urlencoded".to_string(),
                format!(
                    "X-Twilio-Signature: {}",
                    devstack::fakes::twilio_signature(&token, url, &params)
                ),
            ]
        }
        other => fail(&format!(
            "unknown platform {other}: slack, discord, teams or twilio"
        )),
    };
    for header in headers {
        println!("header = \"{header}\"");
    }
}
