//! Bitcoin Core's JSON-RPC, read-only, through the async `corepc-client`. Errors are
//! sorted into the ones that pass (node down, warming up) and the ones an operator
//! must fix (a pruned block settled still needs).

use std::sync::Mutex;

use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::{Block, BlockHash, Transaction, Txid};
use corepc_client::{Auth, Client};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::config::{RpcAuth, cookie_unreadable};
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
        let client = Client::new_with_auth(&self.url, auth).map_err(|e| match (&self.auth, e) {
            (RpcAuth::Cookie(path), corepc_client::Error::Io(io))
                if io.kind() == std::io::ErrorKind::NotFound =>
            {
                NodeError::Transient(format!(
                    "node unreachable: no cookie file at {} (the node writes it when it starts)",
                    path.display()
                ))
            }
            (RpcAuth::Cookie(path), corepc_client::Error::Io(io)) => {
                NodeError::Credentials(cookie_unreadable(path, &io))
            }
            (_, e) => classify("reading rpc_cookie_file", e),
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
        // A new client reads the cookie again: it changes when the node restarts.
        if answer
            .as_ref()
            .is_err_and(|e| e.unreachable() || matches!(e, NodeError::Credentials(_)))
        {
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

    /// What the lifecycle needs of a mempool transaction that pays an invoice; `None`
    /// once it left the mempool.
    pub(crate) async fn mempool_entry(
        &self,
        txid: &Txid,
        tx: &Transaction,
    ) -> Result<Option<MempoolEntry>, NodeError> {
        let entry: Value = match self.call("getmempoolentry", &[json!(txid)]).await {
            Ok(v) => v,
            Err(NodeError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        // A node that does not say when comes last among those seen in the same poll.
        let time = entry
            .get("time")
            .and_then(Value::as_i64)
            .unwrap_or(i64::MAX);
        let replaceable = self.signals_rbf(txid, tx, &entry).await?;
        Ok(Some(MempoolEntry { time, replaceable }))
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
        for ancestor in &ancestors {
            match self.mempool_tx(ancestor).await? {
                Some(parent) if !parent.is_explicitly_rbf() => {}
                // Signals, or left the mempool before we could look: cannot vouch for it.
                _ => return Ok(true),
            }
        }
        Ok(false)
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
        E::JsonRpc(jsonrpc::error::Error::Transport(t)) if http_status(&*t) == Some(401) => {
            NodeError::Credentials(
                "the node refused them (HTTP 401): check rpc_user and rpc_password, or \
                 that rpc_cookie_file is the running node's"
                    .into(),
            )
        }
        E::JsonRpc(jsonrpc::error::Error::Transport(t)) => {
            NodeError::Transient(format!("node unreachable: {t}"))
        }
        E::Io(io) => NodeError::Transient(format!("node unreachable: {io}")),
        E::InvalidCookieFile => {
            NodeError::Credentials("the cookie file is not user:password".into())
        }
        other => NodeError::Transient(format!("{method}: {other}")),
    }
}

/// The HTTP status of a transport error that is one (an answer without JSON).
fn http_status(e: &(dyn std::error::Error + Send + Sync + 'static)) -> Option<i32> {
    match e.downcast_ref::<jsonrpc::bitreq_http_async::Error>()? {
        jsonrpc::bitreq_http_async::Error::Http(h) => Some(h.status_code),
        _ => None,
    }
}
