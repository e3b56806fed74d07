#!/usr/bin/env bash
# The README's two commands: `./dev.sh demo` and `./dev.sh test` (plus `./dev.sh bench`).
#
# Each sets up everything it needs on a fresh Debian 12 machine, as root, with nothing but
# bash and python3 installed: the apt packages, a .venv/ in this checkout, the package with its
# test extras. Re-running is fast: apt is skipped when every package is present, pip when
# pyproject.toml has not changed since the last install. Plain bash on purpose: a fresh
# machine may not have make.
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(fuse3 libfuse3-dev pkg-config python3-venv python3-dev gcc rsync curl systemd
              util-linux)
PY=.venv/bin/python

setup() {
    local missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        echo "installing apt packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
    if [[ ! -x $PY ]]; then
        python3 -m venv .venv
    fi
    local stamp=.venv/.installed
    if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
        $PY -m pip install -q --upgrade pip
        $PY -m pip install -q -e '.[test]'
        touch "$stamp"
    fi
}

case "${1:-}" in
    demo)
        setup
        exec $PY -m ossmount demo "${@:2}"
        ;;
    test)
        setup
        .venv/bin/ruff check .
        .venv/bin/ruff format --check .
        .venv/bin/mypy ossmount
        exec $PY -m pytest "${@:2}"
        ;;
    bench)
        setup
        exec $PY bench/run_all.py "${@:2}"
        ;;
    *)
        echo "usage: ./dev.sh demo|test|bench [args]" >&2
        exit 2
        ;;
esac
