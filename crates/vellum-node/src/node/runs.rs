//! User-defined functions run on the primary: standalone, and as hooks in a write's
//! transaction (see [`crate::scripts`] for how runs stay consistent with each other).

use std::sync::Arc;

use serde_json::json;
use vellum_core::TxId;
use vellum_core::entry::EntryBuilder;
use vellum_js::{Call, Outcome, Writes};

use super::LedgerNode;
use super::writes::{Performed, entry_write_set};
use crate::ops::{Caller, EndpointCall, Execute, Hook, Hooks, HttpAnswer, RunResult};
use crate::scripts::{LedgerStore, MAX_HOOKS, map_writes, merge};
use crate::{NodeError, Refusal};

impl LedgerNode {
    /// The store a run reads: the applied state, the writes of runs proposed since, then
    /// `layers` (earlier hooks of the same write); post-hooks also see `written`.
    fn store(
        &self,
        mut layers: Vec<Arc<Writes>>,
        written: Option<(String, String)>,
    ) -> Arc<LedgerStore> {
        let applied = self.commit.borrow().applied;
        let mut all = self.scripts.layers(applied);
        all.append(&mut layers);
        Arc::new(LedgerStore {
            readonly: false,
            index: self.index.clone(),
            ledger: self.ledger.clone(),
            layers: all,
            written,
            state: self.state.clone(),
        })
    }

    fn code_of(&self, id: &str) -> Result<String, NodeError> {
        self.state
            .with_functions(|f| f.get(id).cloned())
            .ok_or_else(|| Refusal::NoSuchFunction(id.to_owned()).into())
    }

    /// Runs one function with `context` (see [`run_context`]) over `store`.
    async fn run_one(
        &self,
        function_id: &str,
        code: &str,
        hook: &Hook,
        context: Arc<serde_json::Value>,
        store: Arc<LedgerStore>,
    ) -> Result<Outcome, NodeError> {
        let mut call = Call::new(function_id, code, &hook.arguments);
        call.export = hook.export.as_deref().unwrap_or("main");
        call.context = context;
        call.options = hook.options.unwrap_or_default();
        // Asked for (max_cached_interpreters > 0): runs of the same code share an interpreter.
        call.reuse = (call.options.max_cached_interpreters > 0)
            .then(|| self.scripts.reuse_key(function_id, code));
        // A run has no entropy of its own: its Math.random is seeded by where the ledger is.
        call.seed = self.ledger.last_seqno();
        self.scripts
            .run(&call, store)
            .await
            .map_err(|e| Refusal::Sandbox(e.to_string()).into())
    }

    /// Runs a function standalone; what it writes is one transaction.
    pub(super) async fn execute_here(
        &self,
        caller: Option<&Caller>,
        e: &Execute,
    ) -> Result<Performed, NodeError> {
        let code = self.code_of(&e.function_id)?;
        let hook = Hook {
            function_id: e.function_id.clone(),
            export: Some(e.export.clone()),
            arguments: e.arguments.clone(),
            options: Some(e.options),
        };
        let context = run_context(
            caller,
            json!({"request": {
                "method": "POST",
                "url": format!("/app/userDefinedFunctions/{}:execute", e.function_id),
            }}),
        );
        // First without the turn, unless this code is known to use the maps: a run that uses
        // none depends on nothing but its inputs, so it needs no place in the order of runs.
        let export_id = format!("{}#{}", e.function_id, e.export);
        if !self.scripts.touches(&export_id, &code) {
            let store = self.store(Vec::new(), None);
            let outcome = self
                .run_one(&e.function_id, &code, &hook, context.clone(), store)
                .await?;
            match outcome {
                Outcome::Succeeded {
                    return_value,
                    effects,
                    ..
                } if !effects.touched_state => {
                    return Ok(Performed {
                        txid: None,
                        result: Some(RunResult::Succeeded(return_value)),
                    });
                }
                Outcome::Succeeded { .. } => self.scripts.touched(&export_id, &code),
                // A failure is run again in turn: it may have come from the maps.
                Outcome::Failed { .. } => {}
            }
        }
        let turn = self.scripts.turn.lock().await;
        let store = self.store(Vec::new(), None);
        let outcome = self
            .run_one(&e.function_id, &code, &hook, context, store)
            .await?;
        let (return_value, writes) = match outcome {
            Outcome::Failed { message } => {
                return Ok(Performed {
                    txid: None,
                    result: Some(RunResult::Failed(message)),
                });
            }
            Outcome::Succeeded {
                return_value,
                writes,
                ..
            } => (return_value, writes),
        };
        let txid = if writes.is_empty() {
            None
        } else {
            let ws = EntryBuilder {
                maps: map_writes(&writes),
                ..EntryBuilder::default()
            };
            Some(self.record(ws, writes, turn).await?)
        };
        Ok(Performed {
            txid,
            result: Some(RunResult::Succeeded(return_value)),
        })
    }

    /// Appends an entry with hooks: the pre-hooks, the entry, the post-hooks, all in one
    /// transaction; a hook that fails refuses the write and nothing is written.
    pub(super) async fn append_with_hooks(
        &self,
        caller: Option<&Caller>,
        collection: &str,
        contents: &str,
        tags: &[String],
        hooks: &Hooks,
    ) -> Result<Performed, NodeError> {
        if hooks.len() > MAX_HOOKS {
            return Err(Refusal::TooManyHooks.into());
        }
        let tags = vellum_core::tables::check_tags(tags).map_err(Refusal::Tags)?;
        // Every function must exist before anything runs.
        let mut runs = Vec::with_capacity(hooks.len());
        for (hook, post) in hooks
            .pre
            .iter()
            .map(|h| (h, false))
            .chain(hooks.post.iter().map(|h| (h, true)))
        {
            runs.push((hook, post, self.code_of(&hook.function_id)?));
        }
        let context = run_context(
            caller,
            json!({
                "collectionId": collection,
                "contents": contents,
                "request": {"method": "POST", "url": "/app/transactions"},
            }),
        );
        // First without the turn, unless some hook's code is known to use the maps: hooks that
        // use none (validating the entry, say) need no place in the order of runs, and the
        // write goes on as a plain one.
        let known = runs
            .iter()
            .any(|(h, _, code)| self.scripts.touches(&export_id(h), code));
        if !known {
            let (result, touched) = self
                .run_hooks(&runs, collection, contents, &context)
                .await?;
            match (result, touched.is_empty()) {
                (Ok(_), true) => {
                    let ws = entry_write_set(collection, contents, tags);
                    let txid = self.write_here(Arc::new(ws), false).await?;
                    return Ok(Performed {
                        txid: Some(txid),
                        result: None,
                    });
                }
                (Err(message), true) => return Err(Refusal::HookFailed(message).into()),
                (_, false) => {
                    for (id, code) in touched {
                        self.scripts.touched(&id, &code);
                    }
                }
            }
        }
        let turn = self.scripts.turn.lock().await;
        let layers = match self
            .run_hooks(&runs, collection, contents, &context)
            .await?
            .0
        {
            Ok(layers) => layers,
            Err(message) => return Err(Refusal::HookFailed(message).into()),
        };
        let mut all = Writes::new();
        for l in layers {
            merge(&mut all, Arc::unwrap_or_clone(l));
        }
        let mut ws = entry_write_set(collection, contents, tags);
        ws.maps.extend(map_writes(&all));
        let txid = self.record(ws, all, turn).await?;
        Ok(Performed {
            txid: Some(txid),
            result: None,
        })
    }

    /// Runs a write's hooks in order, each over the writes of those before it: their writes
    /// (one layer per hook that wrote), or the first failure's message; and the (function id,
    /// code) of the hooks that used the maps.
    #[allow(clippy::type_complexity)]
    async fn run_hooks(
        &self,
        runs: &[(&Hook, bool, String)],
        collection: &str,
        contents: &str,
        context: &Arc<serde_json::Value>,
    ) -> Result<(Result<Vec<Arc<Writes>>, String>, Vec<(String, String)>), NodeError> {
        let mut layers: Vec<Arc<Writes>> = Vec::new();
        let mut touched = Vec::new();
        for (hook, post, code) in runs {
            let written = post.then(|| (collection.to_owned(), contents.to_owned()));
            let store = self.store(layers.clone(), written);
            let outcome = self
                .run_one(&hook.function_id, code, hook, context.clone(), store)
                .await?;
            match outcome {
                Outcome::Failed { message } => return Ok((Err(message), touched)),
                Outcome::Succeeded {
                    writes, effects, ..
                } => {
                    if effects.touched_state {
                        touched.push((export_id(hook), code.clone()));
                    }
                    if !writes.is_empty() {
                        layers.push(Arc::new(writes));
                    }
                }
            }
        }
        Ok((Ok(layers), touched))
    }

    /// Serves a request to a user-defined endpoint: a `readwrite` one on the primary (`local`
    /// false: its writes recorded as one transaction, kept for a 2xx answer unless the handler
    /// said otherwise with `ccf.rpc.setApplyWrites`), a `readonly` one here (`local` true:
    /// it cannot write).
    pub(super) async fn endpoint_here(
        &self,
        caller: Option<&Caller>,
        call: &EndpointCall,
        local: bool,
    ) -> Result<Performed, NodeError> {
        let answer = |a: HttpAnswer, txid: Option<TxId>| Performed {
            txid,
            result: Some(RunResult::Http(a)),
        };
        let app = self.app();
        let Some(Ok((endpoint, _))) = app.route(&call.method, &call.path) else {
            // The app changed since the request was routed.
            return Ok(answer(
                error_answer(404, "ResourceNotFound", "no such endpoint"),
                None,
            ));
        };
        let code = app
            .modules
            .get(&endpoint.module)
            .cloned()
            .unwrap_or_default();
        let mut js = Call::new(&endpoint.module, &code, &[]);
        js.export = &endpoint.function;
        js.options = app.options;
        js.modules = Some(app.modules.clone());
        js.http = Some(vellum_js::HttpRequest {
            meta: serde_json::from_str(&call.meta).unwrap_or_else(|_| json!({})),
            body: call.body.clone(),
        });
        js.context = run_context(caller, json!({}));
        js.seed = self.ledger.last_seqno();
        js.reuse = endpoint
            .reuse_key
            .as_ref()
            .map(|k| format!("ude:{}:{k}", app.digest));
        let turn = if local {
            None
        } else {
            Some(self.scripts.turn.lock().await)
        };
        let mut store = Arc::unwrap_or_clone(self.store(Vec::new(), None));
        store.readonly = local;
        let outcome = self
            .scripts
            .run(&js, Arc::new(store))
            .await
            .map_err(|e| Refusal::Sandbox(e.to_string()))?;
        let (writes, effects) = match outcome {
            Outcome::Failed { message } => {
                let shown = if app.options.return_exception_details {
                    message
                } else {
                    "Exception thrown while executing.".to_owned()
                };
                return Ok(answer(error_answer(500, "InternalError", &shown), None));
            }
            Outcome::Succeeded {
                writes, effects, ..
            } => (writes, effects),
        };
        let response = effects.response.unwrap_or(vellum_js::HttpResponse {
            status: 200,
            headers: Vec::new(),
            content_type: None,
            body: Vec::new(),
        });
        let a = HttpAnswer {
            status: response.status,
            headers: response.headers,
            content_type: response.content_type.map(str::to_owned),
            body: response.body,
        };
        let keep = effects
            .apply_writes
            .unwrap_or((200..300).contains(&response.status));
        let Some(turn) =
            turn.filter(|_| keep && (!writes.is_empty() || effects.claims_digest.is_some()))
        else {
            return Ok(answer(a, None));
        };
        let mut ws = EntryBuilder {
            maps: map_writes(&writes),
            ..EntryBuilder::default()
        };
        if let Some(d) = effects.claims_digest {
            ws.claims_digest = vellum_core::Hash(d);
        }
        let txid = self.record(ws, writes, turn).await?;
        Ok(answer(a, Some(txid)))
    }

    /// Records a run's write set: proposed while the run still holds its turn (so that the
    /// log keeps runs in the order they ran), its writes kept as pending until applied.
    pub(super) async fn record(
        &self,
        ws: EntryBuilder,
        writes: Writes,
        turn: tokio::sync::MutexGuard<'_, ()>,
    ) -> Result<TxId, NodeError> {
        self.record_holding(ws, writes, turn, false).await
    }

    /// [`LedgerNode::record`], holding the turn until the write is appended here if `hold`
    /// (a rekey: the next run must see the new secret).
    pub(super) async fn record_holding(
        &self,
        ws: EntryBuilder,
        writes: Writes,
        turn: tokio::sync::MutexGuard<'_, ()>,
        hold: bool,
    ) -> Result<TxId, NodeError> {
        let pending = (!writes.is_empty()).then(|| self.scripts.propose(Arc::new(writes)));
        let proposal = match self.propose(Arc::new(ws), false).await {
            Ok(p) => p,
            Err(e) => {
                if let Some(id) = pending {
                    self.scripts.dropped(id);
                }
                return Err(e);
            }
        };
        let held = hold.then_some(turn);
        let r = self.settle(proposal).await;
        drop(held);
        if let Some(id) = pending {
            match &r {
                Ok(txid) => self.scripts.assigned(id, txid.seqno),
                Err(_) => self.scripts.dropped(id),
            }
        }
        r
    }
}

/// A run's `context` global: `fields`, and the caller's id as `userId` (empty for the process
/// embedding the node).
fn run_context(caller: Option<&Caller>, mut fields: serde_json::Value) -> Arc<serde_json::Value> {
    fields["userId"] = json!(caller.map(Caller::user_id).unwrap_or_default());
    Arc::new(fields)
}

/// A CCF-style error as an endpoint's answer.
fn error_answer(status: u16, code: &str, message: &str) -> HttpAnswer {
    HttpAnswer {
        status,
        headers: Vec::new(),
        content_type: Some("application/json".into()),
        body: json!({"error": {"code": code, "message": message}})
            .to_string()
            .into_bytes(),
    }
}

/// A hook's function and export, as the record of runs that used the maps knows them (an
/// export that only validates its input stays out of the turn even if another export of the
/// same module uses the maps).
fn export_id(hook: &Hook) -> String {
    format!(
        "{}#{}",
        hook.function_id,
        hook.export.as_deref().unwrap_or("main")
    )
}
