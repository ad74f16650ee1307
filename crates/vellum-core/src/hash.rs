//! SHA-256 digests as a newtype, with the lowercase-hex text form CCF uses in JSON.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// A 32-byte SHA-256 digest: Merkle nodes, leaves, write-set digests, claims digests.
///
/// Its text form is 64 lowercase hex characters, as in CCF's JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The all-zero digest: leaf 0 of every CCF tree, and the claims digest of entries without claims.
    pub const ZERO: Hash = Hash([0u8; 32]);

    /// SHA-256 of `data`.
    pub fn digest(data: &[u8]) -> Hash {
        Hash(Sha256::digest(data).into())
    }

    /// SHA-256 of the concatenation of `parts`, without copying them together.
    pub fn digest_parts(parts: &[&[u8]]) -> Hash {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        Hash(h.finalize().into())
    }

    /// The Merkle interior node `SHA-256(left || right)` (CCF uses no domain-separation prefix).
    pub fn node(left: &Hash, right: &Hash) -> Hash {
        let mut h = Sha256::new();
        h.update(left.0);
        h.update(right.0);
        Hash(h.finalize().into())
    }

    /// The bytes of the digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses exactly 64 hex characters (either case).
    pub fn from_hex(s: &str) -> Result<Hash, HashParseError> {
        if s.len() != 64 {
            return Err(HashParseError::Length(s.len()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| HashParseError::NotHex)?;
        Ok(Hash(out))
    }

    /// Takes a 32-byte slice.
    pub fn from_slice(b: &[u8]) -> Result<Hash, HashParseError> {
        let arr: [u8; 32] = b.try_into().map_err(|_| HashParseError::Length(b.len()))?;
        Ok(Hash(arr))
    }
}

/// Why a digest could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HashParseError {
    /// Wrong length (hex characters for text, bytes for binary).
    #[error("a SHA-256 digest needs 64 hex characters or 32 bytes, got {0}")]
    Length(usize),
    /// Not hexadecimal.
    #[error("a SHA-256 digest must be hexadecimal")]
    NotHex,
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for Hash {
    type Err = HashParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Hash::from_hex(s)
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Hash::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let h = Hash::digest(b"abc");
        assert_eq!(
            h.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Hash::from_hex(&h.to_hex()).unwrap(), h);
        assert_eq!(Hash::from_hex("ab"), Err(HashParseError::Length(2)));
        assert_eq!(
            Hash::from_hex(&"zz".repeat(32)),
            Err(HashParseError::NotHex)
        );
        assert_eq!(Hash::digest_parts(&[b"a", b"bc"]), h);
    }
}
