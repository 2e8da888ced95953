# cmaprof: every target that needs the environment first runs `setup`, which is
# idempotent (scripts/setup.sh: packages, kernel headers, tracefs/debugfs, .venv) and
# needs root: run as `sudo make <target>`.

VENV    := .venv
PY      := $(VENV)/bin/python
CMAPROF := $(VENV)/bin/cmaprof
PYTEST  := $(VENV)/bin/pytest
# Checked by lint: the cmaprof package and the three trees installed under it.
SOURCES := cmaprof probes collectors analysis

.PHONY: all setup demo demo-host test test-matrix unit lint fuzz soak clean bench

all: test

setup:
	@bash scripts/setup.sh $(firstword $(MAKECMDGOALS) setup)

# The main job: the quick host part (doctor, record a built-in workload, report, plots;
# out/demo/host), then the worked example in a guest of the newest shared kernel (stock
# CMA against CMA inside ZONE_MOVABLE, one boot per layout; out/demo/guest), ending with
# the compare table and its figures. About 14 minutes measured here (the guest part
# under TCG); run again, it resumes the guest part.
demo: setup
	$(CMAPROF) demo

# The host part of `make demo` alone (about a minute).
demo-host: setup
	$(CMAPROF) demo --host-only

# CMAPROF_REQUIRE_LIVE=1 turns skips of live/vm tests into failures where they can run.
# Two pytest streams side by side; which guest modules run on which of the kernels in
# ../shared/kernels is said at the top of scripts/run-tests.sh.
test: setup
	CMAPROF_REQUIRE_LIVE=1 bash scripts/run-tests.sh $(PYTEST) test

# Every guest module on every kernel of ../shared/kernels (about 3 hours under TCG).
test-matrix: setup
	CMAPROF_REQUIRE_LIVE=1 bash scripts/run-tests.sh $(PYTEST) matrix

# cmaprof record for 10 minutes under the highest allocation rate of every CPU: RSS growth
# under 5%, no loss, vmstat check, size per interval (make test runs a 75 s version).
soak: setup
	$(PY) scripts/soak.py --duration 600 --out out/soak --force --json out/soak.json

# 10k mutated recordings (make test runs 300); about 20 minutes.
fuzz: setup
	CMAPROF_FUZZ_EXAMPLES=10000 $(PYTEST) tests/unit/test_fuzz_recording.py -q

# Issue 15's targets, each measured in one run and printed as measured / target /
# met or missed: overhead against untraced, both bpftrace maps and perf (interleaved
# rounds), the page_alloc program's ns/event with bpf_stats' own cost apart, make -j2 of
# a generated C tree, streaming at the highest rate, start-up, analysis at scale
# (bench/). BENCH_ROUNDS=3 for a quick pass; results in bench/results/ (or BENCH_OUT=FILE).
bench: setup
	$(PY) -m bench

unit: setup
	$(PYTEST) tests/unit -q

lint: setup
	@$(PY) -m ruff --version >/dev/null 2>&1 && $(PY) -m mypy --version >/dev/null 2>&1 \
		|| $(PY) -m pip install -q --disable-pip-version-check ruff mypy
	$(PY) -m ruff check $(SOURCES) tests
	$(PY) -m ruff format --check $(SOURCES) tests
	@# mypy sees the installed layout (probes/ as cmaprof.probes, ...) through a symlink tree
	rm -rf build/typecheck && mkdir -p build/typecheck
	cp -rs $(CURDIR)/cmaprof build/typecheck/cmaprof
	for d in probes collectors analysis; do ln -s $(CURDIR)/$$d build/typecheck/cmaprof/$$d; done
	cd build/typecheck && $(CURDIR)/$(PY) -m mypy -p cmaprof

# Build and test leftovers; never .venv (remove it by hand to start over).
clean:
	rm -rf out build .pytest_cache .mypy_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
