#!/usr/bin/env bash
# Vellum's whole test suite: formatting, lints, unit, property, golden-vector, CLI and
# interop tests (with Microsoft's ccf and azure-confidentialledger Python packages), plus the
# heavy byte-flip audit and the 100,000-entry tests (in the optimised test profile).
#
# Creates Python venvs in .venv (or $VELLUM_VENV; ccf and azure-confidentialledger 1.1.1) and
# .venv-sdk2 (or $VELLUM_VENV_SDK2; azure-confidentialledger 2.0.0b2) on first run.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VELLUM_VENV:-$PWD/.venv}"
if ! "$VENV/bin/python" -c "import ccf.ledger, azure.confidentialledger.receipt, aiohttp, moto, azure.storage.blob, selenium" 2>/dev/null; then
  echo "==> setting up Python venv for interop tests in $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --ignore-requires-python \
    -r tests/interop/requirements.txt
fi
VENV2="${VELLUM_VENV_SDK2:-$PWD/.venv-sdk2}"
if ! "$VENV2/bin/python" -c "import azure.confidentialledger, aiohttp; assert azure.confidentialledger.__version__ == '2.0.0b2'" 2>/dev/null; then
  echo "==> setting up Python venv for the azure-confidentialledger 2.0.0b2 suite in $VENV2"
  python3 -m venv "$VENV2"
  "$VENV2/bin/pip" install --quiet --disable-pip-version-check -r tests/interop/requirements-sdk2.txt
fi
JS="tests/interop/js"
if [ ! -d "$JS/node_modules/@azure-rest/confidential-ledger" ] || [ ! -x "$JS/node_modules/.bin/azurite-blob" ]; then
  echo "==> installing the JS client for interop tests in $JS"
  (cd "$JS" && npm ci --no-audit --no-fund --ignore-scripts)
fi
# Debian packages some tests run for real: SoftHSM2 (the PKCS#11 token the sealing tests keep
# a key in), Prometheus (which scrapes a node's /metrics), Chromium and its WebDriver (the
# explorer, driven in a headless browser), and podman with runc, debootstrap and CNI's dnsname
# plugin (the container image and the 3-node compose file, as root).
# Required wherever they are installed or can be; elsewhere those tests say they are skipped.
WANT=""
[ -e /usr/lib/softhsm/libsofthsm2.so ] || WANT="$WANT softhsm2"
[ -x /usr/bin/prometheus ] || WANT="$WANT prometheus"
[ -x /usr/bin/chromium ] || WANT="$WANT chromium"
[ -x /usr/bin/chromedriver ] || WANT="$WANT chromium-driver"
if [ "$(id -u)" = 0 ]; then
  command -v podman >/dev/null || WANT="$WANT podman"
  command -v runc >/dev/null || WANT="$WANT runc"
  command -v debootstrap >/dev/null || WANT="$WANT debootstrap"
  [ -e /usr/lib/cni/dnsname ] || WANT="$WANT golang-github-containernetworking-plugin-dnsname"
fi
if [ -n "$WANT" ]; then
  echo "==> installing Debian packages for tests:$WANT"
  SUDO=""; if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
  # shellcheck disable=SC2086
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $WANT >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq >/dev/null 2>&1 \
         && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $WANT >/dev/null 2>&1; } \
    || echo "==> could not install$WANT: the tests that need them will be skipped"
fi
if [ -x /usr/bin/prometheus ]; then
  export VELLUM_REQUIRE_PROMETHEUS=1
fi
if [ -e /usr/lib/softhsm/libsofthsm2.so ] && command -v softhsm2-util >/dev/null; then
  export VELLUM_REQUIRE_SOFTHSM=1
fi
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  export VELLUM_REQUIRE_BROWSER=1
fi
export VELLUM_PYTHON="$VENV/bin/python"
export VELLUM_PYTHON_SDK2="$VENV2/bin/python"
export VELLUM_REQUIRE_INTEROP=1
# The partition test puts nodes in network namespaces: required wherever we are root and
# `ip netns` works (it is skipped, with a message, elsewhere).
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null \
   && ip netns add vellum-probe 2>/dev/null && ip netns del vellum-probe \
   && ip link add vellum-probe type bridge 2>/dev/null && ip link del vellum-probe; then
  export VELLUM_REQUIRE_NETNS=1
else
  echo "==> network namespaces unavailable: the partition test will be skipped"
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> the client library depends on no node, ledger-storage or raft crate"
if cargo tree --locked -p vellum-client --prefix none | grep -E "^(vellum-node|vellum-ledger|openraft|redb) "; then
  echo "vellum-client must not depend on the crates above"; exit 1
fi
echo "==> cargo doc (warnings are errors)"
RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps --locked --quiet
echo "==> cargo test, heavy scenarios included (every byte of a Vellum ledger flipped; 100,000"
echo "    entries through the engine and through the full node, verified by vellum audit and"
echo "    ccf.ledger FULL). The test profile optimises the ledger, node and crypto crates (see"
echo "    Cargo.toml), so nothing is built a second time in release mode."
VELLUM_HEAVY=1 cargo test --workspace --locked
echo "==> the container image (packaging/Containerfile) and the 3-node compose file, with podman"
if [ "$(id -u)" = 0 ] && command -v podman >/dev/null && command -v runc >/dev/null \
   && command -v debootstrap >/dev/null; then
  VENV_COMPOSE="${VELLUM_VENV_COMPOSE:-$PWD/.venv-compose}"
  if [ ! -x "$VENV_COMPOSE/bin/podman-compose" ]; then
    python3 -m venv "$VENV_COMPOSE"
    "$VENV_COMPOSE/bin/pip" install --quiet --disable-pip-version-check -r tests/interop/requirements-compose.txt
  fi
  # Bounded as a whole: every step inside is bounded too, this is the backstop.
  COMPOSE="$VENV_COMPOSE/bin/podman-compose" timeout 1200 scripts/container_test.sh
else
  echo "==> skipped: podman, runc and debootstrap are needed, as root"
fi
echo "==> all tests passed"
