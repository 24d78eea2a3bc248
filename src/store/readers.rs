//! Read connections: as many as there are readers at once, each read-only, kept for
//! the next. Under WAL a reader sees the last commit and never waits for the writer.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags};

/// How many idle connections are kept; more are opened when that many read at once.
const KEPT: usize = 16;

/// Statements each connection keeps prepared.
pub(super) const STATEMENTS_CACHED: usize = 64;

/// The pool of read connections.
pub(super) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// A read connection, back in the pool when dropped.
pub(super) struct Reader<'a> {
    conn: Option<Connection>,
    pool: &'a Readers,
}

impl Readers {
    /// A pool over the database at `path` (which exists and is migrated).
    pub(super) fn new(path: &Path) -> Readers {
        Readers {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// An idle connection, or a new one.
    pub(super) fn get(&self) -> rusqlite::Result<Reader<'_>> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match idle {
            Some(c) => c,
            None => open(&self.path)?,
        };
        Ok(Reader {
            conn: Some(conn),
            pool: self,
        })
    }
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    keep_statements(&conn)?;
    Ok(conn)
}

/// Keeps statements prepared, and keeps them from being prepared again on each use.
///
/// SQLite marks a statement for a new plan whenever a parameter it compares with a
/// column is bound again (a value of 0 or 1 might choose another plan), and the
/// statement cache clears the bindings of every statement it takes back: without
/// the query planner stability guarantee, most cached statements (every one with
/// an `ORDER BY` or a `LIMIT ?`) were parsed and planned again on every call, half
/// of the time of an `invoice.get`. Our plans are fixed and checked by
/// `EXPLAIN QUERY PLAN` in the tests.
pub(super) fn keep_statements(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_prepared_statement_cache_capacity(STATEMENTS_CACHED);
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

impl Reader<'_> {
    /// Runs `f` in one read transaction: what it reads is one commit's state (an
    /// invoice, its chain's cursor and its payments agree), and the snapshot is taken
    /// once rather than once per statement.
    pub(super) fn snapshot<T, E: From<rusqlite::Error>>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        self.prepare_cached("BEGIN")?.execute([])?;
        let out = f(self);
        self.prepare_cached("COMMIT")?.execute([])?;
        out
    }
}

impl Deref for Reader<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
            .as_ref()
            .expect("a reader holds its connection until dropped")
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        // A connection left inside a read transaction (a snapshot whose end failed)
        // would show its old commit for good: it is closed, not kept.
        if let Some(conn) = self.conn.take().filter(|c| c.is_autocommit()) {
            let mut idle = self.pool.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < KEPT {
                idle.push(conn);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Store;

    /// A reader given back inside a read transaction is not handed out again: it
    /// would keep showing the commit its transaction began on.
    #[test]
    fn a_reader_left_in_a_transaction_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), Default::default(), None).unwrap();
        let stuck = store.readers.get().unwrap();
        stuck
            .execute_batch("BEGIN; SELECT 1 FROM cursors;")
            .unwrap();
        drop(stuck);
        assert!(store.readers.get().unwrap().is_autocommit());
    }
}
