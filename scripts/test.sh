#!/usr/bin/env bash
# Runs Syncline's whole test suite on a fresh machine: installs what the tests need, then
# runs every test of the workspace. Used by the README and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build tools the suite needs beyond cargo (none yet beyond a C compiler for ring).
if ! command -v cc >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq build-essential >/dev/null
fi

# Integration tests start servers and many sockets: raise the open-file limit as far as the
# machine allows.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# The Python example channel: its own venv, generated stubs and pytest suite.
examples/python-channel/run-tests.sh -q

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  cargo test --workspace --locked --no-fail-fast "$@"
fi
