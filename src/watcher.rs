//! What every chain follower shares: the poll loop with its backoff and status, the
//! walk back to a fork point, and the finality alarm. The followers themselves
//! ([`crate::bitcoin`], [`crate::evm`]) only read their node and hand each step's
//! findings to the store.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::bitcoind::NodeError;
use crate::chain::Chain;
use crate::store::{Applied, BlockFound, ChainUpdate, Cursor, Store, StoreError, Target, now};

/// Why a poll stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WatchError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// The chain cannot go on without the operator (a reorganisation deeper than
    /// `max_reorg_depth`, a node on another chain): the watcher stops.
    #[error("{0}")]
    Halt(String),
    #[error("shutting down")]
    Shutdown,
}

/// What a follower works with: its chain, the store, and the shutdown signal.
pub(crate) struct Ctx {
    pub(crate) chain: Arc<Chain>,
    pub(crate) store: Arc<Store>,
    pub(crate) shutdown: CancellationToken,
}

impl Ctx {
    /// The chain's name.
    pub(crate) fn name(&self) -> &str {
        &self.chain.settings.name
    }

    /// Runs `f` on the store, off the async threads.
    pub(crate) async fn store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store, &str) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, WatchError> {
        let name = self.name().to_string();
        Ok(self.store.blocking(move |s| f(s, &name)).await?)
    }

    /// The chain's cursor, which exists once [`Ctx::first_cursor`] ran.
    pub(crate) async fn cursor(&self) -> Result<Cursor, WatchError> {
        self.store(|s, name| s.cursor(name))
            .await?
            .ok_or_else(|| WatchError::Halt("the chain cursor vanished".into()))
    }

    /// The cursor, shown in `chain.status` as what was scanned; `Shutdown` once asked.
    pub(crate) async fn step(&self) -> Result<Cursor, WatchError> {
        if self.shutdown.is_cancelled() {
            return Err(WatchError::Shutdown);
        }
        let cur = self.cursor().await?;
        self.stepped(cur.height, &cur.hash)?;
        Ok(cur)
    }

    /// As [`Ctx::step`], right after the block `height` (`hash`) was committed: the
    /// cursor is known, so nothing is read (a catch-up makes one step per block).
    pub(crate) fn stepped(&self, height: u64, hash: &str) -> Result<(), WatchError> {
        if self.shutdown.is_cancelled() {
            return Err(WatchError::Shutdown);
        }
        self.chain.set_status(|s| {
            s.scanned_height = Some(height);
            s.scanned_hash = Some(hash.to_string());
            s.alive_until = Some(Instant::now() + self.chain.calls.grace());
        });
        Ok(())
    }

    /// On the very first run, places the cursor below `start_height`, or at the node's
    /// tip.
    pub(crate) async fn first_cursor(&self, node: &impl NodeView) -> Result<(), WatchError> {
        if self.store(|s, name| s.cursor(name)).await?.is_some() {
            return Ok(());
        }
        let height = match self.chain.settings.start_height {
            Some(h) => h.saturating_sub(1),
            None => node.height().await?,
        };
        let hash = node.hash_at(height).await?.ok_or_else(|| {
            NodeError::Transient(format!(
                "the node has no block at height {height} yet (start_height)"
            ))
        })?;
        // The blocks below the first cursor too, as deep as a reorganisation may go: one
        // that replaces the tip of the very first run finds its fork point instead of
        // halting the chain (found by the crash torture).
        let depth = u64::from(self.chain.settings.policy.max_reorg_depth).min(height);
        // Asked together: one by one, a first run spent ~0.5 ms per block below on the
        // round trips before it scanned anything.
        let first = height - depth;
        let below: Vec<(u64, String)> = (node.hashes_at(first..height).await?)
            .into_iter()
            .enumerate()
            .rev()
            .map_while(|(i, b)| Some((first + i as u64, b?)))
            .collect();
        let at = hash.clone();
        self.store(move |s, name| s.init_cursor(name, height, &at, &below))
            .await?;
        tracing::info!(chain = %self.name(), height, "first run: scanning from the block after this height");
        Ok(())
    }

    /// Commits one step of the follower, then follows the watch set's changes it made.
    pub(crate) async fn apply(&self, up: ChainUpdate) -> Result<Applied, WatchError> {
        let blocks = !up.connect.is_empty();
        let applied = self.store(move |s, name| s.apply(name, up)).await?;
        if blocks {
            crate::fault::point("after_block_commit");
        }
        self.chain.watchlist.apply(&applied.watch);
        Ok(applied)
    }

    /// Walks back to where the node's best chain leaves ours.
    pub(crate) async fn fork(
        &self,
        node: &impl NodeView,
        cur: &Cursor,
    ) -> Result<Fork, WatchError> {
        let max_depth = self.chain.settings.policy.max_reorg_depth;
        // The walk never goes deeper than this: read what we hold of it at once.
        let (from, to) = (
            cur.height.saturating_sub(u64::from(max_depth) + 1),
            cur.height,
        );
        let ours = self
            .store(move |s, name| s.block_hashes(name, from, to))
            .await?;
        find_fork(node, |h| Ok(ours.get(&h).cloned()), cur, max_depth).await
    }
}

/// Where a rescan (`invoice.rescan`, `deposit_address.rescan`) starts, read in one go:
/// the address's script (or match key), the first height to search (`from_height`,
/// else the height at its creation), the cursor, and the hashes the store holds up to
/// it.
pub(crate) struct RescanStart {
    pub(crate) key: Vec<u8>,
    pub(crate) from: u64,
    pub(crate) cursor: Cursor,
    pub(crate) ours: std::collections::BTreeMap<u64, String>,
}

/// [`RescanStart`] of an address on `chain`; `None` before the chain's first poll.
pub(crate) async fn rescan_start(
    chain: &Chain,
    store: &Arc<Store>,
    target: &Target,
    from_height: Option<u64>,
) -> Result<Option<RescanStart>, StoreError> {
    let name = chain.settings.name.clone();
    let (key, created_height) = (target.script.clone(), target.created_height);
    store
        .blocking(move |s| {
            let Some(cursor) = s.cursor(&name)? else {
                return Ok(None);
            };
            let from = from_height.or(created_height).unwrap_or(cursor.height);
            let ours = s.block_hashes(&name, from, cursor.height)?;
            Ok(Some(RescanStart {
                key,
                from,
                cursor,
                ours,
            }))
        })
        .await
}

/// Commits what an `invoice.rescan` found, then follows the watch set's changes it
/// made.
pub(crate) async fn commit_rescan(
    chain: &Chain,
    store: &Arc<Store>,
    blocks: Vec<BlockFound>,
) -> Result<Applied, StoreError> {
    let update = ChainUpdate {
        rescanned: blocks,
        ..Default::default()
    };
    let name = chain.settings.name.clone();
    let applied = store.blocking(move |s| s.apply(&name, update)).await?;
    chain.watchlist.apply(&applied.watch);
    Ok(applied)
}

/// One kind of chain follower: a poll reads the node from the store's cursor on and
/// commits what it found.
pub(crate) trait Follower: Send {
    /// Follows the node up to its tip; `started` is when the poll began.
    fn poll(&mut self, started: i64) -> impl Future<Output = Result<(), WatchError>> + Send;

    /// Resolves when the node pushed something worth a poll now; never, without push.
    fn pushed(&self) -> impl Future<Output = ()> + Send;
}

const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Follows one chain with `follower` until `shutdown` is cancelled or the chain must
/// halt: a poll every `poll_interval`, or at once when the node pushes something.
pub(crate) async fn follow(
    chain: Arc<Chain>,
    store: Arc<Store>,
    shutdown: CancellationToken,
    mut follower: impl Follower,
) {
    let name = chain.settings.name.clone();
    let poll = chain.settings.poll_interval;
    chain.set_status(|s| s.running = true);
    let mut loaded = false;
    let mut delay = poll;
    loop {
        let started = now();
        let grace = chain.calls.grace();
        chain.set_status(|s| s.alive_until = Some(Instant::now() + grace));
        #[cfg(debug_assertions)]
        stall_for_tests(&shutdown).await;
        let mut result = Ok(());
        // The watch set is read once; from then on the commits that decide it change it.
        if !loaded {
            let n = name.clone();
            result = match store.blocking(move |s| s.watched(&n)).await {
                Ok(set) => {
                    chain.watchlist.load(set);
                    Ok(())
                }
                Err(e) => Err(e.into()),
            };
            loaded = result.is_ok();
        }
        if result.is_ok() {
            result = follower.poll(started).await;
        }
        match result {
            Ok(()) => {
                delay = poll;
                chain.set_status(|s| {
                    s.node_reachable = true;
                    s.last_poll_at = Some(started);
                    s.last_error = None;
                });
            }
            Err(WatchError::Shutdown) => break,
            Err(WatchError::Halt(msg)) => {
                tracing::error!(chain = %name, "{msg}; this chain is stopped");
                chain.set_status(|s| {
                    s.running = false;
                    s.last_error = Some(msg);
                });
                return;
            }
            Err(e) => {
                let reachable = !matches!(&e, WatchError::Node(n) if n.unreachable());
                match &e {
                    WatchError::Node(NodeError::Persistent(_)) | WatchError::Store(_) => {
                        tracing::error!(chain = %name, "{e}")
                    }
                    _ => tracing::warn!(chain = %name, "{e}; retrying in {delay:?}"),
                }
                chain.set_status(|s| {
                    s.node_reachable = reachable;
                    s.last_poll_at = Some(started);
                    s.last_error = Some(e.to_string());
                });
                delay = (delay * 2).clamp(poll, MAX_BACKOFF.max(poll));
            }
        }
        // Waiting out the delay is honest waiting.
        chain.set_status(|s| s.alive_until = Some(Instant::now() + delay + grace));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
            _ = follower.pushed() => {}
        }
    }
    chain.set_status(|s| s.running = false);
}

/// Test builds only: while the file named by `SETTLED_TEST_STALL` exists, the task
/// hangs here as a bug would, so that the tests can see the watchdog go hungry.
#[cfg(debug_assertions)]
async fn stall_for_tests(shutdown: &CancellationToken) {
    let Some(path) = std::env::var_os("SETTLED_TEST_STALL") else {
        return;
    };
    while std::path::Path::new(&path).exists() && !shutdown.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The node's side of the fork walk.
pub(crate) trait NodeView: Sync {
    /// The height of the node's best block.
    fn height(&self) -> impl Future<Output = Result<u64, NodeError>> + Send;
    /// The hash of the node's best-chain block at `height`, if any.
    fn hash_at(
        &self,
        height: u64,
    ) -> impl Future<Output = Result<Option<String>, NodeError>> + Send;

    /// The hashes at `heights`, in order, `None` past the tip: one call per height, a
    /// few at a time so that the round trips overlap, where the node takes no batches.
    fn hashes_at(
        &self,
        heights: std::ops::Range<u64>,
    ) -> impl Future<Output = Result<Vec<Option<String>>, NodeError>> + Send {
        use futures_util::{StreamExt, TryStreamExt};
        futures_util::stream::iter(heights.map(|h| self.hash_at(h)))
            .buffered(16)
            .try_collect()
    }
}

/// Where the node's best chain leaves the blocks settled applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fork {
    /// The last block both hold.
    pub(crate) height: u64,
    pub(crate) hash: String,
    /// The node's tip height when the walk ran.
    pub(crate) node_height: u64,
}

/// Walks back from the cursor to the last block the node's best chain shares with
/// `ours` (the hashes the store keeps). A node whose tip lies on our branch is behind,
/// not reorganised: that is a transient error, never a rollback.
pub(crate) async fn find_fork(
    node: &impl NodeView,
    ours: impl Fn(u64) -> Result<Option<String>, StoreError>,
    cur: &Cursor,
    max_depth: u32,
) -> Result<Fork, WatchError> {
    let node_height = node.height().await?;
    if node_height < cur.height {
        // Restarting, replaying, lost unflushed blocks, or a new node still syncing:
        // wait. Only a different hash at a height we hold proves a fork.
        let mine = ours(node_height)?;
        let theirs = node.hash_at(node_height).await?;
        if mine.is_none() || mine == theirs {
            return Err(NodeError::Transient(format!(
                "the node is behind: its tip is at height {node_height}, settled has scanned {}; \
                 waiting for it to catch up",
                cur.height
            ))
            .into());
        }
    }
    let mut h = cur.height.min(node_height);
    loop {
        if cur.height - h > u64::from(max_depth) {
            return Err(WatchError::Halt(format!(
                "reorganisation deeper than max_reorg_depth ({max_depth}) below height {}",
                cur.height
            )));
        }
        match (ours(h)?, node.hash_at(h).await?) {
            (Some(o), Some(t)) if o == t => {
                return Ok(Fork {
                    height: h,
                    hash: o,
                    node_height,
                });
            }
            (None, _) => {
                return Err(WatchError::Halt(format!(
                    "reorganisation reaches height {h}, older than the blocks settled keeps"
                )));
            }
            _ if h == 0 => {
                return Err(WatchError::Halt(
                    "the node's chain has another genesis".into(),
                ));
            }
            _ => h -= 1,
        }
    }
}

/// Counts and logs a reorganisation that disconnected blocks of ours, and raises the
/// chain's alarm when one of them was final
/// (`lifecycle.md`: an alarm, not a silent rewrite); final invoices stay `COMPLETED`.
pub(crate) fn alarm_if_final(chain: &Chain, cur: &Cursor, fork: u64, final_reorged: &[String]) {
    let policy = &chain.settings.policy;
    let final_height = policy.final_height(Some(cur.height), cur.finalized);
    let depth = cur.height - fork;
    if depth == 0 {
        // The node's tip moved between two calls (a block we never saw was replaced):
        // nothing of ours was disconnected, so there was no reorganisation to count.
        return;
    }
    let name = chain.settings.name.clone();
    metrics::counter!("settled_reorgs_total", "chain" => name.clone()).increment(1);
    metrics::histogram!("settled_reorg_depth_blocks", "chain" => name).record(depth as f64);
    tracing::warn!(chain = %chain.settings.name, depth, fork, "reorganisation: {depth} block(s) disconnected above height {fork}");
    if final_height.is_some_and(|f| fork < f) || !final_reorged.is_empty() {
        let msg = format!(
            "ALARM: a reorganisation of {depth} blocks above height {fork} disconnected final \
             blocks (final_confirmations = {}); final invoices touched: {final_reorged:?} (they stay COMPLETED)",
            policy.finality
        );
        tracing::error!(chain = %chain.settings.name, "{msg}");
        chain.set_status(|s| s.alarm = Some(msg));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A node as a map of height to hash.
    struct FakeNode(HashMap<u64, String>);

    impl NodeView for FakeNode {
        async fn height(&self) -> Result<u64, NodeError> {
            Ok(self.0.keys().copied().max().unwrap_or(0))
        }
        async fn hash_at(&self, height: u64) -> Result<Option<String>, NodeError> {
            Ok(self.0.get(&height).cloned())
        }
    }

    /// Heights `0..=top`, named by branch: "a5" is branch a at height 5.
    fn chain(branches: &[(char, std::ops::RangeInclusive<u64>)]) -> HashMap<u64, String> {
        branches
            .iter()
            .flat_map(|(b, r)| r.clone().map(move |h| (h, format!("{b}{h}"))))
            .collect()
    }

    fn cursor(map: &HashMap<u64, String>, height: u64) -> Cursor {
        Cursor {
            height,
            hash: map[&height].clone(),
            synced_at: None,
            finalized: None,
        }
    }

    async fn walk(
        ours: &HashMap<u64, String>,
        node: &HashMap<u64, String>,
        at: u64,
        depth: u32,
    ) -> Result<Fork, WatchError> {
        let node = FakeNode(node.clone());
        find_fork(
            &node,
            |h| Ok(ours.get(&h).cloned()),
            &cursor(ours, at),
            depth,
        )
        .await
    }

    #[tokio::test]
    async fn finds_the_last_shared_block() {
        let ours = chain(&[('a', 0..=10)]);
        let node = chain(&[('a', 0..=7), ('b', 8..=12)]);
        let f = walk(&ours, &node, 10, 100).await.unwrap();
        assert_eq!((f.height, f.hash.as_str(), f.node_height), (7, "a7", 12));
    }

    #[tokio::test]
    async fn a_shorter_fork_is_found_too() {
        let ours = chain(&[('a', 0..=10)]);
        let node = chain(&[('a', 0..=5), ('b', 6..=8)]);
        assert_eq!(walk(&ours, &node, 10, 100).await.unwrap().height, 5);
    }

    #[tokio::test]
    async fn a_node_behind_on_our_branch_is_waited_for() {
        let ours = chain(&[('a', 0..=10)]);
        let node = chain(&[('a', 0..=6)]);
        let e = walk(&ours, &node, 10, 100).await.unwrap_err();
        assert!(
            matches!(e, WatchError::Node(NodeError::Transient(ref m)) if m.contains("behind")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn deeper_than_the_limit_halts() {
        let ours = chain(&[('a', 0..=10)]);
        let node = chain(&[('a', 0..=3), ('b', 4..=11)]);
        assert!(matches!(
            walk(&ours, &node, 10, 5).await,
            Err(WatchError::Halt(_))
        ));
        assert_eq!(walk(&ours, &node, 10, 7).await.unwrap().height, 3);
    }

    #[tokio::test]
    async fn beyond_the_kept_blocks_halts() {
        let mut ours = chain(&[('a', 0..=10)]);
        ours.retain(|h, _| *h >= 6);
        let node = chain(&[('a', 0..=4), ('b', 5..=11)]);
        let e = walk(&ours, &node, 10, 100).await.unwrap_err();
        assert!(
            matches!(e, WatchError::Halt(ref m) if m.contains("older than")),
            "{e}"
        );
    }
}
