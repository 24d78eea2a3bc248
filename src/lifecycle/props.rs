//! The lifecycle function against the reference model of `tests/common/model.rs`,
//! over random invoices (one to three options on two chains, fixed or open, with or
//! without expiry, some decided by the backend), random payment histories (accepted
//! or not, in the mempool, mined at any depth, dropped, replaceable, timed out) and
//! random clocks and watcher states: the same status, reason and amounts paid.

use proptest::prelude::*;

use super::tests::{self, HOUR, T0};
use super::{ChainFacts, Facts, evaluate};
use crate::amount::U256;
use crate::chains::{Policy, Tier};
use crate::invoice::{Decision, Invoice, Mode, PayOption, Payment, PaymentState};

#[path = "../../tests/common/model.rs"]
mod model;

const CHAINS: [&str; 2] = ["regtest", "anvil"];
const ASSETS: [&str; 2] = ["BTC", "USDT"];

/// (option or not accepted, amount, state, depth, rbf, seen after T0, timed out)
type PaymentCase = (Option<usize>, u64, PaymentState, u64, bool, i64, bool);

#[derive(Debug, Clone)]
struct Case {
    /// (chain, asset, amount due, tolerance, required), at most one per (chain, asset).
    options: Vec<(usize, usize, u64, u64, u32)>,
    open: bool,
    expires_in: Option<i64>,
    decision: Option<Decision>,
    payments: Vec<PaymentCase>,
    /// Per chain: (tip, synced after T0, confirmation window, accept late).
    chains: [(u64, Option<i64>, i64, bool); 2],
    now: i64,
}

fn state() -> impl Strategy<Value = PaymentState> {
    prop_oneof![
        Just(PaymentState::Pending),
        Just(PaymentState::Confirmed),
        Just(PaymentState::Dropped)
    ]
}

fn case() -> impl Strategy<Value = Case> {
    // Small dues too, so that a tolerance may swallow the whole amount.
    let due = prop_oneof![0..2_000u64, 0..2_000_000u64];
    let option = (0..2usize, 0..2usize, due, 0..1_000u64, 0..4u32);
    let payment = (
        prop_oneof![4 => (0..3usize).prop_map(Some), 1 => Just(None)],
        0..1_500_000u64,
        state(),
        1..6u64,
        any::<bool>(),
        0..(3 * HOUR),
        prop_oneof![9 => Just(false), 1 => Just(true)],
    );
    let chain = (
        100..110u64,
        prop::option::of(0..(3 * HOUR)),
        prop_oneof![Just(600i64), Just(2 * HOUR), Just(86_400)],
        any::<bool>(),
    );
    (
        prop::collection::vec(option, 1..4),
        any::<bool>(),
        prop::option::of(HOUR / 2..(2 * HOUR)),
        prop_oneof![
            12 => Just(None),
            1 => Just(Some(Decision::Voided)),
            1 => Just(Some(Decision::MarkedCompleted))
        ],
        prop::collection::vec(payment, 0..6),
        [chain.clone(), chain],
        0..(3 * HOUR),
    )
        .prop_map(
            |(mut options, open, expires_in, decision, payments, chains, now)| {
                let mut seen = std::collections::HashSet::new();
                options.retain(|o| seen.insert((o.0, o.1)));
                if open {
                    options.truncate(1);
                }
                Case {
                    options,
                    open,
                    expires_in,
                    decision,
                    payments,
                    chains,
                    now: T0 + now,
                }
            },
        )
}

/// The tests' policy, with one tier of 1 and this chain's window and late rule.
fn policy(window: i64, late: bool) -> Policy {
    Policy {
        confirmation_window: window as u64,
        accept_late_payments: late,
        tiers: vec![Tier {
            up_to: None,
            required: 1,
        }],
        ..tests::policy()
    }
}

fn invoice(c: &Case) -> Invoice {
    Invoice {
        options: c
            .options
            .iter()
            .map(|&(chain, asset, due, tolerance, required)| PayOption {
                chain: CHAINS[chain].into(),
                asset: ASSETS[asset].into(),
                decimals: 8,
                amount_due: (!c.open).then(|| U256::from(due)),
                tolerance: U256::from(tolerance),
                confirmations: Some(required),
                added_at: T0,
            })
            .collect(),
        addresses: Vec::new(),
        mode: if c.open { Mode::Open } else { Mode::Fixed },
        decision: c.decision,
        expires_at: c.expires_in.map(|e| T0 + e),
        ..tests::invoice(0)
    }
}

/// The payment in the daemon's terms.
fn payment(c: &Case, n: usize) -> Payment {
    let (option, amount, state, depth, rbf, seen, timed_out) = c.payments[n];
    // A payment no option takes: the other asset of the first option's chain.
    let (chain, asset) = match option.and_then(|k| c.options.get(k)) {
        Some(o) => (o.0, o.1),
        None => (c.options[0].0, 1 - c.options[0].1),
    };
    let tip = c.chains[chain].0;
    let height = (state == PaymentState::Confirmed).then(|| tip + 1 - depth);
    Payment {
        chain: CHAINS[chain].into(),
        asset: ASSETS[asset].into(),
        txid: format!("tx{n}"),
        index: 0,
        amount: U256::from(amount),
        state,
        block_height: height,
        block_hash: height.map(|h| format!("h{h}")),
        seen_at: T0 + seen,
        detected: n as i64,
        rbf,
        timed_out,
        confirmed_notified: false,
    }
}

fn model_of(c: &Case, inv: &Invoice, pays: &[Payment]) -> (String, Option<String>) {
    let m = model::Invoice {
        options: c
            .options
            .iter()
            .map(|o| model::Option_ {
                chain: o.0,
                amount_due: (!c.open).then_some(u128::from(o.2)),
                tolerance: u128::from(o.3),
                required: o.4,
            })
            .collect(),
        open: c.open,
        expires_at: inv.expires_at,
        decided: c.decision.map(|d| match d {
            Decision::Voided => "VOIDED",
            Decision::Refunded => "REFUNDED",
            _ => "COMPLETED",
        }),
    };
    let mp: Vec<model::Payment> = pays
        .iter()
        .map(|p| {
            let chain = CHAINS.iter().position(|n| *n == p.chain).unwrap();
            model::Payment {
                option: inv
                    .options
                    .iter()
                    .position(|o| o.chain == p.chain && o.asset == p.asset),
                amount: p.amount.to::<u128>(),
                state: match p.state {
                    PaymentState::Pending => model::State::Pending,
                    PaymentState::Confirmed => model::State::Confirmed,
                    PaymentState::Dropped => model::State::Dropped,
                },
                confirmations: p.confirmations(Some(c.chains[chain].0)),
                rbf: p.rbf,
                seen_at: p.seen_at,
                order: p.detected,
                timed_out: p.timed_out,
            }
        })
        .collect();
    let chains: Vec<model::Chain> = c
        .chains
        .iter()
        .map(|&(_, synced, window, late)| model::Chain {
            confirmation_window: window,
            accept_late_payments: late,
            synced_at: synced.map(|s| T0 + s),
        })
        .collect();
    model::status(&m, &mp, &chains, c.now)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4_000))]

    #[test]
    fn the_lifecycle_agrees_with_the_reference_model(c in case()) {
        let inv = invoice(&c);
        let pays: Vec<Payment> = (0..c.payments.len()).map(|n| payment(&c, n)).collect();
        let policies: Vec<Policy> = c.chains.iter().map(|&(_, _, w, l)| policy(w, l)).collect();
        let chains: Vec<ChainFacts<'_>> = (0..2)
            .map(|i| ChainFacts {
                name: CHAINS[i],
                tip: Some(c.chains[i].0),
                synced_at: c.chains[i].1.map(|s| T0 + s),
                finalized: None,
                policy: &policies[i],
            })
            .collect();
        let out = evaluate(Facts { invoice: &inv, payments: &pays, chains: &chains, now: c.now });
        let (status, reason) = model_of(&c, &inv, &pays);
        prop_assert_eq!(out.status.as_str(), status.as_str());
        prop_assert_eq!(out.reason.map(|r| r.as_str().to_string()), reason);
        for (k, o) in out.options.iter().enumerate() {
            let paid: u128 = pays
                .iter()
                .filter(|p| p.state != PaymentState::Dropped
                    && p.chain == inv.options[k].chain && p.asset == inv.options[k].asset)
                .map(|p| p.amount.to::<u128>())
                .sum();
            prop_assert_eq!(o.amount_paid.to::<u128>(), paid);
        }
    }
}
