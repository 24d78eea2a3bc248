//! Bitcoin Core's JSON-RPC, read-only, over [`crate::httprpc`]'s kept-alive
//! connections, with the calls the follower makes many of at once sent as batches.
//! Errors are sorted into the ones that pass (node down, warming up) and the ones an
//! operator must fix (a pruned block settled still needs).

use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::{Block, BlockHash, Transaction, Txid};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::config::RpcAuth;
use crate::httprpc::{HttpRpc, RpcFailure};
use crate::rpc::NodeCalls;

/// Why a node call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum NodeError {
    /// Retried with backoff: the node is down, busy or warming up.
    #[error("{0}")]
    Transient(String),
    /// Needs the operator: retrying alone will not help.
    #[error("{0}")]
    Persistent(String),
    /// The node's RPC credentials cannot be read, or the node refused them: retried
    /// like `Transient` (the operator may fix the file's group, or the node restart and
    /// write a new cookie), but never reported as "node unreachable".
    #[error("RPC credentials: {0}")]
    Credentials(String),
    /// The node answered that the thing asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// No answer within `rpc_timeout`: retried like `Transient`.
    #[error("node unreachable: no answer to {method} within {secs} s (rpc_timeout)")]
    TimedOut { method: &'static str, secs: f64 },
}

impl NodeError {
    /// True when the node could not be reached at all.
    pub(crate) fn unreachable(&self) -> bool {
        match self {
            NodeError::Transient(m) => m.starts_with("node unreachable"),
            NodeError::TimedOut { .. } => true,
            NodeError::Persistent(_) | NodeError::NotFound(_) | NodeError::Credentials(_) => false,
        }
    }
}

/// A mempool transaction as the lifecycle needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MempoolEntry {
    /// When the node took it in (`getmempoolentry`'s `time`): the order of payments
    /// first seen in the same poll.
    pub(crate) time: i64,
    /// Signals BIP125, itself or through an unconfirmed ancestor; or the node could
    /// not tell.
    pub(crate) replaceable: bool,
}

/// A Bitcoin Core node.
pub(crate) struct Bitcoind {
    rpc: HttpRpc,
    calls: std::sync::Arc<NodeCalls>,
}

/// How many calls go in one batch: big enough to make round trips rare, small enough
/// that one answer stays a few megabytes.
const BATCH: usize = 500;

// RPC_IN_WARMUP, RPC_INVALID_ADDRESS_OR_KEY, RPC_INVALID_PARAMETER.
const WARMUP: i64 = -28;
const NOT_FOUND: i64 = -5;
const OUT_OF_RANGE: i64 = -8;

impl Bitcoind {
    /// A client for `url`; nothing is sent yet.
    pub(crate) fn new(url: &str, auth: &RpcAuth, calls: std::sync::Arc<NodeCalls>) -> Bitcoind {
        Bitcoind {
            rpc: HttpRpc::new(url, auth),
            calls,
        }
    }

    async fn call<T: DeserializeOwned + Send + 'static>(
        &self,
        method: &'static str,
        args: &[Value],
    ) -> Result<T, NodeError> {
        let params = Value::Array(args.to_vec());
        self.calls
            .run(method, async {
                self.rpc
                    .call::<T>(method, params)
                    .await?
                    .map_err(|f| classify(method, f))
            })
            .await
    }

    /// `method` once per entry of `args`, in batches; each answer in its place.
    async fn batch<T: DeserializeOwned + Send + 'static>(
        &self,
        method: &'static str,
        args: Vec<Value>,
    ) -> Result<Vec<Result<T, NodeError>>, NodeError> {
        let mut out = Vec::with_capacity(args.len());
        let mut args = args.into_iter().peekable();
        while args.peek().is_some() {
            let chunk: Vec<Value> = args.by_ref().take(BATCH).collect();
            let answers = self
                .calls
                .run(method, self.rpc.batch::<T>(method, chunk))
                .await?;
            out.extend(
                answers
                    .into_iter()
                    .map(|a| a.map_err(|f| classify(method, f))),
            );
        }
        Ok(out)
    }

    /// `getbestblockhash`.
    pub(crate) async fn best_block_hash(&self) -> Result<BlockHash, NodeError> {
        self.call("getbestblockhash", &[]).await
    }

    /// `getblockcount`.
    pub(crate) async fn block_count(&self) -> Result<u64, NodeError> {
        self.call("getblockcount", &[]).await
    }

    /// `getblockhash`; `None` above the tip.
    pub(crate) async fn block_hash(&self, height: u64) -> Result<Option<BlockHash>, NodeError> {
        match self.call("getblockhash", &[json!(height)]).await {
            Ok(h) => Ok(Some(h)),
            Err(NodeError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `getblockhash` of each of `heights`, in one batch; `None` above the tip.
    pub(crate) async fn block_hashes(
        &self,
        heights: std::ops::RangeInclusive<u64>,
    ) -> Result<Vec<Option<BlockHash>>, NodeError> {
        let args = heights.map(|h| json!([h])).collect();
        self.batch::<BlockHash>("getblockhash", args)
            .await?
            .into_iter()
            .map(|a| match a {
                Ok(h) => Ok(Some(h)),
                Err(NodeError::NotFound(_)) => Ok(None),
                Err(e) => Err(e),
            })
            .collect()
    }

    /// `getblock` at verbosity 0, parsed and decoded off the async threads.
    pub(crate) async fn block(&self, hash: &BlockHash) -> Result<Block, NodeError> {
        let at = *hash;
        let decode = move |hex: String| {
            let bytes = const_hex::decode(&hex)
                .map_err(|e| NodeError::Transient(format!("block {at} is not hex: {e}")))?;
            bitcoin::consensus::deserialize(&bytes)
                .map_err(|e| NodeError::Transient(format!("block {at} did not decode: {e}")))
        };
        let params = json!([hash, 0]);
        let answer = self
            .calls
            .run("getblock", async {
                self.rpc
                    .call_then("getblock", params, decode)
                    .await?
                    .map_err(|f| classify("getblock", f))
            })
            .await;
        match answer {
            Err(NodeError::Transient(m)) if m.contains("pruned") => {
                Err(NodeError::Persistent(format!(
                    "the node has pruned block {hash}, which settled has not scanned yet: \
                     raise the node's prune target or set start_height past it ({m})"
                )))
            }
            other => other,
        }
    }

    /// `getrawmempool`.
    pub(crate) async fn mempool(&self) -> Result<Vec<Txid>, NodeError> {
        self.call("getrawmempool", &[]).await
    }

    /// `getrawtransaction` of mempool transactions, in batches, decoded off the async
    /// threads; `None` for one that left the mempool.
    pub(crate) async fn mempool_txs(
        &self,
        txids: &[Txid],
    ) -> Result<Vec<Option<Transaction>>, NodeError> {
        let args = txids.iter().map(|t| json!([t])).collect();
        let answers = self.batch::<String>("getrawtransaction", args).await?;
        let txids = txids.to_vec();
        off_thread(move || {
            answers
                .into_iter()
                .zip(txids)
                .map(|(a, txid)| match a {
                    Ok(hex) => deserialize_hex(&hex).map(Some).map_err(|e| {
                        NodeError::Transient(format!("transaction {txid} did not decode: {e}"))
                    }),
                    Err(NodeError::NotFound(_)) => Ok(None),
                    Err(e) => Err(e),
                })
                .collect()
        })
        .await
    }

    /// What the lifecycle needs of mempool transactions that pay invoices, in one
    /// batch; `None` for one that left the mempool.
    pub(crate) async fn mempool_entries(
        &self,
        txs: &[(Txid, &Transaction)],
    ) -> Result<Vec<Option<MempoolEntry>>, NodeError> {
        let args = txs.iter().map(|(t, _)| json!([t])).collect();
        let answers = self.batch::<Value>("getmempoolentry", args).await?;
        let mut out = Vec::with_capacity(txs.len());
        for ((txid, tx), a) in txs.iter().zip(answers) {
            let entry = match a {
                Ok(v) => v,
                Err(NodeError::NotFound(_)) => {
                    out.push(None);
                    continue;
                }
                Err(e) => return Err(e),
            };
            // A node that does not say when comes last among those seen in the same poll.
            let time = entry
                .get("time")
                .and_then(Value::as_i64)
                .unwrap_or(i64::MAX);
            let replaceable = self.signals_rbf(txid, tx, &entry).await?;
            out.push(Some(MempoolEntry { time, replaceable }));
        }
        Ok(out)
    }

    /// BIP125 signalling, by the transaction itself or inherited from an unconfirmed
    /// ancestor, read from the transactions' own `nSequence`: Core 31 reports
    /// `bip125-replaceable` only under `-deprecatedrpc=bip125`, so its absence says
    /// nothing. Whatever the node cannot tell counts as replaceable.
    async fn signals_rbf(
        &self,
        txid: &Txid,
        tx: &Transaction,
        entry: &Value,
    ) -> Result<bool, NodeError> {
        if tx.is_explicitly_rbf() || entry.get("bip125-replaceable") == Some(&Value::Bool(true)) {
            return Ok(true);
        }
        if entry.get("ancestorcount").and_then(Value::as_u64) == Some(1) {
            return Ok(false);
        }
        let ancestors: Vec<Txid> = match self.call("getmempoolancestors", &[json!(txid)]).await {
            Ok(a) => a,
            Err(NodeError::NotFound(_)) => return Ok(true),
            Err(e) => return Err(e),
        };
        // Signals, or left the mempool before we could look: cannot vouch for it.
        let parents = self.mempool_txs(&ancestors).await?;
        Ok(parents
            .iter()
            .any(|p| p.as_ref().is_none_or(|p| p.is_explicitly_rbf())))
    }

    /// `getblockchaininfo`'s `initialblockdownload`, `blocks` and `headers`.
    pub(crate) async fn chain_info(&self) -> Result<Value, NodeError> {
        self.call("getblockchaininfo", &[]).await
    }
}

fn classify(method: &str, f: RpcFailure) -> NodeError {
    match f.code {
        WARMUP => NodeError::Transient(format!("node is warming up: {}", f.message)),
        NOT_FOUND | OUT_OF_RANGE => NodeError::NotFound(format!("{method}: {}", f.message)),
        code => NodeError::Transient(format!("{method}: {} (code {code})", f.message)),
    }
}

/// Runs CPU-heavy parsing or decoding of a node's answer on a blocking thread.
pub(crate) async fn off_thread<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, NodeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NodeError::Transient(format!("decoding the node's answer failed: {e}")))?
}
