#!/usr/bin/env bash
# Install packages into a virtual environment with uv: `uv pip install --python PYTHON ARGS...`
#
#   scripts/uv-install.sh PYTHON ARGS...      e.g. scripts/uv-install.sh .venv/bin/python -e .
#
# Why uv: it downloads in parallel and unpacks without byte-compiling. On this project's 2-core
# machine, with a cold cache, it takes a fraction of pip's time for torch and for orchestra's
# dependencies, most of a first `make quickstart` (bench/results/first-run-20261129.md against
# the later first-run-20261129-*.md).
#
# uv itself is installed into the environment on first use (.venv/bin/uv), from PyPI, by a pip:
# the environment's own if it has one, else the system Python's ($BOOTSTRAP_PYTHON, default
# python3; pip >= 22.3 installs into another environment with --python), else the environment's
# ensurepip. `make setup` creates the environment without pip (`venv --without-pip`: 0.5-1 s instead
# of 17-27 s on that machine) and has uv add pip with orchestra's dependencies.
#
# uv reads none of pip's configuration. So that a machine whose pip installs from a local mirror
# or wheel folder (pip.conf, PIP_* variables) installs from the same places under uv, pip's
# index-url, extra-index-url, find-links and constraint settings become UV_* variables, unless
# those are set already; and uv picks the best version across all indexes, as pip does.
set -euo pipefail

PY=$1
shift
VENV=$(cd "$(dirname "$PY")/.." && pwd)
UV=$VENV/bin/uv
BOOTSTRAP_PYTHON=${BOOTSTRAP_PYTHON:-python3}
UV_RANGE="uv>=0.8,<1"

if [[ ! -x $UV ]]; then
    echo "uv-install: installing uv into $VENV (once)" >&2
    if "$PY" -m pip --version >/dev/null 2>&1; then
        "$PY" -m pip install --quiet --no-compile "$UV_RANGE"
    elif "$BOOTSTRAP_PYTHON" -m pip --python "$PY" --version >/dev/null 2>&1; then
        "$BOOTSTRAP_PYTHON" -m pip --python "$PY" install --quiet --no-compile "$UV_RANGE"
    else
        "$PY" -m ensurepip --default-pip >/dev/null
        "$PY" -m pip install --quiet --no-compile "$UV_RANGE"
    fi
    echo "uv-install: $("$UV" --version) installed into $VENV" >&2
fi

# pip's settings, environment variables first (they win in pip too): the first value of a key is kept.
pip_config=$("$PY" -m pip config list 2>/dev/null || "$BOOTSTRAP_PYTHON" -m pip config list 2>/dev/null || true)
while IFS= read -r line; do
    [[ $line == *=* ]] || continue
    key=${line%%=*}
    value=${line#*=}
    value=${value#\'}
    value=${value%\'}
    case ${key##*.} in
        index-url) export UV_INDEX_URL=${UV_INDEX_URL:-$value} ;;
        extra-index-url) export UV_EXTRA_INDEX_URL=${UV_EXTRA_INDEX_URL:-$value} ;;
        find-links) export UV_FIND_LINKS=${UV_FIND_LINKS:-${value// /,}} ;;  # uv: comma-separated
        constraint) export UV_CONSTRAINT=${UV_CONSTRAINT:-$value} ;;
    esac
done <<< "$pip_config"
export UV_INDEX_STRATEGY=${UV_INDEX_STRATEGY:-unsafe-best-match}

exec "$UV" pip install --python "$PY" "$@"
