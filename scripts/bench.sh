#!/usr/bin/env bash
# Vellum's benchmark with its baselines, measured in one run on this machine:
#   * vellum bench against one node: null (the HTTPS ceiling of the same server stack), write,
#     write-commit (one request: x-vellum-wait), write-poll (a write, then status polls, as the
#     Azure SDKs do), read, receipt, range;
#   * vellum bench write-commit against a three-node cluster on loopback;
#   * PostgreSQL (Debian's package; fsync and synchronous_commit on) driven by pgbench at the
#     same concurrency: a plain append-only table, and a hash-chained one.
# The ratios the targets are about (durable appends against the null endpoint and against
# PostgreSQL's plain inserts) are measured in ROUNDS interleaved rounds (null, write-commit,
# pgbench plain, again and again), because this VM's speed drifts by a quarter within minutes:
# each round gives its own ratios, and the summary reports their medians.
# Prints a summary with the ratios and leaves JSON results in $OUT (default target/bench).
#
# Usage: [ROUNDS=3] scripts/bench.sh [CONCURRENCY (64)] [SECONDS per run (10)]
set -euo pipefail
cd "$(dirname "$0")/.."

C="${1:-64}"
T="${2:-10}"
ROUNDS="${ROUNDS:-3}"
OUT="${OUT:-$PWD/target/bench}"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
# `serve` runs in a command substitution (a subshell), so node pids go to a file, not a variable.
PIDFILE="$WORK/pids"
: >"$PIDFILE"
# Stops every node started so far and waits for each to exit.
stop_nodes() {
  local p
  while read -r p; do
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done <"$PIDFILE"
  : >"$PIDFILE"
}
cleanup() {
  stop_nodes
  if [ -n "${PGDATA_DIR:-}" ]; then
    runuser -u postgres -- pg_ctl -D "$PGDATA_DIR" -m fast stop >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "==> building vellum (release)"
cargo build --release --locked -p vellum-cli --quiet
V="$PWD/target/release/vellum"

# Starts `vellum serve` with the given arguments; prints its endpoint.
serve() {
  local log="$1"; shift
  "$V" serve --listen 127.0.0.1:0 "$@" >"$log.out" 2>"$log" &
  echo $! >>"$PIDFILE"
  for _ in $(seq 1 100); do
    if grep -q "serving at" "$log.out" 2>/dev/null; then
      grep -o "https://[0-9.:]*" "$log.out" | head -1
      return
    fi
    sleep 0.1
  done
  echo "vellum serve did not start: $(cat "$log")" >&2
  exit 1
}

bench() {
  local name="$1"; shift
  "$V" bench --json --no-progress -c "$C" -d "$T" "$@" >"$OUT/$name.json"
  python3 - "$OUT/$name.json" "$name" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
l = r["latency_ms"]
print(f"{sys.argv[2]:<24} {r['throughput']:>10.0f} /s   p50 {l['p50']:7.2f}  p90 {l['p90']:7.2f}  p99 {l['p99']:7.2f}  p99.9 {l['p99.9']:7.2f} ms   errors {r['errors']}")
EOF
}

echo "==> starting PostgreSQL (fsync=on, synchronous_commit=on); pgbench -c $C -T $T"
if ! command -v pgbench >/dev/null || ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -q postgresql >/dev/null
  fi
fi
PGBIN="$(dirname "$(ls /usr/lib/postgresql/*/bin/pg_ctl | tail -1)")"
export PATH="$PGBIN:$PATH"
PGDATA_DIR="$WORK/pg"
mkdir -p "$PGDATA_DIR" && chown postgres "$PGDATA_DIR" "$WORK" && chmod 755 "$WORK"
runuser -u postgres -- initdb -D "$PGDATA_DIR" -A trust >/dev/null
runuser -u postgres -- pg_ctl -D "$PGDATA_DIR" -l "$WORK/pg.log" -w start \
  -o "-k $WORK -p 55432 -c listen_addresses='' -c fsync=on -c synchronous_commit=on -c max_connections=200" >/dev/null
PSQL=(runuser -u postgres -- psql -q -h "$WORK" -p 55432 -d postgres)
"${PSQL[@]}" -c "CREATE TABLE entries (id bigserial PRIMARY KEY, collection text NOT NULL, contents text NOT NULL, at timestamptz NOT NULL DEFAULT now());"
"${PSQL[@]}" -c "CREATE TABLE chain (id bigserial PRIMARY KEY, contents text NOT NULL, hash bytea NOT NULL);"
cat >"$WORK/plain.sql" <<'EOF'
INSERT INTO entries (collection, contents) VALUES ('subledger:0', repeat('x', 64));
EOF
# Each row's hash covers the previous row's: inserts serialise on an advisory lock.
cat >"$WORK/chain.sql" <<'EOF'
BEGIN;
SELECT pg_advisory_xact_lock(42);
INSERT INTO chain (contents, hash)
  SELECT c, sha256(coalesce((SELECT hash FROM chain ORDER BY id DESC LIMIT 1), '\x'::bytea) || convert_to(c, 'UTF8'))
  FROM (SELECT repeat('x', 64) AS c) s;
COMMIT;
EOF
chmod 644 "$WORK"/*.sql
pg() {
  local name="$1" script="$2"
  runuser -u postgres -- pgbench -n -h "$WORK" -p 55432 -c "$C" -j 2 -T "$T" -r -f "$script" postgres >"$OUT/$name.txt" 2>&1
  python3 - "$OUT/$name.txt" "$name" "$OUT/$name.json" <<'EOF'
import json, re, sys
t = open(sys.argv[1]).read()
tps = float(re.search(r"tps = ([0-9.]+)", t).group(1))
lat = float(re.search(r"latency average = ([0-9.]+) ms", t).group(1))
json.dump({"throughput": tps, "latency_ms": {"mean": lat}}, open(sys.argv[3], "w"))
print(f"{sys.argv[2]:<24} {tps:>10.0f} /s   mean latency {lat:.2f} ms")
EOF
}
echo "==> one node: $C connections, $T s per workload; $ROUNDS rounds of null, write-commit, PostgreSQL plain"
EP="$(serve "$WORK/n1.log" --data-dir "$WORK/n1")"
export VELLUM_ENDPOINT="$EP" VELLUM_CERT="$WORK/n1/admin.pem" VELLUM_CA="$WORK/n1/service_cert.pem"
for r in $(seq 1 "$ROUNDS"); do
  bench "null-$r" --workload null --plot "$OUT/null.svg"
  bench "write-commit-$r" --workload write-commit --plot "$OUT/write-commit.svg"
  pg "pg-plain-$r" "$WORK/plain.sql"
done
bench write --workload write --plot "$OUT/write.svg"
bench write-poll --workload write-poll
bench read --workload read
bench receipt --workload receipt
bench range --workload range
stop_nodes

echo "==> three nodes on loopback: write-commit against the primary"
EP="$(serve "$WORK/c1.log" --data-dir "$WORK/c1")"
export VELLUM_ENDPOINT="$EP" VELLUM_CERT="$WORK/c1/admin.pem" VELLUM_CA="$WORK/c1/service_cert.pem"
for i in 2 3; do
  TOKEN="$("$V" node token)"
  serve "$WORK/c$i.log" --data-dir "$WORK/c$i" --join "$EP" --join-token "$TOKEN" >/dev/null
done
for _ in $(seq 1 100); do
  [ "$("$V" node list | grep -c -E 'primary|backup')" = 3 ] && break
  sleep 0.2
done
bench cluster-write-commit --workload write-commit --plot "$OUT/cluster-write-commit.svg"
stop_nodes

echo "==> PostgreSQL hash-chained inserts, pgbench -c $C -T $T"
pg pg-chain "$WORK/chain.sql"

echo "==> ratios"
python3 - "$OUT" "$ROUNDS" <<'EOF'
import json, os, statistics, sys
o, rounds = sys.argv[1], int(sys.argv[2])
r = lambda n: json.load(open(os.path.join(o, n + ".json")))
tp = lambda x: x["throughput"]
med = statistics.median
w, pc, cl, wp = r("write"), r("pg-chain"), r("cluster-write-commit"), r("write-poll")
rs = [(r(f"null-{i}"), r(f"write-commit-{i}"), r(f"pg-plain-{i}")) for i in range(1, rounds + 1)]
for i, (n, wc, pp) in enumerate(rs, 1):
    print(f"round {i}: null {tp(n):.0f} /s, write-commit {tp(wc):.0f} /s (p50 {wc['latency_ms']['p50']:.2f}, "
          f"p99 {wc['latency_ms']['p99']:.2f} ms), PG plain {tp(pp):.0f} /s  ->  durable/null "
          f"{tp(wc) / tp(n):.2f}, durable/PG plain {tp(wc) / tp(pp):.2f}")
# The round with the median write-commit throughput stands for the durable latency figures.
mid = sorted((x[1] for x in rs), key=tp)[len(rs) // 2]
n_med, wc_med, pp_med = (med(tp(x[k]) for x in rs) for k in range(3))
over_null = med(tp(x[1]) / tp(x[0]) for x in rs)
over_pg = med(tp(x[1]) / tp(x[2]) for x in rs)
json.dump({"rounds": rounds, "null": n_med, "write_commit": wc_med, "pg_plain": pp_med,
           "durable_over_null": over_null, "durable_over_pg_plain": over_pg,
           "durable_over_pg_chain": wc_med / tp(pc), "cluster_write_commit": tp(cl)},
          open(os.path.join(o, "summary.json"), "w"), indent=1)
# Durable appends are writes waited on until Committed (a write is answered Pending, before
# its fdatasync); PostgreSQL's inserts are durable when pgbench counts them.
print(f"(medians of {rounds} rounds where marked)")
print(f"durable appends                 {wc_med:.0f} /s median, p99 {mid['latency_ms']['p99']:.2f} ms (target >= 20,000/s, p99 <= 20 ms)")
print(f"durable appends / null endpoint {over_null:.2f} median  (target >= 0.60)")
print(f"durable appends / PG plain      {over_pg:.2f} median  (target >= 1.5)")
print(f"durable appends / PG hash chain {wc_med / tp(pc):.2f}  (target >= 10)")
print(f"write-commit p50                {mid['latency_ms']['p50']:.2f} ms (target <= 5 ms)")
print(f"3-node write-commit             {tp(cl):.0f} /s (target >= 8,000)")
print(f"(writes answered Pending: {tp(w):.0f} /s, {tp(w) / n_med:.2f} of the median null endpoint, {tp(w) / pp_med:.2f} of median PG plain)")
print(f"(durable appends SDK-style, a write then status polls: {tp(wp):.0f} /s, p50 {wp['latency_ms']['p50']:.2f} ms)")
EOF
