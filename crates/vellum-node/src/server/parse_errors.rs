//! The answers hyper writes by itself, to requests it cannot parse (400 bad request, 414 URI
//! too long, 431 headers too large), get the JSON error body every other error has.
//!
//! hyper writes those answers without calling any service, with an empty body, and offers no
//! hook to change them; so the connection's writes pass through [`JsonErrors`], which replaces
//! exactly those: a response head with one of those statuses, `content-length: 0` and nothing
//! after it, in one write (hyper writes a head whole, in one buffer; vectored writes are passed
//! on as they are unless they are that one buffer). Every answer of ours carries a JSON body,
//! so no answer of ours looks like that.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection whose writes are passed on, except hyper's own error answers, which are
/// replaced by CCF-style JSON ones.
#[derive(Debug)]
pub(super) struct JsonErrors<S> {
    inner: S,
    /// A replacement answer, and how much of it is written.
    pending: Option<(Vec<u8>, usize)>,
}

impl<S> JsonErrors<S> {
    pub(super) fn new(inner: S) -> JsonErrors<S> {
        JsonErrors {
            inner,
            pending: None,
        }
    }
}

/// The largest answer hyper makes by itself (a status line, `content-length: 0` and a date).
const OWN_ANSWER_MAX: usize = 256;

/// The JSON answer for hyper's own answer `buf`, if it is one. Every other write is told apart
/// by its first bytes or its length, without being scanned.
fn replacement(buf: &[u8]) -> Option<Vec<u8>> {
    if buf.len() > OWN_ANSWER_MAX || !buf.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let head = std::str::from_utf8(buf).ok()?;
    let status_line = head.strip_prefix("HTTP/1.1 ")?;
    let (code, message) = match status_line.get(..3)? {
        "400" => (
            "InvalidInput",
            "the request could not be parsed as HTTP/1.1",
        ),
        "414" => ("UriTooLong", "the request's URI is too long"),
        "431" => (
            "RequestHeaderFieldsTooLarge",
            "the request's header fields are too many or too large",
        ),
        _ => return None,
    };
    if !head.ends_with("\r\n\r\n") || head.matches("\r\n\r\n").count() != 1 {
        return None;
    }
    if !head
        .to_ascii_lowercase()
        .contains("\r\ncontent-length: 0\r\n")
    {
        return None;
    }
    let first = head.split("\r\n").next()?;
    let body = json!({"error": {"code": code, "message": message}}).to_string();
    Some(
        format!(
            "{first}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<S: AsyncWrite + Unpin> JsonErrors<S> {
    /// Writes what is left of a replacement answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, done)) = &mut self.pending {
            if *done == bytes.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonErrors<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonErrors<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some(bytes) = replacement(buf) {
            this.pending = Some((bytes, 0));
            // Taken whole; what the socket does not take now goes at the next write or flush.
            if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next()) {
            return self.poll_write(cx, only);
        }
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_hypers_own_answers_are_replaced() {
        let own =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let r = String::from_utf8(replacement(own).unwrap()).unwrap();
        assert!(r.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        let body = r.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "RequestHeaderFieldsTooLarge");
        assert!(r.contains(&format!("content-length: {}\r\n", body.len())));
        for kept in [
            // Ours: a body follows.
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\n{\"a\":\"b\"}"[..],
            // Not an error hyper makes.
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            // A piece of a body.
            b"{\"contents\":\"HTTP/1.1 400\"}",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 10\r\n\r\n",
        ] {
            assert!(replacement(kept).is_none(), "{}", String::from_utf8_lossy(kept));
        }
    }
}
