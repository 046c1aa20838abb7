# softfloor: the two commands a newcomer needs are `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= build/demo
# Parallel test workers (pytest-xdist); the simulator tests share a build cache.
JOBS ?= 2

.PHONY: demo test test-fast bench bootstrap clean

bootstrap:
	@./scripts/bootstrap.sh

demo: bootstrap
	$(PY) -m softfloor flow --out $(OUT)

test: bootstrap
	$(PY) -m pytest -n $(JOBS) --durations=15 -q

test-fast: bootstrap
	$(PY) -m pytest -q -m "not sim and not synth and not slow"

bench: bootstrap
	$(PY) -m softfloor.benchmarks --out build/bench $(SECTIONS)

clean:
	rm -rf build sim_build .pytest_cache .hypothesis
