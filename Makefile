# mlpipe developer tasks. Each target installs what it needs first, is safe to run twice, and keeps
# stamp files so a second run only does what changed. `make help` lists the targets.
#
# The environment of every Airflow/mlpipe command (AIRFLOW_HOME, MLPIPE_HOME, DAG and plugin
# folders, PYTHONPATH, ...) is defined once, in scripts/env.sh; recipes source it through $(ENV)
# and .venv/bin/activate sources it too, so a shell and `make` see the same settings.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --no-print-directory

PYTHON ?= python3.11
UV_VERSION := 0.13.9
VENV := $(CURDIR)/.venv
VENV_PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
export PATH := $(VENV)/bin:$(PATH)

ENV_SH := $(CURDIR)/scripts/env.sh
ENV := . $(ENV_SH) &&
# Read the homes back from env.sh so stamps land where the commands write (MLPIPE_KEEP_ENV=1 moves them).
AIRFLOW_HOME := $(shell . $(ENV_SH) && echo "$$AIRFLOW_HOME")
MLPIPE_HOME := $(shell . $(ENV_SH) && echo "$$MLPIPE_HOME")

# uv is bootstrapped inside the venv with pip (a fresh machine has no uv); `uv pip sync` keeps it.
ENSURE_UV = if [ "$$("$(UV)" --version 2>/dev/null | cut -d' ' -f2)" != "$(UV_VERSION)" ]; then \
	echo "Installing uv $(UV_VERSION) into .venv"; \
	"$(VENV_PY)" -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"; fi

SYNC_STAMP := $(VENV)/.mlpipe-synced
AIRFLOW_DB := $(AIRFLOW_HOME)/airflow.db
SOURCE_DB := $(MLPIPE_HOME)/source.db
ACTIVATE_HOOK := MLPIPE_REPO_ROOT="$(CURDIR)" . "$(ENV_SH)"  \# mlpipe environment, added by make setup

DEMO_PIPELINE := flights_delay
DEMO_DAG := $(DEMO_PIPELINE)_train
UI_PORT = $${AIRFLOW__API__PORT:-8080}
PASSWORDS_FILE = $${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-$(AIRFLOW_HOME)/simple_auth_manager_passwords.json.generated}

PYTEST_ARGS ?=

.PHONY: help setup venv activate-hook airflow-cfg demo test ui bench lint lock compose-tool compose-config browser-tool mysql-build-deps clean

help:
	@echo "make setup           .venv from requirements.lock (uv), .airflow/ metadata DB, demo data in .mlpipe/"
	@echo "make demo            airflow dags test $(DEMO_DAG), then a summary of the run"
	@echo "make test            lint-imports, ruff check, pytest (PYTEST_ARGS='-k x -m \"not slow\"' passes options)"
	@echo "make ui              the demo trained (once), then airflow standalone on http://localhost:8080 (prints the login)"
	@echo "make bench           python -m bench"
	@echo "make lint            ruff check, ruff format --check, lint-imports"
	@echo "make lock            recompile requirements.lock from requirements-dev.txt with uv"
	@echo "make compose-config  validate docker-compose.yaml (installs Debian docker-compose when root)"
	@echo "make browser-tool    Debian chromium for the browser tests (installs it when root)"
	@echo "make clean           remove .venv .airflow .mlpipe and caches"
	@echo "Then: source .venv/bin/activate  (sets AIRFLOW_HOME etc. via scripts/env.sh)"

# --- environment -----------------------------------------------------------------------------

setup: venv $(AIRFLOW_DB) airflow-cfg $(SOURCE_DB)

venv: $(SYNC_STAMP) activate-hook

$(VENV_PY):
	$(PYTHON) -m venv "$(VENV)"

# Re-synced whenever the lock changes; `uv pip sync` also removes what the lock no longer lists,
# mlpipe itself included, so the project is installed again after every sync: editable (the code
# stays in plugins/mlpipe), without dependencies (the lock has them) and built with the lock's
# setuptools (no build isolation: nothing is downloaded). That gives .venv/bin/mlpipe and
# `.venv/bin/python -m mlpipe` without activation.
# The packages' bytecode is compiled once here, as in the Dockerfile: where PYTHONDONTWRITEBYTECODE is
# set, Python would otherwise compile Airflow, pandas, scikit-learn and GX from source in every
# process (every task, every `airflow dags test`): 23 s instead of 10 s to import them on 2 cores.
$(SYNC_STAMP): requirements.lock pyproject.toml | $(VENV_PY) mysql-build-deps
	@$(ENSURE_UV)
	"$(UV)" pip sync --compile-bytecode --python "$(VENV_PY)" requirements.lock
	"$(UV)" pip install --quiet --no-deps --no-build-isolation --editable "$(CURDIR)" --python "$(VENV_PY)"
	@touch "$@"

# `source .venv/bin/activate` then gives the same environment as the recipes; appended once.
activate-hook: | $(VENV_PY)
	@grep -qF '$(ENV_SH)' "$(VENV)/bin/activate" || { \
		printf '\n%s\n' '$(ACTIVATE_HOOK)' >> "$(VENV)/bin/activate"; \
		echo "Hooked scripts/env.sh into .venv/bin/activate"; }

# airflow.db is the stamp: deleting it, or a lock change (new Airflow), migrates again.
$(AIRFLOW_DB): $(SYNC_STAMP)
	@mkdir -p "$(AIRFLOW_HOME)"
	@echo "airflow db migrate (log: $(AIRFLOW_HOME)/db-migrate.log)"
	@$(ENV) airflow db migrate > "$(AIRFLOW_HOME)/db-migrate.log" 2>&1 || { \
		tail -n 30 "$(AIRFLOW_HOME)/db-migrate.log"; echo "airflow db migrate failed" >&2; exit 1; }
	@touch "$@"

# The airflow.cfg Airflow generates points at .airflow/dags and .airflow/plugins; the environment
# overrides it, but a process given only AIRFLOW_HOME (a script, an IDE, a hook) reads the file, so
# it names this checkout's folders too. Idempotent, so it runs on every setup.
airflow-cfg: $(AIRFLOW_DB)
	@sed -i -E \
		-e 's|^dags_folder = .*|dags_folder = $(CURDIR)/dags|' \
		-e 's|^plugins_folder = .*|plugins_folder = $(CURDIR)/plugins|' \
		-e 's|^load_examples = .*|load_examples = False|' \
		"$(AIRFLOW_HOME)/airflow.cfg"

# The seed command is idempotent; its output file is the stamp. A change to the bundled datasets
# seeds again, and so does a change to the demo's tables (a source.db made before them gets their tables,
# e.g. the weather; the flights are kept).
$(SOURCE_DB): plugins/mlpipe/datasets.py plugins/mlpipe/demo.py | $(SYNC_STAMP)
	$(ENV) python -m mlpipe demo seed
	@test -f "$@" || { echo "python -m mlpipe demo seed did not create $@" >&2; exit 1; }
	@touch "$@"

# --- running ---------------------------------------------------------------------------------

# The full Airflow log goes to a file; the terminal gets one line per task state and the verdict.
demo: setup
	@$(ENV) log="$(AIRFLOW_HOME)/demo-$(DEMO_DAG).log"; \
	echo "airflow dags test $(DEMO_DAG)   (full log: $$log)"; \
	if ! PYTHONUNBUFFERED=1 airflow dags test $(DEMO_DAG) 2>&1 | tee "$$log" | sed -nE \
		-e 's/.*\[DAG TEST\] starting task_id=([^ ]+).*/  task \1 .../p' \
		-e 's/.*Task instance state updated.* new_state=([a-z_]+).*/      \1/p' \
		-e '/^[^ ]+ \[(error|critical) *\]/{s/^[^ ]+ \[[a-z]+ *\] +//; s/ +\[[A-Za-z0-9_.]+\] +loc=.*//; s/^/  error: /p;}' \
		-e 's/^([A-Za-z_][A-Za-z0-9_.]*(Error|Exception): .*)/    \1/p' \
		-e 's/.*DagRun Finished: dag_id=([^,]+),.* run_duration=([0-9.]+),.* state=([a-z_]+),.*/  dag run \1: \3 (\2 s)/p'; \
	then \
		echo "$(DEMO_DAG) failed; full log: $$log" >&2; exit 1; \
	fi
	@$(ENV) python -m mlpipe demo summary $(DEMO_PIPELINE)

test: venv
	$(ENV) lint-imports
	$(ENV) ruff check .
	$(ENV) python -m pytest $(PYTEST_ARGS)

# The port is checked first: a port in use would otherwise show only deep in standalone's output.
# scripts/env.sh derives the base URL and the execution API's URL from AIRFLOW__API__PORT, so the
# tasks of `AIRFLOW__API__PORT=18080 make ui` call the API server where it listens.
# The demo is trained first when the registry has no champion yet, so the Models view has something to
# show. The simple auth manager keeps generated passwords in $AIRFLOW_HOME/simple_auth_manager_passwords
# .json.generated and prints one only when it first creates it; `airflow standalone` says "previously
# generated, not echoing" after that. So create it here the same way standalone does, then print it.
ui: setup
	@$(ENV) python "$(CURDIR)/scripts/port_free.py" "$(UI_PORT)"
	@$(ENV) python -m mlpipe registry champion $(DEMO_PIPELINE) >/dev/null 2>&1 || { \
		echo "No $(DEMO_PIPELINE) champion yet: training the demo first"; $(MAKE) demo; }
	@$(ENV) python -c 'from airflow.api_fastapi.app import create_auth_manager; create_auth_manager().init()' >/dev/null
	@$(ENV) echo "Airflow UI: http://localhost:$(UI_PORT)   user: admin   password: $$(python -c \
		'import json, sys; print(json.load(open(sys.argv[1]))["admin"])' "$(PASSWORDS_FILE)")   (from $(PASSWORDS_FILE))"
	@echo "Models view: http://localhost:$(UI_PORT)/plugin/models   (the Models entry of the navigation)"
	$(ENV) exec airflow standalone

bench: venv
	$(ENV) python -m bench

# --- maintenance -----------------------------------------------------------------------------

lint: venv
	$(ENV) ruff check .
	$(ENV) ruff format --check .
	$(ENV) lint-imports

# Same command as the header of requirements.lock; existing pins are kept unless a change needs new ones.
lock: | $(VENV_PY)
	@$(ENSURE_UV)
	"$(UV)" pip compile --quiet --python-version 3.11 requirements-dev.txt -o requirements.lock

# Debian's docker-compose (v1) validates compose files without a Docker engine.
compose-tool:
	@command -v docker-compose >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then \
			echo "Installing Debian package docker-compose"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; \
		else \
			echo "docker-compose is missing: sudo apt-get install docker-compose" >&2; exit 1; \
		fi; }

# .env when there is one, else the committed example, for the ${...} of the compose file.
compose-config: compose-tool
	@env_file=$$([ -f .env ] && echo .env || echo .env.example); \
	docker-compose --env-file "$$env_file" -f docker-compose.yaml config -q && \
	echo "docker-compose.yaml is valid (env: $$env_file)"

# mysqlclient (the MySQL provider's driver) has no Linux wheel: it builds against Debian's libmariadb-dev
# (headers, mariadb_config) with pkg-config and a C compiler. Installed when root, like chromium below.
mysql-build-deps:
	@{ command -v mariadb_config || command -v mysql_config; } >/dev/null 2>&1 && command -v pkg-config >/dev/null 2>&1 \
		&& command -v cc >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then \
			echo "Installing Debian packages libmariadb-dev pkg-config gcc (to build mysqlclient)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
				libmariadb-dev pkg-config gcc libc6-dev >/dev/null; \
		else \
			echo "mysqlclient needs: sudo apt-get install libmariadb-dev pkg-config gcc" >&2; exit 1; \
		fi; }

# Debian's chromium, which the browser tests drive headless through Playwright (no browser download).
browser-tool:
	@test -x /usr/bin/chromium || { \
		if [ "$$(id -u)" = 0 ]; then \
			echo "Installing Debian package chromium"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
				chromium fonts-liberation >/dev/null; \
		else \
			echo "chromium is missing: sudo apt-get install --no-install-recommends chromium" >&2; exit 1; \
		fi; }

clean:
	rm -rf "$(CURDIR)/.venv" "$(CURDIR)/.airflow" "$(CURDIR)/.mlpipe" "$(CURDIR)/.pytest_cache" "$(CURDIR)/.ruff_cache" "$(CURDIR)/.import_linter_cache" "$(CURDIR)/tests/out"
