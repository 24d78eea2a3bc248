//! A reference model of `lifecycle.md`'s "How the status is computed", written from
//! the contract's text alone and kept small on purpose: plain numbers, no storage, no
//! chain. The lifecycle's property test (`src/lifecycle.rs`) checks the daemon's
//! function against it over random histories, and the invariant checker
//! (`tests/common/checker.rs`) judges every invoice a running daemon holds with it.
//!
//! It is deliberately not the daemon's code: where the two disagree, one of them reads
//! the contract wrongly.

#![allow(dead_code)]

use num_bigint::BigUint;
use num_rational::Ratio;

/// A payment's state on the best chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Pending,
    Confirmed,
    Dropped,
}

/// An invoice as the contract sees it.
#[derive(Debug, Clone)]
pub struct Invoice {
    pub options: Vec<Option_>,
    /// `open` mode: the first on-time payment sets what is due.
    pub open: bool,
    pub expires_at: Option<i64>,
    /// `VOIDED`, `REFUNDED`, `COMPLETED` (marked or final): stands whatever happens.
    pub decided: Option<&'static str>,
}

/// One payment option.
#[derive(Debug, Clone)]
pub struct Option_ {
    /// Index into the chains given to [`status`].
    pub chain: usize,
    /// `None` in open mode.
    pub amount_due: Option<u128>,
    pub tolerance: u128,
    /// Required confirmations, as the chain's tiers or the invoice's override give them.
    pub required: u32,
}

/// One payment.
#[derive(Debug, Clone)]
pub struct Payment {
    /// The option it is in the asset of, `None` when none takes it (not accepted).
    pub option: Option<usize>,
    pub amount: u128,
    pub state: State,
    pub confirmations: u64,
    pub rbf: bool,
    pub seen_at: i64,
    /// Order of detection: breaks ties of `seen_at` for open mode's "first".
    pub order: i64,
    /// Stayed unconfirmed past the confirmation window at some earlier judgement.
    pub timed_out: bool,
}

/// What a chain's policy and watcher say.
#[derive(Debug, Clone)]
pub struct Chain {
    pub confirmation_window: i64,
    pub accept_late_payments: bool,
    /// Start of the last poll that reached the tip.
    pub synced_at: Option<i64>,
}

/// The status (as the API writes it) and the reason of an `EXPIRED` invoice.
pub fn status(
    inv: &Invoice,
    pays: &[Payment],
    chains: &[Chain],
    now: i64,
) -> (String, Option<String>) {
    if let Some(d) = inv.decided {
        return (d.to_string(), None);
    }
    let on_time = |p: &Payment| inv.expires_at.is_none_or(|e| p.seen_at <= e);
    let counted = |p: &Payment| p.option.is_some() && p.state != State::Dropped;
    let chain_of = |p: &Payment| &chains[inv.options[p.option.unwrap()].chain];
    // On time, or late on a chain that takes late payments; never one that timed out.
    let eligible = |p: &Payment| {
        counted(p) && !p.timed_out && (on_time(p) || chain_of(p).accept_late_payments)
    };

    // What each option is due: fixed, or the first eligible on-time payment in it.
    let due: Vec<Option<u128>> = (0..inv.options.len())
        .map(|k| {
            let o = &inv.options[k];
            if !inv.open {
                return o.amount_due.map(|d| d.saturating_sub(o.tolerance));
            }
            pays.iter()
                .filter(|p| p.option == Some(k) && eligible(p) && on_time(p))
                .min_by_key(|p| (p.seen_at, p.order))
                .map(|p| p.amount)
        })
        .collect();
    let ready = |p: &Payment| {
        let required = inv.options[p.option.unwrap()].required;
        match required {
            0 => !(p.state == State::Pending && p.rbf),
            n => p.state == State::Confirmed && p.confirmations >= u64::from(n),
        }
    };
    let covers = |pick: &dyn Fn(&Payment) -> bool| {
        let mut sum = Ratio::from_integer(BigUint::from(0u8));
        for (k, d) in due.iter().enumerate() {
            let Some(d) = *d else { return false };
            let paid: u128 = pays
                .iter()
                .filter(|p| p.option == Some(k) && pick(p))
                .map(|p| p.amount)
                .sum();
            if d == 0 {
                return true;
            }
            sum += Ratio::new(BigUint::from(paid), BigUint::from(d));
        }
        !inv.options.is_empty() && sum >= Ratio::from_integer(BigUint::from(1u8))
    };

    if covers(&|p| eligible(p) && ready(p)) {
        return ("COMPLETED".into(), None);
    }
    let outstayed = |p: &Payment| {
        eligible(p)
            && !ready(p)
            && p.state == State::Pending
            && now - p.seen_at > chain_of(p).confirmation_window
    };
    let mut timed_out_now = false;
    if covers(&|p| eligible(p)) {
        if covers(&|p| eligible(p) && !outstayed(p)) {
            return ("WAITING_FOR_CONFIRMATIONS".into(), None);
        }
        timed_out_now = true;
    }
    let outstayed_now = |p: &Payment| timed_out_now && outstayed(p);
    let something_on_time = pays
        .iter()
        .any(|p| eligible(p) && on_time(p) && !outstayed_now(p) && p.amount > 0);
    let expired = inv.expires_at.is_some_and(|e| {
        now > e
            && inv
                .options
                .iter()
                .all(|o| chains[o.chain].synced_at.is_some_and(|s| s > e))
    });
    if !expired {
        let s = if something_on_time {
            "PARTIAL"
        } else {
            "PENDING"
        };
        return (s.into(), None);
    }
    if pays.iter().any(|p| counted(p) && !on_time(p)) {
        return ("EXPIRED_LATE_PAYMENT".into(), None);
    }
    let reason = if pays
        .iter()
        .any(|p| counted(p) && (p.timed_out || outstayed_now(p)))
    {
        "confirmation_timeout"
    } else if something_on_time {
        "underpaid"
    } else {
        "unpaid"
    };
    ("EXPIRED".into(), Some(reason.into()))
}

/// What option `k` was paid by the counted payments (on time or late).
pub fn paid(pays: &[Payment], k: usize) -> u128 {
    pays.iter()
        .filter(|p| p.option == Some(k) && p.state != State::Dropped)
        .map(|p| p.amount)
        .sum()
}
