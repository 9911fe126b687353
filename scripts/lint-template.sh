#!/usr/bin/env bash
# Lints template.yaml offline with the tools scripts/bootstrap.sh installs:
#   1. sam validate --lint   (SAM transform + cfn-lint, as SAM CLI runs it)
#   2. cfn-lint              (with the serverless rules plugin, cfn-lint-serverless)
#   3. scripts/template-cycles.py (dependency cycles the SAM transform creates,
#      which CloudFormation refuses and the linters do not all report)
# Fails (non-zero) on any error or warning. Deliberate exceptions are declared
# next to the resource they concern, in its Metadata (cfn-lint ignore_checks).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.cache/venv"
TEMPLATE="${1:-$ROOT/template.yaml}"

if [[ ! -x "$VENV/bin/sam" || ! -x "$VENV/bin/cfn-lint" ]]; then
  echo "lint-template: tools missing in $VENV; run scripts/bootstrap.sh first" >&2
  exit 1
fi

# Offline: a region for the validators, dummy credentials so nothing looks up a
# real profile, and no telemetry or update checks from SAM CLI.
export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_SESSION_TOKEN=test
export SAM_CLI_TELEMETRY=0 SAM_CLI_CONTACT_TRACKING=0
unset AWS_PROFILE

cd "$ROOT"
status=0

echo "lint-template: sam validate --lint $TEMPLATE"
"$VENV/bin/sam" validate --lint --template "$TEMPLATE" || status=1

echo "lint-template: cfn-lint -a cfn_lint_serverless.rules $TEMPLATE"
# cfn-lint exits non-zero on errors (2), warnings (4) and informational (8) findings.
"$VENV/bin/cfn-lint" -a cfn_lint_serverless.rules -- "$TEMPLATE" || status=1

echo "lint-template: scripts/template-cycles.py $TEMPLATE"
"$VENV/bin/python" "$ROOT/scripts/template-cycles.py" "$TEMPLATE" || status=1

if [[ "$status" -eq 0 ]]; then
  echo "lint-template: ok"
else
  echo "lint-template: FAILED" >&2
fi
exit "$status"
