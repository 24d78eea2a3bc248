//! Deposit addresses and deposits (`lifecycle.md`, "Deposit addresses"): the records
//! the store keeps, the one rule that credits a deposit and takes the credit back,
//! and the JSON the API shows. Nothing here knows of nodes or of the database.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::amount::{self, U256};
use crate::invoice::{PaymentState, string_enum};

string_enum!(
    /// Whether a deposit address takes new deposits for good (`OPEN`) or only for its
    /// late window (`CLOSED`).
    AddressStatus {
        Open = "OPEN",
        Closed = "CLOSED",
    }
);

/// One customer's reusable address on one chain.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DepositAddress {
    pub(crate) id: String,
    pub(crate) status: AddressStatus,
    pub(crate) chain: String,
    pub(crate) address: String,
    pub(crate) derivation_index: u32,
    pub(crate) client_id: String,
    pub(crate) label: Option<String>,
    pub(crate) metadata: Value,
    pub(crate) callback_url: Option<String>,
    pub(crate) created_at: i64,
    pub(crate) closed_at: Option<i64>,
}

/// One transfer to a deposit address, keyed `(chain, txid, index)` as a payment is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Deposit {
    pub(crate) txid: String,
    pub(crate) index: u32,
    pub(crate) asset: String,
    pub(crate) amount: U256,
    pub(crate) state: PaymentState,
    pub(crate) block_height: Option<u64>,
    pub(crate) block_hash: Option<String>,
    pub(crate) seen_at: i64,
    /// Signals replace-by-fee: never credited from the mempool.
    pub(crate) rbf: bool,
    /// Its required confirmations, from the chain's tiers for its own amount.
    pub(crate) required: u32,
    /// Between its `deposit.confirmed` and a `deposit.reverted`.
    pub(crate) credited: bool,
    /// Credited with final confirmations: a reorganisation no longer takes it back.
    pub(crate) settled: bool,
}

/// What a deposit's credit is once the chain is as now known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Credit {
    pub(crate) credited: bool,
    pub(crate) settled: bool,
}

impl Deposit {
    /// Confirmations at `tip`: 0 in the mempool or dropped.
    pub(crate) fn confirmations(&self, tip: Option<u64>) -> u64 {
        crate::invoice::confirmations(self.state, self.block_height, tip)
    }

    /// Still counted: in the mempool or in a block.
    pub(crate) fn counts(&self) -> bool {
        self.state != PaymentState::Dropped
    }

    /// The credit of `lifecycle.md`: a deposit is credited when it reaches its own
    /// required confirmations (from the mempool only at 0, and never when it signals
    /// replace-by-fee); a credited one is taken back only when the best chain no
    /// longer holds it (a reorganisation that left it out, or a replacement), not when
    /// a reorganisation merely moved it; and once credited in a final block it stays,
    /// whatever happens after (a deeper reorganisation is the chain's alarm).
    pub(crate) fn credit(&self, tip: Option<u64>, final_height: Option<u64>) -> Credit {
        if self.settled {
            return Credit {
                credited: true,
                settled: true,
            };
        }
        let from_mempool = self.required == 0 && !self.rbf;
        let held = match self.state {
            PaymentState::Confirmed => true,
            PaymentState::Pending => from_mempool,
            PaymentState::Dropped => false,
        };
        let reached = held && self.confirmations(tip) >= u64::from(self.required);
        let credited = if self.credited { held } else { reached };
        let in_final_block = self.state == PaymentState::Confirmed
            && self
                .block_height
                .zip(final_height)
                .is_some_and(|(h, f)| h <= f);
        Credit {
            credited,
            settled: credited && in_final_block,
        }
    }
}

/// The JSON of a deposit; `decimals` of its asset.
pub(crate) fn deposit_json(d: &Deposit, decimals: u8, tip: Option<u64>) -> Value {
    json!({
        "txid": d.txid,
        "index": d.index,
        "asset": d.asset,
        "amount": amount::format(d.amount, decimals),
        "state": d.state,
        "credited": d.credited,
        "block_height": d.block_height,
        "block_hash": d.block_hash,
        "confirmations": d.confirmations(tip),
        "confirmations_required": d.required,
        "seen_at": d.seen_at,
    })
}

/// The deposit address object of `admin-api.md`: `totals` over every deposit in
/// `all` (credited ones confirmed, the others still counted pending, one row per asset
/// that has a deposit, dropped ones too, in the order first paid), and `shown` (the newest, at most 100, oldest first) as
/// its `deposits` unless `None` (events carry the address without them).
pub(crate) fn address_json(
    a: &DepositAddress,
    all: &[Deposit],
    shown: Option<&[Deposit]>,
    decimals: &BTreeMap<String, u8>,
    tip: Option<u64>,
) -> Value {
    let places = |asset: &str| decimals.get(asset).copied().unwrap_or(0);
    let mut totals: Vec<(&str, U256, U256)> = Vec::new();
    for d in all {
        let i = match totals.iter().position(|t| t.0 == d.asset) {
            Some(i) => i,
            None => {
                totals.push((&d.asset, U256::ZERO, U256::ZERO));
                totals.len() - 1
            }
        };
        let t = &mut totals[i];
        if d.credited {
            t.1 = t.1.saturating_add(d.amount);
        } else if d.counts() {
            t.2 = t.2.saturating_add(d.amount);
        }
    }
    let totals: Vec<Value> = totals
        .iter()
        .map(|(asset, confirmed, pending)| {
            json!({
                "asset": asset,
                "amount_confirmed": amount::format(*confirmed, places(asset)),
                "amount_pending": amount::format(*pending, places(asset)),
            })
        })
        .collect();
    let mut v = json!({
        "id": a.id,
        "status": a.status,
        "chain": a.chain,
        "address": a.address,
        "derivation_index": a.derivation_index,
        "client_id": a.client_id,
        "label": a.label,
        "metadata": a.metadata,
        "callback_url": a.callback_url,
        "created_at": a.created_at,
        "closed_at": a.closed_at,
        "totals": totals,
    });
    if let Some(shown) = shown {
        v["deposits"] = shown
            .iter()
            .map(|d| deposit_json(d, places(&d.asset), tip))
            .collect();
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deposit(state: PaymentState, height: Option<u64>, required: u32) -> Deposit {
        Deposit {
            txid: "t".into(),
            index: 0,
            asset: "BTC".into(),
            amount: U256::from(1000u64),
            state,
            block_height: height,
            block_hash: height.map(|h| format!("h{h}")),
            seen_at: 0,
            rbf: false,
            required,
            credited: false,
            settled: false,
        }
    }

    const NONE: Credit = Credit {
        credited: false,
        settled: false,
    };
    const CREDITED: Credit = Credit {
        credited: true,
        settled: false,
    };
    const SETTLED: Credit = Credit {
        credited: true,
        settled: true,
    };

    #[test]
    fn credited_at_its_own_confirmations() {
        let d = deposit(PaymentState::Confirmed, Some(100), 3);
        assert_eq!(d.credit(Some(101), None), NONE);
        assert_eq!(d.credit(Some(102), None), CREDITED);
        assert_eq!(d.credit(Some(102), Some(100)), SETTLED);
        // Final height below the block: credited, not yet settled.
        assert_eq!(d.credit(Some(102), Some(99)), CREDITED);
    }

    #[test]
    fn from_the_mempool_only_at_zero_and_never_when_replaceable() {
        let mut d = deposit(PaymentState::Pending, None, 0);
        assert_eq!(d.credit(Some(5), None), CREDITED);
        d.rbf = true;
        assert_eq!(d.credit(Some(5), None), NONE);
        let d = deposit(PaymentState::Pending, None, 1);
        assert_eq!(d.credit(Some(5), None), NONE);
    }

    #[test]
    fn the_credit_is_taken_back_only_when_the_chain_no_longer_holds_it() {
        // Reorganised back to the mempool: no longer in the best chain.
        let mut d = deposit(PaymentState::Pending, None, 2);
        d.credited = true;
        assert_eq!(d.credit(Some(100), None), NONE);
        // Moved to another block of the new branch, even with fewer confirmations.
        let mut d = deposit(PaymentState::Confirmed, Some(100), 6);
        d.credited = true;
        assert_eq!(d.credit(Some(100), None), CREDITED);
        // Replaced.
        let mut d = deposit(PaymentState::Dropped, None, 0);
        d.credited = true;
        assert_eq!(d.credit(Some(100), None), NONE);
    }

    #[test]
    fn a_settled_deposit_stays_credited_whatever_follows() {
        let mut d = deposit(PaymentState::Pending, None, 2);
        d.credited = true;
        d.settled = true;
        assert_eq!(d.credit(Some(100), None), SETTLED);
        d.state = PaymentState::Dropped;
        assert_eq!(d.credit(Some(100), None), SETTLED);
    }

    #[test]
    fn totals_sum_credited_and_counted_per_asset() {
        let a = DepositAddress {
            id: "d".into(),
            status: AddressStatus::Open,
            chain: "regtest".into(),
            address: "bcrt1q".into(),
            derivation_index: 3,
            client_id: "u".into(),
            label: None,
            metadata: json!({}),
            callback_url: None,
            created_at: 1,
            closed_at: None,
        };
        let mut one = deposit(PaymentState::Confirmed, Some(1), 1);
        one.credited = true;
        let two = deposit(PaymentState::Pending, None, 1);
        let gone = deposit(PaymentState::Dropped, None, 1);
        let decimals = BTreeMap::from([("BTC".to_string(), 8u8)]);
        let v = address_json(&a, &[one, two, gone], None, &decimals, Some(1));
        assert_eq!(
            v["totals"],
            json!([{"asset": "BTC", "amount_confirmed": "0.00001", "amount_pending": "0.00001"}])
        );
        assert!(v.get("deposits").is_none());
        let empty = address_json(&a, &[], Some(&[]), &decimals, None);
        assert_eq!(
            (empty["totals"].clone(), empty["deposits"].clone()),
            (json!([]), json!([]))
        );
    }
}
