# One command per chore. `make run` and `make test` work on a fresh clone: they create .venv and install.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# llama-cpp-python is built from source: the default native build uses AMX kernels that this kind of VM
# reports but does not allow (a general-protection fault at the first decode), and AVX-512 kernels crash
# with an illegal instruction on the machines that lack it, so build for AVX2, which all of them have.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
# pip's wheel cache does not know the build flags (a wheel built for other CPU features was reused and
# crashed), so the wheel is built once per set of flags into a folder of its own.
LLAMA_WHEELS := $(HOME)/.cache/obsidian-ai-agent/llama-cpp-$(shell echo '$(CMAKE_ARGS)' | sha256sum | cut -c1-12)

# Models come from installed packages, never from a hub.
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install run test lint bench clean plugin plugin-test

# Coverage of the package in `make test`, in the test process and in the servers and commands it starts
# ([tool.coverage.*] in pyproject.toml); the table of files not fully covered and the total are printed
# after the tests, whether they pass or not. It costs little on in-process tests and a fifth to a half
# more CPU on those that start servers; `make test COV=` runs without it.
COV ?= --cov --cov-report=

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1 || \
		$(BIN)/python -m pip wheel --quiet --no-cache-dir --no-deps -w $(LLAMA_WHEELS) 'llama-cpp-python>=0.3'
	$(BIN)/python -m pip install --quiet $(LLAMA_WHEELS)/llama_cpp_python-*.whl
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Serves the vault in OAA_VAULT (default: the example vault) on 127.0.0.1:8000, indexed first.
run: install
	OAA_VAULT="$${OAA_VAULT:-$(CURDIR)/examples/vault}" OAA_DATA_DIR="$${OAA_DATA_DIR:-$(CURDIR)/data}" \
		$(BIN)/obsidian-ai-agent serve

# bandit: any medium or high finding fails. Each `# nosec` names its test, on SQL built from constants
# (column lists, `?` placeholders) or on the safe YAML loader.
lint: install
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/mypy
	$(BIN)/bandit -q -r src --severity-level medium

test: lint
	command -v redis-server >/dev/null || { S=$$([ "$$(id -u)" = 0 ] || echo sudo); $$S apt-get update -qq && $$S env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }
	command -v promtool >/dev/null || { S=$$([ "$$(id -u)" = 0 ] || echo sudo); $$S apt-get update -qq && $$S env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }
	test -x /usr/bin/chromium || { S=$$([ "$$(id -u)" = 0 ] || echo sudo); $$S apt-get update -qq && $$S env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=30 $(COV); status=$$?; \
		if [ -n "$(COV)" ]; then $(BIN)/python -m coverage report; fi; exit $$status
	$(MAKE) plugin-test

# The Obsidian plugin (plugin/): main.js from the locked dependencies.
plugin:
	cd plugin && npm ci --no-audit --no-fund && npm run build

# Lint, type-check, build and test the plugin; its tests start the real server from .venv (see `install`).
plugin-test: install
	cd plugin && npm ci --no-audit --no-fund && npm run lint && npx tsc --noEmit && npm run build && npm test

bench: install
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* plugin/node_modules plugin/main.js
