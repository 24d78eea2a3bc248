//! `events.list` and `webhook.*`: what happened, and its delivery.

use serde_json::{Value, json};

use super::{Api, Params, RpcError, limit};
use crate::store::Owner;

impl Api {
    /// `events.list`.
    pub(super) fn events_list(&self, params: Option<Value>) -> Result<Value, RpcError> {
        let p = Params::new(
            params,
            &["after_seq", "limit", "invoice_id", "deposit_address_id"],
        )?;
        let after = p.uint("after_seq")?.unwrap_or(0);
        let after =
            i64::try_from(after).map_err(|_| RpcError::field("after_seq", "is too large"))?;
        let limit = limit(&p)?;
        let of = match (p.str("invoice_id")?, p.str("deposit_address_id")?) {
            (Some(_), Some(_)) => {
                return Err(RpcError::field(
                    "deposit_address_id",
                    "give invoice_id or deposit_address_id, not both",
                ));
            }
            (Some(i), None) => Some(Owner::Invoice(i)),
            (None, Some(d)) => Some(Owner::Deposit(d)),
            (None, None) => None,
        };
        let events = self.store.events_after(after, limit, of.as_ref())?;
        let last = events
            .last()
            .and_then(|e| e["seq"].as_i64())
            .unwrap_or(after);
        Ok(json!({ "events": events, "last_seq": last }))
    }

    /// `webhook.deliveries`.
    pub(super) fn deliveries(&self, params: Option<Value>) -> Result<Value, RpcError> {
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

    /// `webhook.redeliver`.
    pub(super) fn redeliver(&self, params: Option<Value>) -> Result<Value, RpcError> {
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
}
