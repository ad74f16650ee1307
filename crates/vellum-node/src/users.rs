//! Users and roles, kept in the ledger: every change is a transaction in [`USERS_TABLE`], so
//! who could do what, and since when, is itself auditable.
//!
//! Key: the user id (a certificate user's ACL fingerprint `5F:23:…`, or a token user's object
//! id); value: `{"assignedRole": "Administrator" | "Contributor" | "Reader"}`; a removal
//! deletes the user.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use vellum_core::entry::{EntryBuilder, MapWrites};

/// The public table of users and roles.
pub const USERS_TABLE: &str = "public:vellum.users";

/// Users by id.
pub type Users = BTreeMap<String, Role>;

/// A ledger role; each includes the rights of the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    /// Reads entries, receipts, status and service information.
    Reader,
    /// Also writes entries.
    Contributor,
    /// Also manages users.
    Administrator,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Reader => "Reader",
            Role::Contributor => "Contributor",
            Role::Administrator => "Administrator",
        })
    }
}

/// A role name that is not one of the three.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?} (expected Administrator, Contributor or Reader)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        match s {
            "Reader" => Ok(Role::Reader),
            "Contributor" => Ok(Role::Contributor),
            "Administrator" => Ok(Role::Administrator),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct UserRecord {
    #[serde(rename = "assignedRole")]
    assigned_role: Role,
}

/// The write set that sets `user`'s role.
pub fn set_role(user: &str, role: Role) -> EntryBuilder {
    let v = serde_json::to_vec(&UserRecord {
        assigned_role: role,
    })
    .unwrap_or_default();
    EntryBuilder::default().map(MapWrites::with_writes(
        USERS_TABLE,
        vec![(user.as_bytes().to_vec(), v)],
    ))
}

/// The write set that removes `user`.
pub fn remove(user: &str) -> EntryBuilder {
    EntryBuilder::default().map(MapWrites {
        name: USERS_TABLE.into(),
        writes: Vec::new(),
        removes: vec![user.as_bytes().to_vec()],
    })
}

/// Applies a committed write to [`USERS_TABLE`]. Malformed records are skipped (they cannot be
/// written through the API) and logged.
pub fn apply(users: &mut Users, m: &MapWrites) {
    for (k, v) in &m.writes {
        match serde_json::from_slice::<UserRecord>(v) {
            Ok(r) => {
                users.insert(String::from_utf8_lossy(k).into_owned(), r.assigned_role);
            }
            Err(e) => tracing::warn!(error = %e, "skipping a malformed user record"),
        }
    }
    for k in &m.removes {
        users.remove(&*String::from_utf8_lossy(k));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn set_and_remove() {
        let mut u = Users::new();
        apply(&mut u, &set_role("a", Role::Reader).maps[0]);
        apply(&mut u, &set_role("a", Role::Administrator).maps[0]);
        apply(&mut u, &set_role("b", Role::Contributor).maps[0]);
        assert_eq!(u.get("a"), Some(&Role::Administrator));
        apply(&mut u, &remove("a").maps[0]);
        assert_eq!(u.get("a"), None);
        assert_eq!(u.len(), 1);
        assert!(Role::Administrator > Role::Contributor && Role::Contributor > Role::Reader);
        assert_eq!("Reader".parse::<Role>().unwrap(), Role::Reader);
        assert!("reader".parse::<Role>().is_err());
    }
}
