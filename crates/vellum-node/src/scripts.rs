//! Running user-defined functions on the primary: standalone (`:execute`) and as hooks around
//! a write (`acl-2024-api.md` §5.2 to §5.4).
//!
//! # Consistency
//!
//! A function reads the application maps and what it writes is recorded as (part of) one
//! transaction. Runs are serialised on the primary: one run at a time, each reading the state
//! every earlier run left, whether or not that state has been applied yet. To get that without
//! waiting for each run's transaction to commit (a run would then cost a round of Raft and an
//! `fsync`), the primary keeps the writes of runs it has proposed and not yet applied
//! (the `Scripts` pending list) and lays them over the index's state. A run's transaction is
//! handed to Raft before the next run starts, so the log holds them in the order they ran: no
//! run's writes can land before those of a run it read from.
//!
//! A pending write leaves the list once the index has applied it, oldest first (a write whose
//! transaction id is not known yet holds back the ones behind it, so that an older write never
//! shows over a newer one). A write that fails to be proposed leaves at once. A primary that
//! loses its place may hold writes the next primary drops; it runs nothing until it is primary
//! again, and by then it has applied past them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vellum_core::entry::MapWrites;
use vellum_js::{
    Call, Entries, MapAccess, Outcome, SandboxError, Store, StoreError, Worker, Writes,
};
use vellum_ledger::index::is_app_map;
use vellum_ledger::live_index::LiveIndex;

use crate::raft::ledger::Ledger;

/// The most hooks one write may run (ACL: 5; Vellum counts pre- and post-hooks together).
pub const MAX_HOOKS: usize = 5;

/// The read-only view of the latest entry of each collection (key: the collection id, value:
/// the entry's contents), under ACL's name for public ledgers.
pub const LOGS_PUBLIC: &str = "public:confidentialledger.logs";
/// The same view under ACL's name for private ledgers.
pub const LOGS_PRIVATE: &str = "private:confidentialledger.logs";
/// ACL's users-to-roles table, read-only (`acl-2024-api.md` §4.4): key a user id as a JSON
/// string, value the user's role names as a JSON array.
pub const USER_ROLES: &str = "public:confidentialledger.roles.user_roles_mapping";
/// ACL's custom role tables, one per role (this prefix, then the role's name), read-only: key
/// an action as a JSON string, value `{}`.
pub const ROLE_DEFINITIONS: &str = "public:confidentialledger.roles.user_roles_definitions.";

/// The state a run reads: the index's application maps, under the writes of runs proposed and
/// not yet applied, under the writes of earlier hooks of the same write; and the latest entry
/// of each collection, read-only.
#[derive(Clone)]
pub(crate) struct LedgerStore {
    /// Application maps may be read, not written (a `readonly` endpoint).
    pub(crate) readonly: bool,
    pub(crate) index: Arc<LiveIndex>,
    pub(crate) ledger: Arc<Ledger>,
    /// Writes laid over the index, oldest first.
    pub(crate) layers: Vec<Arc<Writes>>,
    /// An entry written in the same transaction, seen by post-hooks: (collection, contents).
    pub(crate) written: Option<(String, String)>,
    /// Users and roles, for ACL's role tables.
    pub(crate) state: Arc<crate::service_state::ServiceState>,
}

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

impl LedgerStore {
    /// One of ACL's role tables, from the users and roles as applied.
    fn role_table(&self, map: &str) -> Entries {
        let quoted = |s: &str| serde_json::Value::from(s).to_string().into_bytes();
        self.state.with_access(|a| {
            if map == USER_ROLES {
                a.users
                    .iter()
                    .map(|(id, roles)| {
                        let names: Vec<String> = roles.iter().map(ToString::to_string).collect();
                        (
                            quoted(id),
                            serde_json::json!(names).to_string().into_bytes(),
                        )
                    })
                    .collect()
            } else {
                let role = map.strip_prefix(ROLE_DEFINITIONS).unwrap_or_default();
                a.roles
                    .get(role)
                    .into_iter()
                    .flatten()
                    .map(|action| (quoted(action), b"{}".to_vec()))
                    .collect()
            }
        })
    }

    fn latest_contents(&self, collection: &str) -> Result<Option<String>, StoreError> {
        if let Some((c, contents)) = &self.written
            && c == collection
        {
            return Ok(Some(contents.clone()));
        }
        let Some(seqno) = self.index.latest(collection).map_err(failed)? else {
            return Ok(None);
        };
        let (_, ws) = self.ledger.engine().write_set(seqno).map_err(failed)?;
        let record = vellum_ledger::index::entry_write(&ws.maps)
            .and_then(|(_, v)| vellum_core::tables::ENTRIES.decode_value(v).ok());
        Ok(record.map(|r| r.contents))
    }
}

impl Store for LedgerStore {
    fn access(&self, map: &str) -> MapAccess {
        let bare = map
            .strip_prefix("public:")
            .or_else(|| map.strip_prefix("private:"))
            .unwrap_or(map);
        if map == LOGS_PUBLIC
            || map == LOGS_PRIVATE
            || map == USER_ROLES
            || map.starts_with(ROLE_DEFINITIONS)
        {
            MapAccess::Read
        } else if bare.starts_with("confidentialledger.") || map.len() > MAX_MAP_NAME {
            // ACL's own tables; Vellum keeps them elsewhere and shows none but the logs.
            MapAccess::None
        } else if is_app_map(map) && self.readonly {
            MapAccess::Read
        } else if is_app_map(map) {
            MapAccess::ReadWrite
        } else {
            MapAccess::None
        }
    }

    fn get(&self, map: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if map == USER_ROLES || map.starts_with(ROLE_DEFINITIONS) {
            let key = key.to_vec();
            return Ok(self
                .role_table(map)
                .into_iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v));
        }
        if map == LOGS_PUBLIC || map == LOGS_PRIVATE {
            let Ok(collection) = std::str::from_utf8(key) else {
                return Ok(None);
            };
            return Ok(self.latest_contents(collection)?.map(String::into_bytes));
        }
        for layer in self.layers.iter().rev() {
            if let Some(v) = layer.get(map).and_then(|m| m.get(key)) {
                return Ok(v.clone());
            }
        }
        self.index.kv_get(map, key).map_err(failed)
    }

    fn entries(&self, map: &str) -> Result<Entries, StoreError> {
        if map == USER_ROLES || map.starts_with(ROLE_DEFINITIONS) {
            return Ok(self.role_table(map));
        }
        if map == LOGS_PUBLIC || map == LOGS_PRIVATE {
            let mut out = Vec::new();
            let mut collections = self.index.collections().map_err(failed)?;
            if let Some((c, _)) = &self.written
                && !collections.contains(c)
            {
                collections.push(c.clone());
            }
            for c in collections {
                if let Some(contents) = self.latest_contents(&c)? {
                    out.push((c.into_bytes(), contents.into_bytes()));
                }
            }
            return Ok(out);
        }
        let mut all: BTreeMap<Vec<u8>, Vec<u8>> = self
            .index
            .kv_entries(map)
            .map_err(failed)?
            .into_iter()
            .collect();
        for layer in &self.layers {
            for (k, v) in layer.get(map).into_iter().flatten() {
                match v {
                    Some(v) => all.insert(k.clone(), v.clone()),
                    None => all.remove(k),
                };
            }
        }
        Ok(all.into_iter().collect())
    }
}

/// The longest map name a function may use.
pub const MAX_MAP_NAME: usize = 256;

/// A run's writes as a write set's maps.
pub(crate) fn map_writes(writes: &Writes) -> Vec<MapWrites> {
    writes
        .iter()
        .map(|(name, keys)| {
            let mut m = MapWrites::with_writes(name.clone(), Vec::new());
            for (k, v) in keys {
                match v {
                    Some(v) => m.writes.push((k.clone(), v.clone())),
                    None => m.removes.push(k.clone()),
                }
            }
            m
        })
        .collect()
}

/// `later` laid over `earlier`.
pub(crate) fn merge(earlier: &mut Writes, later: Writes) {
    for (map, keys) in later {
        earlier.entry(map).or_default().extend(keys);
    }
}

struct Pending {
    id: u64,
    seqno: Option<u64>,
    writes: Arc<Writes>,
}

/// The primary's JavaScript runs: one worker, one run at a time, and the writes proposed and
/// not yet applied (see the module documentation).
pub(crate) struct Scripts {
    worker: Worker,
    /// Held from a run's start until its transaction is handed to Raft.
    pub(crate) turn: tokio::sync::Mutex<()>,
    pending: Mutex<VecDeque<Pending>>,
    next_id: AtomicU64,
    /// Exports of functions (a hash of `ID#EXPORT` and their code) seen using the maps: they
    /// run in turn at once, without a first try outside it. (Two exports with the same hash
    /// would only cost the other one its first try.)
    touching: Mutex<std::collections::HashSet<u64>>,
    /// Functions' reuse keys ([`vellum_js::Call::reuse`]) by function id, with the code each
    /// names: the key holds the code's digest, computed once per code, not once per run.
    reuse_keys: Mutex<std::collections::HashMap<String, (String, String)>>,
    /// Runs started (a metric).
    pub(crate) runs: prometheus_client::metrics::counter::Counter,
}

impl std::fmt::Debug for Scripts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scripts").finish_non_exhaustive()
    }
}

impl Scripts {
    pub(crate) fn start() -> Result<Scripts, SandboxError> {
        Ok(Scripts {
            worker: Worker::start()?,
            turn: tokio::sync::Mutex::new(()),
            pending: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(1),
            runs: Default::default(),
            touching: Mutex::new(std::collections::HashSet::new()),
            reuse_keys: Mutex::new(std::collections::HashMap::new()),
        })
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, VecDeque<Pending>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The pending writes, oldest first, once those the index has applied (up to `applied`)
    /// have left.
    pub(crate) fn layers(&self, applied: u64) -> Vec<Arc<Writes>> {
        let mut p = self.pending();
        while p
            .front()
            .is_some_and(|f| f.seqno.is_some_and(|s| s <= applied))
        {
            p.pop_front();
        }
        p.iter().map(|e| e.writes.clone()).collect()
    }

    /// Records writes about to be proposed; returns the id to report their fate with.
    pub(crate) fn propose(&self, writes: Arc<Writes>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.pending().push_back(Pending {
            id,
            seqno: None,
            writes,
        });
        id
    }

    /// The writes `id` were given `seqno`.
    pub(crate) fn assigned(&self, id: u64, seqno: u64) {
        if let Some(e) = self.pending().iter_mut().find(|e| e.id == id) {
            e.seqno = Some(seqno);
        }
    }

    /// The writes `id` were not proposed after all.
    pub(crate) fn dropped(&self, id: u64) {
        self.pending().retain(|e| e.id != id);
    }

    fn code_key(id: &str, code: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        code.hash(&mut h);
        h.finish()
    }

    /// The reuse key of function `id` with `code`: runs of the same code share interpreters,
    /// and a new code gets new ones.
    pub(crate) fn reuse_key(&self, id: &str, code: &str) -> String {
        let mut keys = self
            .reuse_keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((known, key)) = keys.get(id)
            && known == code
        {
            return key.clone();
        }
        use sha2::Digest;
        let key = format!("udf:{id}:{}", hex::encode(sha2::Sha256::digest(code)));
        // Bounded: forgetting only costs a digest.
        if keys.len() >= 4096 {
            keys.clear();
        }
        keys.insert(id.to_owned(), (code.to_owned(), key.clone()));
        key
    }

    /// Whether function `id` with this code was seen using the maps.
    pub(crate) fn touches(&self, id: &str, code: &str) -> bool {
        self.touching
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&Self::code_key(id, code))
    }

    /// Function `id` with this code used the maps.
    pub(crate) fn touched(&self, id: &str, code: &str) {
        let mut t = self
            .touching
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Bounded: forgetting only costs a first try outside the turn.
        if t.len() >= 4096 {
            t.clear();
        }
        t.insert(Self::code_key(id, code));
    }

    /// Runs `call` over `store`: a run that may reuse an interpreter on this thread first, if
    /// it is short ([`vellum_js::run_inline`]), else on the worker.
    pub(crate) async fn run(
        &self,
        call: &Call<'_>,
        store: Arc<dyn Store>,
    ) -> Result<Outcome, SandboxError> {
        self.runs.inc();
        if let Some(outcome) = vellum_js::run_inline(call, store.clone()) {
            return Ok(outcome);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.worker.submit(
            call,
            store,
            Box::new(move |o| {
                let _ = tx.send(o);
            }),
        );
        rx.await
            .map_err(|_| SandboxError::Thread("the worker stopped".into()))?
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ops::{Execute, Hook, Hooks, RunResult};
    use vellum_js::RuntimeOptions;

    fn w(map: &str, k: &str, v: Option<&str>) -> Arc<Writes> {
        let mut all = Writes::new();
        all.entry(map.to_owned())
            .or_default()
            .insert(k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec()));
        Arc::new(all)
    }

    #[test]
    fn pending_writes_leave_oldest_first() {
        let s = Scripts::start().unwrap();
        let a = s.propose(w("m", "k", Some("1")));
        let b = s.propose(w("m", "k", Some("2")));
        let c = s.propose(w("m", "k", None));
        // b is applied, but a's seqno is not known yet: nothing leaves, b still shows over a.
        s.assigned(b, 11);
        assert_eq!(s.layers(20).len(), 3);
        s.assigned(a, 10);
        // a and b leave once applied; c, never proposed, leaves at once.
        assert_eq!(s.layers(9).len(), 3);
        assert_eq!(s.layers(11).len(), 1);
        s.dropped(c);
        assert!(s.layers(11).is_empty());
    }

    /// Operations cross the node channel as postcard (not self-describing: a field skipped
    /// when empty would shift every field after it).
    #[test]
    fn runs_and_hooks_cross_the_node_channel() {
        let hook = Hook {
            function_id: "f".into(),
            export: None,
            arguments: Vec::new(),
            options: Some(RuntimeOptions::default()),
        };
        for op in [
            crate::ops::Op::Append {
                collection: "c".into(),
                contents: "x".into(),
                tags: vec!["t".into()],
                hooks: Hooks {
                    pre: vec![hook.clone()],
                    post: Vec::new(),
                },
            },
            crate::ops::Op::Append {
                collection: "c".into(),
                contents: "x".into(),
                tags: Vec::new(),
                hooks: Hooks::default(),
            },
            crate::ops::Op::Execute(Execute {
                function_id: "f".into(),
                export: "main".into(),
                arguments: vec!["a".into()],
                options: RuntimeOptions::default(),
            }),
        ] {
            let bytes = postcard::to_allocvec(&op).unwrap();
            assert_eq!(postcard::from_bytes::<crate::ops::Op>(&bytes).unwrap(), op);
        }
        let reply = crate::cluster::ForwardReply::Ran(Some((2, 9)), RunResult::Failed("m".into()));
        let bytes = postcard::to_allocvec(&reply).unwrap();
        let back: crate::cluster::ForwardReply = postcard::from_bytes(&bytes).unwrap();
        assert!(
            matches!(back, crate::cluster::ForwardReply::Ran(Some((2, 9)), RunResult::Failed(m)) if m == "m")
        );
    }

    #[test]
    fn writes_to_maps() {
        let mut all = (*w("public:a", "k", Some("v"))).clone();
        merge(&mut all, (*w("public:a", "x", None)).clone());
        merge(&mut all, (*w("public:a", "k", Some("v2"))).clone());
        let m = map_writes(&all);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].writes, vec![(b"k".to_vec(), b"v2".to_vec())]);
        assert_eq!(m[0].removes, vec![b"x".to_vec()]);
    }
}
