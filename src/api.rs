//! The methods of `admin-api.md`: params checked field by field, then one store call.
//! Bad input is refused with the field's name and changes nothing.

mod daemon;
mod deposit;
mod events;
mod invoice;
mod threads;

use std::sync::Arc;
use std::time::Instant;

use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::chain::Chain;
use crate::chains::Kind;
use crate::config::Settings;
use crate::store::{Action, Owner, Store, StoreError, Target, Write};
use crate::{bitcoin, evm};
pub(crate) use threads::Threads;

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RpcError {
    pub(crate) code: i64,
    pub(crate) message: String,
    pub(crate) data: Option<Value>,
}

impl RpcError {
    /// An error without data.
    pub(crate) fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// -32602, naming the param and what is wrong with it.
    pub(crate) fn field(field: &str, reason: impl Into<String>) -> RpcError {
        let reason = reason.into();
        RpcError {
            code: INVALID_PARAMS,
            message: format!("invalid params: {field}: {reason}"),
            data: Some(json!({ "field": field, "reason": reason })),
        }
    }

    /// The JSON of the error object.
    pub(crate) fn to_json(&self) -> Value {
        let mut e = json!({ "code": self.code, "message": self.message });
        if let Some(d) = &self.data {
            e["data"] = d.clone();
        }
        e
    }
}

/// Error codes of `admin-api.md`.
pub(crate) const PARSE_ERROR: i64 = -32700;
/// Not a JSON-RPC 2.0 request.
pub(crate) const INVALID_REQUEST: i64 = -32600;
/// Unknown method.
pub(crate) const METHOD_NOT_FOUND: i64 = -32601;
/// Invalid params.
pub(crate) const INVALID_PARAMS: i64 = -32602;
/// Internal error.
pub(crate) const INTERNAL: i64 = -32603;
const NOT_FOUND: i64 = 1001;
const NOT_ALLOWED: i64 = 1002;
const CHAIN_UNAVAILABLE: i64 = 1003;
const IDEMPOTENCY: i64 = 1004;

impl From<StoreError> for RpcError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => RpcError::new(NOT_FOUND, "not found"),
            StoreError::NotAllowed(m) => RpcError::new(NOT_ALLOWED, m),
            StoreError::IdempotencyConflict => RpcError::new(
                IDEMPOTENCY,
                "idempotency_key was already used with different params",
            ),
            // The operator's to fix, and the caller's to retry: said as it is.
            e @ (StoreError::Full(_) | StoreError::ReadOnly(_)) => {
                tracing::error!("{e}");
                RpcError::new(INTERNAL, e.to_string())
            }
            StoreError::Internal(e) => internal(e),
        }
    }
}

fn internal(e: anyhow::Error) -> RpcError {
    tracing::error!("internal error: {e:#}");
    RpcError::new(INTERNAL, "internal error (see the daemon's log)")
}

/// Typed access to a params object that refuses unknown fields.
pub(crate) struct Params(Map<String, Value>);

impl Params {
    /// Accepts an object or nothing; anything else is invalid params.
    pub(crate) fn new(v: Option<Value>, allowed: &[&str]) -> Result<Params, RpcError> {
        let map = match v {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => {
                return Err(RpcError::field(
                    "params",
                    "must be an object of named params",
                ));
            }
        };
        if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(RpcError::field(k, "is not a param of this method"));
        }
        Ok(Params(map))
    }

    fn get(&self, k: &str) -> Option<&Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }

    /// An optional string.
    pub(crate) fn str(&self, k: &str) -> Result<Option<String>, RpcError> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(RpcError::field(k, "must be a string")),
        }
    }

    /// A required string.
    pub(crate) fn req_str(&self, k: &str) -> Result<String, RpcError> {
        self.str(k)?
            .ok_or_else(|| RpcError::field(k, "is required"))
    }

    /// An optional string of at most `max` characters.
    fn text(&self, k: &str, max: usize) -> Result<Option<String>, RpcError> {
        let s = self.str(k)?;
        if let Some(s) = &s
            && s.chars().count() > max
        {
            return Err(RpcError::field(
                k,
                format!("is longer than {max} characters"),
            ));
        }
        Ok(s)
    }

    /// An optional non-negative integer.
    pub(crate) fn uint(&self, k: &str) -> Result<Option<u64>, RpcError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| RpcError::field(k, "must be a non-negative integer")),
        }
    }

    /// An optional integer (Unix seconds).
    fn int(&self, k: &str) -> Result<Option<i64>, RpcError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| RpcError::field(k, "must be an integer")),
        }
    }

    /// Present, even as `null`.
    fn has(&self, k: &str) -> bool {
        self.0.contains_key(k)
    }

    /// `metadata`: an object of at most 16 KiB, `{}` when absent.
    fn metadata(&self) -> Result<Value, RpcError> {
        match self.get("metadata") {
            None => Ok(json!({})),
            Some(m @ Value::Object(_)) if m.to_string().len() <= 16 * 1024 => Ok(m.clone()),
            Some(Value::Object(_)) => Err(RpcError::field("metadata", "is larger than 16 KiB")),
            Some(_) => Err(RpcError::field("metadata", "must be an object")),
        }
    }

    /// A `cursor` given back from a page's `next_cursor`.
    fn cursor(&self) -> Result<Option<i64>, RpcError> {
        match self.get("cursor") {
            None => Ok(None),
            Some(Value::String(s)) => s
                .parse::<i64>()
                .map(Some)
                .map_err(|_| RpcError::field("cursor", "is not a cursor this daemon gave")),
            Some(_) => Err(RpcError::field(
                "cursor",
                "must be the next_cursor string of the previous page",
            )),
        }
    }
}

/// The API over the store and the chains.
pub(crate) struct Api {
    pub(crate) store: Arc<Store>,
    pub(crate) chains: Vec<Arc<Chain>>,
    pub(crate) settings: Settings,
    pub(crate) started: Instant,
    /// The threads its database calls run on.
    pub(crate) threads: Threads,
}

impl Api {
    /// Searches `target`'s chain again for transfers to it, the address of `owner`,
    /// that were missed; returns how many were new, and on an EVM chain without traces
    /// the coin its balance holds beyond them.
    async fn rescan_address(
        &self,
        owner: &Owner,
        target: &Target,
        from: Option<u64>,
    ) -> Result<(usize, Option<String>), RpcError> {
        let chain = self.chain(&target.chain)?;
        if !chain.has_node() {
            return Err(RpcError::new(
                CHAIN_UNAVAILABLE,
                format!("chain {:?} is not enabled", target.chain),
            ));
        }
        let failed = |e: anyhow::Error| RpcError::new(INTERNAL, format!("rescan failed: {e}"));
        match chain.settings.kind {
            Kind::Bitcoin => Ok((
                bitcoin::rescan(chain, &self.store, owner, target, from)
                    .await
                    .map_err(failed)?,
                None,
            )),
            Kind::Ethereum => {
                let (found, gap) = evm::rescan(chain, &self.store, owner, target, from)
                    .await
                    .map_err(failed)?;
                let decimals = chain.settings.native.decimals;
                Ok((found, gap.map(|g| crate::amount::format(g, decimals))))
            }
        }
    }

    /// `callback_url`: an http(s) URL, taken only when webhooks are on.
    fn callback_url(&self, p: &Params) -> Result<Option<String>, RpcError> {
        let url = p.text("callback_url", 2048)?;
        if let Some(u) = &url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(RpcError::field(
                    "callback_url",
                    "must be an http:// or https:// URL",
                ));
            }
            if self.settings.webhook.is_none() {
                return Err(RpcError::field(
                    "callback_url",
                    "webhooks are off: the daemon has no webhook.secret_file to sign them with",
                ));
            }
        }
        Ok(url)
    }

    fn chain(&self, name: &str) -> Result<&Arc<Chain>, RpcError> {
        self.chains
            .iter()
            .find(|c| c.settings.name == name)
            .ok_or_else(|| {
                RpcError::new(
                    CHAIN_UNAVAILABLE,
                    format!("chain {name:?} is not configured"),
                )
            })
    }

    /// Calls `method`; `events.subscribe` is the admin server's own. The answer comes
    /// serialized.
    pub(crate) async fn call(
        self: &Arc<Self>,
        method: &str,
        params: Option<Value>,
    ) -> Result<Box<RawValue>, RpcError> {
        match method {
            "invoice.rescan" => raw(self.rescan(params).await),
            "deposit_address.rescan" => raw(self.deposit_rescan(params).await),
            "daemon.backup" => raw(self.backup(params).await),
            _ => {
                // Every other method is a database call: on the API's threads, so that
                // requests (a batch's items too) run side by side and none holds an
                // async worker. A write's commit is awaited here, not on that thread:
                // a crowd of creates waiting for one group commit holds no threads.
                // An answer known there is serialized there too: the thread that built
                // its many small allocations frees them, cheaper than any other.
                let (api, method) = (Arc::clone(self), method.to_string());
                let reply = self
                    .threads
                    .run(move || match api.call_blocking(&method, params) {
                        Reply::Now(r) => Ok(raw(r)),
                        Reply::Later(write) => Err(write),
                    })
                    .await
                    .unwrap_or_else(|e| Ok(Err(internal(anyhow::anyhow!("{}", e.0)))));
                match reply {
                    Ok(r) => r,
                    Err(write) => raw(write.await),
                }
            }
        }
    }

    fn call_blocking(self: &Arc<Self>, method: &str, params: Option<Value>) -> Reply {
        match method {
            "invoice.create" => self.create(params).into(),
            "invoice.add_option" => self.add_option(params).into(),
            "invoice.get" => self.get(params).into(),
            "invoice.list" => self.list(params).into(),
            "invoice.void" => self.decide(params, Action::Void).into(),
            "invoice.mark_completed" => self.decide(params, Action::MarkCompleted).into(),
            "invoice.mark_refunded" => self.decide(params, Action::MarkRefunded).into(),
            "invoice.extend" => self.extend(params).into(),
            "deposit_address.create" => self.deposit_create(params).into(),
            "deposit_address.get" => self.deposit_get(params).into(),
            "deposit_address.list" => self.deposit_list(params).into(),
            "deposit_address.deposits" => self.deposit_deposits(params).into(),
            "deposit_address.close" => self.deposit_close(params).into(),
            "chain.status" => self.chain_status(params).into(),
            "events.list" => self.events_list(params).into(),
            "daemon.status" => self.daemon_status(params).into(),
            "webhook.deliveries" => self.deliveries(params).into(),
            "webhook.redeliver" => self.redeliver(params).into(),
            _ => Reply::Now(Err(RpcError::new(
                METHOD_NOT_FOUND,
                format!("unknown method {method:?}"),
            ))),
        }
    }
}

/// An answer serialized, as the admin socket sends it.
pub(crate) fn raw(r: Result<Value, RpcError>) -> Result<Box<RawValue>, RpcError> {
    r.and_then(|v| serde_json::value::to_raw_value(&v).map_err(|e| internal(e.into())))
}

/// A method's answer from its blocking thread: known there, or a write to await.
enum Reply {
    Now(Result<Value, RpcError>),
    Later(std::pin::Pin<Box<dyn Future<Output = Result<Value, RpcError>> + Send>>),
}

impl Reply {
    /// Awaits `write`'s commit, then makes the answer of what it wrote with `then`.
    fn after<T: Send + 'static>(
        write: Write<T>,
        then: impl FnOnce(T) -> Value + Send + 'static,
    ) -> Reply {
        Reply::Later(Box::pin(async move { Ok(then(write.done().await?)) }))
    }
}

impl From<Result<Value, RpcError>> for Reply {
    fn from(r: Result<Value, RpcError>) -> Reply {
        Reply::Now(r)
    }
}

impl From<Write<Value>> for Reply {
    /// A write whose answer is the object it wrote.
    fn from(write: Write<Value>) -> Reply {
        Reply::after(write, |v| v)
    }
}

impl From<Result<Reply, RpcError>> for Reply {
    fn from(r: Result<Reply, RpcError>) -> Reply {
        r.unwrap_or_else(|e| Reply::Now(Err(e)))
    }
}

fn limit(p: &Params) -> Result<u32, RpcError> {
    match p.uint("limit")? {
        None => Ok(100),
        Some(n @ 1..=1000) => Ok(n as u32),
        Some(_) => Err(RpcError::field("limit", "must be from 1 to 1000")),
    }
}
