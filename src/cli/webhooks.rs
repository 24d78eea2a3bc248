//! `settlectl webhooks ...`.

use clap::Subcommand;
use serde_json::Value;

use super::{Conn, Shown, n, params, s, text};

/// `settlectl webhooks`.
#[derive(Subcommand)]
pub(super) enum WebhooksCommand {
    /// Deliveries, newest first, with every attempt.
    List {
        /// pending, delivered or failed.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Send a delivery again at once, with the same event id, whatever its status.
    Redeliver {
        #[arg(
            long,
            conflicts_with = "delivery_id",
            required_unless_present = "delivery_id"
        )]
        event_seq: Option<u64>,
        #[arg(long)]
        delivery_id: Option<u64>,
    },
}

/// Runs one `settlectl webhooks` command.
pub(super) fn run(conn: &mut Conn, cmd: &WebhooksCommand) -> anyhow::Result<Shown> {
    match cmd {
        WebhooksCommand::List { status, limit } => list(conn, status, *limit),
        WebhooksCommand::Redeliver {
            event_seq,
            delivery_id,
        } => redeliver(conn, *event_seq, *delivery_id),
    }
}

/// `webhooks list`.
fn list(conn: &mut Conn, status: &Option<String>, limit: Option<u32>) -> anyhow::Result<Shown> {
    let p = params(&[("status", s(status)), ("limit", n(&limit))]);
    Ok((conn.call("webhook.deliveries", p)?, |v| {
        for d in v["deliveries"].as_array().into_iter().flatten() {
            println!("{}", delivery_line(d));
        }
    }))
}

/// `webhooks redeliver`.
fn redeliver(
    conn: &mut Conn,
    event_seq: Option<u64>,
    delivery_id: Option<u64>,
) -> anyhow::Result<Shown> {
    let p = params(&[
        ("event_seq", n(&event_seq)),
        ("delivery_id", n(&delivery_id)),
    ]);
    Ok((conn.call("webhook.redeliver", p)?, |d| {
        println!("queued again: {}", delivery_line(d))
    }))
}

/// One delivery on a line, then its attempts indented.
fn delivery_line(d: &Value) -> String {
    let mut out = format!(
        "#{:<5} event {:<6} {:<9} {} ({} attempt(s); next {})",
        text(&d["id"]),
        text(&d["event_seq"]),
        text(&d["status"]),
        text(&d["url"]),
        d["attempts"].as_array().map_or(0, |a| a.len()),
        text(&d["next_attempt_at"]),
    );
    for a in d["attempts"].as_array().into_iter().flatten() {
        let what = match (&a["http_status"], &a["error"]) {
            (Value::Number(n), _) => format!("HTTP {n}"),
            (_, e) => text(e),
        };
        out.push_str(&format!("\n        at {}: {what}", text(&a["at"])));
    }
    out
}
