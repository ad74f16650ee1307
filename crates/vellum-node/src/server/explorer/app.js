// The Vellum explorer: a page per view, drawn from the ledger's own API with the caller's
// credential (a client certificate the browser presents, or a bearer token pasted on the
// sign-in page and kept for this tab only). Everything the ledger holds is shown as text,
// never as markup.

import { verifyReceipt, digest, bytesToHex, parseCertificate } from "./verify.js";

const API = "2024-12-09-preview";
const main = document.getElementById("main");

// ---- elements ----

function h(tag, attrs = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) {
    if (kid === undefined || kid === null || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

// After a navigation, focus moves to the new content (for screen readers and the keyboard);
// on the first load it stays at the top, where the skip link is.
let navigated = false;

function show(title, ...content) {
  document.title = `${title} · Vellum explorer`;
  main.replaceChildren(h("h2", {}, title), ...content);
  if (navigated) main.focus();
}

function txLink(id, collection) {
  const q = collection ? `?collection=${encodeURIComponent(collection)}` : "";
  return h("a", { href: `#/tx/${id}${q}` }, id);
}

// ---- the API ----

const token = () => sessionStorage.getItem("vellum-token");

class ApiError extends Error {
  constructor(status, code, message) {
    super(`${status} ${code}: ${message}`);
    this.status = status;
    this.code = code;
  }
}

async function api(path, params = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params)) if (v) url.searchParams.set(k, v);
  const headers = {};
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const resp = await fetch(url, { headers, credentials: "include" });
  const text = await resp.text();
  let body;
  try {
    body = text ? JSON.parse(text) : {};
  } catch {
    body = { error: { code: "NotJson", message: text.slice(0, 200) } };
  }
  if (!resp.ok) {
    throw new ApiError(resp.status, body?.error?.code ?? "Error", body?.error?.message ?? resp.statusText);
  }
  return body;
}

// Retries while the ledger answers "Loading" (an entry or receipt not ready yet).
async function ready(path, params) {
  for (let i = 0; i < 20; i++) {
    const body = await api(path, params);
    if (body.state !== "Loading") return body;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error("the ledger is still loading this; try again");
}

function failure(e) {
  if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
    return h("p", { class: "error", role: "alert" }, `Not allowed: ${e.message}. `,
      h("a", { href: "#/sign-in" }, "Sign in"), " with a credential whose role allows it.");
  }
  return h("p", { class: "error", role: "alert" }, String(e.message ?? e));
}

// ---- the service certificate, pinned ----

async function serviceCert() {
  const net = await api("/node/network");
  const pem = net.service_certificate;
  const cert = parseCertificate(pem);
  const fingerprint = bytesToHex(await digest("SHA-256", cert.der)).toUpperCase().match(/../g).join(":");
  const pinned = localStorage.getItem("vellum-pinned-fingerprint");
  if (!pinned) localStorage.setItem("vellum-pinned-fingerprint", fingerprint);
  return { pem, fingerprint, pinned: pinned ?? fingerprint, changed: pinned !== null && pinned !== fingerprint };
}

// ---- pages ----

async function servicePage() {
  const [cert, nodes, commit, health] = await Promise.all([
    serviceCert(),
    api("/node/network/nodes"),
    api("/node/commit"),
    api("/node/health"),
  ]);
  const parts = [];
  if (cert.changed) {
    parts.push(h("p", { class: "bad", role: "alert" },
      `The service certificate changed: pinned ${cert.pinned}, now ${cert.fingerprint}. ` +
      "Check with the service's operators before trusting it (a disaster recovery or a " +
      "rotation changes it). ", h("button", { class: "secondary", onclick: () => {
        localStorage.setItem("vellum-pinned-fingerprint", cert.fingerprint);
        route();
      } }, "Pin the new one")));
  }
  parts.push(facts([
    ["Service certificate (SHA-256)", h("span", { class: "mono", id: "fingerprint" }, cert.fingerprint)],
    ["Commit point", commit.transaction_id ?? "none yet"],
    ["This node", `${health.nodeId.slice(0, 16)}… (${health.role})`],
    ["Last signature", `${health.lastSignedSeqno}` + (health.lastSignatureAgeSeconds == null ? "" : ` (${health.lastSignatureAgeSeconds.toFixed(1)} s ago)`)],
  ]));
  parts.push(h("h3", {}, "Nodes"), h("table", {},
    h("thead", {}, h("tr", {}, h("th", {}, "Node id"), h("th", {}, "Status"), h("th", { class: "wide-only" }, "Address"))),
    h("tbody", {}, (nodes.nodes ?? []).map((n) => h("tr", {},
      h("td", { class: "mono" }, n.node_id), h("td", {}, `${n.status}, ${n.role ?? ""}`),
      h("td", { class: "wide-only mono" }, n.address ?? ""))))));
  const gov = h("div", {}, h("p", {}, "Loading the governance…"));
  parts.push(h("h3", {}, "Governance"), gov);
  show("Service", ...parts);
  try {
    const [members, constitution] = await Promise.all([
      api("/app/governance/members", { "api-version": API }),
      api("/app/governance/constitution", { "api-version": API }),
    ]);
    gov.replaceChildren(
      facts([["Members", String(members.members.length)], ["Constitution (SHA-256)", h("span", { class: "mono" }, constitution.digest)]]),
      h("ul", {}, members.members.map((m) => h("li", { class: "mono" }, m.id))),
      h("details", {}, h("summary", {}, "The constitution"), h("pre", {}, constitution.script)));
  } catch (e) {
    gov.replaceChildren(failure(e));
  }
}

async function collectionsPage() {
  const body = await api("/app/collections", { "api-version": API });
  const rows = await Promise.all(body.collections.map(async (c) => {
    let tags = [];
    try {
      tags = (await api("/app/collections/tags", { "api-version": "2026-07-31-preview", collectionId: c.collectionId })).tags;
    } catch { /* tags need a newer ledger, or are still being indexed */ }
    return h("tr", {},
      h("td", {}, h("a", { href: `#/entries?collection=${encodeURIComponent(c.collectionId)}` }, c.collectionId)),
      h("td", { class: "tags" }, tags.map((t) => h("span", {}, h("a", {
        href: `#/entries?collection=${encodeURIComponent(c.collectionId)}&tag=${encodeURIComponent(t)}` }, t)))));
  }));
  show("Collections", rows.length ? h("table", {},
    h("thead", {}, h("tr", {}, h("th", {}, "Collection"), h("th", {}, "Tags"))), h("tbody", {}, rows))
    : h("p", {}, "No collection holds an entry yet."));
}

async function entriesPage(q) {
  const collection = q.get("collection") ?? "";
  const form = h("form", { class: "filters", onsubmit: (ev) => {
    ev.preventDefault();
    const p = new URLSearchParams();
    for (const k of ["collection", "tag", "from", "to"]) {
      const v = form.elements[k].value.trim();
      if (v) p.set(k, v);
    }
    location.hash = `#/entries?${p}`;
  } },
  h("label", {}, "Collection", h("input", { name: "collection", value: collection })),
  h("label", {}, "Tag", h("input", { name: "tag", value: q.get("tag") ?? "" })),
  h("label", {}, "From transaction", h("input", { name: "from", value: q.get("from") ?? "", placeholder: "2.1" })),
  h("label", {}, "To transaction", h("input", { name: "to", value: q.get("to") ?? "", placeholder: "2.500" })),
  h("button", { type: "submit" }, "Show"));
  const params = {
    "api-version": q.get("tag") ? "2026-07-31-preview" : API,
    collectionId: collection, tag: q.get("tag"), fromTransactionId: q.get("from"), toTransactionId: q.get("to"),
  };
  const next = q.get("next");
  const body = next ? await readyUrl(next) : await ready("/app/transactions", params);
  const rows = body.entries.map((e) => h("tr", {},
    h("td", {}, txLink(e.transactionId, e.collectionId)),
    h("td", {}, e.contents)));
  const more = body.nextLink ? h("p", {}, h("a", { href: `#/entries?${new URLSearchParams({ ...Object.fromEntries(q), next: body.nextLink })}`, id: "next-page" }, "Next page")) : null;
  show(`Entries${collection ? ` of ${collection}` : ""}${q.get("tag") ? ` tagged ${q.get("tag")}` : ""}`, form,
    rows.length ? h("table", { id: "entries" }, h("thead", {}, h("tr", {}, h("th", {}, "Transaction"), h("th", {}, "Contents"))),
      h("tbody", {}, rows)) : h("p", {}, "No entries on this page."), more);
}

async function readyUrl(link) {
  const url = new URL(link, location.origin);
  return ready(url.pathname, Object.fromEntries(url.searchParams));
}

function stepsTable(result) {
  return h("table", { id: "steps" },
    h("thead", {}, h("tr", {}, h("th", {}, "Step"), h("th", {}, "Result"), h("th", {}, "Detail"))),
    h("tbody", {}, result.steps.map((s) => h("tr", { "data-step": s.step },
      h("td", {}, s.step), h("td", { class: s.ok ? "ok" : "bad" }, s.ok ? "pass" : "fail"), h("td", { class: "mono" }, s.detail)))));
}

function verdict(result) {
  return h("p", { class: `verdict ${result.ok ? "ok" : "bad"}`, id: "verdict", role: "status" },
    result.ok ? "Receipt verified" : `Receipt rejected at ${result.error}`);
}

async function txPage(id, q) {
  const collection = q.get("collection");
  const [status, cert] = await Promise.all([
    api(`/app/transactions/${encodeURIComponent(id)}/status`, { "api-version": API }),
    serviceCert(),
  ]);
  const parts = [];
  let entry = null;
  try {
    entry = (await ready(`/app/transactions/${encodeURIComponent(id)}`, { "api-version": API, collectionId: collection })).entry;
  } catch (e) {
    parts.push(failure(e));
  }
  // Entries do not carry their tags in the API: a tag query over this one transaction, for
  // each of the collection's tags, tells which it has.
  const tags = [];
  if (entry) {
    try {
      const all = (await api("/app/collections/tags", { "api-version": "2026-07-31-preview", collectionId: entry.collectionId })).tags;
      for (const t of all.slice(0, 20)) {
        const hit = await ready("/app/transactions", {
          "api-version": "2026-07-31-preview", collectionId: entry.collectionId, tag: t, fromTransactionId: id, toTransactionId: id,
        });
        if (hit.entries.some((e) => e.transactionId === id)) tags.push(t);
      }
    } catch { /* an older ledger, or its index still loading: no tags shown */ }
  }
  parts.unshift(facts([
    ["Status", status.state],
    ["Collection", entry?.collectionId ?? collection ?? "(default)"],
    ["Tags", h("span", { class: "tags", id: "tags" }, tags.length ? tags.map((t) => h("span", {}, t)) : "none")],
    ["Contents", h("pre", { id: "contents" }, entry?.contents ?? "")],
  ]));
  const receiptBox = h("div", {}, h("p", {}, status.state === "Committed" ? "Fetching the receipt…" : "A receipt exists once the transaction is committed."));
  parts.push(h("h3", {}, "Receipt"), receiptBox);
  show(`Transaction ${id}`, ...parts);
  if (status.state !== "Committed") return;
  try {
    const receipt = await ready(`/app/transactions/${encodeURIComponent(id)}/receipt`, { "api-version": API });
    const result = await verifyReceipt(receipt, cert.pem);
    const blob = new Blob([JSON.stringify(receipt, null, 2)], { type: "application/json" });
    receiptBox.replaceChildren(
      verdict(result),
      h("p", {}, `Checked in this browser against the pinned service certificate ${cert.pinned}.`),
      stepsTable(result),
      h("p", {}, h("a", { href: URL.createObjectURL(blob), download: `receipt-${id}.json` }, "Download the receipt"),
        " (verify it offline on the ", h("a", { href: "#/verify" }, "verify page"), " or with `vellum receipt --file`)."),
      h("details", {}, h("summary", {}, "The receipt"), h("pre", {}, JSON.stringify(receipt, null, 2))));
  } catch (e) {
    receiptBox.replaceChildren(failure(e));
  }
}

function verifyPage() {
  const receipt = h("textarea", { id: "receipt-input", "aria-label": "Receipt JSON" });
  const cert = h("textarea", { id: "cert-input", "aria-label": "Service certificate PEM" });
  cert.value = localStorage.getItem("vellum-offline-cert") ?? "";
  const out = h("div", { id: "verify-output" });
  const drop = (area) => {
    area.addEventListener("dragover", (ev) => { ev.preventDefault(); area.classList.add("over"); });
    area.addEventListener("dragleave", () => area.classList.remove("over"));
    area.addEventListener("drop", async (ev) => {
      ev.preventDefault();
      area.classList.remove("over");
      const f = ev.dataTransfer.files[0];
      if (f) area.querySelector("textarea").value = await f.text();
    });
    return area;
  };
  const run = async (ev) => {
    ev.preventDefault();
    let parsed;
    try {
      parsed = JSON.parse(receipt.value);
    } catch (e) {
      out.replaceChildren(h("p", { class: "error", role: "alert" }, `The receipt is not JSON: ${e.message}`));
      return;
    }
    localStorage.setItem("vellum-offline-cert", cert.value);
    const result = await verifyReceipt(parsed, cert.value);
    out.replaceChildren(verdict(result), stepsTable(result));
  };
  show("Verify a receipt",
    h("p", {}, "Paste or drop a receipt (the JSON a ledger answers for a transaction's receipt) and the " +
      "service certificate it should chain to. The check runs in this page: nothing is sent anywhere."),
    h("form", { onsubmit: run },
      drop(h("div", { class: "drop" }, h("label", { for: "receipt-input" }, "Receipt (JSON)"), receipt)),
      drop(h("div", { class: "drop" }, h("label", { for: "cert-input" }, "Service certificate (PEM)"), cert)),
      h("button", { type: "submit", id: "verify-button" }, "Verify")),
    out);
}

async function codePage() {
  const parts = [];
  const fns = h("div", {}, "Loading…");
  const eps = h("div", {}, "Loading…");
  parts.push(h("h3", {}, "User-defined functions"), fns, h("h3", {}, "User-defined endpoints"), eps);
  show("Functions and endpoints", ...parts);
  try {
    const list = [];
    let body = await api("/app/userDefinedFunctions", { "api-version": API });
    list.push(...body.functions);
    while (body.nextLink) {
      body = await readyUrl(body.nextLink);
      list.push(...body.functions);
    }
    fns.replaceChildren(list.length ? h("table", { id: "functions" },
      h("thead", {}, h("tr", {}, h("th", {}, "Function"), h("th", {}, "Code"))),
      h("tbody", {}, list.map((f) => h("tr", {}, h("td", { class: "mono" }, f.id),
        h("td", {}, h("details", {}, h("summary", {}, `${f.code.length} characters`), h("pre", {}, f.code)))))))
      : h("p", {}, "No function is stored."));
  } catch (e) {
    fns.replaceChildren(failure(e));
  }
  try {
    const bundle = await api("/app/userDefinedEndpoints", { "api-version": API });
    const rows = Object.entries(bundle.metadata?.endpoints ?? {}).flatMap(([path, methods]) =>
      Object.entries(methods).map(([method, m]) => h("tr", {}, h("td", { class: "mono" }, method.toUpperCase()),
        h("td", { class: "mono" }, `/app${path}`), h("td", {}, m.mode ?? ""),
        h("td", { class: "wide-only" }, (m.authn_policies ?? []).join(", ")))));
    eps.replaceChildren(rows.length ? h("table", { id: "endpoints" },
      h("thead", {}, h("tr", {}, h("th", {}, "Method"), h("th", {}, "Path"), h("th", {}, "Mode"), h("th", { class: "wide-only" }, "Authentication"))),
      h("tbody", {}, rows)) : h("p", {}, "No endpoint is deployed."));
  } catch (e) {
    eps.replaceChildren(failure(e));
  }
}

async function usersPage() {
  const body = await api("/app/ledgerUsers", { "api-version": API });
  const users = body.ledgerUsers ?? body.users ?? [];
  show("Users", h("table", { id: "users" },
    h("thead", {}, h("tr", {}, h("th", {}, "User id"), h("th", {}, "Roles"))),
    h("tbody", {}, users.map((u) => h("tr", {}, h("td", { class: "mono" }, u.userId),
      h("td", {}, (u.assignedRoles ?? [u.assignedRole]).filter(Boolean).join(", ")))))));
}

function randomHex() {
  return bytesToHex(crypto.getRandomValues(new Uint8Array(16)));
}

// Back from the OpenID Connect provider: `#access_token=...&state=...` (implicit flow).
function takeLoginResponse() {
  const p = new URLSearchParams(location.hash.slice(1));
  if (!p.has("access_token") && !p.has("error")) return null;
  const expected = sessionStorage.getItem("vellum-oidc-state");
  sessionStorage.removeItem("vellum-oidc-state");
  history.replaceState(null, "", `${location.pathname}#/sign-in`);
  if (p.has("error")) return `The provider refused the sign-in: ${p.get("error_description") ?? p.get("error")}`;
  if (!expected || p.get("state") !== expected) return "The sign-in response does not answer this page's request: ignored.";
  sessionStorage.setItem("vellum-token", p.get("access_token"));
  return "Signed in through the identity provider.";
}

function signInPage(message) {
  const input = h("textarea", { id: "token-input", "aria-label": "Bearer token" });
  const provider = h("div", {});
  api("/explorer/config.json").then((cfg) => {
    if (!cfg.login) return;
    provider.replaceChildren(h("p", {}, h("button", { type: "button", id: "oidc-button", onclick: () => {
      const state = randomHex();
      sessionStorage.setItem("vellum-oidc-state", state);
      const url = new URL(cfg.login.authorizeUrl);
      url.searchParams.set("response_type", "token");
      url.searchParams.set("client_id", cfg.login.clientId);
      url.searchParams.set("redirect_uri", `${location.origin}/explorer`);
      url.searchParams.set("scope", cfg.login.scope);
      url.searchParams.set("state", state);
      url.searchParams.set("nonce", randomHex());
      location.assign(url);
    } }, "Sign in with the identity provider")));
  }).catch(() => {});
  const status = h("p", { id: "sign-in-status" }, message ?? (token() ? "A token is in use for this tab." : "No token: the browser's client certificate, if it has one, is used."));
  show("Sign in", provider,
    h("p", {}, "With a client certificate, the browser presents it when it connects: nothing to do here. " +
      "With a bearer token from the ledger's OpenID issuer, paste it below; it is kept for this tab only."),
    h("form", { onsubmit: async (ev) => {
      ev.preventDefault();
      const t = input.value.trim();
      if (t) sessionStorage.setItem("vellum-token", t);
      else sessionStorage.removeItem("vellum-token");
      await refreshNav();
      status.textContent = t ? "Signed in with the token." : "Signed out.";
    } }, h("label", { for: "token-input" }, "Bearer token"), input,
      h("p", {}, h("button", { type: "submit", id: "sign-in-button" }, "Use this token"), " ",
        h("button", { type: "button", class: "secondary", onclick: async () => {
          sessionStorage.removeItem("vellum-token");
          input.value = "";
          await refreshNav();
          status.textContent = "Signed out.";
        } }, "Sign out"))),
    status);
}

// The Users page is offered only to callers allowed to list users (the API decides).
async function refreshNav() {
  let admin = false;
  try {
    await api("/app/ledgerUsers", { "api-version": API, maxpagesize: "1" });
    admin = true;
  } catch { /* not allowed */ }
  document.getElementById("nav-users").hidden = !admin;
  document.getElementById("nav-sign-in").textContent = token() ? "Signed in (token)" : "Sign in";
}

async function route() {
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const q = new URLSearchParams(query ?? "");
  try {
    if (path === "/" || path === "") await servicePage();
    else if (path === "/collections") await collectionsPage();
    else if (path === "/entries") await entriesPage(q);
    else if (path.startsWith("/tx/")) await txPage(decodeURIComponent(path.slice(4)), q);
    else if (path === "/verify") verifyPage();
    else if (path === "/users") await usersPage();
    else if (path === "/code") await codePage();
    else if (path === "/sign-in") signInPage();
    else show("Not found", h("p", {}, "No such page. "), h("a", { href: "#/" }, "The service"));
  } catch (e) {
    show("Error", failure(e));
  }
}

window.addEventListener("hashchange", () => {
  navigated = true;
  route();
});
const loggedIn = takeLoginResponse();
refreshNav();
if (loggedIn) signInPage(loggedIn);
else route();
