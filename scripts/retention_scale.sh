#!/usr/bin/env bash
# Retention at scale (issue 26): one node archiving to Azurite (Microsoft's Azure Storage
# emulator, from tests/interop/js) with --retain-transactions RETAIN:
#   1. write ENTRIES entries (default 2,000,000) with `vellum bench --workload write`;
#   2. wait until the chunks past the retention have left the disk; report the ledger's size
#      on disk and in the archive;
#   3. restart the node (SIGTERM) and time a read and a receipt of the oldest entry (its chunk
#      fetched back from the archive and checked);
#   4. read every entry, then every receipt, once (`vellum bench --existing subledger:0 --seed
#      ENTRIES -n ENTRIES`: request i takes entry i * 2654435761 mod ENTRIES, a permutation,
#      so each is read exactly once); any error fails the run;
#   5. `vellum audit --archive` over the archived ledger.
# Results go to $OUT (default target/retention); data to $DATA (default target/retention-data,
# removed at the end unless KEEP=1). Needs Azurite (npm ci in tests/interop/js) and Python with
# azure-storage-blob ($VELLUM_PYTHON, default .venv/bin/python), about 400 bytes of disk per
# entry (the archive and the node's copy).
#
# Usage: scripts/retention_scale.sh [ENTRIES] [RETAIN]
set -euo pipefail
cd "$(dirname "$0")/.."

N="${1:-2000000}"
RETAIN="${2:-1000000}"
OUT="${OUT:-$PWD/target/retention}"
DATA="${DATA:-$PWD/target/retention-data}"
PY="${VELLUM_PYTHON:-$PWD/.venv/bin/python}"
AZURITE="$PWD/tests/interop/js/node_modules/.bin/azurite-blob"
[ -x "$AZURITE" ] || { echo "Azurite is missing: (cd tests/interop/js && npm ci)"; exit 1; }
mkdir -p "$OUT"
rm -rf "$DATA"
mkdir -p "$DATA/azurite"
PID=
AZ=
cleanup() {
  [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  [ -n "$AZ" ] && kill "$AZ" 2>/dev/null && wait "$AZ" 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] || rm -rf "$DATA"
}
trap cleanup EXIT

echo "==> building vellum (release)"
cargo build --release --locked -p vellum-cli --quiet
V="$PWD/target/release/vellum"

PORT=$((20000 + RANDOM % 20000))
"$AZURITE" --silent --skipApiVersionCheck --loose --blobHost 127.0.0.1 --blobPort "$PORT" \
  --location "$DATA/azurite" >/dev/null 2>&1 &
AZ=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
export AZURITE_BLOB_STORAGE_URL="http://127.0.0.1:$PORT"
"$PY" -c "
from azure.storage.blob import BlobServiceClient
BlobServiceClient.from_connection_string('DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:$PORT/devstoreaccount1;').create_container('vellum')"
ARCHIVE=(--archive az://vellum/scale --archive-option use_emulator=true)

start() {
  : >"$OUT/serve.out"
  "$V" serve --listen 127.0.0.1:0 --data-dir "$DATA/node" "${ARCHIVE[@]}" \
    --retain-transactions "$RETAIN" >"$OUT/serve.out" 2>>"$OUT/serve.log" &
  PID=$!
  until grep -q "serving at" "$OUT/serve.out" 2>/dev/null; do
    kill -0 "$PID" 2>/dev/null || { echo "vellum serve stopped: $(tail -3 "$OUT/serve.log")" >&2; exit 1; }
    sleep 0.05
  done
  export VELLUM_ENDPOINT="$(grep -o "https://[0-9.:]*" "$OUT/serve.out" | head -1)"
  export VELLUM_CERT="$DATA/node/admin.pem" VELLUM_CA="$DATA/node/service_cert.pem"
}
metric() {
  curl -s --cacert "$VELLUM_CA" "$VELLUM_ENDPOINT/metrics" | awk -v m="$1" '$1 == m {print $2}'
}
report() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1])); l = r["latency_ms"]
print(f"   {sys.argv[2]:<10} {r['requests']:>9} requests {r['throughput']:>8.0f} /s  p50 {l['p50']:.2f}  p99 {l['p99']:.2f}  max {l['max']:.2f} ms  errors {r['errors']}")
sys.exit(1 if r["errors"] else 0)
EOF
}

start
echo "==> writing $N entries (retaining $RETAIN transactions on disk)"
"$V" bench --json --no-progress --workload write -c 64 -n "$N" >"$OUT/write.json"
report "$OUT/write.json" write
echo "==> waiting for the chunks past the retention to leave the disk"
LAST=-1
STABLE=0
while [ "$STABLE" -lt 10 ]; do
  D=$(metric vellum_ledger_chunks_dropped_total)
  if [ "$D" = "$LAST" ]; then STABLE=$((STABLE + 1)); else STABLE=0; LAST=$D; fi
  sleep 1
done
COMMIT=$("$V" node status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["commitSeqno"])')
echo "   $LAST chunks dropped; commit point $COMMIT"
echo "   on disk: $(du -sh "$DATA/node/ledger" | cut -f1) in $(ls "$DATA/node/ledger" | grep -c committed) committed chunks; archive: $(du -sh "$DATA/azurite" | cut -f1)"

echo "==> restart (SIGTERM), then the first entry of the oldest dropped chunk, and its receipt"
echo "    (the chunk fetched back from the archive and checked)"
kill -TERM "$PID"; wait "$PID" || true
# Genesis's chunk stays; the first seqno after it is in the oldest dropped chunk.
FIRST=$(ls "$DATA/node/ledger" | sed -n 's/^ledger_1-\([0-9]*\)\.committed$/\1/p')
FIRST=$((FIRST + 1))
T0=$(date +%s.%N)
start
until "$V" get >/dev/null 2>&1; do sleep 0.05; done
T1=$(date +%s.%N)
OLDEST=$("$V" list --from "1.$FIRST" --to "1.$((FIRST + 100))" --json | head -1 \
  | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["transactionId"])')
T2=$(date +%s.%N)
"$V" receipt "$OLDEST" --json >/dev/null
T3=$(date +%s.%N)
python3 -c "print(f'   serving after {$T1-$T0:.2f} s; entry $OLDEST (a dropped chunk) read in {$T2-$T1:.2f} s, its receipt in {$T3-$T2:.3f} s; chunks fetched: $(metric vellum_ledger_chunks_fetched_total)')"

echo "==> every entry once, then every receipt once"
for w in read receipt; do
  "$V" bench --json --no-progress --workload "$w" --existing subledger:0 --seed "$N" -c 64 -n "$N" >"$OUT/$w.json"
  report "$OUT/$w.json" "$w"
done
echo "   chunks fetched back: $(metric vellum_ledger_chunks_fetched_total)"

echo "==> vellum audit --archive"
T0=$(date +%s.%N)
"$V" audit --archive az://vellum/scale --archive-option use_emulator=true --json \
  --ledger-secret "$DATA/node/ledger_secret" >"$OUT/audit.json"
T1=$(date +%s.%N)
python3 - "$OUT/audit.json" "$(python3 -c "print(f'{$T1-$T0:.1f}')")" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["ok"], r
print(f"   ok: {r['transactions']} transactions in the archive, audited in {sys.argv[2]} s")
EOF
