# coffer — developer entry points. `make demo` and `make test` are the two
# commands the README promises work on a fresh machine.

CARGO ?= cargo
CARGO_FLAGS ?= --locked

.PHONY: all build release demo test bench lint fmt-check clippy fuzz-check unit e2e-deps e2e chart-test deploy-manifest fuzz clean-tools

all: build

build:
	$(CARGO) build $(CARGO_FLAGS)

release:
	$(CARGO) build $(CARGO_FLAGS) --release

## demo: OpenBao + coffer + `coffer mount` of examples/demo, prints the volume, stops everything.
demo:
	bash e2e/demo.sh

## test: formatting, lints, chart checks, unit tests, integration and end-to-end tests against real OpenBao.
test: fmt-check clippy fuzz-check chart-test e2e-deps
	$(CARGO) test $(CARGO_FLAGS) --all-features -- --include-ignored

## bench: speed and memory against real OpenBao (release build); writes docs/benchmarks.md. Not part of test.
bench: e2e-deps
	$(CARGO) build $(CARGO_FLAGS) --release --bin coffer --example bench
	./target/release/examples/bench

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy $(CARGO_FLAGS) --all-targets --all-features -- -D warnings

unit:
	$(CARGO) test $(CARGO_FLAGS) --lib

e2e-deps:
	bash e2e/setup.sh

## chart-test: helm lint + helm template of charts/coffer and checks of the rendered manifests.
chart-test:
	bash e2e/chart_test.sh

## deploy-manifest: re-render deploy/coffer.yaml (kubectl apply users) from the chart and deploy/values.yaml.
deploy-manifest:
	bash e2e/chart_test.sh --write-deploy

## fuzz-check: every fuzz target still compiles against the library (no fuzzing; part of test).
fuzz-check:
	cd fuzz && $(CARGO) check $(CARGO_FLAGS) --bins

## fuzz: every cargo-fuzz target in fuzz/ for FUZZ_SECONDS (default 60) each; fails on any finding.
fuzz:
	bash e2e/fuzz.sh

clean-tools:
	rm -rf e2e/.tools e2e/.run
