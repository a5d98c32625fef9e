# The README's two commands: `make train` and `make test`. Every target sets itself up.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= runs/demo
CONFIG ?= configs/cpu_demo.yaml
TOY ?= data/toy
PYTEST_ARGS ?=
NP ?= 4
GRID ?= 2x2
BENCH_COMM_ARGS ?= --check --json runs/bench_comm.jsonl
# mpirun flags for this kind of machine: more ranks than cores; root in CI containers
# --bind-to none: a rank's decoding threads may use any core, not the one it was bound to
MPIRUN := $(VENV)/bin/mpirun --oversubscribe --bind-to none $(if $(filter 0,$(shell id -u)),--allow-run-as-root)

.PHONY: setup toy-data quick train report dry-run dry-run-paper dry-run-lars test test-fast golden-update \
	test-other-python bench bench-comm bench-data bench-data-scale clean help simulate sim-calibrate \
	gpu-selfcheck experiment-batch-control cluster-up cluster-down cluster-train cluster-bench

help:
	@echo "make train     set up, write the toy data set, train $(CONFIG) on NP=$(NP) ranks (GRID=$(GRID)) into $(OUT)"
	@echo "make test      set up and run the test suite"
	@echo "make quick     a first run in under a minute: 3 epochs on 2 ranks into runs/quick"
	@echo "make test-fast the in-process tests only (no mpirun, root or training; tests/README.md)"
	@echo "make golden-update  rewrite the stored loss curve after a deliberate numerics change"
	@echo "make test-other-python VENV=.venv39 PYTHON=.../python3.9  CI's subset on another Python"
	@echo "make report    tables, plots and report.md of the run in $(OUT), into $(OUT)/report"
	@echo "make dry-run   print the plan of configs/resnet50_imagenet.yaml (full-size model)"
	@echo "make dry-run-paper  print the 34K -> 68K schedule of configs/paper_224s.yaml on 2,176 GPUs"
	@echo "make dry-run-lars   the LARS recipes from MLPerf's convergence points on 2,176 GPUs"
	@echo "make experiment-batch-control  the paper's claim on the toy set: 3 arms x 3 seeds (~20 min)"
	@echo "make bench-data  images/s of the DALI and Pillow loaders, data wait in training"
	@echo "make bench-data-scale  (root) ImageNet's shape: official tars -> packed, dry run, staging on 4 emulated nodes"
	@echo "make setup     create $(VENV) with Python 3.8-3.10 and pinned dependencies"
	@echo "make simulate  scale model: the paper's runs predicted, the scaling table, docs/scale_model.png, the MLPerf validation"
	@echo "make sim-calibrate  fit the model's alpha/beta on this machine's MPI (SIM_JSON=bench lines)"
	@echo "make bench     run every benchmark (bench-comm, bench-data)"
	@echo "make gpu-selfcheck  does the GPU path work here? (a verdict per item; without a GPU: REHEARSED on CPU ranks)"
	@echo "make bench-comm  all-reduce algorithms on NP=$(NP) ranks, grid GRID=$(GRID)"
	@echo "make cluster-up  (root) emulate $(CLUSTER_NODES) nodes x $(CLUSTER_RAILS) rails at $(CLUSTER_RATE) in network namespaces"
	@echo "make cluster-train  the make train recipe on the emulated nodes, $(CLUSTER_G) ranks each, comm.grid=auto, into $(CLUSTER_OUT)"
	@echo "make cluster-bench  (root) all-reduce across its own emulated cluster, 4 nodes x 2, 2 rails (~6 min)"
	@echo "make cluster-down  remove the emulated cluster (and a crashed run's leftovers)"

setup:
	@bash tools/setup_env.sh $(VENV)

# A directory is removed only when it is a toy set written here (data/toy_imagenet.py's marker
# file) or empty: TOY=/some/dir never deletes someone's data.
TOY_GUARD = if [ -z "$(strip $(TOY))" ]; then echo "error: TOY is empty: name the toy set's directory, e.g. TOY=data/toy" >&2; exit 1; fi; \
	if [ -e "$(TOY)" ] && [ ! -f "$(TOY)/.toy_imagenet" ] && [ ! -f "$(TOY)/.complete" ] && [ -n "$$(ls -A "$(TOY)" 2>/dev/null)" ]; then \
	  echo "error: $(TOY) is not a toy set make wrote (no $(TOY)/.toy_imagenet), so it is left alone: choose another TOY=DIR, or train on your own data with train_resnet50.py --data-dir DIR" >&2; exit 1; fi

toy-data: setup
	@$(TOY_GUARD); if [ ! -f "$(TOY)/.complete" ]; then \
	  rm -rf "$(TOY)" && $(PY) -m data.toy_imagenet "$(TOY)" && touch "$(TOY)/.complete"; fi

# A first run in under a minute: make train's recipe cut to 3 epochs on 2 ranks (configs/cpu_quick.yaml).
quick: toy-data
	$(MPIRUN) -np 2 $(PY) train_resnet50.py --config configs/cpu_quick.yaml --data-dir $(TOY) \
	  --output-dir runs/quick --overwrite --set comm.grid=1x2

train: toy-data
	$(MPIRUN) -np $(NP) $(PY) train_resnet50.py --config $(CONFIG) --data-dir $(TOY) \
	  --output-dir $(OUT) --overwrite --set comm.grid=$(GRID)

report: setup
	@test -f $(OUT)/log.jsonl || { echo "error: no run in $(OUT): run make train first, or make report OUT=RUN_DIR" >&2; exit 1; }
	$(PY) -m tools.report $(OUT) --out $(OUT)/report

dry-run: setup
	$(PY) train_resnet50.py --config configs/resnet50_imagenet.yaml --dry-run

dry-run-paper: setup
	$(PY) train_resnet50.py --config configs/paper_224s.yaml --dry-run --world-size 2176 --local-size 4

dry-run-lars: setup
	$(PY) train_resnet50.py --config configs/mlperf_lars_67k.yaml --dry-run --world-size 2176 --local-size 4
	$(PY) train_resnet50.py --config configs/paper_224s_lars.yaml --dry-run --world-size 2176 --local-size 4

# docs/results.md, "Batch-size control on the toy set": constant small, constant large and small -> large batches on the
# toy set, three seeds each (EXPERIMENT_ARGS=--help lists the knobs).
EXPERIMENT_ARGS ?=
experiment-batch-control: toy-data
	$(PY) -m tools.experiment_batch_control --data-dir $(TOY) $(EXPERIMENT_ARGS)

test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

# The everyday tier (tests/README.md): no subprocess or mpirun, no root, no training.
FAST := not procs and not root and not train
test-fast: setup
	$(PY) -m pytest tests -m "$(FAST)" $(PYTEST_ARGS)

# Rewrite the stored loss curve from a fresh run (tests/README.md, "The stored loss curve").
golden-update: setup
	$(PY) -m pytest tests/test_loss_curve.py --golden-update -k repeats_the_stored_loss_curve
	@echo "rewrote tests/golden/cpu_demo_1rank/loss_curve.jsonl: review the diff before committing"

# What CI runs on the other interpreters the setup accepts (3.9: DALI 1.53, 3.8: DALI 1.35),
# each in its own venv: the DALI and Pillow loaders, a short training run with the trainer's
# one-line errors, a resume. E.g. make test-other-python VENV=.venv39 PYTHON=/path/to/python3.9
OTHER_PYTHON_TESTS ?= tests/test_dali_loader.py tests/test_pil_loader.py tests/test_trainer.py \
	tests/test_resume.py::test_sigkill_mid_epoch_then_resume_ends_bitwise_identical
test-other-python: setup
	$(PY) -m pytest $(OTHER_PYTHON_TESTS) $(PYTEST_ARGS)

bench: bench-comm bench-data

# ImageNet's shape end to end (docs/data.md "At ImageNet's scale"): generates the official
# archives once (~2 GB of tiny images in BENCH_DATA_DIR), prepares, dry-runs, stages across an
# emulated cluster (root). BENCH_DATA_SCALE_ARGS=--small for a quick rehearsal.
BENCH_DATA_DIR ?= runs/bench_data_scale
BENCH_DATA_SCALE_ARGS ?=
bench-data-scale: setup
	$(PY) -m tools.bench_data_scale --dir $(BENCH_DATA_DIR) $(BENCH_DATA_SCALE_ARGS)

bench-comm: setup
	@mkdir -p runs
	$(MPIRUN) -np $(NP) $(PY) tools/bench_comm.py --grid $(GRID) $(BENCH_COMM_ARGS)

# Scale model (scale_model/; its command line is tools/simulate.py). sim-calibrate fits alpha and
# beta on tools/bench_comm.py's JSON lines (make bench-comm writes them) and checks the fit.
SIM_JSON ?= runs/bench_comm.jsonl
simulate: setup
	$(PY) -m tools.simulate paper
	$(PY) -m tools.simulate table
	$(PY) -m tools.simulate plot --out docs/scale_model.png
	$(PY) -m tools.simulate validate --plot docs/scale_model_validation.png

sim-calibrate: setup
	@test -f $(SIM_JSON) || $(MAKE) bench-comm BENCH_COMM_ARGS="--check --json $(SIM_JSON)"
	$(PY) -m tools.simulate fit $(SIM_JSON) --fit-algorithm ring --fit-ranks 4

# GPU owners: a few minutes of real GPU work, a verdict per item (docs/gpu.md).
gpu-selfcheck: setup
	bash tools/gpu_selfcheck.sh

# The emulated cluster (docs/emulated_cluster.md; needs root). MINICLUSTER_NAME picks
# another cluster than the default "mc".
CLUSTER_NODES ?= 4
CLUSTER_RAILS ?= 2
CLUSTER_RATE ?= 200mbit
CLUSTER_G ?= 2
CLUSTER_OUT ?= runs/cluster
MINICLUSTER := $(PY) -m tools.minicluster
cluster-up: setup
	$(MINICLUSTER) up --nodes $(CLUSTER_NODES) --rails $(CLUSTER_RAILS) --rate $(CLUSTER_RATE)

cluster-down: setup
	$(MINICLUSTER) down

# comm.grid=auto: the trainer finds X = ranks per node and Y = nodes from where its ranks run.
cluster-train: toy-data
	@$(MINICLUSTER) status >/dev/null 2>&1 || { echo "no emulated cluster is up: make cluster-up first" >&2; exit 1; }
	$(MINICLUSTER) run --ranks-per-node $(CLUSTER_G) -- $(abspath $(PY)) train_resnet50.py \
	  --config $(CONFIG) --data-dir $(TOY) --output-dir $(CLUSTER_OUT) --overwrite --set comm.grid=auto

# comm/'s algorithms across 4 emulated nodes x 2 ranks, 2 rails at 200 Mbit/s, rail per rank,
# with Open MPI's default components and with coll/han excluded (tools/cluster_bench.py).
CLUSTER_BENCH_ARGS ?=
cluster-bench: setup
	@mkdir -p runs
	$(PY) -m tools.cluster_bench $(CLUSTER_BENCH_ARGS)

bench-data: toy-data
	$(PY) tools/bench_data.py --toy-dir $(TOY)

clean:
	@$(TOY_GUARD); rm -rf runs "$(TOY)" .pytest_cache
