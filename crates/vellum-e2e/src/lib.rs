//! End-to-end tests live in `tests/`: the Rust client library (async and blocking, certificate
//! and token credentials) and its examples against real Vellum nodes over HTTPS.
