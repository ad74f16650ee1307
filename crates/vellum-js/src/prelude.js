// The `ccf` global of a user-defined function (CCF's JavaScript API, as much of it as ACL's
// UDFs use), over the natives in `__vellum`, which this script removes from the global scope.
// Byte buffers cross to Rust as "binary strings" (one character per byte, 0 to 255).
(() => {
  "use strict";
  const n = globalThis.__vellum;
  delete globalThis.__vellum;
  const toBin = (b) => {
    let u;
    if (b instanceof ArrayBuffer) {
      u = new Uint8Array(b);
    } else if (ArrayBuffer.isView(b)) {
      u = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
    } else {
      throw new TypeError("expected an ArrayBuffer or a typed array");
    }
    let s = "";
    for (let i = 0; i < u.length; i += 8192) {
      s += String.fromCharCode.apply(null, u.subarray(i, i + 8192));
    }
    return s;
  };
  const makeMap = (name) => {
    const map = {
      get: (k) => n.get(name, toBin(k)),
      has: (k) => n.has(name, toBin(k)),
      set: (k, v) => {
        n.set(name, toBin(k), toBin(v));
        return map;
      },
      delete: (k) => n.del(name, toBin(k)),
      clear: () => n.clear(name),
      forEach: (f) => {
        for (const [k, v] of n.entries(name)) f(v, k, map);
      },
    };
    Object.defineProperty(map, "size", { get: () => n.size(name) });
    return Object.freeze(map);
  };
  const maps = new Map();
  const kv = new Proxy(
    {},
    {
      get: (_, name) => {
        if (typeof name !== "string") return undefined;
        if (!maps.has(name)) maps.set(name, makeMap(name));
        return maps.get(name);
      },
      set: () => false,
    },
  );
  const digest = (alg, b) => {
    if (alg !== "SHA-256") throw new TypeError("unsupported digest algorithm " + alg);
    return n.sha256(toBin(b));
  };
  const isValidX509CertBundle = (pem) => n.isValidX509CertBundle(String(pem));
  // No clock: as CCF without `enableUntrustedDateTime`, the time is 0 (1970-01-01).
  const RealDate = Date;
  globalThis.Date = new Proxy(RealDate, {
    construct: (target, args) => (args.length ? new target(...args) : new target(0)),
    apply: () => new RealDate(0).toString(),
  });
  RealDate.now = () => 0;
  // The global `context`: each run's own, made on first use in a run (most runs of a hook
  // never read it, and making it costs more than such a run). Assigning it replaces it for the
  // rest of the run.
  let contextRun = -1;
  let contextValue;
  Object.defineProperty(globalThis, "context", {
    get: () => {
      const run = n.run();
      if (run !== contextRun) {
        contextRun = run;
        contextValue = n.context();
      }
      return contextValue;
    },
    set: (v) => {
      contextRun = n.run();
      contextValue = v;
    },
    enumerable: true,
    configurable: false,
  });
  // No entropy: Math.random is a xorshift generator (32-bit lanes) from the caller's seed, so a run is a function of
  // its inputs.
  let [s0, s1] = n.seed();
  Math.random = () => {
    let x = s0;
    const y = s1;
    s0 = y;
    x ^= x << 23;
    x ^= x >>> 17;
    x ^= y ^ (y >>> 26);
    s1 = x;
    return ((s0 + s1) >>> 0) / 4294967296;
  };
  // Services of the host (a constitution's): arguments and answer cross as JSON.
  const host = (name, ...args) => JSON.parse(n.host(name, JSON.stringify(args)));
  const bufStr = (b) => n.bufToStr(toBin(b));
  const bufJson = (b) => JSON.parse(bufStr(b));
  const jsonBuf = (v) => n.strToBuf(JSON.stringify(v));
  const JWT_KEYS = "public:ccf.gov.jwt.public_signing_keys_metadata_v2";
  const noop = () => {};
  const unavailable = (what) => () => {
    throw new TypeError(what + " is not available in Vellum yet");
  };
  // No logger: console calls are accepted and dropped.
  globalThis.console = Object.freeze({ log: noop, info: noop, warn: noop, error: noop, debug: noop });
  globalThis.ccf = Object.freeze({
    kv,
    strToBuf: (s) => n.strToBuf(String(s)),
    bufToStr: (b) => n.bufToStr(toBin(b)),
    jsonCompatibleToBuf: (v) => n.strToBuf(JSON.stringify(v)),
    bufToJsonCompatible: (b) => JSON.parse(n.bufToStr(toBin(b))),
    crypto: Object.freeze({
      digest,
      verifySignature: (alg, key, sig, data) =>
        n.verifySignature(JSON.stringify(alg), String(key), toBin(sig), toBin(data)),
      isValidX509CertBundle,
    }),
    digest,
    isValidX509CertBundle,
    pemToId: (pem) => n.pemToId(String(pem)),
    rpc: Object.freeze({
      setApplyWrites: (b) => n.setApplyWrites(Boolean(b)),
      setClaimsDigest: (b) => n.setClaimsDigest(toBin(b)),
    }),
    // Offered to a constitution only (elsewhere they throw, as in CCF's applications).
    network: Object.freeze({
      generateEndorsedCertificate: (csr, validFrom, validityPeriodDays) =>
        host("network.generateEndorsedCertificate", String(csr), String(validFrom), Number(validityPeriodDays)),
      getLatestLedgerSecretSeqno: () => host("network.getLatestLedgerSecretSeqno"),
    }),
    // Vellum's own service to a constitution: an app bundle as `/app/userDefinedEndpoints`
    // would store it (normalised JSON text), or an exception saying why it cannot be.
    vellum: Object.freeze({
      normaliseBundle: (bundle) => host("app.normalise", bundle),
      rotateServiceIdentity: () => host("vellum.rotateServiceIdentity"),
    }),
    node: Object.freeze({
      triggerLedgerRekey: () => host("node.triggerLedgerRekey"),
      triggerRecoverySharesRefresh: () => host("node.triggerRecoverySharesRefresh"),
      transitionServiceToOpen: (previous, next) =>
        host(
          "node.transitionServiceToOpen",
          previous === undefined ? null : bufStr(previous),
          next === undefined ? null : bufStr(next),
        ),
    }),
    // CCF's JWT key store: the host turns a JWKS into CCF's records (kid -> the keys with that
    // id, each with its issuer); they are written here like any other write of the run.
    setJwtPublicSigningKeys: (issuer, metadata, jwks) => {
      const records = host("jwt.keyRecords", String(issuer), metadata, jwks);
      const table = kv[JWT_KEYS];
      const byKid = new Map();
      table.forEach((v, k) => {
        const kept = bufJson(v).filter((r) => r.issuer !== issuer);
        byKid.set(bufStr(k), kept);
      });
      for (const [kid, record] of records) {
        if (!byKid.has(kid)) byKid.set(kid, []);
        byKid.get(kid).push(record);
      }
      for (const [kid, list] of byKid) {
        if (list.length) table.set(n.strToBuf(kid), jsonBuf(list));
        else table.delete(n.strToBuf(kid));
      }
    },
    removeJwtPublicSigningKeys: (issuer) => {
      const table = kv[JWT_KEYS];
      const updates = [];
      table.forEach((v, k) => {
        const list = bufJson(v);
        const kept = list.filter((r) => r.issuer !== issuer);
        if (kept.length !== list.length) updates.push([k, kept]);
      });
      for (const [k, kept] of updates) {
        if (kept.length) table.set(k, jsonBuf(kept));
        else table.delete(k);
      }
    },
    // Not provided yet: present (CCF's helper library binds them when it loads), failing when
    // called.
    consensus: Object.freeze({
      getLastCommittedTxId: unavailable("ccf.consensus"),
      getStatusForTxId: unavailable("ccf.consensus"),
      getViewForSeqno: unavailable("ccf.consensus"),
    }),
    historical: Object.freeze({
      getStateRange: unavailable("ccf.historical"),
      dropCachedStates: unavailable("ccf.historical"),
      dropCachedStateRange: unavailable("ccf.historical"),
    }),
    // Untrusted time stays off: the time is 0 whatever a script asks.
    enableUntrustedDateTime: () => false,
    enableMetricsLogging: () => false,
  });
  // An endpoint handler's call: CCF's request object in, CCF's response object out, encoded
  // for the caller (see `decode_response`).
  const binToBuf = n.binToBuf;
  const bufToStrBin = n.bufToStr;
  Object.defineProperty(globalThis, "__vellum_http", {
    value: (f, meta, bodyBin) => {
      const request = Object.assign({}, meta, {
        body: Object.freeze({
          text: () => bufToStrBin(bodyBin),
          json: () => JSON.parse(bufToStrBin(bodyBin)),
          arrayBuffer: () => binToBuf(bodyBin),
        }),
      });
      const r = f(request) || {};
      const headers = [];
      for (const [k, v] of Object.entries(r.headers || {})) headers.push([String(k), String(v)]);
      let t = null;
      let b = "";
      if (r.body !== undefined && r.body !== null) {
        if (typeof r.body === "string") {
          t = "text";
          b = r.body;
        } else if (r.body instanceof ArrayBuffer || ArrayBuffer.isView(r.body)) {
          t = "bin";
          b = toBin(r.body);
        } else {
          t = "json";
          b = JSON.stringify(r.body);
        }
      }
      const s = r.statusCode === undefined ? 200 : Number(r.statusCode);
      return JSON.stringify({ s, h: headers, t, b });
    },
  });
})();
