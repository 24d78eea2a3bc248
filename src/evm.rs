//! The follower of Ethereum-like chains: reads the node and hands each step's findings
//! to the store.
//!
//! Blocks are read in bounded steps from the persisted cursor, each step's parent
//! hashes checked link by link. In every block: transactions whose `to` is watched,
//! ETH moved by contracts (the `callTracer` call tree, when `trace_internal_transfers`
//! is on), and ERC-20 `Transfer` logs of the accepted tokens (one `eth_getLogs` per
//! step, narrowed when the node refuses a range). Only successful transactions
//! count. There is no mempool stage: a payment is seen in a block. A payment whose
//! block is reorganised away and that the new branch does not hold is dropped once the
//! follower is back at the tip.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures_util::stream::{self, StreamExt, TryStreamExt};

use alloy::primitives::{Address, B256, U256};

use crate::bitcoind::NodeError;
use crate::chain::Chain;
use crate::chains::Finality;
use crate::ethnode::{CallFrame, EthNode, EvmBlock, TokenTransfer, maybe_too_wide};
use crate::store::{BlockFound, ChainUpdate, Cursor, Found, Owner, Store, Target};
use crate::watcher::{self, Ctx, NodeView, WatchError};

/// Blocks read per step while catching up: one `eth_getLogs` and one commit each.
const BLOCKS_PER_STEP: u64 = 100;

/// Node calls of one step in flight at once.
const IN_FLIGHT: usize = 8;

/// The follower of one Ethereum-like chain.
pub(crate) struct Follower {
    ctx: Ctx,
    /// The node was checked (chain id, traces) since the start.
    checked: bool,
    finalized_warned: bool,
    /// Woken on every new head the node pushes (`ws_url`), if configured.
    pushed: Option<Arc<tokio::sync::Notify>>,
}

impl Follower {
    /// A follower that has not polled yet.
    pub(crate) fn new(ctx: Ctx, pushed: Option<Arc<tokio::sync::Notify>>) -> Follower {
        Follower {
            ctx,
            checked: false,
            finalized_warned: false,
            pushed,
        }
    }

    fn name(&self) -> &str {
        self.ctx.name()
    }

    fn node(&self) -> &EthNode {
        self.ctx
            .chain
            .ethnode
            .as_ref()
            .expect("an ethereum chain has a node")
    }

    /// At start (`config.md`): a node on another chain, or one that cannot trace when
    /// traces are asked for, stops this chain with the reason.
    async fn check_node(&self) -> Result<(), WatchError> {
        let want = self.ctx.chain.settings.chain_id.unwrap_or_default();
        let got = self.node().chain_id().await?;
        if got != want {
            return Err(WatchError::Halt(format!(
                "the node reports chain id {got}, but chains/{}.toml has chain_id {want}: \
                 this is not the node of this chain",
                self.name()
            )));
        }
        if self.ctx.chain.settings.trace_internal_transfers {
            let (tip, _) = self.node().tip().await?;
            match self.node().traces(tip).await {
                Err(NodeError::Persistent(e)) => {
                    return Err(WatchError::Halt(format!(
                        "trace_internal_transfers is on, but the node does not trace blocks \
                         (debug_traceBlockByNumber with callTracer): {e}; enable the node's \
                         debug API or set trace_internal_transfers = false"
                    )));
                }
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
        }
        Ok(())
    }

    async fn poll(&mut self, started: i64) -> Result<(), WatchError> {
        if !self.checked {
            self.check_node().await?;
            self.checked = true;
        }
        let node_height = self.sync_blocks().await?;
        let finalized = match self.ctx.chain.settings.policy.finality {
            Finality::Finalized => self.finalized().await,
            Finality::Confirmations(_) => None,
        };
        // Back at the tip: payments of disconnected blocks that the new branch did not
        // hold are gone (the chain has no mempool stage to keep them in).
        let evicted: Vec<String> = self
            .ctx
            .store(|s, name| s.pending_txids(name))
            .await?
            .into_iter()
            .collect();
        for e in &evicted {
            tracing::info!(chain = %self.name(), txid = %e, "payment's block left the chain and the payment did not come back");
        }
        self.ctx
            .apply(ChainUpdate {
                evicted,
                synced_at: Some(started),
                finalized,
                ..Default::default()
            })
            .await?;
        self.ctx.chain.set_status(|s| {
            s.node_height = Some(node_height);
            s.finalized_height = finalized.or(s.finalized_height);
        });
        Ok(())
    }

    /// The node's `finalized` block; a node without one leaves payments unfinal (safe),
    /// said once.
    async fn finalized(&mut self) -> Option<u64> {
        match self.node().finalized().await {
            Ok(Some(f)) => Some(f),
            Ok(None) | Err(_) if !self.finalized_warned => {
                self.finalized_warned = true;
                tracing::warn!(chain = %self.name(), "the node reports no finalized block: payments stay short of final until it does");
                None
            }
            _ => None,
        }
    }

    /// Connects the node's blocks after the cursor in bounded steps, one transaction
    /// per step; returns the node's height once at its tip.
    async fn sync_blocks(&mut self) -> Result<u64, WatchError> {
        self.ctx.first_cursor(self.node()).await?;
        loop {
            let cur = self.ctx.step().await?;
            let (tip, tip_hash) = self.node().tip().await?;
            self.ctx.chain.set_status(|s| s.node_height = Some(tip));
            if tip_hash.to_string() == cur.hash {
                return Ok(tip);
            }
            if tip <= cur.height {
                self.reorg(&cur).await?;
                continue;
            }
            let end = tip.min(cur.height + BLOCKS_PER_STEP);
            let chain = &self.ctx.chain;
            let blocks = read(chain, cur.height + 1, end, &|k| chain.watchlist.get(k)).await?;
            let linked = linked_prefix(&blocks, &cur.hash);
            if linked == 0 {
                self.reorg(&cur).await?;
                continue;
            }
            let connect = blocks.into_iter().take(linked).map(|(b, _)| b).collect();
            self.ctx
                .apply(ChainUpdate {
                    connect,
                    ..Default::default()
                })
                .await?;
        }
    }

    /// Walks back to the fork point, then disconnects our blocks above it and connects
    /// the node's, in one transaction.
    async fn reorg(&mut self, cur: &Cursor) -> Result<(), WatchError> {
        let fork = self.ctx.fork(self.node(), cur).await?;
        let end = fork.node_height.min(cur.height + 1);
        let chain = &self.ctx.chain;
        let blocks = if end > fork.height {
            read(chain, fork.height + 1, end, &|k| chain.watchlist.get(k)).await?
        } else {
            Vec::new()
        };
        if linked_prefix(&blocks, &fork.hash) != blocks.len() {
            return Err(NodeError::Transient(
                "the node's best chain moved during a reorganisation; starting over".into(),
            )
            .into());
        }
        let applied = self
            .ctx
            .apply(ChainUpdate {
                disconnect_above: Some(fork.height),
                connect: blocks.into_iter().map(|(b, _)| b).collect(),
                ..Default::default()
            })
            .await?;
        watcher::alarm_if_final(&self.ctx.chain, cur, fork.height, &applied.final_reorged);
        Ok(())
    }
}

impl watcher::Follower for Follower {
    async fn poll(&mut self, started: i64) -> Result<(), WatchError> {
        Follower::poll(self, started).await
    }

    async fn pushed(&self) {
        match &self.pushed {
            Some(heads) => heads.notified().await,
            None => std::future::pending().await,
        }
    }
}

impl NodeView for EthNode {
    async fn height(&self) -> Result<u64, NodeError> {
        EthNode::height(self).await
    }

    async fn hash_at(&self, height: u64) -> Result<Option<String>, NodeError> {
        Ok(EthNode::hash_at(self, height).await?.map(|h| h.to_string()))
    }
}

/// How many of `blocks` chain up from `prev`, each to the one before.
fn linked_prefix(blocks: &[(BlockFound, B256)], prev: &str) -> usize {
    let mut prev = prev.to_string();
    for (i, (b, parent)) in blocks.iter().enumerate() {
        if parent.to_string() != prev {
            return i;
        }
        prev = b.hash.clone();
    }
    blocks.len()
}

/// Reads blocks `from..=to` and the payments in them to keys `owner` knows, each block
/// with its parent hash. Stops early where the node has no block yet.
async fn read(
    chain: &Chain,
    from: u64,
    to: u64,
    owner: &(dyn Fn(&[u8]) -> Option<Owner> + Sync),
) -> Result<Vec<(BlockFound, B256)>, NodeError> {
    let node = chain
        .ethnode
        .as_ref()
        .expect("an ethereum chain has a node");
    let settings = &chain.settings;
    // Several calls in flight at once: the node answers them side by side.
    let fetched: Vec<Option<EvmBlock>> = stream::iter(from..=to)
        .map(|h| node.block(h))
        .buffered(IN_FLIGHT)
        .try_collect()
        .await?;
    let blocks: Vec<EvmBlock> = fetched.into_iter().map_while(|b| b).collect();
    let Some(last) = blocks.last() else {
        return Ok(Vec::new());
    };
    let by_height: BTreeMap<u64, B256> = blocks.iter().map(|b| (b.number, b.hash)).collect();

    // Native coin: payments keyed (tx, position in the call tree); a direct one is 0.
    // Ordered by the transaction's place in its block: the order they are detected in.
    let mut native: BTreeMap<(u64, usize, u32), (B256, Owner, U256)> = BTreeMap::new();
    let traces: Vec<_> = match settings.trace_internal_transfers {
        true => {
            let numbers: Vec<u64> = blocks.iter().map(|b| b.number).collect();
            stream::iter(numbers)
                .map(|n| node.traces(n))
                .buffered(IN_FLIGHT)
                .try_collect()
                .await?
        }
        false => Vec::new(),
    };
    for (at, b) in blocks.iter().enumerate() {
        for (pos, (tx, to, value)) in b.txs.iter().enumerate() {
            if let Some(invoice) = to
                .filter(|_| !value.is_zero())
                .and_then(|a| owner(a.as_slice()))
            {
                native.insert((b.number, pos, 0), (*tx, invoice, *value));
            }
        }
        if let Some(traces) = traces.get(at) {
            for (i, (hash, frame)) in traces.iter().enumerate() {
                let tx = match hash.or_else(|| b.txs.get(i).map(|t| t.0)) {
                    Some(tx) => tx,
                    None => continue,
                };
                for (index, invoice, value) in internal_payments(frame, owner) {
                    native.insert((b.number, i, index), (tx, invoice, value));
                }
            }
        }
    }
    // Only successful transactions pay: one receipt per paying transaction.
    let txs: BTreeSet<B256> = native.values().map(|(tx, _, _)| *tx).collect();
    let outcomes: Vec<(B256, bool)> = stream::iter(txs)
        .map(|tx| async move { Ok::<_, NodeError>((tx, node.succeeded(tx).await?)) })
        .buffered(IN_FLIGHT)
        .try_collect()
        .await?;
    let failed: BTreeSet<B256> = outcomes
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(tx, _)| tx)
        .collect();

    let mut found: BTreeMap<u64, Vec<Found>> = BTreeMap::new();
    for ((height, _, index), (tx, owner, amount)) in native {
        if !failed.contains(&tx) {
            found.entry(height).or_default().push(Found {
                owner,
                asset: settings.native.symbol.clone(),
                txid: tx.to_string(),
                index,
                amount,
                rbf: false,
            });
        }
    }

    // Tokens: a failed transaction leaves no log, so every log is a transfer that happened.
    // Every accepted token is read, whichever the invoice takes: a transfer of another
    // to its address is recorded (`accepted: false`) so that the backend can refund it.
    let contracts: Vec<Address> = settings.tokens.iter().map(|t| t.contract).collect();
    if !contracts.is_empty() {
        for t in transfers(node, from, last.number, &contracts).await? {
            if by_height.get(&t.block_number) != Some(&t.block_hash) {
                return Err(NodeError::Transient(format!(
                    "the node's chain moved while reading logs (block {}); reading again",
                    t.block_number
                )));
            }
            if t.removed {
                continue;
            }
            let Some(to) = owner(t.to.as_slice()) else {
                continue;
            };
            let Some(token) = settings.tokens.iter().find(|k| k.contract == t.contract) else {
                continue;
            };
            let Ok(index) = u32::try_from(t.log_index) else {
                continue;
            };
            found.entry(t.block_number).or_default().push(Found {
                owner: to,
                asset: token.asset.symbol.clone(),
                txid: t.tx.to_string(),
                index,
                amount: t.value,
                rbf: false,
            });
        }
    }

    Ok(blocks
        .into_iter()
        .map(|b| {
            let payments = found.remove(&b.number).unwrap_or_default();
            let block = BlockFound {
                height: b.number,
                hash: b.hash.to_string(),
                time: i64::try_from(b.timestamp).unwrap_or(i64::MAX),
                payments,
            };
            (block, b.parent)
        })
        .collect())
}

/// Transfer logs over `from..=to`: never a block skipped, never more asked than the
/// node allows.
async fn transfers(
    node: &EthNode,
    from: u64,
    to: u64,
    contracts: &[Address],
) -> Result<Vec<TokenTransfer>, NodeError> {
    narrowing(from, to, |a, b| node.transfers(a, b, contracts)).await
}

/// Calls `fetch` over consecutive ranges covering `from..=to`, halving the range while
/// the node refuses it as too wide, and gives the results in order.
async fn narrowing<T, F, Fut>(from: u64, to: u64, mut fetch: F) -> Result<Vec<T>, NodeError>
where
    F: FnMut(u64, u64) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>, NodeError>>,
{
    let mut out = Vec::new();
    let mut start = from;
    let mut width = to - from + 1;
    while start <= to {
        let end = to.min(start + width - 1);
        match fetch(start, end).await {
            Ok(items) => {
                out.extend(items);
                start = end + 1;
            }
            Err(e) if maybe_too_wide(&e) && end > start => {
                width = (end - start).div_ceil(2).max(1);
                tracing::debug!(
                    "the node refused blocks {start}..={end} ({e}); asking for {width}"
                );
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// ETH moved inside a transaction to keys `owner` knows: (position in the call tree,
/// counted depth-first from the top-level call as 0; whose key; amount). A frame that
/// reverted moves nothing, nor does anything under it; delegate and static calls
/// carry no value of their own.
fn internal_payments(
    top: &CallFrame,
    owner: &(dyn Fn(&[u8]) -> Option<Owner> + Sync),
) -> Vec<(u32, Owner, U256)> {
    let mut out = Vec::new();
    let mut position = 0u32;
    let mut stack: Vec<(&CallFrame, bool)> = vec![(top, false)];
    while let Some((frame, reverted_above)) = stack.pop() {
        let index = position;
        position += 1;
        let reverted = reverted_above || frame.error.is_some();
        let moves_value = matches!(
            frame.kind.as_str(),
            "CALL" | "CREATE" | "CREATE2" | "SELFDESTRUCT"
        );
        if !reverted && moves_value {
            let value = frame.value.unwrap_or_default();
            if let Some(invoice) = frame
                .to
                .filter(|_| !value.is_zero())
                .and_then(|to| owner(to.as_slice()))
            {
                out.push((index, invoice, value));
            }
        }
        // Depth-first in call order: push children reversed.
        stack.extend(frame.calls.iter().rev().map(|c| (c, reverted)));
    }
    out
}

/// A rescan on an Ethereum-like chain: reads blocks `from..=` the cursor with the
/// follower's matching (traces included) for the one address, `target` of `owner`,
/// and commits what was missed. On a chain without traces, the address's balance at
/// the cursor is compared with its recorded transfers of the coin: what they do not
/// explain is returned (an alarm for the operator, never a payment).
pub(crate) async fn rescan(
    chain: &Chain,
    store: &Arc<Store>,
    owner: &Owner,
    target: &Target,
    from_height: Option<u64>,
) -> anyhow::Result<(usize, Option<U256>)> {
    let node = chain
        .ethnode
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the chain has no node"))?;
    let name = &chain.settings.name;
    let Some(watcher::RescanStart {
        key,
        from: mut start,
        cursor,
        ours,
    }) = watcher::rescan_start(chain, store, target, from_height).await?
    else {
        return Ok((0, None));
    };
    let of = |k: &[u8]| (k == key.as_slice()).then(|| owner.clone());
    let mut blocks = Vec::new();
    while start <= cursor.height {
        let end = cursor.height.min(start + BLOCKS_PER_STEP - 1);
        for (b, _) in read(chain, start, end, &of).await? {
            // Only blocks on the chain the store knows; the follower handles the rest.
            let held = ours.get(&b.height);
            if !b.payments.is_empty() && held.is_none_or(|h| *h == b.hash) {
                blocks.push(b);
            }
        }
        start = end + 1;
    }
    let applied = watcher::commit_rescan(chain, store, blocks).await?;
    // Whatever asset the invoice takes, the coin the address holds is what its recorded
    // coin payments (accepted or not) should add up to.
    let unexplained = if !chain.settings.trace_internal_transfers {
        let address = Address::from_slice(&key);
        let balance = node.balance(address, cursor.height).await?;
        let (who, coin) = (owner.clone(), chain.settings.native.symbol.clone());
        let recorded = store
            .blocking(move |s| s.confirmed_total(&who, &coin, cursor.height))
            .await?;
        let gap = balance.saturating_sub(recorded);
        if !gap.is_zero() {
            tracing::warn!(chain = %name, owner = owner.id(), "the address holds more than its recorded payments explain: {gap} base units (ETH sent by a contract, not traced?)");
        }
        Some(gap)
    } else {
        None
    };
    Ok((applied.new_payments, unexplained))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: &str, to: u8, value: u64, error: bool, calls: Vec<CallFrame>) -> CallFrame {
        CallFrame {
            kind: kind.into(),
            to: Some(Address::repeat_byte(to)),
            value: Some(U256::from(value)),
            error: error.then(|| "execution reverted".into()),
            calls,
        }
    }

    fn watched(k: &[u8]) -> Option<Owner> {
        (k == Address::repeat_byte(0xaa).as_slice()).then(|| Owner::Invoice("inv".into()))
    }

    #[test]
    fn call_tree_positions_are_depth_first_from_zero() {
        // 0 top -> 1 (-> 2 pays, 3 delegatecall "pays"), 4 pays
        let top = frame(
            "CALL",
            0x01,
            5,
            false,
            vec![
                frame(
                    "CALL",
                    0x02,
                    0,
                    false,
                    vec![
                        frame("CALL", 0xaa, 7, false, vec![]),
                        frame("DELEGATECALL", 0xaa, 7, false, vec![]),
                    ],
                ),
                frame("CALL", 0xaa, 9, false, vec![]),
            ],
        );
        let got: Vec<(u32, u64)> = internal_payments(&top, &watched)
            .into_iter()
            .map(|(i, _, v)| (i, v.to::<u64>()))
            .collect();
        assert_eq!(got, vec![(2, 7), (4, 9)]);
    }

    #[test]
    fn a_reverted_frame_pays_nothing_nor_does_anything_under_it() {
        let top = frame(
            "CALL",
            0x01,
            5,
            false,
            vec![frame(
                "CALL",
                0x01,
                5,
                true,
                vec![frame("CALL", 0xaa, 5, false, vec![])],
            )],
        );
        assert!(internal_payments(&top, &watched).is_empty());
        let direct = frame("CALL", 0xaa, 5, false, vec![]);
        assert_eq!(internal_payments(&direct, &watched)[0].0, 0);
        let failed = frame("CALL", 0xaa, 5, true, vec![]);
        assert!(internal_payments(&failed, &watched).is_empty());
    }

    #[tokio::test]
    async fn log_ranges_narrow_until_the_node_accepts_and_skip_nothing() {
        let asked = std::sync::Mutex::new(Vec::new());
        let got = narrowing(100, 199, |a, b| {
            asked.lock().unwrap().push((a, b));
            async move {
                if b - a + 1 > 30 {
                    Err(NodeError::Persistent(
                        "the node answered: query exceeds max block range 30".into(),
                    ))
                } else {
                    Ok((a..=b).collect::<Vec<u64>>())
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(
            got,
            (100..=199).collect::<Vec<_>>(),
            "every block once, in order"
        );
        let asked = asked.into_inner().unwrap();
        assert!(asked.iter().all(|(a, b)| b >= a && *b <= 199));
        assert_eq!(asked[..3], [(100, 199), (100, 149), (100, 124)]);
        // A node that is away is not "too wide": the error goes up, to be retried.
        let e = narrowing(1, 10, |_, _| async {
            Err::<Vec<u64>, _>(NodeError::Transient("node unreachable".into()))
        })
        .await
        .unwrap_err();
        assert!(matches!(e, NodeError::Transient(_)));
        // A range the node cannot answer in time is narrowed like a refused one.
        let got = narrowing(1, 8, |a, b| async move {
            if b > a {
                Err(NodeError::TimedOut {
                    method: "eth_getLogs",
                    secs: 30.0,
                })
            } else {
                Ok(vec![a])
            }
        })
        .await
        .unwrap();
        assert_eq!(got, (1..=8).collect::<Vec<_>>());
    }
}
