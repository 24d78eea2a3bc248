//! The Bitcoin follower: one task per chain that only reads the node and hands each
//! step's findings to the store.
//!
//! It follows the best chain block by block from its persisted cursor (never skipping
//! one), detects reorganisations by parent hash and walks back to the fork point, then
//! looks at the mempool; evictions are judged only when it is at the node's tip.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::{Block, Transaction, Txid};
use tokio_util::sync::CancellationToken;

use crate::amount::U256;
use crate::bitcoind::{Bitcoind, NodeError};
use crate::chain::Chain;
use crate::store::{BlockFound, ChainUpdate, Cursor, Found, Store, StoreError, now};

/// Why a poll stopped.
#[derive(Debug, thiserror::Error)]
enum WatchError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// The chain cannot go on without the operator (a reorganisation deeper than
    /// `max_reorg_depth`): the watcher stops.
    #[error("{0}")]
    Halt(String),
    #[error("shutting down")]
    Shutdown,
}

/// How often the watchlist is rebuilt from the database, dropping addresses no
/// longer watched.
const RELOAD_EVERY: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

struct Watcher {
    chain: Arc<Chain>,
    store: Arc<Store>,
    shutdown: CancellationToken,
    mempool: HashSet<Txid>,
    reloaded: Option<Instant>,
}

/// Follows one Bitcoin chain until `shutdown` is cancelled or the chain must halt.
pub(crate) async fn run(chain: Arc<Chain>, store: Arc<Store>, shutdown: CancellationToken) {
    let name = chain.settings.name.clone();
    let poll = chain.settings.poll_interval;
    chain.set_status(|s| s.running = true);
    let mut w = Watcher {
        chain: chain.clone(),
        store,
        shutdown: shutdown.clone(),
        mempool: HashSet::new(),
        reloaded: None,
    };
    let mut delay = poll;
    loop {
        let started = now();
        match w.poll(started).await {
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
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    chain.set_status(|s| s.running = false);
}

impl Watcher {
    fn name(&self) -> &str {
        &self.chain.settings.name
    }

    fn node(&self) -> &Bitcoind {
        self.chain
            .bitcoind
            .as_ref()
            .expect("a bitcoin chain has a node")
    }

    async fn poll(&mut self, started: i64) -> Result<(), WatchError> {
        if self.reloaded.is_none_or(|t| t.elapsed() >= RELOAD_EVERY) {
            let (store, name) = (&self.store, self.chain.settings.name.as_str());
            self.chain.watchlist.reload(|| store.watched(name))?;
            self.reloaded = Some(Instant::now());
        }
        self.sync_blocks().await?;

        // The mempool, then a second look at the tip: a block that arrived in between
        // may have mined what left the mempool, so evictions wait for a calm poll.
        let txids: HashSet<Txid> = self.node().mempool().await?.into_iter().collect();
        let cursor = self.cursor()?;
        let at_tip = self.node().best_block_hash().await?.to_string() == cursor.hash;
        let mut found = Vec::new();
        for txid in txids.difference(&self.mempool) {
            let Some(tx) = self.node().mempool_tx(txid).await? else {
                continue;
            };
            let mut hits = self.matches(&tx);
            if !hits.is_empty() {
                let rbf = self.node().replaceable(&tx).await?;
                hits.iter_mut().for_each(|h| h.rbf = rbf);
                found.extend(hits);
            }
        }
        let evicted: Vec<String> = if at_tip {
            self.store
                .pending_txids(self.name())?
                .into_iter()
                .filter(|t| t.parse::<Txid>().is_ok_and(|t| !txids.contains(&t)))
                .collect()
        } else {
            Vec::new()
        };
        for e in &evicted {
            tracing::info!(chain = %self.name(), txid = %e, "payment left the mempool unmined");
        }
        self.store.apply(
            self.name(),
            ChainUpdate {
                mempool: found,
                evicted,
                synced_at: at_tip.then_some(started),
                ..Default::default()
            },
        )?;
        self.mempool = txids;
        // At the tip the node's height is ours; ask only when a block came in between.
        let node_height = if at_tip {
            cursor.height
        } else {
            self.node().block_count().await?
        };
        self.chain.set_status(|s| s.node_height = Some(node_height));
        Ok(())
    }

    fn cursor(&self) -> Result<Cursor, WatchError> {
        self.store
            .cursor(self.name())?
            .ok_or_else(|| WatchError::Halt("the chain cursor vanished".into()))
    }

    /// Starts at `start_height` (or the node's tip) on the very first run.
    async fn first_cursor(&self) -> Result<(), WatchError> {
        if self.store.cursor(self.name())?.is_some() {
            return Ok(());
        }
        let info = self.node().chain_info().await?;
        if info.get("initialblockdownload").and_then(|v| v.as_bool()) == Some(true)
            && self.chain.settings.start_height.is_none()
        {
            return Err(NodeError::Transient(
                "node is still in initial block download; waiting before choosing where to start"
                    .into(),
            )
            .into());
        }
        let height = match self.chain.settings.start_height {
            Some(h) => h.saturating_sub(1),
            None => self.node().block_count().await?,
        };
        let hash = self.node().block_hash(height).await?.ok_or_else(|| {
            NodeError::Transient(format!(
                "the node has no block at height {height} yet (start_height)"
            ))
        })?;
        self.store
            .init_cursor(self.name(), height, &hash.to_string())?;
        tracing::info!(chain = %self.name(), height, "first run: scanning from the block after this height");
        Ok(())
    }

    /// Connects the node's blocks after the cursor, one transaction per block.
    async fn sync_blocks(&mut self) -> Result<(), WatchError> {
        self.first_cursor().await?;
        loop {
            if self.shutdown.is_cancelled() {
                return Err(WatchError::Shutdown);
            }
            let cur = self.cursor()?;
            self.chain.set_status(|s| {
                s.scanned_height = Some(cur.height);
                s.scanned_hash = Some(cur.hash.clone());
            });
            // Compare tips first: the steady state costs one call.
            if self.node().best_block_hash().await?.to_string() == cur.hash {
                return Ok(());
            }
            let Some(next) = self.node().block_hash(cur.height + 1).await? else {
                self.reorg(&cur).await?;
                continue;
            };
            let block = self.node().block(&next).await?;
            if block.header.prev_blockhash.to_string() != cur.hash {
                self.reorg(&cur).await?;
                continue;
            }
            let found = self.block_found(cur.height + 1, &block);
            self.store.apply(
                self.name(),
                ChainUpdate {
                    connect: vec![found],
                    ..Default::default()
                },
            )?;
        }
    }

    /// Walks back to the fork point, then disconnects our blocks above it and connects
    /// the node's, in one transaction.
    async fn reorg(&mut self, cur: &Cursor) -> Result<(), WatchError> {
        let policy = &self.chain.settings.policy;
        let node_height = self.node().block_count().await?;
        if node_height < cur.height {
            // A node whose tip is an ancestor of ours is behind (restarting, replaying,
            // lost unflushed blocks, or a new node still syncing), not reorganised:
            // wait, never roll back. Only a different hash we hold proves a fork.
            let ours = self.store.block_hash(self.name(), node_height)?;
            let theirs = self.node().block_hash(node_height).await?;
            if ours.is_none() || ours == theirs.map(|h| h.to_string()) {
                return Err(NodeError::Transient(format!(
                    "the node is behind: its tip is at height {node_height}, settled has scanned {}; \
                     waiting for it to catch up",
                    cur.height
                ))
                .into());
            }
        }
        let mut h = cur.height.min(node_height);
        let (fork, fork_hash) = loop {
            if cur.height - h > u64::from(policy.max_reorg_depth) {
                return Err(WatchError::Halt(format!(
                    "reorganisation deeper than max_reorg_depth ({}) below height {}",
                    policy.max_reorg_depth, cur.height
                )));
            }
            let ours = self.store.block_hash(self.name(), h)?;
            let theirs = self.node().block_hash(h).await?;
            match (ours, theirs) {
                (Some(o), Some(t)) if o == t.to_string() => break (h, o),
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
        };
        let mut blocks = Vec::new();
        let mut prev = fork_hash;
        for height in fork + 1..=node_height.min(cur.height + 1) {
            let Some(hash) = self.node().block_hash(height).await? else {
                break;
            };
            let block = self.node().block(&hash).await?;
            if block.header.prev_blockhash.to_string() != prev {
                return Err(NodeError::Transient(
                    "the node's best chain moved during a reorganisation; starting over".into(),
                )
                .into());
            }
            prev = hash.to_string();
            blocks.push(self.block_found(height, &block));
        }
        let depth = cur.height - fork;
        tracing::warn!(chain = %self.name(), depth, fork, "reorganisation: {depth} block(s) disconnected above height {fork}");
        let applied = self.store.apply(
            self.name(),
            ChainUpdate {
                disconnect_above: Some(fork),
                connect: blocks,
                ..Default::default()
            },
        )?;
        alarm_if_final(&self.chain, cur, fork, &applied.final_reorged);
        Ok(())
    }

    fn block_found(&self, height: u64, block: &Block) -> BlockFound {
        block_found(height, block, |script| self.chain.watchlist.get(script))
    }

    /// Outputs of `tx` that pay a watched script.
    fn matches(&self, tx: &Transaction) -> Vec<Found> {
        matching_outputs(tx, &|script| self.chain.watchlist.get(script))
    }
}

/// Raises the chain's alarm when a reorganisation disconnected a final block
/// (`lifecycle.md`: an alarm, not a silent rewrite); final invoices stay `COMPLETED`.
pub(crate) fn alarm_if_final(chain: &Chain, cur: &Cursor, fork: u64, final_reorged: &[String]) {
    let final_height = chain
        .settings
        .policy
        .final_height(Some(cur.height), cur.finalized);
    if final_height.is_some_and(|f| fork < f) || !final_reorged.is_empty() {
        let depth = cur.height - fork;
        let msg = format!(
            "ALARM: a reorganisation of {depth} blocks above height {fork} disconnected final \
             blocks (final_confirmations = {}); final invoices touched: {final_reorged:?} (they stay COMPLETED)",
            chain.settings.policy.finality
        );
        tracing::error!(chain = %chain.settings.name, "{msg}");
        chain.set_status(|s| s.alarm = Some(msg));
    }
}

/// A block with the outputs in it whose script `owner` knows.
fn block_found(height: u64, block: &Block, owner: impl Fn(&[u8]) -> Option<String>) -> BlockFound {
    BlockFound {
        height,
        hash: block.block_hash().to_string(),
        time: i64::from(block.header.time),
        payments: block
            .txdata
            .iter()
            .flat_map(|tx| matching_outputs(tx, &owner))
            .collect(),
    }
}

/// Outputs of `tx` whose script `owner` knows, as payments to its invoice.
fn matching_outputs(tx: &Transaction, owner: &impl Fn(&[u8]) -> Option<String>) -> Vec<Found> {
    let mut txid = None;
    tx.output
        .iter()
        .enumerate()
        .filter_map(|(i, out)| {
            let invoice_id = owner(out.script_pubkey.as_bytes())?;
            let txid = *txid.get_or_insert_with(|| tx.compute_txid());
            Some(Found {
                invoice_id,
                txid: txid.to_string(),
                index: i as u32,
                amount: U256::from(out.value.to_sat()),
                rbf: tx.is_explicitly_rbf(),
            })
        })
        .collect()
}

/// `invoice.rescan`: searches blocks from `from_height` (default: the height at the
/// invoice's creation) to the cursor for payments to the invoice that were missed.
pub(crate) async fn rescan(
    chain: &Chain,
    store: &Store,
    invoice_id: &str,
    from_height: Option<u64>,
) -> anyhow::Result<usize> {
    let node = chain
        .bitcoind
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the chain has no node"))?;
    let name = &chain.settings.name;
    let (_, script, created_height) = store.invoice_target(invoice_id)?;
    let Some(cursor) = store.cursor(name)? else {
        return Ok(0);
    };
    let from = from_height.or(created_height).unwrap_or(cursor.height);
    let mut blocks = Vec::new();
    for height in from..=cursor.height {
        let Some(hash) = node.block_hash(height).await? else {
            break;
        };
        // Only blocks on the chain the store knows; the watcher handles the rest.
        if store
            .block_hash(name, height)?
            .is_some_and(|ours| ours != hash.to_string())
        {
            continue;
        }
        let block = node.block(&hash).await?;
        let found = block_found(height, &block, |s| {
            (s == script.as_slice()).then(|| invoice_id.to_string())
        });
        if !found.payments.is_empty() {
            blocks.push(found);
        }
    }
    let applied = store.apply(
        name,
        ChainUpdate {
            rescanned: blocks,
            ..Default::default()
        },
    )?;
    Ok(applied.new_payments)
}
