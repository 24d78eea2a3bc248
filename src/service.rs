//! Life under systemd (`Type=notify`): `READY=1` once the database is open and the
//! socket bound, `STATUS=` with each chain's height and lag, and `WATCHDOG=1` only
//! while every running chain task is making progress or honestly waiting on its node.
//! Without `NOTIFY_SOCKET` (not under systemd) none of this does anything.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::chain::Chain;

/// How often the status line is looked at: `STATUS=` goes out as soon as it changes
/// (the first poll's lag a second after start, not at the first watchdog ping).
const STATUS_EVERY: Duration = Duration::from_secs(1);

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

/// Feeds the watchdog at half its interval while every chain task is alive, and sends
/// `STATUS=` whenever it changes, until `shutdown`.
pub(crate) async fn watchdog(chains: Vec<Arc<Chain>>, shutdown: CancellationToken) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let watchdog = sd_notify::watchdog_enabled();
    let mut fed: Option<Instant> = None;
    let mut sent = status_line(&chains);
    let mut stuck_reported = false;
    loop {
        let mut line = status_line(&chains);
        let mut states = Vec::new();
        if let Some(every) = watchdog {
            match stuck(&chains) {
                None => {
                    stuck_reported = false;
                    if fed.is_none_or(|t| t.elapsed() >= every / 2) {
                        fed = Some(Instant::now());
                        states.push(NotifyState::Watchdog);
                    }
                }
                Some(name) => {
                    if !stuck_reported {
                        tracing::error!(chain = %name, "the chain's task has made no progress for too long: not feeding the watchdog, so systemd restarts settled");
                        stuck_reported = true;
                    }
                    line = format!("STUCK: {name}; {line}");
                }
            }
        }
        if line != sent || !states.is_empty() {
            states.push(NotifyState::Status(&line));
            notify(&states);
        }
        sent = line;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(STATUS_EVERY) => {}
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

/// Why a file the daemon writes in `dir` would not be where the operator looks for
/// it: a private `/tmp` (`PrivateTmp=`: seen by no one else, deleted at stop), or a
/// directory the unit keeps read-only (`ProtectSystem=strict`).
pub(crate) fn unfit_for_backup(dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // The mount `dir` is on: the longest mount point above it (the last of equals,
    // which is mounted over the others).
    let (root, point, options) = mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some((*f.get(3)?, unescape(f.get(4)?), *f.get(5)?))
        })
        .filter(|(_, point, _)| dir.starts_with(point))
        .max_by_key(|(_, point, _)| point.len())?;
    if root.contains("/systemd-private-") {
        return Some(format!(
            "{} is the service's private {point} (PrivateTmp=): a file there is seen by no \
             one else and deleted when settled stops; back up into /var/lib/settled",
            dir.display()
        ));
    }
    if options.split(',').any(|o| o == "ro") {
        return Some(format!(
            "{} is read-only to settled (under the unit, ProtectSystem=strict leaves it only \
             /var/lib/settled): back up there, or allow a directory with ReadWritePaths= in a \
             drop-in",
            dir.display()
        ));
    }
    None
}

/// A mount point as mountinfo writes it: spaces and the like as octal escapes.
fn unescape(field: &str) -> String {
    let mut out = Vec::new();
    let b = field.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (b[i], octal) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
