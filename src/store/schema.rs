//! The schema: versioned migrations, run by one function; `PRAGMA user_version`
//! counts those already run.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

/// The migrations, in order: `PRAGMA user_version` says how many have run.
const MIGRATIONS: &[&str] = &[
    r#"
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
"#,
    // The node's `finalized` block, for chains whose finality follows it.
    "ALTER TABLE cursors ADD COLUMN finalized INTEGER;",
    // The webhook outbox: a delivery per event and URL, and every attempt made.
    r#"
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq INTEGER NOT NULL REFERENCES events(seq),
    invoice_id TEXT NOT NULL,
    url TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    first_attempt_at INTEGER,
    next_attempt_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER,
    UNIQUE (event_seq, url)
) STRICT;
CREATE INDEX deliveries_lane ON deliveries(status, url, invoice_id, event_seq);
CREATE INDEX deliveries_due ON deliveries(status, next_attempt_at);
CREATE INDEX deliveries_order ON deliveries(status, event_seq);
CREATE TABLE delivery_attempts (
    delivery_id INTEGER NOT NULL REFERENCES deliveries(id),
    at INTEGER NOT NULL,
    http_status INTEGER,
    error TEXT,
    body TEXT
) STRICT;
CREATE INDEX delivery_attempts_of ON delivery_attempts(delivery_id);
"#,
    // The order payments were detected in, which breaks ties of `seen_at` ("first" in
    // open mode). Those already stored were inserted in the order they were detected.
    r#"
ALTER TABLE payments ADD COLUMN detected INTEGER NOT NULL DEFAULT 0;
UPDATE payments SET detected = rowid;
CREATE INDEX payments_detected ON payments(detected);
"#,
    // Per-poll work that does not grow with the invoices kept. `wake_at`: when the clock
    // alone may next move the invoice (expiry, the confirmation window, the end of the
    // watch window); `watched`: its address is in the watch set. Invoices of the last
    // release are all due once, and the first poll sets both from the lifecycle. The
    // metrics' counts are kept by triggers instead of counted every few seconds.
    r#"
ALTER TABLE invoices ADD COLUMN wake_at INTEGER;
ALTER TABLE invoices ADD COLUMN watched INTEGER NOT NULL DEFAULT 1;
UPDATE invoices SET wake_at = 0;
CREATE INDEX invoices_wake ON invoices(chain, wake_at) WHERE wake_at IS NOT NULL;
CREATE INDEX invoices_watched ON invoices(chain) WHERE watched = 1;
CREATE INDEX invoices_unfinal ON invoices(chain) WHERE status = 'COMPLETED' AND decision IS NULL;
CREATE INDEX payments_pending ON payments(chain, txid) WHERE state = 'PENDING';
CREATE INDEX payments_confirming ON payments(chain) WHERE state = 'CONFIRMED' AND confirmed_notified = 0;
CREATE TABLE invoice_counts (
    chain TEXT NOT NULL,
    status TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (chain, status)
) STRICT;
INSERT INTO invoice_counts SELECT chain, status, COUNT(*) FROM invoices GROUP BY chain, status;
CREATE TRIGGER invoices_counted AFTER INSERT ON invoices BEGIN
    INSERT INTO invoice_counts VALUES (NEW.chain, NEW.status, 1)
        ON CONFLICT (chain, status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER invoices_recounted AFTER UPDATE OF status ON invoices
WHEN OLD.status IS NOT NEW.status BEGIN
    UPDATE invoice_counts SET n = n - 1 WHERE chain = OLD.chain AND status = OLD.status;
    INSERT INTO invoice_counts VALUES (NEW.chain, NEW.status, 1)
        ON CONFLICT (chain, status) DO UPDATE SET n = n + 1;
END;
CREATE TABLE payment_counts (chain TEXT PRIMARY KEY, n INTEGER NOT NULL) STRICT;
INSERT INTO payment_counts SELECT chain, COUNT(*) FROM payments GROUP BY chain;
CREATE TRIGGER payments_counted AFTER INSERT ON payments BEGIN
    INSERT INTO payment_counts VALUES (NEW.chain, 1)
        ON CONFLICT (chain) DO UPDATE SET n = n + 1;
END;
"#,
    // Each payment records the asset it paid, and an address is watched by itself,
    // not by (token contract, address) on EVM chains: a transfer of an asset the
    // invoice does not take is seen and recorded, never counted. Payments of the last
    // release were all in their invoice's asset; an EVM token invoice's watch key (the
    // contract's 20 bytes, then the address's) becomes the address's.
    r#"
ALTER TABLE payments ADD COLUMN asset TEXT NOT NULL DEFAULT '';
UPDATE payments SET asset = (SELECT asset FROM invoices WHERE invoices.id = payments.invoice_id);
UPDATE invoices SET script = substr(script, 21) WHERE address LIKE '0x%' AND length(script) = 40;
"#,
    // Payment options: an invoice is paid in one of several (chain, asset) options, to
    // one address per chain, or has only a price until the first option is added.
    // Options and addresses get tables of their own; the invoice keeps what is not
    // per option, and its price. Each invoice of the last release becomes one option
    // and one address, its rowid (the list's cursor) kept. The clock's deadline and
    // the watch flag move to the address (the chain whose poll acts on them); an
    // invoice with no address keeps its own deadline. The metrics count an invoice
    // under each chain it has an address on.
    r#"
CREATE TABLE invoices_v7 (
    id TEXT PRIMARY KEY,
    mode TEXT NOT NULL,
    price_amount TEXT,
    price_currency TEXT,
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
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    updated_at INTEGER NOT NULL,
    completed_at INTEGER,
    closed_at INTEGER,
    wake_at INTEGER
) STRICT;
INSERT INTO invoices_v7 (rowid, id, mode, status, reason, decision, order_id, client_id, email,
        title, description, callback_url, metadata, idempotency_key, request, created_at,
        expires_at, updated_at, completed_at, closed_at)
    SELECT rowid, id, mode, status, reason, decision, order_id, client_id, email, title,
        description, callback_url, metadata, idempotency_key, request, created_at, expires_at,
        updated_at, completed_at, closed_at
    FROM invoices;
CREATE TABLE invoice_options (
    invoice_id TEXT NOT NULL REFERENCES invoices(id),
    chain TEXT NOT NULL,
    asset TEXT NOT NULL,
    decimals INTEGER NOT NULL,
    amount_due TEXT,
    tolerance TEXT NOT NULL,
    confirmations INTEGER,
    added_at INTEGER NOT NULL,
    PRIMARY KEY (invoice_id, chain, asset)
) STRICT;
INSERT INTO invoice_options
    SELECT id, chain, asset, decimals, amount_due, tolerance, confirmations, created_at
    FROM invoices ORDER BY rowid;
CREATE TABLE invoice_addresses (
    invoice_id TEXT NOT NULL REFERENCES invoices(id),
    chain TEXT NOT NULL,
    address TEXT NOT NULL UNIQUE,
    script BLOB NOT NULL,
    derivation_index INTEGER NOT NULL,
    created_height INTEGER,
    watched INTEGER NOT NULL DEFAULT 1,
    wake_at INTEGER,
    PRIMARY KEY (invoice_id, chain)
) STRICT;
INSERT INTO invoice_addresses
    SELECT id, chain, address, script, derivation_index, created_height, watched, wake_at
    FROM invoices ORDER BY rowid;
DROP TABLE invoices;
ALTER TABLE invoices_v7 RENAME TO invoices;
CREATE INDEX invoices_order ON invoices(order_id);
CREATE INDEX invoices_status ON invoices(status);
CREATE INDEX invoices_wake ON invoices(wake_at) WHERE wake_at IS NOT NULL;
CREATE INDEX invoices_unfinal ON invoices(status) WHERE status = 'COMPLETED' AND decision IS NULL;
CREATE INDEX invoice_options_chain ON invoice_options(chain);
CREATE INDEX invoice_addresses_wake ON invoice_addresses(chain, wake_at) WHERE wake_at IS NOT NULL;
CREATE INDEX invoice_addresses_watched ON invoice_addresses(chain) WHERE watched = 1;
DELETE FROM invoice_counts;
INSERT INTO invoice_counts
    SELECT a.chain, i.status, COUNT(*) FROM invoice_addresses a JOIN invoices i ON i.id = a.invoice_id
    GROUP BY a.chain, i.status;
CREATE TRIGGER invoices_recounted AFTER UPDATE OF status ON invoices
WHEN OLD.status IS NOT NEW.status BEGIN
    UPDATE invoice_counts SET n = n - 1 WHERE status = OLD.status
        AND chain IN (SELECT chain FROM invoice_addresses WHERE invoice_id = NEW.id);
    INSERT INTO invoice_counts SELECT chain, NEW.status, 1 FROM invoice_addresses
        WHERE invoice_id = NEW.id
        ON CONFLICT (chain, status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER invoice_addresses_counted AFTER INSERT ON invoice_addresses BEGIN
    INSERT INTO invoice_counts SELECT NEW.chain, status, 1 FROM invoices WHERE id = NEW.invoice_id
        ON CONFLICT (chain, status) DO UPDATE SET n = n + 1;
END;
"#,
    // Deposit addresses: one reusable address per customer (at most one open per chain
    // and client), watched until closed and its late window ends, and every transfer to
    // one a deposit, credited once it has its own required confirmations (`credited`)
    // and settled for good once final (`settled`). Events belong to an invoice or to a
    // deposit address, so `events.invoice_id` may be null (the table is rebuilt, every
    // `seq` kept and the sequence going on from where it was); a delivery's lane is its
    // invoice or its deposit address.
    r#"
CREATE TABLE deposit_addresses (
    id TEXT PRIMARY KEY,
    chain TEXT NOT NULL,
    address TEXT NOT NULL UNIQUE,
    script BLOB NOT NULL,
    derivation_index INTEGER NOT NULL,
    client_id TEXT NOT NULL,
    label TEXT,
    metadata TEXT NOT NULL,
    callback_url TEXT,
    idempotency_key TEXT UNIQUE,
    request TEXT,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    closed_at INTEGER,
    created_height INTEGER,
    watched INTEGER NOT NULL DEFAULT 1,
    wake_at INTEGER
) STRICT;
CREATE UNIQUE INDEX deposit_addresses_open ON deposit_addresses(chain, client_id)
    WHERE status = 'OPEN';
CREATE INDEX deposit_addresses_client ON deposit_addresses(client_id);
CREATE INDEX deposit_addresses_watched ON deposit_addresses(chain) WHERE watched = 1;
CREATE INDEX deposit_addresses_wake ON deposit_addresses(chain, wake_at)
    WHERE wake_at IS NOT NULL;
CREATE TABLE deposits (
    chain TEXT NOT NULL,
    txid TEXT NOT NULL,
    idx INTEGER NOT NULL,
    deposit_address_id TEXT NOT NULL REFERENCES deposit_addresses(id),
    asset TEXT NOT NULL,
    amount TEXT NOT NULL,
    state TEXT NOT NULL,
    block_height INTEGER,
    block_hash TEXT,
    seen_at INTEGER NOT NULL,
    rbf INTEGER NOT NULL,
    required INTEGER NOT NULL,
    credited INTEGER NOT NULL DEFAULT 0,
    settled INTEGER NOT NULL DEFAULT 0,
    detected INTEGER NOT NULL,
    PRIMARY KEY (chain, txid, idx)
) STRICT;
CREATE INDEX deposits_of ON deposits(deposit_address_id, detected);
CREATE INDEX deposits_detected ON deposits(detected);
CREATE INDEX deposits_pending ON deposits(chain, txid) WHERE state = 'PENDING';
CREATE INDEX deposits_height ON deposits(chain, block_height) WHERE state = 'CONFIRMED';
CREATE INDEX deposits_unsettled ON deposits(chain) WHERE state = 'CONFIRMED' AND settled = 0;
CREATE TABLE events_v8 (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    invoice_id TEXT,
    deposit_address_id TEXT,
    created_at INTEGER NOT NULL,
    data TEXT NOT NULL
) STRICT;
INSERT INTO events_v8 (seq, id, type, invoice_id, created_at, data)
    SELECT seq, id, type, invoice_id, created_at, data FROM events ORDER BY seq;
UPDATE sqlite_sequence SET seq = (SELECT seq FROM sqlite_sequence WHERE name = 'events')
    WHERE name = 'events_v8' AND EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'events');
DROP TABLE events;
ALTER TABLE events_v8 RENAME TO events;
CREATE INDEX events_invoice ON events(invoice_id, seq);
CREATE INDEX events_deposit_address ON events(deposit_address_id, seq)
    WHERE deposit_address_id IS NOT NULL;
ALTER TABLE deliveries RENAME COLUMN invoice_id TO owner_id;
"#,
    // settled's mark in the file's header (APPLICATION_ID), so that another program's
    // database at its place is told from its own.
    "PRAGMA application_id = 1398033476;",
];

/// `PRAGMA application_id` of a settled database: "STLD".
const APPLICATION_ID: i32 = 0x5354_4c44;

/// Opens the database at `path` (creating it if there is none) to write, and migrates
/// it. A file it refuses is left as it was found.
pub(super) fn open(path: &Path) -> anyhow::Result<Connection> {
    let beside = |suffix: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    let (wal, shm) = (beside("-wal"), beside("-shm"));
    let made = (!wal.exists(), !shm.exists());
    let conn = open_checked(path);
    // SQLite makes its WAL and WAL-index beside the file as it opens it: when the file
    // is refused, the ones it made are taken away again (a WAL only while empty: a
    // commit is never thrown away).
    if conn.is_err() {
        if made.0 && std::fs::metadata(&wal).is_ok_and(|m| m.len() == 0) {
            let _ = std::fs::remove_file(&wal);
        }
        if made.1 && !wal.exists() {
            let _ = std::fs::remove_file(&shm);
        }
    }
    conn
}

fn open_checked(path: &Path) -> anyhow::Result<Connection> {
    check_file(path)?;
    let opened = |what: &str| format!("database {}: {what}", path.display());
    let mut conn = Connection::open(path).with_context(|| opened("cannot open it"))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .with_context(|| opened("cannot read it"))?;
    // FULL: a commit is on disk before the API answers or a webhook is queued.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    migrate(&mut conn).with_context(|| opened("cannot migrate it"))?;
    Ok(conn)
}

/// Refuses, before anything writes to it, a file at the database's place that settled
/// must not or cannot use: one it cannot write, one that is not SQLite, another
/// program's database. Reads only.
fn check_file(path: &Path) -> anyhow::Result<()> {
    let shown = path.display();
    // Opened to write, which changes nothing and tells a read-only file or filesystem
    // even to root, whom permissions do not stop.
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
            ) =>
        {
            anyhow::bail!(
                "database {shown} is read-only ({e}): settled writes every change there; \
                 make it writable and start again"
            )
        }
        r => r.with_context(|| format!("database {shown}"))?,
    };
    let mut header = [0u8; 100];
    match file.read_exact(&mut header) {
        // An empty file is a new database to SQLite too.
        Err(_) if file.metadata()?.len() == 0 => return Ok(()),
        Err(_) => header[0] = 0,
        Ok(()) => {}
    }
    if &header[..16] != b"SQLite format 3\0" {
        anyhow::bail!(
            "database {shown} is not a SQLite database (it does not begin with SQLite's \
             header): refusing to touch it; move it away or set data_dir elsewhere"
        );
    }
    // The mark is read through SQLite: the header's copy may be behind the WAL.
    let read = || -> rusqlite::Result<(i32, i32, Vec<String>)> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let pragma = |name: &str| conn.pragma_query_value(None, name, |r| r.get::<_, i32>(0));
        let (application_id, user_version) = (pragma("application_id")?, pragma("user_version")?);
        let mut st = conn.prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )?;
        let tables = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        Ok((application_id, user_version, tables))
    };
    let (application_id, user_version, tables) =
        read().with_context(|| format!("database {shown}"))?;
    match application_id {
        APPLICATION_ID => return Ok(()),
        0 => {}
        other => anyhow::bail!(
            "database {shown} is not a settled database (another program's: its \
             application_id is {other:#x}): refusing to touch it"
        ),
    }
    // Unmarked: new, or made by a release before the mark, or another program's.
    let ours = ["invoices", "cursors"]
        .iter()
        .all(|t| tables.iter().any(|n| n == t));
    if tables.is_empty() && user_version == 0 || ours && user_version > 0 {
        return Ok(());
    }
    anyhow::bail!(
        "database {shown} is not a settled database (it holds the tables {} and no \
         settled schema): refusing to touch it; move it away or set data_dir elsewhere",
        tables.join(", ")
    )
}

/// Runs the migrations not yet run, each in its own transaction.
pub(super) fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let done: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if done > MIGRATIONS.len() {
        anyhow::bail!(
            "the database is at schema version {done}, newer than this settled knows ({}): \
             refusing to run an older settled on it",
            MIGRATIONS.len()
        );
    }
    // A migration that rebuilds a table drops the one payments refer to; SQLite's way
    // is to turn foreign keys off around it and check them all before committing.
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        let broken: Option<String> = tx
            .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
            .optional()?;
        if let Some(table) = broken {
            anyhow::bail!(
                "migration {} left rows of {table} without their invoice",
                i + 1
            );
        }
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amount::U256;
    use crate::invoice::{Mode, Reason, Status};

    /// A database of a release before the mark in its header is opened and marked;
    /// another program's is refused and left as it was.
    #[test]
    fn a_file_is_told_settled_by_its_mark_or_its_tables() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.db");
        let conn = Connection::open(&old).unwrap();
        for (i, sql) in MIGRATIONS.iter().enumerate().take(8) {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", i + 1).unwrap();
        }
        drop(conn);
        let conn = open(&old).unwrap();
        let mark: i32 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mark, APPLICATION_ID);
        drop(conn);
        open(&old).unwrap();

        let other = dir.path().join("other.db");
        let conn = Connection::open(&other).unwrap();
        conn.execute_batch("PRAGMA user_version = 3; CREATE TABLE invoices (x);")
            .unwrap();
        drop(conn);
        let bytes = std::fs::read(&other).unwrap();
        let e = open(&other).unwrap_err().to_string();
        assert!(e.contains("not a settled database"), "{e}");
        assert_eq!(std::fs::read(&other).unwrap(), bytes);

        // Marked by another program, even with nothing in it yet.
        let marked = dir.path().join("marked.db");
        let conn = Connection::open(&marked).unwrap();
        conn.execute_batch("PRAGMA application_id = 42;").unwrap();
        drop(conn);
        let e = open(&marked).unwrap_err().to_string();
        assert!(e.contains("application_id is 0x2a"), "{e}");
    }

    /// A database of the last release (three migrations) with payments in it.
    fn last_release() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        for (i, sql) in MIGRATIONS.iter().enumerate().take(3) {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", i + 1).unwrap();
        }
        conn.execute_batch(
            "INSERT INTO invoices (id, chain, asset, decimals, mode, address, script,
                derivation_index, tolerance, status, metadata, created_at, updated_at)
             VALUES ('inv', 'regtest', 'BTC', 8, 'open', 'bcrt1q', x'00', 0, '0', 'COMPLETED', '{}', 1, 1);
             INSERT INTO payments (chain, txid, idx, invoice_id, amount, state, seen_at, rbf)
             VALUES ('regtest', 'ff', 0, 'inv', '12300000', 'CONFIRMED', 100, 0),
                    ('regtest', '00', 0, 'inv', '5000000', 'CONFIRMED', 100, 0);",
        )
        .unwrap();
        conn
    }

    #[test]
    fn payments_of_the_last_release_keep_the_order_they_were_detected_in() {
        let mut conn = last_release();
        migrate(&mut conn).unwrap();
        let order: Vec<(String, String, i64)> = conn
            .prepare("SELECT txid, amount, detected FROM payments ORDER BY seen_at, detected")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            order,
            [
                ("ff".into(), "12300000".into(), 1),
                ("00".into(), "5000000".into(), 2)
            ]
        );
        // Every invoice watched and due once: the first poll judges each again.
        let (wake, watched): (i64, bool) = conn
            .query_row(
                "SELECT wake_at, watched FROM invoice_addresses WHERE invoice_id = 'inv'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((wake, watched), (0, true));
        // The counts the metrics read start from what is there.
        let counts: (String, i64, i64) = conn
            .query_row(
                "SELECT status, n, (SELECT n FROM payment_counts WHERE chain = 'regtest')
                 FROM invoice_counts WHERE chain = 'regtest'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(counts, ("COMPLETED".into(), 1, 2));
        let version: usize = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len());
    }

    /// A database of the release before payments recorded their asset (five
    /// migrations): a Bitcoin invoice and an EVM token invoice, each paid.
    #[test]
    fn payments_get_their_invoices_asset_and_token_invoices_are_watched_by_address() {
        let mut conn = Connection::open_in_memory().unwrap();
        for (i, sql) in MIGRATIONS.iter().enumerate().take(5) {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", i + 1).unwrap();
        }
        let contract = "11".repeat(20);
        let address = "22".repeat(20);
        conn.execute_batch(&format!(
            "INSERT INTO invoices (id, chain, asset, decimals, mode, address, script,
                derivation_index, tolerance, status, metadata, created_at, updated_at)
             VALUES ('btc', 'regtest', 'BTC', 8, 'fixed', 'bcrt1q', x'0014{address}', 0, '0',
                     'COMPLETED', '{{}}', 1, 1),
                    ('usdt', 'anvil', 'USDT', 6, 'fixed', '0x{address}', x'{contract}{address}',
                     1, '0', 'PARTIAL', '{{}}', 1, 1);
             INSERT INTO payments (chain, txid, idx, invoice_id, amount, state, seen_at, rbf)
             VALUES ('regtest', 'aa', 0, 'btc', '100', 'CONFIRMED', 100, 0),
                    ('anvil', 'bb', 3, 'usdt', '5000000', 'CONFIRMED', 100, 0);"
        ))
        .unwrap();
        migrate(&mut conn).unwrap();
        let assets: Vec<(String, String)> = conn
            .prepare("SELECT invoice_id, asset FROM payments ORDER BY invoice_id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            assets,
            [("btc".into(), "BTC".into()), ("usdt".into(), "USDT".into())]
        );
        let script = |id: &str| -> Vec<u8> {
            conn.query_row(
                "SELECT script FROM invoice_addresses WHERE invoice_id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!(script("usdt"), [0x22u8; 20]);
        let mut btc = vec![0x00, 0x14];
        btc.extend([0x22u8; 20]);
        assert_eq!(script("btc"), btc);
    }

    /// A database of the release before payment options (six migrations): each
    /// invoice becomes one option and one address, with nothing lost, and keeps its
    /// place in the list.
    #[test]
    fn invoices_of_the_last_release_become_one_option_invoices() {
        let mut conn = Connection::open_in_memory().unwrap();
        for (i, sql) in MIGRATIONS.iter().enumerate().take(6) {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", i + 1).unwrap();
        }
        conn.execute_batch(
            "INSERT INTO cursors (chain, height, hash, updated_at) VALUES ('anvil', 9, 'h', 1);
             INSERT INTO invoices (rowid, id, chain, asset, decimals, mode, address, script,
                derivation_index, amount_due, tolerance, confirmations, status, reason,
                decision, order_id, client_id, email, title, description, callback_url,
                metadata, idempotency_key, request, created_height, created_at, expires_at,
                updated_at, completed_at, closed_at, wake_at, watched)
             VALUES (7, 'usdt', 'anvil', 'USDT', 6, 'fixed', '0xab', x'ab', 3, '25000000',
                '10', 12, 'EXPIRED', 'underpaid', NULL, 'o-1', 'c-1', 'a@b.c', 'Pro',
                'Plan', 'http://x/y', '{\"k\":1}', 'key-1', '{}', 5, 100, 200, 300, NULL,
                300, 604800, 1),
                (9, 'btc', 'regtest', 'BTC', 8, 'open', 'bcrt1q', x'0014', 0, NULL, '0', NULL,
                'PENDING', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '{}', NULL, NULL,
                NULL, 150, NULL, 150, NULL, NULL, NULL, 1);
             INSERT INTO payments (chain, txid, idx, invoice_id, amount, state, seen_at, rbf,
                asset, detected)
             VALUES ('anvil', 'aa', 2, 'usdt', '5000000', 'CONFIRMED', 150, 0, 'USDT', 1);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let inv = crate::store::load_invoice(&conn, "usdt").unwrap().unwrap();
        assert_eq!(
            inv.options,
            [crate::invoice::PayOption {
                chain: "anvil".into(),
                asset: "USDT".into(),
                decimals: 6,
                amount_due: Some(U256::from(25_000_000u64)),
                tolerance: U256::from(10u8),
                confirmations: Some(12),
                added_at: 100,
            }]
        );
        assert_eq!(
            inv.addresses,
            [crate::invoice::InvoiceAddress {
                chain: "anvil".into(),
                address: "0xab".into(),
                derivation_index: 3,
            }]
        );
        assert_eq!(
            (inv.status, inv.reason, inv.mode, inv.price),
            (Status::Expired, Some(Reason::Underpaid), Mode::Fixed, None)
        );
        assert_eq!(
            (
                inv.order_id.as_deref(),
                inv.client_id.as_deref(),
                inv.email.as_deref(),
                inv.title.as_deref(),
                inv.description.as_deref(),
                inv.callback_url.as_deref()
            ),
            (
                Some("o-1"),
                Some("c-1"),
                Some("a@b.c"),
                Some("Pro"),
                Some("Plan"),
                Some("http://x/y")
            )
        );
        assert_eq!(inv.metadata, serde_json::json!({"k": 1}));
        assert_eq!(
            (
                inv.created_at,
                inv.expires_at,
                inv.updated_at,
                inv.closed_at
            ),
            (100, Some(200), 300, Some(300))
        );
        let open = crate::store::load_invoice(&conn, "btc").unwrap().unwrap();
        assert_eq!((open.mode, open.options[0].amount_due), (Mode::Open, None));
        // Its payment, the list's order (rowid), its idempotency key, the address's
        // height, deadline and watch flag, and the counts.
        let pays = crate::store::load_payments(&conn, "usdt").unwrap();
        assert_eq!((pays.len(), pays[0].amount), (1, U256::from(5_000_000u64)));
        let kept: (i64, String, Option<i64>, i64, i64) = conn
            .query_row(
                "SELECT i.rowid, i.idempotency_key, a.created_height, a.wake_at, a.watched
                 FROM invoices i JOIN invoice_addresses a ON a.invoice_id = i.id
                 WHERE i.id = 'usdt'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        assert_eq!(kept, (7, "key-1".into(), Some(5), 604800, 1));
        let counts: Vec<(String, String, i64)> = conn
            .prepare("SELECT chain, status, n FROM invoice_counts ORDER BY chain")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            counts,
            [
                ("anvil".into(), "EXPIRED".into(), 1),
                ("regtest".into(), "PENDING".into(), 1)
            ]
        );
        // The counts follow a status change after the migration.
        conn.execute(
            "UPDATE invoices SET status = 'EXPIRED' WHERE id = 'btc'",
            [],
        )
        .unwrap();
        let n: i64 = conn
            .query_row(
                "SELECT n FROM invoice_counts WHERE chain = 'regtest' AND status = 'EXPIRED'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1);
        let fk: Option<String> = conn
            .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
            .optional()
            .unwrap();
        assert_eq!(fk, None);
    }

    /// A database of the release before deposit addresses (seven migrations), with
    /// events and their deliveries: every event keeps its `seq`, id and data, the next
    /// event takes the next `seq` (not one a deleted event had), and each delivery
    /// keeps its lane.
    #[test]
    fn events_and_deliveries_of_the_last_release_are_kept_as_they_were() {
        let mut conn = Connection::open_in_memory().unwrap();
        for (i, sql) in MIGRATIONS.iter().enumerate().take(7) {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", i + 1).unwrap();
        }
        conn.execute_batch(
            "INSERT INTO events (seq, id, type, invoice_id, created_at, data)
             VALUES (1, 'evt_a', 'invoice.created', 'inv', 10, '{\"n\":1}'),
                    (2, 'evt_b', 'payment.detected', 'inv', 11, '{\"n\":2}'),
                    (3, 'evt_c', 'payment.confirmed', 'inv', 12, '{\"n\":3}');
             DELETE FROM events WHERE seq = 3;
             INSERT INTO deliveries (event_seq, invoice_id, url, status, attempts,
                next_attempt_at, created_at)
             VALUES (2, 'inv', 'http://x/', 'pending', 1, 20, 11);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        type Row = (i64, String, String, Option<String>, Option<String>, String);
        let events: Vec<Row> = conn
            .prepare(
                "SELECT seq, id, type, invoice_id, deposit_address_id, data FROM events
                 ORDER BY seq",
            )
            .unwrap()
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            events,
            [
                (
                    1,
                    "evt_a".into(),
                    "invoice.created".into(),
                    Some("inv".into()),
                    None,
                    "{\"n\":1}".into()
                ),
                (
                    2,
                    "evt_b".into(),
                    "payment.detected".into(),
                    Some("inv".into()),
                    None,
                    "{\"n\":2}".into()
                ),
            ]
        );
        conn.execute(
            "INSERT INTO events (id, type, deposit_address_id, created_at, data)
             VALUES ('evt_d', 'deposit_address.created', 'dep', 13, '{}')",
            [],
        )
        .unwrap();
        assert_eq!(conn.last_insert_rowid(), 4);
        let lane: (String, i64) = conn
            .query_row("SELECT owner_id, event_seq FROM deliveries", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(lane, ("inv".into(), 2));
        let fk: Option<String> = conn
            .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
            .optional()
            .unwrap();
        assert_eq!(fk, None);
    }
}
