# The two commands of the README: `make demo` and `make test`. Both set up everything they need
# on a fresh Debian 12 machine (as root): apt packages, a .venv/ in this checkout, the package.
# Re-running is fast: apt is skipped when the packages are present, pip when pyproject.toml has
# not changed since the last install.

SHELL := /bin/bash
PY := .venv/bin/python
APT_PACKAGES := fuse3 libfuse3-dev pkg-config python3-venv python3-dev gcc rsync curl systemd util-linux

.PHONY: setup demo test lint bench clean

setup: .venv/.installed

.apt-ok:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@touch .apt-ok

.venv/.installed: pyproject.toml .apt-ok
	@test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

demo: setup
	$(PY) -m ossmount demo

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy ossmount

test: lint
	$(PY) -m pytest

bench: setup
	$(PY) bench/run_all.py

clean:
	rm -rf .venv .apt-ok
