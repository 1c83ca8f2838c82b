#!/usr/bin/env bash
# End-to-end sync benchmark: a release `fhirsync sync --method full-load` against the simulator
# (`fhirsync sandbox`, a separate process, so the figures are the client's alone), per simulated
# cohort size, destination and extraction mode. Prints one Markdown table row per run: resources
# landed, wall seconds, CPU seconds (user + system) and peak RSS (MiB) from `/usr/bin/time -v`.
#
#   bench/sync.sh                                  # 1000 and 3000 patients, every destination, search + bulk
#   PATIENTS="1000" DESTS="sqlite postgres" MODES="search" bench/sync.sh
#
# Settings (environment):
#   PATIENTS   simulated patients, space-separated (default "1000 3000"; ~380 resources each)
#   DESTS      sqlite postgres parquet ndjson delta (default all but delta; postgres needs
#              FHIRSYNC_BENCH_POSTGRES_URL, delta a binary built with `--features delta`)
#   MODES      search bulk (default both)
#   METHOD     sync method (default full-load); any other method is timed on a second run, after an
#              untimed full load of the same cohort into the same target
#   FHIRSYNC_BENCH_POSTGRES_URL  libpq-style url of a scratch database (schema PG_SCHEMA, default
#              `fhirsync_bench`, is dropped before and after each run)
#   FHIRSYNC_BENCH_POSTGRES_CA  PEM of the CA that signed the server's TLS certificate (the
#              destination's `ca_file`), for a server whose certificate the system roots do not hold
#   FHIRSYNC_BIN  a prebuilt binary (default: `cargo build --release -p fhirsync-cli`, then target/release/fhirsync)
#   KEEP       set to keep the work folder
set -euo pipefail
cd "$(dirname "$0")/.."

PATIENTS=${PATIENTS:-"1000 3000"}
DESTS=${DESTS:-"sqlite postgres parquet ndjson"}
MODES=${MODES:-"search bulk"}
METHOD=${METHOD:-full-load}
PG_SCHEMA=${PG_SCHEMA:-fhirsync_bench}

if [[ -z "${FHIRSYNC_BIN:-}" ]]; then
  cargo build --release --locked -p fhirsync-cli >&2
  FHIRSYNC_BIN=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/fhirsync
fi
[[ -x /usr/bin/time ]] || { echo "needs GNU time at /usr/bin/time (apt-get install time)" >&2; exit 2; }
if [[ " $DESTS " == *" postgres "* && -z "${FHIRSYNC_BENCH_POSTGRES_URL:-}" ]]; then
  echo "postgres: set FHIRSYNC_BENCH_POSTGRES_URL (or leave postgres out of DESTS)" >&2
  exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fhirsync-bench.XXXXXX")
SIM_PID=
cleanup() {
  [[ -n "$SIM_PID" ]] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null
  [[ -n "${KEEP:-}" ]] || rm -rf "$WORK"
}
trap cleanup EXIT

"$FHIRSYNC_BIN" keys generate --out "$WORK/key.pem" > "$WORK/jwks.json"

# Starts the simulator with $1 patients on a free port; sets SIM_URL.
start_sim() {
  cat > "$WORK/sim.toml" <<EOF
patients = $1
[bulk]
polls_before_ready = 1
retry_after_secs = 1
kickoff_window_secs = 0
EOF
  "$FHIRSYNC_BIN" sandbox --port 0 --sim-config "$WORK/sim.toml" --client-id bench --jwks "$WORK/jwks.json" \
    > "$WORK/sim.out" 2> "$WORK/sim.err" &
  SIM_PID=$!
  for _ in $(seq 100); do
    SIM_URL=$(sed -n 's/^Epic simulator listening on \(http[^ ]*\).*/\1/p' "$WORK/sim.out")
    [[ -n "$SIM_URL" ]] && break
    sleep 0.1
  done
  [[ -n "$SIM_URL" ]] || { cat "$WORK/sim.err" >&2; exit 1; }
  GROUP=$(sed -n 's/^  group *R4 Group\/\([^/]*\)\/.*/\1/p' "$WORK/sim.out" | head -n 1)
  R4=$(sed -n 's/^  FHIR R4 *\(http[^ ]*\).*/\1/p' "$WORK/sim.out")
  STU3=$(sed -n 's/^  FHIR STU3 *\(http[^ ]*\).*/\1/p' "$WORK/sim.out")
}

stop_sim() {
  kill "$SIM_PID" 2>/dev/null || true
  wait "$SIM_PID" 2>/dev/null || true
  SIM_PID=
}

# Writes the config of one run ($1 destination, $2 mode, $3 run folder).
write_config() {
  local dest=$1 mode=$2 dir=$3
  {
    printf '[connection]\nclient_id = "bench"\nfhir_r4_endpoint = "%s"\nfhir_stu3_endpoint = "%s"\n' "$R4" "$STU3"
    printf 'private_key = "%s"\npatient_list_identifier = "systemlist|6442"\n\n' "$WORK/key.pem"
    printf '[extract]\nconcurrency = 8\nrate_limit = 0.0\nmode = "%s"\n' "$mode"
    if [[ $mode == bulk ]]; then
      printf '\n[extract.cohort]\ngroup = "%s"\n\n[extract.bulk]\npoll_floor_secs = 0\n' "$GROUP"
    fi
    printf '\n[sync]\nstate_dir = "%s/state"\n\n[destination]\n' "$dir"
    case $dest in
      sqlite) printf 'kind = "sqlite"\npath = "%s/landed.db"\n' "$dir" ;;
      postgres)
        printf 'kind = "postgres"\nurl = "%s"\nschema = "%s"\n' "$FHIRSYNC_BENCH_POSTGRES_URL" "$PG_SCHEMA"
        if [[ -n "${FHIRSYNC_BENCH_POSTGRES_CA:-}" ]]; then
          printf 'ca_file = "%s"\n' "$FHIRSYNC_BENCH_POSTGRES_CA"
        fi
        ;;
      parquet) printf 'kind = "parquet"\ndir = "%s/parquet"\n' "$dir" ;;
      ndjson) printf 'kind = "ndjson"\ndir = "%s/ndjson"\n' "$dir" ;;
      delta) printf 'kind = "delta"\nuri = "%s/delta"\n' "$dir" ;;
    esac
  } > "$dir/fhirsync.toml"
}

reset_postgres() {
  command -v psql >/dev/null || { echo "postgres: needs psql to drop the bench schema" >&2; exit 2; }
  psql -q "$FHIRSYNC_BENCH_POSTGRES_URL" -c "DROP SCHEMA IF EXISTS $PG_SCHEMA CASCADE" >/dev/null 2>&1
}

echo "| patients | mode | destination | resources | wall s | CPU s | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|"
for n in $PATIENTS; do
  start_sim "$n"
  for mode in $MODES; do
    for dest in $DESTS; do
      dir="$WORK/$n-$mode-$dest"
      mkdir -p "$dir"
      write_config "$dest" "$mode" "$dir"
      [[ $dest == postgres ]] && reset_postgres
      if [[ $METHOD != full-load ]] && ! FHIRSYNC_LOG=warn "$FHIRSYNC_BIN" --config "$dir/fhirsync.toml" \
        sync --no-progress --method full-load > "$dir/out" 2> "$dir/err"; then
        echo "| $n | $mode | $dest | first full load failed: $(tail -n 1 "$dir/err") | | | |"
        continue
      fi
      if ! FHIRSYNC_LOG=warn /usr/bin/time -v -o "$dir/time" "$FHIRSYNC_BIN" --config "$dir/fhirsync.toml" \
        sync --no-progress --method "$METHOD" > "$dir/out" 2> "$dir/err"; then
        echo "| $n | $mode | $dest | failed: $(tail -n 1 "$dir/err") | | | |"
        continue
      fi
      wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$dir/time" \
        | awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; printf "%.1f", s }')
      cpu=$(awk -F': ' '/User time|System time/ { s += $2 } END { printf "%.1f", s }' "$dir/time")
      rss=$(awk -F': ' '/Maximum resident set size/ { printf "%.0f", $2 / 1024 }' "$dir/time")
      resources=$(sed -n 's/.* resources (\([0-9]*\) distinct).*/\1/p' "$dir/out")
      echo "| $n | $mode | $dest | $resources | $wall | $cpu | $rss |"
      [[ $dest == postgres ]] && reset_postgres
      [[ -n "${KEEP:-}" ]] || rm -rf "$dir/landed.db"* "$dir/parquet" "$dir/ndjson" "$dir/delta"
    done
  done
  stop_sim
done
