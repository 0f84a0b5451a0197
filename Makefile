# The README's first two commands: `make demo` and `make test`. Both create the shared
# environment when it is missing and reuse it when it is current (tools/setup_env.sh); .venv
# puts this checkout on sys.path itself, so no PYTHONPATH is needed.
SHELL := /bin/bash
PY := $(CURDIR)/.venv/bin/python
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

# Speed benchmarks (docs/BENCHMARKS.md), about 16 minutes on 2 cores: the seven segmenters at 16
# and at 128 detections per slice (and three of them with 300 test proposals), the trained
# ResNet18_T1 (BENCH_WEIGHTS) at the paper's score threshold in every mode, the classifiers and
# a 300-slice volume; Markdown + JSON in BENCH_OUT.
BENCH_IMAGES ?= ../shared/data/medseg100/images
BENCH_WEIGHTS ?=
BENCH_OUT ?= output/benchmarks-$(shell date +%Y%m%d-%H%M%S)
BENCH_SEG = set -o pipefail; $(PY) tools/benchmark_seg.py --images $(BENCH_IMAGES)

benchmark: env
	@mkdir -p $(BENCH_OUT)
	$(BENCH_SEG) --detections 16 --modes eager optimized onnxruntime --stages \
		--json $(BENCH_OUT)/seg_16.json | tee $(BENCH_OUT)/seg_16.md
	$(BENCH_SEG) --detections 128 --modes eager optimized --stages --train-iters 0 \
		--json $(BENCH_OUT)/seg_128.json | tee $(BENCH_OUT)/seg_128.md
	$(BENCH_SEG) --detections 16 --proposals 300 --models mask_rcnn_R18_T1 mask_rcnn_R18_T2 \
		mask_rcnn_R50 --modes eager optimized --train-iters 0 --no-flops \
		--json $(BENCH_OUT)/seg_16_p300.json | tee $(BENCH_OUT)/seg_16_p300.md
	$(BENCH_SEG) --models mask_rcnn_R18_T1 $(if $(BENCH_WEIGHTS),--weights mask_rcnn_R18_T1=$(BENCH_WEIGHTS)) \
		--stages --train-iters 0 --json $(BENCH_OUT)/seg_r18_t1.json | tee $(BENCH_OUT)/seg_r18_t1.md
	set -o pipefail; $(PY) tools/benchmark_classifier.py --images $(BENCH_IMAGES) \
		$(if $(BENCH_WEIGHTS),--segmentation-weights $(BENCH_WEIGHTS)) \
		--json $(BENCH_OUT)/classifier.json | tee $(BENCH_OUT)/classifier.md
