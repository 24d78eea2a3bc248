//! Invoices and payments: the records the store keeps and the JSON the API shows.

use serde_json::{Value, json};

use crate::amount::{self, U256};
use crate::lifecycle::{ChainFacts, OptionOutcome, Outcome};

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize)]
        pub(crate) enum $name { $(#[serde(rename = $text)] $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            #[allow(dead_code)]
            pub(crate) const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable string used in the API, the events and the database.
            pub(crate) fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the stable string.
            pub(crate) fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use string_enum;

string_enum!(
    /// An invoice's status, as `lifecycle.md` defines them.
    Status {
        Pending = "PENDING",
        Partial = "PARTIAL",
        WaitingForConfirmations = "WAITING_FOR_CONFIRMATIONS",
        Completed = "COMPLETED",
        Expired = "EXPIRED",
        ExpiredLatePayment = "EXPIRED_LATE_PAYMENT",
        Voided = "VOIDED",
        Refunded = "REFUNDED",
    }
);

string_enum!(
    /// Why an invoice is `EXPIRED`.
    Reason {
        Unpaid = "unpaid",
        Underpaid = "underpaid",
        ConfirmationTimeout = "confirmation_timeout",
    }
);

string_enum!(
    /// `fixed` (amount set at creation) or `open` (the first payment sets it).
    Mode {
        Fixed = "fixed",
        Open = "open",
    }
);

string_enum!(
    /// A payment's state on the best chain.
    PaymentState {
        Pending = "PENDING",
        Confirmed = "CONFIRMED",
        Dropped = "DROPPED",
    }
);

string_enum!(
    /// What overrides the computed status: the backend's word, or finality
    /// (`FINAL`: completed by the chain with every payment final, never rolled back).
    Decision {
        Voided = "VOIDED",
        Refunded = "REFUNDED",
        MarkedCompleted = "MARKED_COMPLETED",
        Final = "FINAL",
    }
);

impl Status {
    /// Statuses after which the address is watched only for `late_payment_window`.
    pub(crate) fn is_closed(self) -> bool {
        !matches!(
            self,
            Status::Pending | Status::Partial | Status::WaitingForConfirmations
        )
    }
}

/// One way to pay an invoice: an asset on a chain, and what is due in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PayOption {
    pub(crate) chain: String,
    pub(crate) asset: String,
    pub(crate) decimals: u8,
    /// `None` in `open` mode: the first on-time payment sets it.
    pub(crate) amount_due: Option<U256>,
    pub(crate) tolerance: U256,
    /// The override of the chain's tiers, if any.
    pub(crate) confirmations: Option<u32>,
    /// When it was added, or last quoted.
    pub(crate) added_at: i64,
}

/// An invoice's address on one chain: every option on that chain is paid to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InvoiceAddress {
    pub(crate) chain: String,
    pub(crate) address: String,
    pub(crate) derivation_index: u32,
}

/// An order's price: a decimal amount and a currency label, as the backend gave them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Price {
    pub(crate) amount: String,
    pub(crate) currency: String,
}

impl Invoice {
    /// Its address on `chain`, if it has one.
    pub(crate) fn address_on(&self, chain: &str) -> Option<&InvoiceAddress> {
        self.addresses.iter().find(|a| a.chain == chain)
    }
}

/// An invoice as stored.
#[derive(Debug, Clone)]
pub(crate) struct Invoice {
    pub(crate) id: String,
    /// Its payment options, in the order they were added; what the lifecycle reads.
    pub(crate) options: Vec<PayOption>,
    /// One per chain of its options, in the order they were derived.
    pub(crate) addresses: Vec<InvoiceAddress>,
    /// What the order costs, for the people who read it: never converted.
    pub(crate) price: Option<Price>,
    pub(crate) mode: Mode,
    pub(crate) status: Status,
    pub(crate) reason: Option<Reason>,
    pub(crate) decision: Option<Decision>,
    pub(crate) order_id: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) email: Option<String>,
    pub(crate) title: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) callback_url: Option<String>,
    pub(crate) metadata: Value,
    pub(crate) created_at: i64,
    pub(crate) expires_at: Option<i64>,
    pub(crate) updated_at: i64,
    pub(crate) completed_at: Option<i64>,
    pub(crate) closed_at: Option<i64>,
}

/// A payment as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Payment {
    pub(crate) chain: String,
    /// What was paid: counted only in an option of this chain and asset.
    pub(crate) asset: String,
    pub(crate) txid: String,
    pub(crate) index: u32,
    pub(crate) amount: U256,
    pub(crate) state: PaymentState,
    pub(crate) block_height: Option<u64>,
    pub(crate) block_hash: Option<String>,
    pub(crate) seen_at: i64,
    /// The order settled detected it in, among all payments: a block's in block order,
    /// a mempool poll's in the node's entry order. Breaks ties of `seen_at`; never
    /// changes once stored, so a restart or a rescan cannot reorder payments.
    pub(crate) detected: i64,
    /// Signals BIP125 replaceability: never accepted at 0 confirmations.
    pub(crate) rbf: bool,
    /// Stayed unconfirmed past the confirmation window: out of the on-time sums for good.
    pub(crate) timed_out: bool,
    /// `payment.confirmed` was emitted for its current confirmation.
    pub(crate) confirmed_notified: bool,
}

/// Confirmations at `tip` of a transfer in `state` mined at `height` (a payment or a
/// deposit): 0 unless its block is on the best chain.
pub(crate) fn confirmations(state: PaymentState, height: Option<u64>, tip: Option<u64>) -> u64 {
    match (state, height, tip) {
        (PaymentState::Confirmed, Some(h), Some(t)) if t >= h => t - h + 1,
        _ => 0,
    }
}

impl Payment {
    /// Confirmations at `tip`: 0 unless its block is on the best chain.
    pub(crate) fn confirmations(&self, tip: Option<u64>) -> u64 {
        confirmations(self.state, self.block_height, tip)
    }

    /// Counted: `PENDING` or `CONFIRMED`.
    pub(crate) fn counts(&self) -> bool {
        self.state != PaymentState::Dropped
    }
}

/// The invoice object of `admin-api.md`.
pub(crate) fn invoice_json(
    inv: &Invoice,
    payments: &[Payment],
    out: &Outcome,
    chains: &[ChainFacts<'_>],
) -> Value {
    let options: Vec<Value> = inv
        .options
        .iter()
        .zip(&out.options)
        .map(|(o, oo)| option_json(inv, o, oo, out))
        .collect();
    let payments: Vec<Value> = payments
        .iter()
        .zip(&out.accepted)
        .map(|(p, accepted)| payment_json(inv, p, *accepted, chains))
        .collect();
    // The only option's figures at the top, as before options; null otherwise.
    let only = inv.options.first().zip(out.only());
    let fmt = |o: &PayOption, u: U256| amount::format(u, o.decimals);
    let top = |f: &dyn Fn(&PayOption, &OptionOutcome) -> Value| {
        only.map_or(Value::Null, |(o, oo)| f(o, oo))
    };
    json!({
        "id": inv.id,
        "status": inv.status,
        "reason": inv.reason,
        "marked": inv.decision == Some(Decision::MarkedCompleted),
        "mode": inv.mode,
        "chain": top(&|o, _| json!(o.chain)),
        "asset": top(&|o, _| json!(o.asset)),
        "address": top(&|o, _| json!(inv.address_on(&o.chain).map(|a| &a.address))),
        "derivation_index": top(&|o, _| json!(inv.address_on(&o.chain).map(|a| a.derivation_index))),
        "amount_due": top(&|o, oo| json!(oo.amount_due.map(|u| fmt(o, u)))),
        "amount_paid": top(&|o, oo| json!(fmt(o, oo.amount_paid))),
        "amount_confirmed": top(&|o, oo| json!(fmt(o, oo.amount_confirmed))),
        "overpaid_amount": top(&|o, oo| json!(fmt(o, oo.overpaid()))),
        "underpaid_tolerance": top(&|o, _| json!(fmt(o, o.tolerance))),
        "confirmations_required": top(&|_, oo| json!(oo.required)),
        "price": inv.price.as_ref().map(|p| json!({"amount": p.amount, "currency": p.currency})),
        "paid_ratio": out.paid.ratio(),
        "overpaid_ratio": out.paid.over(),
        "options": options,
        "order_id": inv.order_id,
        "client_id": inv.client_id,
        "email": inv.email,
        "title": inv.title,
        "description": inv.description,
        "callback_url": inv.callback_url,
        "metadata": inv.metadata,
        "created_at": inv.created_at,
        "expires_at": inv.expires_at,
        "updated_at": inv.updated_at,
        "completed_at": inv.completed_at,
        "payments": payments,
    })
}

/// One entry of the invoice's `options`: what is due and paid in one asset, and what
/// is still to pay in it.
fn option_json(inv: &Invoice, o: &PayOption, oo: &OptionOutcome, out: &Outcome) -> Value {
    let fmt = |u: U256| amount::format(u, o.decimals);
    json!({
        "chain": o.chain,
        "asset": o.asset,
        "address": inv.address_on(&o.chain).map(|a| &a.address),
        "derivation_index": inv.address_on(&o.chain).map(|a| a.derivation_index),
        "amount_due": oo.amount_due.map(fmt),
        "underpaid_tolerance": fmt(o.tolerance),
        "amount_paid": fmt(oo.amount_paid),
        "amount_confirmed": fmt(oo.amount_confirmed),
        "remaining": oo.due.map(|d| fmt(out.paid.remaining(d))),
        "confirmations_required": oo.required,
        "added_at": o.added_at,
    })
}

/// One entry of the invoice's `payments`.
pub(crate) fn payment_json(
    inv: &Invoice,
    p: &Payment,
    accepted: bool,
    chains: &[ChainFacts<'_>],
) -> Value {
    let chain = chains.iter().find(|c| c.name == p.chain);
    // In its own asset's units, whether an option takes it or not; a token the config
    // no longer lists, in an option's units, else in base units.
    let option = inv
        .options
        .iter()
        .find(|o| o.chain == p.chain && o.asset == p.asset);
    let decimals = chain
        .and_then(|c| c.policy.decimals.get(&p.asset))
        .copied()
        .or(option.map(|o| o.decimals))
        .unwrap_or(0);
    json!({
        "chain": p.chain,
        "asset": p.asset,
        "accepted": accepted,
        "txid": p.txid,
        "index": p.index,
        "amount": amount::format(p.amount, decimals),
        "state": p.state,
        "late": inv.expires_at.is_some_and(|e| p.seen_at > e),
        "block_height": p.block_height,
        "block_hash": p.block_hash,
        "confirmations": p.confirmations(chain.and_then(|c| c.tip)),
        "seen_at": p.seen_at,
        "rbf": p.rbf,
    })
}
