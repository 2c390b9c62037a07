# kscand: `make demo` runs the simulator on the default scenario,
# `make test` runs every test. Both install what they need into .venv: the demo
# only the package and its runtime dependencies (numpy, rich), the tests also the
# test toolchain (the `test` extra).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BASE   := $(VENV)/.installed-base
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench bench-step bench-pagemap bench-trace clean testbed vm-compare evaluation fuzz traces

$(BASE): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e .
	touch $(BASE)

$(STAMP): $(BASE)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(BASE)
	$(VENV)/bin/kscand sim hotset

# The QEMU guest testbed (tests/guest): qemu, virtme-ng, Debian's stock 6.12 image
# and the page_idle kernel build. Idempotent and cached in ~/.cache/kscand; needs
# root (apt-get), otherwise the guest tests skip (and fail under CI=true).
testbed: $(STAMP)
	@if [ "$$(id -u)" = 0 ]; then bash testbed/setup.sh && bash testbed/build-kernel.sh; \
	else echo "testbed: not root, not installing (guest tests will skip)"; fi

test: $(STAMP) testbed
	$(VENV)/bin/ruff check src tests bench testbed evaluation
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench testbed evaluation
	$(VENV)/bin/mypy

# The reliability tests at full size: >= 10,000 process exits with pid reuse,
# a 1 TiB simulated machine with every page hot (needs ~6 GiB of RAM).
stress: $(STAMP)
	KSCAND_STRESS=1 $(PY) -m pytest -q tests/test_reliability_sim.py

# The fuzz harness over every file and socket input (config, scenario, trace, control
# replies and requests) under a 2 GiB address-space limit, with random seeds; `make test`
# runs it briefly (tests/test_fuzz_inputs.py). FUZZ_EXAMPLES per target (default 5000).
fuzz: $(STAMP)
	OPENBLAS_NUM_THREADS=1 $(PY) tests/fuzz_harness.py --examples $(or $(FUZZ_EXAMPLES),5000) \
		--memory-mib 2048 --seed $$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')

bench: $(STAMP)
	$(PY) bench/bench_sim.py

# One engine step with nothing due, 50 against 5,000 simulated processes (target <= 1 ms
# at 5,000; REPS=... timed steps per size and kind).
bench-step: $(STAMP)
	$(PY) bench/bench_step.py --reps $(or $(REPS),400)

# Trace loading: kscand's loader against a plain csv reader on a 6.4 M row trace
# (ROWS=... for another size).
bench-trace: $(STAMP)
	$(PY) bench/bench_trace.py --rows $(or $(ROWS),6400000)

# The live page reader against a minimal C program on this host (root; 8 GiB buffer,
# SIZE_GIB=2 for less).
bench-pagemap: $(STAMP)
	$(PY) bench/bench_pagemap.py --size-gib $(or $(SIZE_GIB),8)

# kscand (page_idle, DAMON) against numa_balancing=2, DAMOS migrate_hot and no tiering in
# one QEMU guest (root; ~12 min under TCG): table, plot and JSON in out/vm-compare.
vm-compare: $(STAMP) testbed
	$(PY) -m pip install -q -e '.[plot]'
	$(PY) -m testbed.compare --out out/vm-compare $(VM_COMPARE_ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache

# docs/evaluation.md: every `kscand compare` it shows, rerun (about 15 min on 2 cores).
evaluation: $(STAMP)
	$(PY) -m pip install -q -e '.[plot]'
	$(PY) evaluation/make_docs.py

# docs/recorded-workloads.md: redis-server, the sqlite3 CLI and an igraph PageRank run
# under valgrind's lackey, their page accesses into evaluation/traces/*.csv and their
# scenarios into evaluation/scenarios/ (root: apt-get; WHAT=redis|sqlite|graph|all).
traces: $(STAMP)
	bash evaluation/record/record.sh $(or $(WHAT),all)
