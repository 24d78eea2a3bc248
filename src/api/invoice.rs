//! `invoice.*`: invoices created, read, listed, decided on, extended and rescanned.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Api, CHAIN_UNAVAILABLE, Params, Reply, RpcError, limit};
use crate::amount::{self, U256};
use crate::chain::Chain;
use crate::invoice::{Mode, Price, Status};
use crate::store::{Action, ListFilter, MAX_OPTIONS, NewInvoice, NewOption, Owner};

impl Api {
    /// `invoice.get`.
    pub(super) fn get(&self, params: Option<Value>) -> Result<Value, RpcError> {
        let p = Params::new(params, &["id"])?;
        Ok(self.store.get_invoice(&p.req_str("id")?)?)
    }

    /// `invoice.extend`.
    pub(super) fn extend(&self, params: Option<Value>) -> Result<Reply, RpcError> {
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
        Ok(self.store.extend(&id, secs).into())
    }

    /// `invoice.create`: every field checked before anything is written.
    pub(super) fn create(self: &Arc<Self>, params: Option<Value>) -> Result<Reply, RpcError> {
        const FIELDS: &[&str] = &[
            "chain",
            "asset",
            "amount",
            "options",
            "price",
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
        let mode = match p.str("mode")? {
            None => Mode::Fixed,
            Some(m) => Mode::parse(&m)
                .ok_or_else(|| RpcError::field("mode", "must be \"fixed\" or \"open\""))?,
        };
        let confirmations = confirmations(&p)?;
        let single = ["chain", "asset", "amount", "underpaid_tolerance"]
            .iter()
            .any(|k| p.get(k).is_some());
        let price = price(&p)?;
        let options: Vec<(NewOption, &Arc<Chain>)> = match (single, p.get("options")) {
            (true, Some(_)) => {
                return Err(RpcError::field(
                    "options",
                    "is given with chain, asset or amount: use one or the other",
                ));
            }
            (true, None) => {
                let chain = p.req_str("chain")?;
                let o = OptionParams {
                    chain,
                    asset: p.str("asset")?,
                    amount: p.get("amount"),
                    tolerance: p.get("underpaid_tolerance"),
                };
                vec![
                    self.option(&o, mode, confirmations, &|k: &str, why: String| {
                        RpcError::field(k, why)
                    })?,
                ]
            }
            (false, Some(Value::Array(list))) => self.options(list, mode, confirmations)?,
            (false, Some(_)) => {
                return Err(RpcError::field(
                    "options",
                    "must be a list of {chain, asset, amount, underpaid_tolerance}",
                ));
            }
            (false, None) if price.is_none() => {
                return Err(RpcError::field(
                    "price",
                    "is required when no option is given (chain and amount, or options)",
                ));
            }
            (false, None) => Vec::new(),
        };
        if mode == Mode::Open && options.len() != 1 {
            return Err(RpcError::field("mode", "\"open\" takes exactly one option"));
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
        let callback_url = self.callback_url(&p)?;
        let metadata = p.metadata()?;
        // One address per chain: the chains of the options, each once, in order.
        let mut keys: Vec<(String, String)> = Vec::new();
        for (o, chain) in &options {
            if !keys.iter().any(|(c, _)| *c == o.chain) {
                keys.push((o.chain.clone(), key_of(chain)?.key_id().to_string()));
            }
        }
        let new = NewInvoice {
            options: options.iter().map(|(o, _)| o.clone()).collect(),
            price,
            mode,
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
        let write = self
            .store
            .create_invoice(new, &keys, |name, i| self.derive(name, i))?;
        let api = Arc::clone(self);
        Ok(Reply::after(write, move |(view, watch)| {
            crate::fault::point("create_before_answer");
            api.watch(watch);
            view
        }))
    }

    /// `invoice.add_option`: the currency chosen, or a new quote.
    pub(super) fn add_option(self: &Arc<Self>, params: Option<Value>) -> Result<Reply, RpcError> {
        let p = Params::new(
            params,
            &[
                "id",
                "chain",
                "asset",
                "amount",
                "underpaid_tolerance",
                "expires_in",
                "confirmations",
            ],
        )?;
        let id = p.req_str("id")?;
        let o = OptionParams {
            chain: p.req_str("chain")?,
            asset: p.str("asset")?,
            amount: p.get("amount"),
            tolerance: p.get("underpaid_tolerance"),
        };
        let (option, chain) = self.option(
            &o,
            Mode::Fixed,
            confirmations(&p)?,
            &|k: &str, why: String| RpcError::field(k, why),
        )?;
        let expires_in = match p.uint("expires_in")? {
            Some(0) => {
                return Err(RpcError::field(
                    "expires_in",
                    "must be a positive number of seconds",
                ));
            }
            e => e,
        };
        let key = (option.chain.clone(), key_of(chain)?.key_id().to_string());
        let write = self
            .store
            .add_option(&id, option, expires_in, key, |name, i| self.derive(name, i))?;
        let api = Arc::clone(self);
        Ok(Reply::after(write, move |(view, watch)| {
            api.watch(watch);
            view
        }))
    }

    /// The address at `index` of `chain`'s key, and what its watcher matches.
    pub(super) fn derive(&self, chain: &str, index: u32) -> Result<(String, Vec<u8>), String> {
        let source = self
            .chain(chain)
            .ok()
            .and_then(|c| c.settings.addresses.as_ref())
            .ok_or_else(|| format!("chain {chain:?} has no key"))?;
        // Watched by its address alone (the output script, the 20 address bytes): a
        // transfer of any asset the chain knows to it is seen, and counted only in the
        // invoice's own.
        source.derive(index).map(|d| (d.address, d.script))
    }

    /// Puts addresses a create or an add derived in their chains' watch sets.
    fn watch(&self, added: Vec<(String, Vec<u8>, String)>) {
        for (name, script, id) in added {
            if let Ok(chain) = self.chain(&name) {
                chain.watchlist.insert(script, Owner::Invoice(id));
            }
        }
    }

    /// `options` of `invoice.create`: each checked, no chain and asset twice, at most
    /// [`MAX_OPTIONS`].
    fn options(
        &self,
        list: &[Value],
        mode: Mode,
        confirmations: Option<u32>,
    ) -> Result<Vec<(NewOption, &Arc<Chain>)>, RpcError> {
        if list.is_empty() {
            return Err(RpcError::field(
                "options",
                "is empty: give at least one, or a price and no options",
            ));
        }
        if list.len() > MAX_OPTIONS {
            return Err(RpcError::field(
                "options",
                format!("has {} options, more than {MAX_OPTIONS}", list.len()),
            ));
        }
        let mut out: Vec<(NewOption, &Arc<Chain>)> = Vec::new();
        for (i, item) in list.iter().enumerate() {
            let at = |k: &str| format!("options[{i}].{k}");
            let Value::Object(m) = item else {
                return Err(RpcError::field(
                    "options",
                    format!("options[{i}] must be an object"),
                ));
            };
            if let Some(k) = m.keys().find(|k| {
                !["chain", "asset", "amount", "underpaid_tolerance"].contains(&k.as_str())
            }) {
                return Err(RpcError::field(
                    "options",
                    format!("{}: is not a field of an option", at(k)),
                ));
            }
            let text = |k: &str| -> Result<Option<String>, RpcError> {
                match m.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    Some(_) => Err(RpcError::field(
                        "options",
                        format!("{}: must be a string", at(k)),
                    )),
                }
            };
            let chain = text("chain")?.ok_or_else(|| {
                RpcError::field("options", format!("{}: is required", at("chain")))
            })?;
            let o = OptionParams {
                chain,
                asset: text("asset")?,
                amount: m.get("amount").filter(|v| !v.is_null()),
                tolerance: m.get("underpaid_tolerance").filter(|v| !v.is_null()),
            };
            // Every problem of an option is a problem of `options`, saying which.
            let (opt, chain) = self.option(&o, mode, confirmations, &|k, why| {
                RpcError::field("options", format!("{}: {why}", at(k)))
            })?;
            if out
                .iter()
                .any(|(o, _)| o.chain == opt.chain && o.asset == opt.asset)
            {
                return Err(RpcError::field(
                    "options",
                    format!(
                        "options[{i}]: {} on {} is given twice",
                        opt.asset, opt.chain
                    ),
                ));
            }
            out.push((opt, chain));
        }
        Ok(out)
    }

    /// One option checked: its chain enabled with a key, its asset one the chain
    /// knows, its amounts in that asset's decimals. `bad` makes the error of a param.
    fn option(
        &self,
        o: &OptionParams<'_>,
        mode: Mode,
        confirmations: Option<u32>,
        bad: &dyn Fn(&str, String) -> RpcError,
    ) -> Result<(NewOption, &Arc<Chain>), RpcError> {
        let (chain, _) = self.keyed_chain(&o.chain)?;
        let cs = &chain.settings;
        let asset = o.asset.clone().unwrap_or_else(|| cs.native.symbol.clone());
        let Some((asset_def, _)) = cs.asset(&asset) else {
            let mut known = vec![cs.native.symbol.clone()];
            known.extend(cs.tokens.iter().map(|t| t.asset.symbol.clone()));
            return Err(bad(
                "asset",
                format!(
                    "{asset:?} is not an asset of chain {:?} (it takes {})",
                    cs.name,
                    known.join(", ")
                ),
            ));
        };
        let decimals = asset_def.decimals;
        let money = |k: &str, v: Option<&Value>| -> Result<Option<U256>, RpcError> {
            match v {
                None => Ok(None),
                Some(Value::String(s)) => amount::parse(s, decimals)
                    .map(Some)
                    .map_err(|e| bad(k, e.to_string())),
                Some(_) => Err(bad(
                    k,
                    "must be a decimal string, such as \"0.0015\"".to_string(),
                )),
            }
        };
        let amount_due = match (mode, money("amount", o.amount)?) {
            (Mode::Fixed, None) => {
                return Err(bad(
                    "amount",
                    "is required unless mode is \"open\"".to_string(),
                ));
            }
            (Mode::Fixed, Some(a)) if a.is_zero() => {
                return Err(bad("amount", "must be more than 0".to_string()));
            }
            (Mode::Fixed, a) => a,
            (Mode::Open, None) => None,
            (Mode::Open, Some(_)) => {
                return Err(bad("amount", "is not taken in open mode".to_string()));
            }
        };
        let tolerance = money("underpaid_tolerance", o.tolerance)?.unwrap_or(U256::ZERO);
        if let Some(due) = amount_due
            && tolerance >= due
        {
            return Err(bad(
                "underpaid_tolerance",
                "must be less than amount".to_string(),
            ));
        }
        if mode == Mode::Open && !tolerance.is_zero() {
            return Err(bad(
                "underpaid_tolerance",
                "is not taken in open mode".to_string(),
            ));
        }
        Ok((
            NewOption {
                chain: cs.name.clone(),
                asset,
                decimals,
                amount_due,
                tolerance,
                confirmations,
            },
            chain,
        ))
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
        let cursor = p.cursor()?;
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
    pub(super) fn decide(&self, params: Option<Value>, action: Action) -> Result<Reply, RpcError> {
        let p = Params::new(params, &["id"])?;
        Ok(self.store.decide(&p.req_str("id")?, action).into())
    }

    /// `invoice.rescan`: the chain searched again for payments that were missed.
    pub(super) async fn rescan(&self, params: Option<Value>) -> Result<Value, RpcError> {
        let p = Params::new(params, &["id", "from_height"])?;
        let id = p.req_str("id")?;
        let from = p.uint("from_height")?;
        let targets = self.store.invoice_targets(&id)?;
        // Every chain the invoice has an address on; `from_height` applies to each.
        let mut out = json!({ "payments_found": 0 });
        let mut found_total = 0;
        let owner = Owner::Invoice(id);
        for t in &targets {
            let (found, unexplained) = self.rescan_address(&owner, t, from).await?;
            found_total += found;
            if let Some(gap) = unexplained {
                out["unexplained_balance"] = json!(gap);
            }
        }
        out["payments_found"] = json!(found_total);
        Ok(out)
    }
}

/// An option's params, from the top level of `invoice.create` or `add_option`, or from
/// one entry of `options`.
struct OptionParams<'a> {
    chain: String,
    asset: Option<String>,
    amount: Option<&'a Value>,
    tolerance: Option<&'a Value>,
}

impl Api {
    /// An enabled chain with a key to derive addresses from, and that key; 1003 when
    /// the chain is unknown, not enabled or without a key.
    pub(super) fn keyed_chain(
        &self,
        name: &str,
    ) -> Result<(&Arc<Chain>, &crate::keys::AddressSource), RpcError> {
        let chain = self.chain(name)?;
        if !chain.settings.enabled {
            return Err(RpcError::new(
                CHAIN_UNAVAILABLE,
                format!("chain {:?} is not enabled", chain.settings.name),
            ));
        }
        Ok((chain, key_of(chain)?))
    }
}

/// The key a chain's addresses are derived from, or 1003 without one.
fn key_of(chain: &Chain) -> Result<&crate::keys::AddressSource, RpcError> {
    chain.settings.addresses.as_ref().ok_or_else(|| {
        RpcError::new(
            CHAIN_UNAVAILABLE,
            format!(
                "chain {:?} has no key to derive addresses from",
                chain.settings.name
            ),
        )
    })
}

/// `confirmations`: an override of the chain's tiers, at most 1000.
fn confirmations(p: &Params) -> Result<Option<u32>, RpcError> {
    match p.uint("confirmations")? {
        Some(c) if c > 1000 => Err(RpcError::field("confirmations", "must be at most 1000")),
        c => Ok(c.map(|c| c as u32)),
    }
}

/// `price`: `{amount, currency}`, the amount a decimal string, the currency a label of
/// at most 16 characters; shown, never converted.
fn price(p: &Params) -> Result<Option<Price>, RpcError> {
    let Some(v) = p.get("price") else {
        return Ok(None);
    };
    let bad = |why: &str| RpcError::field("price", why.to_string());
    let Value::Object(m) = v else {
        return Err(bad(
            "must be an object {\"amount\": \"24.99\", \"currency\": \"USD\"}",
        ));
    };
    if let Some(k) = m.keys().find(|k| *k != "amount" && *k != "currency") {
        return Err(bad(&format!("{k}: is not a field of a price")));
    }
    let amount = match m.get("amount") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(bad("amount: must be a decimal string, such as \"24.99\"")),
    };
    let decimal = {
        let (int, frac) = amount.split_once('.').unwrap_or((&amount, "0"));
        !int.is_empty()
            && !frac.is_empty()
            && int.bytes().all(|b| b.is_ascii_digit())
            && frac.bytes().all(|b| b.is_ascii_digit())
            && amount.len() <= 40
    };
    if !decimal {
        return Err(bad(&format!("amount: {amount:?} is not a decimal number")));
    }
    let currency = match m.get("currency") {
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= 16 => s.clone(),
        _ => {
            return Err(bad(
                "currency: must be a label of 1 to 16 characters, such as \"USD\"",
            ));
        }
    };
    Ok(Some(Price { amount, currency }))
}
