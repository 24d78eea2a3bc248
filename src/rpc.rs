//! Every node call of a chain goes through here: a deadline, so that a node that
//! accepts the connection and never answers cannot hold a watcher forever; its
//! latency and errors for the metrics; and the time of the last answer, the watchdog's
//! sign that the chain's task is alive while it waits on a slow node.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::bitcoind::NodeError;

/// The node calls of one chain.
#[derive(Debug)]
pub(crate) struct NodeCalls {
    chain: String,
    timeout: Duration,
    last_answer: Mutex<Option<Instant>>,
}

impl NodeCalls {
    /// Calls of `chain`'s node, each given up after `timeout`.
    pub(crate) fn new(chain: &str, timeout: Duration) -> NodeCalls {
        NodeCalls {
            chain: chain.to_string(),
            timeout,
            last_answer: Mutex::new(None),
        }
    }

    /// Runs one call named `method`, within the deadline, and counts it.
    pub(crate) async fn run<T>(
        &self,
        method: &'static str,
        call: impl Future<Output = Result<T, NodeError>>,
    ) -> Result<T, NodeError> {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(NodeError::TimedOut {
                method,
                secs: self.timeout.as_secs_f64(),
            }),
        };
        let labels = [
            ("chain", self.chain.clone()),
            ("method", method.to_string()),
        ];
        metrics::histogram!("settled_node_rpc_duration_seconds", &labels)
            .record(started.elapsed().as_secs_f64());
        // "Not found" is an answer (a block above the tip), not a failure.
        if matches!(result, Err(ref e) if !matches!(e, NodeError::NotFound(_))) {
            metrics::counter!("settled_node_rpc_errors_total", &labels).increment(1);
        }
        *self.last_answer.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        result
    }

    /// When the last call ended, answered or not.
    pub(crate) fn last_answer(&self) -> Option<Instant> {
        *self.last_answer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long one step of the watcher may go without a node call ending before its
    /// task counts as stuck: a few deadlines, room for the commit that follows.
    pub(crate) fn grace(&self) -> Duration {
        self.timeout * 4
    }
}

/// Runs `connect` (a push connection to a node: ZMQ, WebSocket) until `shutdown`, and
/// again after each failure, waiting longer each time up to 30 s. Polling backs it
/// up meanwhile, which the warning says.
pub(crate) async fn keep_connected<F, Fut>(
    chain: &str,
    url: &str,
    shutdown: &tokio_util::sync::CancellationToken,
    mut connect: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut delay = Duration::from_millis(200);
    loop {
        match connect().await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(chain = %chain, "{url}: {e}; polling carries on, connecting again in {delay:?}")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}
