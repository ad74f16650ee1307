//! Users, roles and what they allow, kept in the ledger: every change is a transaction in
//! [`tables::USERS`] or [`tables::ROLES`], so who could do what, and since when, is itself
//! auditable.
//!
//! Access is decided by *actions*, ACL's strings `Microsoft.ConfidentialLedger/ledger/...`:
//! every route names the action it performs ([`Action`]), each built-in role allows a fixed
//! set of them ([`builtin_actions`]), and a custom role allows the actions it lists. A user is
//! allowed an action when any of its roles allows it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use vellum_core::entry::{EntryBuilder, MapWrites};
use vellum_core::tables::{self, RoleRecord, UserRecord};
pub use vellum_core::tables::{BadRoleName, Role, RoleName, UnknownRole};

/// The prefix of ACL's action strings.
pub const ACTION_PREFIX: &str = "Microsoft.ConfidentialLedger/ledger/";

/// An action a route performs, by the part of its ACL action string after [`ACTION_PREFIX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action(pub &'static str);

impl Action {
    /// Read entries.
    pub const READ: Action = Action("read");
    /// Append entries.
    pub const APPEND: Action = Action("append");
    /// Read transaction receipts.
    pub const RECEIPTS: Action = Action("receipts/read");
    /// Read transaction status.
    pub const STATUS: Action = Action("transactions/status/read");
    /// List collections and their tags.
    pub const COLLECTIONS: Action = Action("collections/read");
    /// List sub-ledger ids (the old name of collections).
    pub const SUB_LEDGER_IDS: Action = Action("subLedgerIds/read");
    /// Read the consortium's members.
    pub const MEMBERS: Action = Action("governance/members/read");
    /// Read the constitution.
    pub const CONSTITUTION: Action = Action("governance/constitution/read");
    /// Read the nodes' attestation quotes.
    pub const ENCLAVES: Action = Action("enclaves/read");
    /// Read one user.
    pub const USERS_READ: Action = Action("users/read");
    /// List users.
    pub const USERS_READ_ALL: Action = Action("users/readall");
    /// Create or change a user.
    pub const USERS_WRITE: Action = Action("users/write");
    /// Remove a user.
    pub const USERS_DELETE: Action = Action("users/delete");
    /// Read custom roles.
    pub const ROLES_READ: Action = Action("roleDefinitions/read");
    /// Create or change custom roles.
    pub const ROLES_WRITE: Action = Action("roleDefinitions/write");
    /// Delete custom roles.
    pub const ROLES_DELETE: Action = Action("roleDefinitions/delete");
    /// Read and list user-defined functions (Vellum's name: ACL publishes none).
    pub const FUNCTIONS_READ: Action = Action("userDefinedFunctions/read");
    /// Store user-defined functions (Vellum's name).
    pub const FUNCTIONS_WRITE: Action = Action("userDefinedFunctions/write");
    /// Delete user-defined functions (Vellum's name).
    pub const FUNCTIONS_DELETE: Action = Action("userDefinedFunctions/delete");
    /// Deploy user-defined endpoints and set their runtime options (Vellum's name).
    pub const ENDPOINTS_WRITE: Action = Action("userDefinedEndpoints/write");
    /// Read the deployed endpoints, modules and runtime options (Vellum's name).
    pub const ENDPOINTS_READ: Action = Action("userDefinedEndpoints/read");
    /// Run user-defined functions, standalone or as hooks (Vellum's name).
    pub const FUNCTIONS_EXECUTE: Action = Action("userDefinedFunctions/execute");

    /// Its whole ACL action string.
    pub fn full(self) -> String {
        format!("{ACTION_PREFIX}{}", self.0)
    }

    /// Whether `s` names this action.
    pub fn is(self, s: &str) -> bool {
        s.strip_prefix(ACTION_PREFIX) == Some(self.0)
    }
}

const READER_ACTIONS: &[Action] = &[
    Action::READ,
    Action::RECEIPTS,
    Action::STATUS,
    Action::COLLECTIONS,
    Action::SUB_LEDGER_IDS,
    Action::MEMBERS,
    Action::CONSTITUTION,
    Action::ENCLAVES,
    Action::ROLES_READ,
    Action::FUNCTIONS_READ,
    Action::ENDPOINTS_READ,
];
const CONTRIBUTOR_ACTIONS: &[Action] = &[Action::APPEND, Action::FUNCTIONS_EXECUTE];
const ADMINISTRATOR_ACTIONS: &[Action] = &[
    Action::USERS_READ,
    Action::USERS_READ_ALL,
    Action::USERS_WRITE,
    Action::USERS_DELETE,
    Action::ROLES_WRITE,
    Action::ROLES_DELETE,
    Action::FUNCTIONS_WRITE,
    Action::FUNCTIONS_DELETE,
    Action::ENDPOINTS_WRITE,
];

/// The actions a built-in role allows: a Reader reads entries, receipts, status, collections,
/// governance, quotes, role definitions and functions; a Contributor also appends and runs
/// functions (which may write); an Administrator also
/// reads and manages users and manages roles. (ACL's test rig also lets Readers read users;
/// Vellum keeps the list of users, which names identities, to Administrators.)
pub fn builtin_actions(role: Role) -> impl Iterator<Item = Action> {
    let sets: &[&[Action]] = match role {
        Role::Reader => &[READER_ACTIONS],
        Role::Contributor => &[READER_ACTIONS, CONTRIBUTOR_ACTIONS],
        Role::Administrator => &[READER_ACTIONS, CONTRIBUTOR_ACTIONS, ADMINISTRATOR_ACTIONS],
    };
    sets.iter().flat_map(|s| s.iter().copied())
}

/// Users and custom roles, as of the last applied transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// Users by id, with their roles.
    pub users: BTreeMap<String, Vec<RoleName>>,
    /// Custom roles by name, with their actions.
    pub roles: BTreeMap<String, BTreeSet<String>>,
}

impl Access {
    /// The access that a users map of the kind indexes held before custom roles recorded
    /// (user id → one built-in role).
    pub fn from_single_roles(users: BTreeMap<String, Role>) -> Access {
        Access {
            users: users
                .into_iter()
                .map(|(id, r)| (id, vec![RoleName::BuiltIn(r)]))
                .collect(),
            roles: BTreeMap::new(),
        }
    }

    /// The roles of `user_id`.
    pub fn roles_of(&self, user_id: &str) -> Option<&[RoleName]> {
        self.users.get(user_id).map(Vec::as_slice)
    }

    /// The strongest built-in role `user_id` holds.
    pub fn strongest(&self, user_id: &str) -> Option<Role> {
        RoleName::strongest(self.roles_of(user_id)?)
    }

    /// Whether `user_id` may perform `action`: one of its roles allows it.
    pub fn allows(&self, user_id: &str, action: Action) -> bool {
        self.roles_of(user_id).is_some_and(|roles| {
            roles.iter().any(|r| match r {
                RoleName::BuiltIn(b) => builtin_actions(*b).any(|a| a == action),
                RoleName::Custom(name) => self
                    .roles
                    .get(name)
                    .is_some_and(|actions| actions.iter().any(|s| action.is(s))),
            })
        })
    }

    /// Whether `name` is one of the tables this follows ([`tables::USERS`], [`tables::ROLES`]).
    pub fn follows(name: &str) -> bool {
        name == tables::USERS || name == tables::ROLES
    }

    /// Applies a committed write to [`tables::USERS`] or [`tables::ROLES`]; true if `m` was
    /// one of them. Malformed records are skipped (they cannot be written through the API) and
    /// logged.
    pub fn apply(&mut self, m: &MapWrites) -> bool {
        if m.name == tables::USERS {
            crate::apply_records(&mut self.users, m, |v| {
                tables::USERS.decode_value(v).map(|r| r.roles)
            });
        } else if m.name == tables::ROLES {
            crate::apply_records(&mut self.roles, m, |v| {
                tables::ROLES.decode_value(v).map(|r| r.actions)
            });
        } else {
            return false;
        }
        true
    }
}

/// The write set that gives `user` exactly `roles`.
pub fn set_roles(user: &str, roles: Vec<RoleName>) -> EntryBuilder {
    EntryBuilder::default().map(tables::USERS.write(user, &UserRecord { roles }))
}

/// The write set that removes `user`.
pub fn remove(user: &str) -> EntryBuilder {
    EntryBuilder::default().map(tables::USERS.remove(user))
}

/// The write set that defines custom roles (replacing their actions).
pub fn define_roles(roles: &BTreeMap<String, BTreeSet<String>>) -> EntryBuilder {
    let records: Vec<(&str, RoleRecord)> = roles
        .iter()
        .map(|(name, actions)| {
            (
                name.as_str(),
                RoleRecord {
                    actions: actions.clone(),
                },
            )
        })
        .collect();
    EntryBuilder::default().map(tables::ROLES.writes(records.iter().map(|(n, r)| (*n, r))))
}

/// The write set that deletes the custom role `name`.
pub fn delete_role(name: &str) -> EntryBuilder {
    EntryBuilder::default().map(tables::ROLES.remove(name))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn custom(s: &str) -> RoleName {
        RoleName::Custom(s.into())
    }

    #[test]
    fn users_and_roles_are_applied_and_decide_actions() {
        let mut a = Access::default();
        a.apply(&set_roles("a", vec![RoleName::BuiltIn(Role::Reader)]).maps[0]);
        a.apply(&set_roles("a", vec![RoleName::BuiltIn(Role::Administrator)]).maps[0]);
        a.apply(&set_roles("b", vec![RoleName::BuiltIn(Role::Contributor)]).maps[0]);
        a.apply(&set_roles("c", vec![custom("auditor")]).maps[0]);
        assert_eq!(a.strongest("a"), Some(Role::Administrator));
        assert!(a.allows("a", Action::USERS_WRITE));
        assert!(a.allows("b", Action::APPEND) && !a.allows("b", Action::USERS_READ));
        // A custom role that is not defined allows nothing.
        assert!(!a.allows("c", Action::READ));
        let mut def = BTreeMap::new();
        def.insert(
            "auditor".to_owned(),
            BTreeSet::from([Action::RECEIPTS.full(), "/app/own/thing".to_owned()]),
        );
        assert!(a.apply(&define_roles(&def).maps[0]));
        assert!(a.allows("c", Action::RECEIPTS));
        assert!(!a.allows("c", Action::READ) && !a.allows("c", Action::APPEND));
        assert_eq!(a.strongest("c"), None);
        a.apply(&delete_role("auditor").maps[0]);
        assert!(!a.allows("c", Action::RECEIPTS));
        a.apply(&remove("a").maps[0]);
        assert_eq!(a.roles_of("a"), None);
        assert!(!a.allows("a", Action::READ));
        assert_eq!(a.users.len(), 2);
        assert!(Role::Administrator > Role::Contributor && Role::Contributor > Role::Reader);
    }

    #[test]
    fn an_index_written_before_several_roles_is_read() {
        // What the index recorded under `vellum.users` before custom roles existed.
        let old: BTreeMap<String, Role> =
            serde_json::from_slice(br#"{"a":"Administrator","b":"Reader"}"#).unwrap();
        let a = Access::from_single_roles(old);
        assert!(a.allows("a", Action::USERS_WRITE) && a.allows("b", Action::READ));
        assert!(!a.allows("b", Action::APPEND));
        let json = serde_json::to_vec(&a).unwrap();
        assert_eq!(serde_json::from_slice::<Access>(&json).unwrap(), a);
    }

    #[test]
    fn role_names_and_user_records() {
        assert_eq!(
            RoleName::parse("administrator").unwrap(),
            RoleName::BuiltIn(Role::Administrator)
        );
        assert_eq!(RoleName::parse("manager").unwrap(), custom("manager"));
        for bad in ["", " x", "a\nb", &"x".repeat(65)] {
            assert!(RoleName::parse(bad).is_err(), "{bad:?}");
        }
        // One built-in role: the bytes ledgers held before several roles existed.
        let one = tables::USERS
            .write("u", &UserRecord::with_role(Role::Reader))
            .writes[0]
            .1
            .clone();
        assert_eq!(one, br#"{"assignedRole":"Reader"}"#);
        let two = UserRecord {
            roles: vec![RoleName::BuiltIn(Role::Reader), custom("manager")],
        };
        let bytes = serde_json::to_vec(&two).unwrap();
        assert_eq!(bytes, br#"{"assignedRoles":["Reader","manager"]}"#);
        assert_eq!(serde_json::from_slice::<UserRecord>(&bytes).unwrap(), two);
        assert!(serde_json::from_slice::<UserRecord>(br#"{"assignedRole":"x y "}"#).is_err());
    }
}
