# The README's two commands: `make train` and `make test`. Every target sets itself up.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= runs/demo
CONFIG ?= configs/cpu_demo.yaml
TOY ?= data/toy
PYTEST_ARGS ?=

.PHONY: setup toy-data train dry-run test bench-data clean help

help:
	@echo "make train     set up, write the toy data set, train $(CONFIG) into $(OUT)"
	@echo "make test      set up and run the test suite"
	@echo "make dry-run   print the plan of configs/resnet50_imagenet.yaml (full-size model)"
	@echo "make bench-data  images/s of the DALI and Pillow loaders, data wait in training"
	@echo "make setup     create $(VENV) with Python 3.8-3.10 and pinned dependencies"

setup:
	@bash tools/setup_env.sh $(VENV)

toy-data: setup
	@if [ ! -f $(TOY)/.complete ]; then \
	  rm -rf $(TOY) && $(PY) -m data.toy_imagenet $(TOY) && touch $(TOY)/.complete; fi

train: toy-data
	$(PY) train_resnet50.py --config $(CONFIG) --data-dir $(TOY) --output-dir $(OUT) --overwrite

dry-run: setup
	$(PY) train_resnet50.py --config configs/resnet50_imagenet.yaml --dry-run

test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

bench-data: toy-data
	$(PY) tools/bench_data.py --toy-dir $(TOY)

clean:
	rm -rf runs $(TOY) .pytest_cache
