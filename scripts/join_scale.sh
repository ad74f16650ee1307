#!/usr/bin/env bash
# Joining at scale (issue 26): a node joins a service holding ENTRIES entries (default
# 10,000,000) while the primary takes writes.
#   1. node 1 (a new service, --snapshot-interval SNAPSHOT_INTERVAL, default 100,000) takes
#      ENTRIES writes (`vellum bench --workload write -c 64`);
#   2. a steady load starts on node 1 (`vellum bench --workload write -c 32`); after 30 s
#      node 2 joins with a token; the load stops AFTER (default 30) seconds after node 2 has
#      indexed the past;
#   3. times, from node 2's start: serving, the receipt of the oldest entry verified against
#      the service certificate, and the index of the transactions before its snapshot built;
#   4. node 1's transaction rate (`vellum_ledger_transactions_total`, sampled each second)
#      alone before the join, from the join to the receipt, while node 2 indexes the past, and
#      after, with node 2 a caught-up backup (on one machine the two nodes share its cores: the
#      last figure is the rate the join's figures compare with);
#   5. what node 2 fetched, and its ledger on disk against node 1's.
# Results go to $OUT (default target/join); data to $DATA (default target/join-data, removed at
# the end unless KEEP=1). Needs about 300 bytes of disk per entry.
#
# Usage: scripts/join_scale.sh [ENTRIES]
set -euo pipefail
cd "$(dirname "$0")/.."

N="${1:-10000000}"
SNAP="${SNAPSHOT_INTERVAL:-100000}"
OUT="${OUT:-$PWD/target/join}"
DATA="${DATA:-$PWD/target/join-data}"
mkdir -p "$OUT"
rm -rf "$DATA"
mkdir -p "$DATA"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  [ "${KEEP:-0}" = 1 ] || rm -rf "$DATA"
}
trap cleanup EXIT

echo "==> building vellum (release)"
cargo build --release --locked -p vellum-cli --quiet
V="$PWD/target/release/vellum"
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }

# Starts node NAME with the remaining arguments; sets ENDPOINT to where it serves.
serve() {
  local name=$1; shift
  : >"$OUT/$name.out"
  "$V" serve --listen 127.0.0.1:0 --data-dir "$DATA/$name" "$@" >"$OUT/$name.out" 2>"$OUT/$name.log" &
  PIDS+=($!)
  local pid=$!
  until grep -q "serving at" "$OUT/$name.out" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { echo "$name stopped: $(tail -3 "$OUT/$name.log")" >&2; exit 1; }
    sleep 0.05
  done
  ENDPOINT="$(grep -o "https://[0-9.:]*" "$OUT/$name.out" | head -1)"
}

serve node1 --snapshot-interval "$SNAP"
E1=$ENDPOINT
export VELLUM_ENDPOINT="$E1" VELLUM_CERT="$DATA/node1/admin.pem" VELLUM_CA="$DATA/node1/service_cert.pem"
echo "==> writing $N entries (a snapshot every $SNAP transactions)"
"$V" bench --json --no-progress --workload write -c 64 -n "$N" >"$OUT/write.json"
python3 -c "import json;r=json.load(open('$OUT/write.json'));print(f\"   {r['throughput']:.0f} writes/s, errors {r['errors']}\")"
until ls "$DATA/node1/snapshots/"*.committed >/dev/null 2>&1; do sleep 0.2; done
OLDEST=$("$V" list --json | head -1 | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["transactionId"])')
echo "   ledger: $(du -sh "$DATA/node1/ledger" | cut -f1); snapshots: $(ls "$DATA/node1/snapshots"); oldest entry $OLDEST"

echo "==> a steady load on node 1; node 2 joins after 30 s"
metric() {
  curl -s --cacert "$VELLUM_CA" "$1/metrics" | awk -v m="$2" '$1 == m {print $2}'
}
"$V" bench --json --no-progress --workload write -c 32 --duration 100000 >"$OUT/load.json" &
LOAD_PID=$!
PIDS+=("$LOAD_PID")
T_LOAD=$(now)
# Node 1's transactions, once a second: its write rate in each phase.
(while sleep 1; do echo "$(now) $(metric "$E1" vellum_ledger_transactions_total)"; done) >"$OUT/samples.txt" &
SAMPLER=$!
PIDS+=("$SAMPLER")
sleep 30
TOKEN=$("$V" node token --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
T_JOIN=$(now)
serve node2 --join "$E1" --join-token "$TOKEN"
E2=$ENDPOINT
T_SERVING=$(now)
until VELLUM_ENDPOINT="$E2" "$V" receipt "$OLDEST" --verify >"$OUT/receipt.txt" 2>&1; do sleep 0.1; done
T_RECEIPT=$(now)
echo "   node 2 served after $(secs "$T_JOIN" "$T_SERVING") s; the oldest entry's receipt, verified, after $(secs "$T_JOIN" "$T_RECEIPT") s"
grep -a "starting from the service's snapshot" "$OUT/node2.log" | sed 's/\x1b\[[0-9;]*m//g; s/^.*INFO [^ ]* /   /'
until grep -q "indexed the transactions before the snapshot" "$OUT/node2.log"; do
  kill -0 "${PIDS[1]}" 2>/dev/null || { echo "node 2 stopped: $(tail -3 "$OUT/node2.log")" >&2; exit 1; }
  sleep 0.5
done
T_INDEXED=$(now)
echo "   node 2 had indexed the past after $(secs "$T_JOIN" "$T_INDEXED") s"
sleep "${AFTER:-30}"
T_END=$(now)
kill "$SAMPLER" "$LOAD_PID" 2>/dev/null || true
python3 - "$OUT/samples.txt" "$T_LOAD" "$T_JOIN" "$T_RECEIPT" "$T_INDEXED" "$T_END" <<'EOF2'
import sys
samples = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 2]
load, join, receipt, indexed, end = (float(x) for x in sys.argv[2:7])
def rate(a, b):
    pts = [(t, n) for t, n in samples if a <= t <= b]
    if len(pts) < 2:
        pts = [min(samples, key=lambda s: abs(s[0] - a)), min(samples, key=lambda s: abs(s[0] - b))]
    (t0, n0), (t1, n1) = pts[0], pts[-1]
    return (n1 - n0) / max(t1 - t0, 1e-9), t1 - t0
base, bs = rate(load + 5, join)
to_receipt, rs = rate(join, max(receipt, join + 2))
backfill, fs = rate(join, indexed)
after, as_ = rate(indexed + 5, end)
pct = lambda x, of: f"{100 * x / of:.0f}%"
print(f"   node 1's transactions/s: {base:.0f} alone before the join ({bs:.0f} s);"
      f" {to_receipt:.0f} from the join to the receipt ({rs:.0f} s, {pct(to_receipt, base)});"
      f" {backfill:.0f} while node 2 indexed the past ({fs:.0f} s, {pct(backfill, base)});"
      f" {after:.0f} with node 2 a caught-up backup ({as_:.0f} s): the join kept {pct(backfill, after)}"
      f" of the two-node rate")
EOF2
echo "   node 2 fetched $(grep -ac 'fetched a dropped chunk back' "$OUT/node2.log") chunks on demand; ledger on disk: node 1 $(du -sh "$DATA/node1/ledger" | cut -f1), node 2 $(du -sh "$DATA/node2/ledger" | cut -f1)"
