//! The blocking twin of the async client: same methods, same options, for code without an
//! async runtime. Each client owns a small single-threaded tokio runtime.

use std::sync::Arc;

use futures_util::StreamExt;

use crate::client::{self, *};
use crate::credentials::{LedgerCertificate, LedgerCredential};
use crate::error::{Error, ErrorKind, Result};
use crate::models::*;

fn runtime() -> Result<Arc<tokio::runtime::Runtime>> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(Arc::new)
        .map_err(|e| Error::with_source(ErrorKind::Connection, "starting the client runtime", e))
}

/// The blocking client. Do not call it from inside an async runtime (use the async client).
#[derive(Clone, Debug)]
pub struct ConfidentialLedgerClient {
    inner: client::ConfidentialLedgerClient,
    rt: Arc<tokio::runtime::Runtime>,
}

/// Entries over a range, fetched page by page as the iterator advances.
pub struct LedgerEntries {
    pager: LedgerEntryPager,
    rt: Arc<tokio::runtime::Runtime>,
}

impl Iterator for LedgerEntries {
    type Item = Result<LedgerEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        self.rt.block_on(self.pager.next())
    }
}

impl ConfidentialLedgerClient {
    /// See [`client::ConfidentialLedgerClient::new`].
    pub fn new(
        endpoint: &str,
        credential: impl Into<LedgerCredential>,
        ledger_certificate: impl Into<LedgerCertificate>,
        options: Option<ConfidentialLedgerClientOptions>,
    ) -> Result<Self> {
        let rt = runtime()?;
        // reqwest's client is built inside the runtime it will run on.
        let inner = {
            let _g = rt.enter();
            client::ConfidentialLedgerClient::new(
                endpoint,
                credential,
                ledger_certificate,
                options,
            )?
        };
        Ok(ConfidentialLedgerClient { inner, rt })
    }

    /// The ledger endpoint.
    pub fn endpoint(&self) -> &str {
        self.inner.endpoint()
    }

    /// See [`client::ConfidentialLedgerClient::append_to_ledger`].
    pub fn append_to_ledger(
        &self,
        entry_contents: &str,
        options: Option<AppendToLedgerOptions>,
    ) -> Result<AppendResult> {
        self.rt
            .block_on(self.inner.append_to_ledger(entry_contents, options))
    }

    /// See [`client::ConfidentialLedgerClient::wait_until_durable`].
    pub fn wait_until_durable(
        &self,
        transaction_id: &str,
        options: Option<WaitUntilDurableOptions>,
    ) -> Result<TransactionStatus> {
        self.rt
            .block_on(self.inner.wait_until_durable(transaction_id, options))
    }

    /// See [`client::ConfidentialLedgerClient::get_transaction_status`].
    pub fn get_transaction_status(
        &self,
        transaction_id: &str,
        options: Option<MethodOptions>,
    ) -> Result<TransactionStatus> {
        self.rt
            .block_on(self.inner.get_transaction_status(transaction_id, options))
    }

    /// See [`client::ConfidentialLedgerClient::get_transaction_receipt`].
    pub fn get_transaction_receipt(
        &self,
        transaction_id: &str,
        options: Option<GetTransactionReceiptOptions>,
    ) -> Result<TransactionReceipt> {
        self.rt
            .block_on(self.inner.get_transaction_receipt(transaction_id, options))
    }

    /// See [`client::ConfidentialLedgerClient::get_ledger_entry`].
    pub fn get_ledger_entry(&self, options: Option<GetLedgerEntryOptions>) -> Result<LedgerEntry> {
        self.rt.block_on(self.inner.get_ledger_entry(options))
    }

    /// See [`client::ConfidentialLedgerClient::get_ledger_entries`]: an iterator here.
    pub fn get_ledger_entries(&self, options: Option<GetLedgerEntriesOptions>) -> LedgerEntries {
        LedgerEntries {
            pager: self.inner.get_ledger_entries(options),
            rt: self.rt.clone(),
        }
    }

    /// See [`client::ConfidentialLedgerClient::list_sub_ledgers`].
    pub fn list_sub_ledgers(&self, options: Option<MethodOptions>) -> Result<Vec<String>> {
        self.rt.block_on(self.inner.list_sub_ledgers(options))
    }

    /// See [`client::ConfidentialLedgerClient::list_tags`].
    pub fn list_tags(
        &self,
        sub_ledger_id: Option<&str>,
        options: Option<MethodOptions>,
    ) -> Result<Vec<String>> {
        self.rt
            .block_on(self.inner.list_tags(sub_ledger_id, options))
    }

    /// See [`client::ConfidentialLedgerClient::create_or_update_user`].
    pub fn create_or_update_user(
        &self,
        user_id: &str,
        role: LedgerUserRole,
        options: Option<MethodOptions>,
    ) -> Result<LedgerUser> {
        self.rt
            .block_on(self.inner.create_or_update_user(user_id, role, options))
    }

    /// See [`client::ConfidentialLedgerClient::get_user`].
    pub fn get_user(&self, user_id: &str, options: Option<MethodOptions>) -> Result<LedgerUser> {
        self.rt.block_on(self.inner.get_user(user_id, options))
    }

    /// See [`client::ConfidentialLedgerClient::delete_user`].
    pub fn delete_user(&self, user_id: &str, options: Option<MethodOptions>) -> Result<()> {
        self.rt.block_on(self.inner.delete_user(user_id, options))
    }

    /// See [`client::ConfidentialLedgerClient::list_users`].
    pub fn list_users(&self, options: Option<MethodOptions>) -> Result<Vec<LedgerUser>> {
        self.rt.block_on(self.inner.list_users(options))
    }

    /// See [`client::ConfidentialLedgerClient::create_or_update_ledger_user`].
    pub fn create_or_update_ledger_user<S: AsRef<str>>(
        &self,
        user_id: &str,
        roles: &[S],
        options: Option<MethodOptions>,
    ) -> Result<LedgerUserMultipleRoles> {
        self.rt.block_on(
            self.inner
                .create_or_update_ledger_user(user_id, roles, options),
        )
    }

    /// See [`client::ConfidentialLedgerClient::get_ledger_user`].
    pub fn get_ledger_user(
        &self,
        user_id: &str,
        options: Option<MethodOptions>,
    ) -> Result<LedgerUserMultipleRoles> {
        self.rt
            .block_on(self.inner.get_ledger_user(user_id, options))
    }

    /// See [`client::ConfidentialLedgerClient::delete_ledger_user`].
    pub fn delete_ledger_user(&self, user_id: &str, options: Option<MethodOptions>) -> Result<()> {
        self.rt
            .block_on(self.inner.delete_ledger_user(user_id, options))
    }

    /// See [`client::ConfidentialLedgerClient::list_ledger_users`].
    pub fn list_ledger_users(
        &self,
        options: Option<MethodOptions>,
    ) -> Result<Vec<LedgerUserMultipleRoles>> {
        self.rt.block_on(self.inner.list_ledger_users(options))
    }

    /// See [`client::ConfidentialLedgerClient::create_user_defined_role`].
    pub fn create_user_defined_role(
        &self,
        roles: &[UserDefinedRole],
        options: Option<MethodOptions>,
    ) -> Result<()> {
        self.rt
            .block_on(self.inner.create_user_defined_role(roles, options))
    }

    /// See [`client::ConfidentialLedgerClient::update_user_defined_role`].
    pub fn update_user_defined_role(
        &self,
        roles: &[UserDefinedRole],
        options: Option<MethodOptions>,
    ) -> Result<()> {
        self.rt
            .block_on(self.inner.update_user_defined_role(roles, options))
    }

    /// See [`client::ConfidentialLedgerClient::get_user_defined_role`].
    pub fn get_user_defined_role(
        &self,
        role_name: &str,
        options: Option<MethodOptions>,
    ) -> Result<UserDefinedRole> {
        self.rt
            .block_on(self.inner.get_user_defined_role(role_name, options))
    }

    /// See [`client::ConfidentialLedgerClient::delete_user_defined_role`].
    pub fn delete_user_defined_role(
        &self,
        role_name: &str,
        options: Option<MethodOptions>,
    ) -> Result<()> {
        self.rt
            .block_on(self.inner.delete_user_defined_role(role_name, options))
    }

    /// See [`client::ConfidentialLedgerClient::create_user_defined_function`].
    pub fn create_user_defined_function(
        &self,
        function_id: &str,
        code: &str,
        options: Option<MethodOptions>,
    ) -> Result<UserDefinedFunction> {
        self.rt.block_on(
            self.inner
                .create_user_defined_function(function_id, code, options),
        )
    }

    /// See [`client::ConfidentialLedgerClient::get_user_defined_function`].
    pub fn get_user_defined_function(
        &self,
        function_id: &str,
        options: Option<MethodOptions>,
    ) -> Result<UserDefinedFunction> {
        self.rt
            .block_on(self.inner.get_user_defined_function(function_id, options))
    }

    /// See [`client::ConfidentialLedgerClient::list_user_defined_functions`].
    pub fn list_user_defined_functions(
        &self,
        options: Option<MethodOptions>,
    ) -> Result<Vec<UserDefinedFunction>> {
        self.rt
            .block_on(self.inner.list_user_defined_functions(options))
    }

    /// See [`client::ConfidentialLedgerClient::execute_user_defined_function`].
    pub fn execute_user_defined_function(
        &self,
        function_id: &str,
        run: Option<crate::models::FunctionRun>,
        options: Option<MethodOptions>,
    ) -> Result<crate::models::FunctionExecution> {
        self.rt.block_on(
            self.inner
                .execute_user_defined_function(function_id, run, options),
        )
    }

    /// See [`client::ConfidentialLedgerClient::create_user_defined_endpoint`].
    pub fn create_user_defined_endpoint(
        &self,
        bundle: &crate::models::Bundle,
        options: Option<MethodOptions>,
    ) -> Result<()> {
        self.rt
            .block_on(self.inner.create_user_defined_endpoint(bundle, options))
    }

    /// See [`client::ConfidentialLedgerClient::get_user_defined_endpoint`].
    pub fn get_user_defined_endpoint(
        &self,
        options: Option<MethodOptions>,
    ) -> Result<crate::models::Bundle> {
        self.rt
            .block_on(self.inner.get_user_defined_endpoint(options))
    }

    /// See [`client::ConfidentialLedgerClient::get_user_defined_endpoints_module`].
    pub fn get_user_defined_endpoints_module(
        &self,
        module_name: &str,
        options: Option<MethodOptions>,
    ) -> Result<crate::models::ModuleDef> {
        self.rt.block_on(
            self.inner
                .get_user_defined_endpoints_module(module_name, options),
        )
    }

    /// See [`client::ConfidentialLedgerClient::get_runtime_options`].
    pub fn get_runtime_options(
        &self,
        options: Option<MethodOptions>,
    ) -> Result<crate::models::JsRuntimeOptions> {
        self.rt.block_on(self.inner.get_runtime_options(options))
    }

    /// See [`client::ConfidentialLedgerClient::update_runtime_options`].
    pub fn update_runtime_options(
        &self,
        runtime_options: &crate::models::JsRuntimeOptions,
        options: Option<MethodOptions>,
    ) -> Result<crate::models::JsRuntimeOptions> {
        self.rt
            .block_on(self.inner.update_runtime_options(runtime_options, options))
    }

    /// See [`client::ConfidentialLedgerClient::delete_user_defined_function`].
    pub fn delete_user_defined_function(
        &self,
        function_id: &str,
        options: Option<MethodOptions>,
    ) -> Result<()> {
        self.rt.block_on(
            self.inner
                .delete_user_defined_function(function_id, options),
        )
    }

    /// See [`client::ConfidentialLedgerClient::node_health`].
    pub fn node_health(&self, options: Option<MethodOptions>) -> Result<NodeHealth> {
        self.rt.block_on(self.inner.node_health(options))
    }

    /// See [`client::ConfidentialLedgerClient::list_nodes`].
    pub fn list_nodes(&self, options: Option<MethodOptions>) -> Result<Vec<ClusterNode>> {
        self.rt.block_on(self.inner.list_nodes(options))
    }

    /// See [`client::ConfidentialLedgerClient::create_join_token`].
    pub fn create_join_token(&self, options: Option<MethodOptions>) -> Result<JoinToken> {
        self.rt.block_on(self.inner.create_join_token(options))
    }

    /// See [`client::ConfidentialLedgerClient::remove_node`].
    pub fn remove_node(&self, node_id: &str, options: Option<MethodOptions>) -> Result<String> {
        self.rt.block_on(self.inner.remove_node(node_id, options))
    }

    /// See [`client::ConfidentialLedgerClient::get_consortium`].
    pub fn get_consortium(&self, options: Option<MethodOptions>) -> Result<Consortium> {
        self.rt.block_on(self.inner.get_consortium(options))
    }

    /// See [`client::ConfidentialLedgerClient::get_constitution`].
    pub fn get_constitution(&self, options: Option<MethodOptions>) -> Result<Constitution> {
        self.rt.block_on(self.inner.get_constitution(options))
    }

    /// See [`client::ConfidentialLedgerClient::get_enclave_quotes`].
    pub fn get_enclave_quotes(&self, options: Option<MethodOptions>) -> Result<LedgerEnclaves> {
        self.rt.block_on(self.inner.get_enclave_quotes(options))
    }
}

/// The blocking identity-service client.
#[derive(Clone, Debug)]
pub struct ConfidentialLedgerIdentityServiceClient {
    inner: crate::identity::ConfidentialLedgerIdentityServiceClient,
    rt: Arc<tokio::runtime::Runtime>,
}

impl ConfidentialLedgerIdentityServiceClient {
    /// See [`crate::identity::ConfidentialLedgerIdentityServiceClient::new`].
    pub fn new(
        identity_service_endpoint: &str,
        options: Option<crate::identity::IdentityServiceClientOptions>,
    ) -> Result<Self> {
        let rt = runtime()?;
        let inner = {
            let _g = rt.enter();
            crate::identity::ConfidentialLedgerIdentityServiceClient::new(
                identity_service_endpoint,
                options,
            )?
        };
        Ok(ConfidentialLedgerIdentityServiceClient { inner, rt })
    }

    /// See [`crate::identity::ConfidentialLedgerIdentityServiceClient::get_ledger_identity`].
    pub fn get_ledger_identity(
        &self,
        ledger_id: &str,
        options: Option<MethodOptions>,
    ) -> Result<LedgerIdentity> {
        self.rt
            .block_on(self.inner.get_ledger_identity(ledger_id, options))
    }
}
