# Two set-up commands on a fresh machine (see README): `make demo` and `make test`.
# Both build .venv first: the CPU build of torch 2.13.0, then this package with its dev extra.
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= ../shared/data
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# the offline demo sweep (real MiniLM, real SST-2) into MLflow, then its report;
# a second `make demo` resumes or re-reports instead of starting over
DEMO := runs/demo
DEMO_DB := sqlite:///$(abspath $(DEMO))/mlflow.db
demo: install
	mkdir -p $(DEMO)
	$(BIN)/superpos sweep sweeps/demo_minilm.yaml --data-dir $(DATA_DIR) --storage-path $(DEMO)/ray_results \
		--tracking-uri $(DEMO_DB) $(if $(wildcard $(DEMO)/ray_results/demo_minilm/superpos_sweep.json),--resume)
	$(BIN)/superpos report --tracking-uri $(DEMO_DB) --experiment superpos-demo-minilm --out $(DEMO)/report

test: install
	$(BIN)/pytest -q
