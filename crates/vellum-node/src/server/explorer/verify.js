// Receipt verification in the browser (and in Node.js, for the tests): the same checks as
// `vellum receipt --verify` (vellum_core::receipt), step by step.
//
// SHA-256/384/512 and the certificates' ECDSA signatures are checked with WebCrypto. The
// signature over the Merkle root is not: CCF signs the root *as the digest* (no hash over it),
// and WebCrypto's ECDSA always hashes what it verifies, so that verification equation is
// computed here over P-256 and P-384 with BigInt (public data only: nothing secret goes
// through it, so constant time does not matter).

const subtle = globalThis.crypto.subtle;

// ---- bytes ----

export function hexToBytes(hex) {
  if (typeof hex !== "string" || hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new Error("not hex");
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function bytesToHex(b) {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function base64ToBytes(s) {
  const bin = atob(s.replace(/\s+/g, ""));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

export async function digest(alg, bytes) {
  return new Uint8Array(await subtle.digest(alg, bytes));
}

const sha256 = (b) => digest("SHA-256", b);

// ---- DER ----

function tlv(buf, at) {
  if (at + 2 > buf.length) throw new Error("truncated DER");
  const tag = buf[at];
  let len = buf[at + 1];
  let hdr = 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 3 || at + 2 + n > buf.length) throw new Error("bad DER length");
    len = 0;
    for (let i = 0; i < n; i++) len = (len << 8) | buf[at + 2 + i];
    hdr += n;
  }
  const start = at + hdr;
  if (start + len > buf.length) throw new Error("truncated DER");
  return { tag, start, end: start + len, whole: buf.subarray(at, start + len) };
}

function children(buf, node) {
  const out = [];
  let at = node.start;
  while (at < node.end) {
    const c = tlv(buf, at);
    out.push(c);
    at = c.end;
  }
  return out;
}

function pemToDer(pem) {
  const m = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/.exec(pem || "");
  if (!m) throw new Error("not a PEM certificate");
  return base64ToBytes(m[1]);
}

const OID = {
  "2a8648ce3d040302": "SHA-256",
  "2a8648ce3d040303": "SHA-384",
  "2a8648ce3d040304": "SHA-512",
  "2a8648ce3d030107": "P-256",
  "2b81040022": "P-384",
};

// An X.509 certificate: its to-be-signed bytes, signature hash and value, and public key.
export function parseCertificate(pem) {
  const der = pemToDer(pem);
  const root = tlv(der, 0);
  const [tbs, alg, sig] = children(der, root);
  if (!tbs || !alg || !sig || sig.tag !== 0x03) throw new Error("not a certificate");
  const hash = OID[bytesToHex(der.subarray(children(der, alg)[0].start, children(der, alg)[0].end))];
  if (!hash || !hash.startsWith("SHA")) throw new Error("not signed with ECDSA and SHA-2");
  let fields = children(der, tbs);
  if (fields[0].tag === 0xa0) fields = fields.slice(1); // version
  const spki = fields[5];
  const [algId, point] = children(der, spki);
  const curveOid = children(der, algId)[1];
  const curve = curveOid && OID[bytesToHex(der.subarray(curveOid.start, curveOid.end))];
  if (!curve || !curve.startsWith("P-")) throw new Error("not a P-256 or P-384 key");
  const pt = der.subarray(point.start + 1, point.end); // skip the unused-bits byte
  return {
    der,
    tbs: tbs.whole,
    hash,
    signature: der.subarray(sig.start + 1, sig.end),
    spki: spki.whole,
    key: { curve, point: pt },
  };
}

// ---- ECDSA over P-256 and P-384 ----

const CURVES = {
  "P-256": {
    p: 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffffn,
    b: 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604bn,
    n: 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n,
    gx: 0x6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296n,
    gy: 0x4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5n,
    bits: 256,
  },
  "P-384": {
    p: 0xfffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000ffffffffn,
    b: 0xb3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aefn,
    n: 0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n,
    gx: 0xaa87ca22be8b05378eb1c71ef320ad746e1d3b628ba79b9859f741e082542a385502f25dbf55296c3a545e3872760ab7n,
    gy: 0x3617de4a96262c6f5d9e98bf9292dc29f8f41dbd289a147ce9da3113b5f0b8c00a60b1ce1d7e819d7a431d7c90ea0e5fn,
    bits: 384,
  },
};

const mod = (a, m) => ((a % m) + m) % m;

function modpow(b, e, m) {
  let r = 1n;
  b = mod(b, m);
  while (e > 0n) {
    if (e & 1n) r = (r * b) % m;
    b = (b * b) % m;
    e >>= 1n;
  }
  return r;
}

const inv = (a, m) => modpow(a, m - 2n, m); // m is prime

function bigOf(bytes) {
  return bytes.length ? BigInt("0x" + bytesToHex(bytes)) : 0n;
}

// Jacobian coordinates (a = -3 on both curves); Z = 0 is the point at infinity.
function double(c, [x, y, z]) {
  const { p } = c;
  if (z === 0n || y === 0n) return [0n, 1n, 0n];
  const delta = (z * z) % p;
  const gamma = (y * y) % p;
  const beta = (x * gamma) % p;
  const alpha = mod(3n * (x - delta) * (x + delta), p);
  const x3 = mod(alpha * alpha - 8n * beta, p);
  const z3 = mod((y + z) * (y + z) - gamma - delta, p);
  const y3 = mod(alpha * (4n * beta - x3) - 8n * gamma * gamma, p);
  return [x3, y3, z3];
}

function add(c, P, Q) {
  const { p } = c;
  const [x1, y1, z1] = P;
  const [x2, y2, z2] = Q;
  if (z1 === 0n) return Q;
  if (z2 === 0n) return P;
  const z1z1 = (z1 * z1) % p;
  const z2z2 = (z2 * z2) % p;
  const u1 = (x1 * z2z2) % p;
  const u2 = (x2 * z1z1) % p;
  const s1 = (((y1 * z2) % p) * z2z2) % p;
  const s2 = (((y2 * z1) % p) * z1z1) % p;
  const h = mod(u2 - u1, p);
  const r = mod(2n * (s2 - s1), p);
  if (h === 0n) return r === 0n ? double(c, P) : [0n, 1n, 0n];
  const i = (4n * h * h) % p;
  const j = (h * i) % p;
  const v = (u1 * i) % p;
  const x3 = mod(r * r - j - 2n * v, p);
  const y3 = mod(r * (v - x3) - 2n * s1 * j, p);
  const z3 = mod(((z1 + z2) * (z1 + z2) - z1z1 - z2z2) * h, p);
  return [x3, y3, z3];
}

function mul(c, k, P) {
  let R = [0n, 1n, 0n];
  for (let i = BigInt(k.toString(2).length) - 1n; i >= 0n; i--) {
    R = double(c, R);
    if ((k >> i) & 1n) R = add(c, R, P);
  }
  return R;
}

function affineX(c, [x, , z]) {
  const zi = inv(z, c.p);
  return (x * zi * zi) % c.p;
}

// ECDSA verification of a DER signature over `hash` (the digest itself) with `key`.
export function ecdsaVerifyPrehash(key, hash, sigDer) {
  const c = CURVES[key.curve];
  if (!c) return false;
  const pt = key.point;
  const size = c.bits / 8;
  if (pt.length !== 1 + 2 * size || pt[0] !== 4) return false;
  const qx = bigOf(pt.subarray(1, 1 + size));
  const qy = bigOf(pt.subarray(1 + size));
  const { p, b, n } = c;
  if (qx >= p || qy >= p || mod(qy * qy - (qx * qx * qx - 3n * qx + b), p) !== 0n) return false;
  let r;
  let s;
  try {
    const seq = tlv(sigDer, 0);
    if (seq.tag !== 0x30 || seq.end !== sigDer.length) return false;
    const [ri, si, extra] = children(sigDer, seq);
    if (!ri || !si || extra || ri.tag !== 2 || si.tag !== 2) return false;
    r = bigOf(sigDer.subarray(ri.start, ri.end));
    s = bigOf(sigDer.subarray(si.start, si.end));
  } catch {
    return false;
  }
  if (r <= 0n || r >= n || s <= 0n || s >= n) return false;
  let e = bigOf(hash);
  const extraBits = hash.length * 8 - c.bits;
  if (extraBits > 0) e >>= BigInt(extraBits); // the leftmost bits of a longer digest
  const w = inv(s, n);
  const u1 = (mod(e, n) * w) % n;
  const u2 = (r * w) % n;
  const X = add(c, mul(c, u1, [c.gx, c.gy, 1n]), mul(c, u2, [qx, qy, 1n]));
  if (X[2] === 0n) return false;
  return affineX(c, X) % n === r;
}

// ECDSA's DER signature as WebCrypto takes it: r and s, each padded to the curve's size.
function rawSignature(sigDer, curve) {
  const size = CURVES[curve].bits / 8;
  const seq = tlv(sigDer, 0);
  if (seq.tag !== 0x30 || seq.end !== sigDer.length) throw new Error("not an ECDSA signature");
  const ints = children(sigDer, seq);
  if (ints.length !== 2 || ints.some((i) => i.tag !== 2)) throw new Error("not an ECDSA signature");
  const out = new Uint8Array(2 * size);
  ints.forEach((i, k) => {
    let v = sigDer.subarray(i.start, i.end);
    while (v.length > size && v[0] === 0) v = v.subarray(1);
    if (v.length > size) throw new Error("ECDSA integer too long");
    out.set(v, (k + 1) * size - v.length);
  });
  return out;
}

// A certificate's signature by its issuer's key, with WebCrypto (which hashes the
// to-be-signed bytes itself, as certificate signatures want).
async function verifyIssuedBy(cert, issuer) {
  try {
    const key = await subtle.importKey("spki", issuer.spki, { name: "ECDSA", namedCurve: issuer.key.curve }, false, ["verify"]);
    return await subtle.verify({ name: "ECDSA", hash: cert.hash }, key, rawSignature(cert.signature, issuer.key.curve), cert.tbs);
  } catch {
    return false;
  }
}

// ---- the receipt ----

// A field in either spelling (the 2022-05-13 API answers camelCase; CCF's receipt is
// snake_case).
function field(o, camel) {
  const snake = camel.replace(/[A-Z]/g, (m) => "_" + m.toLowerCase());
  return o?.[camel] ?? o?.[snake];
}

// Verifies `receipt` (the `receipt` object of a receipt response, or the response) against
// the service certificate: `{ok, steps: [{step, ok, detail}], error}`. The steps are those of
// `vellum receipt --verify`: leaf, path and root, signature, node id, endorsement; the first
// that fails ends the verification and is named.
export async function verifyReceipt(receiptOrResponse, serviceCertPem) {
  const steps = [];
  const fail = (step, detail) => {
    steps.push({ step, ok: false, detail });
    return { ok: false, steps, error: `${step}: ${detail}` };
  };
  const receipt = receiptOrResponse?.receipt ?? receiptOrResponse;
  if (!receipt || typeof receipt !== "object") return fail("receipt", "not a receipt object");
  // Leaf.
  let leaf;
  const lc = field(receipt, "leafComponents");
  try {
    if (lc) {
      const wsd = hexToBytes(field(lc, "writeSetDigest"));
      const ce = field(lc, "commitEvidence");
      const claims = hexToBytes(field(lc, "claimsDigest"));
      if (wsd.length !== 32 || claims.length !== 32 || typeof ce !== "string") throw new Error();
      leaf = await sha256(concat(wsd, await sha256(new TextEncoder().encode(ce)), claims));
    } else {
      leaf = hexToBytes(field(receipt, "leaf"));
      if (leaf.length !== 32) throw new Error();
    }
  } catch {
    return fail("leaf", "the leaf components are missing or malformed");
  }
  steps.push({ step: "leaf", ok: true, detail: bytesToHex(leaf) });
  // Path and root.
  let root = leaf;
  const proof = field(receipt, "proof") ?? [];
  if (!Array.isArray(proof)) return fail("path", "the proof is not a list");
  for (const [i, el] of proof.entries()) {
    let h;
    try {
      const side = el.left !== undefined && el.right === undefined ? "left" : el.right !== undefined && el.left === undefined ? "right" : null;
      if (!side) throw new Error();
      h = hexToBytes(el[side]);
      if (h.length !== 32) throw new Error();
      root = await sha256(side === "left" ? concat(h, root) : concat(root, h));
    } catch {
      return fail("path", `proof element ${i} is malformed`);
    }
  }
  steps.push({ step: "path", ok: true, detail: `${proof.length} steps to root ${bytesToHex(root)}` });
  // The node certificate and its key.
  let node;
  try {
    node = parseCertificate(field(receipt, "cert"));
  } catch (e) {
    return fail("signature", `the node certificate: ${e.message}`);
  }
  // Signature over the root.
  let sig;
  try {
    sig = base64ToBytes(field(receipt, "signature"));
  } catch {
    return fail("signature", "the signature is not base64");
  }
  if (!ecdsaVerifyPrehash(node.key, root, sig)) {
    return fail("signature", `the node's signature does not sign root ${bytesToHex(root)}`);
  }
  steps.push({ step: "signature", ok: true, detail: `${node.key.curve} signature over the root` });
  // Node id.
  const nodeId = field(receipt, "nodeId");
  if (nodeId !== undefined) {
    const computed = bytesToHex(await sha256(node.spki));
    if (String(nodeId).toLowerCase() !== computed) {
      return fail("node id", `the receipt names node ${nodeId}; its certificate's key is ${computed}`);
    }
    steps.push({ step: "node id", ok: true, detail: computed });
  }
  // Endorsement: node → service endorsements… → the service certificate (self-signed).
  let service;
  try {
    service = parseCertificate(serviceCertPem);
  } catch (e) {
    return fail("endorsement", `the service certificate: ${e.message}`);
  }
  if (!(await verifyIssuedBy(service, service))) {
    return fail("endorsement", "the service certificate is not self-signed (damaged?)");
  }
  const chain = [];
  for (const [i, pem] of (field(receipt, "serviceEndorsements") ?? []).entries()) {
    try {
      chain.push(parseCertificate(pem));
    } catch (e) {
      return fail("endorsement", `service endorsement ${i}: ${e.message}`);
    }
  }
  chain.push(service);
  let current = node;
  for (const [i, issuer] of chain.entries()) {
    if (!(await verifyIssuedBy(current, issuer))) {
      return fail(
        "endorsement",
        i === chain.length - 1
          ? "the node certificate is not endorsed by the service certificate"
          : `the certificate is not endorsed by service endorsement ${i}`,
      );
    }
    current = issuer;
  }
  steps.push({ step: "endorsement", ok: true, detail: "endorsed by the service certificate" });
  return { ok: true, steps, error: null };
}
