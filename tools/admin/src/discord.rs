//! `callops-admin discord register-command`: registers the Discord
//! application's global `/call` command, which the Interactions Endpoint
//! (`/discord/interactions`) answers. Registering again overwrites the
//! command of the same name, so it is safe to repeat.

use serde_json::{json, Value};

/// Discord's API; `DISCORD_API_BASE_URL` overrides it (tests, a proxy).
pub const DEFAULT_API_BASE_URL: &str = "https://discord.com/api/v10";

/// The command the launcher serves (`CHAT_INPUT`, type 1).
pub fn call_command() -> Value {
    json!({
        "name": "call",
        "description": "Start a voice call with the agent",
        "type": 1,
    })
}

/// `POST {base}/applications/{application_id}/commands` with the bot token;
/// the registered command as Discord returned it, or a message saying what
/// went wrong.
pub async fn register_command(
    http: &reqwest::Client,
    base_url: &str,
    application_id: &str,
    bot_token: &str,
) -> Result<Value, String> {
    if application_id.is_empty() || !application_id.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "DISCORD_APPLICATION_ID must be the application's numeric id, not {application_id:?}"
        ));
    }
    let url = format!(
        "{}/applications/{application_id}/commands",
        base_url.trim_end_matches('/')
    );
    let response = http
        .post(&url)
        .header("Authorization", format!("Bot {bot_token}"))
        .json(&call_command())
        .send()
        .await
        .map_err(|e| format!("could not reach Discord at {url}: {}", e.without_url()))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    match status.as_u16() {
        200 | 201 => serde_json::from_str(&body)
            .map_err(|e| format!("Discord answered {status} with an unreadable body: {e}")),
        401 => Err(format!(
            "Discord refused DISCORD_BOT_TOKEN (HTTP 401): check the bot token: {body}"
        )),
        403 | 404 => Err(format!(
            "Discord answered HTTP {}: is DISCORD_APPLICATION_ID the bot's own application? {body}",
            status.as_u16()
        )),
        code => Err(format!("Discord answered HTTP {code}: {body}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-request HTTP server: answers `status` with `body` and hands
    /// back the raw request it read.
    async fn fake_discord(
        status: &'static str,
        body: &'static str,
    ) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/api/v10", listener.local_addr().unwrap());
        let served = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            loop {
                let n = stream.read(&mut buffer).await.unwrap();
                request.extend_from_slice(&buffer[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let length = text[..head_end]
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if request.len() >= head_end + 4 + length || n == 0 {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            let answer = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&request).to_string()
        });
        (base, served)
    }

    #[tokio::test]
    async fn registers_the_call_command_with_the_bot_token() {
        let (base, served) = fake_discord(
            "201 Created",
            r#"{"id":"1300000000000000040","application_id":"1300000000000000000","name":"call","description":"Start a voice call with the agent","type":1,"version":"1"}"#,
        )
        .await;
        let registered = register_command(
            &reqwest::Client::new(),
            &base,
            "1300000000000000000",
            "bot-token",
        )
        .await
        .unwrap();
        assert_eq!(registered["name"], "call");
        let request = served.await.unwrap();
        assert!(request.starts_with("POST /api/v10/applications/1300000000000000000/commands "));
        assert!(request
            .to_ascii_lowercase()
            .contains("authorization: bot bot-token"));
        let body: Value = serde_json::from_str(request.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body, call_command());
    }

    #[tokio::test]
    async fn refusals_say_what_to_check() {
        let (base, _served) = fake_discord(
            "401 Unauthorized",
            r#"{"message":"401: Unauthorized","code":0}"#,
        )
        .await;
        let err = register_command(&reqwest::Client::new(), &base, "1300000000000000000", "bad")
            .await
            .unwrap_err();
        assert!(err.contains("DISCORD_BOT_TOKEN"), "{err}");
        let err = register_command(&reqwest::Client::new(), &base, "my-app", "t")
            .await
            .unwrap_err();
        assert!(err.contains("DISCORD_APPLICATION_ID"), "{err}");
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_url = format!("http://{}", dead.local_addr().unwrap());
        drop(dead);
        let err = register_command(&reqwest::Client::new(), &dead_url, "1", "t")
            .await
            .unwrap_err();
        assert!(err.contains("could not reach Discord"), "{err}");
    }
}
