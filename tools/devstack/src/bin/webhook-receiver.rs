//! A small webhook receiver for trying webhooks out against `make dev`:
//! prints every delivery and whether its signature verifies with
//! `WEBHOOK_SECRET` (the `secret` the endpoint's creation answered).
//!
//! `WEBHOOK_SECRET=whsec_… cargo run -q -p devstack --bin webhook-receiver [PORT]`
//! (port 9911 by default; the endpoint URL is `http://127.0.0.1:PORT/hooks`).

#[tokio::main]
async fn main() {
    let port = std::env::args().nth(1).unwrap_or_else(|| "9911".into());
    let receiver = devstack::fakes::FakeReceiver::start_at(&format!("127.0.0.1:{port}"));
    if let Ok(secret) = std::env::var("WEBHOOK_SECRET") {
        receiver.set_secrets(&[secret.as_str()]);
    } else {
        eprintln!("webhook-receiver: WEBHOOK_SECRET not set; signatures will show as NOT verified");
    }
    receiver.echo();
    println!("webhook receiver listening at {}", receiver.url());
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}
