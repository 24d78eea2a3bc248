//! The invoice lifecycle of `lifecycle.md`, as one pure function of the invoice, its
//! payments, the chain tip, the clock and the chain's policy. It knows nothing of nodes
//! or storage: the store calls it whenever one of its inputs changes and records what
//! changed, with its events.

use crate::amount::{self, U256};
use crate::chains::Policy;
use crate::coverage::{Coverage, Term};
use crate::invoice::{Decision, Invoice, Mode, Payment, PaymentState, Reason, Status};

/// Everything the status depends on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts<'a> {
    pub(crate) invoice: &'a Invoice,
    pub(crate) payments: &'a [Payment],
    /// Height of the chain's tip as the watcher has scanned it.
    pub(crate) tip: Option<u64>,
    pub(crate) now: i64,
    /// Start of the last poll that reached the node's tip and looked at its mempool.
    pub(crate) synced_at: Option<i64>,
    /// Height of the node's `finalized` block, where the chain has one.
    pub(crate) finalized: Option<u64>,
    pub(crate) policy: &'a Policy,
}

/// The status and the amounts that follow from [`Facts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) status: Status,
    pub(crate) reason: Option<Reason>,
    pub(crate) amount_due: Option<U256>,
    pub(crate) amount_paid: U256,
    pub(crate) amount_confirmed: U256,
    pub(crate) overpaid: U256,
    /// The coverage by every counted payment, on time or late: `paid_ratio`,
    /// `overpaid_ratio` and each option's `remaining` follow from it.
    pub(crate) paid: Coverage,
    pub(crate) required: u32,
    /// Per payment: counted and with the required confirmations.
    pub(crate) ready: Vec<bool>,
    /// Payments that time out now under rule 3 (indices into `payments`).
    pub(crate) timed_out: Vec<usize>,
    /// Completed by the chain with every payment final (`final_confirmations`, or at or
    /// below the node's `finalized` block).
    pub(crate) finalized: bool,
    /// The first instant at which the clock alone may change this outcome (expiry, a
    /// payment outstaying the confirmation window); `None` when only the chain or the
    /// backend can. The store indexes it, so a poll judges only invoices whose
    /// deadline has come, however many are open.
    pub(crate) wake_at: Option<i64>,
}

/// Computes an invoice's status (`lifecycle.md`, "How the status is computed").
pub(crate) fn evaluate(f: Facts<'_>) -> Outcome {
    let mut out = judge(f);
    out.wake_at = wake_at(&f, &out);
    out
}

/// When the clock alone may next change `out` (see [`Outcome::wake_at`]).
fn wake_at(f: &Facts<'_>, out: &Outcome) -> Option<i64> {
    let inv = f.invoice;
    if inv.decision.is_some() || out.status.is_closed() {
        return None;
    }
    // Expiry waits for a poll that began after `expires_at` as well as for the clock:
    // until it expires the deadline stays due, and the next synced poll judges it.
    let expiry = match out.status {
        Status::Pending | Status::Partial => inv.expires_at.map(|e| e.saturating_add(1)),
        _ => None,
    };
    // A payment already past the window that has not timed out cannot time out by the
    // clock any more (rule 3 is not reached): only future deadlines count.
    let window = i64::try_from(f.policy.confirmation_window).unwrap_or(i64::MAX);
    let timeouts = f
        .payments
        .iter()
        .zip(&out.ready)
        .filter(|(p, ready)| {
            p.counts() && !p.timed_out && !**ready && p.state == PaymentState::Pending
        })
        .map(|(p, _)| p.seen_at.saturating_add(window).saturating_add(1))
        .filter(|t| *t > f.now);
    expiry.into_iter().chain(timeouts).min()
}

fn judge(f: Facts<'_>) -> Outcome {
    let inv = f.invoice;
    let pays = f.payments;
    let late = |p: &Payment| inv.expires_at.is_some_and(|e| p.seen_at > e);
    let eligible =
        |p: &Payment| p.counts() && !p.timed_out && (!late(p) || f.policy.accept_late_payments);

    let amount_due = match inv.mode {
        Mode::Fixed => inv.amount_due,
        Mode::Open => pays
            .iter()
            .filter(|p| eligible(p) && !late(p))
            // "First" in the order the chain settled them, never by txid.
            .min_by_key(|p| (p.seen_at, p.detected))
            .map(|p| p.amount),
    };
    let required = inv
        .confirmations
        .unwrap_or_else(|| f.policy.required_for(&inv.asset, amount_due));
    let ready: Vec<bool> = pays
        .iter()
        .map(|p| {
            p.counts()
                && if required == 0 {
                    // BIP125 signals that the payer may still replace it.
                    !(p.state == PaymentState::Pending && p.rbf)
                } else {
                    p.confirmations(f.tip) >= u64::from(required)
                }
        })
        .collect();
    let amount_paid = amount::sum(pays.iter().filter(|p| p.counts()).map(|p| p.amount));
    let amount_confirmed = amount::sum(
        pays.iter()
            .zip(&ready)
            .filter(|(_, r)| **r)
            .map(|(p, _)| p.amount),
    );
    let overpaid = amount_due.map_or(U256::ZERO, |d| amount_paid.saturating_sub(d));
    let due = match (inv.mode, amount_due) {
        (Mode::Fixed, Some(d)) => Some(d.saturating_sub(inv.tolerance)),
        (_, d) => d,
    };
    // Whether `paid` in the invoice's asset covers what is due.
    let covers = |due: U256, paid: U256| Coverage::of(&[Term { due, paid }]).covers();
    let paid = Coverage::of(
        &due.map(|due| Term {
            due,
            paid: amount_paid,
        })
        .into_iter()
        .collect::<Vec<_>>(),
    );
    let mut out = Outcome {
        status: Status::Pending,
        reason: None,
        amount_due,
        amount_paid,
        amount_confirmed,
        overpaid,
        paid,
        required,
        ready,
        timed_out: Vec::new(),
        finalized: false,
        wake_at: None,
    };

    // Rule 1: a backend decision, or finality, stands.
    if let Some(d) = inv.decision {
        out.status = match d {
            Decision::Voided => Status::Voided,
            Decision::Refunded => Status::Refunded,
            Decision::MarkedCompleted | Decision::Final => Status::Completed,
        };
        out.finalized = d == Decision::Final;
        return out;
    }

    let sum_where = |pred: &dyn Fn(usize, &Payment) -> bool| {
        amount::sum(
            pays.iter()
                .enumerate()
                .filter(|(i, p)| pred(*i, p))
                .map(|(_, p)| p.amount),
        )
    };

    if let Some(due) = due {
        // Rule 2.
        if covers(due, sum_where(&|i, p| eligible(p) && out.ready[i])) {
            out.status = Status::Completed;
            let final_height = f.policy.final_height(f.tip, f.finalized);
            out.finalized = pays.iter().any(|p| p.counts())
                && pays.iter().filter(|p| p.counts()).all(|p| {
                    p.state == PaymentState::Confirmed
                        && p.block_height
                            .zip(final_height)
                            .is_some_and(|(h, f)| h <= f)
                });
            return out;
        }
        // Rule 3, where a payment unconfirmed past the window stops counting.
        if covers(due, sum_where(&|_, p| eligible(p))) {
            let window = i64::try_from(f.policy.confirmation_window).unwrap_or(i64::MAX);
            out.timed_out = pays
                .iter()
                .enumerate()
                .filter(|(i, p)| {
                    eligible(p)
                        && !out.ready[*i]
                        && p.state == PaymentState::Pending
                        && f.now.saturating_sub(p.seen_at) > window
                })
                .map(|(i, _)| i)
                .collect();
            let on_time = sum_where(&|i, p| eligible(p) && !out.timed_out.contains(&i));
            if covers(due, on_time) {
                out.status = Status::WaitingForConfirmations;
                return out;
            }
        }
    }

    let on_time = sum_where(&|i, p| eligible(p) && !late(p) && !out.timed_out.contains(&i));
    let expired = inv
        .expires_at
        .is_some_and(|e| f.now > e && f.synced_at.is_some_and(|s| s > e));
    // Rule 4.
    if !expired {
        out.status = if on_time > U256::ZERO {
            Status::Partial
        } else {
            Status::Pending
        };
        return out;
    }
    // Rule 5.
    if pays.iter().any(|p| p.counts() && late(p)) {
        out.status = Status::ExpiredLatePayment;
        return out;
    }
    out.status = Status::Expired;
    let timed_out = pays
        .iter()
        .enumerate()
        .any(|(i, p)| p.counts() && (p.timed_out || out.timed_out.contains(&i)));
    out.reason = Some(if timed_out {
        Reason::ConfirmationTimeout
    } else if on_time > U256::ZERO {
        Reason::Underpaid
    } else {
        Reason::Unpaid
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chains::Tier;
    use serde_json::json;

    const T0: i64 = 1_700_000_000;
    const HOUR: i64 = 3600;

    fn policy() -> Policy {
        Policy {
            finality: crate::chains::Finality::Confirmations(6),
            confirmation_window: 86_400,
            late_payment_window: 604_800,
            accept_late_payments: false,
            max_reorg_depth: 100,
            tiers: vec![
                Tier {
                    up_to: Some(sat(100_000)),
                    required: 0,
                },
                Tier {
                    up_to: Some(sat(10_000_000)),
                    required: 1,
                },
                Tier {
                    up_to: None,
                    required: 3,
                },
            ],
            token_tiers: Default::default(),
        }
    }

    fn sat(n: u64) -> U256 {
        U256::from(n)
    }

    fn invoice(due: u64) -> Invoice {
        Invoice {
            id: "inv".into(),
            chain: "regtest".into(),
            asset: "BTC".into(),
            decimals: 8,
            mode: Mode::Fixed,
            address: "bcrt1q".into(),
            derivation_index: 0,
            amount_due: Some(sat(due)),
            tolerance: U256::ZERO,
            confirmations: None,
            status: Status::Pending,
            reason: None,
            decision: None,
            order_id: None,
            client_id: None,
            email: None,
            title: None,
            description: None,
            callback_url: None,
            metadata: json!({}),
            created_at: T0,
            expires_at: Some(T0 + HOUR),
            updated_at: T0,
            completed_at: None,
            closed_at: None,
        }
    }

    fn mempool(n: u64, seen_at: i64) -> Payment {
        Payment {
            txid: format!("tx{n}{seen_at}"),
            index: 0,
            amount: sat(n),
            state: PaymentState::Pending,
            block_height: None,
            block_hash: None,
            seen_at,
            detected: 0,
            rbf: false,
            timed_out: false,
            confirmed_notified: false,
        }
    }

    fn mined(n: u64, seen_at: i64, height: u64) -> Payment {
        Payment {
            state: PaymentState::Confirmed,
            block_height: Some(height),
            block_hash: Some(format!("h{height}")),
            ..mempool(n, seen_at)
        }
    }

    /// Evaluates at `now` with the watcher synced at `now` and the tip at `tip`.
    fn at(inv: &Invoice, pays: &[Payment], tip: u64, now: i64) -> Outcome {
        at_with(inv, pays, tip, now, &policy())
    }

    fn at_with(inv: &Invoice, pays: &[Payment], tip: u64, now: i64, p: &Policy) -> Outcome {
        evaluate(Facts {
            invoice: inv,
            payments: pays,
            tip: Some(tip),
            now,
            synced_at: Some(now),
            finalized: None,
            policy: p,
        })
    }

    #[test]
    fn nothing_paid_is_pending() {
        let o = at(&invoice(1_000_000), &[], 100, T0 + 10);
        assert_eq!((o.status, o.reason), (Status::Pending, None));
        assert_eq!(o.required, 1);
    }

    #[test]
    fn installments_are_partial_then_waiting_then_completed() {
        let inv = invoice(1_000_000);
        let first = mined(400_000, T0 + 10, 101);
        let o = at(&inv, std::slice::from_ref(&first), 101, T0 + 20);
        assert_eq!(o.status, Status::Partial);
        let second = mempool(600_000, T0 + 30);
        let o = at(&inv, &[first.clone(), second.clone()], 101, T0 + 40);
        assert_eq!(o.status, Status::WaitingForConfirmations);
        assert_eq!(o.amount_paid, sat(1_000_000));
        assert_eq!(o.amount_confirmed, sat(400_000));
        let second = mined(600_000, T0 + 30, 102);
        let o = at(&inv, &[first, second], 102, T0 + 50);
        assert_eq!(o.status, Status::Completed);
        assert_eq!(o.amount_confirmed, sat(1_000_000));
        assert!(!o.finalized);
    }

    #[test]
    fn amount_tiers_set_required_confirmations() {
        let big = invoice(50_000_000);
        let p = mined(50_000_000, T0 + 10, 101);
        assert_eq!(at(&big, std::slice::from_ref(&p), 101, T0 + 20).required, 3);
        assert_eq!(
            at(&big, std::slice::from_ref(&p), 102, T0 + 20).status,
            Status::WaitingForConfirmations
        );
        assert_eq!(
            at(&big, std::slice::from_ref(&p), 103, T0 + 20).status,
            Status::Completed
        );
        let mut over = big.clone();
        over.confirmations = Some(1);
        assert_eq!(at(&over, &[p], 101, T0 + 20).status, Status::Completed);
    }

    #[test]
    fn zero_conf_accepts_from_mempool_but_never_rbf() {
        let small = invoice(50_000);
        let p = mempool(50_000, T0 + 10);
        let o = at(&small, std::slice::from_ref(&p), 100, T0 + 20);
        assert_eq!((o.required, o.status), (0, Status::Completed));
        let rbf = Payment { rbf: true, ..p };
        let o = at(&small, std::slice::from_ref(&rbf), 100, T0 + 20);
        assert_eq!(o.status, Status::WaitingForConfirmations);
        let rbf_mined = Payment {
            state: PaymentState::Confirmed,
            block_height: Some(101),
            ..rbf
        };
        assert_eq!(
            at(&small, &[rbf_mined], 101, T0 + 20).status,
            Status::Completed
        );
    }

    #[test]
    fn tolerance_accepts_a_small_shortfall() {
        let mut inv = invoice(1_000_000);
        inv.tolerance = sat(1_000);
        let p = mined(999_000, T0 + 10, 101);
        assert_eq!(
            at(&inv, std::slice::from_ref(&p), 101, T0 + 20).status,
            Status::Completed
        );
        let p = mined(998_999, T0 + 10, 101);
        assert_eq!(at(&inv, &[p], 101, T0 + 20).status, Status::Partial);
    }

    #[test]
    fn overpayment_is_reported_not_a_status() {
        let inv = invoice(1_000_000);
        let o = at(&inv, &[mined(1_500_000, T0 + 10, 101)], 101, T0 + 20);
        assert_eq!(o.status, Status::Completed);
        assert_eq!(o.overpaid, sat(500_000));
    }

    /// The deadline is exact: the clock changes nothing before `wake_at` and something
    /// at it; without one, no later clock changes anything.
    #[test]
    fn the_clock_changes_nothing_before_wake_at_and_something_at_it() {
        let inv = invoice(1_000_000);
        let small = invoice(50_000);
        let cases = [
            ("unpaid", &inv, vec![], T0 + 10),
            ("partial", &inv, vec![mined(400_000, T0 + 10, 101)], T0 + 20),
            ("waiting", &inv, vec![mempool(1_000_000, T0 + 10)], T0 + 20),
            (
                "waiting past expiry",
                &inv,
                vec![mempool(1_000_000, T0 + 10)],
                T0 + 2 * HOUR,
            ),
            (
                "waiting on the later of two",
                &inv,
                vec![mempool(500_000, T0 + 10), mempool(600_000, T0 + 99)],
                T0 + 2 * HOUR,
            ),
            (
                "completed",
                &inv,
                vec![mined(1_000_000, T0 + 10, 101)],
                T0 + 20,
            ),
            (
                "completed at 0",
                &small,
                vec![mempool(50_000, T0 + 10)],
                T0 + 20,
            ),
            ("expired", &inv, vec![], T0 + 2 * HOUR),
            (
                "expired, paid late",
                &inv,
                vec![mempool(1_000_000, T0 + 2 * HOUR)],
                T0 + 3 * HOUR,
            ),
        ];
        let mut deadlines = 0;
        for (name, inv, pays, now) in cases {
            let o = at(inv, &pays, 101, now);
            let Some(w) = o.wake_at else {
                for later in [now + 1, now + 86_401, now + 10 * 365 * 86_400] {
                    assert_eq!(
                        at(inv, &pays, 101, later).status,
                        o.status,
                        "{name} at {later}"
                    );
                }
                continue;
            };
            deadlines += 1;
            assert!(w > now, "{name}: {w} is not after {now}");
            for before in [now + 1, w - 1] {
                assert_eq!(
                    at(inv, &pays, 101, before).status,
                    o.status,
                    "{name} at {before}"
                );
            }
            assert_ne!(at(inv, &pays, 101, w).status, o.status, "{name} at {w}");
        }
        assert_eq!(deadlines, 5);
    }

    #[test]
    fn dropped_payments_do_not_count() {
        let inv = invoice(1_000_000);
        let p = Payment {
            state: PaymentState::Dropped,
            ..mempool(1_000_000, T0 + 10)
        };
        let o = at(&inv, &[p], 100, T0 + 20);
        assert_eq!((o.status, o.amount_paid), (Status::Pending, U256::ZERO));
    }

    #[test]
    fn expiry_waits_for_the_watcher_to_catch_up() {
        let inv = invoice(1_000_000);
        let late_clock = T0 + 2 * HOUR;
        // The clock is past expires_at but the watcher last synced before it, or never.
        let policy = policy();
        for synced_at in [Some(T0 + HOUR - 1), None] {
            let o = evaluate(Facts {
                invoice: &inv,
                payments: &[],
                tip: Some(100),
                now: late_clock,
                synced_at,
                finalized: None,
                policy: &policy,
            });
            assert_eq!(o.status, Status::Pending, "synced at {synced_at:?}");
            // Still due: the next poll that catches up judges it again.
            assert_eq!(o.wake_at, Some(T0 + HOUR + 1));
        }
        let o = at(&inv, &[], 100, late_clock);
        assert_eq!(
            (o.status, o.reason),
            (Status::Expired, Some(Reason::Unpaid))
        );
    }

    #[test]
    fn expired_underpaid() {
        let inv = invoice(1_000_000);
        let o = at(&inv, &[mined(10, T0 + 10, 101)], 101, T0 + 2 * HOUR);
        assert_eq!(
            (o.status, o.reason),
            (Status::Expired, Some(Reason::Underpaid))
        );
    }

    #[test]
    fn on_time_payment_found_late_still_counts() {
        // Paid on time while the daemon was down: seen_at is the block's time.
        let inv = invoice(1_000_000);
        let o = at(&inv, &[mined(1_000_000, T0 + 100, 101)], 101, T0 + 5 * HOUR);
        assert_eq!(o.status, Status::Completed);
    }

    #[test]
    fn late_payment_is_reported_but_does_not_complete() {
        let inv = invoice(1_000_000);
        let late = mined(1_000_000, T0 + 2 * HOUR, 101);
        let o = at(&inv, std::slice::from_ref(&late), 103, T0 + 3 * HOUR);
        assert_eq!((o.status, o.reason), (Status::ExpiredLatePayment, None));
        assert_eq!(o.amount_paid, sat(1_000_000));
        let mut p = policy();
        p.accept_late_payments = true;
        let o = at_with(&inv, &[late], 103, T0 + 3 * HOUR, &p);
        assert_eq!(o.status, Status::Completed);
    }

    #[test]
    fn waiting_outlives_expiry_until_the_confirmation_window() {
        let inv = invoice(1_000_000);
        let p = mempool(1_000_000, T0 + 10);
        let o = at(&inv, std::slice::from_ref(&p), 100, T0 + 2 * HOUR);
        assert_eq!(o.status, Status::WaitingForConfirmations);
        let o = at(&inv, std::slice::from_ref(&p), 100, T0 + 10 + 86_401);
        assert_eq!(o.timed_out, vec![0]);
        assert_eq!(
            (o.status, o.reason),
            (Status::Expired, Some(Reason::ConfirmationTimeout))
        );
        // Once timed out it stays out of the sums, even mined.
        let mined_later = Payment {
            timed_out: true,
            ..mined(1_000_000, T0 + 10, 101)
        };
        let o = at(&inv, &[mined_later], 110, T0 + 10 + 90_000);
        assert_eq!(
            (o.status, o.reason),
            (Status::Expired, Some(Reason::ConfirmationTimeout))
        );
    }

    #[test]
    fn confirmation_timeout_before_expiry_falls_back_to_partial() {
        let mut inv = invoice(1_000_000);
        inv.expires_at = Some(T0 + 7 * 24 * HOUR);
        let p = mempool(1_000_000, T0 + 10);
        let o = at(&inv, &[p], 100, T0 + 10 + 86_401);
        assert_eq!(o.timed_out, vec![0]);
        assert_eq!(o.status, Status::Pending);
    }

    #[test]
    fn open_mode_first_payment_sets_the_amount() {
        let mut inv = invoice(0);
        inv.mode = Mode::Open;
        inv.amount_due = None;
        let o = at(&inv, &[], 100, T0 + 10);
        assert_eq!((o.status, o.amount_due), (Status::Pending, None));
        let first = mined(70_000_000, T0 + 10, 101);
        let extra = mempool(5_000_000, T0 + 20);
        let o = at(&inv, &[first.clone(), extra], 103, T0 + 30);
        assert_eq!(o.amount_due, Some(sat(70_000_000)));
        assert_eq!(o.required, 3);
        assert_eq!(o.status, Status::Completed);
        assert_eq!(o.overpaid, sat(5_000_000));
        assert_eq!(
            at(&inv, &[first], 102, T0 + 30).status,
            Status::WaitingForConfirmations
        );
    }

    #[test]
    fn open_mode_first_is_the_first_detected_not_the_smaller_txid() {
        let mut inv = invoice(0);
        inv.mode = Mode::Open;
        inv.amount_due = None;
        // Same second; the later payment's txid sorts first.
        let first = Payment {
            txid: "ff".into(),
            detected: 1,
            ..mined(12_300_000, T0 + 10, 101)
        };
        let extra = Payment {
            txid: "00".into(),
            detected: 2,
            ..mined(5_000_000, T0 + 10, 102)
        };
        for pays in [[first.clone(), extra.clone()], [extra, first]] {
            let o = at(&inv, &pays, 110, T0 + 30);
            assert_eq!(o.amount_due, Some(sat(12_300_000)));
            assert_eq!(o.overpaid, sat(5_000_000));
            assert_eq!(o.status, Status::Completed);
        }
    }

    #[test]
    fn backend_decisions_stand() {
        let mut inv = invoice(1_000_000);
        let pays = [mined(1_000_000, T0 + 10, 101)];
        for (d, s) in [
            (Decision::Voided, Status::Voided),
            (Decision::Refunded, Status::Refunded),
            (Decision::MarkedCompleted, Status::Completed),
        ] {
            inv.decision = Some(d);
            assert_eq!(at(&inv, &pays, 110, T0 + 20).status, s);
        }
        inv.decision = Some(Decision::MarkedCompleted);
        assert_eq!(at(&inv, &[], 110, T0 + 5 * HOUR).status, Status::Completed);
    }

    #[test]
    fn reversal_when_a_payment_leaves_the_chain() {
        let inv = invoice(1_000_000);
        let p = mined(1_000_000, T0 + 10, 101);
        assert_eq!(
            at(&inv, std::slice::from_ref(&p), 101, T0 + 20).status,
            Status::Completed
        );
        let back = Payment {
            state: PaymentState::Pending,
            block_height: None,
            block_hash: None,
            ..p.clone()
        };
        assert_eq!(
            at(&inv, &[back], 101, T0 + 30).status,
            Status::WaitingForConfirmations
        );
        let gone = Payment {
            state: PaymentState::Dropped,
            ..p
        };
        assert_eq!(at(&inv, &[gone], 101, T0 + 30).status, Status::Pending);
    }

    #[test]
    fn final_once_every_payment_has_final_confirmations() {
        let inv = invoice(1_000_000);
        let p = mined(1_000_000, T0 + 10, 101);
        assert!(!at(&inv, std::slice::from_ref(&p), 105, T0 + 20).finalized);
        assert!(at(&inv, std::slice::from_ref(&p), 106, T0 + 20).finalized);
        let mut fin = inv.clone();
        fin.decision = Some(Decision::Final);
        let gone = Payment {
            state: PaymentState::Dropped,
            ..p
        };
        assert_eq!(at(&fin, &[gone], 106, T0 + 20).status, Status::Completed);
    }

    #[test]
    fn final_at_the_nodes_finalized_block() {
        let inv = invoice(1_000_000);
        let p = mined(1_000_000, T0 + 10, 101);
        let policy = Policy {
            finality: crate::chains::Finality::Finalized,
            ..policy()
        };
        let at_finalized = |finalized| {
            evaluate(Facts {
                invoice: &inv,
                payments: std::slice::from_ref(&p),
                tip: Some(200),
                now: T0 + 20,
                synced_at: Some(T0 + 20),
                finalized,
                policy: &policy,
            })
        };
        assert_eq!(at_finalized(None).status, Status::Completed);
        assert!(
            !at_finalized(None).finalized,
            "no finalized block known yet"
        );
        assert!(!at_finalized(Some(100)).finalized);
        assert!(at_finalized(Some(101)).finalized);
    }

    #[test]
    fn never_expiring_invoice_stays_open() {
        let mut inv = invoice(1_000_000);
        inv.expires_at = None;
        let o = at(&inv, &[mined(5, T0, 101)], 101, T0 + 1_000 * HOUR);
        assert_eq!(o.status, Status::Partial);
    }
}
