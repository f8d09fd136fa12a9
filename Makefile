# udprelayd: the two commands the README promises, and a few more.
#   make run   - install what is missing (and socat), build a release binary, run it with config/udprelayd.ini
#   make test  - install what is missing, build, run every test
#   make check - check the code style, build and run the unit and end-to-end XCTest tests only (no container, no package)
#   make format - apply the code style of .swift-format
#   make deb   - build udprelayd_<version>_amd64.deb (installs its Build-Depends), check it with lintian
#   make bench - benchmark against a C reference, nginx and socat on loopback; writes BENCHMARKS.md
SHELL := /bin/bash
CONFIG ?= config/udprelayd.ini
SWIFT ?= swift

.PHONY: deps test-deps build release run test check check-config format deb clean fuzz sanitize sanitize-thread sanitize-address soak bench bench-tools

deps:
	@scripts/install-deps.sh build

test-deps:
	@scripts/install-deps.sh test

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

# Also installs socat, which the README's quick start uses to talk to the running daemon.
run: release
	@scripts/install-deps.sh run
	.build/release/udprelayd --config $(CONFIG)

check-config: release
	.build/release/udprelayd --check-config --config $(CONFIG)

test: test-deps
	set -o pipefail; $(SWIFT) build --build-tests 2>&1 | tee .build-test.log
	scripts/check-warnings.sh < .build-test.log
	scripts/check-format.sh
	scripts/check-fleet-examples.sh .build/debug/udprelayd
	$(SWIFT) test --skip-build --disable-swift-testing
	scripts/systemd-e2e.sh
	scripts/check-version.sh .build/debug/udprelayd
	scripts/check-man.sh .build/debug/udprelayd
	$(MAKE) --no-print-directory bench-tools
	Benchmarks/smoke.sh $(BENCH_BIN)
	scripts/test-deb.sh

# The unit and end-to-end XCTest tests, nothing else: no systemd container (scripts/systemd-e2e.sh),
# no package build (scripts/test-deb.sh), no benchmark smoke run. Tests that need root skip without it.
check: test-deps
	set -o pipefail; $(SWIFT) build --build-tests 2>&1 | tee .build-test.log
	scripts/check-warnings.sh < .build-test.log
	scripts/check-format.sh
	$(SWIFT) test --skip-build --disable-swift-testing

# Applies the code style of .swift-format to every Swift file (scripts/check-format.sh checks it).
format:
	swift-format format --in-place --recursive --configuration .swift-format Sources Tests Package.swift

deb:
	SWIFT=$$(command -v $(SWIFT)) scripts/build-deb.sh

# The benchmark's C pieces: load client, C reference server, malloc-counting shim.
BENCH_BIN := .build/bench
BENCH_CFLAGS := -O2 -g -Wall -Wextra -Werror
bench-tools: $(BENCH_BIN)/loadgen $(BENCH_BIN)/openloop $(BENCH_BIN)/refserver $(BENCH_BIN)/mallocount.so

$(BENCH_BIN)/loadgen $(BENCH_BIN)/openloop $(BENCH_BIN)/refserver: $(BENCH_BIN)/%: Benchmarks/%.c Benchmarks/addr.h
	@mkdir -p $(BENCH_BIN)
	gcc $(BENCH_CFLAGS) -o $@ $<

$(BENCH_BIN)/mallocount.so: Benchmarks/mallocount.c
	@mkdir -p $(BENCH_BIN)
	gcc $(BENCH_CFLAGS) -fPIC -shared -o $@ $<

# A few minutes; see Benchmarks/bench.py for the BENCH_* knobs.
bench:
	@Benchmarks/install-deps.sh
	$(MAKE) --no-print-directory release bench-tools
	python3 Benchmarks/bench.py

clean:
	rm -rf .build .build-test.log .build-deb udprelayd_*.deb

# libFuzzer + AddressSanitizer on every fuzz target, FUZZ_SECONDS each (the recorded long run used 600).
FUZZ_SECONDS ?= 60
fuzz: deps
	scripts/fuzz.sh $(FUZZ_SECONDS)

# The unit and end-to-end tests under ThreadSanitizer and AddressSanitizer (own build folders).
# CI runs sanitize-thread after make test.
sanitize: sanitize-thread sanitize-address

sanitize-thread: test-deps
	$(SWIFT) build --build-tests --sanitize=thread --scratch-path .build-tsan
	TSAN_OPTIONS=halt_on_error=1 $(SWIFT) test --skip-build --sanitize=thread --scratch-path .build-tsan --disable-swift-testing $(SANITIZE_FILTER)

sanitize-address: test-deps
	$(SWIFT) build --build-tests --sanitize=address --scratch-path .build-asan
	# Leak checking is off: XCTest and Foundation's Process leak small objects at exit (seen
	# here, not in our code); use-after-free, overflows and double frees still halt the run.
	ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 $(SWIFT) test --skip-build --sanitize=address --scratch-path .build-asan --disable-swift-testing $(SANITIZE_FILTER)

# A bounded soak (about two minutes) of the release binary: see scripts/soak.py.
soak: release test-deps
	python3 scripts/soak.py .build/release/udprelayd
