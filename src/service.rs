//! Life under systemd (`Type=notify`): `READY=1` once the database is open and the
//! socket bound, `STATUS=` with each chain's height and lag, and `WATCHDOG=1` only
//! while every running chain task is making progress or honestly waiting on its node.
//! Without `NOTIFY_SOCKET` (not under systemd) none of this does anything.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::chain::Chain;

/// How often `STATUS=` is refreshed when no watchdog asks for more.
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// Tells systemd the daemon is ready.
pub(crate) fn ready(chains: &[Arc<Chain>]) {
    notify(&[
        NotifyState::Ready,
        NotifyState::Status(&status_line(chains)),
    ]);
}

/// Tells systemd the daemon is stopping.
pub(crate) fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// Feeds the watchdog at half its interval while every chain task is alive, and keeps
/// `STATUS=` current, until `shutdown`.
pub(crate) async fn watchdog(chains: Vec<Arc<Chain>>, shutdown: CancellationToken) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let watchdog = sd_notify::watchdog_enabled();
    let every = watchdog.map_or(STATUS_EVERY, |w| w / 2);
    let mut stuck_reported = false;
    loop {
        let line = status_line(&chains);
        match (watchdog, stuck(&chains)) {
            (Some(_), None) => {
                stuck_reported = false;
                notify(&[NotifyState::Watchdog, NotifyState::Status(&line)]);
            }
            (Some(_), Some(name)) => {
                if !stuck_reported {
                    tracing::error!(chain = %name, "the chain's task has made no progress for too long: not feeding the watchdog, so systemd restarts settled");
                    stuck_reported = true;
                }
                notify(&[NotifyState::Status(&format!("STUCK: {name}; {line}"))]);
            }
            (None, _) => notify(&[NotifyState::Status(&line)]),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// The first running chain whose task missed its own deadline.
fn stuck(chains: &[Arc<Chain>]) -> Option<String> {
    let now = Instant::now();
    chains
        .iter()
        .find(|c| c.stuck(now))
        .map(|c| c.settings.name.clone())
}

/// `bitcoin 840000 (lag 0); ethereum 21000000 (lag 2, node unreachable)`.
fn status_line(chains: &[Arc<Chain>]) -> String {
    let parts: Vec<String> = chains
        .iter()
        .filter(|c| c.settings.enabled)
        .map(|c| {
            let s = c.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let height = s.scanned_height.map_or("-".into(), |h| h.to_string());
            let lag = s.lag().map_or("?".into(), |l| l.to_string());
            let mut part = format!("{} {height} (lag {lag}", c.settings.name);
            if !s.running {
                part.push_str(", stopped");
            } else if s.last_error.is_some() {
                part.push_str(if s.node_reachable {
                    ", error"
                } else {
                    ", node unreachable"
                });
            }
            part.push(')');
            part
        })
        .collect();
    if parts.is_empty() {
        "no chains".into()
    } else {
        parts.join("; ")
    }
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}
