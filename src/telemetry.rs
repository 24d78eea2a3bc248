//! Prometheus metrics, served on `[metrics] listen` only (nothing listens otherwise).
//! What happens (blocks processed, reorgs, node calls, failed webhook attempts) is
//! counted where it happens, from the start of the process; what the database and the
//! chains' status hold (invoices by status, payments, webhook backlog and deliveries
//! given up, heights and lag) is read here every few seconds, through indexes, so a
//! restart never resets it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{ExporterFuture, Matcher, PrometheusBuilder};
use tokio_util::sync::CancellationToken;

use crate::chain::Chain;
use crate::invoice::Status;
use crate::store::Store;

/// How often the database and status figures are read again.
const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// Binds `addr` and installs the recorder; the returned server runs in [`run`].
/// Must be called inside the runtime, once per process.
pub(crate) fn listen(addr: SocketAddr) -> anyhow::Result<ExporterFuture> {
    let (recorder, server) = PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Suffix("_blocks".into()),
            &[1.0, 2.0, 3.0, 6.0, 10.0, 20.0, 50.0, 100.0],
        )?
        .build()
        .map_err(|e| anyhow::anyhow!("metrics.listen: cannot serve on {addr}: {e}"))?;
    metrics::set_global_recorder(recorder)
        .map_err(|e| anyhow::anyhow!("metrics: a recorder is already installed: {e}"))?;
    describe();
    Ok(server)
}

/// Serves the metrics and keeps the figures current until `shutdown`.
pub(crate) async fn run(
    server: ExporterFuture,
    store: Arc<Store>,
    chains: Vec<Arc<Chain>>,
    shutdown: CancellationToken,
) {
    let mut server = server;
    loop {
        let (s, c) = (store.clone(), chains.clone());
        // Reads the database: on a blocking thread.
        let _ = tokio::task::spawn_blocking(move || refresh(&s, &c)).await;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = &mut server => {
                tracing::error!("metrics: the server stopped: {r:?}");
                break;
            }
            _ = tokio::time::sleep(REFRESH_EVERY) => {}
        }
    }
}

fn refresh(store: &Store, chains: &[Arc<Chain>]) {
    for chain in chains.iter().filter(|c| c.settings.enabled) {
        let s = chain
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let name = chain.settings.name.clone();
        let gauge = |metric: &'static str, v: Option<u64>| {
            if let Some(v) = v {
                metrics::gauge!(metric, "chain" => name.clone()).set(v as f64);
            }
        };
        gauge("settled_node_height", s.node_height);
        gauge("settled_scanned_height", s.scanned_height);
        gauge("settled_scan_lag_blocks", s.lag());
        gauge("settled_chain_running", Some(s.running.into()));
        gauge("settled_node_reachable", Some(s.node_reachable.into()));
        gauge("settled_reorg_alarm", Some(s.alarm.is_some().into()));
    }
    let counts = match store.counts() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("metrics: cannot read the database: {e}");
            return;
        }
    };
    for chain in chains.iter().filter(|c| c.settings.enabled) {
        // Every status shows, at 0 when no invoice has it, so a dashboard's series exist.
        for status in Status::ALL {
            let n = counts
                .invoices
                .iter()
                .find(|(c, st, _)| *c == chain.settings.name && st == status.as_str())
                .map_or(0, |(_, _, n)| *n);
            metrics::gauge!("settled_invoices", "chain" => chain.settings.name.clone(), "status" => status.as_str())
                .set(n as f64);
        }
        let paid = counts
            .payments
            .iter()
            .find(|(c, _)| *c == chain.settings.name)
            .map_or(0, |(_, n)| *n);
        metrics::counter!("settled_payments_detected_total", "chain" => chain.settings.name.clone())
            .absolute(paid);
    }
    for (gauge, status) in [
        ("settled_webhook_backlog", "pending"),
        ("settled_webhook_deliveries_failed", "failed"),
    ] {
        match store.deliveries_in(status) {
            Ok(n) => metrics::gauge!(gauge).set(n as f64),
            Err(e) => tracing::warn!("metrics: cannot read the database: {e}"),
        }
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "settled_blocks_processed_total",
        "Blocks connected by the chain's watcher since start"
    );
    describe_counter!("settled_reorgs_total", "Reorganisations seen since start");
    describe_histogram!(
        "settled_reorg_depth_blocks",
        "Blocks disconnected per reorganisation"
    );
    describe_counter!(
        "settled_payments_detected_total",
        "Payments ever recorded, dropped ones included"
    );
    describe_gauge!("settled_invoices", "Invoices by chain and status");
    describe_counter!(
        "settled_node_rpc_errors_total",
        "Node calls that failed or timed out"
    );
    describe_histogram!("settled_node_rpc_duration_seconds", "Node call latency");
    describe_gauge!("settled_node_height", "The node's best block");
    describe_gauge!("settled_scanned_height", "The last block settled applied");
    describe_gauge!(
        "settled_scan_lag_blocks",
        "Blocks between the node's tip and settled's cursor"
    );
    describe_gauge!("settled_chain_running", "1 while the chain's watcher runs");
    describe_gauge!(
        "settled_node_reachable",
        "1 when the last poll reached the node"
    );
    describe_gauge!(
        "settled_reorg_alarm",
        "1 after a reorganisation disconnected final blocks (until restart)"
    );
    describe_gauge!("settled_webhook_backlog", "Webhook deliveries pending");
    describe_gauge!(
        "settled_webhook_deliveries_failed",
        "Webhook deliveries given up after retry_for"
    );
    describe_counter!(
        "settled_webhook_attempts_failed_total",
        "Webhook attempts not answered with a 2xx, since start"
    );
}
