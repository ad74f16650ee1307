#!/usr/bin/env bash
# The scale targets of issue 8, measured on one node:
#   1. write ENTRIES entries (default 10,000,000) with `vellum bench --workload write`;
#   2. resident memory of the node then;
#   3. restart: SIGTERM, start again, time until the API answers, and resident memory; then
#      ENTRIES/20 more writes, SIGKILL, and the same again;
#   4. reads and receipts of the *oldest* 1,000 entries (`--existing subledger:0`), one at a
#      time (latency) and at 64 connections.
# Results go to $OUT (default target/scale); the data directory to $DATA (default a temporary
# directory under target/, removed at the end unless KEEP=1). Needs about 250 bytes of disk per
# entry (2.5 GB for ten million).
#
# Usage: scripts/scale.sh [ENTRIES]
set -euo pipefail
cd "$(dirname "$0")/.."

N="${1:-10000000}"
OUT="${OUT:-$PWD/target/scale}"
DATA="${DATA:-$PWD/target/scale-data}"
mkdir -p "$OUT"
rm -rf "$DATA"
PID=
cleanup() {
  [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] || rm -rf "$DATA"
}
trap cleanup EXIT

echo "==> building vellum (release)"
cargo build --release --locked -p vellum-cli --quiet
V="$PWD/target/release/vellum"

start() {
  : >"$OUT/serve.out"
  "$V" serve --listen 127.0.0.1:0 --data-dir "$DATA" >"$OUT/serve.out" 2>>"$OUT/serve.log" &
  PID=$!
  until grep -q "serving at" "$OUT/serve.out" 2>/dev/null; do
    kill -0 "$PID" 2>/dev/null || { echo "vellum serve stopped: $(tail -3 "$OUT/serve.log")" >&2; exit 1; }
    sleep 0.05
  done
  export VELLUM_ENDPOINT="$(grep -o "https://[0-9.:]*" "$OUT/serve.out" | head -1)"
  export VELLUM_CERT="$DATA/admin.pem" VELLUM_CA="$DATA/service_cert.pem"
}
rss() { awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' "/proc/$PID/status"; }

start
echo "==> writing $N entries"
"$V" bench --json --no-progress --workload write -c 64 -n "$N" >"$OUT/write.json"
python3 -c "import json;r=json.load(open('$OUT/write.json'));print(f\"   {r['throughput']:.0f} writes/s\")"
sleep 1  # the last writes commit within milliseconds
echo "   ledger: $(du -sh "$DATA/ledger" | cut -f1), node RSS $(rss)"

# Starts the node again and reports how long until it listens and serves entries.
restart() {
  T0=$(date +%s.%N)
  start
  TL=$(date +%s.%N)
  until "$V" get >/dev/null 2>&1; do sleep 0.05; done
  T1=$(date +%s.%N)
  echo "   listening after $(python3 -c "print(f'{$TL-$T0:.2f}')") s, serving entries after $(python3 -c "print(f'{$T1-$T0:.2f}')") s; node RSS $(rss)"
  grep -a "opened the ledger " "$OUT/serve.log" | tail -1 | sed 's/\x1b\[[0-9;]*m//g; s/^.*opened/   opened/'
}

echo "==> restart (SIGTERM: the node writes its checkpoint as it stops)"
kill -TERM "$PID"; wait "$PID" || true
restart

M=$((N / 20 > 1000 ? N / 20 : 1000))
echo "==> crash restart: $M more entries, then SIGKILL (the start reads what the last background"
echo "    checkpoint does not cover)"
"$V" bench --json --no-progress --workload write -c 64 -n "$M" >"$OUT/write-more.json"
kill -KILL "$PID"; wait "$PID" 2>/dev/null || true
restart

echo "==> the oldest 1,000 entries: one request at a time, then 64 at once"
for w in read receipt; do
  for c in 1 64; do
    "$V" bench --json --no-progress --workload "$w" --existing subledger:0 --seed 1000 -c "$c" -n 5000 >"$OUT/$w-c$c.json"
    python3 - "$OUT/$w-c$c.json" "$w c=$c" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1])); l = r["latency_ms"]
print(f"   {sys.argv[2]:<12} {r['throughput']:>8.0f} /s  p50 {l['p50']:.2f}  p99 {l['p99']:.2f}  max {l['max']:.2f} ms  errors {r['errors']}")
EOF
  done
done
echo "   node RSS $(rss)"
