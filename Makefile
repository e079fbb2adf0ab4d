# leadflow: `make run` (pipeline on the bundled samples) and `make test` (the whole suite).
VENV ?= .venv
PY := $(VENV)/bin/python
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: install run test lint pg services bench clean dbt-venv dbt-build

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# dbt in a virtual environment of its own (examples/dbt): its pins never meet Prefect's
DBT_VENV := examples/dbt/.venv
$(DBT_VENV)/.installed: examples/dbt/requirements.txt
	python3 -m venv $(DBT_VENV)
	$(DBT_VENV)/bin/pip install --quiet --disable-pip-version-check -r examples/dbt/requirements.txt
	touch $@

dbt-venv: $(DBT_VENV)/.installed

# dbt build of examples/dbt against a warehouse: LEADFLOW_DBT_DBNAME=… [LEADFLOW_DBT_USER=…]
dbt-build: dbt-venv
	cd examples/dbt && .venv/bin/dbt build --profiles-dir .

run: install
	$(VENV)/bin/leadflow run --config leadflow.yaml

pg:
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && exit 0; sleep 1; done; \
	  echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2; exit 1

# dovecot for the IMAP tests: installed once if missing; the tests start their own instance
# and the system service stays down. Chromium and its driver for the browser tests (console, Data Docs).
# a new machine's package lists may be missing or old: refresh them once if an install fails
APT_INSTALL = sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$$@" >/dev/null 2>&1 || \
  { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$$@" >/dev/null; }' apt
services: pg
	@command -v dovecot >/dev/null || test -x /usr/sbin/dovecot || \
	  $(APT_INSTALL) dovecot-imapd
	@test -x /usr/bin/chromium && test -x /usr/bin/chromedriver || \
	  $(APT_INSTALL) chromium chromium-driver

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# the tests wait on servers, browsers and subprocesses as much as they compute: three workers on
# two cores, a test file per worker (module fixtures are built once)
PYTEST_WORKERS ?= 3
test: install dbt-venv services lint
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=25

# the end-to-end benchmark into a fresh PostgreSQL database: `make bench ROWS=1000000 INCREMENTAL=10000`
ROWS ?= 100000
INCREMENTAL ?= 10000
bench: install pg
	$(PY) benchmarks/pipeline.py --rows $(ROWS) --incremental $(INCREMENTAL)

clean:
	rm -rf $(VENV) .prefect leadflow.db leadflow.db-wal leadflow.db-shm .pytest_cache .mypy_cache .ruff_cache
