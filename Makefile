# Every target sets up what it needs: a virtualenv in .venv with a Python >= 3.12 found by
# .ci/find-python.sh, and this package installed in it (editable) with its test tools.
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
SIDECAR_PORT ?= 5000

.PHONY: run test test-fast test-reliability soak lint bench bench-docs clean system-packages

run: $(INSTALLED)  ## the sidecar on :$(SIDECAR_PORT) with config.yaml and two demo destinations
	PATH="$(CURDIR)/$(BIN):$$PATH" SIDECAR_PORT=$(SIDECAR_PORT) sh example/run-demo.sh

test: $(INSTALLED)  ## the whole test suite, with coverage of the package
	$(BIN)/python -m pytest --cov --cov-report=term $(PYTEST_ARGS)

test-fast: $(INSTALLED)  ## the tests without processes or sockets (not marked spawns); for the inner loop
	$(BIN)/python -m pytest -q -m "not spawns" $(PYTEST_ARGS)

test-reliability: $(INSTALLED)  ## hostile clients, broken destinations, the soak (both engines)
	$(BIN)/python -m pytest -q -m reliability $(PYTEST_ARGS)

soak: $(INSTALLED)  ## the soak alone, longer: SOAK_REQUESTS (default 200000) per engine
	SOAK_REQUESTS=$${SOAK_REQUESTS:-200000} $(BIN)/python -m pytest -q -s --timeout=0 \
	  tests/integration/test_soak.py $(PYTEST_ARGS)

bench: $(INSTALLED)  ## the benchmark suite against its peers (~35-40 min); BENCH_ARGS=--quick for a smoke
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-docs: $(INSTALLED)  ## the README's and docs/performance.md's summary, from bench/results/latest.json
	$(BIN)/python bench/run.py render bench/results/latest.json --docs

lint: $(INSTALLED)  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

$(INSTALLED): pyproject.toml
	@python=$$(sh .ci/find-python.sh) || exit 1; \
	  echo "using $$python"; "$$python" -m venv --clear $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,deploy]'
	touch $@

# Real programs the end-to-end tests drive (Debian packages; needs root): nginx for the
# enricher pod and the benchmark, Chromium and its driver for mitmweb's UI, wrk and HAProxy
# (a peer, run in the foreground by the benchmark; its service is never started) for the
# benchmark's smoke test, Prometheus and promtool for the metrics and alerting rules.
# `make test` fails on CI without them.
SYSTEM_PACKAGES := nginx-light chromium chromium-driver wrk prometheus haproxy
system-packages:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null \
	  | grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage build addons/*.egg-info
