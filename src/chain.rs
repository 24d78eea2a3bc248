//! A configured chain at run time: its settings, the scripts its watcher matches, and
//! the status `chain.status` reports. Shared by the watcher (writes status, reads the
//! watchlist) and the admin server (adds to the watchlist, reads status).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use serde_json::{Value, json};

use crate::bitcoind::Bitcoind;
use crate::chains::Kind;
use crate::config::ChainSettings;
use crate::ethnode::EthNode;
use crate::rpc::NodeCalls;
use crate::store::{Owner, WatchChange};

/// Scripts to match, each with what it belongs to (an invoice or a deposit address):
/// one hash lookup per output, so a block costs the same however many are open.
#[derive(Debug, Default)]
pub(crate) struct Watchlist {
    scripts: RwLock<HashMap<Vec<u8>, Owner>>,
}

impl Watchlist {
    /// What a script belongs to, if watched.
    pub(crate) fn get(&self, script: &[u8]) -> Option<Owner> {
        self.read().get(script).cloned()
    }

    /// Starts watching a script.
    pub(crate) fn insert(&self, script: Vec<u8>, owner: Owner) {
        self.write().insert(script, owner);
    }

    /// Adds the database's watch set, read at start; what was inserted meanwhile stays.
    pub(crate) fn load(&self, set: Vec<(Vec<u8>, Owner)>) {
        self.write().extend(set);
    }

    /// Follows the watch set's changes a commit made.
    pub(crate) fn apply(&self, changes: &[WatchChange]) {
        if changes.is_empty() {
            return;
        }
        let mut map = self.write();
        for c in changes {
            if c.watch {
                map.insert(c.script.clone(), c.owner.clone());
            } else {
                map.remove(&c.script);
            }
        }
    }

    /// How many scripts are watched.
    pub(crate) fn len(&self) -> usize {
        self.read().len()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Vec<u8>, Owner>> {
        self.scripts.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Vec<u8>, Owner>> {
        self.scripts.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// What `chain.status` shows of one chain.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChainStatus {
    pub(crate) running: bool,
    pub(crate) node_reachable: bool,
    pub(crate) node_height: Option<u64>,
    pub(crate) scanned_height: Option<u64>,
    pub(crate) scanned_hash: Option<String>,
    pub(crate) last_poll_at: Option<i64>,
    pub(crate) last_error: Option<String>,
    /// The node's `finalized` block, on chains whose finality follows it.
    pub(crate) finalized_height: Option<u64>,
    /// The watcher promises to report again (progress, a finished poll, or the end of a
    /// wait) before this; past it, the task is stuck and the watchdog is not fed.
    pub(crate) alive_until: Option<std::time::Instant>,
    /// A reorganisation touched final invoices: stays until the daemon restarts.
    pub(crate) alarm: Option<String>,
}

impl ChainStatus {
    /// Blocks between the node's tip and the last one scanned, once both are known.
    pub(crate) fn lag(&self) -> Option<u64> {
        Some(self.node_height?.saturating_sub(self.scanned_height?))
    }
}

/// One configured chain.
pub(crate) struct Chain {
    pub(crate) settings: ChainSettings,
    pub(crate) watchlist: Watchlist,
    pub(crate) status: Mutex<ChainStatus>,
    /// The node, for bitcoin chains (also used by `invoice.rescan`).
    pub(crate) bitcoind: Option<Bitcoind>,
    /// The node, for ethereum chains (also used by `invoice.rescan`).
    pub(crate) ethnode: Option<EthNode>,
    /// Every call to the node, timed and counted.
    pub(crate) calls: Arc<NodeCalls>,
}

impl Chain {
    /// A chain not started yet.
    pub(crate) fn new(settings: ChainSettings) -> anyhow::Result<Chain> {
        let calls = Arc::new(NodeCalls::new(&settings.name, settings.rpc_timeout));
        let bitcoind = (settings.kind == Kind::Bitcoin && settings.enabled)
            .then(|| Bitcoind::new(&settings.rpc_url, &settings.rpc_auth, calls.clone()));
        let ethnode = match settings.kind == Kind::Ethereum && settings.enabled {
            true => Some(
                EthNode::new(&settings.rpc_url, &settings.rpc_auth, calls.clone())
                    .map_err(|e| anyhow::anyhow!("chains.{}.rpc_url: {e}", settings.name))?,
            ),
            false => None,
        };
        Ok(Chain {
            settings,
            watchlist: Watchlist::default(),
            status: Mutex::new(ChainStatus::default()),
            bitcoind,
            ethnode,
            calls,
        })
    }

    /// True when the chain has a node to follow.
    pub(crate) fn has_node(&self) -> bool {
        self.bitcoind.is_some() || self.ethnode.is_some()
    }

    /// True when the chain's task is running and has shown no sign of life (a step
    /// done, a node call ended, a wait begun) for longer than it promised.
    pub(crate) fn stuck(&self, now: Instant) -> bool {
        let s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let promised = s
            .alive_until
            .max(self.calls.last_answer().map(|t| t + self.calls.grace()));
        s.running && promised.is_some_and(|t| t < now)
    }

    /// Changes the status under its lock.
    pub(crate) fn set_status(&self, f: impl FnOnce(&mut ChainStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// The `chain.status` entry.
    pub(crate) fn status_json(&self) -> Value {
        let s = self
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        json!({
            "chain": self.settings.name,
            "enabled": self.settings.enabled,
            "running": s.running,
            "node_reachable": s.node_reachable,
            "node_height": s.node_height,
            "scanned_height": s.scanned_height,
            "scanned_hash": s.scanned_hash,
            "lag_blocks": s.lag(),
            "last_poll_at": s.last_poll_at,
            "watched_addresses": self.watchlist.len(),
            "last_error": s.last_error.or_else(|| s.alarm.clone()),
            "finalized_height": s.finalized_height,
            "alarm": s.alarm,
        })
    }
}
