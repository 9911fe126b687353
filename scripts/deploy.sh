#!/usr/bin/env bash
# Deploys the stack with SAM, without questions, from a parameters file and
# secrets taken from the environment (docs/deploy.md).
#
#   make deploy                        # PARAMS=deploy/minimal.env, STACK=callops
#   make deploy PARAMS=deploy/mine.env STACK=callops-eu REGION=eu-west-1
#   make deploy GUIDED=1               # scripts/build.sh + sam deploy --guided
#   make deploy DRY_RUN=1              # check and print, build and deploy nothing
#
# Non-secret parameters come from PARAMS (`Name=value` lines, `#` comments).
# A secret (`NoEcho`) parameter comes from the environment variable of the
# same name, or from the file named by `<Name>_FILE`, and may not appear in
# PARAMS. A required secret that is missing stops the deploy before anything
# is built; an optional one not given stays empty, so its feature stays off.
# Parameters named nowhere take the template's default: sam deploy does not
# reuse an earlier deploy's values, so pass the same ones every time.
#
# No `sam build`: scripts/build.sh builds every function in grouped cargo
# invocations into target/lambda/<function>/, where template.yaml's CodeUri
# points, and `sam deploy` zips those folders as they are.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PARAMS="${PARAMS:-$ROOT/deploy/minimal.env}"
STACK="${STACK:-callops}"
# Every function's environment stays under Lambda's 4 KB only with names
# (tables, queues, secret ARNs) of a stack name this long at most
# (tools/devstack/tests/env_size.rs).
if (( ${#STACK} > 40 )); then
  echo "deploy: STACK '$STACK' is longer than 40 characters" >&2
  exit 2
fi
PYTHON="${PYTHON:-$ROOT/.cache/venv/bin/python}"

if [[ "${GUIDED:-}" == "1" ]]; then
  if [[ "${DRY_RUN:-}" == "1" ]]; then
    echo "scripts/build.sh && sam deploy --guided --template-file template.yaml"
    exit 0
  fi
  bash "$ROOT/scripts/build.sh"
  exec sam deploy --guided --template-file "$ROOT/template.yaml"
fi

[[ -x "$PYTHON" ]] || { echo "deploy: $PYTHON not found: run scripts/bootstrap.sh" >&2; exit 2; }
# The overrides hold secrets: a private file, removed however this ends.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
overrides="$work/overrides.yaml"
echo "deploy: stack $STACK with $PARAMS:"
"$PYTHON" "$ROOT/scripts/deploy_params.py" "$ROOT/template.yaml" "$PARAMS" "$overrides"

args=(--template-file "$ROOT/template.yaml" --stack-name "$STACK" --no-confirm-changeset --no-fail-on-empty-changeset)
if [[ -n "${REGION:-}" ]]; then
  args+=(--region "$REGION")
fi
if [[ "${DRY_RUN:-}" == "1" ]]; then
  echo "deploy: dry run: would run scripts/build.sh, then sam deploy ${args[*]} --parameter-overrides file://<those values>"
  exit 0
fi
bash "$ROOT/scripts/build.sh"
sam deploy "${args[@]}" --parameter-overrides "file://$overrides"
