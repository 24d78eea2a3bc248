//! An Ethereum-like node's JSON-RPC, read-only, through alloy's HTTP provider. Its
//! `AnyNetwork` types read blocks of every EVM chain (rollup deposit transactions and
//! other unknown types included). Errors are sorted as for Bitcoin Core: the node
//! being away passes, an error answer needs the operator.

use alloy::consensus::Transaction as _;
use alloy::eips::{BlockId, BlockNumberOrTag};
use alloy::network::{AnyNetwork, ReceiptResponse as _, TransactionResponse as _};
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{Provider, RootProvider};
use alloy::rpc::types::{Filter, Log};
use alloy::sol_types::SolEvent as _;
use alloy::transports::{RpcError, TransportError, TransportErrorKind};
use serde::Deserialize;
use serde_json::json;

use crate::bitcoind::NodeError;
use crate::config::RpcAuth;
use crate::rpc::NodeCalls;

alloy::sol! {
    /// The ERC-20 transfer event.
    event Transfer(address indexed from, address indexed to, uint256 value);
}

/// A block as the follower needs it.
#[derive(Debug, Clone)]
pub(crate) struct EvmBlock {
    pub(crate) number: u64,
    pub(crate) hash: B256,
    pub(crate) parent: B256,
    pub(crate) timestamp: u64,
    /// Each transaction's hash, recipient (none for a contract creation) and value.
    pub(crate) txs: Vec<(B256, Option<Address>, U256)>,
}

/// One ERC-20 transfer log.
#[derive(Debug, Clone)]
pub(crate) struct TokenTransfer {
    pub(crate) contract: Address,
    pub(crate) to: Address,
    pub(crate) value: U256,
    pub(crate) tx: B256,
    pub(crate) log_index: u64,
    pub(crate) block_number: u64,
    pub(crate) block_hash: B256,
    pub(crate) removed: bool,
}

/// A call frame of the `callTracer`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CallFrame {
    #[serde(rename = "type", default)]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) to: Option<Address>,
    #[serde(default)]
    pub(crate) value: Option<U256>,
    /// Set when this frame reverted (and with it everything under it).
    #[serde(default)]
    pub(crate) error: Option<String>,
    #[serde(default)]
    pub(crate) calls: Vec<CallFrame>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TraceEntry {
    #[serde(default)]
    tx_hash: Option<B256>,
    #[serde(default)]
    result: Option<CallFrame>,
    #[serde(default)]
    error: Option<String>,
}

/// An Ethereum JSON-RPC endpoint.
pub(crate) struct EthNode {
    provider: RootProvider<AnyNetwork>,
    calls: std::sync::Arc<NodeCalls>,
}

impl EthNode {
    /// A client for `url`; nothing is sent yet.
    pub(crate) fn new(
        url: &str,
        auth: &RpcAuth,
        calls: std::sync::Arc<NodeCalls>,
    ) -> anyhow::Result<EthNode> {
        let mut url: alloy::transports::http::reqwest::Url = url.parse()?;
        if let RpcAuth::UserPass(user, password) = auth {
            // reqwest sends the URL's credentials as HTTP basic auth.
            url.set_username(user)
                .and_then(|()| url.set_password(Some(password)))
                .map_err(|()| anyhow::anyhow!("this rpc_url cannot carry credentials"))?;
        }
        Ok(EthNode {
            provider: RootProvider::<AnyNetwork>::new_http(url),
            calls,
        })
    }

    /// `eth_chainId`.
    pub(crate) async fn chain_id(&self) -> Result<u64, NodeError> {
        self.calls
            .run("eth_chainId", async {
                self.provider.get_chain_id().await.map_err(sort)
            })
            .await
    }

    /// The height of the node's best block.
    pub(crate) async fn height(&self) -> Result<u64, NodeError> {
        self.calls
            .run("eth_blockNumber", async {
                self.provider.get_block_number().await.map_err(sort)
            })
            .await
    }

    /// The node's best block: its height and hash.
    pub(crate) async fn tip(&self) -> Result<(u64, B256), NodeError> {
        let block = self
            .calls
            .run("eth_getBlockByNumber", async {
                self.provider
                    .get_block_by_number(BlockNumberOrTag::Latest)
                    .await
                    .map_err(sort)
            })
            .await?
            .ok_or_else(|| NodeError::Transient("the node has no latest block yet".into()))?;
        Ok((block.header.number, block.header.hash))
    }

    /// The hash of the best chain's block at `height`, if the node has one.
    pub(crate) async fn hash_at(&self, height: u64) -> Result<Option<B256>, NodeError> {
        let block = self
            .calls
            .run("eth_getBlockByNumber", async {
                self.provider
                    .get_block_by_number(BlockNumberOrTag::Number(height))
                    .await
                    .map_err(sort)
            })
            .await?;
        Ok(block.map(|b| b.header.hash))
    }

    /// The height of the node's `finalized` block; `None` where the node has none.
    pub(crate) async fn finalized(&self) -> Result<Option<u64>, NodeError> {
        let block = self
            .calls
            .run("eth_getBlockByNumber", async {
                self.provider
                    .get_block_by_number(BlockNumberOrTag::Finalized)
                    .await
                    .map_err(sort)
            })
            .await?;
        Ok(block.map(|b| b.header.number))
    }

    /// The block at `height` with its transactions, if the node has one.
    pub(crate) async fn block(&self, height: u64) -> Result<Option<EvmBlock>, NodeError> {
        let Some(b) = self
            .calls
            .run("eth_getBlockByNumber", async {
                self.provider
                    .get_block_by_number(BlockNumberOrTag::Number(height))
                    .full()
                    .await
                    .map_err(sort)
            })
            .await?
        else {
            return Ok(None);
        };
        let txs = b
            .transactions
            .txns()
            .map(|tx| (tx.tx_hash(), tx.to(), tx.value()))
            .collect();
        Ok(Some(EvmBlock {
            number: b.header.number,
            hash: b.header.hash,
            parent: b.header.parent_hash,
            timestamp: b.header.timestamp,
            txs,
        }))
    }

    /// Whether `tx` succeeded (receipt `status = 1`).
    pub(crate) async fn succeeded(&self, tx: B256) -> Result<bool, NodeError> {
        let receipt = self
            .calls
            .run("eth_getTransactionReceipt", async {
                self.provider
                    .get_transaction_receipt(tx)
                    .await
                    .map_err(sort)
            })
            .await?
            .ok_or_else(|| NodeError::Transient(format!("no receipt yet for {tx}")))?;
        Ok(receipt.status())
    }

    /// ERC-20 `Transfer` logs of `contracts` in blocks `from..=to`.
    pub(crate) async fn transfers(
        &self,
        from: u64,
        to: u64,
        contracts: &[Address],
    ) -> Result<Vec<TokenTransfer>, NodeError> {
        let filter = Filter::new()
            .from_block(from)
            .to_block(to)
            .address(contracts.to_vec())
            .event_signature(Transfer::SIGNATURE_HASH);
        let logs = self
            .calls
            .run("eth_getLogs", async {
                self.provider.get_logs(&filter).await.map_err(sort)
            })
            .await?;
        Ok(logs.iter().filter_map(transfer_of).collect())
    }

    /// The `callTracer` call tree of every transaction in block `height`, in block
    /// order; a transaction the node could not trace is an error, never a gap.
    pub(crate) async fn traces(
        &self,
        height: u64,
    ) -> Result<Vec<(Option<B256>, CallFrame)>, NodeError> {
        let entries: Vec<TraceEntry> = self
            .calls
            .run("debug_traceBlockByNumber", async {
                self.provider
                    .raw_request(
                        "debug_traceBlockByNumber".into(),
                        (
                            BlockNumberOrTag::Number(height),
                            json!({ "tracer": "callTracer" }),
                        ),
                    )
                    .await
                    .map_err(sort)
            })
            .await?;
        entries
            .into_iter()
            .map(|e| match (e.result, e.error) {
                (Some(frame), None) => Ok((e.tx_hash, frame)),
                (_, error) => Err(NodeError::Persistent(format!(
                    "the node could not trace a transaction of block {height}: {}",
                    error.unwrap_or_else(|| "no result".into())
                ))),
            })
            .collect()
    }

    /// The balance of `address` at block `height`.
    pub(crate) async fn balance(&self, address: Address, height: u64) -> Result<U256, NodeError> {
        self.calls
            .run("eth_getBalance", async {
                self.provider
                    .get_balance(address)
                    .block_id(BlockId::number(height))
                    .await
                    .map_err(sort)
            })
            .await
    }
}

fn transfer_of(log: &Log) -> Option<TokenTransfer> {
    // ERC-721 shares the signature but indexes the token id: four topics, not three.
    if log.topics().len() != 3 {
        return None;
    }
    let event = Transfer::decode_log_data(log.data()).ok()?;
    Some(TokenTransfer {
        contract: log.address(),
        to: event.to,
        value: event.value,
        tx: log.transaction_hash?,
        log_index: log.log_index?,
        block_number: log.block_number?,
        block_hash: log.block_hash?,
        removed: log.removed,
    })
}

/// Sorts an alloy error: the node away or overloaded passes; an error answer means
/// the node refuses (a method it does not serve, a range it will not scan).
fn sort(e: TransportError) -> NodeError {
    match e {
        RpcError::ErrorResp(p) => NodeError::Persistent(format!("the node answered: {p}")),
        RpcError::Transport(TransportErrorKind::HttpError(h))
            if h.status == 401 || h.status == 403 =>
        {
            NodeError::Persistent(format!(
                "the node refused the credentials (HTTP {}): check rpc_user and rpc_password",
                h.status
            ))
        }
        RpcError::Transport(t) => NodeError::Transient(format!("node unreachable: {t}")),
        RpcError::NullResp => NodeError::Transient("the node answered null".into()),
        other => NodeError::Persistent(format!("unexpected answer from the node: {other}")),
    }
}

/// True when an error answer may mean "ask for less" (a log range too wide, too many
/// results), so a narrower range is worth trying.
pub(crate) fn maybe_too_wide(e: &NodeError) -> bool {
    match e {
        NodeError::Persistent(m) => m.starts_with("the node answered"),
        // A range too heavy to answer within rpc_timeout is too wide as well.
        NodeError::TimedOut { .. } => true,
        NodeError::Transient(_) | NodeError::NotFound(_) | NodeError::Credentials(_) => false,
    }
}
