//! Query strings, decoded strictly: a `%` must start a valid escape, values must be UTF-8, and a
//! repeated name is tolerated (the first wins; the JS client repeats `api-version`).

use vellum_core::TxId;

use super::context::{ApiError, DEFAULT_COLLECTION, Limits};

/// Query parameters, decoded strictly (a `%` must start a valid escape; values must be UTF-8),
/// repeated names tolerated (the first wins; the JS client repeats `api-version`).
pub(super) struct Query {
    params: Vec<(String, String)>,
}

fn check_escapes(raw: &str) -> Result<(), ApiError> {
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let ok =
                b.len() > i + 2 && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit();
            if !ok {
                return Err(ApiError::bad(
                    "InvalidQueryParameterValue",
                    "malformed percent-encoding in the query string",
                ));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

impl Query {
    pub(super) fn parse(raw: Option<&str>) -> Result<Query, ApiError> {
        let raw = raw.unwrap_or("");
        check_escapes(raw)?;
        let mut params = Vec::new();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let dec = |s: &str| -> Result<String, ApiError> {
                String::from_utf8(percent_decode(s.replace('+', " ").as_bytes())).map_err(|_| {
                    ApiError::bad("InvalidQueryParameterValue", "query string is not UTF-8")
                })
            };
            params.push((dec(k)?, dec(v)?));
        }
        Ok(Query { params })
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn legacy(&self) -> bool {
        self.get("api-version") == Some("0.1-preview")
    }

    pub(super) fn api_version(&self) -> &str {
        self.get("api-version").unwrap_or("2022-05-13")
    }

    /// Whether the client sent api-version 2026-07-31-preview or later (compared by date),
    /// whose answers differ in shape in a few places (`acl-2024-api.md` §2.3).
    pub(super) fn since_2026_07_31(&self) -> bool {
        let v = self.api_version();
        v.get(..10).is_some_and(|d| d >= "2026-07-31")
    }

    /// The collection named by `collectionId` (or `subLedgerId`), checked against the limits.
    pub(super) fn collection(&self, limits: &Limits) -> Result<String, ApiError> {
        let c = self
            .get("collectionId")
            .or_else(|| self.get("subLedgerId"))
            .unwrap_or(DEFAULT_COLLECTION);
        if c.is_empty() {
            return Err(ApiError::bad(
                "InvalidCollectionId",
                "collection id is empty",
            ));
        }
        if c.len() > limits.max_collection_id {
            return Err(ApiError::bad(
                "InvalidCollectionId",
                format!(
                    "collection id is {} bytes; the limit is {}",
                    c.len(),
                    limits.max_collection_id
                ),
            ));
        }
        Ok(c.to_owned())
    }

    /// The tags of a write (`tags`, comma-separated; ACL's rules, `tables::parse_tags`).
    pub(super) fn tags(&self) -> Result<Vec<String>, ApiError> {
        vellum_core::tables::parse_tags(self.get("tags").unwrap_or(""))
            .map_err(|e| ApiError::bad("InvalidInput", format!("tags: {e}")))
    }

    /// The one tag a range read filters by (`tag`), if any.
    pub(super) fn tag(&self) -> Result<Option<String>, ApiError> {
        let Some(t) = self.get("tag") else {
            return Ok(None);
        };
        match vellum_core::tables::parse_tags(t) {
            Ok(one) if one.len() == 1 => Ok(one.into_iter().next()),
            Ok(_) | Err(vellum_core::tables::TagError::Empty(_)) => Err(ApiError::bad(
                "InvalidQueryParameterValue",
                format!("tag {t:?}: a range read filters by exactly one tag"),
            )),
            Err(e) => Err(ApiError::bad(
                "InvalidQueryParameterValue",
                format!("tag: {e}"),
            )),
        }
    }

    /// CCF's `transaction_id` parameter of its built-ins: required, a `V.S` id.
    pub(super) fn ccf_txid(raw: Option<&str>) -> Result<TxId, ApiError> {
        Query::parse(raw)?.txid("transaction_id")?.ok_or_else(|| {
            ApiError::bad(
                "MissingQueryParameter",
                "the transaction_id query parameter is required",
            )
        })
    }

    pub(super) fn txid(&self, name: &str) -> Result<Option<TxId>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse::<TxId>().map_err(|e| {
                    ApiError::bad(
                        "InvalidQueryParameterValue",
                        format!("{name} {v:?} is not a transaction id: {e}"),
                    )
                })
            })
            .transpose()
    }
}

fn percent_decode(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_strictly_and_keeps_the_first_of_a_repeated_name() {
        let q = Query::parse(Some(
            "api-version=0.1-preview&api-version=2022-05-13&a=x%20y+z",
        ))
        .unwrap();
        assert!(q.legacy());
        assert_eq!(q.api_version(), "0.1-preview");
        assert_eq!(q.get("a"), Some("x y z"));
        assert_eq!(q.get("missing"), None);
        assert!(Query::parse(Some("a=%zz")).is_err());
        assert!(Query::parse(Some("a=%4")).is_err());
        assert!(Query::parse(Some("a=%ff")).is_err(), "not UTF-8");
        assert_eq!(Query::parse(None).unwrap().api_version(), "2022-05-13");
    }

    #[test]
    fn tags_of_a_write_and_the_tag_of_a_read() {
        let q = Query::parse(Some("tags=chocolate%2Cvanilla&tag=vanilla")).unwrap();
        assert_eq!(q.tags().unwrap(), ["chocolate", "vanilla"]);
        assert_eq!(q.tag().unwrap().as_deref(), Some("vanilla"));
        let none = Query::parse(Some("")).unwrap();
        assert!(none.tags().unwrap().is_empty());
        assert_eq!(none.tag().unwrap(), None);
        for bad in ["tags=a,b,c,d,e,f", "tags=a,,b", "tags=a,"] {
            assert!(Query::parse(Some(bad)).unwrap().tags().is_err(), "{bad}");
        }
        let long = format!("tags={}", "x".repeat(65));
        assert!(Query::parse(Some(&long)).unwrap().tags().is_err());
        for bad in ["tag=a,b", "tag=", "tag=a,"] {
            assert!(Query::parse(Some(bad)).unwrap().tag().is_err(), "{bad}");
        }
        for (v, since) in [
            ("2026-07-31-preview", true),
            ("2027-01-01", true),
            ("2026-02-23", false),
            ("2024-12-09-preview", false),
            ("0.1-preview", false),
        ] {
            let q = Query::parse(Some(&format!("api-version={v}"))).unwrap();
            assert_eq!(q.since_2026_07_31(), since, "{v}");
        }
        assert!(!none.since_2026_07_31());
    }

    #[test]
    fn collections_and_transaction_ids() {
        let limits = Limits::default();
        let q = Query::parse(Some("subLedgerId=s&fromTransactionId=2.5")).unwrap();
        assert_eq!(q.collection(&limits).unwrap(), "s");
        assert_eq!(q.txid("fromTransactionId").unwrap(), Some(TxId::new(2, 5)));
        assert_eq!(q.txid("toTransactionId").unwrap(), None);
        assert!(
            Query::parse(Some("fromTransactionId=x"))
                .unwrap()
                .txid("fromTransactionId")
                .is_err()
        );
        // collectionId wins over subLedgerId; neither: the default collection.
        let q = Query::parse(Some("subLedgerId=s&collectionId=c")).unwrap();
        assert_eq!(q.collection(&limits).unwrap(), "c");
        let q = Query::parse(Some("")).unwrap();
        assert_eq!(q.collection(&limits).unwrap(), DEFAULT_COLLECTION);
        assert!(
            Query::parse(Some("collectionId="))
                .unwrap()
                .collection(&limits)
                .is_err()
        );
        let long = format!("collectionId={}", "x".repeat(limits.max_collection_id + 1));
        assert!(
            Query::parse(Some(&long))
                .unwrap()
                .collection(&limits)
                .is_err()
        );
    }
}
