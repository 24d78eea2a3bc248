//! `daemon.*` and `chain.status`: the daemon and its chains.

use std::time::Instant;

use serde_json::{Value, json};

use super::{Api, INTERNAL, Params, RpcError, internal};

impl Api {
    /// `daemon.status`.
    pub(super) fn daemon_status(&self, params: Option<Value>) -> Result<Value, RpcError> {
        Params::new(params, &[])?;
        Ok(json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": self.started.elapsed().as_secs(),
            "db_path": self.settings.db_path(),
            "chains": self.chains.iter().map(|c| c.settings.name.clone()).collect::<Vec<_>>(),
            "events_last_seq": self.store.last_seq()?,
            "webhook_backlog": self.store.webhook_backlog()?,
        }))
    }

    /// `daemon.backup`: refused where the operator would not find the copy.
    pub(super) async fn backup(&self, params: Option<Value>) -> Result<Value, RpcError> {
        let p = Params::new(params, &["path"])?;
        let path = std::path::PathBuf::from(p.req_str("path")?);
        if !path.is_absolute() {
            return Err(RpcError::field("path", "must be an absolute path"));
        }
        if path.exists() {
            return Err(RpcError::field(
                "path",
                "exists already; settled does not overwrite",
            ));
        }
        let Some(dir) = path.parent().filter(|d| d.is_dir()) else {
            return Err(RpcError::field("path", "its directory does not exist"));
        };
        if let Some(why) = crate::service::unfit_for_backup(dir) {
            return Err(RpcError::field("path", why));
        }
        let started = Instant::now();
        let store = self.store.clone();
        let to = path.clone();
        let bytes = tokio::task::spawn_blocking(move || store.backup(&to))
            .await
            .map_err(|e| internal(e.into()))?
            .map_err(|e| RpcError::new(INTERNAL, format!("backup failed: {e}")))?;
        Ok(json!({
            "path": path,
            "bytes": bytes,
            "took_ms": started.elapsed().as_millis() as u64,
        }))
    }

    /// `chain.status`.
    pub(super) fn chain_status(&self, params: Option<Value>) -> Result<Value, RpcError> {
        let p = Params::new(params, &["chain"])?;
        let chains: Vec<Value> = match p.str("chain")? {
            Some(name) => vec![self.chain(&name)?.status_json()],
            None => self.chains.iter().map(|c| c.status_json()).collect(),
        };
        Ok(json!({ "chains": chains }))
    }
}
