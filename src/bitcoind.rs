//! Bitcoin Core's JSON-RPC, read-only, through the async `corepc-client`. Errors are
//! sorted into the ones that pass (node down, warming up) and the ones an operator
//! must fix (a pruned block settled still needs).

use std::sync::Mutex;

use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::{Block, BlockHash, Transaction, Txid};
use corepc_client::{Auth, Client};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::config::RpcAuth;
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
            NodeError::Persistent(_) | NodeError::NotFound(_) => false,
        }
    }
}

/// A Bitcoin Core node.
pub(crate) struct Bitcoind {
    url: String,
    auth: RpcAuth,
    // Rebuilt after a transport error: the cookie file changes when the node restarts.
    client: Mutex<Option<std::sync::Arc<Client>>>,
    calls: std::sync::Arc<NodeCalls>,
}

// RPC_IN_WARMUP, RPC_INVALID_ADDRESS_OR_KEY, RPC_INVALID_PARAMETER.
const WARMUP: i32 = -28;
const NOT_FOUND: i32 = -5;
const OUT_OF_RANGE: i32 = -8;

impl Bitcoind {
    /// A client for `url`; nothing is sent yet.
    pub(crate) fn new(url: &str, auth: &RpcAuth, calls: std::sync::Arc<NodeCalls>) -> Bitcoind {
        Bitcoind {
            url: url.to_string(),
            auth: auth.clone(),
            client: Mutex::new(None),
            calls,
        }
    }

    fn client(&self) -> Result<std::sync::Arc<Client>, NodeError> {
        let mut slot = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let auth = match &self.auth {
            RpcAuth::None => Auth::None,
            RpcAuth::UserPass(u, p) => Auth::UserPass(u.clone(), p.clone()),
            RpcAuth::Cookie(path) => Auth::CookieFile(path.clone()),
        };
        let client = Client::new_with_auth(&self.url, auth).map_err(|e| {
            NodeError::Transient(format!(
                "node unreachable: cannot read the RPC credentials: {e}"
            ))
        })?;
        let client = std::sync::Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: &'static str,
        args: &[Value],
    ) -> Result<T, NodeError> {
        let client = self.client()?;
        let answer = self
            .calls
            .run(method, async {
                client
                    .call::<T>(method, args)
                    .await
                    .map_err(|e| classify(method, e))
            })
            .await;
        if answer.as_ref().is_err_and(NodeError::unreachable) {
            *self.client.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        answer
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

    /// `getblock` at verbosity 0, decoded here.
    pub(crate) async fn block(&self, hash: &BlockHash) -> Result<Block, NodeError> {
        let hex: String = match self.call("getblock", &[json!(hash), json!(0)]).await {
            Err(NodeError::Transient(m)) if m.contains("pruned") => {
                return Err(NodeError::Persistent(format!(
                    "the node has pruned block {hash}, which settled has not scanned yet: \
                     raise the node's prune target or set start_height past it ({m})"
                )));
            }
            other => other?,
        };
        deserialize_hex(&hex)
            .map_err(|e| NodeError::Transient(format!("block {hash} did not decode: {e}")))
    }

    /// `getrawmempool`.
    pub(crate) async fn mempool(&self) -> Result<Vec<Txid>, NodeError> {
        self.call("getrawmempool", &[]).await
    }

    /// `getrawtransaction` of a mempool transaction; `None` once it left.
    pub(crate) async fn mempool_tx(&self, txid: &Txid) -> Result<Option<Transaction>, NodeError> {
        match self
            .call::<String>("getrawtransaction", &[json!(txid)])
            .await
        {
            Ok(hex) => deserialize_hex(&hex).map(Some).map_err(|e| {
                NodeError::Transient(format!("transaction {txid} did not decode: {e}"))
            }),
            Err(NodeError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether a mempool transaction is BIP125-replaceable, signalled by itself or by
    /// an unconfirmed ancestor (`getmempoolentry`'s `bip125-replaceable`).
    pub(crate) async fn replaceable(&self, tx: &Transaction) -> Result<bool, NodeError> {
        if tx.is_explicitly_rbf() {
            return Ok(true);
        }
        match self
            .call::<Value>("getmempoolentry", &[json!(tx.compute_txid())])
            .await
        {
            Ok(v) => Ok(v
                .get("bip125-replaceable")
                .and_then(Value::as_bool)
                .unwrap_or(false)),
            Err(NodeError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `getblockchaininfo`'s `initialblockdownload`, `blocks` and `headers`.
    pub(crate) async fn chain_info(&self) -> Result<Value, NodeError> {
        self.call("getblockchaininfo", &[]).await
    }
}

fn classify(method: &str, e: corepc_client::Error) -> NodeError {
    use corepc_client::Error as E;
    match e {
        E::JsonRpc(jsonrpc::error::Error::Rpc(rpc)) => match rpc.code {
            WARMUP => NodeError::Transient(format!("node is warming up: {}", rpc.message)),
            NOT_FOUND | OUT_OF_RANGE => NodeError::NotFound(format!("{method}: {}", rpc.message)),
            _ => NodeError::Transient(format!("{method}: {} (code {})", rpc.message, rpc.code)),
        },
        E::JsonRpc(jsonrpc::error::Error::Transport(t)) => {
            NodeError::Transient(format!("node unreachable: {t}"))
        }
        E::Io(io) => NodeError::Transient(format!("node unreachable: {io}")),
        E::InvalidCookieFile => {
            NodeError::Transient("node unreachable: invalid cookie file".into())
        }
        other => NodeError::Transient(format!("{method}: {other}")),
    }
}
