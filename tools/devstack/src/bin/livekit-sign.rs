//! Prints a LiveKit webhook `Authorization` token for a body file, signed
//! with `LIVEKIT_API_KEY`/`LIVEKIT_API_SECRET` (the dev stack's by default),
//! so `events/payloads/livekit-*.json` can be posted with curl.

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: livekit-sign BODY_FILE");
        std::process::exit(2);
    };
    let body = std::fs::read(&path).unwrap_or_else(|e| {
        eprintln!("livekit-sign: {path}: {e}");
        std::process::exit(2);
    });
    let key =
        std::env::var("LIVEKIT_API_KEY").unwrap_or_else(|_| devstack::DEV_LIVEKIT_API_KEY.into());
    let secret = std::env::var("LIVEKIT_API_SECRET")
        .unwrap_or_else(|_| devstack::DEV_LIVEKIT_API_SECRET.into());
    println!(
        "{}",
        devstack::livekit_webhook_token(&body, &key, &secret, 3600)
    );
}
