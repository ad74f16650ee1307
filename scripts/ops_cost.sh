#!/usr/bin/env bash
# What snapshots and the archive cost a loaded node: `vellum bench --workload write -c 64 -n N`
# against a fresh release node, alternately plain and with `--snapshot-interval 100000
# --archive file://DIR`, ROUNDS times (default 2, N default 300000). Prints each run's
# throughput and, for the runs with both, what the node logged: each snapshot's size and build
# time, and the archive's copies.
#
# Usage: scripts/ops_cost.sh [ROUNDS] [N]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-2}"; N="${2:-300000}"
cargo build --release -q -p vellum-cli
V="$PWD/target/release/vellum"
WORK="$(mktemp -d)"; trap 'kill $SERVE 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
run() {  # run NAME EXTRA-FLAGS...
  local name="$1"; shift
  rm -rf "$WORK/data" "$WORK/archive"
  local port=$((20000 + RANDOM % 20000))
  "$V" serve --data-dir "$WORK/data" --listen "127.0.0.1:$port" --log-format json "$@" \
    >"$WORK/out" 2>"$WORK/log" &
  SERVE=$!
  for _ in $(seq 100); do [ -s "$WORK/out" ] && break; sleep 0.1; done
  local rate
  rate=$(VELLUM_ENDPOINT="https://127.0.0.1:$port" VELLUM_CA="$WORK/data/service_cert.pem" \
    VELLUM_CERT="$WORK/data/admin.pem" "$V" bench --workload write -c 64 -n "$N" --json \
    | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["throughput"]))')
  sleep 3
  kill $SERVE; wait $SERVE 2>/dev/null || true
  echo "$name: $rate writes/s"
  python3 - "$WORK/log" <<'PY'
import json, sys
snaps, copies = [], []
for line in open(sys.argv[1]):
    d = json.loads(line)
    if d.get("message", "").startswith("snapshot taken"):
        snaps.append(f'S={d["seqno"]} {int(d["bytes"]) / 1024:.1f} KiB in {d["built_ms"]} ms')
    elif d.get("message") == "archived":
        copies.append(int(d["ms"]))
if snaps:
    print("  snapshots:", "; ".join(snaps))
if copies:
    print(f"  archive: {len(copies)} copies, {sum(copies)} ms in all, longest {max(copies)} ms")
PY
}
for r in $(seq "$ROUNDS"); do
  run "round $r plain"
  run "round $r snapshots+archive" --snapshot-interval 100000 --archive "file://$WORK/archive"
done
