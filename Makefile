# callops: the two commands a new user needs are `make dev` and `make test`.
# Both install what they need (scripts/bootstrap.sh, cached under .cache/).

SHELL := /bin/bash
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

## Release binaries for Lambda (arm64) in target/lambda/<function>/, where
## template.yaml's CodeUri points: one cargo invocation per group of functions
## that resolve their dependencies alike (scripts/build_groups.py), so no
## function links more than it would built alone.
build:
	@bash scripts/bootstrap.sh --with-cargo-lambda
	bash scripts/build.sh

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
