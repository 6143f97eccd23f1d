#!/usr/bin/env bash
# Tests the Python example channel on a machine with Python 3.11 and pip: creates the venv
# .venv/ here if missing, installs requirements.txt, generates the stubs into gen/, runs
# pytest. Extra arguments go to pytest. Exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi

venv_ok() { [ -x .venv/bin/python ] && .venv/bin/python -m pip --version >/dev/null 2>&1; }

if ! venv_ok; then
  rm -rf .venv
  if ! "$PYTHON" -m venv .venv; then
    # Debian's python without python3-venv (no ensurepip): fall back to virtualenv.
    rm -rf .venv
    "$PYTHON" -m pip install -q --disable-pip-version-check --user virtualenv \
      || "$PYTHON" -m pip install -q --disable-pip-version-check --user \
           --break-system-packages virtualenv
    "$PYTHON" -m virtualenv -q .venv
  fi
fi

.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
PYTHON="$PWD/.venv/bin/python" ./generate.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider test_channel.py "$@"
