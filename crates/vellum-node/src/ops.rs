//! The writes a node makes for callers, as typed operations. A backup forwards the operation
//! and its caller to the primary, never a write set: the primary checks the caller's rights
//! against its own tables and builds the write set itself, so that a node channel message can
//! only ask for what the caller could have asked for through the API.

use serde::{Deserialize, Serialize};

use std::collections::{BTreeMap, BTreeSet};

use crate::users::{Action, RoleName};
use vellum_js::RuntimeOptions;

/// Who asked for an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Caller {
    /// A client certificate, by its ACL fingerprint.
    Cert(String),
    /// A bearer token, by its `oid`. Token and certificate identities share the users table
    /// and nothing else: a token never acts as a member or a node.
    Token(String),
}

impl Caller {
    /// The user id the users table knows the caller by.
    pub fn user_id(&self) -> &str {
        match self {
            Caller::Cert(id) | Caller::Token(id) => id,
        }
    }
}

/// An operation a caller may ask any node for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Append an application entry (Contributor).
    Append {
        /// Its collection.
        collection: String,
        /// Its contents.
        contents: String,
        /// Its tags (checked by `vellum_core::tables::check_tags`).
        tags: Vec<String>,
        /// User-defined functions run around it, in its transaction.
        hooks: Hooks,
    },
    /// Run a user-defined function (`userDefinedFunctions/execute`); what it writes is one
    /// transaction.
    Execute(Execute),
    /// Serve a request to a user-defined endpoint in `readwrite` mode. The node that took the
    /// request authenticated it by the endpoint's policies; the caller object it built is in
    /// the request.
    Endpoint(EndpointCall),
    /// Deploy an app bundle (`userDefinedEndpoints/write`): its JSON, checked again and
    /// compiled by the primary.
    DeployBundle {
        /// The bundle.
        bundle: String,
    },
    /// Set the endpoints' runtime options (`userDefinedEndpoints/write`).
    SetRuntimeOptions {
        /// The options, whole.
        options: vellum_js::RuntimeOptions,
    },
    /// Give a user exactly these roles (`users/write`). Custom roles must be defined.
    SetRoles {
        /// The user.
        user_id: String,
        /// Its roles (at least one).
        roles: Vec<RoleName>,
    },
    /// Remove a user (`users/delete`).
    RemoveUser {
        /// The user.
        user_id: String,
    },
    /// Define custom roles (`roleDefinitions/write`): with `add`, each role's actions are
    /// added to those it has (PATCH); otherwise they replace them (PUT).
    DefineRoles {
        /// Roles by name, with actions.
        roles: BTreeMap<String, BTreeSet<String>>,
        /// Add to existing actions rather than replace them.
        add: bool,
    },
    /// Store a user-defined function (`userDefinedFunctions/write`); its code must compile.
    PutFunction {
        /// Its id.
        id: String,
        /// Its code.
        code: String,
    },
    /// Delete a user-defined function (`userDefinedFunctions/delete`).
    DeleteFunction {
        /// Its id.
        id: String,
    },
    /// Delete a custom role (`roleDefinitions/delete`).
    DeleteRole {
        /// Its name.
        name: String,
    },
    /// Record a join token (an operator: a member's certificate or an Administrator). The
    /// secret stays with the node that made it; only its digest is recorded.
    JoinToken {
        /// Hex SHA-256 of the token's secret.
        key: String,
        /// Unix seconds after which it is refused.
        expires_at: u64,
    },
    /// Retire a node (an operator).
    Retire {
        /// The node.
        node_id: String,
    },
    /// A governance request (CCF's `/gov` API): it carries its member's signature, which the
    /// primary checks against its own tables.
    Gov(GovRequest),
}

/// A signed governance request, as it arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GovRequest {
    /// What the route asks.
    pub kind: GovKind,
    /// The COSE_Sign1, as sent.
    pub envelope: Vec<u8>,
}

/// The governance routes that write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GovKind {
    /// `POST /gov/members/proposals:create`.
    Propose,
    /// `POST /gov/members/proposals/{proposal_id}/ballots/{member_id}:submit`.
    Ballot {
        /// The proposal in the path.
        proposal_id: String,
        /// The member in the path.
        member_id: String,
    },
    /// `POST /gov/members/proposals/{proposal_id}:withdraw`.
    Withdraw {
        /// The proposal in the path.
        proposal_id: String,
    },
    /// `POST /gov/members/state-digests/{member_id}:update`.
    UpdateDigest {
        /// The member in the path.
        member_id: String,
    },
    /// `POST /gov/members/state-digests/{member_id}:ack`.
    Ack {
        /// The member in the path.
        member_id: String,
    },
}

impl GovKind {
    /// The `ccf.gov.msg.type` a request to this route must be signed as.
    pub fn msg_type(&self) -> vellum_core::gov::MsgType {
        use vellum_core::gov::MsgType;
        match self {
            GovKind::Propose => MsgType::Proposal,
            GovKind::Ballot { .. } => MsgType::Ballot,
            GovKind::Withdraw { .. } => MsgType::Withdrawal,
            GovKind::UpdateDigest { .. } => MsgType::StateDigest,
            GovKind::Ack { .. } => MsgType::Ack,
        }
    }

    /// Whether only an active member may send it (CCF: proposals, ballots, withdrawals).
    pub fn needs_active_member(&self) -> bool {
        matches!(
            self,
            GovKind::Propose | GovKind::Ballot { .. } | GovKind::Withdraw { .. }
        )
    }
}

/// What an operation needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// A role that allows this action.
    Action(Action),
    /// A consortium member's certificate, or an Administrator.
    Operator,
    /// What the endpoint's own authentication policies ask, checked by the node that took the
    /// request (nodes trust each other's checks: the node channel is mutually authenticated).
    Endpoint,
    /// Nothing of the caller: the request carries a member's signature, which the primary
    /// checks itself.
    Signed,
}

impl Op {
    /// What it needs of its caller.
    pub fn needs(&self) -> Needs {
        match self {
            Op::Append { .. } => Needs::Action(Action::APPEND),
            Op::Execute(_) => Needs::Action(Action::FUNCTIONS_EXECUTE),
            Op::Endpoint(_) => Needs::Endpoint,
            Op::DeployBundle { .. } | Op::SetRuntimeOptions { .. } => {
                Needs::Action(Action::ENDPOINTS_WRITE)
            }
            Op::SetRoles { .. } => Needs::Action(Action::USERS_WRITE),
            Op::RemoveUser { .. } => Needs::Action(Action::USERS_DELETE),
            Op::DefineRoles { .. } => Needs::Action(Action::ROLES_WRITE),
            Op::DeleteRole { .. } => Needs::Action(Action::ROLES_DELETE),
            Op::PutFunction { .. } => Needs::Action(Action::FUNCTIONS_WRITE),
            Op::DeleteFunction { .. } => Needs::Action(Action::FUNCTIONS_DELETE),
            Op::JoinToken { .. } | Op::Retire { .. } => Needs::Operator,
            Op::Gov(_) => Needs::Signed,
        }
    }

    /// Everything it needs of its caller: [`Op::needs`], and for a write with hooks, leave to
    /// run functions.
    pub fn needs_all(&self) -> Vec<Needs> {
        let mut all = vec![self.needs()];
        if let Op::Append { hooks, .. } = self
            && !hooks.is_empty()
        {
            all.push(Needs::Action(Action::FUNCTIONS_EXECUTE));
        }
        all
    }

    /// Whether it changes code (functions, the app, its options): its transaction records
    /// who asked (`vellum_core::tables::CHANGED_BY`), so that the audit can show it.
    pub fn changes_code(&self) -> bool {
        matches!(
            self,
            Op::PutFunction { .. }
                | Op::DeleteFunction { .. }
                | Op::DeployBundle { .. }
                | Op::SetRuntimeOptions { .. }
        )
    }

    /// Whether it changes who may do what, or which code serves requests: every node must
    /// honour it on the next request.
    pub fn changes_access(&self) -> bool {
        matches!(
            self,
            Op::SetRoles { .. }
                | Op::RemoveUser { .. }
                | Op::DefineRoles { .. }
                | Op::DeleteRole { .. }
                | Op::DeployBundle { .. }
                | Op::SetRuntimeOptions { .. }
        )
    }

    /// Whether the caller is answered once it is applied (it changes who may do what), rather
    /// than as soon as it has a transaction id.
    pub fn answered_when_applied(&self) -> bool {
        !matches!(
            self,
            Op::Append { .. } | Op::Execute(_) | Op::Endpoint(_) | Op::Gov(_)
        )
    }
}

/// One hook of a write (`preHooks`/`postHooks` items).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    /// The function.
    pub function_id: String,
    /// The export to call (`main` if absent).
    pub export: Option<String>,
    /// Its arguments.
    pub arguments: Vec<String>,
    /// Its runtime options (ACL's UDF defaults if absent).
    pub options: Option<RuntimeOptions>,
}

/// The hooks of a write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hooks {
    /// Run before the entry is written, in order.
    pub pre: Vec<Hook>,
    /// Run after the entry is written, in order.
    pub post: Vec<Hook>,
}

impl Hooks {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.pre.is_empty() && self.post.is_empty()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.pre.len() + self.post.len()
    }
}

/// A standalone run of a function (`POST /app/userDefinedFunctions/{id}:execute`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execute {
    /// The function.
    pub function_id: String,
    /// The export to call.
    pub export: String,
    /// Its arguments.
    pub arguments: Vec<String>,
    /// Its runtime options.
    pub options: RuntimeOptions,
}

/// How a run ended, as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunResult {
    /// It returned this value (ACL's string form).
    Succeeded(String),
    /// It threw, or hit a limit: nothing it wrote was recorded.
    Failed(String),
    /// An endpoint's answer.
    Http(HttpAnswer),
}

/// An endpoint's answer: its response, or 500 if its handler threw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpAnswer {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Content type of the body, if any.
    pub content_type: Option<String>,
    /// Body.
    pub body: Vec<u8>,
}

/// A request to a user-defined endpoint, as the node that took it saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointCall {
    /// Upper-case method.
    pub method: String,
    /// The path after `/app`.
    pub path: String,
    /// CCF's request object but the body, JSON (caller object included).
    pub meta: String,
    /// The body.
    pub body: Vec<u8>,
}
