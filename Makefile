# condor-cloud: the commands a newcomer needs (run as root on Debian 12).
.PHONY: demo test unit-test testbed-up testbed-down bench packages

# The cloud on this machine: the testbed plus the API at http://localhost:3002/api.
demo:
	testbed/demo

# Which HTCondor the testbed runs: 23 (Debian 13, what CI runs) or 25 (Debian unstable).
CONDOR_SERIES ?= 23
export CONDOR_SERIES
PYTHON = $(shell CONDOR_SERIES=$(CONDOR_SERIES) testbed/host-setup)

testbed-up:
	testbed/up

testbed-down:
	testbed/down

# Unit tests, then integration tests on the real testbed (brought up by the
# test session itself), then testbed teardown checks.
test:
	$(PYTHON) -m pytest -ra $(PYTEST_ARGS)

unit-test:
	$(PYTHON) -m pytest -ra tests/unit $(PYTEST_ARGS)

# Launch latency next to its floor, image size, a burst, API scale (bench/run.py).
bench:
	$(PYTHON) bench/run.py

# condor-cloud and condor-cloud-node as RPMs (with the source RPM) and as
# Debian 13 packages, into PACKAGES_DIR (packaging/build).
PACKAGES_DIR = dist
packages:
	packaging/build $(PACKAGES_DIR)
