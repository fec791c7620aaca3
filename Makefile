# The two commands of the quick start are `make demo` and `make test`; both install what they need.
SHELL := /bin/bash
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMPS := build/stamps
OUT ?= out

.PHONY: all deps demo demo-down test lint unit bench clean

all: test

$(STAMPS)/apt: apt-packages.txt scripts/apt-install
	scripts/apt-install apt-packages.txt
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/venv: pyproject.toml $(STAMPS)/apt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -U pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	@mkdir -p $(STAMPS) && touch $@

deps: $(STAMPS)/venv

# The lab (root): namespaces, two LB hosts as systemd containers provisioned by
# ansible-playbook -i inventories/lab playbooks/site.yml, then requests through the VIPs.
demo: deps
	$(BIN)/appliance lab demo

demo-down: deps
	$(BIN)/appliance lab down

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: deps
	$(BIN)/pytest -q tests/unit

# Every suite: unit, and those that need root and namespaces (they skip, saying why, only
# where their prerequisite cannot exist).
test: deps lint
	@mkdir -p $(OUT)
	$(BIN)/pytest -q tests --junitxml=$(OUT)/junit.xml

bench: deps
	@for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf build $(OUT) .pytest_cache .mypy_cache .ruff_cache
