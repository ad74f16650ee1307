//! Everything that names openraft: the type configuration, the ledger as Raft sees it, the log
//! store over it, the state machine over the index, group commit and the peer transport.

pub mod flusher;
pub(crate) mod ledger;
pub mod log_store;
pub mod network;
pub mod state_machine;
pub mod types;

/// The Raft handle.
pub type Raft = openraft::Raft<types::TypeConfig, state_machine::StateMachine>;
