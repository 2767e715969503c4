#!/usr/bin/env bash
# A long schemathesis run against a real server (the test suite runs a bounded one).
#   scripts/fuzz_long.sh [EXAMPLES]   default 500 examples per operation, with and without a key
set -euo pipefail
cd "$(dirname "$0")/.."
examples=${1:-500}
port=${PORT:-8931}
key=fuzz-$RANDOM$RANDOM
FACEBRIDGE_API_KEYS=$key FACEBRIDGE_PORT=$port FACEBRIDGE_LOG_LEVEL=warning .venv/bin/facebridge serve &
server=$!
trap 'kill $server' EXIT
for _ in $(seq 120); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 1; done
for header in "X-API-Key: $key" "X-Unused: none"; do
  .venv/bin/st run "http://127.0.0.1:$port/openapi.json" --header "$header" --max-examples "$examples" \
    --checks not_a_server_error,response_schema_conformance
done
