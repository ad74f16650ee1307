#![doc = include_str!("../README.md")]

pub mod blocking;
mod client;
mod credentials;
mod error;
pub mod governance;
mod identity;
pub mod models;

pub use client::{
    AppendToLedgerOptions, ConfidentialLedgerClient, ConfidentialLedgerClientOptions,
    DEFAULT_API_VERSION, DEFAULT_SCOPE, GetLedgerEntriesOptions, GetLedgerEntryOptions,
    GetTransactionReceiptOptions, LedgerEntryPager, MethodOptions, PollOptions, RetryOptions,
    WaitUntilDurableOptions,
};
pub use credentials::{
    ConfidentialLedgerCertificateCredential, LedgerCertificate, LedgerCredential,
};
pub use error::{Error, ErrorKind, Result};
pub use identity::{ConfidentialLedgerIdentityServiceClient, IdentityServiceClientOptions};
pub use models::{LedgerUserRole, TransactionState};

/// The Azure SDK credential trait this client accepts for token authentication.
pub use azure_core::credentials::TokenCredential;
