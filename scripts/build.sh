#!/usr/bin/env bash
# Release binaries of every Lambda function (arm64), as `make build` and
# `make deploy` use them: target/lambda/<function>/bootstrap, which
# template.yaml's CodeUri points at and `sam deploy` zips as it is.
#
# Functions that resolve their dependencies identically share one cargo
# invocation (scripts/build_groups.py says why that changes no binary), so
# their crates compile and link in parallel; the groups run one after the
# other in one target directory, reusing what an earlier group built.
#
# Usage: scripts/build.sh [function ...]   (default: all of functions/)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PATH="$ROOT/.cache/venv/bin:$PATH"
command -v cargo-lambda >/dev/null || {
  echo "build: cargo-lambda missing: run scripts/bootstrap.sh --with-cargo-lambda" >&2
  exit 2
}
rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu \
  || rustup target add aarch64-unknown-linux-gnu

# Fixed, whatever CARGO_TARGET_DIR says: template.yaml's CodeUri points here.
LAMBDA_DIR="$ROOT/target/lambda"
start=$SECONDS
mapfile -t groups < <(python3 scripts/build_groups.py "$@")
echo "build: ${#groups[@]} cargo invocations for $(echo "${groups[@]}" | wc -w) functions"
for group in "${groups[@]}"; do
  echo "== $group"
  packages=()
  for f in $group; do packages+=(-p "$f"); done
  cargo lambda build --release --arm64 --locked --lambda-dir "$LAMBDA_DIR" "${packages[@]}"
done
echo "build: done in $((SECONDS - start)) s"
for f in ${*:-$(ls functions)}; do
  bin="$LAMBDA_DIR/$f/bootstrap"
  printf '%-28s %6.2f MiB\n' "$f" "$(($(stat -c %s "$bin") * 100 / 1048576))e-2"
done
