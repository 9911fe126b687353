# callops: the two commands a new user needs are `make dev` and `make test`.
# Both install what they need (scripts/bootstrap.sh, cached under .cache/).

SHELL := /bin/bash
FUNCTIONS := $(notdir $(wildcard functions/*))
VENV_BIN := $(CURDIR)/.cache/venv/bin

.PHONY: bootstrap dev test lint unit integration build bench deploy clean

bootstrap:
	@bash scripts/bootstrap.sh

## Run the whole system on 127.0.0.1 (PORT, default 3000). Ctrl-C stops it.
dev: bootstrap
	cargo run -p devstack --bin devstack

## Everything CI runs: formatting, clippy, template lint, unit and integration tests.
test: bootstrap lint
	cargo test --workspace --all-targets

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	bash scripts/lint-template.sh

## Release binaries for Lambda (arm64), as SAM builds them: one function per
## build, so each gets only its own features of `shared` (one build of many
## would unify them). Dependencies built once are reused by the next.
build:
	@bash scripts/bootstrap.sh --with-cargo-lambda
	@set -e; for f in $(FUNCTIONS); do \
	  echo "== $$f"; \
	  PATH="$(VENV_BIN):$$PATH" cargo lambda build --release --arm64 -p $$f; \
	done
	@ls -l $${CARGO_TARGET_DIR:-target}/lambda/*/bootstrap 2>/dev/null | awk '{printf "%-28s %5.1f MiB\n", $$9, $$5/1048576}' || true

## Cold start, warm latency, memory and binary size; writes target/bench/report.md.
bench: bootstrap
	bash scripts/bench.sh

## Build and deploy with SAM, no questions: parameters from PARAMS
## (default deploy/minimal.env), secrets from the environment (docs/deploy.md).
## GUIDED=1 asks instead; DRY_RUN=1 checks and prints, deploys nothing.
deploy:
	@bash scripts/bootstrap.sh --with-cargo-lambda
	PATH="$(VENV_BIN):$$PATH" bash scripts/deploy.sh

clean:
	cargo clean
	rm -rf .aws-sam
