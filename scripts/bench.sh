#!/usr/bin/env bash
# Benchmarks the release binaries (see tools/devstack/src/bin/bench.rs):
# cold-start init, warm latency, peak memory and binary size.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The same release settings cargo-lambda applies, so sizes and timings match what deploys.
export CARGO_PROFILE_RELEASE_STRIP=true CARGO_PROFILE_RELEASE_LTO=thin CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 CARGO_PROFILE_RELEASE_PANIC=abort
cargo build --release --bin health --bin stats --bin zapier-webhook --bin exotel-webhook --bin call-get --bin livekit-webhook --bin call-started --bin twilio-voice --bin room-create --bin room-join --bin session-get --bin sessions-list --bin slack-commands --bin discord-interactions --bin teams-messages
cargo run --release -p devstack --bin bench
