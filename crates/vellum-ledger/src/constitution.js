// Vellum's default constitution: CCF's three exports (validate, resolve, apply) over CCF's
// governance tables, with CCF's action names and arguments for what Vellum supports. A
// proposal passes once more than half of the active members vote for it.
//
// Written for Vellum; a service may start with another constitution (`vellum serve
// --constitution FILE`) or replace this one by proposal (`set_constitution`).

const T = {
  constitution: "public:ccf.gov.constitution",
  memberCerts: "public:ccf.gov.members.certs",
  memberInfo: "public:ccf.gov.members.info",
  memberKeys: "public:ccf.gov.members.encryption_public_keys",
  memberAcks: "public:ccf.gov.members.acks",
  userCerts: "public:ccf.gov.users.certs",
  userInfo: "public:ccf.gov.users.info",
  proposalsInfo: "public:ccf.gov.proposals_info",
  signatures: "public:ccf.internal.signatures",
  ledgerUsers: "public:vellum.users",
  nodesInfo: "public:ccf.gov.nodes.info",
  nodeCerts: "public:ccf.gov.nodes.endorsed_certificates",
  joinPolicy: "public:vellum.gov.join_policy",
  jwtIssuers: "public:ccf.gov.jwt.issuers",
  app: "public:vellum.app",
  serviceConfig: "public:ccf.gov.service.config",
  ledgerRoles: "public:vellum.roles",
};

const BUILTIN_ROLES = ["Administrator", "Contributor", "Reader"];

// The longest a node certificate a vote endorses may be valid (CCF's default).
const MAX_NODE_CERT_DAYS = 365;

// A ledger user's id: given, or an ACL certificate fingerprint (upper-case hex pairs joined
// by ':') from a certificate.
function ledgerUserId(args) {
  if (args.cert !== undefined) {
    return ccf.pemToId(args.cert).toUpperCase().match(/../g).join(":");
  }
  return args.user_id;
}

// The key of a table with one value: eight zero bytes, as CCF writes it.
const SINGLETON = new ArrayBuffer(8);

const kv = (name) => ccf.kv[name];
const key = (s) => ccf.strToBuf(s);
const getJson = (table, k) => {
  const v = kv(table).get(key(k));
  return v === undefined ? undefined : ccf.bufToJsonCompatible(v);
};

function fail(message) {
  throw new Error(message);
}

function checkType(value, type, field) {
  const ok =
    type === "array" ? Array.isArray(value) : typeof value === type && value !== null;
  if (!ok) fail(`${field} must be of type ${type} but is ${value === null ? "null" : typeof value}`);
}

function checkOptionalType(value, type, field) {
  if (value !== undefined && value !== null) checkType(value, type, field);
}

function checkCert(value, field) {
  checkType(value, "string", field);
  if (!ccf.crypto.isValidX509CertBundle(value)) fail(`${field} must be a valid X509 certificate (bundle) in PEM format`);
}

function checkId(value, field) {
  checkType(value, "string", field);
  if (!/^[0-9a-f]{64}$/.test(value)) fail(`${field} must be a hex-encoded SHA-256 id (64 lower-case hex characters)`);
}

function checkJwks(jwks) {
  checkType(jwks.keys, "array", "jwks.keys");
  jwks.keys.forEach((k, i) => {
    checkType(k, "object", `jwks.keys[${i}]`);
    checkType(k.kid, "string", `jwks.keys[${i}].kid`);
    checkType(k.kty, "string", `jwks.keys[${i}].kty`);
  });
}

// Active members that hold an encryption key: those recovery shares are issued to.
function recoveryMembers() {
  let n = 0;
  kv(T.memberInfo).forEach((v, k) => {
    if (ccf.bufToJsonCompatible(v).status === "Active" && kv(T.memberKeys).has(k)) n += 1;
  });
  return n;
}

function activeMembers() {
  let n = 0;
  kv(T.memberInfo).forEach((v) => {
    if (ccf.bufToJsonCompatible(v).status === "Active") n += 1;
  });
  return n;
}

const actions = new Map([
  [
    "set_constitution",
    {
      validate: (args) => checkType(args.constitution, "string", "constitution"),
      apply: (args, proposalId) => {
        kv(T.constitution).set(SINGLETON, ccf.jsonCompatibleToBuf(args.constitution));
        // Proposals made under the old constitution are dropped.
        const open = [];
        kv(T.proposalsInfo).forEach((v, k) => {
          const id = ccf.bufToStr(k);
          const info = ccf.bufToJsonCompatible(v);
          if (id !== proposalId && info.state === "Open") open.push([k, info]);
        });
        for (const [k, info] of open) {
          info.state = "Dropped";
          kv(T.proposalsInfo).set(k, ccf.jsonCompatibleToBuf(info));
        }
      },
    },
  ],
  [
    "set_member",
    {
      validate: (args) => {
        checkCert(args.cert, "cert");
        checkOptionalType(args.encryption_pub_key, "string", "encryption_pub_key");
        checkOptionalType(args.member_data, "object", "member_data");
        if (args.recovery_role !== undefined && args.encryption_pub_key === undefined) {
          fail("Cannot specify a recovery_role value when encryption_pub_key is not specified");
        }
      },
      apply: (args) => {
        const id = ccf.pemToId(args.cert);
        kv(T.memberCerts).set(key(id), ccf.strToBuf(args.cert));
        if (args.encryption_pub_key === undefined || args.encryption_pub_key === null) {
          kv(T.memberKeys).delete(key(id));
        } else {
          kv(T.memberKeys).set(key(id), ccf.strToBuf(args.encryption_pub_key));
        }
        // CCF's record, field for field and in its order.
        const info = {};
        info.member_data = args.member_data;
        info.recovery_role = args.recovery_role;
        info.status = "Accepted";
        kv(T.memberInfo).set(key(id), ccf.jsonCompatibleToBuf(info));
        // The state to acknowledge: the root of the latest signature.
        const sig = kv(T.signatures).get(SINGLETON);
        if (sig !== undefined) {
          const ack = { state_digest: ccf.bufToJsonCompatible(sig).root };
          kv(T.memberAcks).set(key(id), ccf.jsonCompatibleToBuf(ack));
        }
      },
    },
  ],
  [
    "remove_member",
    {
      validate: (args) => checkId(args.member_id, "member_id"),
      apply: (args) => {
        // As CCF: the recovery members that remain must still meet the recovery threshold.
        const info = getJson(T.memberInfo, args.member_id);
        if (info !== undefined && info.status === "Active" && kv(T.memberKeys).has(key(args.member_id))) {
          const raw = kv(T.serviceConfig).get(SINGLETON);
          const threshold = raw === undefined ? 1 : ccf.bufToJsonCompatible(raw).recovery_threshold;
          if (recoveryMembers() - 1 < threshold) {
            fail(`removing member ${args.member_id} would leave fewer recovery members than the recovery threshold (${threshold})`);
          }
        }
        for (const t of [T.memberCerts, T.memberInfo, T.memberKeys, T.memberAcks]) {
          kv(t).delete(key(args.member_id));
        }
      },
    },
  ],
  [
    "set_member_data",
    {
      validate: (args) => {
        checkId(args.member_id, "member_id");
        checkType(args.member_data, "object", "member_data");
      },
      apply: (args) => {
        const info = getJson(T.memberInfo, args.member_id);
        if (info === undefined) fail(`Member ${args.member_id} does not exist`);
        info.member_data = args.member_data;
        kv(T.memberInfo).set(key(args.member_id), ccf.jsonCompatibleToBuf(info));
      },
    },
  ],
  [
    "set_user",
    {
      validate: (args) => {
        checkCert(args.cert, "cert");
        checkOptionalType(args.user_data, "object", "user_data");
      },
      apply: (args) => {
        const id = ccf.pemToId(args.cert);
        kv(T.userCerts).set(key(id), ccf.strToBuf(args.cert));
        if (args.user_data === undefined || args.user_data === null) {
          kv(T.userInfo).delete(key(id));
        } else {
          kv(T.userInfo).set(key(id), ccf.jsonCompatibleToBuf({ user_data: args.user_data }));
        }
      },
    },
  ],
  [
    "transition_node_to_trusted",
    {
      // As CCF: a Pending node becomes Trusted, with a certificate the service key endorses
      // from the signing request it joined with; the service then brings it into consensus.
      validate: (args) => {
        checkId(args.node_id, "node_id");
        checkType(args.valid_from, "string", "valid_from");
        if (args.validity_period_days !== undefined) {
          if (!Number.isInteger(args.validity_period_days) || args.validity_period_days < 1) {
            fail("validity_period_days must be an integer of at least 1");
          }
          if (args.validity_period_days > MAX_NODE_CERT_DAYS) {
            fail(`validity_period_days may be at most ${MAX_NODE_CERT_DAYS}`);
          }
        }
      },
      apply: (args) => {
        const info = getJson(T.nodesInfo, args.node_id);
        if (info === undefined) fail(`No such node: ${args.node_id}`);
        if (info.status !== "Pending") return;
        if (info.certificate_signing_request === undefined) fail(`node ${args.node_id} sent no certificate signing request`);
        info.status = "Trusted";
        info.ledger_secret_seqno = ccf.network.getLatestLedgerSecretSeqno();
        kv(T.nodesInfo).set(key(args.node_id), ccf.jsonCompatibleToBuf(info));
        const cert = ccf.network.generateEndorsedCertificate(
          info.certificate_signing_request,
          args.valid_from,
          args.validity_period_days ?? MAX_NODE_CERT_DAYS,
        );
        kv(T.nodeCerts).set(key(args.node_id), ccf.strToBuf(cert));
      },
    },
  ],
  [
    "set_node_data",
    {
      validate: (args) => checkId(args.node_id, "node_id"),
      apply: (args) => {
        const info = getJson(T.nodesInfo, args.node_id);
        if (info === undefined) fail(`Node ${args.node_id} does not exist`);
        info.node_data = args.node_data;
        kv(T.nodesInfo).set(key(args.node_id), ccf.jsonCompatibleToBuf(info));
      },
    },
  ],
  [
    "set_join_policy",
    {
      // Vellum: what admits a joining node, a one-time join token from an operator ("token")
      // or a vote (a transition_node_to_trusted proposal) after it joins Pending ("vote").
      validate: (args) => {
        if (args.admission !== "token" && args.admission !== "vote") fail('admission must be "token" or "vote"');
      },
      apply: (args) => {
        kv(T.joinPolicy).set(SINGLETON, ccf.jsonCompatibleToBuf({ admission: args.admission }));
      },
    },
  ],
  [
    "set_jwt_issuer",
    {
      // As CCF: an issuer whose tokens authenticate users (their `oid` is the user id), with
      // its keys (a JWKS) if given. Vellum also reads `audiences` (default: ACL's). Vellum does
      // not fetch keys itself: `auto_refresh` is refused.
      validate: (args) => {
        checkType(args.issuer, "string", "issuer");
        if (args.issuer.length === 0) fail("issuer must not be empty");
        if (args.auto_refresh === true) fail("auto_refresh is not supported: give the issuer's keys in jwks");
        checkOptionalType(args.jwks, "object", "jwks");
        if (args.jwks !== undefined && args.jwks !== null) checkJwks(args.jwks);
        if (args.audiences !== undefined) {
          checkType(args.audiences, "array", "audiences");
          for (const a of args.audiences) checkType(a, "string", "audiences[]");
        }
      },
      apply: (args) => {
        const metadata = Object.assign({}, args);
        const jwks = metadata.jwks;
        delete metadata.jwks;
        if (jwks) ccf.setJwtPublicSigningKeys(args.issuer, metadata, jwks);
        kv(T.jwtIssuers).set(key(args.issuer), ccf.jsonCompatibleToBuf(metadata));
      },
    },
  ],
  [
    "set_jwt_public_signing_keys",
    {
      validate: (args) => {
        checkType(args.issuer, "string", "issuer");
        checkType(args.jwks, "object", "jwks");
        checkJwks(args.jwks);
      },
      apply: (args) => {
        const metadata = getJson(T.jwtIssuers, args.issuer);
        if (metadata === undefined) fail(`issuer ${args.issuer} not found`);
        ccf.setJwtPublicSigningKeys(args.issuer, metadata, args.jwks);
      },
    },
  ],
  [
    "remove_jwt_issuer",
    {
      validate: (args) => checkType(args.issuer, "string", "issuer"),
      apply: (args) => {
        if (!kv(T.jwtIssuers).has(key(args.issuer))) return;
        kv(T.jwtIssuers).delete(key(args.issuer));
        ccf.removeJwtPublicSigningKeys(args.issuer);
      },
    },
  ],
  [
    "set_recovery_threshold",
    {
      // As CCF: how many recovery members' shares recover the ledger secret; at most the
      // number of recovery members (active members with an encryption key). Shares are issued
      // anew in the same transaction.
      validate: (args) => {
        if (!Number.isInteger(args.recovery_threshold) || args.recovery_threshold < 1 || args.recovery_threshold > 254) {
          fail("recovery_threshold must be an integer from 1 to 254");
        }
      },
      apply: (args) => {
        const n = recoveryMembers();
        if (args.recovery_threshold > n) {
          fail(`a recovery threshold of ${args.recovery_threshold} is more than the ${n} recovery members`);
        }
        const raw = kv(T.serviceConfig).get(SINGLETON);
        if (raw === undefined) fail("the service configuration could not be found");
        const c = ccf.bufToJsonCompatible(raw);
        c.recovery_threshold = args.recovery_threshold;
        kv(T.serviceConfig).set(SINGLETON, ccf.jsonCompatibleToBuf(c));
      },
    },
  ],
  [
    "set_js_app",
    {
      // CCF's action, deploying what Vellum serves: ACL's user-defined endpoints (the bundle
      // that PUT /app/userDefinedEndpoints takes, checked by the same rules).
      validate: (args) => {
        checkType(args.bundle, "object", "bundle");
        checkOptionalType(args.disable_bytecode_cache, "boolean", "disable_bytecode_cache");
        ccf.vellum.normaliseBundle(args.bundle);
      },
      apply: (args) => {
        kv(T.app).set(key("bundle"), ccf.strToBuf(ccf.vellum.normaliseBundle(args.bundle)));
      },
    },
  ],
  [
    "remove_js_app",
    {
      validate: () => {},
      apply: () => {
        const empty = ccf.vellum.normaliseBundle({ metadata: { endpoints: {} }, modules: [] });
        kv(T.app).set(key("bundle"), ccf.strToBuf(empty));
      },
    },
  ],
  [
    // Opens a service: as CCF, the next identity must be the service's own, and a recovered
    // service names the identity it replaced.
    "transition_service_to_open",
    {
      validate: (args) => {
        checkType(args.next_service_identity, "string", "next_service_identity");
        if (args.previous_service_identity !== undefined) {
          checkType(args.previous_service_identity, "string", "previous_service_identity");
        }
      },
      apply: (args) =>
        ccf.node.transitionServiceToOpen(
          args.previous_service_identity === undefined
            ? undefined
            : ccf.strToBuf(args.previous_service_identity),
          ccf.strToBuf(args.next_service_identity),
        ),
    },
  ],
  [
    // Vellum's: a new service identity (the service key and certificate); every trusted node's
    // certificate is endorsed anew, and the identity replaced stays endorsed by the new one.
    "rotate_service_identity",
    {
      validate: (args) => {
        if (Object.keys(args).length > 0) fail("rotate_service_identity takes no arguments");
      },
      apply: () => ccf.vellum.rotateServiceIdentity(),
    },
  ],
  [
    "trigger_ledger_rekey",
    {
      validate: (args) => {
        if (Object.keys(args).length > 0) fail("trigger_ledger_rekey takes no arguments");
      },
      apply: () => ccf.node.triggerLedgerRekey(),
    },
  ],
  [
    "remove_node",
    {
      // As CCF: the node's record says Retired, and the service takes it out of consensus. A
      // node that waits Pending is refused from then on (CCF deletes its record instead; it
      // would then be recorded again the next time it asks).
      validate: (args) => checkId(args.node_id, "node_id"),
      apply: (args) => {
        const info = getJson(T.nodesInfo, args.node_id);
        if (info === undefined || info.status === "Retired") return;
        let remaining = 0;
        kv(T.nodesInfo).forEach((v, k) => {
          if (ccf.bufToStr(k) !== args.node_id && ccf.bufToJsonCompatible(v).status !== "Retired") remaining += 1;
        });
        if (remaining === 0) fail("the last node of the service cannot be retired");
        info.status = "Retired";
        kv(T.nodesInfo).set(key(args.node_id), ccf.jsonCompatibleToBuf(info));
      },
    },
  ],
  [
    "set_ledger_user",
    {
      // Vellum: an ACL user (the same users /app/users manages) with these roles.
      validate: (args) => {
        if (args.cert !== undefined) {
          checkCert(args.cert, "cert");
        } else {
          checkType(args.user_id, "string", "user_id");
          if (args.user_id.length === 0 || args.user_id.length > 256) fail("user_id must be 1 to 256 characters");
        }
        checkType(args.roles, "array", "roles");
        if (args.roles.length === 0) fail("roles must name at least one role");
        for (const r of args.roles) {
          checkType(r, "string", "roles[]");
          const builtin = BUILTIN_ROLES.find((b) => b.toLowerCase() === r.toLowerCase());
          if (builtin === undefined && !kv(T.ledgerRoles).has(key(r))) fail(`role ${r} is not defined`);
        }
      },
      apply: (args) => {
        const roles = [];
        for (const r of args.roles) {
          const name = BUILTIN_ROLES.find((b) => b.toLowerCase() === r.toLowerCase()) || r;
          if (!roles.includes(name)) roles.push(name);
        }
        // Vellum's record: one built-in role as `assignedRole`, anything else as
        // `assignedRoles`.
        const record =
          roles.length === 1 && BUILTIN_ROLES.includes(roles[0])
            ? { assignedRole: roles[0] }
            : { assignedRoles: roles };
        kv(T.ledgerUsers).set(key(ledgerUserId(args)), ccf.jsonCompatibleToBuf(record));
      },
    },
  ],
  [
    "remove_ledger_user",
    {
      validate: (args) => {
        if (args.cert !== undefined) checkCert(args.cert, "cert");
        else checkType(args.user_id, "string", "user_id");
      },
      apply: (args) => {
        kv(T.ledgerUsers).delete(key(ledgerUserId(args)));
      },
    },
  ],
  [
    "remove_user",
    {
      validate: (args) => checkId(args.user_id, "user_id"),
      apply: (args) => {
        kv(T.userCerts).delete(key(args.user_id));
        kv(T.userInfo).delete(key(args.user_id));
      },
    },
  ],
]);

export function validate(input) {
  let proposal;
  try {
    proposal = JSON.parse(input);
  } catch (e) {
    return { valid: false, description: `the proposal is not JSON: ${e.message}` };
  }
  if (proposal === null || !Array.isArray(proposal.actions)) {
    return { valid: false, description: "a proposal is {\"actions\": [{\"name\": ..., \"args\": {...}}, ...]}" };
  }
  const errors = [];
  proposal.actions.forEach((a, i) => {
    const action = a && actions.get(a.name);
    if (action === undefined) {
      errors.push(`actions[${i}]: unknown action ${JSON.stringify(a && a.name)}`);
      return;
    }
    try {
      checkType(a.args, "object", "args");
      action.validate(a.args);
    } catch (e) {
      errors.push(`actions[${i}] (${a.name}): ${e.message}`);
    }
  });
  if (errors.length > 0) return { valid: false, description: errors.join("; ") };
  return { valid: true, description: "OK" };
}

export function resolve(proposal, proposerId, votes) {
  const inFavour = votes.filter((v) => v.vote).length;
  return inFavour > Math.floor(activeMembers() / 2) ? "Accepted" : "Open";
}

export function apply(proposal, proposalId) {
  for (const a of JSON.parse(proposal).actions) {
    actions.get(a.name).apply(a.args, proposalId);
  }
}
