//! How CCF's verifier (`ccf` 7.0.22: `ccf.ledger`, `ccf.signatures`, `ccf.cose` on the `cwt`
//! library) reads the values it checks, where that differs from the strictest reading: the
//! auditor must accept exactly what CCF accepts, so these follow CCF's Python byte for byte.
//!
//! * A transaction's tables as Python dictionaries: a later write to a key replaces an earlier
//!   one, removals (read after the writes) win, a second map of the same name replaces the
//!   first.
//! * `base64.b64decode` without validation: characters outside the alphabet are skipped,
//!   decoding stops at a complete pad, and the unused bits of the last character are ignored.
//!   No base64 crate decodes this way (they validate, which is right everywhere else).
//! * `bytes.fromhex`: pairs of hex digits of either case, with ASCII whitespace between pairs.
//! * Python's `==` between a JSON value and an integer (`2.0 == 2`, `True == 1`).
//!
//! COSE_Sign1 as `cwt` verifies it is [`vellum_core::cose::verify_root_as_ccf`].

use std::collections::HashMap;

use serde_json::Value;
use vellum_core::entry::MapWrites;

/// One table of a transaction, as CCF's Python holds it: each key once, in first-seen order,
/// with its last value (`None`: removed).
pub(crate) type Records<'a> = Vec<(&'a [u8], Option<&'a [u8]>)>;

/// The tables of one transaction that the auditor reads, as CCF's Python holds them.
pub(crate) struct Tables<'a> {
    tables: Vec<(&'a str, Records<'a>)>,
}

impl<'a> Tables<'a> {
    /// The tables named in `wanted`, from a transaction's maps.
    pub(crate) fn of(maps: &'a [MapWrites], wanted: &[&str]) -> Tables<'a> {
        let mut tables: Vec<(&'a str, Records<'a>)> = Vec::new();
        for m in maps.iter().filter(|m| wanted.contains(&m.name.as_str())) {
            let mut records: Records<'a> = Vec::new();
            let mut index: HashMap<&'a [u8], usize> = HashMap::new();
            let mut set = |k: &'a [u8], v: Option<&'a [u8]>| match index.get(k) {
                Some(&i) => records[i].1 = v,
                None => {
                    index.insert(k, records.len());
                    records.push((k, v));
                }
            };
            for (k, v) in &m.writes {
                set(k, Some(v));
            }
            for k in &m.removes {
                set(k, None);
            }
            match tables.iter_mut().find(|t| t.0 == m.name) {
                Some(t) => t.1 = records,
                None => tables.push((m.name.as_str(), records)),
            }
        }
        Tables { tables }
    }

    /// The records of table `name`, if the transaction wrote to it.
    pub(crate) fn get(&self, name: &str) -> Option<&Records<'a>> {
        self.tables.iter().find(|t| t.0 == name).map(|t| &t.1)
    }

    /// The value at `key` of table `name`: `None` if absent, `Some(None)` if removed.
    pub(crate) fn value(&self, name: &str, key: &[u8]) -> Option<Option<&'a [u8]>> {
        self.get(name)?
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }
}

fn b64_value(c: u8) -> Option<u8> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    })
}

/// `base64.b64decode(s)` (no validation), or `None` where Python raises.
pub(crate) fn b64decode(s: &str) -> Option<Vec<u8>> {
    if !s.is_ascii() {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut quad, mut left, mut pads) = (0u8, 0u8, 0u8);
    for c in s.bytes() {
        if c == b'=' {
            if quad >= 2 {
                pads += 1;
                if quad + pads >= 4 {
                    return Some(out);
                }
            }
            continue;
        }
        let Some(v) = b64_value(c) else { continue };
        pads = 0;
        match quad {
            0 => {
                left = v;
                quad = 1;
            }
            1 => {
                out.push((left << 2) | (v >> 4));
                left = v & 0x0f;
                quad = 2;
            }
            2 => {
                out.push((left << 4) | (v >> 2));
                left = v & 0x03;
                quad = 3;
            }
            _ => {
                out.push((left << 6) | v);
                quad = 0;
            }
        }
    }
    (quad == 0).then_some(out)
}

/// `bytes.fromhex(s)`, or `None` where Python raises.
pub(crate) fn fromhex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let space = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let digit = |c: Option<&u8>| c.and_then(|c| (*c as char).to_digit(16)).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len() / 2);
    let mut i = 0;
    while i < b.len() {
        if space(b[i]) {
            i += 1;
            continue;
        }
        let hi = digit(b.get(i))?;
        let lo = digit(b.get(i + 1))?;
        out.push(hi << 4 | lo);
        i += 2;
    }
    Some(out)
}

/// Python's `value == n` for a value read from JSON.
pub(crate) fn py_eq(v: &Value, n: u64) -> bool {
    match v {
        Value::Number(x) => x.as_u64() == Some(n) || x.as_f64() == Some(n as f64),
        Value::Bool(b) => u64::from(*b) == n,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_as_python_reads_it() {
        assert_eq!(b64decode("QUJD").unwrap(), b"ABC");
        assert_eq!(b64decode("QUJ@D").unwrap(), b"ABC");
        assert_eq!(b64decode("QUI=").unwrap(), b"AB");
        // The unused bits of the last character are ignored.
        assert_eq!(b64decode("QUJ=").unwrap(), b"AB");
        assert_eq!(b64decode("QUJDRA==QUJD").unwrap(), b"ABCD");
        assert_eq!(b64decode("QU@I=").unwrap(), b"AB");
        assert_eq!(b64decode("QUI<"), None);
        assert_eq!(b64decode("QUJDRA=<"), None);
        assert_eq!(b64decode("Q"), None);
        assert_eq!(b64decode("QUJDé"), None);
        assert_eq!(b64decode("").unwrap(), b"");
    }

    #[test]
    fn hex_as_python_reads_it() {
        assert_eq!(fromhex("ab CD").unwrap(), vec![0xab, 0xcd]);
        assert_eq!(fromhex(" ab\n").unwrap(), vec![0xab]);
        assert_eq!(fromhex("a bcd"), None);
        assert_eq!(fromhex("abc"), None);
    }

    #[test]
    fn python_equality() {
        assert!(py_eq(&serde_json::json!(2), 2));
        assert!(py_eq(&serde_json::json!(2.0), 2));
        assert!(py_eq(&serde_json::json!(true), 1));
        assert!(!py_eq(&serde_json::json!("2"), 2));
    }

    #[test]
    fn tables_as_python_dicts() {
        let maps = vec![
            MapWrites {
                name: "t".into(),
                writes: vec![
                    (b"a".to_vec(), b"1".to_vec()),
                    (b"a".to_vec(), b"2".to_vec()),
                ],
                removes: vec![b"b".to_vec()],
            },
            MapWrites::with_writes("u", vec![]),
        ];
        let t = Tables::of(&maps, &["t", "u"]);
        assert_eq!(t.value("t", b"a"), Some(Some(&b"2"[..])));
        assert_eq!(t.value("t", b"b"), Some(None));
        assert_eq!(t.value("t", b"c"), None);
        assert!(t.get("u").is_some_and(|r| r.is_empty()));
        assert!(t.get("v").is_none());
    }
}
