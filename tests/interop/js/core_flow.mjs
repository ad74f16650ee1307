// Microsoft's @azure-rest/confidential-ledger 1.0.0, unchanged, against a Vellum node:
// identity, write, status, entry, receipt, range list (several pages).
//
// Environment (set by the Rust test): VELLUM_ENDPOINT, VELLUM_SERVICE_CERT, VELLUM_ADMIN_PEM
// (certificate + key), VELLUM_LEDGER_ID, VELLUM_PAGE_SIZE; NODE_EXTRA_CA_CERTS = the service
// certificate (for getLedgerIdentity, which uses Node's default trust store).
// Prints "PASS ..." lines, the receipt as "RECEIPT <json>", and "ALL PASSED".
import { readFileSync } from "node:fs";
// The package is CommonJS: its default export arrives as `.default`.
import cl from "@azure-rest/confidential-ledger";
const ConfidentialLedger = cl.default;
const { getLedgerIdentity, isUnexpected, paginate } = cl;

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`missing ${k}`);
  return v;
};
const endpoint = env("VELLUM_ENDPOINT");
const ledgerId = env("VELLUM_LEDGER_ID");
const page = Number(env("VELLUM_PAGE_SIZE"));
const adminPem = readFileSync(env("VELLUM_ADMIN_PEM"), "utf8");
const cert = adminPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/)[0];
const key = adminPem.match(/-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]+?-----END [A-Z ]*PRIVATE KEY-----\n?/)[0];

function check(name, cond, detail) {
  if (!cond) {
    console.log(`FAIL ${name} ${JSON.stringify(detail ?? "")}`);
    process.exit(1);
  }
  console.log(`PASS ${name}`);
}

const identity = await getLedgerIdentity(ledgerId, endpoint);
check("getLedgerIdentity", identity.ledgerId === ledgerId && identity.ledgerIdentityCertificate.includes("BEGIN CERTIFICATE"), identity);
check("identity matches the pinned certificate", identity.ledgerIdentityCertificate === readFileSync(env("VELLUM_SERVICE_CERT"), "utf8"));

const client = ConfidentialLedger(endpoint, identity.ledgerIdentityCertificate, {
  tlsOptions: { cert, key },
});

const created = await client.path("/app/transactions").post({ body: { contents: "hello from JS" } });
check("create entry", !isUnexpected(created) && created.status === "200", created.body);
const txid = created.headers["x-ms-ccf-transaction-id"];
check("transaction id header", /^\d+\.\d+$/.test(txid), created.headers);

let status;
for (let i = 0; i < 100; i++) {
  status = await client.path("/app/transactions/{transactionId}/status", txid).get();
  if (!isUnexpected(status) && status.body.state === "Committed") break;
  await new Promise((r) => setTimeout(r, 50));
}
check("status Committed", status.body.state === "Committed" && status.body.transactionId === txid, status.body);

const entry = await client.path("/app/transactions/{transactionId}", txid).get();
check("get entry", !isUnexpected(entry) && entry.body.state === "Ready" && entry.body.entry.contents === "hello from JS", entry.body);

const receipt = await client.path("/app/transactions/{transactionId}/receipt", txid).get();
check("get receipt", !isUnexpected(receipt) && receipt.body.state === "Ready" && receipt.body.receipt.signature, receipt.body);
console.log(`RECEIPT ${JSON.stringify(receipt.body)}`);

const coll = "js-range";
const n = page * 2 + 1;
const ids = [];
for (let i = 0; i < n; i++) {
  const r = await client.path("/app/transactions").post({ body: { contents: `js-${i}` }, queryParameters: { collectionId: coll } });
  check(`write ${i} to ${coll}`, !isUnexpected(r));
  ids.push(r.headers["x-ms-ccf-transaction-id"]);
}
for (let i = 0; i < 100; i++) {
  const s = await client.path("/app/transactions/{transactionId}/status", ids[ids.length - 1]).get();
  if (s.body.state === "Committed") break;
  await new Promise((r) => setTimeout(r, 50));
}
const first = await client.path("/app/transactions").get({
  queryParameters: { collectionId: coll, fromTransactionId: ids[0], toTransactionId: ids[ids.length - 1] },
});
check("range first page", !isUnexpected(first) && first.body.entries.length === page && typeof first.body.nextLink === "string", first.body);
const all = [];
for await (const e of paginate(client, first)) all.push(e);
check(`range over ${n} entries in pages of ${page}`, all.map((e) => e.contents).join() === ids.map((_, i) => `js-${i}`).join(), all);

const cols = await client.path("/app/collections").get();
check("list collections", !isUnexpected(cols) && cols.body.collections.some((c) => c.collectionId === coll), cols.body);

const bad = await client.path("/app/transactions/{transactionId}/status", "10000.100000").get();
check("unknown id is unexpected (404)", isUnexpected(bad) && bad.status === "404", bad.body);
console.log("ALL PASSED");
