# capgate: `make run` starts the service, `make test` runs every check. Both set everything up.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
export CAPGATE_DB ?= .capgate/capgate.db

.PHONY: run test lint typecheck unit bench venv clean browser node pgbouncer

# One stamp per set of extras, each newer than pyproject.toml once installed: `make run` installs only
# what serving needs; `make test` (and lint, typecheck, bench) adds the dev tools and training. The full
# install stamps the serving one too, so `make run` after `make test` installs nothing.
$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	touch $@

$(VENV)/.installed-serve: pyproject.toml | $(VENV)/.created
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-all: pyproject.toml | $(VENV)/.created
	$(PY) -m pip install -q -e '.[dev,train]'
	touch $@ $(VENV)/.installed-serve

venv: $(VENV)/.installed-all

run: $(VENV)/.installed-serve
	@$(PY) -m capgate.quickstart
	$(PY) -m capgate serve

# Debian's chromium for the browser test of the human-solver page (Playwright drives it).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Debian's node and npm for the JavaScript clients' compatibility test (it installs them with npm).
node:
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }

# Debian's PgBouncer, for the test of PostgreSQL behind a transaction pooler (tests/test_pgbouncer.py).
pgbouncer:
	@command -v pgbouncer >/dev/null 2>&1 || PATH="$$PATH:/usr/sbin" command -v pgbouncer >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null; }

lint: venv
	$(VENV)/bin/ruff check capgate tests bench

typecheck: venv
	$(VENV)/bin/mypy

# Two pytest workers per core: about a third of the suite's time is spent waiting on the processes and
# sockets it starts (servers, browsers, npm clients), which the extra workers fill (2 cores: 5 min 15 s
# with two workers, 4 min 05 s with three, 3 min 08 s with four). A test file's tests stay together
# (module fixtures start once); -rs says why any test skipped. Bytecode is written even where the
# machine says not to (PYTHONDONTWRITEBYTECODE): the suite starts some hundred Python processes, and
# each would compile capgate from source again, as each pytest worker would rewrite every test module.
# At most 8: each worker opens its own PostgreSQL connections.
TEST_WORKERS ?= $(shell n=$$(( $$(nproc) * 2 )); echo $$(( n < 8 ? n : 8 )))
unit: venv browser node pgbouncer
	env -u PYTHONDONTWRITEBYTECODE $(VENV)/bin/pytest -q -rs -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile

# mypy (one core, about 20 s from cold) runs beside the suite, in the time the suite waits; its
# report follows the suite's.
test: lint venv
	@$(VENV)/bin/mypy > $(VENV)/mypy.log 2>&1 & types=$$!; \
	$(MAKE) --no-print-directory unit; tests=$$?; \
	wait $$types; typed=$$?; cat $(VENV)/mypy.log; \
	exit $$(( tests || typed ))

bench: venv
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; } || true
	$(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
