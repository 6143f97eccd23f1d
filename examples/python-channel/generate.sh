#!/usr/bin/env bash
# Generates the Python gRPC stubs of the syncline.v1 contract from the repo's proto/ into
# gen/ (git-ignored). Needs grpcio-tools: run it with the venv's python on PATH, or set
# PYTHON to an interpreter that has it (run-tests.sh does this).
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  PYTHON=python3
fi

rm -rf gen
mkdir -p gen
"$PYTHON" -m grpc_tools.protoc -I ../../proto --python_out=gen --grpc_python_out=gen \
  ../../proto/syncline/v1/*.proto
