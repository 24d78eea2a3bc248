//! `deposit_address.*`: deposit addresses created, read, listed, closed and rescanned,
//! and their deposits paged.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Api, Params, Reply, RpcError, limit};
use crate::deposit::AddressStatus;
use crate::invoice::PaymentState;
use crate::store::{DepositFilter, NewDepositAddress, Owner};

impl Api {
    /// `deposit_address.create`: every field checked before anything is written.
    pub(super) fn deposit_create(
        self: &Arc<Self>,
        params: Option<Value>,
    ) -> Result<Reply, RpcError> {
        let request = params.clone().unwrap_or(Value::Null).to_string();
        let p = Params::new(
            params,
            &[
                "chain",
                "client_id",
                "label",
                "metadata",
                "callback_url",
                "idempotency_key",
            ],
        )?;
        let (chain, key) = self.keyed_chain(&p.req_str("chain")?)?;
        let key_id = key.key_id().to_string();
        let client_id = p
            .text("client_id", 255)?
            .ok_or_else(|| RpcError::field("client_id", "is required"))?;
        if client_id.is_empty() {
            return Err(RpcError::field("client_id", "must not be empty"));
        }
        let new = NewDepositAddress {
            chain: chain.settings.name.clone(),
            client_id,
            label: p.text("label", 255)?,
            metadata: p.metadata()?,
            callback_url: self.callback_url(&p)?,
            idempotency_key: p.text("idempotency_key", 255)?,
            request,
        };
        let write = self
            .store
            .create_deposit_address(new, &key_id, |name, i| self.derive(name, i))?;
        let chain = Arc::clone(chain);
        Ok(Reply::after(write, move |(view, script)| {
            if let (Some(script), Some(id)) = (script, view["id"].as_str()) {
                chain
                    .watchlist
                    .insert(script, Owner::Deposit(id.to_string()));
            }
            view
        }))
    }

    /// `deposit_address.get`: by `id`, or by `chain` and `address`.
    pub(super) fn deposit_get(&self, params: Option<Value>) -> Result<Value, RpcError> {
        let p = Params::new(params, &["id", "chain", "address"])?;
        match (p.str("id")?, p.str("chain")?, p.str("address")?) {
            (Some(id), None, None) => Ok(self.store.get_deposit_address(&id)?),
            (None, Some(chain), Some(address)) => {
                let chain = self.chain(&chain)?;
                Ok(self
                    .store
                    .find_deposit_address(&chain.settings.name, &address)?)
            }
            (Some(_), _, _) => Err(RpcError::field(
                "id",
                "give id, or chain and address, not both",
            )),
            (None, Some(_), None) => Err(RpcError::field("address", "is required with chain")),
            (None, None, Some(_)) => Err(RpcError::field("chain", "is required with address")),
            (None, None, None) => Err(RpcError::field("id", "is required (or chain and address)")),
        }
    }

    /// `deposit_address.list`.
    pub(super) fn deposit_list(&self, params: Option<Value>) -> Result<Value, RpcError> {
        let p = Params::new(params, &["client_id", "chain", "status", "limit", "cursor"])?;
        let status = match p.str("status")? {
            None => None,
            Some(s) => Some(AddressStatus::parse(&s).ok_or_else(|| {
                RpcError::field("status", format!("{s:?} is not OPEN or CLOSED"))
            })?),
        };
        let f = DepositFilter {
            client_id: p.str("client_id")?,
            chain: p.str("chain")?,
            status,
            limit: limit(&p)?,
            cursor: p.cursor()?,
        };
        let (list, next) = self.store.list_deposit_addresses(&f)?;
        Ok(json!({ "deposit_addresses": list, "next_cursor": next.map(|n| n.to_string()) }))
    }

    /// `deposit_address.deposits`.
    pub(super) fn deposit_deposits(&self, params: Option<Value>) -> Result<Value, RpcError> {
        let p = Params::new(params, &["id", "state", "limit", "cursor"])?;
        let id = p.req_str("id")?;
        let state = match p.str("state")? {
            None => None,
            Some(s) => Some(PaymentState::parse(&s).ok_or_else(|| {
                RpcError::field(
                    "state",
                    format!("{s:?} is not PENDING, CONFIRMED or DROPPED"),
                )
            })?),
        };
        let (list, next) = self
            .store
            .deposits_page(&id, state, limit(&p)?, p.cursor()?)?;
        Ok(json!({ "deposits": list, "next_cursor": next.map(|n| n.to_string()) }))
    }

    /// `deposit_address.close`.
    pub(super) fn deposit_close(&self, params: Option<Value>) -> Result<Reply, RpcError> {
        let p = Params::new(params, &["id"])?;
        Ok(self.store.close_deposit_address(&p.req_str("id")?).into())
    }

    /// `deposit_address.rescan`: its chain searched again for deposits that were missed.
    pub(super) async fn deposit_rescan(&self, params: Option<Value>) -> Result<Value, RpcError> {
        let p = Params::new(params, &["id", "from_height"])?;
        let id = p.req_str("id")?;
        let from = p.uint("from_height")?;
        let store = self.store.clone();
        let key = id.clone();
        let target = store.blocking(move |s| s.deposit_target(&key)).await?;
        let (found, unexplained) = self
            .rescan_address(&Owner::Deposit(id), &target, from)
            .await?;
        let mut out = json!({ "deposits_found": found });
        if let Some(gap) = unexplained {
            out["unexplained_balance"] = json!(gap);
        }
        Ok(out)
    }
}
