# Two set-up commands on a fresh machine (see README): `make demo` and `make test`.
# Both build .venv first: the CPU build of torch 2.13.0, then this package with its dev extra,
# every package at the version requirements.lock names (`make lock` rewrites the lock).
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= ../shared/data
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test lock soak

# the copy of the lock in the venv marks it as installed from that lock (tests/test_environment.py)
LOCK := requirements.lock
$(VENV)/$(LOCK): pyproject.toml $(LOCK)
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0 -c $(LOCK)
	$(BIN)/python -m pip install -q -e ".[dev]" -c $(LOCK)
	cp $(LOCK) $@

install: $(VENV)/$(LOCK)

# the lock: pip's resolution of torch 2.13.0 + pyproject.toml (with the dev extra) in a
# throw-away venv, as a dry run (nothing is installed, so it takes seconds once wheels are cached).
# The current lock constrains it: a new dependency adds its packages and moves no other pin, so
# figures measured with the old lock still describe the same code; `make lock UPGRADE=1` resolves
# every package anew (then re-measure)
lock:
	rm -rf build/lock && python3 -m venv build/lock
	build/lock/bin/python -m pip install -q --dry-run --ignore-installed --report build/lock/report.json torch==2.13.0 -e ".[dev]" \
		$(if $(UPGRADE),,$(if $(wildcard $(LOCK)),-c $(LOCK)))
	python3 -m superpos.environment lock build/lock/report.json > build/lock/$(LOCK)
	mv build/lock/$(LOCK) $(LOCK)

# the offline demo sweep (real MiniLM, real SST-2) into MLflow, then its report;
# a second `make demo` resumes or re-reports instead of starting over
DEMO := runs/demo
DEMO_DB := sqlite:///$(abspath $(DEMO))/mlflow.db
demo: install
	mkdir -p $(DEMO)
	$(BIN)/superpos sweep sweeps/demo_minilm.yaml --data-dir $(DATA_DIR) --storage-path $(DEMO)/ray_results \
		--tracking-uri $(DEMO_DB) $(if $(wildcard $(DEMO)/ray_results/demo_minilm/superpos_sweep.json),--resume)
	$(BIN)/superpos report --tracking-uri $(DEMO_DB) --experiment superpos-demo-minilm --out $(DEMO)/report

# two pytest workers, a test file each at a time (module fixtures stay whole): most of the
# long tests wait on processes, servers and fault holds rather than compute; the slowest tests
# are listed at the end, to see where CI's 30 minutes go
WORKERS ?= 2
test: install
	$(BIN)/pytest -q -n $(WORKERS) --dist loadfile --durations=15

# the chaos soak (docs/reliability.md): a 48-trial sweep on a local 3-node Ray cluster, an MLflow
# server and S3 (moto), under a seeded fault every 1-4 minutes for MINUTES; then superpos audit and
# a bit-for-bit comparison with the fault-free run. Figures in runs/soak-MINUTES/report.json
MINUTES ?= 60
SEED ?= 0
soak: install
	cd tests && $(abspath $(BIN))/python -m soak --minutes $(MINUTES) --seed $(SEED) --work $(abspath runs/soak-$(MINUTES)) --data-dir $(abspath $(DATA_DIR))
