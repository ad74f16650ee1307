//! Errors, mirroring the seed's troubleshooting section: not found, authentication,
//! authorization, other HTTP errors (with status, code and message), transport, verification.

use std::fmt;

/// A result of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// 404: the transaction, entry, user or collection does not exist
    /// (Python: `ResourceNotFoundError`).
    NotFound,
    /// 401: no credential, or one the service does not accept (`ClientAuthenticationError`).
    Authentication,
    /// 403: the caller lacks the role for the operation.
    Authorization,
    /// Any other HTTP error status.
    HttpResponse,
    /// The request never got an HTTP response (connection, TLS, timeout): safe to retry a read.
    Connection,
    /// A receipt or constitution failed verification.
    Verification,
    /// The credential could not be loaded or could not produce a token.
    Credential,
    /// A client-side argument is invalid (nothing was sent).
    InvalidArgument,
    /// A wait ran out of time.
    Timeout,
    /// The service answered something this client cannot read.
    DataConversion,
}

/// An error from the ledger client.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    status: Option<u16>,
    code: Option<String>,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            status: None,
            code: None,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error {
            source: Some(Box::new(source)),
            ..Error::new(kind, message)
        }
    }

    /// An error for an HTTP error response: CCF's `{"error": {"code", "message"}}` body.
    pub(crate) fn from_response(status: u16, body: &[u8]) -> Error {
        let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let code = parsed
            .as_ref()
            .and_then(|v| v["error"]["code"].as_str())
            .map(str::to_owned);
        let message = parsed
            .as_ref()
            .and_then(|v| v["error"]["message"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect());
        let kind = match status {
            401 => ErrorKind::Authentication,
            403 => ErrorKind::Authorization,
            404 => ErrorKind::NotFound,
            _ => ErrorKind::HttpResponse,
        };
        Error {
            kind,
            status: Some(status),
            code,
            message,
            source: None,
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The HTTP status, for errors the service answered.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The service's error code (e.g. `InvalidTransactionId`, `NotAllowed`).
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The message (the service's, for HTTP errors).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.status, &self.code) {
            (Some(s), Some(c)) => write!(f, "HTTP {s} {c}: {}", self.message),
            (Some(s), None) => write!(f, "HTTP {s}: {}", self.message),
            _ => f.write_str(&self.message),
        }
        .and_then(|_| match &self.source {
            Some(s) if self.status.is_none() => write!(f, ": {s}"),
            _ => Ok(()),
        })
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ccf_bodies_map_to_kinds() {
        let e = Error::from_response(
            404,
            br#"{"error":{"code":"InvalidTransactionId","message":"no such tx"}}"#,
        );
        assert_eq!(e.kind(), &ErrorKind::NotFound);
        assert_eq!(e.code(), Some("InvalidTransactionId"));
        assert_eq!(e.to_string(), "HTTP 404 InvalidTransactionId: no such tx");
        assert_eq!(
            Error::from_response(403, b"{}").kind(),
            &ErrorKind::Authorization
        );
        assert_eq!(
            Error::from_response(401, b"").kind(),
            &ErrorKind::Authentication
        );
        let e = Error::from_response(502, b"bad gateway");
        assert_eq!(
            (e.kind(), e.message()),
            (&ErrorKind::HttpResponse, "bad gateway")
        );
    }
}
