# Warren: the commands the README documents.
#   make run     start the broker on :5672 (release build)
#   make test    every test: unit, property, integration (Rust), interop (pika, amqplib)
#   make bench   load scenarios against Warren, and RabbitMQ when OTHER_URI is given
#   make bench-micro  Criterion hot-path benches and dhat allocations per message
#   make soak    30 minutes of mixed load with client kills and broker kill -9 restarts
#                (SOAK_SECONDS=N to change; not part of make test)
#   make fuzz    the protocol crate's cargo-fuzz targets (frame, method, content, table,
#                properties, sasl; see protocol/src/fuzz_harness.rs), FUZZ_SECONDS each
#                (default 60), one after another; needs the nightly toolchain and installs
#                cargo-fuzz if missing. FUZZ_TARGETS picks targets. New inputs go to
#                target/fuzz-corpus/<target>, crashes to protocol/fuzz/artifacts/<target>.
#                On a shared machine: nice -n 19 make fuzz.
#   make fuzz-cmin  merges target/fuzz-corpus into the committed protocol/fuzz/corpus and
#                minimises it to edge coverage (cargo fuzz cmin, -use_counters=0: a few
#                hundred files per target); `cargo test` replays what is committed.

CARGO ?= cargo
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
FUZZ_CARGO ?= cargo +nightly
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= frame method content table properties sasl

.PHONY: run test test-rust test-interop bench bench-micro lint soak fuzz fuzz-install fuzz-cmin

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

fuzz-install:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz

# Each target reads the committed corpus and writes what it finds new
# to a scratch corpus, so a run leaves the committed one as it was.
fuzz: fuzz-install
	cd protocol && for t in $(FUZZ_TARGETS); do \
		mkdir -p $(TARGET_DIR)/fuzz-corpus/$$t && \
		$(FUZZ_CARGO) fuzz run $$t $(TARGET_DIR)/fuzz-corpus/$$t fuzz/corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 || exit 1; \
	done

fuzz-cmin: fuzz-install
	cd protocol && for t in $(FUZZ_TARGETS); do \
		if [ -d $(TARGET_DIR)/fuzz-corpus/$$t ]; then cp -n $(TARGET_DIR)/fuzz-corpus/$$t/* fuzz/corpus/$$t/ 2>/dev/null; fi; \
		$(FUZZ_CARGO) fuzz cmin $$t fuzz/corpus/$$t -- -use_counters=0 || exit 1; \
	done
