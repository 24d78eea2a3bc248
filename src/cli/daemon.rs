//! `settlectl status` and `settlectl backup`: the daemon as a whole.

use std::path::Path;

use serde_json::{Value, json};

use super::{Conn, Shown, text};

/// `status`: the daemon, then a line per chain.
pub(super) fn status(conn: &mut Conn) -> anyhow::Result<Shown> {
    let daemon = conn.call("daemon.status", json!({}))?;
    let chains = conn.call("chain.status", json!({}))?;
    Ok((
        json!({ "daemon": daemon, "chains": chains["chains"] }),
        show_status,
    ))
}

/// `backup PATH`.
pub(super) fn backup(conn: &mut Conn, path: &Path) -> anyhow::Result<Shown> {
    let path = std::env::current_dir()?.join(path);
    let v = conn.call("daemon.backup", json!({ "path": path }))?;
    // The daemon may see another filesystem than ours (its own mount namespace): a
    // copy we cannot see is no backup.
    let here = std::fs::metadata(&path).map(|m| m.len()).ok();
    if here != v["bytes"].as_u64() {
        anyhow::bail!(
            "the daemon wrote {} ({} bytes), but it is not there as seen from here: \
             settled runs with its own view of the filesystem; back up into /var/lib/settled",
            path.display(),
            text(&v["bytes"])
        );
    }
    Ok((v, |v| {
        println!(
            "backed up to {} ({} bytes in {} ms)",
            text(&v["path"]),
            text(&v["bytes"]),
            text(&v["took_ms"])
        )
    }))
}

fn show_status(v: &Value) {
    let d = &v["daemon"];
    println!(
        "settled {}, up {}, webhook backlog {}, last event #{}",
        text(&d["version"]),
        duration(d["uptime_s"].as_u64().unwrap_or(0)),
        text(&d["webhook_backlog"]),
        text(&d["events_last_seq"])
    );
    println!("database {}", text(&d["db_path"]));
    println!(
        "\n{:<12} {:<8} {:<5} {:>10} {:>10} {:>5} {:>8}  LAST POLL",
        "CHAIN", "STATE", "NODE", "NODE TIP", "SCANNED", "LAG", "WATCHED"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for c in v["chains"].as_array().into_iter().flatten() {
        let up = |k: &str| c[k] == json!(true);
        let state = if !up("enabled") {
            "disabled"
        } else if !c["alarm"].is_null() {
            "ALARM"
        } else if !up("running") {
            "STOPPED"
        } else if !c["last_error"].is_null() {
            "error"
        } else if c["lag_blocks"].as_u64().is_none_or(|l| l > 0) {
            "syncing"
        } else {
            "ok"
        };
        let last_poll = c["last_poll_at"].as_i64().map_or("never".into(), |t| {
            format!("{} ago", duration((now - t).max(0) as u64))
        });
        println!(
            "{:<12} {:<8} {:<5} {:>10} {:>10} {:>5} {:>8}  {}",
            text(&c["chain"]),
            state,
            if up("node_reachable") { "ok" } else { "DOWN" },
            text(&c["node_height"]),
            text(&c["scanned_height"]),
            text(&c["lag_blocks"]),
            text(&c["watched_addresses"]),
            last_poll,
        );
        if let Some(e) = c["last_error"].as_str() {
            println!("{:<12} ! {e}", "");
        }
    }
}

/// `3d 4h`, `2h 13m`, `5m 2s`, `42s`.
fn duration(s: u64) -> String {
    let (d, h, m) = (s / 86_400, s / 3_600 % 24, s / 60 % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {}s", s % 60),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}
