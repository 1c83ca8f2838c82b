#!/usr/bin/env bash
# Lands the simulator into a Delta Lake destination with the CLI (a full load, then a
# reload-and-compare after the source changed) and checks every table, its column types and
# the change data feed with an independent reader: the `deltalake` Python package (delta-rs's
# bindings) in a throwaway virtualenv. Usage: tests/readers/delta.sh PATH/TO/fhirsync [s3]
# (a binary built with `--features delta`). With `s3`, the tables go to `s3://fhirsync-ci/lake`
# on a local S3 (moto's server, from PyPI), with the endpoint and credentials in the `AWS_*`
# environment variables as an operator would give them.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(realpath "${1:?usage: tests/readers/delta.sh PATH/TO/fhirsync [s3]}")
store=${2:-folder}
work=$(mktemp -d /tmp/fhirsync-delta.XXXXXX)
sim=""
s3=""
cleanup() {
  if [ -n "$sim" ]; then kill "$sim" 2>/dev/null || true; wait "$sim" 2>/dev/null || true; fi
  if [ -n "$s3" ]; then kill "$s3" 2>/dev/null || true; wait "$s3" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --disable-pip-version-check deltalake pyarrow
free_port() {
  "$work/venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

case "$store" in
  folder)
    lake="$work/lake"
    lake_state="$lake"
    lake_toml="uri = \"$lake\""
    ;;
  s3)
    "$work/venv/bin/pip" install -q --disable-pip-version-check 'moto[server]' boto3
    s3_port=$(free_port)
    "$work/venv/bin/moto_server" -p "$s3_port" > "$work/s3.log" 2>&1 &
    s3=$!
    wait_port "$s3_port" || { cat "$work/s3.log" >&2; exit 1; }
    export AWS_ENDPOINT="http://127.0.0.1:$s3_port" AWS_ENDPOINT_URL="http://127.0.0.1:$s3_port"
    export AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=fhirsync-ci AWS_SECRET_ACCESS_KEY=fhirsync-ci AWS_REGION=us-east-1
    "$work/venv/bin/python" -c 'import boto3; boto3.client("s3").create_bucket(Bucket="fhirsync-ci")'
    lake="s3://fhirsync-ci/lake"
    lake_state="$work/lake-state"
    lake_toml="uri = \"$lake\"
state_dir = \"$lake_state\""
    ;;
  *) echo "unknown store $store: folder or s3" >&2; exit 2 ;;
esac

"$bin" keys generate --out "$work/key.pem" > "$work/jwks.json"
port=$(free_port)

start_sim() {
  "$bin" sandbox --port "$port" --patients 30 --client-id fhirsync-ci-delta --jwks "$work/jwks.json" "$@" \
    > "$work/sim.log" 2>&1 &
  sim=$!
  wait_port "$port" || { cat "$work/sim.log" >&2; return 1; }
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
$lake_toml
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
"$work/venv/bin/python" tests/readers/delta_check.py "$lake" "$lake_state"
