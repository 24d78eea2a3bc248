//! `settlectl events ...`.

use std::io::Write;

use clap::Subcommand;
use serde_json::Value;

use super::{Conn, Shown, n, params, s, text};

/// `settlectl events`.
#[derive(Subcommand)]
pub(super) enum EventsCommand {
    /// One page of events.
    List {
        #[arg(long)]
        after_seq: Option<u64>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        invoice: Option<String>,
        /// Only the events of this deposit address.
        #[arg(long)]
        deposit_address: Option<String>,
    },
    /// Print events as they happen (after the backlog from --after-seq).
    Follow {
        #[arg(long)]
        after_seq: Option<u64>,
    },
}

/// `events list`.
pub(super) fn list(
    conn: &mut Conn,
    after_seq: Option<u64>,
    limit: Option<u32>,
    invoice: &Option<String>,
    deposit_address: &Option<String>,
) -> anyhow::Result<Shown> {
    let p = params(&[
        ("after_seq", n(&after_seq)),
        ("limit", n(&limit)),
        ("invoice_id", s(invoice)),
        ("deposit_address_id", s(deposit_address)),
    ]);
    Ok((conn.call("events.list", p)?, |v| {
        for e in v["events"].as_array().into_iter().flatten() {
            println!("{}", event_line(e));
        }
    }))
}

/// `events follow`: prints events as they come, until the connection ends.
pub(super) fn follow(conn: &mut Conn, after_seq: Option<u64>, json: bool) -> anyhow::Result<()> {
    conn.call("events.subscribe", params(&[("after_seq", n(&after_seq))]))?;
    loop {
        let msg = conn.read()?;
        if msg["method"] == "event" {
            if json {
                println!("{}", msg["params"]);
            } else {
                println!("{}", event_line(&msg["params"]));
            }
            std::io::stdout().flush()?;
        }
    }
}

/// One event on a line.
fn event_line(e: &Value) -> String {
    let d = &e["data"];
    let what = match e["type"].as_str() {
        Some("invoice.status_changed") | Some("invoice.reverted") => {
            format!("{} -> {}", text(&d["from"]), text(&d["to"]))
        }
        Some(t) if t.starts_with("deposit.") => format!(
            "{} {} ({})",
            text(&d["deposit"]["amount"]),
            text(&d["deposit"]["asset"]),
            text(&d["deposit"]["txid"])
        ),
        Some(t) if t.starts_with("deposit_address.") => format!(
            "{} {}",
            text(&d["deposit_address"]["client_id"]),
            text(&d["deposit_address"]["address"])
        ),
        Some(t) if t.starts_with("payment.") => format!(
            "{} {} ({})",
            text(&d["payment"]["amount"]),
            text(&d["invoice"]["asset"]),
            text(&d["payment"]["txid"])
        ),
        _ => format!(
            "{} {}",
            text(&d["invoice"]["amount_due"]),
            text(&d["invoice"]["asset"])
        ),
    };
    format!(
        "#{:<6} {:<24} {}  {}",
        text(&e["seq"]),
        text(&e["type"]),
        text(
            e.get("invoice_id")
                .filter(|v| !v.is_null())
                .unwrap_or(&e["deposit_address_id"])
        ),
        what
    )
}
