# The two commands of the quick start are `make demo` and `make test`; both install what they need.
SHELL := /bin/bash
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMPS := build/stamps
OUT ?= out
# Versions come from uv.lock (every Python dependency, runtime and dev, with hashes) and
# nowhere else; uv itself from requirements/uv.txt, also hashed. `make lock` refreshes both.
TOOLS := build/tools
UV := $(TOOLS)/bin/uv
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never
# The machine's pip config (find-links, constraints, extra indexes) is not the lock's.
BOOTSTRAP_PIP := PIP_CONFIG_FILE=/dev/null $(TOOLS)/bin/pip install -q --disable-pip-version-check

.PHONY: all deps dist demo demo-down test lint lock unit bench clean

all: test

$(STAMPS)/apt: apt-packages.txt scripts/apt-install
	scripts/apt-install apt-packages.txt
	@mkdir -p $(STAMPS) && touch $@

$(UV): requirements/uv.txt $(STAMPS)/apt
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(BOOTSTRAP_PIP) --require-hashes --no-deps -r requirements/uv.txt
	@touch $@

# Exactly the lock (hashes checked; packages the lock does not name are removed), the
# project itself editable. A lock that disagrees with pyproject.toml fails `make lint`.
$(STAMPS)/venv: uv.lock pyproject.toml $(UV)
	$(UV) sync -q --frozen --extra dev
	@mkdir -p $(STAMPS) && touch $@

deps: $(STAMPS)/venv

# What the appliance role installs on LB hosts: the wheel, the lock's runtime part with
# hashes (requirements.txt) and its wheels, in build/dist.
dist: deps
	$(BIN)/python -c 'import pathlib, appliance.lab.image as i; print(i.wheels(pathlib.Path("build/dist")))'

# The lab (root): namespaces, two LB hosts as systemd containers provisioned by
# ansible-playbook -i inventories/lab playbooks/site.yml, then requests through the VIPs.
demo: deps
	$(BIN)/appliance lab demo

demo-down: deps
	$(BIN)/appliance lab down

lint: deps
	@scripts/lock-check $(UV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# On purpose only: re-resolve every dependency to the newest allowed, and uv itself.
lock: $(UV)
	$(UV) lock --upgrade
	echo 'uv' | $(UV) pip compile -q --universal --generate-hashes --no-header \
	  --python-version 3.11 - -o build/uv.txt
	{ sed -n '/^#/p' requirements/uv.txt; cat build/uv.txt; } > requirements/uv.txt.new
	mv requirements/uv.txt.new requirements/uv.txt

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
