//! Transaction ids: `VIEW.SEQNO`, as CCF and ACL write them (e.g. `2.15`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A transaction id: the view (Raft term) in which the transaction was created and its
/// sequence number (log index, also its Merkle leaf index).
///
/// Ordered by view, then seqno.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId {
    /// The view (Raft term).
    pub view: u64,
    /// The sequence number (global log index, starting at 1).
    pub seqno: u64,
}

impl TxId {
    /// Builds an id from its parts.
    pub const fn new(view: u64, seqno: u64) -> TxId {
        TxId { view, seqno }
    }
}

/// Why a string is not a transaction id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxIdParseError {
    /// No `.` separating view and seqno.
    #[error("transaction id {0:?} is not of the form VIEW.SEQNO")]
    MissingSeparator(String),
    /// A part is empty, has a non-digit character, a sign, or a leading zero.
    #[error(
        "transaction id {0:?}: view and seqno must be decimal numbers without sign or leading zeros"
    )]
    NotDecimal(String),
    /// A part does not fit in 64 bits.
    #[error("transaction id {0:?}: number out of range")]
    Overflow(String),
    /// View or seqno is zero; neither exists in a CCF ledger.
    #[error("transaction id {0:?}: view and seqno start at 1")]
    Zero(String),
}

fn parse_part(part: &str, whole: &str) -> Result<u64, TxIdParseError> {
    let ok = !part.is_empty()
        && part.bytes().all(|b| b.is_ascii_digit())
        && !(part.len() > 1 && part.starts_with('0'));
    if !ok {
        return Err(TxIdParseError::NotDecimal(whole.to_owned()));
    }
    let n: u64 = part
        .parse()
        .map_err(|_| TxIdParseError::Overflow(whole.to_owned()))?;
    if n == 0 {
        return Err(TxIdParseError::Zero(whole.to_owned()));
    }
    Ok(n)
}

impl FromStr for TxId {
    type Err = TxIdParseError;

    /// Strict parse: `VIEW.SEQNO`, both decimal, non-zero, no sign, no leading zeros, no spaces.
    fn from_str(s: &str) -> Result<TxId, TxIdParseError> {
        let (v, n) = s
            .split_once('.')
            .ok_or_else(|| TxIdParseError::MissingSeparator(s.to_owned()))?;
        Ok(TxId {
            view: parse_part(v, s)?,
            seqno: parse_part(n, s)?,
        })
    }
}

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.view, self.seqno)
    }
}

impl fmt::Debug for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TxId({self})")
    }
}

impl Serialize for TxId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TxId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_prints() {
        let t: TxId = "2.15".parse().unwrap();
        assert_eq!(t, TxId::new(2, 15));
        assert_eq!(t.to_string(), "2.15");
        assert_eq!(
            "18446744073709551615.1".parse::<TxId>().unwrap().view,
            u64::MAX
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "", "2", "2.", ".3", "2.3.4", "+2.3", "2.-3", " 2.3", "2.3 ", "02.3", "2.03", "a.b",
            "2,3", "２.3",
        ] {
            assert!(bad.parse::<TxId>().is_err(), "{bad:?} should not parse");
        }
        assert!(matches!(
            "0.3".parse::<TxId>(),
            Err(TxIdParseError::Zero(_))
        ));
        assert!(matches!(
            "2.0".parse::<TxId>(),
            Err(TxIdParseError::Zero(_))
        ));
        assert!(matches!(
            "18446744073709551616.1".parse::<TxId>(),
            Err(TxIdParseError::Overflow(_))
        ));
        assert!(matches!(
            "23".parse::<TxId>(),
            Err(TxIdParseError::MissingSeparator(_))
        ));
    }

    #[test]
    fn orders_by_view_then_seqno() {
        assert!(TxId::new(2, 100) < TxId::new(3, 1));
        assert!(TxId::new(3, 1) < TxId::new(3, 2));
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(v in 1u64.., s in 1u64..) {
            let t = TxId::new(v, s);
            prop_assert_eq!(t.to_string().parse::<TxId>().unwrap(), t);
        }

        #[test]
        fn parse_never_panics(s in ".{0,30}") {
            let _ = s.parse::<TxId>();
        }
    }
}
