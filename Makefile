# softfloor: the two commands a newcomer needs are `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= build/demo
# Parallel test workers (pytest-xdist); the simulator tests share a build cache.
JOBS ?= 2

.PHONY: demo test test-fast bench soak bootstrap clean

bootstrap:
	@./scripts/bootstrap.sh

demo: bootstrap
	$(PY) -m softfloor flow --out $(OUT)

test: bootstrap
	$(PY) -m pytest -n $(JOBS) --durations=15 -q

test-fast: bootstrap
	$(PY) -m pytest -q -m "not sim and not synth and not slow"

# Long randomized verification (not in CI's `make test`): 100,000 vectors per primitive, 20,000
# per streaming unit (engines at every folding, window, pool, threshold, conv, FIFOs) on both
# simulators, a third of SOAK_NETS random CNNs per simulator, the digits
# MLP streamed 200 samples with gaps/backpressure/reset, and SOAK_NETS random networks per
# simulator from a fresh base seed (printed; reproduce one with SOFTFLOOR_SEED=<seed>), and
# 5,000 random commands on corrupted artifacts (tests/sw/test_errors_property.py; 500 in `make test`).
SOAK_NETS ?= 60
soak: bootstrap
	@base=$${SOFTFLOOR_RANDNET_BASE:-$$(date +%s)}; echo "soak: random networks from base seed $$base"; \
	SOFTFLOOR_SOAK=1 SOFTFLOOR_RANDNET_BASE=$$base SOFTFLOOR_RANDNET_COUNT=$(SOAK_NETS) \
	$(PY) -m pytest -n $(JOBS) -q --durations=10 tests/sim tests/sw/test_errors_property.py

bench: bootstrap
	@$(PY) -c "import matplotlib, ray, da4ml" 2>/dev/null || $(VENV)/bin/pip install -q -e ".[bench,sweep]" torch==2.13.0
	$(PY) -m softfloor.benchmarks --out build/bench $(SECTIONS)

clean:
	rm -rf build sim_build .pytest_cache .hypothesis
