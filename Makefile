# Every target sets up what it needs: a virtualenv in .venv with a Python >= 3.12 found by
# .ci/find-python.sh, and this package installed in it (editable) with its test tools.
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
SIDECAR_PORT ?= 5000

.PHONY: run test lint clean

run: $(INSTALLED)  ## the sidecar on :$(SIDECAR_PORT) with config.yaml and two demo destinations
	PATH="$(CURDIR)/$(BIN):$$PATH" SIDECAR_PORT=$(SIDECAR_PORT) sh example/run-demo.sh

test: $(INSTALLED)  ## the whole test suite, with coverage of the package
	$(BIN)/python -m pytest --cov --cov-report=term $(PYTEST_ARGS)

lint: $(INSTALLED)  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

$(INSTALLED): pyproject.toml
	@python=$$(sh .ci/find-python.sh) || exit 1; \
	  echo "using $$python"; "$$python" -m venv --clear $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage build addons/*.egg-info
