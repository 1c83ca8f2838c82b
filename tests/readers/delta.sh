#!/usr/bin/env bash
# Lands the simulator into a Delta Lake destination with the CLI (a full load, then a
# reload-and-compare after the source changed) and checks every table, its column types and
# the change data feed with an independent reader: the `deltalake` Python package (delta-rs's
# bindings) in a throwaway virtualenv. Usage: tests/readers/delta.sh PATH/TO/fhirsync
# (a binary built with `--features delta`).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(realpath "${1:?usage: tests/readers/delta.sh PATH/TO/fhirsync}")
work=$(mktemp -d /tmp/fhirsync-delta.XXXXXX)
sim=""
cleanup() {
  if [ -n "$sim" ]; then kill "$sim" 2>/dev/null || true; wait "$sim" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --disable-pip-version-check deltalake pyarrow

"$bin" keys generate --out "$work/key.pem" > "$work/jwks.json"
port=$("$work/venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

start_sim() {
  "$bin" sandbox --port "$port" --patients 30 --client-id fhirsync-ci-delta --jwks "$work/jwks.json" "$@" \
    > "$work/sim.log" 2>&1 &
  sim=$!
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  cat "$work/sim.log" >&2
  return 1
}
stop_sim() {
  kill "$sim"
  wait "$sim" 2>/dev/null || true
  sim=""
}

base="http://127.0.0.1:$port/interconnect-fhir-oauth/api/FHIR"
cat > "$work/fhirsync.toml" <<EOF
[connection]
client_id = "fhirsync-ci-delta"
fhir_r4_endpoint = "$base/R4"
fhir_stu3_endpoint = "$base/STU3"
private_key = "$work/key.pem"
patient_list_identifier = "systemlist|6442"

[extract]
concurrency = 8
rate_limit = 1000.0

[sync]
state_dir = "$work/state"

[destination]
kind = "delta"
uri = "$work/lake"
EOF

# Exit 6 is "committed with gaps" (the simulator's Outside-Record exclusions are not gaps, but a
# gap would still have landed data to check).
sync() {
  local code=0
  "$bin" --config "$work/fhirsync.toml" sync "$@" || code=$?
  if [ "$code" -ne 0 ] && [ "$code" -ne 6 ]; then
    echo "fhirsync sync $* exited $code" >&2
    return 1
  fi
}

start_sim
sync --method full-load
stop_sim
# The source changed since the last run: edits, deletes and additions for 10 patients.
start_sim --churn-seed 7
sync --method reload-and-compare
stop_sim
"$bin" --config "$work/fhirsync.toml" status --limit 2
"$work/venv/bin/python" tests/readers/delta_check.py "$work/lake"
