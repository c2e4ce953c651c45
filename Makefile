# coffer — developer entry points. `make demo` and `make test` are the two
# commands the README promises work on a fresh machine.

CARGO ?= cargo
CARGO_FLAGS ?= --locked

.PHONY: all build release demo test lint fmt-check clippy unit e2e-deps e2e fuzz clean-tools

all: build

build:
	$(CARGO) build $(CARGO_FLAGS)

release:
	$(CARGO) build $(CARGO_FLAGS) --release

## demo: OpenBao + coffer + `coffer mount` of examples/demo, prints the volume, stops everything.
demo:
	bash e2e/demo.sh

## test: formatting, lints, unit tests, integration and end-to-end tests against real OpenBao.
test: fmt-check clippy e2e-deps
	$(CARGO) test $(CARGO_FLAGS) --all-features -- --include-ignored

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy $(CARGO_FLAGS) --all-targets --all-features -- -D warnings

unit:
	$(CARGO) test $(CARGO_FLAGS) --lib

e2e-deps:
	bash e2e/setup.sh

## fuzz: every cargo-fuzz target in fuzz/ for FUZZ_SECONDS (default 60) each; fails on any finding.
fuzz:
	bash e2e/fuzz.sh

clean-tools:
	rm -rf e2e/.tools e2e/.run
