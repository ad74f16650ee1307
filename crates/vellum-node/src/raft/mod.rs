//! Everything that names openraft: the type configuration, the log store over the ledger, the
//! state machine over the index, group commit and the peer transport.

pub mod flusher;
pub mod log_store;
pub mod network;
pub mod state_machine;
pub mod types;
