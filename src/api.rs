//! The methods of `admin-api.md`: params checked field by field, then one store call.
//! Bad input is refused with the field's name and changes nothing.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value, json};

use crate::amount::{self, U256};
use crate::chain::Chain;
use crate::chains::Kind;
use crate::config::Settings;
use crate::invoice::{Mode, Status};
use crate::store::{Action, ListFilter, NewInvoice, Store, StoreError};
use crate::{bitcoin, evm};

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
}

/// The API over the store and the chains.
pub(crate) struct Api {
    pub(crate) store: Arc<Store>,
    pub(crate) chains: Vec<Arc<Chain>>,
    pub(crate) settings: Settings,
    pub(crate) started: Instant,
}

impl Api {
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

    /// Calls `method`; `events.subscribe` is the admin server's own.
    pub(crate) async fn call(
        &self,
        method: &str,
        params: Option<Value>,
    ) -> Result<Value, RpcError> {
        match method {
            "invoice.create" => self.create(params),
            "invoice.get" => {
                let p = Params::new(params, &["id"])?;
                Ok(self.store.get_invoice(&p.req_str("id")?)?)
            }
            "invoice.list" => self.list(params),
            "invoice.void" => self.decide(params, Action::Void),
            "invoice.mark_completed" => self.decide(params, Action::MarkCompleted),
            "invoice.mark_refunded" => self.decide(params, Action::MarkRefunded),
            "invoice.extend" => {
                let p = Params::new(params, &["id", "expires_in"])?;
                let id = p.req_str("id")?;
                let secs = match p.uint("expires_in")? {
                    Some(0) | None => {
                        return Err(RpcError::field(
                            "expires_in",
                            "must be a positive number of seconds",
                        ));
                    }
                    Some(s) => s,
                };
                Ok(self.store.extend(&id, secs)?)
            }
            "invoice.rescan" => self.rescan(params).await,
            "chain.status" => {
                let p = Params::new(params, &["chain"])?;
                let chains: Vec<Value> = match p.str("chain")? {
                    Some(name) => vec![self.chain(&name)?.status_json()],
                    None => self.chains.iter().map(|c| c.status_json()).collect(),
                };
                Ok(json!({ "chains": chains }))
            }
            "events.list" => {
                let p = Params::new(params, &["after_seq", "limit", "invoice_id"])?;
                let after = p.uint("after_seq")?.unwrap_or(0);
                let after = i64::try_from(after)
                    .map_err(|_| RpcError::field("after_seq", "is too large"))?;
                let limit = limit(&p)?;
                let events =
                    self.store
                        .events_after(after, limit, p.str("invoice_id")?.as_deref())?;
                let last = events
                    .last()
                    .and_then(|e| e["seq"].as_i64())
                    .unwrap_or(after);
                Ok(json!({ "events": events, "last_seq": last }))
            }
            "daemon.status" => {
                Params::new(params, &[])?;
                Ok(json!({
                    "version": env!("CARGO_PKG_VERSION"),
                    "uptime_s": self.started.elapsed().as_secs(),
                    "db_path": self.settings.db_path(),
                    "chains": self.chains.iter().map(|c| c.settings.name.clone()).collect::<Vec<_>>(),
                    "events_last_seq": self.store.last_seq()?,
                    "webhook_backlog": self.store.webhook_backlog()?,
                }))
            }
            "daemon.backup" => {
                let p = Params::new(params, &["path"])?;
                let path = std::path::PathBuf::from(p.req_str("path")?);
                if !path.is_absolute() {
                    return Err(RpcError::field("path", "must be an absolute path"));
                }
                if path.exists() {
                    return Err(RpcError::field(
                        "path",
                        "exists already; settled does not overwrite",
                    ));
                }
                let Some(dir) = path.parent().filter(|d| d.is_dir()) else {
                    return Err(RpcError::field("path", "its directory does not exist"));
                };
                if let Some(why) = crate::service::unfit_for_backup(dir) {
                    return Err(RpcError::field("path", why));
                }
                let started = Instant::now();
                let store = self.store.clone();
                let to = path.clone();
                let bytes = tokio::task::spawn_blocking(move || store.backup(&to))
                    .await
                    .map_err(|e| internal(e.into()))?
                    .map_err(|e| RpcError::new(INTERNAL, format!("backup failed: {e}")))?;
                Ok(json!({
                    "path": path,
                    "bytes": bytes,
                    "took_ms": started.elapsed().as_millis() as u64,
                }))
            }
            "webhook.deliveries" => {
                let p = Params::new(params, &["status", "limit"])?;
                let status = p.str("status")?;
                if let Some(s) = &status
                    && !["pending", "delivered", "failed"].contains(&s.as_str())
                {
                    return Err(RpcError::field(
                        "status",
                        "must be \"pending\", \"delivered\" or \"failed\"",
                    ));
                }
                let deliveries = self.store.deliveries(status.as_deref(), limit(&p)?)?;
                Ok(json!({ "deliveries": deliveries }))
            }
            "webhook.redeliver" => {
                let p = Params::new(params, &["event_seq", "delivery_id"])?;
                let seq = p.int("event_seq")?;
                let id = p.int("delivery_id")?;
                if seq.is_some() == id.is_some() {
                    return Err(RpcError::field(
                        "event_seq",
                        "give either event_seq or delivery_id",
                    ));
                }
                Ok(self.store.redeliver(id, seq)?)
            }
            _ => Err(RpcError::new(
                METHOD_NOT_FOUND,
                format!("unknown method {method:?}"),
            )),
        }
    }

    fn create(&self, params: Option<Value>) -> Result<Value, RpcError> {
        const FIELDS: &[&str] = &[
            "chain",
            "asset",
            "amount",
            "mode",
            "expires_in",
            "confirmations",
            "underpaid_tolerance",
            "order_id",
            "client_id",
            "email",
            "title",
            "description",
            "callback_url",
            "metadata",
            "idempotency_key",
        ];
        let request = params.clone().unwrap_or(Value::Null).to_string();
        let p = Params::new(params, FIELDS)?;
        let chain = self.chain(&p.req_str("chain")?)?;
        let cs = &chain.settings;
        if !cs.enabled {
            return Err(RpcError::new(
                CHAIN_UNAVAILABLE,
                format!("chain {:?} is not enabled", cs.name),
            ));
        }
        let Some(source) = cs.addresses.as_ref() else {
            return Err(RpcError::new(
                CHAIN_UNAVAILABLE,
                format!("chain {:?} has no key to derive addresses from", cs.name),
            ));
        };
        let asset = p.str("asset")?.unwrap_or_else(|| cs.native.symbol.clone());
        let Some((asset_def, token)) = cs.asset(&asset) else {
            let mut known = vec![cs.native.symbol.clone()];
            known.extend(cs.tokens.iter().map(|t| t.asset.symbol.clone()));
            return Err(RpcError::field(
                "asset",
                format!(
                    "{asset:?} is not an asset of chain {:?} (it takes {})",
                    cs.name,
                    known.join(", ")
                ),
            ));
        };
        let decimals = asset_def.decimals;
        let contract = token.map(|t| t.contract);
        let mode = match p.str("mode")? {
            None => Mode::Fixed,
            Some(m) => Mode::parse(&m)
                .ok_or_else(|| RpcError::field("mode", "must be \"fixed\" or \"open\""))?,
        };
        let money = |k: &str| -> Result<Option<U256>, RpcError> {
            match p.get(k) {
                None => Ok(None),
                Some(Value::String(s)) => amount::parse(s, decimals)
                    .map(Some)
                    .map_err(|e| RpcError::field(k, e.to_string())),
                Some(_) => Err(RpcError::field(
                    k,
                    "must be a decimal string, such as \"0.0015\"",
                )),
            }
        };
        let amount_due = match (mode, money("amount")?) {
            (Mode::Fixed, None) => {
                return Err(RpcError::field(
                    "amount",
                    "is required unless mode is \"open\"",
                ));
            }
            (Mode::Fixed, Some(a)) if a.is_zero() => {
                return Err(RpcError::field("amount", "must be more than 0"));
            }
            (Mode::Fixed, a) => a,
            (Mode::Open, None) => None,
            (Mode::Open, Some(_)) => {
                return Err(RpcError::field("amount", "is not taken in open mode"));
            }
        };
        let tolerance = money("underpaid_tolerance")?.unwrap_or(U256::ZERO);
        if let Some(due) = amount_due
            && tolerance >= due
        {
            return Err(RpcError::field(
                "underpaid_tolerance",
                "must be less than amount",
            ));
        }
        if mode == Mode::Open && !tolerance.is_zero() {
            return Err(RpcError::field(
                "underpaid_tolerance",
                "is not taken in open mode",
            ));
        }
        let expires_in = if p.has("expires_in") && p.get("expires_in").is_none() {
            None
        } else {
            match p.uint("expires_in")? {
                Some(0) => {
                    return Err(RpcError::field(
                        "expires_in",
                        "must be a positive number of seconds, or null",
                    ));
                }
                Some(s) => Some(s),
                None => Some(self.settings.default_expires_in),
            }
        };
        let confirmations = match p.uint("confirmations")? {
            Some(c) if c > 1000 => {
                return Err(RpcError::field("confirmations", "must be at most 1000"));
            }
            c => c.map(|c| c as u32),
        };
        let callback_url = p.text("callback_url", 2048)?;
        if let Some(u) = &callback_url {
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
        let metadata = match p.get("metadata") {
            None => json!({}),
            Some(m @ Value::Object(_)) if m.to_string().len() <= 16 * 1024 => m.clone(),
            Some(Value::Object(_)) => {
                return Err(RpcError::field("metadata", "is larger than 16 KiB"));
            }
            Some(_) => return Err(RpcError::field("metadata", "must be an object")),
        };
        let new = NewInvoice {
            chain: cs.name.clone(),
            asset,
            decimals,
            mode,
            amount_due,
            tolerance,
            confirmations,
            expires_in,
            order_id: p.text("order_id", 255)?,
            client_id: p.text("client_id", 255)?,
            email: p.text("email", 255)?,
            title: p.text("title", 50)?,
            description: p.text("description", 300)?,
            callback_url,
            metadata,
            idempotency_key: p.text("idempotency_key", 255)?,
            request,
        };
        // A token invoice matches transfers of that token's contract to the address.
        let (view, watch) = self.store.create_invoice(new, &source.key_id(), |i| {
            source.derive(i).map(|d| match cs.kind {
                Kind::Bitcoin => (d.address, d.script),
                Kind::Ethereum => (d.address, evm::match_key(contract.as_ref(), &d.script)),
            })
        })?;
        if let Some((script, id)) = watch {
            chain.watchlist.insert(script, id);
        }
        Ok(view)
    }

    fn list(&self, params: Option<Value>) -> Result<Value, RpcError> {
        let p = Params::new(
            params,
            &[
                "status",
                "chain",
                "order_id",
                "created_after",
                "created_before",
                "limit",
                "cursor",
            ],
        )?;
        let status = match p.str("status")? {
            None => None,
            Some(s) => Some(
                Status::parse(&s)
                    .ok_or_else(|| RpcError::field("status", format!("{s:?} is not a status")))?,
            ),
        };
        let cursor = match p.get("cursor") {
            None => None,
            Some(Value::String(s)) => Some(
                s.parse::<i64>()
                    .map_err(|_| RpcError::field("cursor", "is not a cursor this daemon gave"))?,
            ),
            Some(_) => {
                return Err(RpcError::field(
                    "cursor",
                    "must be the next_cursor string of the previous page",
                ));
            }
        };
        let f = ListFilter {
            status,
            chain: p.str("chain")?,
            order_id: p.str("order_id")?,
            created_after: p.int("created_after")?,
            created_before: p.int("created_before")?,
            limit: limit(&p)?,
            cursor,
        };
        let (invoices, next) = self.store.list_invoices(&f)?;
        Ok(json!({ "invoices": invoices, "next_cursor": next.map(|n| n.to_string()) }))
    }

    fn decide(&self, params: Option<Value>, action: Action) -> Result<Value, RpcError> {
        let p = Params::new(params, &["id"])?;
        Ok(self.store.decide(&p.req_str("id")?, action)?)
    }

    async fn rescan(&self, params: Option<Value>) -> Result<Value, RpcError> {
        let p = Params::new(params, &["id", "from_height"])?;
        let id = p.req_str("id")?;
        let from = p.uint("from_height")?;
        let (chain_name, _, _) = self.store.invoice_target(&id)?;
        let chain = self.chain(&chain_name)?;
        if !chain.has_node() {
            return Err(RpcError::new(
                CHAIN_UNAVAILABLE,
                format!("chain {chain_name:?} is not enabled"),
            ));
        }
        let failed = |e: anyhow::Error| RpcError::new(INTERNAL, format!("rescan failed: {e}"));
        match chain.settings.kind {
            Kind::Bitcoin => {
                let found = bitcoin::rescan(chain, &self.store, &id, from)
                    .await
                    .map_err(failed)?;
                Ok(json!({ "payments_found": found }))
            }
            Kind::Ethereum => {
                let (found, unexplained) = evm::rescan(chain, &self.store, &id, from)
                    .await
                    .map_err(failed)?;
                let mut out = json!({ "payments_found": found });
                if let Some(gap) = unexplained {
                    out["unexplained_balance"] =
                        json!(amount::format(gap, chain.settings.native.decimals));
                }
                Ok(out)
            }
        }
    }
}

fn limit(p: &Params) -> Result<u32, RpcError> {
    match p.uint("limit")? {
        None => Ok(100),
        Some(n @ 1..=1000) => Ok(n as u32),
        Some(_) => Err(RpcError::field("limit", "must be from 1 to 1000")),
    }
}
