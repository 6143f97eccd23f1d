#!/usr/bin/env bash
# Property-based test of the admin API (issue 15): starts the syncline binary on a fresh data
# directory (sources Account and Contact, loopback ports), makes an admin API token, and runs
# schemathesis against the server's own OpenAPI document: no 5xx and no response that breaks
# the document's schemas or content types. Bounded in time (a few examples per operation,
# --max-time). Revoking tokens is left out (the run would revoke its own token once a
# listing shows its id); tests/tests/e2e/admin_api.rs covers it. Creates the venv .venv/ here if missing and installs requirements.txt (pinned,
# with hashes). SYNCLINE_BIN names the binary (default: target/debug/syncline of the
# workspace, which must be built). Extra arguments go to schemathesis.
set -euo pipefail
cd "$(dirname "$0")"
root="$(cd ../.. && pwd)"
bin="${SYNCLINE_BIN:-$root/target/debug/syncline}"
[ -x "$bin" ] || { echo "build the server first: cargo build -p syncline-server --bin syncline" >&2; exit 1; }

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
      || "$PYTHON" -m pip install -q --disable-pip-version-check --user --break-system-packages virtualenv
    "$PYTHON" -m virtualenv -q .venv
  fi
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements.txt

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

admin_port="$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat >"$work/syncline.toml" <<TOML
data_dir = "$work/data"
[device]
addr = "127.0.0.1:0"
[grpc]
addr = "127.0.0.1:0"
[admin]
addr = "127.0.0.1:$admin_port"
[sources.Account]
partitioning = "app"
[sources.Contact]
partitioning = "user"
TOML
# The variables the server would refuse (unknown SYNCLINE_*) are not passed on.
run_syncline() { env -u SYNCLINE_ADMIN_TOKEN -u SYNCLINE_ADMIN_ADDR "$bin" "$@" --config "$work/syncline.toml"; }
token="$(run_syncline admin token create --name schemathesis --role admin)"

SYNCLINE_LOG_FORMAT=json RUST_LOG=warn,syncline_server=info "$bin" serve --config "$work/syncline.toml" \
  >"$work/server.out" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 1 600); do
  grep -q "admin endpoint listening" "$work/server.log" 2>/dev/null && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.1
done
grep -q "admin endpoint listening" "$work/server.log" || { echo "the server did not start" >&2; exit 1; }

status=0
.venv/bin/schemathesis run "http://127.0.0.1:$admin_port/v1/admin/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,response_schema_conformance,content_type_conformance \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-15}" --max-time "${SCHEMATHESIS_MAX_TIME:-120}" \
  --exclude-path-regex '^/v1/admin/tokens/\{id\}$' \
  --workers 1 --seed 15 --generation-database none --no-color "$@" || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- server log (last lines) ---" >&2
  tail -n 40 "$work/server.log" >&2
fi
exit "$status"
