"""Runs Microsoft's azure-confidentialledger 1.1.1 SDK, unchanged, against a running Vellum
node: every public method, with the sync and the async (aiohttp) client, with a certificate
credential and with a token credential.

Usage: python sdk_suite.py   (configuration from the environment, set by the Rust test)
  VELLUM_ENDPOINT        https://127.0.0.1:PORT
  VELLUM_SERVICE_CERT    service_cert.pem (the only trust anchor)
  VELLUM_ADMIN_PEM       admin.pem (certificate + key of an Administrator)
  VELLUM_READER_PEM      certificate + key of a user the suite makes a Reader
  VELLUM_READER_ID       that user's id (fingerprint)
  VELLUM_TOKEN           a bearer token whose oid is VELLUM_TOKEN_OID
  VELLUM_TOKEN_OID       the token user's id (the suite makes it a Contributor)
  VELLUM_LEDGER_ID       the ledger id
  VELLUM_PAGE_SIZE       the server's page size (the range test writes more than one page)

Prints one line per check and exits non-zero on the first failure.
"""

import asyncio
import hashlib
import os
import sys
import time

import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.rest import HttpRequest
from azure.confidentialledger import (
    ConfidentialLedgerCertificateCredential,
    ConfidentialLedgerClient,
)
from azure.confidentialledger.aio import ConfidentialLedgerClient as AsyncClient
from azure.confidentialledger.certificate import ConfidentialLedgerCertificateClient
from azure.confidentialledger.receipt import verify_receipt

ENDPOINT = os.environ["VELLUM_ENDPOINT"]
CERT = os.environ["VELLUM_SERVICE_CERT"]
ADMIN = os.environ["VELLUM_ADMIN_PEM"]
READER = os.environ["VELLUM_READER_PEM"]
READER_ID = os.environ["VELLUM_READER_ID"]
TOKEN = os.environ["VELLUM_TOKEN"]
TOKEN_OID = os.environ["VELLUM_TOKEN_OID"]
LEDGER_ID = os.environ["VELLUM_LEDGER_ID"]
PAGE = int(os.environ["VELLUM_PAGE_SIZE"])
SERVICE_CERT = open(CERT).read()


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL {name} {detail}")
        sys.exit(1)
    print(f"PASS {name}")


class StaticToken:
    """A TokenCredential handing out one pre-issued token (what azure-identity would fetch)."""

    def get_token(self, *scopes, **kwargs):
        return AccessToken(TOKEN, int(time.time()) + 3600)


class AsyncStaticToken:
    async def get_token(self, *scopes, **kwargs):
        return AccessToken(TOKEN, int(time.time()) + 3600)

    async def close(self):
        pass

    async def __aenter__(self):
        return self

    async def __aexit__(self, *a):
        pass


def cert_client(pem=ADMIN):
    return ConfidentialLedgerClient(
        ENDPOINT,
        ConfidentialLedgerCertificateCredential(pem),
        ledger_certificate_path=CERT,
    )


def txid_parts(t):
    v, s = t.split(".")
    return int(v), int(s)


def write_flow(c, tag):
    """create / wait / status / receipt / entry / current / begin_create / collections."""
    r = c.create_ledger_entry({"contents": f"hello from {tag}"})
    tx = r["transactionId"]
    check(f"{tag}: create_ledger_entry", r["collectionId"] == "subledger:0" and tx, r)
    st = c.begin_wait_for_commit(tx).result()
    check(f"{tag}: begin_wait_for_commit", st["state"] == "Committed", st)
    st = c.get_transaction_status(tx)
    check(f"{tag}: get_transaction_status", st == {"state": "Committed", "transactionId": tx}, st)
    rc = c.begin_get_receipt(tx).result()
    check(f"{tag}: begin_get_receipt", rc["state"] == "Ready" and rc["transactionId"] == tx, rc)
    verify_receipt(rc["receipt"], SERVICE_CERT)
    check(f"{tag}: verify_receipt against service_cert.pem", True)
    claims = rc.get("applicationClaims")
    check(
        f"{tag}: the receipt reveals the entry's LedgerEntryV1 claim",
        claims
        and claims[0]["ledgerEntry"]["contents"] == f"hello from {tag}"
        and claims[0]["ledgerEntry"]["collectionId"] == "subledger:0",
        rc,
    )
    verify_receipt(rc["receipt"], SERVICE_CERT, application_claims=claims)
    check(f"{tag}: verify_receipt with application_claims", True)
    forged = [dict(claims[0], ledgerEntry=dict(claims[0]["ledgerEntry"], contents="forged"))]
    try:
        verify_receipt(rc["receipt"], SERVICE_CERT, application_claims=forged)
        check(f"{tag}: verify_receipt refuses a changed claim", False)
    except ValueError:
        check(f"{tag}: verify_receipt refuses a changed claim", True)
    one = c.get_receipt(tx)
    check(f"{tag}: get_receipt", one["state"] == "Ready", one)
    e = c.begin_get_ledger_entry(tx).result()
    check(
        f"{tag}: begin_get_ledger_entry",
        e["state"] == "Ready" and e["entry"]["contents"] == f"hello from {tag}",
        e,
    )
    e = c.get_ledger_entry(tx)
    check(f"{tag}: get_ledger_entry", e["entry"]["transactionId"] == tx, e)
    cur = c.get_current_ledger_entry()
    check(
        f"{tag}: get_current_ledger_entry",
        txid_parts(cur["transactionId"]) >= txid_parts(tx),
        cur,
    )
    r2 = c.begin_create_ledger_entry({"contents": "in 132"}, collection_id="132").result()
    check(f"{tag}: begin_create_ledger_entry", r2["collectionId"] == "132", r2)
    e2 = c.get_ledger_entry(r2["transactionId"], collection_id="132")
    check(f"{tag}: get_ledger_entry in a collection", e2["entry"]["contents"] == "in 132", e2)
    cur2 = c.get_current_ledger_entry(collection_id="132")
    check(f"{tag}: current entry in a collection", cur2["contents"] == "in 132", cur2)
    cols = {x["collectionId"] for x in c.list_collections()}
    check(f"{tag}: list_collections", {"subledger:0", "132"} <= cols, cols)
    try:
        c.get_ledger_entry("10000.100000")
        check(f"{tag}: unknown transaction id", False)
    except ResourceNotFoundError:
        check(f"{tag}: unknown transaction id raises ResourceNotFoundError", True)
    try:
        c.begin_wait_for_commit("10000.100000").result()
        check(f"{tag}: wait for an unknown id", False)
    except ResourceNotFoundError as err:
        check(f"{tag}: begin_wait_for_commit of an unknown id gives up", "InvalidTransactionId" in str(err))
    return tx


def range_flow(c, tag):
    coll = f"range-{tag}"
    n = PAGE * 2 + 3
    ids = []
    for i in range(n):
        ids.append(c.create_ledger_entry({"contents": f"{tag}-{i}"}, collection_id=coll)["transactionId"])
    c.begin_wait_for_commit(ids[-1]).result()
    got = list(
        c.list_ledger_entries(
            collection_id=coll, from_transaction_id=ids[0], to_transaction_id=ids[-1]
        )
    )
    check(
        f"{tag}: list_ledger_entries over {n} entries ({PAGE} per page)",
        [g["contents"] for g in got] == [f"{tag}-{i}" for i in range(n)]
        and [g["transactionId"] for g in got] == ids,
        len(got),
    )
    part = list(
        c.list_ledger_entries(
            collection_id=coll, from_transaction_id=ids[1], to_transaction_id=ids[3]
        )
    )
    check(f"{tag}: list_ledger_entries bounds are inclusive", [g["transactionId"] for g in part] == ids[1:4])


def users_flow(c, tag):
    for uid in ["0" * 36, "7F:75:58:60:70:34:01:EF:B0:70:21:8D:E5:4B:6A:64:D4:0D:BA:87:85:1E:3F:DB:25:B1:02:4C:AF:1D:30:1F"]:
        u = c.create_or_update_user(uid, {"assignedRole": "Contributor"})
        check(f"{tag}: create_or_update_user", u == {"assignedRole": "Contributor", "userId": uid}, u)
        check(f"{tag}: get_user", c.get_user(uid)["assignedRole"] == "Contributor")
        c.create_or_update_user(uid, {"assignedRole": "Reader"})
        check(f"{tag}: update role", c.get_user(uid)["assignedRole"] == "Reader")
        c.delete_user(uid)
        try:
            c.get_user(uid)
            check(f"{tag}: deleted user is gone", False)
        except ResourceNotFoundError:
            check(f"{tag}: delete_user", True)


def service_flow(c, tag):
    members = list(c.list_consortium_members())
    check(f"{tag}: list_consortium_members", len(members) == 1 and members[0]["id"] and "BEGIN CERTIFICATE" in members[0]["certificate"], members)
    const = c.get_constitution()
    check(
        f"{tag}: get_constitution digest",
        const["digest"].lower() == hashlib.sha256(const["script"].encode()).hexdigest(),
    )
    q = c.get_enclave_quotes()
    cur = q["currentNodeId"]
    check(
        f"{tag}: get_enclave_quotes",
        cur in q["enclaveQuotes"]
        and all(q["enclaveQuotes"][cur][k] for k in ("mrenclave", "raw", "quoteVersion")),
        q,
    )


def rbac_flow(admin):
    admin.create_or_update_user(READER_ID, {"assignedRole": "Reader"})
    reader = cert_client(READER)
    try:
        reader.create_ledger_entry({"contents": "should not be written"})
        check("rbac: a Reader's write is refused", False)
    except HttpResponseError as err:
        check("rbac: a Reader's write gets 403 NotAllowed", err.status_code == 403 and "NotAllowed" in str(err), err)
    list(reader.list_collections())
    check("rbac: a Reader reads", True)
    try:
        reader.get_user(READER_ID)
        check("rbac: a Reader cannot manage users", False)
    except HttpResponseError as err:
        check("rbac: a Reader cannot manage users (403)", err.status_code == 403)
    r = requests.get(f"{ENDPOINT}/app/collections?api-version=2022-05-13", verify=CERT)
    check(
        "rbac: no credential gets 401",
        r.status_code == 401 and r.json()["error"]["code"] and r.headers.get("x-ms-ccf-transaction-id"),
        r.text,
    )


def identity_flow():
    ic = ConfidentialLedgerCertificateClient(certificate_endpoint=ENDPOINT)
    ident = ic.get_ledger_identity(LEDGER_ID, connection_verify=CERT)
    check(
        "identity: get_ledger_identity",
        ident["ledgerId"] == LEDGER_ID and ident["ledgerTlsCertificate"] == SERVICE_CERT,
        ident,
    )


async def async_flow(credential, tag):
    async with AsyncClient(ENDPOINT, credential, ledger_certificate_path=CERT) as c:
        r = await c.create_ledger_entry({"contents": f"async {tag}"})
        tx = r["transactionId"]
        st = await (await c.begin_wait_for_commit(tx)).result()
        check(f"{tag}: async begin_wait_for_commit", st["state"] == "Committed", st)
        check(f"{tag}: async get_transaction_status", (await c.get_transaction_status(tx))["state"] == "Committed")
        rc = await (await c.begin_get_receipt(tx)).result()
        verify_receipt(rc["receipt"], SERVICE_CERT, application_claims=rc["applicationClaims"])
        check(f"{tag}: async receipt verifies", rc["state"] == "Ready")
        check(f"{tag}: async get_receipt", (await c.get_receipt(tx))["state"] == "Ready")
        e = await (await c.begin_get_ledger_entry(tx)).result()
        check(f"{tag}: async begin_get_ledger_entry", e["entry"]["contents"] == f"async {tag}", e)
        check(f"{tag}: async get_ledger_entry", (await c.get_ledger_entry(tx))["state"] == "Ready")
        check(f"{tag}: async get_current_ledger_entry", "contents" in await c.get_current_ledger_entry())
        r2 = await (await c.begin_create_ledger_entry({"contents": "a2"}, collection_id="async")).result()
        check(f"{tag}: async begin_create_ledger_entry", r2["collectionId"] == "async")
        got = [x async for x in c.list_ledger_entries(collection_id="async")]
        check(f"{tag}: async list_ledger_entries", any(g["transactionId"] == r2["transactionId"] for g in got))
        cols = [x async for x in c.list_collections()]
        check(f"{tag}: async list_collections", any(x["collectionId"] == "async" for x in cols))
        members = [x async for x in c.list_consortium_members()]
        check(f"{tag}: async list_consortium_members", len(members) == 1)
        check(f"{tag}: async get_constitution", "script" in await c.get_constitution())
        check(f"{tag}: async get_enclave_quotes", "currentNodeId" in await c.get_enclave_quotes())
        try:
            await c.get_ledger_entry("10000.100000")
            check(f"{tag}: async unknown id", False)
        except ResourceNotFoundError:
            check(f"{tag}: async unknown id raises ResourceNotFoundError", True)
        return c


async def async_users(credential, tag):
    async with AsyncClient(ENDPOINT, credential, ledger_certificate_path=CERT) as c:
        uid = "1" * 36
        u = await c.create_or_update_user(uid, {"assignedRole": "Reader"})
        check(f"{tag}: async create_or_update_user", u["assignedRole"] == "Reader")
        check(f"{tag}: async get_user", (await c.get_user(uid))["userId"] == uid)
        await c.delete_user(uid)
        check(f"{tag}: async delete_user", True)


def raw_flow(c):
    r = c.send_request(HttpRequest("GET", "/app/collections?api-version=2022-05-13"))
    check("send_request", r.status_code == 200 and "collections" in r.json() and r.headers["x-ms-ccf-transaction-id"])
    check("credential certificate_path", ConfidentialLedgerCertificateCredential(ADMIN).certificate_path == ADMIN)


def main():
    admin = cert_client()
    # The token user becomes a Contributor (made by the certificate Administrator).
    admin.create_or_update_user(TOKEN_OID, {"assignedRole": "Administrator"})
    token = ConfidentialLedgerClient(ENDPOINT, StaticToken(), ledger_certificate_path=CERT)
    write_flow(admin, "sync/cert")
    write_flow(token, "sync/token")
    range_flow(admin, "cert")
    range_flow(token, "token")
    users_flow(admin, "sync/cert")
    users_flow(token, "sync/token")
    service_flow(admin, "sync/cert")
    service_flow(token, "sync/token")
    rbac_flow(admin)
    identity_flow()
    raw_flow(admin)
    with cert_client() as closing:
        list(closing.list_collections())
    check("context manager and close()", True)
    asyncio.run(async_flow(ConfidentialLedgerCertificateCredential(ADMIN), "async/cert"))
    asyncio.run(async_flow(AsyncStaticToken(), "async/token"))
    asyncio.run(async_users(ConfidentialLedgerCertificateCredential(ADMIN), "async/cert"))
    asyncio.run(async_users(AsyncStaticToken(), "async/token"))
    print("ALL PASSED")


if __name__ == "__main__":
    main()
