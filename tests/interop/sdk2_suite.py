"""Runs Microsoft's azure-confidentialledger 2.0.0b2 SDK, unchanged, against a running Vellum
node, at its default api-version (2024-12-09-preview): the examples of its own README (tags,
users, receipt verification with application claims), ledger users with several roles,
custom roles, user-defined functions (stored, run, and run as hooks around a write), and the
paged lists, with the sync and the async (aiohttp) client and with a
certificate and a token credential.

Usage: python sdk2_suite.py   (configuration from the environment, set by the Rust test;
the same variables as sdk_suite.py)

Prints one line per check and exits non-zero on the first failure.
"""

import asyncio
import os
import sys
import time

from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.confidentialledger import (
    ConfidentialLedgerCertificateCredential,
    ConfidentialLedgerClient,
)
from azure.confidentialledger.aio import ConfidentialLedgerClient as AsyncClient
from azure.confidentialledger.receipt import verify_receipt
from azure.confidentialledger.models import (
    JsRuntimeOptions,
    LedgerEntry,
    UserDefinedFunctionExecutionProperties,
    UserDefinedFunctionHook,
)
import azure.confidentialledger

ENDPOINT = os.environ["VELLUM_ENDPOINT"]
CERT = os.environ["VELLUM_SERVICE_CERT"]
ADMIN = os.environ["VELLUM_ADMIN_PEM"]
READER = os.environ["VELLUM_READER_PEM"]
READER_ID = os.environ["VELLUM_READER_ID"]
TOKEN = os.environ["VELLUM_TOKEN"]
TOKEN_OID = os.environ["VELLUM_TOKEN_OID"]
PAGE = int(os.environ["VELLUM_PAGE_SIZE"])
SERVICE_CERT = open(CERT).read()
ACTION = "Microsoft.ConfidentialLedger/ledger/"


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


def plain(x):
    """2.0.0b2 returns models, and its own verify_receipt asserts plain dicts (its README's
    example, passing `result["receipt"]` straight in, fails the same way against Azure's
    service): hand it the JSON the service sent."""
    if isinstance(x, list):
        return [plain(e) for e in x]
    return x.as_dict() if hasattr(x, "as_dict") else x


def cert_client(pem=ADMIN):
    return ConfidentialLedgerClient(
        ENDPOINT,
        ConfidentialLedgerCertificateCredential(certificate_path=pem),
        ledger_certificate_path=CERT,
    )


def tags_flow(c, tag):
    """README "Using Collections and Tags", over more than one page."""
    coll = f"icecream-flavors-{tag.replace('/', '-')}"
    sample_entry = {"contents": "Secret recipe ingredients...!"}
    first = c.create_ledger_entry(entry=sample_entry, collection_id=coll)
    check(f"{tag}: create_ledger_entry with collection_id", first["collectionId"] == coll, first)
    chocolate = []
    for i in range(2 * PAGE + 1):
        r = c.create_ledger_entry(
            entry={"contents": f"scoop {i}"}, collection_id=coll, tags="chocolate,vanilla"
        )
        chocolate.append(r["transactionId"])
        c.create_ledger_entry(entry={"contents": f"plain {i}"}, collection_id=coll, tags="vanilla")
    c.begin_wait_for_commit(chocolate[-1]).result()
    listed = list(c.list_ledger_entries(collection_id=coll, tag="chocolate"))
    check(
        f"{tag}: list_ledger_entries(tag=) returns only tagged entries, over pages",
        [e["transactionId"] for e in listed] == chocolate
        and all(e["contents"].startswith("scoop") for e in listed),
        [e["contents"] for e in listed][:5],
    )
    everything = list(c.list_ledger_entries(collection_id=coll))
    check(f"{tag}: list_ledger_entries without tag", len(everything) == 1 + 2 * len(chocolate))
    # (The README's `get_ledger_entry(collection_id=...)` lacks the transaction id 2.0.0b2
    # requires; the latest entry of a collection is get_current_ledger_entry.)
    latest = c.get_current_ledger_entry(collection_id=coll)
    check(f"{tag}: get_current_ledger_entry(collection_id=)", latest["contents"] == f"plain {2 * PAGE}", latest)
    one = c.get_ledger_entry(transaction_id=chocolate[0], collection_id=coll)
    check(f"{tag}: get_ledger_entry(transaction_id=, collection_id=)", one["entry"]["contents"] == "scoop 0", one)
    for bad in ["a,b,c,d,e,f", "x" * 65]:
        try:
            c.create_ledger_entry(entry={"contents": "refused"}, collection_id=coll, tags=bad)
            check(f"{tag}: bad tags refused", False)
        except HttpResponseError as e:
            check(f"{tag}: tags {bad[:12]!r} refused with 400", e.status_code == 400, e)
    after = list(c.list_ledger_entries(collection_id=coll))
    check(f"{tag}: nothing written by refused writes", len(after) == len(everything))


def receipt_flow(c, tag):
    """README "Verify write transaction receipts", with the application claims."""
    post = c.begin_create_ledger_entry({"contents": f"claimed by {tag}"}).result()
    transaction_id = post["transactionId"]
    get_receipt_result = c.begin_get_receipt(transaction_id).result()
    application_claims = get_receipt_result.get("applicationClaims", None)
    check(
        f"{tag}: receipt carries the entry's claim",
        application_claims
        and application_claims[0]["kind"] == "LedgerEntry"
        and application_claims[0]["ledgerEntry"]["contents"] == f"claimed by {tag}",
        get_receipt_result,
    )
    verify_receipt(
        plain(get_receipt_result["receipt"]),
        SERVICE_CERT,
        application_claims=plain(application_claims),
    )
    check(f"{tag}: verify_receipt(application_claims=)", True)
    forged = plain(application_claims)
    forged[0]["ledgerEntry"]["collectionId"] = "elsewhere"
    try:
        verify_receipt(plain(get_receipt_result["receipt"]), SERVICE_CERT, application_claims=forged)
        check(f"{tag}: a changed claim is refused", False)
    except ValueError:
        check(f"{tag}: a changed claim is refused", True)


def users_flow(c, tag):
    """README "Managing users" (single role), then ledger users with several roles."""
    user_id = f"aad-object-{tag.replace('/', '-')}"
    user = c.create_or_update_user(user_id, {"assignedRole": "Contributor"})
    check(f"{tag}: create_or_update_user", user["assignedRole"] == "Contributor", user)
    user = c.get_user(user_id)
    check(f"{tag}: get_user", user["userId"] == user_id and user["assignedRole"] == "Contributor")
    c.delete_user(user_id)
    try:
        c.get_user(user_id)
        check(f"{tag}: deleted user is gone", False)
    except ResourceNotFoundError:
        check(f"{tag}: deleted user is gone", True)

    role = f"auditor-{tag.replace('/', '-')}"
    c.create_user_defined_role(
        {"roles": [{"roleName": role, "roleActions": [ACTION + "receipts/read"]}]}
    )
    got = c.get_user_defined_role(role_name=role)
    check(
        f"{tag}: create/get_user_defined_role",
        got.roles[0].role_name == role and got.roles[0].role_actions == [ACTION + "receipts/read"],
        got,
    )
    c.update_user_defined_role({"roles": [{"roleName": role, "roleActions": [ACTION + "read"]}]})
    got = c.get_user_defined_role(role_name=role)
    check(
        f"{tag}: update_user_defined_role adds actions",
        sorted(got.roles[0].role_actions) == [ACTION + "read", ACTION + "receipts/read"],
        got,
    )
    u = c.create_or_update_ledger_user(user_id, {"assignedRoles": ["Reader", role]})
    check(
        f"{tag}: create_or_update_ledger_user with two roles",
        u["userId"] == user_id and list(u["assignedRoles"]) == ["Reader", role],
        u,
    )
    u = c.get_ledger_user(user_id)
    check(f"{tag}: get_ledger_user", list(u["assignedRoles"]) == ["Reader", role], u)
    single = c.get_user(user_id)
    check(f"{tag}: the single-role view shows the built-in role", single["assignedRole"] == "Reader")
    listed = {x["userId"]: list(x["assignedRoles"]) for x in c.list_ledger_users()}
    check(f"{tag}: list_ledger_users", listed.get(user_id) == ["Reader", role], listed)
    c.delete_ledger_user(user_id)
    try:
        c.get_ledger_user(user_id)
        check(f"{tag}: delete_ledger_user", False)
    except ResourceNotFoundError:
        check(f"{tag}: delete_ledger_user", True)
    c.delete_user_defined_role(role_name=role)
    try:
        c.get_user_defined_role(role_name=role)
        check(f"{tag}: delete_user_defined_role", False)
    except ResourceNotFoundError:
        check(f"{tag}: delete_user_defined_role", True)


def custom_role_reader_flow(admin):
    """A certificate user whose only role allows reading receipts: refused everything else."""
    admin.create_user_defined_role(
        {"roles": [{"roleName": "receiptReader", "roleActions": [ACTION + "receipts/read"]}]}
    )
    admin.create_or_update_ledger_user(READER_ID, {"assignedRoles": ["receiptReader"]})
    tx = admin.begin_create_ledger_entry({"contents": "for the receipt reader"}).result()[
        "transactionId"
    ]
    reader = cert_client(READER)
    rc = reader.begin_get_receipt(tx).result()
    verify_receipt(plain(rc["receipt"]), SERVICE_CERT, application_claims=plain(rc["applicationClaims"]))
    check("custom role: its one action is allowed", rc["state"] == "Ready")
    for name, call in [
        ("create_ledger_entry", lambda: reader.create_ledger_entry({"contents": "no"})),
        ("get_ledger_entry", lambda: reader.get_ledger_entry(transaction_id=tx)),
        ("get_transaction_status", lambda: reader.get_transaction_status(tx)),
        ("list_ledger_entries", lambda: list(reader.list_ledger_entries())),
        ("list_collections", lambda: list(reader.list_collections())),
        ("list_ledger_users", lambda: list(reader.list_ledger_users())),
        ("get_user_defined_role", lambda: reader.get_user_defined_role(role_name="receiptReader")),
        ("get_constitution", lambda: reader.get_constitution()),
    ]:
        try:
            call()
            check(f"custom role: {name} refused", False)
        except HttpResponseError as e:
            check(f"custom role: {name} refused with 403", e.status_code == 403, e)
    admin.delete_ledger_user(READER_ID)
    admin.delete_user_defined_role(role_name="receiptReader")


def lists_flow(c, tag):
    members = list(c.list_consortium_members())
    check(f"{tag}: list_consortium_members", members and "certificate" in members[0], members)
    for i in range(PAGE):
        c.begin_create_ledger_entry({"contents": "one more"}, collection_id=f"more-{i}").result()
    collections = [x["collectionId"] for x in c.list_collections()]
    check(
        f"{tag}: list_collections (paged)",
        "subledger:0" in collections and len(collections) == len(set(collections)) > PAGE,
        collections,
    )
    users = [x["userId"] for x in c.list_users()]
    check(f"{tag}: list_users (paged)", TOKEN_OID in users, users)


def functions_flow(c, tag):
    """User-defined functions: stored, read, listed (paged) and deleted (running them comes
    with the next step of issue 23)."""
    fid = f"fn-{tag.replace('/', '-')}"
    code = "export function main(name) { return 'hello ' + name; }"
    f = c.create_user_defined_function(fid, {"code": code})
    check(f"{tag}: create_user_defined_function", f["id"] == fid and f["code"] == code, f)
    f = c.create_user_defined_function(fid, {"code": code + "\n"})
    check(f"{tag}: create_user_defined_function replaces", f["code"] == code + "\n", f)
    got = c.get_user_defined_function(fid)
    check(f"{tag}: get_user_defined_function", got.code == code + "\n" and got.id == fid, got)
    for i in range(PAGE + 1):
        c.create_user_defined_function(f"{fid}-{i}", {"code": code})
    ids = [x["id"] for x in c.list_user_defined_functions()]
    check(f"{tag}: list_user_defined_functions (paged)", fid in ids and len(ids) >= PAGE + 2, ids)
    try:
        c.create_user_defined_function(f"{fid}-bad", {"code": "export function main( {"})
        check(f"{tag}: code that does not compile is refused", False)
    except HttpResponseError as e:
        check(f"{tag}: code that does not compile is refused with 400", e.status_code == 400, e)
    for i in range(PAGE + 1):
        c.delete_user_defined_function(f"{fid}-{i}")
    c.delete_user_defined_function(fid)
    try:
        c.get_user_defined_function(fid)
        check(f"{tag}: delete_user_defined_function", False)
    except ResourceNotFoundError:
        check(f"{tag}: delete_user_defined_function", True)


RUN_CODE = """
export function main(name) {
    const m = ccf.kv["public:sdk2"];
    const v = m.get(ccf.strToBuf(name));
    const n = v === undefined ? 1 : Number(ccf.bufToStr(v)) + 1;
    m.set(ccf.strToBuf(name), ccf.strToBuf(String(n)));
    return n;
}
export function read(name) {
    const v = ccf.kv["public:sdk2"].get(ccf.strToBuf(name));
    return v === undefined ? "none" : ccf.bufToStr(v);
}
export function spin() { for (;;) {} }
export function isNumber() {
    if (isNaN(Number(context.contents))) throw new Error("Contents is not a number");
}
export function countWrite() { main("writes:" + context.collectionId); }
"""


def props(export=None, args=None, **options):
    return UserDefinedFunctionExecutionProperties(
        arguments=args,
        exported_function_name=export,
        runtime_options=JsRuntimeOptions(**options) if options else None,
    )


def run_flow(c, tag):
    """Runs functions (`execute_user_defined_function`) and hooks (`preHooks`/`postHooks` on
    `create_ledger_entry`), with the SDK's own models."""
    fid = f"run-{tag.replace('/', '-')}"
    c.create_user_defined_function(fid, {"code": RUN_CODE})
    r = c.execute_user_defined_function(fid, props(args=[fid]))
    check(f"{tag}: execute_user_defined_function", r.status == "Succeeded" and r.result.return_value == "1", r)
    r = c.execute_user_defined_function(fid, props(args=[fid]))
    check(f"{tag}: a run sees the last run's write", r.result.return_value == "2", r)
    r = c.execute_user_defined_function(fid, props("read", [fid]))
    check(f"{tag}: exportedFunctionName", r.result.return_value == "2", r)
    r = c.execute_user_defined_function(fid, props("spin", max_execution_time_ms=200))
    check(
        f"{tag}: runtimeOptions bound a run (Failed, not an HTTP error)",
        r.status == "Failed" and "execution time limit of 200 ms" in r.error.message,
        r,
    )
    r = c.execute_user_defined_function(fid)
    check(f"{tag}: execute without a body", r.status == "Succeeded" and r.result.return_value.isdigit(), r)
    coll = f"hooked-{tag.replace('/', '-')}"
    entry = LedgerEntry(
        contents="42",
        pre_hooks=[UserDefinedFunctionHook(function_id=fid, properties=props("isNumber"))],
        post_hooks=[UserDefinedFunctionHook(function_id=fid, properties=props("countWrite"))],
    )
    w = c.create_ledger_entry(entry, collection_id=coll)
    c.begin_wait_for_commit(w["transactionId"]).wait()
    got = c.get_current_ledger_entry(collection_id=coll)
    r = c.execute_user_defined_function(fid, props("read", [f"writes:{coll}"]))
    check(f"{tag}: hooks run in the write", got["contents"] == "42" and r.result.return_value == "1", (got, r))
    bad = LedgerEntry(
        contents="forty-two",
        pre_hooks=[UserDefinedFunctionHook(function_id=fid, properties=props("isNumber"))],
    )
    try:
        c.create_ledger_entry(bad, collection_id=coll, retry_total=0)
        check(f"{tag}: a throwing pre-hook refuses the write", False)
    except HttpResponseError as e:
        check(
            f"{tag}: a throwing pre-hook refuses the write (500 InternalError)",
            e.status_code == 500 and "Contents is not a number" in str(e),
            e,
        )
    got = c.get_current_ledger_entry(collection_id=coll)
    check(f"{tag}: nothing written", got["contents"] == "42", got)
    c.delete_user_defined_function(fid)


SAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "testdata", "acl-app-samples")


def sample(path):
    with open(os.path.join(SAMPLES, path)) as f:
        return f.read()


def endpoints_flow(c, tag, pem):
    """User-defined endpoints with the SDK's own calls: Microsoft's UDE sample bundle and
    basic JS app deployed (create_user_defined_endpoint), read back, their modules and the
    runtime options read and patched; the apps served, with their client flows."""
    import json
    import requests

    ude = json.loads(sample("ude-sample-bundle/sample-bundle.js"))
    c.create_user_defined_endpoint(ude)
    got = c.get_user_defined_endpoint()
    check(f"{tag}: get_user_defined_endpoint", [m.name for m in got.modules] == ["test.js", "baz/baz.js"], got)
    m = c.get_user_defined_endpoints_module(module_name="baz/baz.js")
    check(f"{tag}: get_user_defined_endpoints_module", m.name == "baz/baz.js" and "Test content" in m.module, m)
    r = requests.get(f"{ENDPOINT}/app/content", verify=CERT)
    check(f"{tag}: the UDE sample's endpoint", r.status_code == 200 and r.json() == {"payload": "Test content"}, r.text)
    o = c.get_runtime_options()
    check(f"{tag}: get_runtime_options", o.max_heap_bytes == 104857600 and o.max_cached_interpreters == 10, o)
    o = c.update_runtime_options(JsRuntimeOptions(max_execution_time_ms=1500))
    check(f"{tag}: update_runtime_options merges", o.max_execution_time_ms == 1500 and o.max_heap_bytes == 104857600, o)
    c.update_runtime_options(JsRuntimeOptions(max_execution_time_ms=1000))
    basic = {
        "metadata": json.loads(sample("basic-app-js/app.json")),
        "modules": [{"name": "src/app.js", "module": sample("basic-app-js/src/app.js")}],
    }
    c.create_user_defined_endpoint(basic)
    r = requests.post(f"{ENDPOINT}/app/echo", json={"value": tag}, verify=CERT, cert=pem)
    check(f"{tag}: the basic app echoes", r.status_code == 200 and r.json() == {"echoed_value": tag}, r.text)
    r = requests.post(f"{ENDPOINT}/app/echo", json={"value": 1}, verify=CERT, cert=pem)
    check(f"{tag}: the basic app refuses a number", r.status_code == 400, r.text)
    try:
        c.create_user_defined_function("while-endpoints", {"code": "export const main = () => 1;"})
        check(f"{tag}: no functions while endpoints are deployed", False)
    except HttpResponseError as e:
        check(f"{tag}: no functions while endpoints are deployed", e.status_code == 400, e)
    c.create_user_defined_endpoint({"metadata": {"endpoints": {}}, "modules": []})
    r = requests.post(f"{ENDPOINT}/app/echo", json={"value": "x"}, verify=CERT, cert=pem)
    check(f"{tag}: the empty bundle removes the app", r.status_code == 404, r.text)


async def async_endpoints_flow(credential, tag):
    import json

    async with AsyncClient(ENDPOINT, credential, ledger_certificate_path=CERT) as c:
        ude = json.loads(sample("ude-sample-bundle/sample-bundle.js"))
        await c.create_user_defined_endpoint(ude)
        got = await c.get_user_defined_endpoint()
        check(f"{tag}: async get_user_defined_endpoint", len(got.modules) == 2, got)
        m = await c.get_user_defined_endpoints_module(module_name="test.js")
        check(f"{tag}: async get_user_defined_endpoints_module", "./baz/baz.js" in m.module, m)
        o = await c.update_runtime_options(JsRuntimeOptions(max_heap_bytes=52428800))
        check(f"{tag}: async update_runtime_options", o.max_heap_bytes == 52428800, o)
        o = await c.get_runtime_options()
        check(f"{tag}: async get_runtime_options", o.max_heap_bytes == 52428800, o)
        await c.update_runtime_options(JsRuntimeOptions(max_heap_bytes=104857600))
        await c.create_user_defined_endpoint({"metadata": {"endpoints": {}}, "modules": []})


async def async_flow(credential, tag):
    async with AsyncClient(ENDPOINT, credential, ledger_certificate_path=CERT) as c:
        r = await c.create_ledger_entry(
            entry={"contents": f"async {tag}"}, collection_id="async", tags="a,b"
        )
        tx = r["transactionId"]
        await (await c.begin_wait_for_commit(tx)).result()
        tagged = [e async for e in c.list_ledger_entries(collection_id="async", tag="a")]
        check(f"{tag}: async tag query", tx in [e["transactionId"] for e in tagged], tagged)
        rc = await (await c.begin_get_receipt(tx)).result()
        verify_receipt(plain(rc["receipt"]), SERVICE_CERT, application_claims=plain(rc["applicationClaims"]))
        check(f"{tag}: async receipt verifies with its claims", True)
        role = f"async-{tag.replace('/', '-')}"
        await c.create_user_defined_role({"roles": [{"roleName": role, "roleActions": ["/x"]}]})
        got = await c.get_user_defined_role(role_name=role)
        check(f"{tag}: async get_user_defined_role", got.roles[0].role_actions == ["/x"], got)
        u = await c.create_or_update_ledger_user("async-user", {"assignedRoles": [role, "Reader"]})
        check(f"{tag}: async create_or_update_ledger_user", list(u["assignedRoles"]) == [role, "Reader"])
        listed = [x["userId"] async for x in c.list_ledger_users()]
        check(f"{tag}: async list_ledger_users", "async-user" in listed, listed)
        await c.delete_ledger_user("async-user")
        await c.delete_user_defined_role(role_name=role)
        check(f"{tag}: async delete_ledger_user, delete_user_defined_role", True)
        fid = f"afn-{tag.replace('/', '-')}"
        f = await c.create_user_defined_function(fid, {"code": "export const main = () => 1;"})
        listed = [x["id"] async for x in c.list_user_defined_functions()]
        check(f"{tag}: async create and list user-defined functions", f["id"] == fid and fid in listed)
        await c.delete_user_defined_function(fid)
        fid = f"arun-{tag.replace('/', '-')}"
        await c.create_user_defined_function(fid, {"code": RUN_CODE})
        r = await c.execute_user_defined_function(fid, props(args=[fid]))
        check(f"{tag}: async execute_user_defined_function", r.result.return_value == "1", r)
        hooked = LedgerEntry(
            contents="7",
            post_hooks=[UserDefinedFunctionHook(function_id=fid, properties=props("countWrite"))],
        )
        await c.create_ledger_entry(hooked, collection_id=fid)
        r = await c.execute_user_defined_function(fid, props("read", [f"writes:{fid}"]))
        check(f"{tag}: async hooks", r.result.return_value == "1", r)
        await c.delete_user_defined_function(fid)


def main():
    check("SDK version", azure.confidentialledger.__version__ == "2.0.0b2", azure.confidentialledger.__version__)
    admin = cert_client()
    admin.create_or_update_ledger_user(TOKEN_OID, {"assignedRoles": ["Administrator"]})
    token = ConfidentialLedgerClient(ENDPOINT, StaticToken(), ledger_certificate_path=CERT)
    tags_flow(admin, "sync/cert")
    tags_flow(token, "sync/token")
    receipt_flow(admin, "sync/cert")
    receipt_flow(token, "sync/token")
    users_flow(admin, "sync/cert")
    users_flow(token, "sync/token")
    custom_role_reader_flow(admin)
    functions_flow(admin, "sync/cert")
    functions_flow(token, "sync/token")
    run_flow(admin, "sync/cert")
    run_flow(token, "sync/token")
    lists_flow(admin, "sync/cert")
    asyncio.run(async_flow(ConfidentialLedgerCertificateCredential(certificate_path=ADMIN), "async/cert"))
    asyncio.run(async_flow(AsyncStaticToken(), "async/token"))
    # Endpoints last: while they are deployed no function may be stored.
    endpoints_flow(admin, "sync/cert", ADMIN)
    endpoints_flow(token, "sync/token", ADMIN)
    asyncio.run(async_endpoints_flow(ConfidentialLedgerCertificateCredential(certificate_path=ADMIN), "async/cert"))
    asyncio.run(async_endpoints_flow(AsyncStaticToken(), "async/token"))
    print("ALL PASSED")


if __name__ == "__main__":
    main()
