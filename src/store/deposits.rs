//! Deposit addresses: creating one (at most one open per chain and client), reading,
//! listing and closing them; and, inside a chain step's transaction, recording the
//! deposits it found, crediting them or taking the credit back, with their events.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::{Value, json};

use super::invoices::take_index;
use super::settle::{BlockFound, Found, Owner, UNFINAL_RECHECK, WatchChange};
use super::{
    Shared, Store, StoreError, StoreResult, Target, Write, cursor_of, now, page, parsed, units,
};
use crate::deposit::{AddressStatus, Deposit, DepositAddress, address_json, deposit_json};
use crate::events::{self, EventKind};
use crate::invoice::PaymentState;

/// What a deposit address is created from, checked by the API.
#[derive(Debug, Clone)]
pub(crate) struct NewDepositAddress {
    pub(crate) chain: String,
    pub(crate) client_id: String,
    pub(crate) label: Option<String>,
    pub(crate) metadata: Value,
    pub(crate) callback_url: Option<String>,
    pub(crate) idempotency_key: Option<String>,
    /// The request's params, to tell a retry from a reuse of the key.
    pub(crate) request: String,
}

/// `deposit_address.list` filters.
#[derive(Debug, Default, Clone)]
pub(crate) struct DepositFilter {
    pub(crate) client_id: Option<String>,
    pub(crate) chain: Option<String>,
    pub(crate) status: Option<AddressStatus>,
    pub(crate) limit: u32,
    pub(crate) cursor: Option<i64>,
}

/// A deposit address object, and the script to watch when the call derived it.
type CreatedDeposit = (Value, Option<Vec<u8>>);

/// How many of its deposits a deposit address object shows.
const SHOWN: usize = 100;

impl Store {
    /// `deposit_address.create`: the open address of this chain and client if there is
    /// one (or what an earlier call with the same `idempotency_key` made), else a new
    /// one at the next index of the chain's key.
    pub(crate) fn create_deposit_address(
        &self,
        new: NewDepositAddress,
        key_id: &str,
        derive: impl Fn(&str, u32) -> Result<(String, Vec<u8>), String>,
    ) -> StoreResult<Write<CreatedDeposit>> {
        if let Some(v) = self.read()?.snapshot(|c| self.existing(c, &new))? {
            return Ok(Write::Now(Ok((v, None))));
        }
        let key = [(new.chain.clone(), key_id.to_string())];
        let a = self
            .derive_addresses(&key, &derive)?
            .pop()
            .ok_or_else(|| anyhow::anyhow!("no address derived"))?;
        Ok(self.submit(move |db, tx| {
            // Another create for the same client may have committed meanwhile: its
            // address is the one, and this index stays unused.
            if let Some(v) = db.existing(tx, &new)? {
                return Ok((v, None));
            }
            let now = now();
            let id = uuid::Uuid::now_v7().to_string();
            take_index(tx, &a)?;
            let created_height = cursor_of(tx, &a.chain)?.map(|c| c.height);
            tx.prepare_cached(
                "INSERT INTO deposit_addresses (id, chain, address, script, derivation_index,
                    client_id, label, metadata, callback_url, idempotency_key, request, status,
                    created_at, created_height, watched)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'OPEN', ?12, ?13, 1)",
            )?
            .execute(params![
                id,
                a.chain,
                a.address,
                a.script,
                a.index,
                new.client_id,
                new.label,
                new.metadata.to_string(),
                new.callback_url,
                new.idempotency_key,
                new.request,
                now,
                created_height,
            ])?;
            // A new address has no deposits: its object needs no reading back.
            let made = DepositAddress {
                id: id.clone(),
                status: AddressStatus::Open,
                chain: a.chain.clone(),
                address: a.address.clone(),
                derivation_index: a.index,
                client_id: new.client_id.clone(),
                label: new.label.clone(),
                metadata: new.metadata.clone(),
                callback_url: new.callback_url.clone(),
                created_at: now,
                closed_at: None,
            };
            let decimals = &db.policy(&a.chain)?.decimals;
            let view = address_json(&made, &[], None, decimals, None);
            let owner = Owner::Deposit(id);
            let data = json!({ "deposit_address": view });
            let kind = EventKind::DepositAddressCreated;
            events::append(tx, db.outbox.as_ref(), kind, &owner, now, data)?;
            let mut view = view;
            view["deposits"] = json!([]);
            Ok((view, Some(a.script)))
        }))
    }

    /// `deposit_address.get` by id.
    pub(crate) fn get_deposit_address(&self, id: &str) -> StoreResult<Value> {
        self.read()?
            .snapshot(|conn| self.deposit_view(conn, id, true))
    }

    /// `deposit_address.get` by chain and address.
    pub(crate) fn find_deposit_address(&self, chain: &str, address: &str) -> StoreResult<Value> {
        self.read()?.snapshot(|conn| {
            let id: String = conn
                .prepare_cached(
                    "SELECT id FROM deposit_addresses WHERE address = ?1 AND chain = ?2",
                )?
                .query_row(params![address, chain], |r| r.get(0))
                .optional()?
                .ok_or(StoreError::NotFound)?;
            self.deposit_view(conn, &id, true)
        })
    }

    /// `deposit_address.list`: newest first, `limit` a page, with the next page's cursor.
    pub(crate) fn list_deposit_addresses(
        &self,
        f: &DepositFilter,
    ) -> StoreResult<(Vec<Value>, Option<i64>)> {
        self.read()?.snapshot(|conn| {
            // A client's addresses are read through its index: with a million
            // addresses, the filter alone would walk them all to find one.
            let sql = match f.client_id {
                Some(_) => LIST_BY_CLIENT,
                None => LIST_ALL,
            };
            let mut st = conn.prepare_cached(sql)?;
            let rows: Vec<(i64, String)> = st
                .query_map(
                    params![
                        f.client_id,
                        f.chain,
                        f.status.map(AddressStatus::as_str),
                        f.cursor,
                        i64::from(f.limit) + 1
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?
                .collect::<Result<_, _>>()?;
            let (ids, next) = page(rows, f.limit);
            let views = ids
                .iter()
                .map(|id| self.deposit_view(conn, id, true))
                .collect::<StoreResult<Vec<_>>>()?;
            Ok((views, next))
        })
    }

    /// `deposit_address.deposits`: oldest first, optionally in one state, `limit` a
    /// page, with the next page's cursor.
    pub(crate) fn deposits_page(
        &self,
        id: &str,
        state: Option<PaymentState>,
        limit: u32,
        cursor: Option<i64>,
    ) -> StoreResult<(Vec<Value>, Option<i64>)> {
        self.read()?.snapshot(|conn| {
            let a = load_address(conn, id)?.ok_or(StoreError::NotFound)?;
            let tip = cursor_of(conn, &a.chain)?.map(|c| c.height);
            let policy = self.policy(&a.chain)?;
            let mut st = conn.prepare_cached(
                "SELECT detected, txid, idx, asset, amount, state, block_height, block_hash,
                    seen_at, rbf, required, credited, settled
                 FROM deposits WHERE deposit_address_id = ?1 AND (?2 IS NULL OR state = ?2)
                    AND (?3 IS NULL OR detected > ?3)
                 ORDER BY detected LIMIT ?4",
            )?;
            let rows: Vec<(i64, Deposit)> = st
                .query_map(
                    params![
                        id,
                        state.map(PaymentState::as_str),
                        cursor,
                        i64::from(limit) + 1
                    ],
                    |r| Ok((r.get(0)?, deposit_of(r, 1)?)),
                )?
                .collect::<Result<_, _>>()?;
            let (deposits, next) = page(rows, limit);
            let views = deposits
                .iter()
                .map(|d| {
                    let places = policy.decimals.get(&d.asset).copied().unwrap_or(0);
                    deposit_json(d, places, tip)
                })
                .collect();
            Ok((views, next))
        })
    }

    /// `deposit_address.close`: `CLOSED`, watched for `late_payment_window` more. Closing
    /// a closed address returns it as it is.
    pub(crate) fn close_deposit_address(&self, id: &str) -> Write<Value> {
        let id = id.to_string();
        self.submit(move |db, tx| {
            let a = load_address(tx, &id)?.ok_or(StoreError::NotFound)?;
            if a.status == AddressStatus::Open {
                let now = now();
                let window = db.policy(&a.chain)?.late_payment_window;
                let end = now.saturating_add(i64::try_from(window).unwrap_or(i64::MAX));
                tx.prepare_cached(
                    "UPDATE deposit_addresses SET status = 'CLOSED', closed_at = ?2, wake_at = ?3
                     WHERE id = ?1",
                )?
                .execute(params![id, now, end])?;
                db.address_event(tx, &id, EventKind::DepositAddressClosed, now)?;
            }
            db.deposit_view(tx, &id, true)
        })
    }

    /// The deposit address's chain, script and the height at its creation, for a
    /// rescan.
    pub(crate) fn deposit_target(&self, id: &str) -> StoreResult<Target> {
        let conn = self.read()?;
        conn.prepare_cached(
            "SELECT chain, script, created_height FROM deposit_addresses WHERE id = ?1",
        )?
        .query_row([id], |r| {
            Ok(Target {
                chain: r.get(0)?,
                script: r.get(1)?,
                created_height: r.get(2)?,
            })
        })
        .optional()?
        .ok_or(StoreError::NotFound)
    }
}

/// `deposit_address.list` of one client, newest first.
pub(super) const LIST_BY_CLIENT: &str = "SELECT rowid, id FROM deposit_addresses
     INDEXED BY deposit_addresses_client WHERE client_id = ?1
         AND (?2 IS NULL OR chain = ?2) AND (?3 IS NULL OR status = ?3)
         AND (?4 IS NULL OR rowid < ?4)
     ORDER BY rowid DESC LIMIT ?5";

/// `deposit_address.list` of every client, newest first.
const LIST_ALL: &str = "SELECT rowid, id FROM deposit_addresses WHERE
        (?1 IS NULL OR client_id = ?1) AND (?2 IS NULL OR chain = ?2) AND
        (?3 IS NULL OR status = ?3) AND (?4 IS NULL OR rowid < ?4)
     ORDER BY rowid DESC LIMIT ?5";

/// A deposit change a chain step made, which needs an event or a new look at the
/// deposit's credit.
#[derive(Debug, Clone)]
pub(super) struct Touched {
    pub(super) txid: String,
    pub(super) idx: u32,
    pub(super) change: DepositChange,
}

/// What happened to a deposit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DepositChange {
    Detected,
    Dropped,
    /// Its block changed: no event of its own; its credit is judged again.
    Moved,
}

pub(super) const RECORDED: &str =
    "SELECT state FROM deposits WHERE chain = ?1 AND txid = ?2 AND idx = ?3";

impl Shared {
    /// The open address of the request's chain and client, or the one an earlier create
    /// with its `idempotency_key` made (a conflict if from other params).
    fn existing(&self, conn: &Connection, new: &NewDepositAddress) -> StoreResult<Option<Value>> {
        if let Some(key) = &new.idempotency_key {
            let earlier: Option<(String, String)> = conn
                .prepare_cached(
                    "SELECT id, request FROM deposit_addresses WHERE idempotency_key = ?1",
                )?
                .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            match earlier {
                Some((_, r)) if r != new.request => return Err(StoreError::IdempotencyConflict),
                Some((id, _)) => return Ok(Some(self.deposit_view(conn, &id, true)?)),
                None => {}
            }
        }
        let open: Option<String> = conn
            .prepare_cached(
                "SELECT id FROM deposit_addresses
                 WHERE chain = ?1 AND client_id = ?2 AND status = 'OPEN'",
            )?
            .query_row(params![new.chain, new.client_id], |r| r.get(0))
            .optional()?;
        open.map(|id| self.deposit_view(conn, &id, true))
            .transpose()
    }

    /// The deposit address object; with `deposits`, its newest [`SHOWN`] deposits.
    fn deposit_view(&self, conn: &Connection, id: &str, deposits: bool) -> StoreResult<Value> {
        let a = load_address(conn, id)?.ok_or(StoreError::NotFound)?;
        let all = load_deposits(conn, id)?;
        let tip = cursor_of(conn, &a.chain)?.map(|c| c.height);
        let decimals = &self.policy(&a.chain)?.decimals;
        let shown = deposits.then(|| &all[all.len().saturating_sub(SHOWN)..]);
        Ok(address_json(&a, &all, shown, decimals, tip))
    }

    /// A `deposit_address.*` event, with the address as it now stands.
    fn address_event(
        &self,
        tx: &Connection,
        id: &str,
        kind: EventKind,
        now: i64,
    ) -> StoreResult<()> {
        let view = self.deposit_view(tx, id, false)?;
        let owner = Owner::Deposit(id.to_string());
        let data = json!({ "deposit_address": view });
        events::append(tx, self.outbox.as_ref(), kind, &owner, now, data)?;
        Ok(())
    }

    /// Records a deposit to its deposit address seen in `block` (or the mempool);
    /// returns 1 if it is new.
    pub(super) fn record_deposit(
        &self,
        tx: &Connection,
        chain: &str,
        f: &Found,
        block: Option<&BlockFound>,
        now: i64,
        touched: &mut Vec<Touched>,
    ) -> StoreResult<usize> {
        let existing: Option<String> = tx
            .prepare_cached(RECORDED)?
            .query_row(params![chain, f.txid, f.index], |r| r.get(0))
            .optional()?;
        let mut touch = |change| {
            touched.push(Touched {
                txid: f.txid.clone(),
                idx: f.index,
                change,
            })
        };
        match (existing.as_deref(), block) {
            (None, _) => {
                let required = self.policy(chain)?.required_for(&f.asset, Some(f.amount));
                tx.prepare_cached(
                    "INSERT INTO deposits (chain, txid, idx, deposit_address_id, asset, amount,
                        state, block_height, block_hash, seen_at, rbf, required, detected)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12,
                        (SELECT COALESCE(MAX(detected), 0) + 1 FROM deposits))",
                )?
                .execute(params![
                    chain,
                    f.txid,
                    f.index,
                    f.owner.id(),
                    f.asset,
                    f.amount.to_string(),
                    if block.is_some() {
                        "CONFIRMED"
                    } else {
                        "PENDING"
                    },
                    block.map(|b| b.height),
                    block.map(|b| b.hash.clone()),
                    // Found first in a block: its time, never later than now.
                    block.map_or(now, |b| b.time.min(now)),
                    f.rbf,
                    required,
                ])?;
                touch(DepositChange::Detected);
                return Ok(1);
            }
            (Some(state), Some(b)) => {
                tx.prepare_cached(
                    "UPDATE deposits SET state = 'CONFIRMED', block_height = ?4, block_hash = ?5
                     WHERE chain = ?1 AND txid = ?2 AND idx = ?3",
                )?
                .execute(params![chain, f.txid, f.index, b.height, b.hash])?;
                touch(match state {
                    "DROPPED" => DepositChange::Detected,
                    _ => DepositChange::Moved,
                });
            }
            (Some("DROPPED"), None) => {
                tx.prepare_cached(
                    "UPDATE deposits SET state = 'PENDING', rbf = ?4
                     WHERE chain = ?1 AND txid = ?2 AND idx = ?3",
                )?
                .execute(params![chain, f.txid, f.index, f.rbf])?;
                touch(DepositChange::Detected);
            }
            (Some(_), None) => {}
        }
        Ok(0)
    }

    /// Deposits whose block left the best chain go back to the mempool as far as we
    /// know; returns the addresses of settled ones (an alarm).
    pub(super) fn disconnect_deposits(
        &self,
        tx: &Connection,
        chain: &str,
        fork: u64,
        touched: &mut Vec<Touched>,
    ) -> StoreResult<Vec<String>> {
        let mut st = tx.prepare_cached(
            "UPDATE deposits SET state = 'PENDING', block_height = NULL, block_hash = NULL
             WHERE chain = ?1 AND state = 'CONFIRMED' AND block_height > ?2
             RETURNING deposit_address_id, txid, idx, settled",
        )?;
        let rows: Vec<(String, String, u32, bool)> = st
            .query_map(params![chain, fork], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<Result<_, _>>()?;
        let mut settled = Vec::new();
        for (address_id, txid, idx, was_settled) in rows {
            if was_settled {
                settled.push(address_id.clone());
            }
            touched.push(Touched {
                txid,
                idx,
                change: DepositChange::Moved,
            });
        }
        Ok(settled)
    }

    /// `PENDING` deposits of `txid`, which left the mempool unmined, are dropped.
    pub(super) fn evict_deposits(
        &self,
        tx: &Connection,
        chain: &str,
        txid: &str,
        touched: &mut Vec<Touched>,
    ) -> StoreResult<()> {
        let mut st = tx.prepare_cached(
            "UPDATE deposits SET state = 'DROPPED'
             WHERE chain = ?1 AND txid = ?2 AND state = 'PENDING'
             RETURNING idx",
        )?;
        for idx in st.query_map(params![chain, txid], |r| r.get(0))? {
            let idx = idx?;
            touched.push(Touched {
                txid: txid.to_string(),
                idx,
                change: DepositChange::Dropped,
            });
        }
        Ok(())
    }

    /// After a chain step: every deposit it touched, and (when the tip or the finalized
    /// block moved) every one not yet settled, has its credit judged again; then the
    /// events, what happened to deposits first and then what it did to their credit.
    pub(super) fn settle_deposits(
        &self,
        tx: &Connection,
        chain: &str,
        touched: &[Touched],
        tip_moved: bool,
    ) -> StoreResult<()> {
        // Each judged deposit read once, in the order first touched: those the step
        // touched, then (the tip moved) those the partial index holds.
        let mut judged: Vec<(String, Deposit)> = Vec::new();
        let mut at: HashMap<(String, u32), usize> = HashMap::new();
        for t in touched {
            let key = (t.txid.clone(), t.idx);
            if !at.contains_key(&key)
                && let Some(row) = load_deposit(tx, chain, &t.txid, t.idx)?
            {
                at.insert(key, judged.len());
                judged.push(row);
            }
        }
        if tip_moved {
            let mut st = tx.prepare_cached(UNSETTLED)?;
            for row in st.query_map([chain], |r| Ok((r.get(0)?, deposit_of(r, 1)?)))? {
                let (address_id, d): (String, Deposit) = row?;
                if let std::collections::hash_map::Entry::Vacant(e) =
                    at.entry((d.txid.clone(), d.index))
                {
                    e.insert(judged.len());
                    judged.push((address_id, d));
                }
            }
        }
        if judged.is_empty() {
            return Ok(());
        }
        let cursor = cursor_of(tx, chain)?;
        let tip = cursor.as_ref().map(|c| c.height);
        let final_height = self
            .policy(chain)?
            .final_height(tip, cursor.and_then(|c| c.finalized));
        let mut credit_events = Vec::new();
        for (i, (_, d)) in judged.iter_mut().enumerate() {
            let c = d.credit(tip, final_height);
            if (c.credited, c.settled) == (d.credited, d.settled) {
                continue;
            }
            tx.prepare_cached(
                "UPDATE deposits SET credited = ?4, settled = ?5
                 WHERE chain = ?1 AND txid = ?2 AND idx = ?3",
            )?
            .execute(params![chain, d.txid, d.index, c.credited, c.settled])?;
            if c.credited != d.credited {
                let kind = match c.credited {
                    true => EventKind::DepositConfirmed,
                    false => EventKind::DepositReverted,
                };
                credit_events.push((i, kind));
            }
            (d.credited, d.settled) = (c.credited, c.settled);
        }
        let changes: Vec<(usize, EventKind)> = touched
            .iter()
            .filter_map(|t| {
                let kind = match t.change {
                    DepositChange::Detected => EventKind::DepositDetected,
                    DepositChange::Dropped => EventKind::DepositDropped,
                    DepositChange::Moved => return None,
                };
                Some((*at.get(&(t.txid.clone(), t.idx))?, kind))
            })
            .collect();
        let now = now();
        let decimals = &self.policy(chain)?.decimals;
        let mut views: HashMap<String, Value> = HashMap::new();
        for (i, kind) in changes.into_iter().chain(credit_events) {
            let (address_id, d) = &judged[i];
            let view = match views.get(address_id) {
                Some(v) => v.clone(),
                None => {
                    let v = self.deposit_view(tx, address_id, false)?;
                    views.insert(address_id.clone(), v.clone());
                    v
                }
            };
            let places = decimals.get(&d.asset).copied().unwrap_or(0);
            let data = json!({
                "deposit_address": view,
                "deposit": deposit_json(d, places, tip),
            });
            let owner = Owner::Deposit(address_id.clone());
            events::append(tx, self.outbox.as_ref(), kind, &owner, now, data)?;
        }
        Ok(())
    }

    /// Closed deposit addresses whose late window has ended leave the watch set, unless
    /// a deposit of theirs is still short of settled (then they are looked at again
    /// shortly).
    pub(super) fn unwatch_deposits(
        &self,
        tx: &Connection,
        chain: &str,
        now: i64,
        limit: u32,
        watch: &mut Vec<WatchChange>,
    ) -> StoreResult<()> {
        let due = due_deposit_addresses(tx, chain, now, limit)?;
        for id in due {
            let (unsettled, script): (bool, Vec<u8>) = tx
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM deposits WHERE deposit_address_id = ?1
                        AND (state = 'PENDING' OR (state = 'CONFIRMED' AND settled = 0))),
                        (SELECT script FROM deposit_addresses WHERE id = ?1)",
                )?
                .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            if unsettled {
                tx.prepare_cached("UPDATE deposit_addresses SET wake_at = ?2 WHERE id = ?1")?
                    .execute(params![id, now.saturating_add(UNFINAL_RECHECK)])?;
                continue;
            }
            tx.prepare_cached(
                "UPDATE deposit_addresses SET watched = 0, wake_at = NULL WHERE id = ?1",
            )?
            .execute([&id])?;
            watch.push(WatchChange {
                script,
                owner: Owner::Deposit(id),
                watch: false,
            });
        }
        Ok(())
    }
}

/// Deposits confirmed and not yet settled on a chain: those whose credit may move with
/// the tip. A partial index holds only them.
pub(super) const UNSETTLED: &str = "SELECT deposit_address_id, txid, idx, asset, amount, state,
        block_height, block_hash, seen_at, rbf, required, credited, settled
     FROM deposits INDEXED BY deposits_unsettled
     WHERE chain = ?1 AND state = 'CONFIRMED' AND settled = 0";

/// Closed deposit addresses whose watch window has ended, earliest first.
pub(super) const DUE_DEPOSIT_ADDRESSES: &str = "SELECT id FROM deposit_addresses
     WHERE chain = ?1 AND wake_at <= ?2 ORDER BY wake_at LIMIT ?3";

/// [`DUE_DEPOSIT_ADDRESSES`]: a range of the deadline index.
pub(super) fn due_deposit_addresses(
    conn: &Connection,
    chain: &str,
    now: i64,
    limit: u32,
) -> StoreResult<Vec<String>> {
    let mut st = conn.prepare_cached(DUE_DEPOSIT_ADDRESSES)?;
    let rows = st.query_map(params![chain, now, limit], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The deposits of a deposit address's id, `(chain, txid, idx)` of one, or the sum of
/// its confirmed deposits in `asset` at or below `height`.
const DEPOSITS_OF: &str = "SELECT txid, idx, asset, amount, state, block_height, block_hash,
        seen_at, rbf, required, credited, settled
     FROM deposits WHERE deposit_address_id = ?1 ORDER BY detected";

fn load_deposits(conn: &Connection, id: &str) -> rusqlite::Result<Vec<Deposit>> {
    let mut st = conn.prepare_cached(DEPOSITS_OF)?;
    let rows = st.query_map([id], |r| deposit_of(r, 0))?;
    rows.collect()
}

fn load_deposit(
    conn: &Connection,
    chain: &str,
    txid: &str,
    idx: u32,
) -> rusqlite::Result<Option<(String, Deposit)>> {
    conn.prepare_cached(
        "SELECT deposit_address_id, txid, idx, asset, amount, state, block_height, block_hash,
            seen_at, rbf, required, credited, settled
         FROM deposits WHERE chain = ?1 AND txid = ?2 AND idx = ?3",
    )?
    .query_row(params![chain, txid, idx], |r| {
        Ok((r.get(0)?, deposit_of(r, 1)?))
    })
    .optional()
}

/// The sum of the deposits to `id` in `asset` confirmed at or below `height`.
pub(super) fn confirmed_deposits(
    conn: &Connection,
    id: &str,
    asset: &str,
    height: u64,
) -> rusqlite::Result<crate::amount::U256> {
    let all = load_deposits(conn, id)?;
    Ok(crate::amount::sum(
        all.iter()
            .filter(|d| {
                d.asset == asset
                    && d.state == PaymentState::Confirmed
                    && d.block_height.is_some_and(|h| h <= height)
            })
            .map(|d| d.amount),
    ))
}

/// A deposit from a row holding `txid, idx, asset, amount, state, block_height,
/// block_hash, seen_at, rbf, required, credited, settled` from column `at` on.
fn deposit_of(r: &Row<'_>, at: usize) -> rusqlite::Result<Deposit> {
    Ok(Deposit {
        txid: r.get(at)?,
        index: r.get(at + 1)?,
        asset: r.get(at + 2)?,
        amount: units(r, at + 3)?,
        state: parsed(r, at + 4, PaymentState::parse)?,
        block_height: r.get(at + 5)?,
        block_hash: r.get(at + 6)?,
        seen_at: r.get(at + 7)?,
        rbf: r.get(at + 8)?,
        required: r.get(at + 9)?,
        credited: r.get(at + 10)?,
        settled: r.get(at + 11)?,
    })
}

fn load_address(conn: &Connection, id: &str) -> rusqlite::Result<Option<DepositAddress>> {
    conn.prepare_cached(
        "SELECT id, status, chain, address, derivation_index, client_id, label, metadata,
            callback_url, created_at, closed_at
         FROM deposit_addresses WHERE id = ?1",
    )?
    .query_row([id], |r| {
        let metadata: String = r.get(7)?;
        Ok(DepositAddress {
            id: r.get(0)?,
            status: parsed(r, 1, AddressStatus::parse)?,
            chain: r.get(2)?,
            address: r.get(3)?,
            derivation_index: r.get(4)?,
            client_id: r.get(5)?,
            label: r.get(6)?,
            metadata: serde_json::from_str(&metadata).unwrap_or(Value::Null),
            callback_url: r.get(8)?,
            created_at: r.get(9)?,
            closed_at: r.get(10)?,
        })
    })
    .optional()
}
