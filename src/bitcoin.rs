//! The Bitcoin follower: reads the node and hands each step's findings to the store.
//!
//! It follows the best chain block by block from its persisted cursor (never skipping
//! one), detects reorganisations by parent hash and walks back to the fork point, then
//! looks at the mempool; evictions are judged only when it is at the node's tip.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use bitcoin::{Block, BlockHash, Transaction, Txid};
use tokio::task::JoinHandle;

use crate::amount::U256;
use crate::bitcoind::{Bitcoind, NodeError};
use crate::chain::Chain;
use crate::store::{BlockFound, ChainUpdate, Cursor, Found, Owner, Store, Target};
use crate::watcher::{self, Ctx, NodeView, WatchError};
use crate::zmq::{Inbox, Notice};

/// New mempool transactions decoded at a time.
const MEMPOOL_CHUNK: usize = 5_000;

/// Blocks whose hashes are asked for in one batch during a catch-up.
const HASHES_AHEAD: u64 = 64;

/// Blocks fetched and decoded while the one before them is committed.
const BLOCKS_IN_FLIGHT: usize = 4;

/// The Bitcoin follower of one chain.
pub(crate) struct Follower {
    ctx: Ctx,
    /// The node's mempool as last seen: read whole, or kept up by push.
    mempool: HashSet<Txid>,
    /// What the node pushes (`zmq_sequence`), if configured.
    push: Option<Arc<Inbox>>,
    /// `mempool` follows the push exactly since it was last read whole.
    in_sync: bool,
}

impl Follower {
    /// A follower that has not polled yet.
    pub(crate) fn new(ctx: Ctx, push: Option<Arc<Inbox>>) -> Follower {
        Follower {
            ctx,
            mempool: HashSet::new(),
            push,
            in_sync: false,
        }
    }
}

impl watcher::Follower for Follower {
    async fn poll(&mut self, started: i64) -> Result<(), WatchError> {
        Follower::poll(self, started).await
    }

    async fn pushed(&self) {
        match &self.push {
            Some(inbox) => inbox.ready.notified().await,
            None => std::future::pending().await,
        }
    }
}

impl NodeView for Bitcoind {
    async fn height(&self) -> Result<u64, NodeError> {
        self.block_count().await
    }

    async fn hash_at(&self, height: u64) -> Result<Option<String>, NodeError> {
        Ok(self.block_hash(height).await?.map(|h| h.to_string()))
    }

    async fn hashes_at(
        &self,
        heights: std::ops::Range<u64>,
    ) -> Result<Vec<Option<String>>, NodeError> {
        if heights.is_empty() {
            return Ok(Vec::new());
        }
        let hashes = self.block_hashes(heights.start..=heights.end - 1).await?;
        Ok(hashes
            .into_iter()
            .map(|h| h.map(|h| h.to_string()))
            .collect())
    }
}

impl Follower {
    fn name(&self) -> &str {
        self.ctx.name()
    }

    fn node(&self) -> &Bitcoind {
        self.ctx
            .chain
            .bitcoind
            .as_ref()
            .expect("a bitcoin chain has a node")
    }

    async fn poll(&mut self, started: i64) -> Result<(), WatchError> {
        // What the node pushed since the last poll; taken first, so that nothing
        // pushed during this poll is lost.
        let mut added = Vec::new();
        for notice in self.push.as_ref().map(|i| i.drain()).unwrap_or_default() {
            match notice {
                Notice::Added(t) => {
                    if self.mempool.insert(t) {
                        added.push(t);
                    }
                }
                Notice::Removed(t) => {
                    self.mempool.remove(&t);
                }
                Notice::BlockConnected => {}
                Notice::Lost => self.in_sync = false,
            }
        }
        self.sync_blocks().await?;

        // The mempool, then a second look at the tip: a block that arrived in between
        // may have mined what left the mempool, so evictions wait for a calm poll.
        // With push in step, only what it added is new; without, the whole mempool is
        // read and compared with the last look.
        // Push counts only while connected: a dead publisher pushes nothing, and says so
        // only once.
        let pushing = self.push.as_ref().is_some_and(|i| i.connected());
        let new: Vec<Txid> = if pushing && self.in_sync {
            added
        } else {
            let txids: HashSet<Txid> = self.node().mempool().await?.into_iter().collect();
            // What was pushed just now is in `mempool` already, and new all the same.
            let new: Vec<Txid> = txids
                .difference(&self.mempool)
                .chain(added.iter().filter(|t| txids.contains(*t)))
                .copied()
                .collect();
            tracing::debug!(chain = %self.name(), new = new.len(), "mempool read whole");
            self.mempool = txids;
            self.in_sync = pushing;
            new
        };
        let cursor = self.ctx.cursor().await?;
        let at_tip = self.node().best_block_hash().await?.to_string() == cursor.hash;
        let (found, gone) = self.mempool_payments(&new).await?;
        // Pushed, then mined before we asked: not in the mempool any more.
        for t in &gone {
            self.mempool.remove(t);
        }
        let txids = &self.mempool;
        let evicted: Vec<String> = if at_tip {
            self.ctx
                .store(|s, name| s.pending_txids(name))
                .await?
                .into_iter()
                .filter(|t| t.parse::<Txid>().is_ok_and(|t| !txids.contains(&t)))
                .collect()
        } else {
            Vec::new()
        };
        for e in &evicted {
            tracing::info!(chain = %self.name(), txid = %e, "payment left the mempool unmined");
        }
        self.ctx
            .apply(ChainUpdate {
                mempool: found,
                evicted,
                synced_at: at_tip.then_some(started),
                ..Default::default()
            })
            .await?;
        // At the tip the node's height is ours; ask only when a block came in between.
        let node_height = if at_tip {
            cursor.height
        } else {
            self.node().block_count().await?
        };
        self.ctx
            .chain
            .set_status(|s| s.node_height = Some(node_height));
        Ok(())
    }

    /// The payments in mempool transactions `txids`, in the order the node took them
    /// in. Read in batches; a transaction that left meanwhile is skipped.
    async fn mempool_payments(
        &self,
        txids: &[Txid],
    ) -> Result<(Vec<Found>, Vec<Txid>), WatchError> {
        let mut hits = Vec::new();
        let mut gone = Vec::new();
        // A chunk at a time: a restart's whole mempool is never held decoded at once.
        for chunk in txids.chunks(MEMPOOL_CHUNK) {
            let txs = self.node().mempool_txs(chunk).await?;
            for (txid, tx) in chunk.iter().zip(txs) {
                let Some(tx) = tx else {
                    gone.push(*txid);
                    continue;
                };
                let found = self.matches(&tx);
                if !found.is_empty() {
                    hits.push((*txid, tx, found));
                }
            }
        }
        let paying: Vec<(Txid, &Transaction)> = hits.iter().map(|(t, tx, _)| (*t, tx)).collect();
        let entries = self.node().mempool_entries(&paying).await?;
        let mut seen = Vec::new();
        for ((txid, _, mut found), entry) in hits.into_iter().zip(entries) {
            let Some(entry) = entry else { continue };
            found.iter_mut().for_each(|h| h.rbf = entry.replaceable);
            seen.push((entry.time, txid, found));
        }
        // Detection order is the node's entry order; the txid decides only a tie.
        seen.sort_by_key(|(time, txid, _)| (*time, *txid));
        Ok((seen.into_iter().flat_map(|(_, _, f)| f).collect(), gone))
    }

    /// Waits out a node in initial block download before choosing where to start,
    /// unless `start_height` says where.
    async fn first_cursor(&self) -> Result<(), WatchError> {
        if self.ctx.store(|s, name| s.cursor(name)).await?.is_none()
            && self.ctx.chain.settings.start_height.is_none()
        {
            let info = self.node().chain_info().await?;
            if info.get("initialblockdownload").and_then(|v| v.as_bool()) == Some(true) {
                return Err(NodeError::Transient(
                    "node is still in initial block download; waiting before choosing where to start"
                        .into(),
                )
                .into());
            }
        }
        self.ctx.first_cursor(self.node()).await
    }

    /// Connects the node's blocks after the cursor, one transaction per block. During
    /// a catch-up the next blocks are fetched, decoded and matched while the current
    /// one is committed.
    async fn sync_blocks(&mut self) -> Result<(), WatchError> {
        self.first_cursor().await?;
        loop {
            let cur = self.ctx.step().await?;
            // Compare tips first: the steady state costs one call.
            if self.node().best_block_hash().await?.to_string() == cur.hash {
                return Ok(());
            }
            let tip = self.node().block_count().await?;
            // Known before the blocks are applied: a chain that cannot commit them (a
            // full disk) shows how far behind it is.
            self.ctx.chain.set_status(|s| s.node_height = Some(tip));
            if tip <= cur.height {
                self.reorg(&cur).await?;
                continue;
            }
            let end = tip.min(cur.height + HASHES_AHEAD);
            let hashes = self.node().block_hashes(cur.height + 1..=end).await?;
            if self.connect(&cur, hashes).await? == Linked::Broken {
                let cur = self.ctx.step().await?;
                self.reorg(&cur).await?;
            }
        }
    }

    /// Connects the blocks of `hashes` (the heights after `cur`) in order while the
    /// next ones are fetched; stops where one does not build on the one before.
    async fn connect(
        &mut self,
        cur: &Cursor,
        hashes: Vec<Option<BlockHash>>,
    ) -> Result<Linked, WatchError> {
        let mut ahead = hashes
            .into_iter()
            .map_while(|h| h)
            .zip(cur.height + 1..)
            .map(|(hash, height)| (height, hash));
        let mut in_flight: VecDeque<JoinHandle<Result<Fetched, NodeError>>> = VecDeque::new();
        let mut prev = cur.hash.clone();
        let result = loop {
            while in_flight.len() < BLOCKS_IN_FLIGHT
                && let Some((height, hash)) = ahead.next()
            {
                let chain = self.ctx.chain.clone();
                // Hashing every transaction of the block is a good part of its cost,
                // and needed only to take mined ones out of a mempool we keep: during a
                // catch-up that mempool is still empty (it is read at the tip).
                let with_txids = self.push.is_some() && !self.mempool.is_empty();
                in_flight.push_back(tokio::spawn(fetch(chain, height, hash, with_txids)));
            }
            let Some(next) = in_flight.pop_front() else {
                break Ok(Linked::Whole);
            };
            let fetched = match next.await {
                Ok(Ok(f)) => f,
                Ok(Err(e)) => break Err(e.into()),
                Err(e) => {
                    break Err(
                        NodeError::Transient(format!("fetching a block failed: {e}")).into(),
                    );
                }
            };
            if fetched.prev != prev {
                break Ok(Linked::Broken);
            }
            prev = fetched.block.hash.clone();
            let height = fetched.block.height;
            let update = ChainUpdate {
                connect: vec![fetched.block],
                ..Default::default()
            };
            if let Err(e) = self.ctx.apply(update).await {
                break Err(e);
            }
            if let Err(e) = self.ctx.stepped(height, &prev) {
                break Err(e);
            }
            for t in &fetched.txids {
                self.mempool.remove(t);
            }
        };
        for h in in_flight {
            h.abort();
        }
        result
    }

    /// Walks back to the fork point, then disconnects our blocks above it and connects
    /// the node's, in one transaction.
    async fn reorg(&mut self, cur: &Cursor) -> Result<(), WatchError> {
        // Transactions of disconnected blocks may be back in the mempool, unannounced.
        self.in_sync = false;
        let watcher::Fork {
            height: fork,
            hash: fork_hash,
            node_height,
        } = self.ctx.fork(self.node(), cur).await?;
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
        let applied = self
            .ctx
            .apply(ChainUpdate {
                disconnect_above: Some(fork),
                connect: blocks,
                ..Default::default()
            })
            .await?;
        watcher::alarm_if_final(&self.ctx.chain, cur, fork, &applied.final_reorged);
        Ok(())
    }

    fn block_found(&self, height: u64, block: &Block) -> BlockFound {
        let chain = &self.ctx.chain;
        block_found(height, block, &chain.settings.native.symbol, |script| {
            chain.watchlist.get(script)
        })
    }

    /// Outputs of `tx` that pay a watched script.
    fn matches(&self, tx: &Transaction) -> Vec<Found> {
        let chain = &self.ctx.chain;
        matching_outputs(tx, &chain.settings.native.symbol, &|script| {
            chain.watchlist.get(script)
        })
    }
}

/// Whether the blocks fetched in a row built on each other and on the cursor.
#[derive(Debug, PartialEq, Eq)]
enum Linked {
    Whole,
    /// One did not: the node's chain moved, or reorganised.
    Broken,
}

/// A block fetched ahead, matched against the watch list.
struct Fetched {
    prev: String,
    block: BlockFound,
    /// Its transactions, when push keeps the mempool: they left it by being mined.
    txids: Vec<Txid>,
}

/// Fetches the block `hash` at `height`, then decodes and matches it on a blocking
/// thread: a task of its own, so that it goes on while earlier blocks are committed.
async fn fetch(
    chain: Arc<Chain>,
    height: u64,
    hash: BlockHash,
    with_txids: bool,
) -> Result<Fetched, NodeError> {
    let node = chain
        .bitcoind
        .as_ref()
        .ok_or_else(|| NodeError::Persistent("the chain has no node".into()))?;
    let block = node.block(&hash).await?;
    crate::bitcoind::off_thread(move || {
        let coin = &chain.settings.native.symbol;
        let found = block_found(height, &block, coin, |s| chain.watchlist.get(s));
        let txids = match with_txids {
            true => block.txdata.iter().map(|tx| tx.compute_txid()).collect(),
            false => Vec::new(),
        };
        Ok(Fetched {
            prev: block.header.prev_blockhash.to_string(),
            block: found,
            txids,
        })
    })
    .await
}

/// A block with the outputs in it whose script `owner` knows.
fn block_found(
    height: u64,
    block: &Block,
    coin: &str,
    owner: impl Fn(&[u8]) -> Option<Owner>,
) -> BlockFound {
    BlockFound {
        height,
        hash: block.block_hash().to_string(),
        time: i64::from(block.header.time),
        payments: block
            .txdata
            .iter()
            .flat_map(|tx| matching_outputs(tx, coin, &owner))
            .collect(),
    }
}

/// Outputs of `tx` whose script `owner` knows, each paying `coin`.
fn matching_outputs(
    tx: &Transaction,
    coin: &str,
    owner: &impl Fn(&[u8]) -> Option<Owner>,
) -> Vec<Found> {
    let mut txid = None;
    tx.output
        .iter()
        .enumerate()
        .filter_map(|(i, out)| {
            let owner = owner(out.script_pubkey.as_bytes())?;
            let txid = *txid.get_or_insert_with(|| tx.compute_txid());
            Some(Found {
                owner,
                asset: coin.to_string(),
                txid: txid.to_string(),
                index: i as u32,
                amount: U256::from(out.value.to_sat()),
                rbf: tx.is_explicitly_rbf(),
            })
        })
        .collect()
}

/// `invoice.rescan` and `deposit_address.rescan`: searches blocks from `from_height`
/// (default: the height at the address's creation) to the cursor for transfers to
/// `target`, the address of `owner`, that were missed.
pub(crate) async fn rescan(
    chain: &Chain,
    store: &Arc<Store>,
    owner: &Owner,
    target: &Target,
    from_height: Option<u64>,
) -> anyhow::Result<usize> {
    let node = chain
        .bitcoind
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the chain has no node"))?;
    let Some(watcher::RescanStart {
        key: script,
        from,
        cursor,
        ours,
    }) = watcher::rescan_start(chain, store, target, from_height).await?
    else {
        return Ok(0);
    };
    let mut blocks = Vec::new();
    for height in from..=cursor.height {
        let Some(hash) = node.block_hash(height).await? else {
            break;
        };
        // Only blocks on the chain the store knows; the watcher handles the rest.
        if ours.get(&height).is_some_and(|o| *o != hash.to_string()) {
            continue;
        }
        let block = node.block(&hash).await?;
        let coin = &chain.settings.native.symbol;
        let found = block_found(height, &block, coin, |s| {
            (s == script.as_slice()).then(|| owner.clone())
        });
        if !found.payments.is_empty() {
            blocks.push(found);
        }
    }
    Ok(watcher::commit_rescan(chain, store, blocks)
        .await?
        .new_payments)
}
