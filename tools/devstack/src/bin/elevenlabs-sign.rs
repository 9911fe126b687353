//! Prints an `ElevenLabs-Signature` header value for a body file, signed now
//! with `ELEVENLABS_WEBHOOK_SECRET` (the dev stack's by default).

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: elevenlabs-sign BODY_FILE");
        std::process::exit(2);
    };
    let body = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        eprintln!("elevenlabs-sign: {path}: {e}");
        std::process::exit(2);
    });
    let secret = std::env::var("ELEVENLABS_WEBHOOK_SECRET")
        .unwrap_or_else(|_| "dev-elevenlabs-webhook-secret".into());
    println!(
        "{}",
        devstack::fakes::elevenlabs_signature(&secret, chrono::Utc::now().timestamp(), &body)
    );
}
