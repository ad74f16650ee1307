//! CCF's governance tables (`public:ccf.gov.*`) as of the last applied transaction, key by key
//! as the ledger holds them: members and their acks, proposals and their ballots, the
//! constitution, the service, nodes and users (`ccf-notes.md` §9). The constitution reads and
//! writes these tables as they are, so they are kept whole, not parsed into Vellum's own
//! records; the typed readers below serve the `/gov` API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vellum_core::entry::MapWrites;
use vellum_core::entry::SINGLETON_KEY;
use vellum_core::tables::{self, ProposalInfo};

/// The prefix of CCF's governance tables.
pub const PREFIX: &str = "public:ccf.gov.";
/// The prefix of Vellum's own governance settings (the join policy).
pub const VELLUM_PREFIX: &str = "public:vellum.gov.";

/// Whether map `name` is a governance table (CCF's or Vellum's), or CCF's recovery shares
/// (governance issues them and members read theirs through `/gov`).
pub fn follows(name: &str) -> bool {
    name.starts_with(PREFIX)
        || name.starts_with(VELLUM_PREFIX)
        || name == tables::RECOVERY_SHARES.name()
}

/// Every governance table: name → key → value, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GovTables(pub BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>);

/// How the tables are kept in the index: hex keys and values (keys may be any bytes).
#[derive(Serialize, Deserialize)]
struct Stored(BTreeMap<String, Vec<(String, String)>>);

impl GovTables {
    /// Applies a committed write; true if `m` was a governance table.
    pub fn apply(&mut self, m: &MapWrites) -> bool {
        if !follows(&m.name) {
            return false;
        }
        let t = self.0.entry(m.name.clone()).or_default();
        for (k, v) in &m.writes {
            t.insert(k.clone(), v.clone());
        }
        for k in &m.removes {
            t.remove(k);
        }
        if t.is_empty() {
            self.0.remove(&m.name);
        }
        true
    }

    /// The tables as JSON, for the index.
    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        let stored = Stored(
            self.0
                .iter()
                .map(|(name, t)| {
                    let rows = t
                        .iter()
                        .map(|(k, v)| (hex::encode(k), hex::encode(v)))
                        .collect();
                    (name.clone(), rows)
                })
                .collect(),
        );
        serde_json::to_vec(&stored)
    }

    /// The tables from [`GovTables::to_json`]'s JSON.
    pub fn from_json(bytes: &[u8]) -> Result<GovTables, String> {
        let Stored(stored) = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let mut out = BTreeMap::new();
        for (name, rows) in stored {
            let mut t = BTreeMap::new();
            for (k, v) in rows {
                let k = hex::decode(&k).map_err(|e| format!("{name}: key: {e}"))?;
                let v = hex::decode(&v).map_err(|e| format!("{name}: value: {e}"))?;
                t.insert(k, v);
            }
            out.insert(name, t);
        }
        Ok(GovTables(out))
    }

    /// The value at `key` in table `name`.
    pub fn get(&self, name: &str, key: &[u8]) -> Option<&[u8]> {
        self.0.get(name)?.get(key).map(Vec::as_slice)
    }

    /// The rows of table `name`, in key order.
    pub fn rows(&self, name: &str) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.0
            .get(name)
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// CCF's `/gov/service/jwk`: the trusted issuers, their keys (PEM) by `kid`, and CA
    /// bundles (none in Vellum).
    pub fn jwk_json(&self) -> serde_json::Value {
        use base64::Engine as _;
        let mut issuers = serde_json::Map::new();
        for (iss, meta) in self.rows(tables::JWT_ISSUERS.name()) {
            let meta: serde_json::Value = serde_json::from_slice(meta).unwrap_or_default();
            let mut i =
                serde_json::json!({"autoRefresh": meta["auto_refresh"].as_bool().unwrap_or(false)});
            if let Some(b) = meta["ca_cert_bundle_name"].as_str() {
                i["caCertBundleName"] = b.into();
            }
            issuers.insert(String::from_utf8_lossy(iss).into_owned(), i);
        }
        let mut keys = serde_json::Map::new();
        for (kid, v) in self.rows(tables::JWT_PUBLIC_SIGNING_KEYS.name()) {
            let list: Vec<serde_json::Value> = serde_json::from_slice(v).unwrap_or_default();
            let described: Vec<serde_json::Value> = list
                .iter()
                .map(|r| {
                    let der = r["public_key"]
                        .as_str()
                        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                        .unwrap_or_default();
                    serde_json::json!({
                        "publicKey": pem::encode(&pem::Pem::new("PUBLIC KEY", der)),
                        "issuer": r["issuer"],
                        "constraint": r["constraint"],
                    })
                })
                .collect();
            keys.insert(String::from_utf8_lossy(kid).into_owned(), described.into());
        }
        serde_json::json!({"issuers": issuers, "keys": keys, "caCertBundles": {}})
    }

    /// A user of CCF's users tables as `/gov/service/users` describes it.
    pub fn user(&self, id: &str) -> Option<serde_json::Value> {
        let cert = self.get(tables::USERS_CERTS.name(), id.as_bytes())?;
        let info: serde_json::Value = self
            .get(tables::USERS_INFO.name(), id.as_bytes())
            .and_then(|v| serde_json::from_slice(v).ok())
            .unwrap_or_default();
        Some(serde_json::json!({
            "userId": id,
            "certificate": String::from_utf8_lossy(cert),
            "userData": info,
        }))
    }

    /// Every user of CCF's users tables.
    pub fn users(&self) -> Vec<serde_json::Value> {
        self.rows(tables::USERS_CERTS.name())
            .filter_map(|(k, _)| self.user(std::str::from_utf8(k).ok()?))
            .collect()
    }

    /// The service's status, as `public:ccf.gov.service.info` holds it.
    pub fn service_status(&self) -> Option<tables::ServiceStatus> {
        #[derive(Deserialize)]
        struct Status {
            status: tables::ServiceStatus,
        }
        let v = self.get(tables::SERVICE_INFO.name(), &SINGLETON_KEY)?;
        serde_json::from_slice::<Status>(v).ok().map(|s| s.status)
    }

    /// Whether the service is being recovered (not open to its users yet).
    pub fn recovering(&self) -> bool {
        matches!(
            self.service_status(),
            Some(
                tables::ServiceStatus::Recovering | tables::ServiceStatus::WaitingForRecoveryShares
            )
        )
    }

    /// The recovery shares as last issued.
    pub fn recovery_shares(&self) -> Option<tables::RecoverySharesInfo> {
        let v = self.get(tables::RECOVERY_SHARES.name(), &SINGLETON_KEY)?;
        tables::RECOVERY_SHARES.decode_value(v).ok()
    }

    /// Whether the members trust any token issuer.
    pub fn has_jwt_issuers(&self) -> bool {
        self.rows(tables::JWT_ISSUERS.name()).next().is_some()
    }

    /// The token issuer `iss` the members trust, with its audiences and keys.
    pub fn jwt_issuer(&self, iss: &str) -> Option<crate::server::auth::LedgerIssuer> {
        let meta: serde_json::Value =
            serde_json::from_slice(self.get(tables::JWT_ISSUERS.name(), iss.as_bytes())?).ok()?;
        let audiences = meta["audiences"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mut keys = Vec::new();
        for (kid, v) in self.rows(tables::JWT_PUBLIC_SIGNING_KEYS.name()) {
            let Ok(list) = serde_json::from_slice::<Vec<serde_json::Value>>(v) else {
                continue;
            };
            for rec in list.iter().filter(|r| r["issuer"] == iss) {
                let der = rec["public_key"].as_str().and_then(|b| {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD.decode(b).ok()
                });
                if let Some(der) = der {
                    keys.push((String::from_utf8_lossy(kid).into_owned(), der));
                }
            }
        }
        Some(crate::server::auth::LedgerIssuer::new(audiences, keys))
    }

    /// How the service admits joining nodes.
    pub fn join_policy(&self) -> tables::JoinPolicy {
        self.get(tables::JOIN_POLICY.name(), &SINGLETON_KEY)
            .and_then(|v| tables::JOIN_POLICY.decode_value(v).ok())
            .unwrap_or_default()
    }

    /// The constitution's source.
    pub fn constitution(&self) -> Option<String> {
        let v = self.get(tables::CONSTITUTION.name(), &SINGLETON_KEY)?;
        tables::CONSTITUTION.decode_value(v).ok()
    }

    /// A member as CCF's `/gov/service/members` describes it, or `None` if unknown.
    pub fn member(&self, id: &str) -> Option<serde_json::Value> {
        let info: serde_json::Value =
            serde_json::from_slice(self.get(tables::MEMBERS_INFO.name(), id.as_bytes())?).ok()?;
        let mut m = serde_json::json!({
            "memberId": id,
            "status": info.get("status").cloned().unwrap_or_default(),
            "memberData": info.get("member_data").cloned().unwrap_or_default(),
        });
        if let Some(cert) = self.get(tables::MEMBERS_CERTS.name(), id.as_bytes()) {
            m["certificate"] = String::from_utf8_lossy(cert).into();
        }
        let key = self.get(tables::MEMBERS_ENCRYPTION_PUBLIC_KEYS.name(), id.as_bytes());
        if let Some(k) = key {
            m["publicEncryptionKey"] = String::from_utf8_lossy(k).into();
        }
        // CCF: the recorded role, else a participant if it holds an encryption key.
        m["recoveryRole"] = match info.get("recovery_role") {
            Some(r) => r.clone(),
            None if key.is_some() => "Participant".into(),
            None => "NonParticipant".into(),
        };
        Some(m)
    }

    /// Every member, by id.
    pub fn members(&self) -> Vec<serde_json::Value> {
        self.rows(tables::MEMBERS_INFO.name())
            .filter_map(|(k, _)| self.member(std::str::from_utf8(k).ok()?))
            .collect()
    }

    /// A node as CCF's `/gov/service/nodes` describes it (`nodeId`, `status`, `nodeData`,
    /// `certificate`, `retiredCommitted`), or `None` if unknown.
    pub fn node(&self, id: &str) -> Option<serde_json::Value> {
        let info: serde_json::Value =
            serde_json::from_slice(self.get(tables::NODES_INFO.name(), id.as_bytes())?).ok()?;
        let mut n = serde_json::json!({
            "nodeId": id,
            "status": info.get("status").cloned().unwrap_or_default(),
            "nodeData": info.get("node_data").cloned().unwrap_or_default(),
            "retiredCommitted": info.get("retired_committed").cloned().unwrap_or(false.into()),
        });
        if let Some(cert) = self.get(tables::NODES_ENDORSED_CERTIFICATES.name(), id.as_bytes()) {
            n["certificate"] = String::from_utf8_lossy(cert).into();
        }
        Some(n)
    }

    /// Every node, by id.
    pub fn nodes(&self) -> Vec<serde_json::Value> {
        self.rows(tables::NODES_INFO.name())
            .filter_map(|(k, _)| self.node(std::str::from_utf8(k).ok()?))
            .collect()
    }

    /// A proposal's record.
    pub fn proposal_info(&self, id: &str) -> Option<ProposalInfo> {
        let v = self.get(tables::PROPOSALS_INFO.name(), id.as_bytes())?;
        tables::PROPOSALS_INFO.decode_value(v).ok()
    }

    /// A proposal's body, as signed.
    pub fn proposal(&self, id: &str) -> Option<&[u8]> {
        self.get(tables::PROPOSALS.name(), id.as_bytes())
    }

    /// Every proposal's record, by id.
    pub fn proposals(&self) -> Vec<(String, ProposalInfo)> {
        self.rows(tables::PROPOSALS_INFO.name())
            .filter_map(|(k, v)| {
                Some((
                    String::from_utf8(k.to_vec()).ok()?,
                    tables::PROPOSALS_INFO.decode_value(v).ok()?,
                ))
            })
            .collect()
    }
}

/// Checks that `code` is a constitution: an ES module that loads and exports CCF's
/// `validate`, `resolve` and `apply` functions. The error says what is wrong.
pub fn check_constitution(code: &str) -> Result<(), String> {
    let mut modules = vellum_js::Modules::new();
    modules.insert("constitution.js".into(), code.to_owned());
    let probe = "import * as c from \"constitution.js\";\n\
                 export function main() {\n\
                   return [\"validate\", \"resolve\", \"apply\"]\n\
                     .filter((f) => typeof c[f] !== \"function\").join(\", \");\n\
                 }";
    modules.insert("check.js".into(), probe.to_owned());
    let mut call = vellum_js::Call::new("check.js", probe, &[]);
    call.modules = Some(std::sync::Arc::new(modules));
    match vellum_js::run(&call, std::sync::Arc::new(vellum_js::EmptyStore::default())) {
        vellum_js::Outcome::Succeeded { return_value, .. } if return_value.is_empty() => Ok(()),
        vellum_js::Outcome::Succeeded { return_value, .. } => {
            Err(format!("the constitution does not export {return_value}"))
        }
        vellum_js::Outcome::Failed { message } => Err(message),
    }
}

/// A proposal as CCF's API shows it: `proposalId`, `proposerId`, `proposalState`,
/// `ballotCount`, and once closed `finalVotes` and `voteFailures`, and `failure`.
pub fn proposal_json(id: &str, info: &ProposalInfo) -> serde_json::Value {
    let mut v = serde_json::json!({
        "proposalId": id,
        "proposerId": info.proposer_id,
        "proposalState": info.state,
        "ballotCount": info.ballots.len(),
    });
    if let Some(f) = &info.final_votes {
        v["finalVotes"] = serde_json::json!(f);
    }
    if let Some(f) = &info.vote_failures {
        v["voteFailures"] = serde_json::json!(f);
    }
    if let Some(f) = &info.failure {
        v["failure"] = serde_json::json!(f);
    }
    v
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn constitutions_are_checked() {
        check_constitution(vellum_ledger::genesis::DEFAULT_CONSTITUTION).unwrap();
        let e = check_constitution("export function validate() {}").unwrap_err();
        assert!(e.contains("does not export resolve, apply"), "{e}");
        let e = check_constitution("export function validate( {").unwrap_err();
        assert!(e.contains("SyntaxError"), "{e}");
    }

    #[test]
    fn tables_follow_writes_and_survive_the_index() {
        let mut g = GovTables::default();
        assert!(!g.apply(&MapWrites::with_writes("public:app", vec![])));
        assert!(g.apply(&MapWrites::with_writes(
            "public:ccf.gov.members.info",
            vec![(b"m1".to_vec(), br#"{"status":"Accepted"}"#.to_vec())],
        )));
        g.apply(&MapWrites::with_writes(
            "public:ccf.gov.members.certs",
            vec![(b"m1".to_vec(), b"PEM".to_vec()), (vec![0, 255], vec![1])],
        ));
        assert_eq!(g.members()[0]["status"], "Accepted");
        assert_eq!(g.members()[0]["certificate"], "PEM");
        assert_eq!(g.members()[0]["recoveryRole"], "NonParticipant");
        let back = GovTables::from_json(&g.to_json().unwrap()).unwrap();
        assert_eq!(back, g);
        g.apply(&MapWrites {
            name: "public:ccf.gov.members.certs".into(),
            writes: vec![],
            removes: vec![b"m1".to_vec(), vec![0, 255]],
        });
        assert!(g.rows("public:ccf.gov.members.certs").next().is_none());
        assert!(GovTables::from_json(b"{\"t\": [[\"zz\", \"00\"]]}").is_err());
    }
}
