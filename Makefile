# llmeval: install, test, check, demo, campaigns.
#   make demo     install into .venv and run a real evaluation on the CPU
#   make test     install into .venv and run the test suite
#   make check    lint (ruff) + types (mypy) + tests
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.llmeval-installed
# llama.cpp's server for the openai-backend tests; a portable build (the native one
# segfaults on some CPUs, see docs), compiled once (~6 min on 2 cores).
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

.PHONY: campaign install install-server install-system test test-fast check lint types demo clean bench

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet 'torch==2.13.0' || $(PIP) install --quiet 'torch>=2.1,<=2.14.1'
	$(PIP) install --quiet -e '.[hf,dev]'
	touch $@

install: $(STAMP)

install-server: $(STAMP)
	$(PY) -c 'import llama_cpp.server' 2>/dev/null || \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install --quiet --no-cache-dir 'llama-cpp-python[server]'

# Debian packages the tests drive for real (tmux for eval-monitor's terminal test); as root only.
install-system:
	@command -v tmux >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && apt-get install -y -qq --no-install-recommends tmux >/dev/null) || \
	  echo "tmux not installed: the terminal test of eval-monitor will be skipped"; }

test: install install-server install-system
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m 'not slow and not slurm'

lint: install
	$(PY) -m ruff check llmeval tests bench

types: install
	$(PY) -m mypy llmeval

check: lint types test

bench: install
	for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache

demo: install
	$(VENV)/bin/eval-resolve humaneval --limit 4 | $(VENV)/bin/eval-generate --model gemma3-270m --max-tokens 64 --progress

# A campaign locally, model by model; make's own dependency tracking (step stamps) lets an
# interrupted run resume where it stopped:  make campaign CAMPAIGN=campaigns/demo.toml
campaign: install
	@test -n "$(CAMPAIGN)" || { echo "usage: make campaign CAMPAIGN=campaigns/NAME.toml [OUTPUT=results]" >&2; exit 2; }
	@mk=$$($(VENV)/bin/eval-campaign makefile $(CAMPAIGN) $(if $(OUTPUT),--output $(OUTPUT))) && $(MAKE) -f $$mk
