#!/usr/bin/env bash
# Benchmarks the release binaries (see tools/devstack/src/bin/bench.rs):
# cold-start init, warm latency, peak memory and binary size.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The same release settings cargo-lambda applies, so sizes and timings match what deploys.
export CARGO_PROFILE_RELEASE_STRIP=true CARGO_PROFILE_RELEASE_LTO=thin CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 CARGO_PROFILE_RELEASE_PANIC=abort
# One build per function, as SAM deploys them: a single build of many would
# give every binary the union of their `shared` features. Functions with the
# same features reuse the compiled `shared` and dependencies.
for f in health stats zapier-webhook exotel-webhook calls-stream call-get livekit-webhook call-started \
  whatsapp-message whatsapp-stream twilio-voice room-create room-join session-get sessions-list slack-commands \
  discord-interactions teams-messages campaign-tick; do
  cargo build --release -p "$f"
done
cargo run --release -p devstack --bin bench
