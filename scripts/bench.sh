#!/usr/bin/env bash
# Benchmarks the release binaries (see tools/devstack/src/bin/bench.rs):
# cold-start init, warm latency, peak memory and binary size.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --bin health --bin stats --bin zapier-webhook --bin exotel-webhook --bin call-get
cargo run --release -p devstack --bin bench
