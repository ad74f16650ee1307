#!/usr/bin/env bash
# Builds the container image (packaging/Containerfile) and runs it: a node starts in it as the
# non-root user, the host reaches it (`vellum node status`, a write and a read back with the
# admin credential from the volume), its HEALTHCHECK passes, and `podman stop` stops it
# cleanly (exit 0).
#
# Where no container registry can be reached (this project's machines reach package
# registries only), the Debian base image is made with debootstrap from Debian's packages and
# imported; BASE_IMAGE names another. The image takes a binary built beforehand (the
# `prebuilt` stage): BINARY, default target/debug/vellum (built by `cargo test`).
#
# Usage: scripts/container_test.sh   (needs podman, runc, debootstrap; root)
set -euo pipefail
# Stopped from outside (scripts/test.sh bounds the whole test): clean up as on any exit.
trap 'exit 143' TERM INT
cd "$(dirname "$0")/.."
BINARY="${BINARY:-target/debug/vellum}"
[ -x "$BINARY" ] || { echo "container test: $BINARY is not built"; exit 1; }
# runc with the cgroupfs manager: crun refuses hybrid cgroup hierarchies; the ulimits are
# set explicitly because a sandbox may refuse podman's default (1048576 open files).
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs)
RUN_LIMITS=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)
if [ -z "${BASE_IMAGE:-}" ]; then
  BASE_IMAGE=localhost/vellum-debian-base:bookworm
  if ! "${PODMAN[@]}" image exists "$BASE_IMAGE"; then
    echo "==> container test: making $BASE_IMAGE with debootstrap"
    ROOTFS="$(mktemp -d)"
    debootstrap --variant=minbase bookworm "$ROOTFS" http://deb.debian.org/debian >/dev/null
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
    tar -C "$ROOTFS" -c . | "${PODMAN[@]}" import - "$BASE_IMAGE" >/dev/null
    rm -rf "$ROOTFS"
  fi
fi
echo "==> container test: building the image"
"${PODMAN[@]}" build -q --format docker --isolation chroot --target prebuilt \
  --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg BINARY="$BINARY" \
  -t localhost/vellum:test -f packaging/Containerfile . >/dev/null
WORK="$(mktemp -d)"
NAME="vellum-test-$$"
cleanup() {
  "${PODMAN[@]}" rm -f "$NAME" >/dev/null 2>&1 || true
  "${PODMAN[@]}" volume rm -f "$NAME" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
PORT=$((20000 + RANDOM % 20000))
echo "==> container test: running it on port $PORT"
# Host networking: nothing to set up in a sandbox; the node listens on the port given.
"${PODMAN[@]}" run -d --name "$NAME" --network host "${RUN_LIMITS[@]}" \
  -v "$NAME:/var/lib/vellum" --entrypoint vellum localhost/vellum:test \
  serve --listen "127.0.0.1:$PORT" --data-dir /var/lib/vellum >/dev/null 2>"$WORK/podman.log" \
  || { cat "$WORK/podman.log"; exit 1; }
for _ in $(seq 100); do
  "${PODMAN[@]}" exec "$NAME" test -s /var/lib/vellum/admin.pem 2>/dev/null && break
  sleep 0.2
done
[ "$("${PODMAN[@]}" exec "$NAME" id -u)" != 0 ] || { echo "the node runs as root"; exit 1; }
"${PODMAN[@]}" exec "$NAME" cat /var/lib/vellum/service_cert.pem >"$WORK/ca.pem"
"${PODMAN[@]}" exec "$NAME" cat /var/lib/vellum/admin.pem >"$WORK/admin.pem"
export VELLUM_ENDPOINT="https://127.0.0.1:$PORT" VELLUM_CA="$WORK/ca.pem"
for _ in $(seq 50); do "$BINARY" node status >/dev/null 2>&1 && break; sleep 0.2; done
"$BINARY" node status
TX=$("$BINARY" append "from the host" --cert "$WORK/admin.pem" --wait --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["transactionId"])')
[ "$("$BINARY" get "$TX" --cert "$WORK/admin.pem" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["contents"])')" = "from the host" ]
echo "==> container test: wrote and read back $TX"
# The image's HEALTHCHECK (it targets the image's default port: run it against ours).
"${PODMAN[@]}" exec "$NAME" vellum node status --endpoint "https://127.0.0.1:$PORT" \
  --ca /var/lib/vellum/service_cert.pem >/dev/null
HEALTH=$("${PODMAN[@]}" image inspect localhost/vellum:test --format '{{.HealthCheck}}')
case "$HEALTH" in *vellum*node*status*) ;; *) echo "unexpected HEALTHCHECK: $HEALTH"; exit 1;; esac
timeout 120 "${PODMAN[@]}" stop -t 30 "$NAME" >/dev/null 2>&1
CODE=$("${PODMAN[@]}" inspect "$NAME" --format '{{.State.ExitCode}}' 2>/dev/null)
[ "$CODE" = 0 ] || { "${PODMAN[@]}" logs "$NAME" | tail -20; echo "exit code $CODE after podman stop"; exit 1; }
echo "==> container test: passed (image $(du -h "$BINARY" | cut -f1) binary; stopped cleanly)"

# The 3-node compose file, where podman-compose is given (COMPOSE=path): node1 founds the
# service, node2 and node3 join with tokens made from node1's credential, a write through
# node2 (forwarded to the primary) is read back from node3.
if [ -n "${COMPOSE:-}" ]; then
  echo "==> container test: packaging/compose.yaml (3 nodes)"
  podman tag localhost/vellum:test localhost/vellum:latest
  COMPOSE_CMD=("$COMPOSE" --podman-args="--runtime runc --cgroup-manager cgroupfs" -f packaging/compose.yaml)
  compose_down() { timeout 300 "${COMPOSE_CMD[@]}" down -v -t 20 >/dev/null 2>&1 || true; }
  # On failure, what the containers said: a failing step is bounded and explains itself.
  compose_report() {
    podman ps -a --format '{{.Names}} {{.Status}}' 2>/dev/null || true
    for c in vellum_node1_1 vellum_tokens_1 vellum_node2_1 vellum_node3_1; do
      echo "--- $c"; podman logs "$c" 2>&1 | tail -15 || true
    done
  }
  trap 'rc=$?; [ $rc = 0 ] || compose_report; compose_down; cleanup' EXIT
  timeout 300 "${COMPOSE_CMD[@]}" up -d >"$WORK/compose.log" 2>&1 \
    || { tail -20 "$WORK/compose.log"; echo "podman-compose up did not finish"; exit 1; }
  for _ in $(seq 150); do
    podman cp vellum_node1_1:/var/lib/vellum/admin.pem "$WORK/c_admin.pem" 2>/dev/null && break
    sleep 0.2
  done
  podman cp vellum_node1_1:/var/lib/vellum/service_cert.pem "$WORK/c_ca.pem"
  export VELLUM_CA="$WORK/c_ca.pem" VELLUM_CERT="$WORK/c_admin.pem"
  for _ in $(seq 150); do
    [ "$(timeout 10 "$BINARY" node list --endpoint https://127.0.0.1:8441 2>/dev/null | grep -c -E 'Trusted\s+(primary|backup)')" = 3 ] && break
    sleep 0.2
  done
  timeout 30 "$BINARY" node list --endpoint https://127.0.0.1:8441
  TX=$(timeout 60 "$BINARY" append "through node2" --endpoint https://127.0.0.1:8442 --wait --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["transactionId"])')
  for _ in $(seq 50); do
    GOT=$(timeout 10 "$BINARY" get "$TX" --endpoint https://127.0.0.1:8443 --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get("contents",""))' 2>/dev/null || true)
    [ "$GOT" = "through node2" ] && break
    sleep 0.2
  done
  [ "$GOT" = "through node2" ] || { echo "node3 did not serve $TX"; exit 1; }
  echo "==> container test: compose: 3 nodes, $TX written through node2 and read from node3"
fi
