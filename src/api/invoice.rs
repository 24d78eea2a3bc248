//! `invoice.*`: invoices created, read, listed, decided on, extended and rescanned.

use serde_json::{Value, json};

use super::{Api, CHAIN_UNAVAILABLE, INTERNAL, Params, RpcError, limit};
use crate::amount::{self, U256};
use crate::chains::Kind;
use crate::invoice::{Mode, Status};
use crate::store::{Action, ListFilter, NewInvoice};
use crate::{bitcoin, evm};

impl Api {
    /// `invoice.get`.
    pub(super) fn get(&self, params: Option<Value>) -> Result<Value, RpcError> {
        let p = Params::new(params, &["id"])?;
        Ok(self.store.get_invoice(&p.req_str("id")?)?)
    }

    /// `invoice.extend`.
    pub(super) fn extend(&self, params: Option<Value>) -> Result<Value, RpcError> {
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

    /// `invoice.create`: every field checked before anything is written.
    pub(super) fn create(&self, params: Option<Value>) -> Result<Value, RpcError> {
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
        let Some((asset_def, _)) = cs.asset(&asset) else {
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
        // Watched by its address alone (the output script, the 20 address bytes): a
        // transfer of any asset the chain knows to it is seen, and counted only in the
        // invoice's own.
        let (view, watch) = self.store.create_invoice(new, source.key_id(), |i| {
            source.derive(i).map(|d| (d.address, d.script))
        })?;
        if let Some((script, id)) = watch {
            chain.watchlist.insert(script, id);
        }
        Ok(view)
    }

    /// `invoice.list`.
    pub(super) fn list(&self, params: Option<Value>) -> Result<Value, RpcError> {
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

    /// `invoice.void`, `invoice.mark_completed`, `invoice.mark_refunded`: the backend's word.
    pub(super) fn decide(&self, params: Option<Value>, action: Action) -> Result<Value, RpcError> {
        let p = Params::new(params, &["id"])?;
        Ok(self.store.decide(&p.req_str("id")?, action)?)
    }

    /// `invoice.rescan`: the chain searched again for payments that were missed.
    pub(super) async fn rescan(&self, params: Option<Value>) -> Result<Value, RpcError> {
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
