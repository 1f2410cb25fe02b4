# The two commands a newcomer needs (see README.md):
#   make up     install, then run `groundplane up` on the embedded default scenario
#   make test   install (system daemons too), then run every check and test
# After either, .venv/bin/groundplane is the CLI.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: up test check lint typecheck proto system-deps

$(STAMP): pyproject.toml | system-deps
	test -x $(VENV)/bin/pip || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Mosquitto (the broker the tests start on free ports), Hamlib's rotctld/rigctld (the HIL tests
# drive the real dummy daemons), Chromium (the dashboard test drives Debian's browser through
# Playwright; nothing is downloaded) and, on Debian's own Python, venv support (python3-venv).
# Installed from Debian's packages when missing.
system-deps:
	@missing=""; \
	command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v rotctld >/dev/null 2>&1 || missing="$$missing libhamlib-utils"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	$(PYTHON) -c 'import ensurepip' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

up: $(STAMP)
	$(VENV)/bin/groundplane up

proto: $(STAMP)
	$(VENV)/bin/python proto/generate.py

lint: $(STAMP)
	$(VENV)/bin/python proto/generate.py --check
	cd proto && ../$(VENV)/bin/buf lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: $(STAMP) lint typecheck
	$(VENV)/bin/pytest
