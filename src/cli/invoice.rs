//! `settlectl invoice ...`: one function per command, and how an invoice is shown.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{Conn, Shown, n, params, s, text};

/// `settlectl invoice`.
#[derive(Subcommand)]
pub(super) enum InvoiceCommand {
    /// Create an invoice: one option (--chain, --asset, --amount), several (--option,
    /// repeated), or only a price (--price) and the currency chosen later.
    Create(Box<CreateArgs>),
    /// Add a way to pay an invoice, or quote an unpaid one again.
    AddOption(Box<AddOptionArgs>),
    /// Show one invoice.
    Get { id: String },
    /// List invoices, newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        chain: Option<String>,
        #[arg(long)]
        order_id: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Cancel an invoice.
    Void { id: String },
    /// Accept an invoice as paid.
    MarkCompleted { id: String },
    /// Record that the payer was refunded.
    MarkRefunded { id: String },
    /// Give an invoice more time: expires_at = now + SECONDS.
    Extend {
        id: String,
        #[arg(long)]
        expires_in: u64,
    },
    /// Search the chain for payments to the invoice that were missed.
    Rescan {
        id: String,
        #[arg(long)]
        from_height: Option<u64>,
    },
}

/// `settlectl invoice create`.
#[derive(Args)]
pub(super) struct CreateArgs {
    #[arg(long)]
    chain: Option<String>,
    /// CHAIN:ASSET:AMOUNT, such as anvil:USDT:25; repeat for each way to pay.
    #[arg(long = "option", value_name = "CHAIN:ASSET:AMOUNT")]
    options: Vec<String>,
    /// AMOUNT:CURRENCY, such as 24.99:USD: shown with the invoice, never converted.
    #[arg(long)]
    price: Option<String>,
    /// A decimal amount in the asset's units, such as 0.0015.
    #[arg(long)]
    amount: Option<String>,
    #[arg(long)]
    asset: Option<String>,
    /// fixed or open.
    #[arg(long)]
    mode: Option<String>,
    /// Seconds, or "never".
    #[arg(long)]
    expires_in: Option<String>,
    #[arg(long)]
    confirmations: Option<u32>,
    #[arg(long)]
    underpaid_tolerance: Option<String>,
    #[arg(long)]
    order_id: Option<String>,
    #[arg(long)]
    client_id: Option<String>,
    #[arg(long)]
    email: Option<String>,
    #[arg(long)]
    title: Option<String>,
    #[arg(long)]
    description: Option<String>,
    #[arg(long)]
    callback_url: Option<String>,
    /// A JSON object.
    #[arg(long)]
    metadata: Option<String>,
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// `settlectl invoice add-option`.
#[derive(Args)]
pub(super) struct AddOptionArgs {
    id: String,
    #[arg(long)]
    chain: String,
    #[arg(long)]
    asset: Option<String>,
    /// A decimal amount in the asset's units.
    #[arg(long)]
    amount: String,
    #[arg(long)]
    underpaid_tolerance: Option<String>,
    /// Restart the payment window: expires_at = now + SECONDS.
    #[arg(long)]
    expires_in: Option<u64>,
    #[arg(long)]
    confirmations: Option<u32>,
}

/// Runs one `settlectl invoice` command.
pub(super) fn run(conn: &mut Conn, cmd: &InvoiceCommand) -> anyhow::Result<Shown> {
    match cmd {
        InvoiceCommand::Create(a) => create(conn, a),
        InvoiceCommand::AddOption(a) => add_option(conn, a),
        InvoiceCommand::Get { id } => by_id(conn, "invoice.get", id),
        InvoiceCommand::List {
            status,
            chain,
            order_id,
            limit,
            cursor,
        } => {
            let p = params(&[
                ("status", s(status)),
                ("chain", s(chain)),
                ("order_id", s(order_id)),
                ("limit", n(limit)),
                ("cursor", s(cursor)),
            ]);
            Ok((conn.call("invoice.list", p)?, show_list))
        }
        InvoiceCommand::Void { id } => by_id(conn, "invoice.void", id),
        InvoiceCommand::MarkCompleted { id } => by_id(conn, "invoice.mark_completed", id),
        InvoiceCommand::MarkRefunded { id } => by_id(conn, "invoice.mark_refunded", id),
        InvoiceCommand::Extend { id, expires_in } => {
            let p = json!({ "id": id, "expires_in": expires_in });
            Ok((conn.call("invoice.extend", p)?, show_invoice))
        }
        InvoiceCommand::Rescan { id, from_height } => rescan(conn, id, *from_height),
    }
}

/// `invoice create`.
fn create(conn: &mut Conn, a: &CreateArgs) -> anyhow::Result<Shown> {
    let expires_in = match a.expires_in.as_deref() {
        None => None,
        Some("never") => Some(Value::Null),
        Some(x) => Some(json!(
            x.parse::<u64>()
                .map_err(|_| anyhow::anyhow!("--expires-in: seconds or \"never\""))?
        )),
    };
    let metadata = match &a.metadata {
        None => None,
        Some(m) => {
            Some(serde_json::from_str::<Value>(m).map_err(|e| anyhow::anyhow!("--metadata: {e}"))?)
        }
    };
    let options = match a.options.as_slice() {
        [] => None,
        list => Some(Value::Array(
            list.iter()
                .map(|o| option(o))
                .collect::<anyhow::Result<_>>()?,
        )),
    };
    let price = match a.price.as_deref() {
        None => None,
        Some(p) => {
            let (amount, currency) = p
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("--price: AMOUNT:CURRENCY, such as 24.99:USD"))?;
            Some(json!({ "amount": amount, "currency": currency }))
        }
    };
    let p = params(&[
        ("chain", s(&a.chain)),
        ("options", options),
        ("price", price),
        ("amount", s(&a.amount)),
        ("asset", s(&a.asset)),
        ("mode", s(&a.mode)),
        ("expires_in", expires_in),
        ("confirmations", n(&a.confirmations)),
        ("underpaid_tolerance", s(&a.underpaid_tolerance)),
        ("order_id", s(&a.order_id)),
        ("client_id", s(&a.client_id)),
        ("email", s(&a.email)),
        ("title", s(&a.title)),
        ("description", s(&a.description)),
        ("callback_url", s(&a.callback_url)),
        ("metadata", metadata),
        ("idempotency_key", s(&a.idempotency_key)),
    ]);
    Ok((conn.call("invoice.create", p)?, show_invoice))
}

/// One `--option CHAIN:ASSET:AMOUNT` (the amount left out in open mode).
fn option(o: &str) -> anyhow::Result<Value> {
    let mut parts = o.splitn(3, ':');
    let (Some(chain), Some(asset)) = (parts.next(), parts.next()) else {
        anyhow::bail!("--option {o:?}: CHAIN:ASSET:AMOUNT, such as anvil:USDT:25");
    };
    let mut v = json!({ "chain": chain, "asset": asset });
    if let Some(amount) = parts.next() {
        v["amount"] = json!(amount);
    }
    Ok(v)
}

/// `invoice add-option`.
fn add_option(conn: &mut Conn, a: &AddOptionArgs) -> anyhow::Result<Shown> {
    let p = params(&[
        ("id", Some(json!(a.id))),
        ("chain", Some(json!(a.chain))),
        ("asset", s(&a.asset)),
        ("amount", Some(json!(a.amount))),
        ("underpaid_tolerance", s(&a.underpaid_tolerance)),
        ("expires_in", n(&a.expires_in)),
        ("confirmations", n(&a.confirmations)),
    ]);
    Ok((conn.call("invoice.add_option", p)?, show_invoice))
}

/// `invoice get|void|mark-completed|mark-refunded ID`: a method on one invoice.
fn by_id(conn: &mut Conn, method: &str, id: &str) -> anyhow::Result<Shown> {
    Ok((conn.call(method, json!({ "id": id }))?, show_invoice))
}

/// `invoice rescan`.
fn rescan(conn: &mut Conn, id: &str, from_height: Option<u64>) -> anyhow::Result<Shown> {
    let p = params(&[("id", Some(json!(id))), ("from_height", n(&from_height))]);
    Ok((conn.call("invoice.rescan", p)?, |v| {
        println!("payments found: {}", v["payments_found"]);
        if let Some(gap) = v["unexplained_balance"].as_str() {
            println!(
                "unexplained balance: {gap} (the address holds this much more than its \
                 recorded payments: probably paid by a contract, which this node cannot trace)"
            );
        }
    }))
}

fn show_invoice(v: &Value) {
    let status = match v["reason"].as_str() {
        Some(r) => format!("{} ({r})", text(&v["status"])),
        None => text(&v["status"]),
    };
    let price = match &v["price"] {
        Value::Null => "-".to_string(),
        p => format!("{} {}", text(&p["amount"]), text(&p["currency"])),
    };
    let rows = [
        ("id", text(&v["id"])),
        ("status", status),
        ("price", price),
        ("paid ratio", text(&v["paid_ratio"])),
        ("overpaid ratio", text(&v["overpaid_ratio"])),
        ("order", text(&v["order_id"])),
        ("expires at", text(&v["expires_at"])),
    ];
    for (k, val) in rows {
        println!("{k:<14} {val}");
    }
    // Each way to pay, with what is left to pay in it if the rest is paid that way.
    let options = v["options"].as_array().cloned().unwrap_or_default();
    if !options.is_empty() {
        println!(
            "\n{:<18} {:<44} {:>16} {:>16} {:>16} {:>16} {:>5}",
            "OPTION", "ADDRESS", "DUE", "PAID", "CONFIRMED", "REMAINING", "CONFS"
        );
        for o in options {
            let asset = text(&o["asset"]);
            let with = |k: &str| format!("{} {asset}", text(&o[k]));
            println!(
                "{:<18} {:<44} {:>16} {:>16} {:>16} {:>16} {:>5}",
                format!("{} {asset}", text(&o["chain"])),
                text(&o["address"]),
                with("amount_due"),
                with("amount_paid"),
                with("amount_confirmed"),
                with("remaining"),
                text(&o["confirmations_required"]),
            );
        }
    }
    let pays = v["payments"].as_array().cloned().unwrap_or_default();
    if !pays.is_empty() {
        println!(
            "\n{:<70} {:>20} {:<9} {:>5} {:>5}",
            "PAYMENT", "AMOUNT", "STATE", "CONFS", "LATE"
        );
        for p in pays {
            // A transfer of an asset the invoice does not take: shown, never counted.
            let mut amount = format!("{} {}", text(&p["amount"]), text(&p["asset"]));
            if p["accepted"] == json!(false) {
                amount.push_str(" (not accepted)");
            }
            println!(
                "{:<70} {:>20} {:<9} {:>5} {:>5}",
                format!("{}:{}", text(&p["txid"]), text(&p["index"])),
                amount,
                text(&p["state"]),
                text(&p["confirmations"]),
                if p["late"] == json!(true) {
                    "yes"
                } else {
                    "no"
                },
            );
        }
    }
}

fn show_list(v: &Value) {
    println!(
        "{:<36}  {:<26}  {:<10}  {:>14}  {:>14}  ORDER",
        "ID", "STATUS", "CHAIN", "DUE", "PAID"
    );
    for i in v["invoices"].as_array().into_iter().flatten() {
        // Several options: their chains, and how much of the order is paid.
        let options = i["options"].as_array().cloned().unwrap_or_default();
        let (chain, due, paid) = match options.as_slice() {
            [_] => (
                text(&i["chain"]),
                text(&i["amount_due"]),
                text(&i["amount_paid"]),
            ),
            many => {
                let mut chains: Vec<String> = many.iter().map(|o| text(&o["chain"])).collect();
                chains.dedup();
                let chains = if chains.is_empty() {
                    "-".into()
                } else {
                    chains.join(",")
                };
                (chains, "-".into(), format!("x{}", text(&i["paid_ratio"])))
            }
        };
        println!(
            "{:<36}  {:<26}  {:<10}  {:>14}  {:>14}  {}",
            text(&i["id"]),
            text(&i["status"]),
            chain,
            due,
            paid,
            text(&i["order_id"]),
        );
    }
    if let Some(c) = v["next_cursor"].as_str() {
        println!("(more: --cursor {c})");
    }
}
