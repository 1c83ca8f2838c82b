#!/usr/bin/env bash
# Runs every SQL example of README.md against real landings, as written, and checks that DuckDB
# reads the default views typed (DATE, TIMESTAMP, DECIMAL, BOOLEAN, BIGINT; see .ci/readme_sql.py).
#
# Lands the simulator's data (fhirsync sandbox, 20 patients) with `fhirsync sync` into SQLite
# (fhirsync.db), Parquet (landing/) and, when FHIRSYNC_TEST_POSTGRES_URL is set, PostgreSQL
# (schema fhirsync; FHIRSYNC_TEST_POSTGRES_CA for a TLS server), all in a temporary folder. The
# readers come from PyPI into a venv there: duckdb and its sqlite extension, pinned together.
# Run by .ci/run; runs alone too (needs cargo, python3, and psql for the PostgreSQL blocks).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

cargo build --locked -q -p fhirsync-cli
bin="$repo/target/debug/fhirsync"
work=$(mktemp -d /tmp/fhirsync-readme-sql.XXXXXX)
sandbox=""
cleanup() {
  if [ -n "$sandbox" ]; then kill "$sandbox" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --disable-pip-version-check \
  "duckdb==1.4.4" "duckdb-ext-sqlite==1.4.4.20260205" "pytz==2025.2"

cd "$work"
"$bin" keys generate --out key.pem >/dev/null 2>&1
"$bin" keys jwks --key key.pem >jwks.json
: >sandbox.log # exists before the background job opens it
"$bin" sandbox --port 0 --patients 20 --client-id ci --jwks jwks.json >sandbox.log 2>&1 &
sandbox=$!
base=""
for _ in $(seq 1 100); do
  base=$(sed -n 's/^Epic simulator listening on //p' sandbox.log)
  [ -n "$base" ] && break
  sleep 0.1
done
[ -n "$base" ] || { echo "the simulator did not start:"; cat sandbox.log; exit 1; }

# One full load per destination: the destination block differs, the rest is the same.
land() {
  local name=$1 destination=$2
  cat >"$name.toml" <<EOF
[connection]
client_id = "ci"
fhir_base_url = "$base/interconnect-fhir-oauth"
private_key = "key.pem"
patient_list_identifier = "systemlist|6442"

[extract]
concurrency = 8
rate_limit = 0

[destination]
$destination

[sync]
state_dir = ".fhirsync-$name"
EOF
  "$bin" --config "$name.toml" sync --method full-load --replace --no-progress >"sync-$name.log" 2>&1 ||
    { echo "sync into $name failed:"; cat "sync-$name.log"; exit 1; }
  echo "landed into $name"
}
land sqlite 'kind = "sqlite"
path = "fhirsync.db"'
land parquet 'kind = "parquet"
dir = "landing/"'
if [ -n "${FHIRSYNC_TEST_POSTGRES_URL:-}" ]; then
  ca=""
  [ -n "${FHIRSYNC_TEST_POSTGRES_CA:-}" ] && ca="ca_file = \"$FHIRSYNC_TEST_POSTGRES_CA\""
  land postgres "kind = \"postgres\"
url = \"$FHIRSYNC_TEST_POSTGRES_URL\"
schema = \"fhirsync\"
$ca"
else
  echo "FHIRSYNC_TEST_POSTGRES_URL is not set: the psql blocks of the README will fail"
fi

"$work/venv/bin/python" "$repo/.ci/readme_sql.py" "$repo/README.md" "$bin"
