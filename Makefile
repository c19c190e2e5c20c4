# Entry points of the README. Every target sets up the environment first (a quick check once done).
VENV ?= .venv
PY := $(VENV)/bin/python
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

.PHONY: setup demo test test-fast bench clean-venv
setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/sixd-pose demo --out demo_output

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

bench: setup
	$(VENV)/bin/sixd-pose bench-render --out bench_render.json

clean-venv:
	rm -rf $(VENV)
