#!/usr/bin/env bash
# Governance driven by CCF's own member tooling, unchanged: `ccf_cose_sign1` (the `ccf` Python
# package) signs each request and `curl` submits it, as CCF's documentation shows.
#
# usage: gov_with_ccf_tools.sh ENDPOINT SERVICE_CERT M0_CERT M0_KEY M1_CERT M1_KEY USER_CERT [NODE_ID]
# with VELLUM_PYTHON a Python whose bin directory holds ccf_cose_sign1.
#
# Flow: member 0 acks the state digest (Accepted -> Active), proposes member 1 and votes;
# member 1 acks; both vote a user in; if NODE_ID is given (a node that joined and waits
# Pending), both vote to trust it; member 0 proposes a new constitution, which one vote of two
# leaves Open, and member 1's vote passes.
set -euo pipefail
shopt -s inherit_errexit
EP=$1 CA=$2 M0_CERT=$3 M0_KEY=$4 M1_CERT=$5 M1_KEY=$6 USER_CERT=$7 NODE_ID=${8:-}
PY=$VELLUM_PYTHON
SIGN="$(dirname "$PY")/ccf_cose_sign1"
V="api-version=2024-07-01"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

member_id() { "$PY" -c "
import sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes
print(x509.load_pem_x509_certificate(open(sys.argv[1], 'rb').read()).fingerprint(hashes.SHA256()).hex())" "$1"; }
field() { "$PY" -c "import json, sys; print(json.load(sys.stdin)$1)"; }

# sign TYPE CERT KEY CONTENT_FILE [PROPOSAL_ID]
sign() {
  local args=(--ccf-gov-msg-type "$1" --signing-cert "$2" --signing-key "$3" --content "$4"
    --ccf-gov-msg-created_at "$(date -u +%Y-%m-%dT%H:%M:%S+00:00)")
  if [ -n "${5:-}" ]; then args+=(--ccf-gov-msg-proposal_id "$5"); fi
  "$SIGN" "${args[@]}"
}
# post PATH: the signed body on stdin; prints the body, fails unless 2xx.
post() {
  local out code
  out=$(curl -sS --cacert "$CA" -X POST "$EP$1?$V" -H "Content-Type: application/cose" \
    --data-binary @- -w '\n%{http_code}')
  code=${out##*$'\n'}
  if [ "${code:0:1}" != 2 ]; then echo "POST $1: $code ${out%$'\n'*}" >&2; return 1; fi
  printf '%s' "${out%$'\n'*}"
}
get() { curl -sS --fail --cacert "$CA" "$EP$1?$V"; }

# activate CERT KEY: update the state digest, then ack it.
activate() {
  local id digest=""
  id=$(member_id "$1")
  echo '{}' > "$WORK/empty.json"
  for _ in $(seq 1 50); do
    if digest=$(sign state_digest "$1" "$2" "$WORK/empty.json" | post "/gov/members/state-digests/$id:update" 2>/dev/null); then
      break
    fi
    sleep 0.1
  done
  digest=$(printf '%s' "$digest" | field '["stateDigest"]')
  printf '{"stateDigest": "%s"}' "$digest" > "$WORK/ack.json"
  sign ack "$1" "$2" "$WORK/ack.json" | post "/gov/members/state-digests/$id:ack" > /dev/null
  [ "$(get "/gov/service/members/$id" | field '["status"]')" = Active ]
}

# vote CERT KEY PROPOSAL_ID: prints the proposal's state after the ballot.
vote() {
  echo '{"ballot": "export function vote (proposal, proposerId) { return true }"}' > "$WORK/ballot.json"
  sign ballot "$1" "$2" "$WORK/ballot.json" "$3" \
    | post "/gov/members/proposals/$3/ballots/$(member_id "$1"):submit" | field '["proposalState"]'
}

M0=$(member_id "$M0_CERT")
M1=$(member_id "$M1_CERT")

activate "$M0_CERT" "$M0_KEY"
echo "member 0 ($M0) acked: Active"

"$PY" -c "import json, sys; print(json.dumps({'actions': [{'name': 'set_member', 'args': {'cert': open(sys.argv[1]).read()}}]}))" "$M1_CERT" > "$WORK/add.json"
P=$(sign proposal "$M0_CERT" "$M0_KEY" "$WORK/add.json" | post /gov/members/proposals:create | field '["proposalId"]')
[ "$(vote "$M0_CERT" "$M0_KEY" "$P")" = Accepted ]
[ "$(get "/gov/service/members/$M1" | field '["status"]')" = Accepted ]
echo "member 1 ($M1) added by proposal $P"

activate "$M1_CERT" "$M1_KEY"
echo "member 1 acked: Active"

# pass FILE: member 0 proposes, one vote of two leaves it Open, member 1's vote passes it.
pass() {
  local p
  p=$(sign proposal "$M0_CERT" "$M0_KEY" "$1" | post /gov/members/proposals:create | field '["proposalId"]')
  [ "$(vote "$M0_CERT" "$M0_KEY" "$p")" = Open ]
  [ "$(vote "$M1_CERT" "$M1_KEY" "$p")" = Accepted ]
  echo "$p"
}

"$PY" -c "import json, sys; print(json.dumps({'actions': [{'name': 'set_user', 'args': {'cert': open(sys.argv[1]).read()}}]}))" "$USER_CERT" > "$WORK/user.json"
P=$(pass "$WORK/user.json")
echo "a user ($(member_id "$USER_CERT")) added by proposal $P, two votes of two"

if [ -n "$NODE_ID" ]; then
  [ "$(get "/gov/service/nodes/$NODE_ID" | field '["status"]')" = Pending ]
  printf '{"actions": [{"name": "transition_node_to_trusted", "args": {"node_id": "%s", "valid_from": "%s"}}]}' \
    "$NODE_ID" "$(date -u +%Y%m%d%H%M%SZ)" > "$WORK/trust.json"
  P=$(pass "$WORK/trust.json")
  [ "$(get "/gov/service/nodes/$NODE_ID" | field '["status"]')" = Trusted ]
  CERT=$(get "/gov/service/nodes/$NODE_ID" | field '["certificate"]')
  [[ $CERT == *"BEGIN CERTIFICATE"* ]]
  echo "node $NODE_ID, which joined Pending, trusted by proposal $P"
fi

get /gov/service/constitution > "$WORK/constitution.js"
echo "// replaced with CCF's member tools" >> "$WORK/constitution.js"
"$PY" -c "import json, sys; print(json.dumps({'actions': [{'name': 'set_constitution', 'args': {'constitution': open(sys.argv[1]).read()}}]}))" "$WORK/constitution.js" > "$WORK/constitution.json"
P=$(sign proposal "$M0_CERT" "$M0_KEY" "$WORK/constitution.json" | post /gov/members/proposals:create | field '["proposalId"]')
[ "$(vote "$M0_CERT" "$M0_KEY" "$P")" = Open ]
[ "$(get "/gov/members/proposals/$P" | field '["proposalState"]')" = Open ]
echo "one vote of two active members: proposal $P stays Open"
[ "$(vote "$M1_CERT" "$M1_KEY" "$P")" = Accepted ]
NOW=$(get /gov/service/constitution)
[[ $NOW == *"replaced with CCF's member tools"* ]]
echo "a second vote passes it: the constitution is replaced"
echo "gov flow with ccf_cose_sign1 and curl: ok"
