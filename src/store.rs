//! The one place that writes: SQLite (WAL, STRICT tables, versioned migrations).
//!
//! Every change and the events it causes commit in one transaction; a chain update
//! (blocks disconnected and connected, mempool payments, evictions) commits together
//! with the chain's new cursor, so a crash at any point loses nothing and counts
//! nothing twice.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::amount::U256;
use crate::chains::Policy;
use crate::events::{self, EventKind};
use crate::invoice::{
    Decision, Invoice, Mode, Payment, PaymentState, Reason, Status, invoice_json, payment_json,
};
use crate::lifecycle::{self, Facts};

/// What a store call may refuse, besides failing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    NotAllowed(String),
    #[error("idempotency_key was used with different params")]
    IdempotencyConflict,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Internal(e.into())
    }
}

/// Result of a store call.
pub(crate) type StoreResult<T> = Result<T, StoreError>;

/// Where a chain's watcher is: the last block it applied, and when it last caught up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) height: u64,
    pub(crate) hash: String,
    pub(crate) synced_at: Option<i64>,
}

/// A payment the watcher found (output `index` of `txid` paying the invoice).
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub(crate) invoice_id: String,
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
    /// Blocks connected in order; the last one becomes the cursor.
    pub(crate) connect: Vec<BlockFound>,
    /// Payments found by a rescan in blocks already behind the cursor.
    pub(crate) rescanned: Vec<BlockFound>,
    /// Payments seen in the mempool.
    pub(crate) mempool: Vec<Found>,
    /// `PENDING` payments whose transaction left the mempool unmined (judged at the tip).
    pub(crate) evicted: Vec<String>,
    /// Start of a poll that reached the tip and looked at the mempool.
    pub(crate) synced_at: Option<i64>,
}

/// What a chain update did that the watcher must act on.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// Payments newly recorded.
    pub(crate) new_payments: usize,
    /// Final invoices whose payments a reorganisation touched: an alarm.
    pub(crate) final_reorged: Vec<String>,
}

/// The settings of a chain the store needs to judge invoices.
#[derive(Debug, Clone)]
pub(crate) struct ChainRules {
    pub(crate) policy: Policy,
}

/// The database.
pub(crate) struct Store {
    conn: Mutex<Connection>,
    chains: HashMap<String, ChainRules>,
    events_tx: broadcast::Sender<i64>,
    clock: fn() -> i64,
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The migrations, in order: `PRAGMA user_version` says how many have run.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE invoices (
    id TEXT PRIMARY KEY,
    chain TEXT NOT NULL,
    asset TEXT NOT NULL,
    decimals INTEGER NOT NULL,
    mode TEXT NOT NULL,
    address TEXT NOT NULL UNIQUE,
    script BLOB NOT NULL,
    derivation_index INTEGER NOT NULL,
    amount_due TEXT,
    tolerance TEXT NOT NULL,
    confirmations INTEGER,
    status TEXT NOT NULL,
    reason TEXT,
    decision TEXT,
    order_id TEXT,
    client_id TEXT,
    email TEXT,
    title TEXT,
    description TEXT,
    callback_url TEXT,
    metadata TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    request TEXT,
    created_height INTEGER,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    updated_at INTEGER NOT NULL,
    completed_at INTEGER,
    closed_at INTEGER
) STRICT;
CREATE INDEX invoices_chain_status ON invoices(chain, status);
CREATE INDEX invoices_order ON invoices(order_id);
CREATE TABLE payments (
    chain TEXT NOT NULL,
    txid TEXT NOT NULL,
    idx INTEGER NOT NULL,
    invoice_id TEXT NOT NULL REFERENCES invoices(id),
    amount TEXT NOT NULL,
    state TEXT NOT NULL,
    block_height INTEGER,
    block_hash TEXT,
    seen_at INTEGER NOT NULL,
    rbf INTEGER NOT NULL,
    timed_out INTEGER NOT NULL DEFAULT 0,
    confirmed_notified INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (chain, txid, idx)
) STRICT;
CREATE INDEX payments_invoice ON payments(invoice_id);
CREATE INDEX payments_height ON payments(chain, block_height);
CREATE INDEX payments_unnotified ON payments(chain) WHERE confirmed_notified = 0;
CREATE TABLE blocks (
    chain TEXT NOT NULL,
    height INTEGER NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (chain, height)
) STRICT;
CREATE TABLE cursors (
    chain TEXT PRIMARY KEY,
    height INTEGER NOT NULL,
    hash TEXT NOT NULL,
    synced_at INTEGER,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    invoice_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    data TEXT NOT NULL
) STRICT;
CREATE INDEX events_invoice ON events(invoice_id, seq);
CREATE TABLE derivation (
    chain TEXT NOT NULL,
    key_id TEXT NOT NULL,
    next_index INTEGER NOT NULL,
    PRIMARY KEY (chain, key_id)
) STRICT;
"#];

/// Runs the migrations not yet run, each in its own transaction.
fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let done: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if done > MIGRATIONS.len() {
        anyhow::bail!(
            "the database is at schema version {done}, newer than this settled knows ({}): \
             refusing to run an older settled on it",
            MIGRATIONS.len()
        );
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// Number of recent block hashes kept per chain beyond the reorg limit.
const EXTRA_BLOCKS_KEPT: u64 = 10;

/// What an invoice is created from, checked by the API.
#[derive(Debug, Clone)]
pub(crate) struct NewInvoice {
    pub(crate) chain: String,
    pub(crate) asset: String,
    pub(crate) decimals: u8,
    pub(crate) mode: Mode,
    pub(crate) amount_due: Option<U256>,
    pub(crate) tolerance: U256,
    pub(crate) confirmations: Option<u32>,
    pub(crate) expires_in: Option<u64>,
    pub(crate) order_id: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) email: Option<String>,
    pub(crate) title: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) callback_url: Option<String>,
    pub(crate) metadata: Value,
    pub(crate) idempotency_key: Option<String>,
    /// The request's params, to tell a retry from a reuse of the key.
    pub(crate) request: String,
}

/// The invoice object, and the script to watch when the invoice is new (not a retry).
pub(crate) type Created = (Value, Option<(Vec<u8>, String)>);

/// `invoice.list` filters.
#[derive(Debug, Default, Clone)]
pub(crate) struct ListFilter {
    pub(crate) status: Option<Status>,
    pub(crate) chain: Option<String>,
    pub(crate) order_id: Option<String>,
    pub(crate) created_after: Option<i64>,
    pub(crate) created_before: Option<i64>,
    pub(crate) limit: u32,
    pub(crate) cursor: Option<i64>,
}

/// The backend's decisions on an invoice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Void,
    MarkCompleted,
    MarkRefunded,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub(crate) fn open(path: &Path, chains: HashMap<String, ChainRules>) -> anyhow::Result<Store> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit is on disk before the API answers or a webhook is queued.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        let (events_tx, _) = broadcast::channel(1024);
        Ok(Store {
            conn: Mutex::new(conn),
            chains,
            events_tx,
            clock: now,
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-written transaction
        // (rusqlite rolls back on drop), so the connection stays usable.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes up on every commit that wrote events, with the last `seq`.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<i64> {
        self.events_tx.subscribe()
    }

    fn rules(&self, chain: &str) -> anyhow::Result<&ChainRules> {
        self.chains
            .get(chain)
            .ok_or_else(|| anyhow::anyhow!("chain {chain} is not configured"))
    }

    // ---- chain cursor -------------------------------------------------------------

    /// The chain's cursor, if its watcher ever started.
    pub(crate) fn cursor(&self, chain: &str) -> StoreResult<Option<Cursor>> {
        Ok(cursor_of(&self.conn(), chain)?)
    }

    /// Sets the first cursor of a chain (first run only).
    pub(crate) fn init_cursor(&self, chain: &str, height: u64, hash: &str) -> StoreResult<()> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO cursors (chain, height, hash, synced_at, updated_at) VALUES (?1, ?2, ?3, NULL, ?4)
             ON CONFLICT(chain) DO NOTHING",
            params![chain, height, hash, (self.clock)()],
        )?;
        conn.execute(
            "INSERT OR REPLACE INTO blocks (chain, height, hash) VALUES (?1, ?2, ?3)",
            params![chain, height, hash],
        )?;
        Ok(())
    }

    /// The hash the store holds for `height`, if it is among the recent blocks.
    pub(crate) fn block_hash(&self, chain: &str, height: u64) -> StoreResult<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT hash FROM blocks WHERE chain = ?1 AND height = ?2",
                params![chain, height],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Transaction ids of the chain's `PENDING` payments.
    pub(crate) fn pending_txids(&self, chain: &str) -> StoreResult<BTreeSet<String>> {
        let conn = self.conn();
        let mut st = conn
            .prepare("SELECT DISTINCT txid FROM payments WHERE chain = ?1 AND state = 'PENDING'")?;
        let rows = st.query_map([chain], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Scripts to watch on `chain` (`lifecycle.md`, "How long an address is watched").
    pub(crate) fn watched(&self, chain: &str) -> StoreResult<Vec<(Vec<u8>, String)>> {
        let conn = self.conn();
        let rules = self.rules(chain)?;
        let now = (self.clock)();
        let since = now - rules.policy.late_payment_window as i64;
        let tip = cursor_of(&conn, chain)?.map_or(0, |c| c.height as i64);
        let unfinal_above = tip - i64::from(rules.policy.final_confirmations);
        let mut st = conn.prepare(
            "SELECT script, id FROM invoices i WHERE chain = ?1 AND (
                 closed_at IS NULL OR closed_at > ?2
                 OR EXISTS (SELECT 1 FROM payments p WHERE p.invoice_id = i.id AND
                            (p.state = 'PENDING' OR (p.state = 'CONFIRMED' AND p.block_height > ?3))))",
        )?;
        let rows = st.query_map(params![chain, since, unfinal_above], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---- invoices -----------------------------------------------------------------

    /// Creates an invoice with the next address of `derive`, or returns the one an
    /// earlier call with the same `idempotency_key` and params created.
    pub(crate) fn create_invoice(
        &self,
        new: NewInvoice,
        key_id: &str,
        derive: impl Fn(u32) -> Result<(String, Vec<u8>), String>,
    ) -> StoreResult<Created> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if let Some(key) = &new.idempotency_key {
            let earlier: Option<(String, String)> = tx
                .query_row(
                    "SELECT id, request FROM invoices WHERE idempotency_key = ?1",
                    [key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((id, request)) = earlier {
                if request != new.request {
                    return Err(StoreError::IdempotencyConflict);
                }
                return Ok((self.invoice_view(&tx, &id)?, None));
            }
        }
        let index: u32 = tx
            .query_row(
                "SELECT next_index FROM derivation WHERE chain = ?1 AND key_id = ?2",
                params![new.chain, key_id],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        let (address, script) = derive(index).map_err(|e| anyhow::anyhow!(e))?;
        tx.execute(
            "INSERT INTO derivation (chain, key_id, next_index) VALUES (?1, ?2, ?3)
             ON CONFLICT(chain, key_id) DO UPDATE SET next_index = excluded.next_index",
            params![new.chain, key_id, index + 1],
        )?;
        let now = (self.clock)();
        let id = uuid::Uuid::new_v4().to_string();
        let created_height = cursor_of(&tx, &new.chain)?.map(|c| c.height);
        let expires_at = new
            .expires_in
            .map(|s| now.saturating_add(i64::try_from(s).unwrap_or(i64::MAX)));
        tx.execute(
            "INSERT INTO invoices (id, chain, asset, decimals, mode, address, script, derivation_index,
                amount_due, tolerance, confirmations, status, reason, decision, order_id, client_id,
                email, title, description, callback_url, metadata, idempotency_key, request,
                created_height, created_at, expires_at, updated_at, completed_at, closed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'PENDING', NULL, NULL, ?12, ?13,
                ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?22, NULL, NULL)",
            params![
                id,
                new.chain,
                new.asset,
                new.decimals,
                new.mode.as_str(),
                address,
                script,
                index,
                new.amount_due.map(|u| u.to_string()),
                new.tolerance.to_string(),
                new.confirmations,
                new.order_id,
                new.client_id,
                new.email,
                new.title,
                new.description,
                new.callback_url,
                new.metadata.to_string(),
                new.idempotency_key,
                new.request,
                created_height,
                now,
                expires_at,
            ],
        )?;
        let view = self.invoice_view(&tx, &id)?;
        events::insert(
            &tx,
            EventKind::InvoiceCreated,
            &id,
            now,
            json!({ "invoice": view }),
        )?;
        tx.commit()?;
        self.wake(&conn);
        Ok((view, Some((script, id))))
    }

    /// The invoice object, or `NotFound`.
    pub(crate) fn get_invoice(&self, id: &str) -> StoreResult<Value> {
        self.invoice_view(&self.conn(), id)
    }

    /// The invoice's chain and script (for rescans).
    pub(crate) fn invoice_target(&self, id: &str) -> StoreResult<(String, Vec<u8>, Option<u64>)> {
        self.conn()
            .query_row(
                "SELECT chain, script, created_height FROM invoices WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?
            .ok_or(StoreError::NotFound)
    }

    /// `invoice.list`: newest first, `limit` a page, with the cursor of the next page.
    pub(crate) fn list_invoices(&self, f: &ListFilter) -> StoreResult<(Vec<Value>, Option<i64>)> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT rowid, id FROM invoices WHERE
                (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR chain = ?2) AND
                (?3 IS NULL OR order_id = ?3) AND (?4 IS NULL OR created_at > ?4) AND
                (?5 IS NULL OR created_at < ?5) AND (?6 IS NULL OR rowid < ?6)
             ORDER BY rowid DESC LIMIT ?7",
        )?;
        let rows: Vec<(i64, String)> = st
            .query_map(
                params![
                    f.status.map(Status::as_str),
                    f.chain,
                    f.order_id,
                    f.created_after,
                    f.created_before,
                    f.cursor,
                    i64::from(f.limit) + 1
                ],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
            .collect::<Result<_, _>>()?;
        let more = rows.len() > f.limit as usize;
        let page = &rows[..rows.len().min(f.limit as usize)];
        let views = page
            .iter()
            .map(|(_, id)| self.invoice_view(&conn, id))
            .collect::<StoreResult<Vec<_>>>()?;
        let next = if more {
            page.last().map(|(r, _)| *r)
        } else {
            None
        };
        Ok((views, next))
    }

    /// `invoice.void`, `invoice.mark_completed`, `invoice.mark_refunded`.
    pub(crate) fn decide(&self, id: &str, action: Action) -> StoreResult<Value> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let inv = load_invoice(&tx, id)?.ok_or(StoreError::NotFound)?;
        let allowed = match action {
            // Voiding is for invoices nobody paid in full; a paid one is refunded.
            Action::Void => matches!(
                inv.status,
                Status::Pending | Status::Partial | Status::Expired | Status::ExpiredLatePayment
            ),
            Action::MarkCompleted => matches!(
                inv.status,
                Status::Pending
                    | Status::Partial
                    | Status::WaitingForConfirmations
                    | Status::Expired
                    | Status::ExpiredLatePayment
            ),
            Action::MarkRefunded => inv.status != Status::Voided && inv.status != Status::Refunded,
        };
        if !allowed {
            return Err(StoreError::NotAllowed(format!(
                "not allowed while the invoice is {}",
                inv.status
            )));
        }
        let decision = match action {
            Action::Void => Decision::Voided,
            Action::MarkCompleted => Decision::MarkedCompleted,
            Action::MarkRefunded => Decision::Refunded,
        };
        tx.execute(
            "UPDATE invoices SET decision = ?2 WHERE id = ?1",
            params![id, decision.as_str()],
        )?;
        self.settle(&tx, id, &[])?;
        let view = self.invoice_view(&tx, id)?;
        tx.commit()?;
        self.wake(&conn);
        Ok(view)
    }

    /// `invoice.extend`: a new `expires_at`, only before the invoice expired.
    pub(crate) fn extend(&self, id: &str, expires_in: u64) -> StoreResult<Value> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let inv = load_invoice(&tx, id)?.ok_or(StoreError::NotFound)?;
        if !matches!(
            inv.status,
            Status::Pending | Status::Partial | Status::WaitingForConfirmations
        ) {
            return Err(StoreError::NotAllowed(format!(
                "only an invoice that has not expired or been decided can be extended; this one is {}",
                inv.status
            )));
        }
        let now = (self.clock)();
        let expires_at = now.saturating_add(i64::try_from(expires_in).unwrap_or(i64::MAX));
        tx.execute(
            "UPDATE invoices SET expires_at = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, expires_at, now],
        )?;
        self.settle(&tx, id, &[])?;
        let view = self.invoice_view(&tx, id)?;
        tx.commit()?;
        self.wake(&conn);
        Ok(view)
    }

    /// `events.list`.
    pub(crate) fn events_after(
        &self,
        after_seq: i64,
        limit: u32,
        invoice_id: Option<&str>,
    ) -> StoreResult<Vec<Value>> {
        Ok(events::list(&self.conn(), after_seq, limit, invoice_id)?)
    }

    /// The last event's `seq` (0 when none).
    pub(crate) fn last_seq(&self) -> StoreResult<i64> {
        Ok(self
            .conn()
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?)
    }

    // ---- chain updates ------------------------------------------------------------

    /// Applies one watcher step: blocks, payments, evictions, the new cursor and every
    /// status change with its events, in one transaction.
    pub(crate) fn apply(&self, chain: &str, up: ChainUpdate) -> StoreResult<Applied> {
        let rules = self.rules(chain)?.clone();
        let now = (self.clock)();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut applied = Applied::default();
        let mut changes: Vec<(String, PaymentChange)> = Vec::new();

        if let Some(fork) = up.disconnect_above {
            let mut st = tx.prepare(
                "SELECT p.invoice_id, p.txid, p.idx, i.decision FROM payments p JOIN invoices i ON i.id = p.invoice_id
                 WHERE p.chain = ?1 AND p.state = 'CONFIRMED' AND p.block_height > ?2",
            )?;
            let rows: Vec<(String, String, u32, Option<String>)> = st
                .query_map(params![chain, fork], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect::<Result<_, _>>()?;
            drop(st);
            for (inv, txid, idx, decision) in rows {
                if decision.as_deref() == Some(Decision::Final.as_str()) {
                    applied.final_reorged.push(inv.clone());
                }
                changes.push((inv, PaymentChange::Unconfirmed { txid, idx }));
            }
            // Back to the mempool as far as we know; the next look at the mempool at the
            // tip tells whether it is still there or dropped.
            tx.execute(
                "UPDATE payments SET state = 'PENDING', block_height = NULL, block_hash = NULL
                 WHERE chain = ?1 AND state = 'CONFIRMED' AND block_height > ?2",
                params![chain, fork],
            )?;
            tx.execute(
                "DELETE FROM blocks WHERE chain = ?1 AND height > ?2",
                params![chain, fork],
            )?;
            let hash: String = tx.query_row(
                "SELECT hash FROM blocks WHERE chain = ?1 AND height = ?2",
                params![chain, fork],
                |r| r.get(0),
            )?;
            set_cursor(&tx, chain, fork, &hash, now)?;
        }

        for block in up.connect.iter() {
            tx.execute(
                "INSERT OR REPLACE INTO blocks (chain, height, hash) VALUES (?1, ?2, ?3)",
                params![chain, block.height, block.hash],
            )?;
            for f in &block.payments {
                applied.new_payments += record(&tx, chain, f, Some(block), now, &mut changes)?;
            }
            set_cursor(&tx, chain, block.height, &block.hash, now)?;
        }
        if let Some(last) = up.connect.last() {
            let keep = u64::from(rules.policy.max_reorg_depth) + EXTRA_BLOCKS_KEPT;
            tx.execute(
                "DELETE FROM blocks WHERE chain = ?1 AND height < ?2",
                params![chain, last.height.saturating_sub(keep)],
            )?;
        }
        for block in &up.rescanned {
            for f in &block.payments {
                applied.new_payments += record(&tx, chain, f, Some(block), now, &mut changes)?;
            }
        }
        for f in &up.mempool {
            applied.new_payments += record(&tx, chain, f, None, now, &mut changes)?;
        }
        for txid in &up.evicted {
            let mut st = tx.prepare(
                "UPDATE payments SET state = 'DROPPED' WHERE chain = ?1 AND txid = ?2 AND state = 'PENDING'
                 RETURNING invoice_id, idx",
            )?;
            let rows: Vec<(String, u32)> = st
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
        if let Some(at) = up.synced_at {
            tx.execute(
                "UPDATE cursors SET synced_at = MAX(COALESCE(synced_at, 0), ?2) WHERE chain = ?1",
                params![chain, at],
            )?;
        }

        // Which invoices to judge again: those whose payments changed, those whose
        // payments' confirmations move with the tip, and those the clock may expire.
        let mut ids: BTreeSet<String> = changes.iter().map(|(i, _)| i.clone()).collect();
        if up.disconnect_above.is_some() || !up.connect.is_empty() {
            ids.extend(confirming(&tx, chain, &rules.policy)?);
        }
        ids.extend(clock_sensitive(&tx, chain, &rules.policy, now)?);
        for id in ids {
            let own: Vec<&PaymentChange> = changes
                .iter()
                .filter(|(i, _)| *i == id)
                .map(|(_, c)| c)
                .collect();
            self.settle(&tx, &id, &own)?;
        }
        tx.commit()?;
        self.wake(&conn);
        Ok(applied)
    }

    /// Recomputes one invoice and writes what changed, with its events.
    fn settle(
        &self,
        tx: &Transaction<'_>,
        id: &str,
        changes: &[&PaymentChange],
    ) -> StoreResult<()> {
        let now = (self.clock)();
        let inv = load_invoice(tx, id)?.ok_or(StoreError::NotFound)?;
        let rules = self.rules(&inv.chain)?;
        let cursor = cursor_of(tx, &inv.chain)?;
        let tip = cursor.as_ref().map(|c| c.height);
        let synced_at = cursor.as_ref().and_then(|c| c.synced_at);
        let pays = load_payments(tx, id)?;
        let out = lifecycle::evaluate(Facts {
            invoice: &inv,
            payments: &pays,
            tip,
            now,
            synced_at,
            policy: &rules.policy,
        });

        // Payment bookkeeping the outcome asks for.
        let mut confirmed_now = Vec::new();
        for (i, p) in pays.iter().enumerate() {
            if out.timed_out.contains(&i) {
                tx.execute(
                    "UPDATE payments SET timed_out = 1 WHERE chain = ?1 AND txid = ?2 AND idx = ?3",
                    params![inv.chain, p.txid, p.index],
                )?;
            }
            let notify = out.ready[i];
            if notify != p.confirmed_notified {
                tx.execute(
                    "UPDATE payments SET confirmed_notified = ?4 WHERE chain = ?1 AND txid = ?2 AND idx = ?3",
                    params![inv.chain, p.txid, p.index, notify],
                )?;
                if notify {
                    confirmed_now.push(i);
                }
            }
        }
        let status_changed = out.status != inv.status || out.reason != inv.reason;
        if status_changed || (out.finalized && inv.decision.is_none()) {
            let completed_at = match (out.status, inv.status) {
                (Status::Completed, Status::Completed) => inv.completed_at,
                (Status::Completed, _) => Some(now),
                _ => None,
            };
            let closed_at = match (out.status.is_closed(), inv.closed_at) {
                (true, Some(t)) => Some(t),
                (true, None) => Some(now),
                (false, _) => None,
            };
            let decision = if out.finalized && inv.decision.is_none() {
                Some(Decision::Final)
            } else {
                inv.decision
            };
            tx.execute(
                "UPDATE invoices SET status = ?2, reason = ?3, decision = ?4, completed_at = ?5,
                    closed_at = ?6, updated_at = CASE WHEN ?7 THEN ?8 ELSE updated_at END WHERE id = ?1",
                params![
                    id,
                    out.status.as_str(),
                    out.reason.map(Reason::as_str),
                    decision.map(Decision::as_str),
                    completed_at,
                    closed_at,
                    status_changed,
                    now
                ],
            )?;
        } else if !changes.is_empty() {
            tx.execute(
                "UPDATE invoices SET updated_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
        }

        // Events, after the change they describe, in the order a backend expects:
        // what happened to payments, then what it did to the invoice.
        let from = inv.status;
        let inv = load_invoice(tx, id)?.ok_or(StoreError::NotFound)?;
        let pays = load_payments(tx, id)?;
        let view = invoice_json(&inv, &pays, &out, tip);
        let pay_view = |txid: &str, idx: u32| {
            pays.iter()
                .find(|p| p.txid == txid && p.index == idx)
                .map(|p| payment_json(&inv, p, tip))
        };
        for c in changes {
            let (kind, txid, idx) = match c {
                PaymentChange::Detected { txid, idx } => (EventKind::PaymentDetected, txid, *idx),
                PaymentChange::Dropped { txid, idx } => (EventKind::PaymentDropped, txid, *idx),
                PaymentChange::Unconfirmed { .. } => continue,
            };
            events::insert(
                tx,
                kind,
                id,
                now,
                json!({ "invoice": view, "payment": pay_view(txid, idx) }),
            )?;
        }
        for i in confirmed_now {
            let p = &pays[i];
            events::insert(
                tx,
                EventKind::PaymentConfirmed,
                id,
                now,
                json!({ "invoice": view, "payment": pay_view(&p.txid, p.index) }),
            )?;
        }
        if out.status != from {
            events::insert(
                tx,
                EventKind::StatusChanged,
                id,
                now,
                json!({ "from": from, "to": out.status, "invoice": view }),
            )?;
            // Going backwards on the chain, not by the backend's word.
            if from == Status::Completed && inv.decision.is_none() {
                events::insert(
                    tx,
                    EventKind::Reverted,
                    id,
                    now,
                    json!({ "from": from, "to": out.status, "invoice": view }),
                )?;
            }
        }
        Ok(())
    }

    fn invoice_view(&self, conn: &Connection, id: &str) -> StoreResult<Value> {
        let inv = load_invoice(conn, id)?.ok_or(StoreError::NotFound)?;
        let rules = self.rules(&inv.chain)?;
        let cursor = cursor_of(conn, &inv.chain)?;
        let tip = cursor.as_ref().map(|c| c.height);
        let pays = load_payments(conn, id)?;
        let out = lifecycle::evaluate(Facts {
            invoice: &inv,
            payments: &pays,
            tip,
            now: (self.clock)(),
            synced_at: cursor.and_then(|c| c.synced_at),
            policy: &rules.policy,
        });
        Ok(invoice_json(&inv, &pays, &out, tip))
    }

    fn wake(&self, conn: &Connection) {
        if let Ok(seq) =
            conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))
        {
            // No receiver is fine: nobody is subscribed.
            let _ = self.events_tx.send(seq);
        }
    }
}

/// A payment change that needs an event.
#[derive(Debug, Clone)]
enum PaymentChange {
    Detected {
        txid: String,
        idx: u32,
    },
    Dropped {
        txid: String,
        idx: u32,
    },
    /// Its block left the best chain; no event of its own (the invoice's tells).
    Unconfirmed {
        #[allow(dead_code)]
        txid: String,
        #[allow(dead_code)]
        idx: u32,
    },
}

/// Records a payment seen in `block` (or the mempool); returns 1 if it is new.
fn record(
    tx: &Transaction<'_>,
    chain: &str,
    f: &Found,
    block: Option<&BlockFound>,
    now: i64,
    changes: &mut Vec<(String, PaymentChange)>,
) -> StoreResult<usize> {
    let existing: Option<String> = tx
        .query_row(
            "SELECT state FROM payments WHERE chain = ?1 AND txid = ?2 AND idx = ?3",
            params![chain, f.txid, f.index],
            |r| r.get(0),
        )
        .optional()?;
    let detected = || PaymentChange::Detected {
        txid: f.txid.clone(),
        idx: f.index,
    };
    match (existing.as_deref(), block) {
        (None, _) => {
            // Found first in a block: its time, never later than now.
            let seen_at = block.map_or(now, |b| b.time.min(now));
            tx.execute(
                "INSERT INTO payments (chain, txid, idx, invoice_id, amount, state, block_height, block_hash, seen_at, rbf)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    chain,
                    f.txid,
                    f.index,
                    f.invoice_id,
                    f.amount.to_string(),
                    if block.is_some() { "CONFIRMED" } else { "PENDING" },
                    block.map(|b| b.height),
                    block.map(|b| b.hash.clone()),
                    seen_at,
                    f.rbf,
                ],
            )?;
            changes.push((f.invoice_id.clone(), detected()));
            return Ok(1);
        }
        (Some(state), Some(b)) => {
            tx.execute(
                "UPDATE payments SET state = 'CONFIRMED', block_height = ?4, block_hash = ?5
                 WHERE chain = ?1 AND txid = ?2 AND idx = ?3",
                params![chain, f.txid, f.index, b.height, b.hash],
            )?;
            if state == "DROPPED" {
                changes.push((f.invoice_id.clone(), detected()));
            } else {
                // Touch the invoice so it is judged again.
                changes.push((
                    f.invoice_id.clone(),
                    PaymentChange::Unconfirmed {
                        txid: f.txid.clone(),
                        idx: f.index,
                    },
                ));
            }
        }
        (Some("DROPPED"), None) => {
            tx.execute(
                "UPDATE payments SET state = 'PENDING', rbf = ?4 WHERE chain = ?1 AND txid = ?2 AND idx = ?3",
                params![chain, f.txid, f.index, f.rbf],
            )?;
            changes.push((f.invoice_id.clone(), detected()));
        }
        (Some(_), None) => {}
    }
    Ok(0)
}

fn set_cursor(
    tx: &Transaction<'_>,
    chain: &str,
    height: u64,
    hash: &str,
    now: i64,
) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO cursors (chain, height, hash, synced_at, updated_at) VALUES (?1, ?2, ?3, NULL, ?4)
         ON CONFLICT(chain) DO UPDATE SET height = excluded.height, hash = excluded.hash, updated_at = excluded.updated_at",
        params![chain, height, hash, now],
    )?;
    Ok(())
}

/// Invoices whose status may move with the tip: payments not yet confirmed enough to
/// have been announced, or not yet final.
fn confirming(tx: &Transaction<'_>, chain: &str, policy: &Policy) -> StoreResult<Vec<String>> {
    let tip = cursor_of(tx, chain)?.map_or(0, |c| c.height as i64);
    let mut st = tx.prepare(
        "SELECT DISTINCT p.invoice_id FROM payments p JOIN invoices i ON i.id = p.invoice_id
         WHERE p.chain = ?1 AND p.state = 'CONFIRMED' AND
               (p.confirmed_notified = 0 OR (p.block_height > ?2 AND i.decision IS NULL))",
    )?;
    let rows = st.query_map(
        params![chain, tip - i64::from(policy.final_confirmations)],
        |r| r.get(0),
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Invoices the clock may move: past `expires_at`, or waiting on a payment that may
/// outstay the confirmation window.
fn clock_sensitive(
    tx: &Transaction<'_>,
    chain: &str,
    policy: &Policy,
    now: i64,
) -> StoreResult<Vec<String>> {
    let mut st = tx.prepare(
        "SELECT id FROM invoices i WHERE chain = ?1 AND decision IS NULL AND (
            (status IN ('PENDING', 'PARTIAL') AND expires_at IS NOT NULL AND expires_at < ?2)
            OR (status = 'WAITING_FOR_CONFIRMATIONS' AND EXISTS (
                SELECT 1 FROM payments p WHERE p.invoice_id = i.id AND p.state = 'PENDING'
                AND p.timed_out = 0 AND p.seen_at < ?3)))",
    )?;
    let window = i64::try_from(policy.confirmation_window).unwrap_or(i64::MAX);
    let rows = st.query_map(params![chain, now, now.saturating_sub(window)], |r| {
        r.get(0)
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn cursor_of(conn: &Connection, chain: &str) -> rusqlite::Result<Option<Cursor>> {
    conn.query_row(
        "SELECT height, hash, synced_at FROM cursors WHERE chain = ?1",
        [chain],
        |r| {
            Ok(Cursor {
                height: r.get(0)?,
                hash: r.get(1)?,
                synced_at: r.get(2)?,
            })
        },
    )
    .optional()
}

fn units(r: &Row<'_>, i: usize) -> rusqlite::Result<U256> {
    let s: String = r.get(i)?;
    s.parse().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            "bad amount".into(),
        )
    })
}

fn parsed<T>(r: &Row<'_>, i: usize, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let s: String = r.get(i)?;
    parse(&s).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("unknown value {s:?}").into(),
        )
    })
}

fn load_invoice(conn: &Connection, id: &str) -> rusqlite::Result<Option<Invoice>> {
    conn.query_row(
        "SELECT id, chain, asset, decimals, mode, address, derivation_index, amount_due,
                tolerance, confirmations, status, reason, decision, order_id, client_id, email, title,
                description, callback_url, metadata, created_at, expires_at, updated_at,
                completed_at, closed_at
         FROM invoices WHERE id = ?1",
        [id],
        |r| {
            let due: Option<String> = r.get(7)?;
            let reason: Option<String> = r.get(11)?;
            let decision: Option<String> = r.get(12)?;
            let metadata: String = r.get(19)?;
            Ok(Invoice {
                id: r.get(0)?,
                chain: r.get(1)?,
                asset: r.get(2)?,
                decimals: r.get(3)?,
                mode: parsed(r, 4, Mode::parse)?,
                address: r.get(5)?,
                derivation_index: r.get(6)?,
                amount_due: match due {
                    Some(_) => Some(units(r, 7)?),
                    None => None,
                },
                tolerance: units(r, 8)?,
                confirmations: r.get(9)?,
                status: parsed(r, 10, Status::parse)?,
                reason: reason.as_deref().and_then(Reason::parse),
                decision: decision.as_deref().and_then(Decision::parse),
                order_id: r.get(13)?,
                client_id: r.get(14)?,
                email: r.get(15)?,
                title: r.get(16)?,
                description: r.get(17)?,
                callback_url: r.get(18)?,
                metadata: serde_json::from_str(&metadata).unwrap_or(Value::Null),
                created_at: r.get(20)?,
                expires_at: r.get(21)?,
                updated_at: r.get(22)?,
                completed_at: r.get(23)?,
                closed_at: r.get(24)?,
            })
        },
    )
    .optional()
}

fn load_payments(conn: &Connection, invoice_id: &str) -> rusqlite::Result<Vec<Payment>> {
    let mut st = conn.prepare_cached(
        "SELECT txid, idx, amount, state, block_height, block_hash, seen_at, rbf, timed_out, confirmed_notified
         FROM payments WHERE invoice_id = ?1 ORDER BY seen_at, txid, idx",
    )?;
    let rows = st.query_map([invoice_id], |r| {
        Ok(Payment {
            txid: r.get(0)?,
            index: r.get(1)?,
            amount: units(r, 2)?,
            state: parsed(r, 3, PaymentState::parse)?,
            block_height: r.get(4)?,
            block_hash: r.get(5)?,
            seen_at: r.get(6)?,
            rbf: r.get(7)?,
            timed_out: r.get(8)?,
            confirmed_notified: r.get(9)?,
        })
    })?;
    rows.collect()
}
