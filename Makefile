# The README's first two commands: `make demo` and `make test`. Both create the shared
# environment when it is missing and reuse it when it is current (tools/setup_env.sh).
SHELL := /bin/bash
PY := PYTHONPATH=$(CURDIR) $(CURDIR)/.venv/bin/python
DEMO_DIR ?= output/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: env demo test count-params benchmark clean-demo

env:
	@bash tools/setup_env.sh

demo: env
	$(PY) tools/demo.py --output $(DEMO_DIR)

test: env
	$(PY) -m pytest -q tests

count-params: env
	$(PY) tools/count_params.py

benchmark: env
	$(PY) tools/benchmark_seg.py
