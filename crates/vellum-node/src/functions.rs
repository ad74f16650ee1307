//! User-defined functions, kept in the ledger: every change is a transaction in
//! [`tables::FUNCTIONS`], so every node serves the same code, a restart keeps it, and the
//! ledger shows who stored what and when (`acl-2024-api.md` §5).

use std::collections::BTreeMap;

use vellum_core::entry::{EntryBuilder, MapWrites};
use vellum_core::tables::{self, FunctionRecord};

/// Functions by id, with their code.
pub type Functions = BTreeMap<String, String>;

/// The longest function id, in bytes.
pub const MAX_FUNCTION_ID: usize = 256;

/// The write set that stores `code` as function `id`.
pub fn put(id: &str, code: &str) -> EntryBuilder {
    EntryBuilder::default().map(tables::FUNCTIONS.write(
        id,
        &FunctionRecord {
            code: code.to_owned(),
        },
    ))
}

/// The write set that deletes function `id`.
pub fn delete(id: &str) -> EntryBuilder {
    EntryBuilder::default().map(tables::FUNCTIONS.remove(id))
}

/// Whether `name` is [`tables::FUNCTIONS`].
pub fn follows(name: &str) -> bool {
    name == tables::FUNCTIONS
}

/// Applies a committed write to [`tables::FUNCTIONS`]; true if `m` was that table. Malformed
/// records are skipped (they cannot be written through the API) and logged.
pub fn apply(functions: &mut Functions, m: &MapWrites) -> bool {
    if !follows(&m.name) {
        return false;
    }
    crate::apply_records(functions, m, |v| {
        tables::FUNCTIONS.decode_value(v).map(|r| r.code)
    });
    true
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn put_replace_delete() {
        let mut f = Functions::new();
        assert!(apply(
            &mut f,
            &put("a", "export const main = () => 1;").maps[0]
        ));
        apply(&mut f, &put("a", "export const main = () => 2;").maps[0]);
        apply(&mut f, &put("b", "x").maps[0]);
        assert_eq!(f["a"], "export const main = () => 2;");
        apply(&mut f, &delete("a").maps[0]);
        assert_eq!(f.keys().collect::<Vec<_>>(), ["b"]);
        let other = crate::users::remove("a");
        assert!(!apply(&mut f, &other.maps[0]));
    }
}
