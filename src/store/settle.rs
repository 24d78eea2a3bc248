//! Settling: a watcher step (blocks disconnected and connected, mempool payments,
//! evictions) applied in one transaction with the new cursor, then every invoice it
//! may move judged again by the lifecycle function, with its events.

use std::collections::BTreeSet;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};

use super::deposits::{Touched, due_deposit_addresses};
use super::{Shared, Store, StoreError, StoreResult, cursor_of, load_invoice, load_payments, now};
use crate::amount::U256;
use crate::events::{self, EventKind};
use crate::invoice::{
    Decision, Invoice, Payment, PaymentState, Reason, Status, invoice_json, payment_json,
};
use crate::lifecycle::{self, ChainFacts, Facts, Outcome};

/// What a watched script belongs to: an invoice's address or a deposit address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Owner {
    Invoice(String),
    Deposit(String),
}

impl Owner {
    /// The invoice's or the deposit address's id.
    pub(crate) fn id(&self) -> &str {
        match self {
            Owner::Invoice(id) | Owner::Deposit(id) => id,
        }
    }

    /// The id as the `invoice_id` and `deposit_address_id` columns hold it: one set,
    /// the other null.
    pub(crate) fn columns(&self) -> (Option<&str>, Option<&str>) {
        match self {
            Owner::Invoice(id) => (Some(id), None),
            Owner::Deposit(id) => (None, Some(id)),
        }
    }
}

/// A transfer the watcher found (output `index` of `txid` paying a watched script):
/// a payment to an invoice, or a deposit.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub(crate) owner: Owner,
    /// What was paid: the chain's native coin or one of its tokens, whichever the
    /// invoice takes (a payment in another is recorded, never counted).
    pub(crate) asset: String,
    pub(crate) txid: String,
    pub(crate) index: u32,
    pub(crate) amount: U256,
    pub(crate) rbf: bool,
}

/// A block to connect, with the payments it holds.
#[derive(Debug, Clone)]
pub(crate) struct BlockFound {
    pub(crate) height: u64,
    pub(crate) hash: String,
    pub(crate) time: i64,
    pub(crate) payments: Vec<Found>,
}

/// Everything one step of a watcher changes, committed at once.
#[derive(Debug, Default)]
pub(crate) struct ChainUpdate {
    /// Blocks above this height leave the best chain (a reorganisation).
    pub(crate) disconnect_above: Option<u64>,
    /// Blocks connected in order, each block's payments in block order; the last one
    /// becomes the cursor.
    pub(crate) connect: Vec<BlockFound>,
    /// Payments found by a rescan in blocks already behind the cursor.
    pub(crate) rescanned: Vec<BlockFound>,
    /// Payments seen in the mempool, in the order the node took them in (detection
    /// order follows it).
    pub(crate) mempool: Vec<Found>,
    /// `PENDING` payments whose transaction left the mempool unmined (judged at the tip).
    pub(crate) evicted: Vec<String>,
    /// Start of a poll that reached the tip and looked at the mempool.
    pub(crate) synced_at: Option<i64>,
    /// The node's `finalized` block, where the chain has one.
    pub(crate) finalized: Option<u64>,
}

impl ChainUpdate {
    /// Nothing in it but the time of a poll (and the finalized block, which may be
    /// unchanged): an idle poll, which need not write.
    fn nothing_to_write(&self) -> bool {
        self.disconnect_above.is_none()
            && self.connect.is_empty()
            && self.rescanned.is_empty()
            && self.mempool.is_empty()
            && self.evicted.is_empty()
    }
}

/// What a chain update did that the watcher must act on.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// Payments newly recorded.
    pub(crate) new_payments: usize,
    /// Final invoices whose payments a reorganisation touched: an alarm.
    pub(crate) final_reorged: Vec<String>,
    /// Addresses that joined or left the watch set in this commit.
    pub(crate) watch: Vec<WatchChange>,
}

/// An address joining (`watch`) or leaving the watch set, decided in the transaction
/// that judged its invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WatchChange {
    pub(crate) script: Vec<u8>,
    pub(crate) owner: Owner,
    pub(crate) watch: bool,
}

/// Number of recent block hashes kept per chain beyond the reorg limit.
const EXTRA_BLOCKS_KEPT: u64 = 10;

/// The most invoices whose deadline came that one poll judges; the rest wait for the
/// next poll, so a crowd expiring at once (or a migrated database) never makes one
/// long transaction.
const DUE_PER_POLL: u32 = 2_000;

/// How often an invoice past its watch window is looked at again while a confirmed
/// payment of it is still short of final (`lifecycle.md`: watched while any payment
/// is). Few invoices are ever in that state, and only for a few blocks.
pub(super) const UNFINAL_RECHECK: i64 = 10;

impl Store {
    /// Applies one watcher step: blocks, payments, evictions, the new cursor and every
    /// status change with its events, in one transaction.
    pub(crate) fn apply(&self, chain: &str, up: ChainUpdate) -> StoreResult<Applied> {
        self.policy(chain)?;
        let connected = up.connect.len() as u64;
        // An idle poll writes nothing: it reads, and leaves the writer alone.
        if up.nothing_to_write() {
            let conn = self.read()?;
            let now = now();
            let due = up.synced_at.is_some()
                && (!due(&conn, chain, now, 1)?.is_empty()
                    || !due_deposit_addresses(&conn, chain, now, 1)?.is_empty());
            let finality_same = up.finalized.is_none()
                || cursor_of(&conn, chain)?.is_some_and(|c| c.finalized == up.finalized);
            if !due && finality_same {
                return Ok(Applied::default());
            }
        }
        let name = chain.to_string();
        let applied = self.write(move |db, tx| db.apply_in(tx, &name, up))?;
        metrics::counter!("settled_blocks_processed_total", "chain" => chain.to_string())
            .increment(connected);
        Ok(applied)
    }
}

impl Shared {
    /// [`Store::apply`] inside the writer's transaction.
    fn apply_in(&self, tx: &Connection, chain: &str, up: ChainUpdate) -> StoreResult<Applied> {
        let policy = self.policy(chain)?;
        let now = now();
        let mut applied = Applied::default();
        let mut changes: Vec<(String, PaymentChange)> = Vec::new();
        let mut deposits: Vec<Touched> = Vec::new();
        let connected = !up.connect.is_empty();

        if let Some(fork) = up.disconnect_above {
            applied.final_reorged = self.disconnect_deposits(tx, chain, fork, &mut deposits)?;
            let mut st = tx.prepare_cached(DISCONNECTED)?;
            let rows: Vec<(String, Option<String>)> = st
                .query_map(params![chain, fork], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            drop(st);
            for (inv, decision) in rows {
                if decision.as_deref() == Some(Decision::Final.as_str()) {
                    applied.final_reorged.push(inv.clone());
                }
                changes.push((inv, PaymentChange::Moved));
            }
            // Back to the mempool as far as we know; the next look at the mempool at the
            // tip tells whether it is still there or dropped.
            tx.prepare_cached(
                "UPDATE payments SET state = 'PENDING', block_height = NULL, block_hash = NULL
                 WHERE chain = ?1 AND state = 'CONFIRMED' AND block_height > ?2",
            )?
            .execute(params![chain, fork])?;
            tx.prepare_cached("DELETE FROM blocks WHERE chain = ?1 AND height > ?2")?
                .execute(params![chain, fork])?;
            let hash: String = tx
                .prepare_cached("SELECT hash FROM blocks WHERE chain = ?1 AND height = ?2")?
                .query_row(params![chain, fork], |r| r.get(0))?;
            set_cursor(tx, chain, fork, &hash, now)?;
        }

        for block in up.connect.iter() {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO blocks (chain, height, hash) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![chain, block.height, block.hash])?;
            for f in &block.payments {
                applied.new_payments +=
                    self.found(tx, chain, f, Some(block), now, &mut changes, &mut deposits)?;
            }
            set_cursor(tx, chain, block.height, &block.hash, now)?;
        }
        if let Some(last) = up.connect.last() {
            let keep = u64::from(policy.max_reorg_depth) + EXTRA_BLOCKS_KEPT;
            tx.prepare_cached("DELETE FROM blocks WHERE chain = ?1 AND height < ?2")?
                .execute(params![chain, last.height.saturating_sub(keep)])?;
        }
        for block in &up.rescanned {
            for f in &block.payments {
                applied.new_payments +=
                    self.found(tx, chain, f, Some(block), now, &mut changes, &mut deposits)?;
            }
        }
        for f in &up.mempool {
            applied.new_payments +=
                self.found(tx, chain, f, None, now, &mut changes, &mut deposits)?;
        }
        let mut drop_tx = tx.prepare_cached(EVICT)?;
        for txid in &up.evicted {
            let rows: Vec<(String, u32)> = drop_tx
                .query_map(params![chain, txid], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            for (inv, idx) in rows {
                changes.push((
                    inv,
                    PaymentChange::Dropped {
                        txid: txid.clone(),
                        idx,
                    },
                ));
            }
        }
        drop(drop_tx);
        for txid in &up.evicted {
            self.evict_deposits(tx, chain, txid, &mut deposits)?;
        }
        let mut finality_moved = false;
        if let Some(f) = up.finalized {
            finality_moved = tx
                .prepare_cached(
                    "UPDATE cursors SET finalized = ?2 WHERE chain = ?1 AND finalized IS NOT ?2",
                )?
                .execute(params![chain, f])?
                > 0;
        }
        if let Some(at) = up.synced_at {
            tx.prepare_cached(
                "UPDATE cursors SET synced_at = MAX(COALESCE(synced_at, 0), ?2) WHERE chain = ?1",
            )?
            .execute(params![chain, at])?;
        }

        // Which invoices to judge again: those whose payments changed, those whose
        // payments' confirmations move with the tip, and those the clock may expire.
        let mut ids: BTreeSet<String> = changes.iter().map(|(i, _)| i.clone()).collect();
        let tip_moved = up.disconnect_above.is_some() || !up.connect.is_empty() || finality_moved;
        if tip_moved {
            ids.extend(confirming(tx, chain)?);
        }
        // The clock can only move invoices once the watcher has caught up with the node
        // (expiry waits for that), so catching up block by block skips this.
        if up.synced_at.is_some() {
            ids.extend(due(tx, chain, now, DUE_PER_POLL)?);
            self.unwatch_deposits(tx, chain, now, DUE_PER_POLL, &mut applied.watch)?;
        }
        self.settle_deposits(tx, chain, &deposits, tip_moved)?;
        for id in ids {
            let own: Vec<&PaymentChange> = changes
                .iter()
                .filter(|(i, _)| *i == id)
                .map(|(_, c)| c)
                .collect();
            self.settle(tx, &id, &own, Some((chain, &mut applied.watch)))?;
        }
        if connected {
            crate::fault::point("block_before_commit");
        }
        Ok(applied)
    }

    /// Recomputes one invoice and writes what changed, with its events; returns the
    /// invoice object as it now stands. With `watch`, the invoice's address on that
    /// chain joins or leaves the watch set here and the change is reported there;
    /// otherwise (the API's decisions, the invoice's other chains) a change is left due
    /// for that chain's next poll.
    pub(super) fn settle(
        &self,
        tx: &Connection,
        id: &str,
        changes: &[&PaymentChange],
        watch: Option<(&str, &mut Vec<WatchChange>)>,
    ) -> StoreResult<Value> {
        let now = now();
        let mut inv = load_invoice(tx, id)?.ok_or(StoreError::NotFound)?;
        let chains = self.chains_of(tx, &inv)?;
        let pays = load_payments(tx, id)?;
        let out = lifecycle::evaluate(Facts {
            invoice: &inv,
            payments: &pays,
            chains: &chains,
            now,
        });

        // Payment bookkeeping the outcome asks for (flags the JSON does not show).
        let mut confirmed_now = Vec::new();
        for (i, p) in pays.iter().enumerate() {
            let timed_out = p.timed_out || out.timed_out.contains(&i);
            let notified = out.ready[i];
            if (timed_out, notified) != (p.timed_out, p.confirmed_notified) {
                tx.prepare_cached(
                    "UPDATE payments SET timed_out = ?4, confirmed_notified = ?5
                     WHERE chain = ?1 AND txid = ?2 AND idx = ?3",
                )?
                .execute(params![p.chain, p.txid, p.index, timed_out, notified])?;
            }
            if notified && !p.confirmed_notified {
                confirmed_now.push(i);
            }
        }

        let from = inv.status;
        let status_changed = out.status != inv.status || out.reason != inv.reason;
        let finalize = out.finalized && inv.decision.is_none();
        if status_changed || finalize || !changes.is_empty() {
            if out.status == Status::Completed && from != Status::Completed {
                inv.completed_at = Some(now);
            } else if out.status != Status::Completed {
                inv.completed_at = None;
            }
            inv.closed_at = if out.status.is_closed() {
                inv.closed_at.or(Some(now))
            } else {
                None
            };
            if finalize {
                inv.decision = Some(Decision::Final);
            }
            inv.status = out.status;
            inv.reason = out.reason;
            // Finality alone changes nothing the backend sees.
            if status_changed || !changes.is_empty() {
                inv.updated_at = now;
            }
            tx.prepare_cached(
                "UPDATE invoices SET status = ?2, reason = ?3, decision = ?4, completed_at = ?5,
                    closed_at = ?6, updated_at = ?7 WHERE id = ?1",
            )?
            .execute(params![
                id,
                inv.status.as_str(),
                inv.reason.map(Reason::as_str),
                inv.decision.map(Decision::as_str),
                inv.completed_at,
                inv.closed_at,
                inv.updated_at,
            ])?;
        }

        schedule(tx, &inv, &pays, &out, &chains, now, watch)?;

        // Events, after the change they describe, in the order a backend expects:
        // what happened to payments, then what it did to the invoice.
        let view = invoice_json(&inv, &pays, &out, &chains);
        let payment_event = |kind, i: usize| {
            let payment = payment_json(&inv, &pays[i], out.accepted[i], &chains);
            let data = json!({ "invoice": view, "payment": payment });
            events::insert(tx, self.outbox.as_ref(), kind, id, now, data)
        };
        for c in changes {
            let (kind, txid, idx) = match c {
                PaymentChange::Detected { txid, idx } => (EventKind::PaymentDetected, txid, *idx),
                PaymentChange::Dropped { txid, idx } => (EventKind::PaymentDropped, txid, *idx),
                PaymentChange::Moved => continue,
            };
            if let Some(i) = pays.iter().position(|p| p.txid == *txid && p.index == idx) {
                payment_event(kind, i)?;
            }
        }
        for i in confirmed_now {
            payment_event(EventKind::PaymentConfirmed, i)?;
        }
        if inv.status != from {
            let data = json!({ "from": from, "to": inv.status, "invoice": view });
            events::insert(
                tx,
                self.outbox.as_ref(),
                EventKind::StatusChanged,
                id,
                now,
                data.clone(),
            )?;
            // Going backwards on the chain, not by the backend's word.
            if from == Status::Completed && inv.decision.is_none() {
                events::insert(tx, self.outbox.as_ref(), EventKind::Reverted, id, now, data)?;
            }
        }
        Ok(view)
    }
}

/// A payment change that needs an event.
#[derive(Debug, Clone)]
pub(super) enum PaymentChange {
    Detected {
        txid: String,
        idx: u32,
    },
    Dropped {
        txid: String,
        idx: u32,
    },
    /// Its block changed (connected or disconnected): no event of its own, but the
    /// invoice is judged again and its status events tell.
    Moved,
}

const RECORDED: &str = "SELECT state FROM payments WHERE chain = ?1 AND txid = ?2 AND idx = ?3";

const NEW_PAYMENT: &str = "INSERT INTO payments (chain, txid, idx, invoice_id, amount, state,
         block_height, block_hash, seen_at, rbf, asset, detected)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,
             (SELECT COALESCE(MAX(detected), 0) + 1 FROM payments))";

impl Shared {
    /// Records a transfer a step found, as a payment of its invoice or a deposit to its
    /// deposit address; returns 1 if it is new.
    #[allow(clippy::too_many_arguments)]
    fn found(
        &self,
        tx: &Connection,
        chain: &str,
        f: &Found,
        block: Option<&BlockFound>,
        now: i64,
        changes: &mut Vec<(String, PaymentChange)>,
        deposits: &mut Vec<Touched>,
    ) -> StoreResult<usize> {
        match &f.owner {
            Owner::Invoice(id) => record(tx, chain, id, f, block, now, changes),
            Owner::Deposit(_) => self.record_deposit(tx, chain, f, block, now, deposits),
        }
    }
}

/// Records a payment to `invoice_id` seen in `block` (or the mempool); returns 1 if it
/// is new.
fn record(
    tx: &Connection,
    chain: &str,
    invoice_id: &str,
    f: &Found,
    block: Option<&BlockFound>,
    now: i64,
    changes: &mut Vec<(String, PaymentChange)>,
) -> StoreResult<usize> {
    let existing: Option<String> = tx
        .prepare_cached(RECORDED)?
        .query_row(params![chain, f.txid, f.index], |r| r.get(0))
        .optional()?;
    let detected = || PaymentChange::Detected {
        txid: f.txid.clone(),
        idx: f.index,
    };
    match (existing.as_deref(), block) {
        (None, _) => {
            // Found first in a block: its time, never later than now.
            let seen_at = block.map_or(now, |b| b.time.min(now));
            tx.prepare_cached(NEW_PAYMENT)?.execute(params![
                chain,
                f.txid,
                f.index,
                invoice_id,
                f.amount.to_string(),
                if block.is_some() {
                    "CONFIRMED"
                } else {
                    "PENDING"
                },
                block.map(|b| b.height),
                block.map(|b| b.hash.clone()),
                seen_at,
                f.rbf,
                f.asset,
            ])?;
            changes.push((invoice_id.to_string(), detected()));
            return Ok(1);
        }
        (Some(state), Some(b)) => {
            tx.prepare_cached(
                "UPDATE payments SET state = 'CONFIRMED', block_height = ?4, block_hash = ?5
                 WHERE chain = ?1 AND txid = ?2 AND idx = ?3",
            )?
            .execute(params![chain, f.txid, f.index, b.height, b.hash])?;
            if state == "DROPPED" {
                changes.push((invoice_id.to_string(), detected()));
            } else {
                changes.push((invoice_id.to_string(), PaymentChange::Moved));
            }
        }
        (Some("DROPPED"), None) => {
            tx.prepare_cached("UPDATE payments SET state = 'PENDING', rbf = ?4 WHERE chain = ?1 AND txid = ?2 AND idx = ?3")?.execute(params![chain, f.txid, f.index, f.rbf],
            )?;
            changes.push((invoice_id.to_string(), detected()));
        }
        (Some(_), None) => {}
    }
    Ok(0)
}

fn set_cursor(tx: &Connection, chain: &str, height: u64, hash: &str, now: i64) -> StoreResult<()> {
    tx.prepare_cached("INSERT INTO cursors (chain, height, hash, synced_at, updated_at) VALUES (?1, ?2, ?3, NULL, ?4)
         ON CONFLICT(chain) DO UPDATE SET height = excluded.height, hash = excluded.hash, updated_at = excluded.updated_at")?.execute(params![chain, height, hash, now],
    )?;
    Ok(())
}

// `INDEXED BY`: the planner would rather read every completed invoice through
// `invoices_chain_status`, which grows with the history kept.
const CONFIRMING: &str = "SELECT invoice_id FROM payments
     WHERE chain = ?1 AND state = 'CONFIRMED' AND confirmed_notified = 0
     UNION
     SELECT id FROM invoices INDEXED BY invoices_unfinal
     WHERE status = 'COMPLETED' AND decision IS NULL
         AND EXISTS (SELECT 1 FROM invoice_addresses a WHERE a.invoice_id = invoices.id AND a.chain = ?1)";

const DISCONNECTED: &str = "SELECT p.invoice_id, i.decision FROM payments p
     JOIN invoices i ON i.id = p.invoice_id
     WHERE p.chain = ?1 AND p.state = 'CONFIRMED' AND p.block_height > ?2";

const EVICT: &str = "UPDATE payments SET state = 'DROPPED'
     WHERE chain = ?1 AND txid = ?2 AND state = 'PENDING' RETURNING invoice_id, idx";

const DUE: &str = "SELECT invoice_id FROM invoice_addresses
     WHERE chain = ?1 AND wake_at <= ?2 ORDER BY wake_at LIMIT ?3";

/// Invoices with no address yet (a price, no option) wait for the clock alone, and any
/// chain's poll judges them.
const DUE_UNBOUND: &str = "SELECT id FROM invoices WHERE wake_at <= ?1 ORDER BY wake_at LIMIT ?2";

/// Invoices whose status may move with the tip or the finalized block: confirmed
/// payments not yet confirmed enough to have been announced, or completed invoices not
/// yet final. Both read from partial indexes that hold only those.
fn confirming(tx: &Connection, chain: &str) -> StoreResult<Vec<String>> {
    let mut st = tx.prepare_cached(CONFIRMING)?;
    let rows = st.query_map(params![chain], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Invoices whose deadline (`wake_at`) has come, earliest first, at most `limit`: a
/// range of the deadline index, whatever the number of invoices open.
pub(super) fn due(
    conn: &Connection,
    chain: &str,
    now: i64,
    limit: u32,
) -> StoreResult<Vec<String>> {
    let mut ids: Vec<String> = conn
        .prepare_cached(DUE)?
        .query_map(params![chain, now, limit], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let rest = limit.saturating_sub(ids.len() as u32);
    if rest > 0 {
        let mut st = conn.prepare_cached(DUE_UNBOUND)?;
        for id in st.query_map(params![now, rest], |r| r.get(0))? {
            ids.push(id?);
        }
    }
    Ok(ids)
}

/// Sets the invoice's next deadlines and the place of each of its addresses in the
/// watch set (`lifecycle.md`, "How long an address is watched": until
/// `late_payment_window` after it closed, and while a payment on that chain is short
/// of final), writing only what changed. Only `watch`'s chain changes its watch set
/// here; an address on another chain is left due for its own chain's poll.
fn schedule(
    tx: &Connection,
    inv: &Invoice,
    pays: &[Payment],
    out: &Outcome,
    chains: &[ChainFacts<'_>],
    now: i64,
    mut watch: Option<(&str, &mut Vec<WatchChange>)>,
) -> StoreResult<()> {
    if inv.addresses.is_empty() {
        let stored: Option<i64> = tx
            .prepare_cached("SELECT wake_at FROM invoices WHERE id = ?1")?
            .query_row([&inv.id], |r| r.get(0))?;
        if stored != out.wake_at {
            tx.prepare_cached("UPDATE invoices SET wake_at = ?2 WHERE id = ?1")?
                .execute(params![inv.id, out.wake_at])?;
        }
        return Ok(());
    }
    for c in chains {
        let (stored_wake, stored_watched, script): (Option<i64>, bool, Vec<u8>) = tx
            .prepare_cached(
                "SELECT wake_at, watched, script FROM invoice_addresses
                 WHERE invoice_id = ?1 AND chain = ?2",
            )?
            .query_row(params![inv.id, c.name], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        let policy = c.policy;
        let late_window = i64::try_from(policy.late_payment_window).unwrap_or(i64::MAX);
        let window_end = inv.closed_at.map(|c| c.saturating_add(late_window));
        let in_window = window_end.is_none_or(|w| now < w);
        let final_height = policy.final_height(c.tip, c.finalized);
        let here = || pays.iter().filter(|p| p.chain == c.name);
        let unfinal = here().any(|p| match p.state {
            PaymentState::Pending => true,
            PaymentState::Confirmed => p.block_height.zip(final_height).is_none_or(|(h, f)| h > f),
            PaymentState::Dropped => false,
        });
        let wanted = in_window || unfinal;
        let watched = match watch.as_mut() {
            Some((name, list)) if *name == c.name && wanted != stored_watched => {
                list.push(WatchChange {
                    script,
                    owner: Owner::Invoice(inv.id.clone()),
                    watch: wanted,
                });
                wanted
            }
            _ => stored_watched,
        };
        let watch_deadline = if watched != wanted {
            Some(now)
        } else if watched && !in_window {
            // Kept for payments short of final. A pending one is judged again when it is
            // mined or dropped; a confirmed one turns final only under later blocks.
            let pending = here().any(|p| p.state == PaymentState::Pending);
            (!pending).then(|| now.saturating_add(UNFINAL_RECHECK))
        } else if watched {
            window_end
        } else {
            None
        };
        // A deadline already past is expiry waiting for a chain to catch up: it stays
        // due on the chains that have not, whose next synced poll judges it, and not on
        // this one if it has.
        let waits_here = inv
            .expires_at
            .is_none_or(|e| c.synced_at.is_none_or(|s| s <= e));
        let clock = out.wake_at.filter(|w| *w > now || waits_here);
        let wake_at = clock.into_iter().chain(watch_deadline).min();
        if (wake_at, watched) != (stored_wake, stored_watched) {
            tx.prepare_cached(
                "UPDATE invoice_addresses SET wake_at = ?3, watched = ?4
                 WHERE invoice_id = ?1 AND chain = ?2",
            )?
            .execute(params![inv.id, c.name, wake_at, watched])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How SQLite runs `sql`: one line per step.
    fn plan(conn: &Connection, sql: &str) -> Vec<String> {
        let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let params: Vec<i64> = vec![0; st.parameter_count()];
        st.query_map(rusqlite::params_from_iter(params), |r| {
            r.get::<_, String>(3)
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    /// Every query of a poll, a block or start-up reads an index: none scans a table
    /// or a whole index, so none grows with the invoices and payments kept.
    #[test]
    fn per_poll_and_per_block_queries_use_their_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), Default::default(), None).unwrap();
        let conn = store.read().unwrap();
        let queries = [
            ("due", DUE, "invoice_addresses_wake"),
            ("due", DUE_UNBOUND, "invoices_wake"),
            ("confirming", CONFIRMING, "payments_confirming"),
            ("confirming", CONFIRMING, "invoices_unfinal"),
            ("disconnected", DISCONNECTED, "payments_height"),
            ("evict", EVICT, "payments_pending"),
            ("pending", super::super::PENDING_TXIDS, "payments_pending"),
            (
                "watched",
                super::super::WATCHED,
                "invoice_addresses_watched",
            ),
            ("record", RECORDED, "sqlite_autoindex_payments_1"),
            ("detected", NEW_PAYMENT, "payments_detected"),
            (
                "pending deposits",
                super::super::PENDING_TXIDS,
                "deposits_pending",
            ),
            (
                "watched deposit addresses",
                super::super::WATCHED,
                "deposit_addresses_watched",
            ),
            (
                "deposit record",
                super::super::deposits::RECORDED,
                "sqlite_autoindex_deposits_1",
            ),
            (
                "unsettled deposits",
                super::super::deposits::UNSETTLED,
                "deposits_unsettled",
            ),
            (
                "due deposit addresses",
                super::super::deposits::DUE_DEPOSIT_ADDRESSES,
                "deposit_addresses_wake",
            ),
            (
                "a client's deposit addresses",
                super::super::deposits::LIST_BY_CLIENT,
                "deposit_addresses_client",
            ),
        ];
        for (name, sql, index) in queries {
            let steps = plan(&conn, sql);
            assert!(
                steps.iter().any(|s| s.contains(index)),
                "{name} does not use {index}: {steps:?}"
            );
            assert!(
                !steps.iter().any(|s| s.starts_with("SCAN")),
                "{name} scans: {steps:?}"
            );
        }
    }

    /// A cached statement is prepared once: binding new values does not make SQLite
    /// parse and plan it again (see `readers::keep_statements`). It was, on every
    /// call, for each of these.
    #[test]
    fn cached_statements_are_not_prepared_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), Default::default(), None).unwrap();
        let conn = store.read().unwrap();
        for i in 0..5 {
            crate::store::load_payments(&conn, &format!("invoice-{i}")).unwrap();
            crate::events::list(&conn, i, 10 + i as u32, None).unwrap();
            for sql in [DUE, CONFIRMING, DISCONNECTED] {
                let mut st = conn.prepare_cached(sql).unwrap();
                let params: Vec<i64> = vec![i; st.parameter_count()];
                let mut rows = st.query(rusqlite::params_from_iter(params)).unwrap();
                while rows.next().unwrap().is_some() {}
            }
        }
        for sql in [
            crate::store::PAYMENTS_OF,
            crate::events::AFTER,
            DUE,
            CONFIRMING,
            DISCONNECTED,
        ] {
            let st = conn.prepare_cached(sql).unwrap();
            let again = st.get_status(rusqlite::StatementStatus::RePrepare);
            assert_eq!(again, 0, "prepared again {again} times: {sql}");
        }
    }
}
