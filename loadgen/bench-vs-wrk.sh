#!/usr/bin/env bash
# Compares sluice-loadgen's maximum request rate with wrk's on a trivial endpoint
# (/_internal_/healthcheck of a real `sluice serve`), in the same run, on the same machine.
#
#   loadgen/bench-vs-wrk.sh                 # 3 rounds of 10 s each, 64 connections
#   DURATION=20 ROUNDS=5 CONNECTIONS=128 loadgen/bench-vs-wrk.sh
#   SKIP_BUILD=1 loadgen/bench-vs-wrk.sh    # reuse target/release/{sluice,sluice-loadgen}
#
# Both tools run closed loop (as many requests as the connections allow), with the same
# connection count and the same number of threads (wrk -t THREADS; the load generator's
# runtime gets THREADS worker threads). Rounds alternate wrk / sluice-loadgen so that a
# drift of the machine (thermal, other load) hits both alike. Prints each round, the medians
# and the median of the per-round ratios; exits 1 if that ratio is below MIN_RATIO (0.9).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-3}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
MIN_RATIO="${MIN_RATIO:-0.9}"
PATH_UNDER_TEST="/_internal_/healthcheck"

if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq wrk >/dev/null
  else
    echo "wrk is required (Debian: apt-get install wrk)" >&2
    exit 1
  fi
fi

# SKIP_BUILD=1 reuses the release binaries already in target/release.
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --quiet -p sluice -p sluice-loadgen
fi
SLUICE=target/release/sluice
LOADGEN=target/release/sluice-loadgen

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

mkfifo "$WORK/out"
SLUICE_LOG=warn "$SLUICE" serve --listen 127.0.0.1:0 --data-dir "$WORK/data" >"$WORK/out" 2>"$WORK/server.log" &
SERVER_PID=$!
exec 3<"$WORK/out"
read -r FIRST_LINE <&3
BASE="${FIRST_LINE#sluice listening on }"
# Keep draining the server's stdout so it can never block on a full pipe.
cat <&3 >/dev/null &
URL="$BASE$PATH_UNDER_TEST"
for _ in $(seq 1 100); do
  if curl -fsS "$URL" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
curl -fsS "$URL" >/dev/null

echo "target $URL  connections $CONNECTIONS  threads $THREADS  duration ${DURATION}s  rounds $ROUNDS  cores $(nproc)"
wrk_rates=()
loadgen_rates=()
for round in $(seq 1 "$ROUNDS"); do
  wrk_rate="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" "$URL" | awk '/^Requests\/sec:/ {print $2}')"
  TOKIO_WORKER_THREADS="$THREADS" "$LOADGEN" get --target "$BASE" --path "$PATH_UNDER_TEST" \
    -c "$CONNECTIONS" -d "${DURATION}s" --no-metrics --quiet --json "$WORK/report.json" >/dev/null
  loadgen_rate="$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("%.2f" % r["total"]["requests_per_second"]) if r["total"]["errors"] == 0 else print("errors:", r["total"]["errors_by_status"])' "$WORK/report.json")"
  printf 'round %s  wrk %12s req/s   sluice-loadgen %12s req/s\n' "$round" "$wrk_rate" "$loadgen_rate"
  wrk_rates+=("$wrk_rate")
  loadgen_rates+=("$loadgen_rate")
done

python3 - "$MIN_RATIO" "${wrk_rates[*]}" "${loadgen_rates[*]}" <<'EOF'
import statistics, sys
min_ratio = float(sys.argv[1])
wrk = [float(x) for x in sys.argv[2].split()]
loadgen = [float(x) for x in sys.argv[3].split()]
w, l = statistics.median(wrk), statistics.median(loadgen)
# Each round's two runs are back to back, so the per-round ratio is the least sensitive to
# other load on the machine drifting during the benchmark.
ratio = statistics.median(b / a for a, b in zip(wrk, loadgen))
print(f"median  wrk {w:12.2f} req/s   sluice-loadgen {l:12.2f} req/s")
print(f"median of per-round ratios (sluice-loadgen / wrk): {ratio:.3f}")
sys.exit(0 if ratio >= min_ratio else 1)
EOF
