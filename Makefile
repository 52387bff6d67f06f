# condor-cloud: the commands a newcomer needs (run as root on Debian 12).
.PHONY: demo test unit-test lint testbed-up testbed-down bench bench-quick packages

# The cloud on this machine: the testbed plus the API at http://localhost:3002/api.
demo:
	testbed/demo

# Which HTCondor the testbed runs: 23 (Debian 13, what CI runs) or 25 (Debian unstable).
CONDOR_SERIES ?= 23
export CONDOR_SERIES
# The test virtualenv's python (testbed/host-setup builds it and prints its
# path), looked up once per make run and only by the targets that use it.
PYTHON = $(eval PYTHON := $(or $(shell CONDOR_SERIES=$(CONDOR_SERIES) testbed/host-setup),\
  $(error testbed/host-setup failed: see the lines above)))$(PYTHON)

testbed-up:
	testbed/up

testbed-down:
	testbed/down

# The linters, unit tests, then integration tests on the real testbed (brought
# up by the test session itself), then testbed teardown checks.
test: lint
	$(PYTHON) -m pytest -ra $(PYTEST_ARGS)

# ruff and mypy (strict) over the project's Python, shellcheck over its bash.
SHELL_SCRIPTS = testbed/lib.sh $(shell grep -lE '^\#!(/usr/bin/env (bash|sh)|/bin/(ba)?sh)' \
  testbed/* packaging/* tests/packaging/* .ci/* 2>/dev/null)
lint:
	$(PYTHON) -m ruff check src tests bench
	$(PYTHON) -m mypy
	$(dir $(PYTHON))shellcheck -x $(SHELL_SCRIPTS)

unit-test:
	$(PYTHON) -m pytest -ra tests/unit $(PYTEST_ARGS)

# Launch latency next to its floor, image size, a burst, every instance slot launched
# at once next to as many virsh creates, per-instance overhead, the API with 10,000
# queued instances, create throughput, the negotiation cycle and time to a match with
# 10,000 idle instances and 200 synthetic nodes (bench/run.py); bench-quick is the
# same table with 1,000 queued instances and 200 creates.
bench:
	$(PYTHON) bench/run.py

bench-quick:
	$(PYTHON) bench/run.py --quick

# condor-cloud and condor-cloud-node as RPMs (with the source RPM) and as
# Debian 13 packages, into PACKAGES_DIR (packaging/build).
PACKAGES_DIR = dist
packages:
	packaging/build $(PACKAGES_DIR)
