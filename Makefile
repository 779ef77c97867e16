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
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/superpos train --model minilm --task sst2 --method superpos --no-dropout \
		--max-train-examples 16000 --epochs 1 --eval-every 100 \
		--data-dir $(DATA_DIR) --out runs/demo_sst2_superpos --overwrite

test: install
	$(BIN)/pytest -q
