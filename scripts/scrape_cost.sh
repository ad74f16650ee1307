#!/usr/bin/env bash
# What scraping /metrics costs a loaded node: `vellum bench` write throughput with no scraper
# and with one scraping every INTERVAL seconds, alternated ROUNDS times (default 3) on one
# release node, DURATION seconds each (default 15). The scraper (SCRAPER=prometheus, the
# default where Debian's prometheus is installed, or SCRAPER=curl) runs on the same machine,
# so its own CPU counts against the node: a pessimistic figure on 2 cores.
#
# Usage: [SCRAPER=prometheus|curl] scripts/scrape_cost.sh [ROUNDS] [DURATION] [INTERVAL]
#   INTERVAL defaults to 1 s (Prometheus' default is 15 s).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"; DURATION="${2:-15}"; INTERVAL="${3:-1}"
SCRAPER="${SCRAPER:-$(command -v prometheus >/dev/null && echo prometheus || echo curl)}"
cargo build --release -q -p vellum-cli
V="$PWD/target/release/vellum"
DIR="$(mktemp -d)"; trap 'kill $SERVE 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"' EXIT
PORT=$((20000 + RANDOM % 20000))
"$V" serve --data-dir "$DIR/data" --listen "127.0.0.1:$PORT" >"$DIR/serve.out" 2>"$DIR/serve.log" &
SERVE=$!
for _ in $(seq 100); do [ -s "$DIR/serve.out" ] && break; sleep 0.1; done
export VELLUM_ENDPOINT="https://127.0.0.1:$PORT" VELLUM_CA="$DIR/data/service_cert.pem" VELLUM_CERT="$DIR/data/admin.pem"
"$V" bench --workload write -c 64 -d 5 --json >/dev/null   # warm-up
scrapes() {
  if [ "$SCRAPER" = prometheus ]; then
    # Prometheus keeps its connection open between scrapes, as in production.
    cat >"$DIR/prometheus.yml" <<YML
global: {scrape_interval: ${INTERVAL}s, scrape_timeout: ${INTERVAL}s}
scrape_configs:
  - job_name: vellum
    scheme: https
    tls_config: {ca_file: $VELLUM_CA}
    static_configs: [{targets: ['127.0.0.1:$PORT']}]
YML
    exec prometheus --config.file="$DIR/prometheus.yml" --storage.tsdb.path="$DIR/tsdb" \
      --web.listen-address="127.0.0.1:$((PORT + 1))" >/dev/null 2>&1
  fi
  while true; do
    curl -s --cacert "$VELLUM_CA" "$VELLUM_ENDPOINT/metrics" -o /dev/null || true
    sleep "$INTERVAL"
  done
}
rate() { "$V" bench --workload write -c 64 -d "$DURATION" --json | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["throughput"], 1))'; }
for r in $(seq "$ROUNDS"); do
  plain=$(rate)
  scrapes & SCRAPING=$!
  scraped=$(rate)
  kill $SCRAPING; wait $SCRAPING 2>/dev/null || true
  echo "round $r: no scraper $plain writes/s, $SCRAPER scraping every ${INTERVAL}s $scraped writes/s"
done
echo "metrics page: $(curl -s --cacert "$VELLUM_CA" "$VELLUM_ENDPOINT/metrics" | wc -c) bytes"
# The node's own CPU per scrape, apart from the scraper's: 2,000 scrapes over one kept-alive
# connection to the idle node, its utime+stime (from /proc) before and after.
python3 - "$SERVE" "$PORT" "$VELLUM_CA" <<'PY'
import http.client, os, ssl, sys
pid, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
ctx = ssl.create_default_context(cafile=ca)
c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
n = 2000
c.request("GET", "/metrics"); c.getresponse().read()
before = cpu()
for _ in range(n):
    c.request("GET", "/metrics"); c.getresponse().read()
per = (cpu() - before) / n
print(f"node CPU per scrape: {per * 1e6:.0f} us; at one scrape per 15 s: {per / 15 * 100:.4f}% of one core, per 1 s: {per * 100:.3f}%")
PY
