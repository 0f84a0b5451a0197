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

# Speed benchmarks (docs/BENCHMARKS.md): the seven segmenters at 128 detections in every mode,
# the trained ResNet18_T1 (BENCH_WEIGHTS) on real slices, the classifiers and a 300-slice volume.
BENCH_IMAGES ?= ../shared/data/medseg100/images
BENCH_WEIGHTS ?=
BENCH_OUT ?= output/benchmarks-$(shell date +%Y%m%d-%H%M%S)
BENCH_TRAINED = $(if $(BENCH_WEIGHTS),--weights mask_rcnn_R18_T1=$(BENCH_WEIGHTS))

benchmark: env
	@mkdir -p $(BENCH_OUT)
	set -o pipefail; $(PY) tools/benchmark_seg.py --images $(BENCH_IMAGES) --score-thresh 0.0 --stages \
		--modes eager optimized onnxruntime \
		--json $(BENCH_OUT)/seg_128.json | tee $(BENCH_OUT)/seg_128.md
	set -o pipefail; $(PY) tools/benchmark_seg.py --images $(BENCH_IMAGES) --models mask_rcnn_R18_T1 $(BENCH_TRAINED) \
		--stages --train-iters 0 --json $(BENCH_OUT)/seg_r18_t1.json | tee $(BENCH_OUT)/seg_r18_t1.md
	set -o pipefail; $(PY) tools/benchmark_classifier.py --images $(BENCH_IMAGES) \
		$(if $(BENCH_WEIGHTS),--segmentation-weights $(BENCH_WEIGHTS)) \
		--json $(BENCH_OUT)/classifier.json | tee $(BENCH_OUT)/classifier.md
