//! The one writer: a thread that owns the write connection and commits the jobs that
//! arrive together in one transaction (group commit: one fsync for many callers), each
//! in a savepoint of its own so that one refused job takes nothing of another with it.
//! A caller is answered only once the commit that holds its job is durable; an API
//! call awaits that answer ([`Write`]) rather than holding a thread until it comes.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::{Shared, StoreError, StoreResult};

/// The most jobs committed together: enough to share one fsync among a crowd, few
/// enough that the first of them is not kept waiting long.
const MAX_GROUP: usize = 512;

/// How many jobs may wait for the writer before a caller blocks.
const QUEUE: usize = 4096;

/// A write waiting for the writer: run once inside its savepoint, then answered with
/// what the commit did.
trait Pending: Send {
    /// Runs the write; `true` if it succeeded (and its savepoint is kept).
    fn run(&mut self, shared: &Shared, conn: &Connection) -> bool;
    /// Answers the caller: its result if the commit holding it is durable, else why not.
    fn answer(self: Box<Self>, commit: Result<(), Failed>);
}

/// Why a group's transaction kept nothing: SQLite's code, to tell the operator's
/// conditions (a full disk, a read-only file) from the rest.
#[derive(Debug, Clone)]
struct Failed {
    code: Option<rusqlite::ErrorCode>,
    msg: String,
}

impl From<rusqlite::Error> for Failed {
    fn from(e: rusqlite::Error) -> Self {
        Failed {
            code: e.sqlite_error_code(),
            msg: e.to_string(),
        }
    }
}

impl From<Failed> for StoreError {
    fn from(f: Failed) -> Self {
        StoreError::of_sqlite(f.code, f.msg.clone()).unwrap_or_else(|| {
            StoreError::Internal(anyhow::anyhow!("database commit failed: {}", f.msg))
        })
    }
}

/// Who waits for a job's answer: a thread blocked on it, or a task awaiting it.
enum Caller<T> {
    Thread(SyncSender<StoreResult<T>>),
    Task(oneshot::Sender<StoreResult<T>>),
}

struct Job<F, T> {
    write: Option<F>,
    result: Option<StoreResult<T>>,
    caller: Caller<T>,
}

impl<F, T> Pending for Job<F, T>
where
    F: FnOnce(&Shared, &Connection) -> StoreResult<T> + Send,
    T: Send,
{
    fn run(&mut self, shared: &Shared, conn: &Connection) -> bool {
        let Some(write) = self.write.take() else {
            return false;
        };
        let result = catch_unwind(AssertUnwindSafe(|| write(shared, conn))).unwrap_or_else(|_| {
            Err(anyhow::anyhow!("a database write panicked; nothing of it was kept").into())
        });
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, commit: Result<(), Failed>) {
        let result = match (commit, self.result) {
            (Ok(()), Some(r)) => r,
            // Its own refusal says more than the commit it brought down.
            (Err(_), Some(Err(e))) => Err(e),
            (Err(e), _) => Err(e.into()),
            (Ok(()), None) => Err(anyhow::anyhow!("the write was not run").into()),
        };
        // The caller may have gone (its thread ended, its request dropped): nothing to
        // tell then.
        match self.caller {
            Caller::Thread(c) => drop(c.send(result)),
            Caller::Task(c) => drop(c.send(result)),
        }
    }
}

/// The handle callers send jobs through.
pub(super) struct Writer {
    jobs: Option<SyncSender<Box<dyn Pending>>>,
    thread: Option<JoinHandle<()>>,
    counts: Arc<Counts>,
}

/// Writes queued and transactions committed since start.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) writes: AtomicU64,
    pub(crate) commits: AtomicU64,
}

impl Writer {
    /// Starts the writer thread on `conn` (already migrated).
    pub(super) fn start(conn: Connection, shared: Arc<Shared>) -> std::io::Result<Writer> {
        let (tx, rx) = sync_channel(QUEUE);
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let thread = std::thread::Builder::new()
            .name("settled-writer".into())
            .spawn(move || run(conn, &shared, &c, rx))?;
        Ok(Writer {
            jobs: Some(tx),
            thread: Some(thread),
            counts,
        })
    }

    /// Writes queued and transactions committed so far.
    #[cfg(test)]
    pub(super) fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Runs `f` in the next group commit and returns its result once that commit is
    /// on disk. Blocks: call it from a blocking thread, never an async worker.
    pub(super) fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared, &Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (caller, answered) = sync_channel(1);
        self.queue(f, Caller::Thread(caller))?;
        answered.recv().map_err(|_| gone())?
    }

    /// Queues `f` for the next group commit; the answer is awaited, so no thread waits
    /// for the commit. Blocks only while the queue is full: call it from a blocking
    /// thread.
    pub(super) fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared, &Connection) -> StoreResult<T> + Send + 'static,
    ) -> Write<T> {
        let (caller, answered) = oneshot::channel();
        match self.queue(f, Caller::Task(caller)) {
            Ok(()) => Write::Queued(answered),
            Err(e) => Write::Now(Err(e)),
        }
    }

    fn queue<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared, &Connection) -> StoreResult<T> + Send + 'static,
        caller: Caller<T>,
    ) -> StoreResult<()> {
        let job = Box::new(Job {
            write: Some(f),
            result: None,
            caller,
        });
        let jobs = self.jobs.as_ref().ok_or_else(gone)?;
        jobs.send(job).map_err(|_| gone())?;
        self.counts.writes.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("settled_db_writes_total").increment(1);
        Ok(())
    }
}

fn gone() -> StoreError {
    StoreError::Internal(anyhow::anyhow!("the database writer has stopped"))
}

/// A write's answer, to be awaited: known at once (nothing needed writing, or it was
/// refused before it was queued), or sent by the writer once its commit is durable.
pub(crate) enum Write<T> {
    /// Known without the writer.
    Now(StoreResult<T>),
    /// Queued: the writer answers once the commit holding it is durable.
    Queued(oneshot::Receiver<StoreResult<T>>),
}

impl<T> Write<T> {
    /// The write's result once its commit is durable.
    pub(crate) async fn done(self) -> StoreResult<T> {
        match self {
            Write::Now(result) => result,
            Write::Queued(answer) => answer.await.map_err(|_| gone())?,
        }
    }
}

impl Drop for Writer {
    /// Lets the writer finish the jobs sent, then waits for it.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(mut conn: Connection, shared: &Shared, counts: &Counts, jobs: Receiver<Box<dyn Pending>>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP
            && let Ok(next) = jobs.try_recv()
        {
            group.push(next);
        }
        let commit = commit_group(&mut conn, shared, &mut group);
        if matches!(commit, Ok(true)) {
            counts.commits.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("settled_db_commits_total").increment(1);
            shared.wake(&conn);
        }
        let commit = commit.map(|_| ());
        for job in group {
            job.answer(commit.clone());
        }
    }
}

/// Runs `group` in one transaction, each job in its own savepoint, and commits; says
/// whether anything was committed. An error of the transaction itself (not of a job)
/// keeps none of the group.
fn commit_group(
    conn: &mut Connection,
    shared: &Shared,
    group: &mut [Box<dyn Pending>],
) -> Result<bool, Failed> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let run = |sql: &str| tx.prepare_cached(sql).and_then(|mut st| st.execute([]));
    // SQLite may roll the whole transaction back by itself when a statement fails (a
    // full disk, an I/O error): whatever ran after that would commit alone, so the
    // group stops there and keeps nothing.
    let ended = || Failed {
        code: None,
        msg: "SQLite rolled the transaction back after an error".into(),
    };
    // A job alone needs no savepoint (whose journal copies every page it changes): if
    // it is refused, the whole transaction is its own to roll back.
    if let [job] = group {
        let ok = job.run(shared, &tx);
        if tx.is_autocommit() {
            return Err(ended());
        }
        return match ok {
            true => tx.commit().map(|()| true).map_err(Failed::from),
            false => tx.rollback().map(|()| false).map_err(Failed::from),
        };
    }
    for job in group.iter_mut() {
        run("SAVEPOINT job")?;
        let ok = job.run(shared, &tx);
        if tx.is_autocommit() {
            return Err(ended());
        }
        if !ok {
            run("ROLLBACK TO job")?;
        }
        run("RELEASE job")?;
    }
    tx.commit().map(|()| true).map_err(Failed::from)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, mpsc};

    use crate::store::{Store, StoreError};

    fn store() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), Default::default(), None).unwrap();
        (dir, Arc::new(store))
    }

    fn insert_block(store: &Store, height: u64, fail: bool) -> Result<(), StoreError> {
        store.write(move |_, conn| {
            conn.execute(
                "INSERT INTO blocks (chain, height, hash) VALUES ('t', ?1, 'h')",
                [height],
            )?;
            if fail {
                return Err(StoreError::NotAllowed("refused after writing".into()));
            }
            Ok(())
        })
    }

    /// The heights of the test chain's blocks the store holds.
    fn heights(store: &Store) -> Vec<u64> {
        store
            .block_hashes("t", 0, 100)
            .unwrap()
            .into_keys()
            .collect()
    }

    /// A write that holds the writer, running, until the sender is used: its thread,
    /// and the sender.
    fn hold_writer(
        store: &Arc<Store>,
    ) -> (
        std::thread::JoinHandle<Result<(), StoreError>>,
        mpsc::Sender<()>,
    ) {
        let (release, held) = mpsc::channel::<()>();
        let (started, running) = mpsc::channel::<()>();
        let store = store.clone();
        let first = std::thread::spawn(move || {
            store.write(move |_, _| {
                started.send(()).unwrap();
                held.recv().unwrap();
                Ok(())
            })
        });
        running.recv().unwrap();
        (first, release)
    }

    /// Writes that wait together are committed together, and a refused one takes
    /// nothing of the others with it (nor leaves anything of its own).
    #[test]
    fn writes_that_wait_together_share_one_commit_and_a_refusal_stays_their_own() {
        let (_dir, store) = store();
        const N: u64 = 32;
        // The first write holds the writer until every other one is queued.
        let (first, release) = hold_writer(&store);
        let others: Vec<_> = (1..N)
            .map(|h| {
                let store = store.clone();
                std::thread::spawn(move || insert_block(&store, h, h % 4 == 0))
            })
            .collect();
        let counts = store.writer.counts();
        while counts.writes.load(Ordering::SeqCst) < N {
            std::thread::yield_now();
        }
        let before = counts.commits.load(Ordering::SeqCst);
        release.send(()).unwrap();
        first.join().unwrap().unwrap();
        for (h, t) in (1..N).zip(others) {
            assert_eq!(t.join().unwrap().is_err(), h % 4 == 0, "write {h}");
        }
        // The held write's commit, then one for the 31 queued behind it.
        assert_eq!(counts.commits.load(Ordering::SeqCst) - before, 2);
        let kept: Vec<u64> = (1..N).filter(|h| h % 4 != 0).collect();
        assert_eq!(heights(&store), kept);
    }

    /// Writes submitted from one thread while the writer is busy are answered when
    /// their commit lands, each to its awaiting task: no thread waits per write.
    #[test]
    fn submitted_writes_are_awaited_not_waited_on_by_a_thread_each() {
        let (_dir, store) = store();
        let (first, release) = hold_writer(&store);
        // All from one thread, which goes on at once after each: were a submit to wait
        // for its commit, the held writer would keep that thread from handing them over.
        let (handed, queued) = mpsc::channel();
        let submitter = store.clone();
        std::thread::spawn(move || {
            let writes: Vec<_> = (1..=16u64)
                .map(|h| {
                    submitter.submit(move |_, conn| {
                        conn.execute(
                            "INSERT INTO blocks (chain, height, hash) VALUES ('t', ?1, 'h')",
                            [h],
                        )?;
                        Ok(h)
                    })
                })
                .collect();
            handed.send(writes).unwrap();
        });
        let queued = queued
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the submits returned while the writer was held");
        assert_eq!(store.writer.counts().writes.load(Ordering::SeqCst), 17);
        release.send(()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        first.join().unwrap().unwrap();
        rt.block_on(async {
            for (h, w) in (1..=16u64).zip(queued) {
                assert_eq!(w.done().await.unwrap(), h);
            }
        });
        assert_eq!(heights(&store), (1..=16).collect::<Vec<u64>>());
    }

    /// A full disk (here: a page limit) and a read-only database are told apart from
    /// other failures and keep nothing; once there is room, writes succeed again.
    #[test]
    fn a_full_or_read_only_database_is_said_so_and_keeps_nothing() {
        let (_dir, store) = store();
        insert_block(&store, 1, false).unwrap();
        let limit = |pages: i64| {
            store.write(move |_, conn| {
                conn.pragma_update(None, "max_page_count", pages)?;
                Ok(())
            })
        };
        let pages: i64 = store
            .write(|_, conn| Ok(conn.query_row("PRAGMA page_count", [], |r| r.get(0))?))
            .unwrap();
        limit(pages).unwrap();
        let big = store.write(|_, conn| {
            let pad = "x".repeat(64 * 1024);
            conn.execute(
                "INSERT INTO blocks (chain, height, hash) VALUES ('t', 2, ?1)",
                [pad],
            )?;
            Ok(())
        });
        assert!(matches!(big, Err(StoreError::Full(_))), "{big:?}");
        limit(1 << 30).unwrap();
        insert_block(&store, 2, false).unwrap();

        store
            .write(|_, conn| Ok(conn.pragma_update(None, "query_only", true)?))
            .unwrap();
        let refused = insert_block(&store, 3, false);
        assert!(
            matches!(refused, Err(StoreError::ReadOnly(_))),
            "{refused:?}"
        );
        assert_eq!(heights(&store), [1, 2]);
    }

    /// A read never waits for the writer, even while a write is in the middle of its
    /// transaction.
    /// A group's savepoint journal stays in memory: spilled to a temporary file past
    /// 64 KiB, writing it took a quarter of the writer's time in batches of creates.
    #[test]
    fn the_savepoint_journal_of_a_group_stays_in_memory() {
        let (_dir, store) = store();
        let temp_store: i64 = store
            .write(|_, conn| Ok(conn.query_row("PRAGMA temp_store", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(
            temp_store, 2,
            "temp_store is MEMORY on the writer's connection"
        );
    }

    #[test]
    fn reads_go_on_while_a_write_is_open() {
        let (_dir, store) = store();
        insert_block(&store, 1, false).unwrap();
        let (started, in_write) = mpsc::channel::<()>();
        let (release, held) = mpsc::channel::<()>();
        let writer = {
            let store = store.clone();
            std::thread::spawn(move || {
                store.write(move |_, conn| {
                    conn.execute(
                        "INSERT INTO blocks (chain, height, hash) VALUES ('t', 2, 'h')",
                        [],
                    )?;
                    started.send(()).unwrap();
                    held.recv().unwrap();
                    Ok(())
                })
            })
        };
        in_write.recv().unwrap();
        // The writer holds its transaction open: the last commit is still readable.
        assert_eq!(heights(&store), [1]);
        release.send(()).unwrap();
        writer.join().unwrap().unwrap();
        assert_eq!(heights(&store), [1, 2]);
    }

    /// A write that panics is refused; the writer goes on with the next.
    #[test]
    fn a_panicking_write_is_refused_and_the_writer_goes_on() {
        let (_dir, store) = store();
        let r: Result<(), StoreError> = store.write(|_, conn| {
            conn.execute(
                "INSERT INTO blocks (chain, height, hash) VALUES ('t', 1, 'h')",
                [],
            )?;
            panic!("a bug");
        });
        assert!(r.unwrap_err().to_string().contains("panicked"));
        insert_block(&store, 2, false).unwrap();
        assert_eq!(heights(&store), [2]);
    }
}
