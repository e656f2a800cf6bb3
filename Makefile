# The two commands: `make demo` and `make test`. Both create .venv and install
# what they need; PostgreSQL comes from $DATABASE_URL / $RLS_TENANCY_TEST_DATABASE_URL,
# a Docker engine, local binaries, or (installed here when none of those is at
# hand) the pgserver wheel.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST := $(BIN)/python -m pytest

.PHONY: install demo docs test test-lane-unsigned test-lane-signed test-signed test-sabotage test-oldest test-tools lint format clean bench bench-full bench-smoke soak

# The PostgreSQL major version of the local binaries (for the pgTAP package name).
PG_MAJOR ?= $(shell ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)
PGTAP_PACKAGES := postgresql-$(or $(PG_MAJOR),15)-pgtap libtap-parser-sourcehandler-pgtap-perl
TEST_PACKAGES := $(PGTAP_PACKAGES) pgbouncer

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -c 'from rls_tenancy.testing.server import can_provide; raise SystemExit(not can_provide())' \
		|| $(BIN)/python -m pip install --quiet -e '.[dev,pgserver]'
	touch $@

install: $(STAMP)

demo: $(STAMP)
	PYTHONPATH=examples $(BIN)/python -m saas_demo

# The suite, the suite again against databases that require a signed tenant
# context, then the sabotage runs: with one layer broken on purpose, every
# test marked as guarding that layer must fail (the plugin runs them alone, as
# strict xfails). Two lanes run side by side, each on a PostgreSQL of its own:
# this one's output streams, the signed lane's follows when both are done.
# On a server you name ($RLS_TENANCY_TEST_DATABASE_URL) they run one after the
# other: some tests make roles, which the server's databases share.
# The signed pass leaves out the benchmarks' smoke tests, which measure
# unsigned and signed themselves whatever the suite's setting, and the
# packaging tests, which build the wheel in this tree and sign nothing.
# The signing break runs against databases that require a signed context,
# so that a claim which skips unsigned (the standby's) is broken and seen red.
SIGNED_LOG := $(VENV)/test-signed-lane.log

test: $(STAMP) test-tools
	@if [ -n "$$RLS_TENANCY_TEST_DATABASE_URL" ]; then \
		$(MAKE) --no-print-directory test-lane-unsigned && $(MAKE) --no-print-directory test-lane-signed; \
		exit $$?; \
	fi; \
	echo "test: the signed lane runs beside this one; its output follows at the end ($(SIGNED_LOG))"; \
	$(MAKE) --no-print-directory test-lane-signed >$(SIGNED_LOG) 2>&1 & lane=$$!; \
	$(MAKE) --no-print-directory test-lane-unsigned; unsigned=$$?; \
	wait $$lane; signed=$$?; \
	echo; echo "===== the signed lane ====="; cat $(SIGNED_LOG); \
	echo "test: unsigned lane exit $$unsigned, signed lane exit $$signed"; \
	[ $$unsigned = 0 ] && [ $$signed = 0 ]

test-lane-unsigned: $(STAMP)
	$(PYTEST)
	$(PYTEST) -q -rfE --rls-break=policy
	$(PYTEST) -q -rfE --rls-break=binding

test-lane-signed: $(STAMP)
	$(MAKE) --no-print-directory test-signed
	$(PYTEST) -q -rfE -p no:cacheprovider --rls-break=orm
	RLS_TENANCY_TEST_SIGNED=1 $(PYTEST) -q -rfE -p no:cacheprovider --rls-break=signing

test-signed: $(STAMP) test-tools
	RLS_TENANCY_TEST_SIGNED=1 $(PYTEST) -q -p no:cacheprovider \
		--ignore=tests/package/test_benchmarks.py --ignore=tests/package/test_packaging.py

test-sabotage: $(STAMP)
	$(PYTEST) -q -rfE --rls-break=policy
	$(PYTEST) -q -rfE --rls-break=binding
	$(PYTEST) -q -rfE --rls-break=orm
	RLS_TENANCY_TEST_SIGNED=1 $(PYTEST) -q -rfE --rls-break=signing

# Tools the suite uses beside Python: pgTAP and pg_prove (the SQL tests in
# sql/tests) and PgBouncer (the concurrency suite in transaction pooling).
# Installed from Debian when missing and this is root on Debian; otherwise
# the tests needing them are skipped, and this says so loudly.
test-tools:
	@if command -v pg_prove >/dev/null 2>&1 && ls /usr/share/postgresql/*/extension/pgtap.control >/dev/null 2>&1 \
		&& { command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; }; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing test tools: $(TEST_PACKAGES)"; \
		{ apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(TEST_PACKAGES) >/dev/null; } \
			|| echo "*** could not install $(TEST_PACKAGES): the pgTAP and PgBouncer tests will be SKIPPED. ***"; \
	else \
		echo "*** pgTAP, pg_prove or pgbouncer is missing: the tests needing them will be SKIPPED. ***"; \
		echo "*** Install $(TEST_PACKAGES) (Debian/Ubuntu), or their equivalents otherwise. ***"; \
	fi

# Benchmarks: each cost measured beside a baseline in the same run, written to
# benchmarks/RESULTS.md. `bench` takes a few minutes, `bench-full` longer;
# `bench-smoke` runs every section at toy sizes (tests/package/test_benchmarks.py
# does that in `make test`, asserting nothing about time).
bench: $(STAMP)
	PYTHONPATH=examples $(BIN)/python -m benchmarks --scale quick

bench-full: $(STAMP)
	PYTHONPATH=examples $(BIN)/python -m benchmarks --scale full

bench-smoke: $(STAMP)
	PYTHONPATH=examples $(BIN)/python -m benchmarks --scale smoke --output /tmp/rls-tenancy-bench-smoke.md

# The leak hunts (tests marked soak) with long counts; the figures go to docs/soak.md.
soak: $(STAMP) test-tools
	RLS_TENANCY_SOAK=1 RLS_TENANCY_FIGURES=docs/soak.md $(PYTEST) -m soak -o timeout=3600

# The suite on the lowest dependency versions pyproject.toml allows.
test-oldest:
	$(PYTHON) -m venv .venv-oldest
	.venv-oldest/bin/python -m pip install --quiet --upgrade pip
	.venv-oldest/bin/python -m pip install --quiet -c .ci/oldest.txt -e '.[dev]'
	.venv-oldest/bin/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(MAKE) --no-print-directory docs

# The documentation site from docs/ (MyST Markdown, the API reference from the
# docstrings), warnings as errors: a broken link or include fails the build.
docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .venv-oldest docs/_build .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist
