//! The one place that writes: SQLite (WAL, STRICT tables, versioned migrations), one
//! writer thread that commits together what arrives together ([`writer`]) and a pool
//! of read connections beside it ([`readers`]).
//!
//! Every change and the events it causes commit in one transaction; a chain update
//! (blocks disconnected and connected, mempool payments, evictions) commits together
//! with the chain's new cursor, so a crash at any point loses nothing and counts
//! nothing twice.

use std::collections::{BTreeSet, HashMap};
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::amount::U256;
use crate::chains::Policy;
use crate::events;
use crate::invoice::{
    Decision, Invoice, InvoiceAddress, Mode, PayOption, Payment, PaymentState, Price, Reason,
    Status, invoice_json,
};
use crate::lifecycle::{self, ChainFacts, Facts};

mod deposits;
mod invoices;
pub(crate) use deposits::{DepositFilter, NewDepositAddress};
pub(crate) use invoices::MAX_OPTIONS;
mod outbox;
mod readers;
mod schema;
mod settle;
mod writer;
pub(crate) use writer::Write;

pub(crate) use outbox::enqueue;
pub(crate) use outbox::{Attempt, Due, Outbox};
pub(crate) use settle::{Applied, BlockFound, ChainUpdate, Found, Owner, WatchChange};

/// What a store call may refuse, besides failing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    NotAllowed(String),
    #[error("idempotency_key was used with different params")]
    IdempotencyConflict,
    /// The disk under the database has no room: nothing of the write was kept, and
    /// the same write succeeds once there is room again.
    #[error("database full ({0}): nothing was written; settled carries on once there is space")]
    Full(String),
    /// The database cannot be written (its file or filesystem became read-only).
    #[error("database read-only ({0}): nothing was written")]
    ReadOnly(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::of_sqlite(e.sqlite_error_code(), e.to_string())
            .unwrap_or_else(|| StoreError::Internal(e.into()))
    }
}

impl StoreError {
    /// The refusal SQLite's `code` means, for the conditions the operator must fix
    /// outside settled; `None` for the others.
    fn of_sqlite(code: Option<rusqlite::ErrorCode>, msg: String) -> Option<StoreError> {
        match code? {
            rusqlite::ErrorCode::DiskFull => Some(StoreError::Full(msg)),
            rusqlite::ErrorCode::ReadOnly => Some(StoreError::ReadOnly(msg)),
            _ => None,
        }
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
    /// The node's `finalized` block as last seen (Ethereum-like chains).
    pub(crate) finalized: Option<u64>,
}

const PENDING_TXIDS: &str = "SELECT txid FROM payments WHERE chain = ?1 AND state = 'PENDING'
     UNION SELECT txid FROM deposits WHERE chain = ?1 AND state = 'PENDING'";

const WATCHED: &str =
    "SELECT script, invoice_id, 0 FROM invoice_addresses WHERE chain = ?1 AND watched = 1
     UNION ALL
     SELECT script, id, 1 FROM deposit_addresses WHERE chain = ?1 AND watched = 1";

/// The database: one writer thread, a pool of read connections, and what both share.
pub(crate) struct Store {
    shared: Arc<Shared>,
    writer: writer::Writer,
    readers: readers::Readers,
}

/// What the writer's jobs and the readers share.
pub(crate) struct Shared {
    /// The database file, for online backups from a connection of their own.
    path: std::path::PathBuf,
    /// Each chain's policy, by chain name: what the store judges invoices by.
    policies: HashMap<String, Policy>,
    events_tx: broadcast::Sender<i64>,
    /// The last `seq` subscribers were woken for.
    woken: AtomicI64,
    /// Webhooks: where events are queued for delivery; `None` when they are off.
    outbox: Option<Outbox>,
    /// Woken when deliveries may have been queued.
    pub(crate) outbox_ready: tokio::sync::Notify,
    /// The next derivation index per chain and key, once read.
    next_index: std::sync::Mutex<HashMap<(String, String), u32>>,
}

/// What the metrics show of the database.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    /// Invoices per chain and status (statuses with none are absent).
    pub(crate) invoices: Vec<(String, String, u64)>,
    /// Payments ever recorded per chain, dropped ones included.
    pub(crate) payments: Vec<(String, u64)>,
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// One option of an invoice to create or of `invoice.add_option`, checked by the API.
#[derive(Debug, Clone)]
pub(crate) struct NewOption {
    pub(crate) chain: String,
    pub(crate) asset: String,
    pub(crate) decimals: u8,
    /// `None` in `open` mode.
    pub(crate) amount_due: Option<U256>,
    pub(crate) tolerance: U256,
    pub(crate) confirmations: Option<u32>,
}

/// What an invoice is created from, checked by the API.
#[derive(Debug, Clone)]
pub(crate) struct NewInvoice {
    /// None when only a price is given: the currency is chosen later.
    pub(crate) options: Vec<NewOption>,
    pub(crate) price: Option<Price>,
    pub(crate) mode: Mode,
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

/// The invoice object, and the addresses to watch that the call derived (chain,
/// script, invoice id): none for a retry.
pub(crate) type Created = (Value, Vec<(String, Vec<u8>, String)>);

/// An invoice's address on one chain, as a rescan needs it.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) chain: String,
    pub(crate) script: Vec<u8>,
    /// The chain's height when the address was derived.
    pub(crate) created_height: Option<u64>,
}

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
    pub(crate) fn open(
        path: &Path,
        policies: HashMap<String, Policy>,
        outbox: Option<Outbox>,
    ) -> anyhow::Result<Store> {
        let conn = schema::open(path)?;
        readers::keep_statements(&conn)?;
        // The writer's page cache: the indexes' hot pages stay in memory at a million
        // invoices (SQLite's default is 2 MiB).
        conn.pragma_update(None, "cache_size", -32_768)?;
        // A group commit runs each of its writes in a savepoint, whose journal copies
        // every page the write changes; past 64 KiB SQLite spilled that journal to a
        // temporary file, and a quarter of the writer's time went to writing it.
        // In memory it holds at most the pages of one transaction.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        let (events_tx, _) = broadcast::channel(1024);
        let woken = AtomicI64::new(last_seq_of(&conn)?);
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            policies,
            events_tx,
            woken,
            outbox,
            outbox_ready: tokio::sync::Notify::new(),
            next_index: Default::default(),
        });
        Ok(Store {
            writer: writer::Writer::start(conn, shared.clone())?,
            readers: readers::Readers::new(path),
            shared,
        })
    }

    /// Runs `f` on a blocking thread, so that no database call holds an async worker
    /// (a write waits there for its group commit, a read for SQLite).
    pub(crate) async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Store) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let store = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| StoreError::Internal(anyhow::anyhow!("a database call failed: {e}")))?
    }

    /// A read connection: it sees the last commit and never waits for the writer.
    fn read(&self) -> StoreResult<readers::Reader<'_>> {
        Ok(self.readers.get()?)
    }

    /// Runs `f` in the writer's next group commit; returns once that is durable.
    fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared, &Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.writer.write(f)
    }

    /// Queues `f` for the writer's next group commit, to be awaited (see [`Write`]).
    fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared, &Connection) -> StoreResult<T> + Send + 'static,
    ) -> Write<T> {
        self.writer.submit(f)
    }

    // ---- chain cursor -------------------------------------------------------------

    /// The chain's cursor, if its watcher ever started.
    pub(crate) fn cursor(&self, chain: &str) -> StoreResult<Option<Cursor>> {
        Ok(cursor_of(&*self.read()?, chain)?)
    }

    /// Sets the first cursor of a chain (first run only), with the hashes of the blocks
    /// `below` it that a reorganisation may replace.
    pub(crate) fn init_cursor(
        &self,
        chain: &str,
        height: u64,
        hash: &str,
        below: &[(u64, String)],
    ) -> StoreResult<()> {
        let (chain, hash, below) = (chain.to_string(), hash.to_string(), below.to_vec());
        self.write(move |_, conn| {
            conn.prepare_cached("INSERT INTO cursors (chain, height, hash, synced_at, updated_at) VALUES (?1, ?2, ?3, NULL, ?4)
                 ON CONFLICT(chain) DO NOTHING")?.execute(params![chain, height, hash, now()],
            )?;
            let mut st = conn.prepare_cached("INSERT OR REPLACE INTO blocks (chain, height, hash) VALUES (?1, ?2, ?3)")?;
            st.execute(params![chain, height, hash])?;
            for (h, b) in &below {
                st.execute(params![chain, h, b])?;
            }
            Ok(())
        })
    }

    /// The hashes the store holds for heights `from..=to` (only recent blocks are kept).
    pub(crate) fn block_hashes(
        &self,
        chain: &str,
        from: u64,
        to: u64,
    ) -> StoreResult<std::collections::BTreeMap<u64, String>> {
        let conn = self.read()?;
        let mut st = conn.prepare_cached(
            "SELECT height, hash FROM blocks WHERE chain = ?1 AND height BETWEEN ?2 AND ?3",
        )?;
        let rows = st.query_map(params![chain, from, to], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Transaction ids of the chain's `PENDING` payments and deposits.
    pub(crate) fn pending_txids(&self, chain: &str) -> StoreResult<BTreeSet<String>> {
        let conn = self.read()?;
        let mut st = conn.prepare_cached(PENDING_TXIDS)?;
        let rows = st.query_map([chain], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The chain's watch set as the database holds it (`lifecycle.md`, "How long an
    /// address is watched"), read once at start; commits change it from then on.
    pub(crate) fn watched(&self, chain: &str) -> StoreResult<Vec<(Vec<u8>, Owner)>> {
        let conn = self.read()?;
        let mut st = conn.prepare(WATCHED)?;
        let rows = st.query_map(params![chain], |r| {
            let id = r.get(1)?;
            let owner = match r.get::<_, bool>(2)? {
                false => Owner::Invoice(id),
                true => Owner::Deposit(id),
            };
            Ok((r.get(0)?, owner))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Copies the database to `to` while the daemon runs (SQLite's online backup, all
    /// pages in one step: one consistent snapshot, writers not blocked under WAL).
    /// Written next to `to` first and renamed, so `to` is never a partial copy.
    pub(crate) fn backup(&self, to: &Path) -> anyhow::Result<u64> {
        let src = Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        src.busy_timeout(std::time::Duration::from_secs(5))?;
        let name = to
            .file_name()
            .ok_or_else(|| anyhow::anyhow!("path: names no file"))?
            .to_string_lossy();
        let partial = to.with_file_name(format!(".{name}.partial"));
        let _ = std::fs::remove_file(&partial);
        {
            let mut dst = Connection::open(&partial)?;
            let backup = rusqlite::backup::Backup::new(&src, &mut dst)?;
            loop {
                match backup.step(-1)? {
                    rusqlite::backup::StepResult::Done => break,
                    // Another connection holds a lock for a moment: try again.
                    _ => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        }
        std::fs::File::open(&partial)?.sync_all()?;
        std::fs::rename(&partial, to)?;
        if let Some(dir) = to.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(std::fs::metadata(to)?.len())
    }

    /// `events.list`, optionally of one invoice or deposit address.
    pub(crate) fn events_after(
        &self,
        after_seq: i64,
        limit: u32,
        of: Option<&Owner>,
    ) -> StoreResult<Vec<Value>> {
        Ok(events::list(&*self.read()?, after_seq, limit, of)?)
    }

    /// What the metrics show of the database, as the triggers keep it.
    pub(crate) fn counts(&self) -> StoreResult<Counts> {
        let conn = self.read()?;
        // Kept by triggers: reading them costs the same at a million invoices.
        let invoices = conn
            .prepare_cached("SELECT chain, status, n FROM invoice_counts")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let payments = conn
            .prepare_cached("SELECT chain, n FROM payment_counts")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Counts { invoices, payments })
    }

    /// The last event's `seq` (0 when none).
    pub(crate) fn last_seq(&self) -> StoreResult<i64> {
        Ok(last_seq_of(&*self.read()?)?)
    }
}

impl Deref for Store {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl Shared {
    /// Wakes up on every commit that wrote events, with the last `seq`.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<i64> {
        self.events_tx.subscribe()
    }

    fn policy(&self, chain: &str) -> anyhow::Result<&Policy> {
        self.policies
            .get(chain)
            .ok_or_else(|| anyhow::anyhow!("chain {chain} is not configured"))
    }

    fn invoice_view(&self, conn: &Connection, id: &str) -> StoreResult<Value> {
        let inv = load_invoice(conn, id)?.ok_or(StoreError::NotFound)?;
        let chains = self.chains_of(conn, &inv)?;
        let pays = load_payments(conn, id)?;
        let out = lifecycle::evaluate(Facts {
            invoice: &inv,
            payments: &pays,
            chains: &chains,
            now: now(),
        });
        Ok(invoice_json(&inv, &pays, &out, &chains))
    }

    /// The object of an invoice just created (no payments yet), without reading it back.
    fn new_invoice_view(&self, conn: &Connection, inv: &Invoice, now: i64) -> StoreResult<Value> {
        let chains = self.chains_of(conn, inv)?;
        let out = lifecycle::evaluate(Facts {
            invoice: inv,
            payments: &[],
            chains: &chains,
            now,
        });
        Ok(invoice_json(inv, &[], &out, &chains))
    }

    /// What the lifecycle reads of every chain the invoice has an address on.
    fn chains_of<'a>(
        &'a self,
        conn: &Connection,
        inv: &Invoice,
    ) -> StoreResult<Vec<ChainFacts<'a>>> {
        inv.addresses
            .iter()
            .map(|a| {
                let (name, _) = self
                    .policies
                    .get_key_value(&a.chain)
                    .ok_or_else(|| anyhow::anyhow!("chain {} is not configured", a.chain))?;
                self.chain_facts(conn, name)
            })
            .collect()
    }

    /// What the lifecycle reads of the invoice's chain, as last committed.
    fn chain_facts<'a>(&'a self, conn: &Connection, chain: &'a str) -> StoreResult<ChainFacts<'a>> {
        let cursor = cursor_of(conn, chain)?;
        Ok(ChainFacts {
            name: chain,
            tip: cursor.as_ref().map(|c| c.height),
            synced_at: cursor.as_ref().and_then(|c| c.synced_at),
            finalized: cursor.and_then(|c| c.finalized),
            policy: self.policy(chain)?,
        })
    }

    /// Wakes subscribers after a commit, only if it wrote events: most watcher
    /// polls write none.
    fn wake(&self, conn: &Connection) {
        if let Ok(seq) = last_seq_of(conn)
            && self.woken.fetch_max(seq, Ordering::AcqRel) < seq
        {
            // No receiver is fine: nobody is subscribed.
            let _ = self.events_tx.send(seq);
            self.outbox_ready.notify_one();
        }
    }
}

/// One page of a list read with one row more than `limit`: the first `limit` rows'
/// values, and the key of the last of them when there is more.
fn page<K: Copy, T>(rows: Vec<(K, T)>, limit: u32) -> (Vec<T>, Option<K>) {
    let more = rows.len() > limit as usize;
    let mut rows = rows;
    rows.truncate(limit as usize);
    let next = more.then(|| rows.last().map(|(k, _)| *k)).flatten();
    (rows.into_iter().map(|(_, v)| v).collect(), next)
}

fn last_seq_of(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM events")?
        .query_row([], |r| r.get(0))
}

fn cursor_of(conn: &Connection, chain: &str) -> rusqlite::Result<Option<Cursor>> {
    conn.prepare_cached("SELECT height, hash, synced_at, finalized FROM cursors WHERE chain = ?1")?
        .query_row([chain], |r| {
            Ok(Cursor {
                height: r.get(0)?,
                hash: r.get(1)?,
                synced_at: r.get(2)?,
                finalized: r.get(3)?,
            })
        })
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
    let inv = conn
        .prepare_cached(
            "SELECT id, mode, price_amount, price_currency, status, reason, decision, order_id,
                client_id, email, title, description, callback_url, metadata, created_at,
                expires_at, updated_at, completed_at, closed_at
             FROM invoices WHERE id = ?1",
        )?
        .query_row([id], |r| {
            let price: (Option<String>, Option<String>) = (r.get(2)?, r.get(3)?);
            let reason: Option<String> = r.get(5)?;
            let decision: Option<String> = r.get(6)?;
            let metadata: String = r.get(13)?;
            Ok(Invoice {
                id: r.get(0)?,
                options: Vec::new(),
                addresses: Vec::new(),
                price: match price {
                    (Some(amount), Some(currency)) => Some(Price { amount, currency }),
                    _ => None,
                },
                mode: parsed(r, 1, Mode::parse)?,
                status: parsed(r, 4, Status::parse)?,
                reason: reason.as_deref().and_then(Reason::parse),
                decision: decision.as_deref().and_then(Decision::parse),
                order_id: r.get(7)?,
                client_id: r.get(8)?,
                email: r.get(9)?,
                title: r.get(10)?,
                description: r.get(11)?,
                callback_url: r.get(12)?,
                metadata: serde_json::from_str(&metadata).unwrap_or(Value::Null),
                created_at: r.get(14)?,
                expires_at: r.get(15)?,
                updated_at: r.get(16)?,
                completed_at: r.get(17)?,
                closed_at: r.get(18)?,
            })
        })
        .optional()?;
    let Some(mut inv) = inv else {
        return Ok(None);
    };
    inv.options = conn
        .prepare_cached(OPTIONS_OF)?
        .query_map([id], |r| {
            let due: Option<String> = r.get(3)?;
            Ok(PayOption {
                chain: r.get(0)?,
                asset: r.get(1)?,
                decimals: r.get(2)?,
                amount_due: match due {
                    Some(_) => Some(units(r, 3)?),
                    None => None,
                },
                tolerance: units(r, 4)?,
                confirmations: r.get(5)?,
                added_at: r.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    inv.addresses = conn
        .prepare_cached(ADDRESSES_OF)?
        .query_map([id], |r| {
            Ok(InvoiceAddress {
                chain: r.get(0)?,
                address: r.get(1)?,
                derivation_index: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(inv))
}

/// An invoice's options, in the order they were added (a new quote keeps its place).
const OPTIONS_OF: &str =
    "SELECT chain, asset, decimals, amount_due, tolerance, confirmations, added_at
     FROM invoice_options WHERE invoice_id = ?1 ORDER BY rowid";

/// An invoice's addresses, in the order they were derived.
const ADDRESSES_OF: &str = "SELECT chain, address, derivation_index
     FROM invoice_addresses WHERE invoice_id = ?1 ORDER BY rowid";

/// An invoice's payments, in the order they were first seen and detected.
const PAYMENTS_OF: &str = "SELECT txid, idx, amount, state, block_height, block_hash, seen_at, rbf,
         timed_out, confirmed_notified, detected, chain, asset
     FROM payments WHERE invoice_id = ?1 ORDER BY seen_at, detected";

fn load_payments(conn: &Connection, invoice_id: &str) -> rusqlite::Result<Vec<Payment>> {
    let mut st = conn.prepare_cached(PAYMENTS_OF)?;
    let rows = st.query_map([invoice_id], |r| {
        Ok(Payment {
            chain: r.get(11)?,
            asset: r.get(12)?,
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
            detected: r.get(10)?,
        })
    })?;
    rows.collect()
}
