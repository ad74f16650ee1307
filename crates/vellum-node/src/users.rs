//! Users and roles, kept in the ledger: every change is a transaction in [`tables::USERS`], so
//! who could do what, and since when, is itself auditable.
//!
//! Key: the user id (a certificate user's ACL fingerprint `5F:23:…`, or a token user's object
//! id); value: `{"assignedRole": "Administrator" | "Contributor" | "Reader"}`; a removal
//! deletes the user.

use std::collections::BTreeMap;

use vellum_core::entry::{EntryBuilder, MapWrites};
use vellum_core::tables::{self, UserRecord};
pub use vellum_core::tables::{Role, UnknownRole};

/// Users by id.
pub type Users = BTreeMap<String, Role>;

/// The write set that sets `user`'s role.
pub fn set_role(user: &str, role: Role) -> EntryBuilder {
    EntryBuilder::default().map(tables::USERS.write(
        user,
        &UserRecord {
            assigned_role: role,
        },
    ))
}

/// The write set that removes `user`.
pub fn remove(user: &str) -> EntryBuilder {
    EntryBuilder::default().map(tables::USERS.remove(user))
}

/// Applies a committed write to [`tables::USERS`]. Malformed records are skipped (they cannot be
/// written through the API) and logged.
pub fn apply(users: &mut Users, m: &MapWrites) {
    for (k, v) in &m.writes {
        match tables::USERS.decode_value(v) {
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
