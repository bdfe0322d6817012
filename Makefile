# The two commands of the README: `make up` (the whole system on this machine) and
# `make test` (what CI runs). Build output lives outside the clone so rebuilds stay fast.
CARGO_TARGET_DIR ?= $(HOME)/.cache/notify-target
export CARGO_TARGET_DIR

.PHONY: up test deps browser-deps screenshots schemathesis build fmt lint check smoke load bench chaos bench-outbox bench-inbox bench-digest token clean-test-dbs

## Build everything and run the platform until Ctrl-C.
up: deps build
	$(CARGO_TARGET_DIR)/debug/notifyctl up $(UP_ARGS)

build:
	cargo build --workspace --bins

## Formatting check, clippy with warnings denied, the binaries (the launcher test runs them),
## the whole test suite.
test: deps schemathesis browser-deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo build --workspace --bins
	cargo nextest run --workspace --no-fail-fast

## Debian packages the stack and the tests run (nginx, promtool, redis-server): installed
## when missing and running as root, otherwise the command to run is printed.
deps:
	@bash tools/deps.sh

## The browser tests' chromium (Debian) and npm packages (e2e/browser, pinned by its lock file).
browser-deps:
	@bash tools/browser-deps.sh

## Screenshots of every page at phone and desktop width into docs/pages/ (the browser tests,
## against a stack of their own).
screenshots: browser-deps build
	NOTIFY_SCREENSHOTS=$(CURDIR)/docs/pages cargo nextest run -p notifyctl --test browser

## The API fuzzer e2e/tests/schemathesis.rs runs (PyPI), in a virtualenv of its own.
VENV ?= $(HOME)/.cache/notify-venv
SCHEMATHESIS_VERSION = 4.32.5
schemathesis:
	@$(VENV)/bin/schemathesis --version 2>/dev/null | grep -q '$(SCHEMATHESIS_VERSION)' || \
		{ python3 -m venv $(VENV) && $(VENV)/bin/pip install -q 'schemathesis==$(SCHEMATHESIS_VERSION)'; }

fmt:
	cargo fmt --all

check:
	cargo check --workspace --all-targets

## With `make up` running in another terminal: send 50 notifications, print latency and RSS.
smoke:
	$(CARGO_TARGET_DIR)/debug/notifyctl smoke

## With `make up` running: one load scenario (see `notifyctl load --help`), e.g.
## make load LOAD_ARGS="--scenario e2e --channel email --rate 50 --duration-secs 30"
## writes .dev/load/<scenario>-<channel>.json and .dev/load/report.html.
load:
	$(CARGO_TARGET_DIR)/debug/notifyctl load $(LOAD_ARGS)

## The standard load scenarios against a fresh release stack of its own (~15 min): pgbench's
## baseline, intake, end to end per channel, fan-out, urgent-under-bulk. Writes
## .dev/bench/report.html (and main.png when chromium is installed); docs/benchmarks.md.
bench:
	cargo build --release --workspace --bins
	$(CARGO_TARGET_DIR)/release/notifyctl bench $(BENCH_ARGS)

## The delivery guarantee under load with faults injected in turn (release build, ~8 min):
## its own Postgres, Redis and Kafka; prints a table and writes .dev/chaos/report.json.
chaos:
	cargo build --release --workspace --bins
	$(CARGO_TARGET_DIR)/release/notifyctl chaos $(CHAOS_ARGS)

## The outbox relay and purge at 2,000 rows/s for 5 min (release build): is the outbox bounded?
bench-outbox:
	cargo build --release -p notifyctl
	$(CARGO_TARGET_DIR)/release/notifyctl bench-outbox $(BENCH_ARGS)

## The in-app inbox's streams (release build): Redis pub/sub against Kafka for the signals,
## then idle memory and delivery latency at 1,000 and 10,000 streams on one bff.
bench-inbox:
	cargo build --release --workspace --bins
	$(CARGO_TARGET_DIR)/release/notifyctl bench-inbox $(BENCH_ARGS)

## Digests (release build): 100,000 sends to 1,000 recipients, plain (the baseline) and
## digested into 1,000 windows, then every window closed and sent; CPU per notification.
bench-digest:
	cargo build --release --workspace --bins
	$(CARGO_TARGET_DIR)/release/notifyctl bench-digest $(BENCH_ARGS)

## Mint a token: make token ROLE=service SUB=billing
token:
	@$(CARGO_TARGET_DIR)/debug/notifyctl token --role $(ROLE) --sub $(SUB)

## Drop the databases tests created (all named t_…); CI runs this before the tests.
clean-test-dbs:
	@psql -h 127.0.0.1 -U postgres -Atc "SELECT datname FROM pg_database WHERE datname LIKE 't\_%'" \
	  | while read -r db; do psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS \"$$db\" WITH (FORCE)"; done
