//! What the service's governance tables say, as of the last applied transaction: users and
//! their roles, nodes and join tokens, and the collections the ledger holds. The state
//! machine owns it (it applies every committed write); the node reads it.

use std::collections::BTreeSet;
use std::io;
use std::sync::{Mutex, RwLock};

use vellum_core::entry::MapWrites;

use crate::cluster::ClusterState;
use crate::endpoints::{self, App, AppRecords};
use crate::functions::{self, Functions};
use crate::gov::GovTables;
use crate::users::{Access, Action, Role};
use crate::{lock, read_lock, write_lock};

/// See the module documentation.
#[derive(Default)]
pub(crate) struct ServiceState {
    access: RwLock<Access>,
    functions: RwLock<Functions>,
    /// CCF's governance tables, whole.
    gov: RwLock<GovTables>,
    /// Whether they say the service is being recovered: read by every application request,
    /// so kept here rather than parsed from the tables each time.
    recovering: std::sync::atomic::AtomicBool,
    /// The app's records, and the app they parse to (parsed once per change).
    app: RwLock<(AppRecords, std::sync::Arc<App>)>,
    cluster: RwLock<ClusterState>,
    /// Every collection applied, and on the primary those of writes admitted since.
    collections: Mutex<BTreeSet<String>>,
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl ServiceState {
    /// The state restored from what the index recorded (JSON), with the collections it holds.
    /// `access` is the users and roles; `single_roles` the users map of indexes written before
    /// users could hold several roles (read only when `access` is absent).
    pub(crate) fn restore(
        access: Option<&[u8]>,
        single_roles: Option<&[u8]>,
        functions: Option<&[u8]>,
        gov: Option<&[u8]>,
        app: Option<&[u8]>,
        cluster: Option<&[u8]>,
        collections: impl IntoIterator<Item = String>,
    ) -> io::Result<ServiceState> {
        let s = ServiceState::default();
        if let Some(b) = access {
            *write_lock(&s.access) = serde_json::from_slice(b).map_err(other)?;
        } else if let Some(b) = single_roles {
            *write_lock(&s.access) =
                Access::from_single_roles(serde_json::from_slice(b).map_err(other)?);
        }
        if let Some(b) = functions {
            *write_lock(&s.functions) = serde_json::from_slice(b).map_err(other)?;
        }
        if let Some(b) = gov {
            let tables = GovTables::from_json(b).map_err(other)?;
            s.recovering
                .store(tables.recovering(), std::sync::atomic::Ordering::Release);
            *write_lock(&s.gov) = tables;
        }
        if let Some(b) = app {
            let records: AppRecords = serde_json::from_slice(b).map_err(other)?;
            let parsed = std::sync::Arc::new(App::from_records(&records));
            *write_lock(&s.app) = (records, parsed);
        }
        if let Some(b) = cluster {
            *write_lock(&s.cluster) = serde_json::from_slice(b).map_err(other)?;
        }
        lock(&s.collections).extend(collections);
        Ok(s)
    }

    /// The strongest built-in role of `user_id`, if it has one.
    pub(crate) fn role_of(&self, user_id: &str) -> Option<Role> {
        read_lock(&self.access).strongest(user_id)
    }

    /// Whether `user_id` may perform `action`.
    pub(crate) fn allows(&self, user_id: &str, action: Action) -> bool {
        read_lock(&self.access).allows(user_id, action)
    }

    /// Reads users and roles without copying them.
    pub(crate) fn with_access<T>(&self, f: impl FnOnce(&Access) -> T) -> T {
        f(&read_lock(&self.access))
    }

    /// Reads the user-defined functions without copying them.
    pub(crate) fn with_functions<T>(&self, f: impl FnOnce(&Functions) -> T) -> T {
        f(&read_lock(&self.functions))
    }

    /// Applies a committed write to the functions table; true if `m` was that table.
    pub(crate) fn apply_functions(&self, m: &MapWrites) -> bool {
        // The name first: the lock is taken only for this table's writes.
        functions::follows(&m.name) && functions::apply(&mut write_lock(&self.functions), m)
    }

    /// Reads the governance tables without copying them.
    pub(crate) fn with_gov<T>(&self, f: impl FnOnce(&GovTables) -> T) -> T {
        f(&read_lock(&self.gov))
    }

    /// Applies a committed write to the governance tables; true if `m` was one of them.
    pub(crate) fn apply_gov(&self, m: &MapWrites) -> bool {
        if !crate::gov::follows(&m.name) {
            return false;
        }
        let mut gov = write_lock(&self.gov);
        let applied = gov.apply(m);
        if m.name == vellum_core::tables::SERVICE_INFO.name() {
            self.recovering
                .store(gov.recovering(), std::sync::atomic::Ordering::Release);
        }
        applied
    }

    /// Whether the service is being recovered (not open to its users yet).
    pub(crate) fn recovering(&self) -> bool {
        self.recovering.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The governance tables as JSON, for the index.
    pub(crate) fn gov_json(&self) -> io::Result<Vec<u8>> {
        read_lock(&self.gov).to_json().map_err(other)
    }

    /// The deployed app (user-defined endpoints and their options).
    pub(crate) fn app(&self) -> std::sync::Arc<App> {
        read_lock(&self.app).1.clone()
    }

    /// The app's records (bundle, runtime options), JSON text by key.
    pub(crate) fn app_records(&self) -> crate::endpoints::AppRecords {
        read_lock(&self.app).0.clone()
    }

    /// Applies a committed write to the app table; true if `m` was that table.
    pub(crate) fn apply_app(&self, m: &MapWrites) -> bool {
        if !endpoints::follows(&m.name) {
            return false;
        }
        let mut app = write_lock(&self.app);
        endpoints::apply(&mut app.0, m);
        app.1 = std::sync::Arc::new(App::from_records(&app.0));
        true
    }

    /// The app's records as JSON, for the index.
    pub(crate) fn app_json(&self) -> io::Result<Vec<u8>> {
        serde_json::to_vec(&read_lock(&self.app).0).map_err(other)
    }

    /// The user-defined functions as JSON, for the index.
    pub(crate) fn functions_json(&self) -> io::Result<Vec<u8>> {
        serde_json::to_vec(&*read_lock(&self.functions)).map_err(other)
    }

    /// Nodes and join tokens.
    pub(crate) fn cluster(&self) -> ClusterState {
        read_lock(&self.cluster).clone()
    }

    /// Reads the cluster records without copying them.
    pub(crate) fn with_cluster<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> T {
        f(&read_lock(&self.cluster))
    }

    /// Applies a committed write to the users or roles table; true if `m` was one of them.
    pub(crate) fn apply_access(&self, m: &MapWrites) -> bool {
        // The name first: the lock is taken only for these tables' writes.
        Access::follows(&m.name) && write_lock(&self.access).apply(m)
    }

    /// Applies a committed write to the cluster tables; true if `m` was one of them.
    pub(crate) fn apply_cluster(&self, m: &MapWrites) -> bool {
        if !ClusterState::follows(&m.name) {
            return false;
        }
        write_lock(&self.cluster).apply(m);
        true
    }

    /// The users and roles as JSON, for the index.
    pub(crate) fn access_json(&self) -> io::Result<Vec<u8>> {
        serde_json::to_vec(&*read_lock(&self.access)).map_err(other)
    }

    /// The cluster records as JSON, for the index.
    pub(crate) fn cluster_json(&self) -> io::Result<Vec<u8>> {
        serde_json::to_vec(&*read_lock(&self.cluster)).map_err(other)
    }

    /// Records collections that committed writes started.
    pub(crate) fn add_collections<'a>(&self, names: impl IntoIterator<Item = &'a String>) {
        let mut known = lock(&self.collections);
        for c in names {
            if !known.contains(c) {
                known.insert(c.clone());
            }
        }
    }

    /// Admits a write to `collection` if the ledger holds it or fewer than `max` collections;
    /// an admitted new collection counts at once (on the primary, before it commits).
    /// `Err` holds how many collections the ledger has.
    pub(crate) fn admit_collection(&self, collection: &str, max: usize) -> Result<(), u64> {
        let mut known = lock(&self.collections);
        if known.contains(collection) {
            return Ok(());
        }
        if known.len() >= max {
            return Err(known.len() as u64);
        }
        known.insert(collection.to_owned());
        Ok(())
    }
}
