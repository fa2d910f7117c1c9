# Warren: the commands the README documents.
#   make run     start the broker on :5672 (release build)
#   make test    every test: unit, property, integration (Rust), interop (pika, amqplib)
#   make bench   load scenarios against Warren, and RabbitMQ when OTHER_URI is given
#   make bench-micro  Criterion hot-path benches and dhat allocations per message
#   make soak    30 minutes of mixed load with client kills and broker kill -9 restarts
#                (SOAK_SECONDS=N to change; not part of make test)

CARGO ?= cargo
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)

.PHONY: run test test-rust test-interop bench bench-micro lint soak

run:
	$(CARGO) run --release

test: test-rust test-interop

test-rust:
	$(CARGO) test --workspace

test-interop:
	$(CARGO) build --bin warren
	WARREN_BIN=$(TARGET_DIR)/debug/warren interop-tests/run.sh

bench:
	perf/bench.sh $(BENCH_ARGS)

bench-micro:
	$(CARGO) bench --bench hot_path --bench allocs

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

soak:
	$(CARGO) test --release --test soak -- --ignored --nocapture
