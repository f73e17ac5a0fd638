# The only commands you need:  make serve  ·  make test
# Everything else (bench, offline, lint) is optional.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch is installed only when the virtual environment has no torch yet; install
# your own build first (CUDA, ROCm, macOS) to keep it — see README "Choosing your torch build".
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
STAMP := $(VENV)/.installed
export NO_MKDOCS_2_WARNING := 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup serve test build offline bench lint browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt pyproject.toml | $(BIN)/python
	@$(BIN)/python -c "import torch" 2>/dev/null || \
	  $(BIN)/python -m pip install $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps -e . --config-settings editable_mode=compat
	@touch $(STAMP)

setup: $(STAMP)  ## create .venv and install everything

serve: setup  ## serve the site with live reload at http://127.0.0.1:8000
	$(BIN)/python -m mkdocs serve -a 127.0.0.1:8000

browser:  ## make sure Debian's Chromium (and a CJK font) is installed for the browser tests
	@if [ ! -x /usr/bin/chromium ]; then \
	  echo "Installing Debian's chromium and fonts-wqy-microhei for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium fonts-wqy-microhei; \
	fi

test: setup browser  ## run every test: snippets, CLI, page code blocks, site build, browser
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest

build: setup  ## build the site into site/
	$(BIN)/python -m mkdocs build --strict

offline: setup  ## build a copy that works from file:// into site-offline/ (open site-offline/index.html)
	OFFLINE=true $(BIN)/python -m mkdocs build --strict -d site-offline

bench: setup  ## measure build and test times; writes reports/bench.md
	$(BIN)/python tools/bench.py

lint: setup
	$(BIN)/python -m ruff check .

clean:
	rm -rf site site-offline .cache reports
