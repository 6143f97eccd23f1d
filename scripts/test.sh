#!/usr/bin/env bash
# Runs Syncline's whole test suite on a fresh machine: installs what the tests need, then
# runs every test of the workspace. Used by the README and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build tools the suite needs beyond cargo (none yet beyond a C compiler for ring).
if ! command -v cc >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq build-essential >/dev/null
fi
# The Redis store's tests start their own redis-server (never a shared one).
if ! command -v redis-server >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
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

# The admin API's property-based test: schemathesis (pinned, with hashes, in its own venv)
# against a real server and the OpenAPI document it serves; about two minutes.
cargo build -p syncline-server --bin syncline --locked
tests/admin-api/run-schemathesis.sh

# The TypeScript device library (clients/typescript): dependencies from its lockfile, the
# generated protobuf code checked against proto/, then type check, lint and tests. Its
# end-to-end tests start the server binary built here, in Node and in headless Chromium (they
# fail rather than skip without them).
if ! command -v npm >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
# The library needs Node 20 or later (package.json "engines"); Debian 12's own nodejs is 18,
# so say so plainly rather than fail somewhere inside the tests.
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "Node $(node --version) is too old for clients/typescript: install Node 20 or later" >&2
  exit 1
fi
# Its browser tests drive Debian's Chromium (never a downloaded browser).
if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
cargo build -p syncline-server --bin syncline --locked
(
  cd clients/typescript
  npm ci --no-audit --no-fund
  npm run generate
  git diff --exit-code -- src/gen || { echo "clients/typescript/src/gen is out of date: run npm run generate" >&2; exit 1; }
  npm run typecheck
  npm run lint
  SYNCLINE_E2E_REQUIRED=1 SYNCLINE_BROWSER_REQUIRED=1 npm test
)

# The web console (server/console): its files are plain ES modules embedded in the binary;
# type check (checkJs), lint, and its browser tests in headless Chromium against the server
# built above (they use the TypeScript library's test helpers, installed just before).
(
  cd server/console
  npm ci --no-audit --no-fund
  npm run typecheck
  npm run lint
  SYNCLINE_BROWSER_REQUIRED=1 npm test
)

# The fuzz targets of push/fuzz, briefly, over their committed corpora: a change that makes the
# frame decoder or the session loop panic on a known input fails here, and a little new ground
# is covered each run. Long runs are separate (push/fuzz/README.md). cargo-fuzz needs nightly
# flags, which RUSTC_BOOTSTRAP unlocks on the stable toolchain. Without a sanitizer (safe code:
# panics and overflow checks are what count) and with 16 codegen units, the instrumented build
# takes about 2.5 minutes from cold on 2 cores; it is kept in target/fuzz for later runs, and
# installing cargo-fuzz where it is missing adds about 2 minutes once.
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
fuzz_scratch="$(mktemp -d)"
trap 'rm -rf "$fuzz_scratch"' EXIT
for target_runs in decode_client:300000 session_frames:60000; do
  target="${target_runs%%:*}"
  mkdir -p "$fuzz_scratch/$target"
  # New inputs go to the scratch directory; the committed corpus is only read.
  (cd push && RUSTC_BOOTSTRAP=1 cargo fuzz run -s none --codegen-units 16 --target-dir ../target/fuzz "$target" \
    "$fuzz_scratch/$target" "fuzz/corpus/$target" -- -runs="${target_runs##*:}" -max_total_time=60)
done
