//! `settlectl deposit ...`: one function per command, and how a deposit address and its
//! deposits are shown.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{Conn, Shown, n, params, s, text};

/// `settlectl deposit`.
#[derive(Subcommand)]
pub(super) enum DepositCommand {
    /// A customer's deposit address on a chain: the open one, or a new one.
    Create(Box<CreateArgs>),
    /// Show one deposit address and its last 100 deposits: by ID, or by --chain and
    /// --address.
    Get {
        id: Option<String>,
        #[arg(long)]
        chain: Option<String>,
        #[arg(long)]
        address: Option<String>,
    },
    /// List deposit addresses, newest first.
    List {
        #[arg(long)]
        client_id: Option<String>,
        #[arg(long)]
        chain: Option<String>,
        /// OPEN or CLOSED.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// A deposit address's deposits, oldest first.
    Deposits {
        id: String,
        /// PENDING, CONFIRMED or DROPPED.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Close a deposit address: watched for the late window more, then no longer.
    Close { id: String },
    /// Search the chain for deposits to the address that were missed.
    Rescan {
        id: String,
        #[arg(long)]
        from_height: Option<u64>,
    },
}

/// `settlectl deposit create`.
#[derive(Args)]
pub(super) struct CreateArgs {
    #[arg(long)]
    chain: String,
    #[arg(long)]
    client_id: String,
    #[arg(long)]
    label: Option<String>,
    #[arg(long)]
    callback_url: Option<String>,
    /// A JSON object.
    #[arg(long)]
    metadata: Option<String>,
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// Runs one `settlectl deposit` command.
pub(super) fn run(conn: &mut Conn, cmd: &DepositCommand) -> anyhow::Result<Shown> {
    match cmd {
        DepositCommand::Create(a) => create(conn, a),
        DepositCommand::Get { id, chain, address } => {
            let p = params(&[("id", s(id)), ("chain", s(chain)), ("address", s(address))]);
            Ok((conn.call("deposit_address.get", p)?, show_address))
        }
        DepositCommand::List {
            client_id,
            chain,
            status,
            limit,
            cursor,
        } => {
            let p = params(&[
                ("client_id", s(client_id)),
                ("chain", s(chain)),
                ("status", s(status)),
                ("limit", n(limit)),
                ("cursor", s(cursor)),
            ]);
            Ok((conn.call("deposit_address.list", p)?, show_list))
        }
        DepositCommand::Deposits {
            id,
            state,
            limit,
            cursor,
        } => {
            let p = params(&[
                ("id", Some(json!(id))),
                ("state", s(state)),
                ("limit", n(limit)),
                ("cursor", s(cursor)),
            ]);
            Ok((conn.call("deposit_address.deposits", p)?, show_deposits))
        }
        DepositCommand::Close { id } => {
            let p = json!({ "id": id });
            Ok((conn.call("deposit_address.close", p)?, show_address))
        }
        DepositCommand::Rescan { id, from_height } => {
            let p = params(&[("id", Some(json!(id))), ("from_height", n(from_height))]);
            Ok((conn.call("deposit_address.rescan", p)?, |v| {
                println!("deposits found: {}", v["deposits_found"]);
                if let Some(gap) = v["unexplained_balance"].as_str() {
                    println!(
                        "unexplained balance: {gap} (the address holds this much more than \
                         its recorded deposits: probably sent by a contract, which this node \
                         cannot trace)"
                    );
                }
            }))
        }
    }
}

/// `deposit create`.
fn create(conn: &mut Conn, a: &CreateArgs) -> anyhow::Result<Shown> {
    let metadata = match &a.metadata {
        None => None,
        Some(m) => {
            Some(serde_json::from_str::<Value>(m).map_err(|e| anyhow::anyhow!("--metadata: {e}"))?)
        }
    };
    let p = params(&[
        ("chain", Some(json!(a.chain))),
        ("client_id", Some(json!(a.client_id))),
        ("label", s(&a.label)),
        ("callback_url", s(&a.callback_url)),
        ("metadata", metadata),
        ("idempotency_key", s(&a.idempotency_key)),
    ]);
    Ok((conn.call("deposit_address.create", p)?, show_address))
}

fn show_address(v: &Value) {
    let rows = [
        ("id", text(&v["id"])),
        ("status", text(&v["status"])),
        ("chain", text(&v["chain"])),
        ("address", text(&v["address"])),
        ("client", text(&v["client_id"])),
        ("label", text(&v["label"])),
        ("closed at", text(&v["closed_at"])),
    ];
    for (k, val) in rows {
        println!("{k:<10} {val}");
    }
    let totals = v["totals"].as_array().cloned().unwrap_or_default();
    if !totals.is_empty() {
        println!("\n{:<8} {:>24} {:>24}", "ASSET", "CREDITED", "PENDING");
        for t in totals {
            println!(
                "{:<8} {:>24} {:>24}",
                text(&t["asset"]),
                text(&t["amount_confirmed"]),
                text(&t["amount_pending"])
            );
        }
    }
    show_deposits(v);
}

fn show_deposits(v: &Value) {
    let deposits = v["deposits"].as_array().cloned().unwrap_or_default();
    if !deposits.is_empty() {
        println!(
            "\n{:<70} {:>24} {:<9} {:>9} {:<8}",
            "DEPOSIT", "AMOUNT", "STATE", "CONFS", "CREDITED"
        );
        for d in deposits {
            println!(
                "{:<70} {:>24} {:<9} {:>9} {:<8}",
                format!("{}:{}", text(&d["txid"]), text(&d["index"])),
                format!("{} {}", text(&d["amount"]), text(&d["asset"])),
                text(&d["state"]),
                format!(
                    "{}/{}",
                    text(&d["confirmations"]),
                    text(&d["confirmations_required"])
                ),
                if d["credited"] == json!(true) {
                    "yes"
                } else {
                    "no"
                },
            );
        }
    }
    if let Some(c) = v["next_cursor"].as_str() {
        println!("(more: --cursor {c})");
    }
}

fn show_list(v: &Value) {
    println!(
        "{:<36}  {:<6}  {:<10}  {:<44}  CLIENT",
        "ID", "STATUS", "CHAIN", "ADDRESS"
    );
    for a in v["deposit_addresses"].as_array().into_iter().flatten() {
        println!(
            "{:<36}  {:<6}  {:<10}  {:<44}  {}",
            text(&a["id"]),
            text(&a["status"]),
            text(&a["chain"]),
            text(&a["address"]),
            text(&a["client_id"]),
        );
    }
    if let Some(c) = v["next_cursor"].as_str() {
        println!("(more: --cursor {c})");
    }
}
