#!/usr/bin/env bash
# Joining at scale (issue 26): a node joins a service holding ENTRIES entries (default
# 10,000,000) while the primary takes writes.
#   1. node 1 (a new service, --snapshot-interval SNAPSHOT_INTERVAL, default 100,000) takes
#      ENTRIES writes (`vellum bench --workload write -c 64`);
#   2. a steady load starts on node 1 (`vellum bench --workload write -c 32 --duration LOAD`,
#      default 150 s); after 30 s node 2 joins with a token;
#   3. times, from node 2's start: serving, the receipt of the oldest entry verified against
#      the service certificate, and the index of the transactions before its snapshot built;
#   4. node 1's write rate (the load's per-second series) before the join, from the join to
#      the receipt, and from the join until node 2 had indexed the past;
#   5. what node 2 fetched, and its ledger on disk against node 1's.
# Results go to $OUT (default target/join); data to $DATA (default target/join-data, removed at
# the end unless KEEP=1). Needs about 300 bytes of disk per entry.
#
# Usage: scripts/join_scale.sh [ENTRIES]
set -euo pipefail
cd "$(dirname "$0")/.."

N="${1:-10000000}"
SNAP="${SNAPSHOT_INTERVAL:-100000}"
LOAD="${LOAD:-150}"
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

echo "==> a steady load on node 1 for $LOAD s; node 2 joins after 30 s"
T_LOAD=$(now)
"$V" bench --json --no-progress --workload write -c 32 --duration "$LOAD" >"$OUT/load.json" &
LOAD_PID=$!
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
wait "$LOAD_PID"
python3 - "$OUT/load.json" "$T_LOAD" "$T_JOIN" "$T_RECEIPT" "$T_INDEXED" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
t0, join, receipt, indexed = (float(x) for x in sys.argv[2:6])
per = [s["requests"] for s in r["per_second"]]
def rate(a, b):
    a, b = max(int(a - t0), 0), min(int(b - t0), len(per))
    return sum(per[a:b]) / max(b - a, 1), b - a
base, n = rate(t0 + 3, join)
during, m = rate(join, max(receipt, join + 1))
back, k = rate(join, indexed)
print(f"   node 1's write rate: {base:.0f}/s before the join ({n} s); {during:.0f}/s from the join to the receipt"
      f" ({m} s, {100 * during / base:.0f}%); {back:.0f}/s until node 2 had indexed the past ({k} s, {100 * back / base:.0f}%)")
print(f"   load errors: {r['errors']}")
EOF
echo "   node 2 fetched $(grep -ac 'fetched a dropped chunk back' "$OUT/node2.log") chunks on demand; ledger on disk: node 1 $(du -sh "$DATA/node1/ledger" | cut -f1), node 2 $(du -sh "$DATA/node2/ledger" | cut -f1)"
