//! The invoice lifecycle of `lifecycle.md`, as one pure function of the invoice (its
//! payment options), its payments, the tips and policies of its chains, and the clock.
//! It knows nothing of nodes or storage: the store calls it whenever one of its inputs
//! changes and records what changed, with its events.

use crate::amount::{self, U256};
use crate::chains::Policy;
use crate::coverage::{Coverage, Term};
use crate::invoice::{Decision, Invoice, Mode, Payment, PaymentState, Reason, Status};

/// Everything the status depends on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts<'a> {
    pub(crate) invoice: &'a Invoice,
    pub(crate) payments: &'a [Payment],
    /// Every chain the invoice has an option or a payment on.
    pub(crate) chains: &'a [ChainFacts<'a>],
    pub(crate) now: i64,
}

/// What the status depends on of one chain.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChainFacts<'a> {
    pub(crate) name: &'a str,
    /// Height of the chain's tip as the watcher has scanned it.
    pub(crate) tip: Option<u64>,
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
    /// Per option, in the invoice's order.
    pub(crate) options: Vec<OptionOutcome>,
    /// The coverage by every counted payment, on time or late: `paid_ratio`,
    /// `overpaid_ratio` and each option's `remaining` follow from it.
    pub(crate) paid: Coverage,
    /// Per payment: in the asset of one of the options on its chain.
    pub(crate) accepted: Vec<bool>,
    /// Per payment: not dropped and with the required confirmations (its option's; for
    /// one no option takes, the chain's tiers for its own amount). Only accepted ones
    /// count toward the invoice.
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

/// What one option is due and was paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OptionOutcome {
    /// `None` in `open` mode until the first on-time payment sets it.
    pub(crate) amount_due: Option<U256>,
    /// Its amount less its tolerance: what coverage divides by.
    pub(crate) due: Option<U256>,
    pub(crate) amount_paid: U256,
    pub(crate) amount_confirmed: U256,
    pub(crate) required: u32,
}

impl OptionOutcome {
    /// Paid beyond its amount due (nothing while that is not known).
    pub(crate) fn overpaid(&self) -> U256 {
        self.amount_due
            .map_or(U256::ZERO, |d| self.amount_paid.saturating_sub(d))
    }
}

impl Outcome {
    /// The only option's figures, when there is exactly one (the top-level amounts of
    /// the invoice object).
    pub(crate) fn only(&self) -> Option<&OptionOutcome> {
        match self.options.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }
}

/// Computes an invoice's status (`lifecycle.md`, "How the status is computed").
pub(crate) fn evaluate(f: Facts<'_>) -> Outcome {
    let judged = Judged::new(&f);
    let mut out = judged.judge();
    out.wake_at = judged.wake_at(&out);
    out
}

fn chain_named<'a>(f: &'a Facts<'a>, name: &str) -> Option<&'a ChainFacts<'a>> {
    f.chains.iter().find(|c| c.name == name)
}

/// The payments of an invoice matched to its options and chains, with what each rule
/// asks of them.
struct Judged<'a> {
    f: &'a Facts<'a>,
    /// Per payment: the option it pays, `None` when it is not accepted.
    option_of: Vec<Option<usize>>,
    /// Per payment: its chain's facts.
    chain_of: Vec<Option<&'a ChainFacts<'a>>>,
    /// Per option: what is due (open mode: the first on-time payment), and required.
    amount_due: Vec<Option<U256>>,
    required: Vec<u32>,
    ready: Vec<bool>,
}

impl<'a> Judged<'a> {
    fn new(f: &'a Facts<'a>) -> Judged<'a> {
        let inv = f.invoice;
        let chain = |name: &str| chain_named(f, name);
        let option_of: Vec<Option<usize>> = f
            .payments
            .iter()
            .map(|p| {
                inv.options
                    .iter()
                    .position(|o| o.chain == p.chain && o.asset == p.asset)
            })
            .collect();
        let chain_of = f.payments.iter().map(|p| chain(&p.chain)).collect();
        let mut j = Judged {
            f,
            option_of,
            chain_of,
            amount_due: Vec::new(),
            required: Vec::new(),
            ready: Vec::new(),
        };
        for (k, o) in inv.options.iter().enumerate() {
            let due = match inv.mode {
                Mode::Fixed => o.amount_due,
                Mode::Open => (0..f.payments.len())
                    .filter(|&i| j.option_of[i] == Some(k) && j.eligible(i) && !j.late(i))
                    .map(|i| &f.payments[i])
                    // "First" in the order the chain settled them, never by txid.
                    .min_by_key(|p| (p.seen_at, p.detected))
                    .map(|p| p.amount),
            };
            let required = o.confirmations.unwrap_or_else(|| {
                chain(&o.chain).map_or(1, |c| c.policy.required_for(&o.asset, due))
            });
            j.amount_due.push(due);
            j.required.push(required);
        }
        j.ready = (0..f.payments.len()).map(|i| j.is_ready(i)).collect();
        j
    }

    fn late(&self, i: usize) -> bool {
        let e = self.f.invoice.expires_at;
        e.is_some_and(|e| self.f.payments[i].seen_at > e)
    }

    /// Accepted (in the asset of an option on its chain) and not dropped.
    fn counted(&self, i: usize) -> bool {
        self.option_of[i].is_some() && self.f.payments[i].counts()
    }

    fn eligible(&self, i: usize) -> bool {
        let p = &self.f.payments[i];
        let accept_late = self.chain_of[i].is_some_and(|c| c.policy.accept_late_payments);
        self.counted(i) && !p.timed_out && (!self.late(i) || accept_late)
    }

    fn is_ready(&self, i: usize) -> bool {
        let p = &self.f.payments[i];
        if !p.counts() {
            return false;
        }
        // A payment no option takes needs what the chain's tiers ask of its own amount:
        // its `payment.confirmed` tells the backend it can refund it.
        let required = match self.option_of[i] {
            Some(k) => self.required[k],
            None => self.chain_of[i].map_or(u32::MAX, |c| {
                c.policy.required_for(&p.asset, Some(p.amount))
            }),
        };
        match required {
            // BIP125 signals that the payer may still replace it.
            0 => !(p.state == PaymentState::Pending && p.rbf),
            n => p.confirmations(self.chain_of[i].and_then(|c| c.tip)) >= u64::from(n),
        }
    }

    fn window(&self, i: usize) -> i64 {
        self.chain_of[i].map_or(i64::MAX, |c| {
            i64::try_from(c.policy.confirmation_window).unwrap_or(i64::MAX)
        })
    }

    /// What option `k` is due, less its tolerance.
    fn due(&self, k: usize) -> Option<U256> {
        let tolerance = self.f.invoice.options[k].tolerance;
        self.amount_due[k].map(|d| match self.f.invoice.mode {
            Mode::Fixed => d.saturating_sub(tolerance),
            Mode::Open => d,
        })
    }

    /// What the payments picked by `pick` paid in option `k`.
    fn paid(&self, k: usize, pick: &dyn Fn(usize) -> bool) -> U256 {
        amount::sum(
            (0..self.f.payments.len())
                .filter(|&i| self.option_of[i] == Some(k) && pick(i))
                .map(|i| self.f.payments[i].amount),
        )
    }

    /// The coverage by the payments picked by `pick`; `None` while an option's due is
    /// not known (open mode before its first payment).
    fn coverage(&self, pick: &dyn Fn(usize) -> bool) -> Option<Coverage> {
        let terms = (0..self.f.invoice.options.len())
            .map(|k| {
                Some(Term {
                    due: self.due(k)?,
                    paid: self.paid(k, pick),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Coverage::of(&terms))
    }

    fn covers(&self, pick: &dyn Fn(usize) -> bool) -> bool {
        self.coverage(pick).is_some_and(|c| c.covers())
    }

    fn judge(&self) -> Outcome {
        let f = self.f;
        let inv = f.invoice;
        let pays = f.payments;
        let all = 0..pays.len();
        let options: Vec<OptionOutcome> = (0..inv.options.len())
            .map(|k| OptionOutcome {
                amount_due: self.amount_due[k],
                due: self.due(k),
                amount_paid: self.paid(k, &|i| self.counted(i)),
                amount_confirmed: self.paid(k, &|i| self.ready[i]),
                required: self.required[k],
            })
            .collect();
        // Every counted payment, on time or late: what each option was paid.
        let paid = options
            .iter()
            .map(|o| {
                Some(Term {
                    due: o.due?,
                    paid: o.amount_paid,
                })
            })
            .collect::<Option<Vec<_>>>()
            .map_or_else(|| Coverage::of(&[]), |terms| Coverage::of(&terms));
        let mut out = Outcome {
            status: Status::Pending,
            reason: None,
            options,
            paid,
            accepted: self.option_of.iter().map(Option::is_some).collect(),
            ready: self.ready.clone(),
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

        // Rule 2.
        if self.covers(&|i| self.eligible(i) && self.ready[i]) {
            out.status = Status::Completed;
            let counted: Vec<usize> = all.clone().filter(|&i| self.counted(i)).collect();
            out.finalized = !counted.is_empty()
                && counted.iter().all(|&i| {
                    let p = &pays[i];
                    let final_height =
                        self.chain_of[i].and_then(|c| c.policy.final_height(c.tip, c.finalized));
                    p.state == PaymentState::Confirmed
                        && p.block_height
                            .zip(final_height)
                            .is_some_and(|(h, f)| h <= f)
                });
            return out;
        }
        // Rule 3, where a payment unconfirmed past the window stops counting.
        if self.covers(&|i| self.eligible(i)) {
            out.timed_out = all
                .clone()
                .filter(|&i| {
                    let p = &pays[i];
                    self.eligible(i)
                        && !self.ready[i]
                        && p.state == PaymentState::Pending
                        && f.now.saturating_sub(p.seen_at) > self.window(i)
                })
                .collect();
            if self.covers(&|i| self.eligible(i) && !out.timed_out.contains(&i)) {
                out.status = Status::WaitingForConfirmations;
                return out;
            }
        }

        let on_time = all.clone().any(|i| {
            self.eligible(i)
                && !self.late(i)
                && !out.timed_out.contains(&i)
                && pays[i].amount > U256::ZERO
        });
        // Expiry follows every chain the invoice has an address on, not only the clock.
        let expired = inv.expires_at.is_some_and(|e| {
            f.now > e
                && inv.options.iter().all(|o| {
                    chain_named(f, &o.chain)
                        .and_then(|c| c.synced_at)
                        .is_some_and(|s| s > e)
                })
        });
        // Rule 4.
        if !expired {
            out.status = if on_time {
                Status::Partial
            } else {
                Status::Pending
            };
            return out;
        }
        // Rule 5.
        if all.clone().any(|i| self.counted(i) && self.late(i)) {
            out.status = Status::ExpiredLatePayment;
            return out;
        }
        out.status = Status::Expired;
        let timed_out = all
            .clone()
            .any(|i| self.counted(i) && (pays[i].timed_out || out.timed_out.contains(&i)));
        out.reason = Some(if timed_out {
            Reason::ConfirmationTimeout
        } else if on_time {
            Reason::Underpaid
        } else {
            Reason::Unpaid
        });
        out
    }

    /// When the clock alone may next change `out` (see [`Outcome::wake_at`]).
    fn wake_at(&self, out: &Outcome) -> Option<i64> {
        let f = self.f;
        let inv = f.invoice;
        if inv.decision.is_some() || out.status.is_closed() {
            return None;
        }
        // Expiry waits for a poll that began after `expires_at` as well as for the
        // clock: until it expires the deadline stays due, and the next synced poll
        // judges it.
        let expiry = match out.status {
            Status::Pending | Status::Partial => inv.expires_at.map(|e| e.saturating_add(1)),
            _ => None,
        };
        // A payment already past the window that has not timed out cannot time out by
        // the clock any more (rule 3 is not reached): only future deadlines count.
        let timeouts = (0..f.payments.len())
            .filter(|&i| {
                let p = &f.payments[i];
                self.counted(i)
                    && !p.timed_out
                    && !self.ready[i]
                    && p.state == PaymentState::Pending
            })
            .map(|i| {
                f.payments[i]
                    .seen_at
                    .saturating_add(self.window(i))
                    .saturating_add(1)
            })
            .filter(|t| *t > f.now);
        expiry.into_iter().chain(timeouts).min()
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invoice::PayOption;

    /// The only option's figures, as the invoice object's top level shows them.
    impl Outcome {
        fn one(&self) -> &OptionOutcome {
            self.only().expect("one option")
        }
        fn required(&self) -> u32 {
            self.one().required
        }
        fn amount_paid(&self) -> U256 {
            self.one().amount_paid
        }
        fn amount_confirmed(&self) -> U256 {
            self.one().amount_confirmed
        }
        fn amount_due(&self) -> Option<U256> {
            self.one().amount_due
        }
        fn overpaid(&self) -> U256 {
            self.one().overpaid()
        }
    }
    use crate::chains::Tier;
    use serde_json::json;

    pub(super) const T0: i64 = 1_700_000_000;
    pub(super) const HOUR: i64 = 3600;

    pub(super) fn policy() -> Policy {
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
            decimals: Default::default(),
        }
    }

    fn sat(n: u64) -> U256 {
        U256::from(n)
    }

    pub(super) fn invoice(due: u64) -> Invoice {
        Invoice {
            id: "inv".into(),
            options: vec![option("regtest", "BTC", due)],
            addresses: vec![crate::invoice::InvoiceAddress {
                chain: "regtest".into(),
                address: "bcrt1q".into(),
                derivation_index: 0,
            }],
            price: None,
            mode: Mode::Fixed,
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

    fn option(chain: &str, asset: &str, due: u64) -> PayOption {
        PayOption {
            chain: chain.into(),
            asset: asset.into(),
            decimals: 8,
            amount_due: Some(sat(due)),
            tolerance: U256::ZERO,
            confirmations: None,
            added_at: T0,
        }
    }

    fn mempool(n: u64, seen_at: i64) -> Payment {
        Payment {
            chain: "regtest".into(),
            asset: "BTC".into(),
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
            chains: &[ChainFacts {
                name: "regtest",
                tip: Some(tip),
                synced_at: Some(now),
                finalized: None,
                policy: p,
            }],
            now,
        })
    }

    #[test]
    fn nothing_paid_is_pending() {
        let o = at(&invoice(1_000_000), &[], 100, T0 + 10);
        assert_eq!((o.status, o.reason), (Status::Pending, None));
        assert_eq!(o.required(), 1);
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
        assert_eq!(o.amount_paid(), sat(1_000_000));
        assert_eq!(o.amount_confirmed(), sat(400_000));
        let second = mined(600_000, T0 + 30, 102);
        let o = at(&inv, &[first, second], 102, T0 + 50);
        assert_eq!(o.status, Status::Completed);
        assert_eq!(o.amount_confirmed(), sat(1_000_000));
        assert!(!o.finalized);
    }

    #[test]
    fn amount_tiers_set_required_confirmations() {
        let big = invoice(50_000_000);
        let p = mined(50_000_000, T0 + 10, 101);
        assert_eq!(
            at(&big, std::slice::from_ref(&p), 101, T0 + 20).required(),
            3
        );
        assert_eq!(
            at(&big, std::slice::from_ref(&p), 102, T0 + 20).status,
            Status::WaitingForConfirmations
        );
        assert_eq!(
            at(&big, std::slice::from_ref(&p), 103, T0 + 20).status,
            Status::Completed
        );
        let mut over = big.clone();
        over.options[0].confirmations = Some(1);
        assert_eq!(at(&over, &[p], 101, T0 + 20).status, Status::Completed);
    }

    #[test]
    fn zero_conf_accepts_from_mempool_but_never_rbf() {
        let small = invoice(50_000);
        let p = mempool(50_000, T0 + 10);
        let o = at(&small, std::slice::from_ref(&p), 100, T0 + 20);
        assert_eq!((o.required(), o.status), (0, Status::Completed));
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
        inv.options[0].tolerance = sat(1_000);
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
        assert_eq!(o.overpaid(), sat(500_000));
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
        assert_eq!((o.status, o.amount_paid()), (Status::Pending, U256::ZERO));
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
                chains: &[ChainFacts {
                    name: "regtest",
                    tip: Some(100),
                    synced_at,
                    finalized: None,
                    policy: &policy,
                }],
                now: late_clock,
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
        assert_eq!(o.amount_paid(), sat(1_000_000));
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
        inv.options[0].amount_due = None;
        let o = at(&inv, &[], 100, T0 + 10);
        assert_eq!((o.status, o.amount_due()), (Status::Pending, None));
        let first = mined(70_000_000, T0 + 10, 101);
        let extra = mempool(5_000_000, T0 + 20);
        let o = at(&inv, &[first.clone(), extra], 103, T0 + 30);
        assert_eq!(o.amount_due(), Some(sat(70_000_000)));
        assert_eq!(o.required(), 3);
        assert_eq!(o.status, Status::Completed);
        assert_eq!(o.overpaid(), sat(5_000_000));
        assert_eq!(
            at(&inv, &[first], 102, T0 + 30).status,
            Status::WaitingForConfirmations
        );
    }

    #[test]
    fn open_mode_first_is_the_first_detected_not_the_smaller_txid() {
        let mut inv = invoice(0);
        inv.mode = Mode::Open;
        inv.options[0].amount_due = None;
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
            assert_eq!(o.amount_due(), Some(sat(12_300_000)));
            assert_eq!(o.overpaid(), sat(5_000_000));
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
                chains: &[ChainFacts {
                    name: "regtest",
                    tip: Some(200),
                    synced_at: Some(T0 + 20),
                    finalized,
                    policy: &policy,
                }],
                now: T0 + 20,
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

    /// Two chains: regtest (BTC) and anvil (ETH, USDT, 6 decimals), each with its own
    /// tip and last synced poll.
    fn two_chains<'a>(
        p: &'a Policy,
        (btc_tip, btc_synced): (u64, i64),
        (eth_tip, eth_synced): (u64, i64),
    ) -> [ChainFacts<'a>; 2] {
        [
            ChainFacts {
                name: "regtest",
                tip: Some(btc_tip),
                synced_at: Some(btc_synced),
                finalized: None,
                policy: p,
            },
            ChainFacts {
                name: "anvil",
                tip: Some(eth_tip),
                synced_at: Some(eth_synced),
                finalized: None,
                policy: p,
            },
        ]
    }

    fn on(chain: &str, asset: &str, p: Payment) -> Payment {
        Payment {
            chain: chain.into(),
            asset: asset.into(),
            txid: format!("{chain}{asset}{}", p.txid),
            ..p
        }
    }

    fn order(options: Vec<PayOption>) -> Invoice {
        Invoice {
            options,
            ..invoice(0)
        }
    }

    #[test]
    fn options_paid_a_third_each_cover_the_invoice_with_their_own_confirmations() {
        let mut usdt = option("anvil", "USDT", 30_000_000);
        usdt.confirmations = Some(5);
        let inv = order(vec![
            option("regtest", "BTC", 3_000_000),
            option("anvil", "ETH", 3_000),
            usdt,
        ]);
        let pays = [
            on("regtest", "BTC", mined(1_000_000, T0 + 10, 101)),
            on("anvil", "ETH", mined(1_000, T0 + 20, 501)),
            on("anvil", "USDT", mined(10_000_000, T0 + 30, 501)),
        ];
        let p = policy();
        let judge = |eth_tip, pays: &[Payment]| {
            evaluate(Facts {
                invoice: &inv,
                payments: pays,
                chains: &two_chains(&p, (101, T0 + 40), (eth_tip, T0 + 40)),
                now: T0 + 40,
            })
        };
        // Two thirds: partial, and a third of each option left to pay in it.
        let o = judge(501, &pays[..2]);
        assert_eq!(o.status, Status::Partial);
        assert_eq!(o.paid.ratio(), "0.66666666");
        assert_eq!(o.paid.remaining(sat(30_000_000)), sat(10_000_000));
        // All three: covered exactly; USDT needs its own 5 confirmations.
        let o = judge(501, &pays);
        assert_eq!(o.status, Status::WaitingForConfirmations);
        assert_eq!((o.paid.ratio(), o.paid.over()), ("1".into(), "0".into()));
        assert_eq!(o.options[2].required, 5);
        assert_eq!(o.options[2].amount_confirmed, U256::ZERO);
        assert_eq!(judge(505, &pays).status, Status::Completed);
        // One base unit short in one of them is not enough.
        let mut short = pays.clone();
        short[2].amount = sat(9_999_999);
        assert_eq!(judge(505, &short).status, Status::Partial);
    }

    #[test]
    fn an_asset_no_option_takes_is_recorded_but_never_counted() {
        let inv = order(vec![option("anvil", "USDT", 25_000_000)]);
        let p = policy();
        let pays = [
            on("anvil", "USDC", mined(25_000_000, T0 + 10, 501)),
            on("anvil", "ETH", mined(1_000, T0 + 10, 501)),
        ];
        let o = evaluate(Facts {
            invoice: &inv,
            payments: &pays,
            chains: &two_chains(&p, (101, T0 + 20), (510, T0 + 20)),
            now: T0 + 20,
        });
        assert_eq!(o.status, Status::Pending);
        assert_eq!(o.accepted, [false, false]);
        // Confirmed enough to refund (payment.confirmed), never counted.
        assert_eq!(o.ready, [true, true]);
        assert_eq!(o.options[0].amount_paid, U256::ZERO);
        assert_eq!(o.paid.ratio(), "0");
    }

    #[test]
    fn expiry_waits_for_every_chain_the_invoice_has_an_address_on() {
        let inv = order(vec![
            option("regtest", "BTC", 1_000_000),
            option("anvil", "USDT", 25_000_000),
        ]);
        let p = policy();
        let late = T0 + 2 * HOUR;
        let at = |btc_synced, eth_synced| {
            evaluate(Facts {
                invoice: &inv,
                payments: &[],
                chains: &two_chains(&p, (101, btc_synced), (501, eth_synced)),
                now: late,
            })
            .status
        };
        // Bitcoin followed past expires_at, anvil's node down since before it.
        assert_eq!(at(late, T0 + HOUR - 5), Status::Pending);
        assert_eq!(at(T0 + HOUR - 5, late), Status::Pending);
        assert_eq!(at(late, late), Status::Expired);
    }

    #[test]
    fn a_price_without_options_expires_by_the_clock_alone() {
        let inv = order(Vec::new());
        let o = evaluate(Facts {
            invoice: &inv,
            payments: &[],
            chains: &[],
            now: T0 + 10,
        });
        assert_eq!((o.status, o.paid.ratio()), (Status::Pending, "0".into()));
        assert_eq!(o.wake_at, Some(T0 + HOUR + 1));
        let o = evaluate(Facts {
            invoice: &inv,
            payments: &[],
            chains: &[],
            now: T0 + HOUR + 1,
        });
        assert_eq!(
            (o.status, o.reason),
            (Status::Expired, Some(Reason::Unpaid))
        );
    }
}
