//! The two command lines: `settled` (the daemon) and `settlectl` (the admin client).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value, json};

#[derive(Parser)]
#[command(
    name = "settled",
    version,
    about = "Settles crypto invoices against your own full nodes"
)]
struct SettledCli {
    /// The configuration file.
    #[arg(long, global = true, default_value = "/etc/settled/config.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<SettledCommand>,
}

#[derive(Subcommand)]
enum SettledCommand {
    /// Validate the configuration and print it, secrets hidden; exit non-zero on error.
    CheckConfig,
}

/// `settled`'s entry point.
pub fn settled() -> ExitCode {
    let cli = SettledCli::parse();
    let result = match cli.command {
        Some(SettledCommand::CheckConfig) => {
            crate::config::check(&cli.config).map(|out| print!("{out}"))
        }
        None => crate::daemon::main(&cli.config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("settled: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Parser)]
#[command(
    name = "settlectl",
    version,
    about = "Talks to settled over its admin socket"
)]
struct CtlCli {
    /// The admin socket.
    #[arg(
        long,
        global = true,
        env = "SETTLED_SOCKET",
        default_value = "/run/settled/admin.sock"
    )]
    socket: PathBuf,
    /// Print the method's result as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Invoices.
    #[command(subcommand)]
    Invoice(InvoiceCommand),
    /// The daemon and its chains.
    Status,
    /// Events.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Webhook deliveries.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Copy the database while the daemon runs (a consistent snapshot). The daemon
    /// writes the file, so PATH must be writable by its user; it is never overwritten.
    Backup { path: std::path::PathBuf },
}

#[derive(Subcommand)]
enum WebhooksCommand {
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

#[derive(Subcommand)]
enum InvoiceCommand {
    /// Create an invoice.
    Create(Box<CreateArgs>),
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

#[derive(Args)]
struct CreateArgs {
    #[arg(long)]
    chain: String,
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

#[derive(Subcommand)]
enum EventsCommand {
    /// One page of events.
    List {
        #[arg(long)]
        after_seq: Option<u64>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        invoice: Option<String>,
    },
    /// Print events as they happen (after the backlog from --after-seq).
    Follow {
        #[arg(long)]
        after_seq: Option<u64>,
    },
}

/// `settlectl`'s entry point.
pub fn settlectl() -> ExitCode {
    let cli = CtlCli::parse();
    match ctl(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("settlectl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A connection to the admin socket.
struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Conn {
    fn open(path: &PathBuf) -> anyhow::Result<Conn> {
        let s = UnixStream::connect(path).map_err(|e| {
            anyhow::anyhow!(
                "cannot connect to {}: {e} (is settled running? --socket)",
                path.display()
            )
        })?;
        Ok(Conn {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
            next_id: 1,
        })
    }

    fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let req = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        writeln!(self.writer, "{req}")?;
        loop {
            let msg = self.read()?;
            if msg.get("id") != Some(&json!(id)) {
                continue;
            }
            if let Some(e) = msg.get("error") {
                let mut text = e["message"].as_str().unwrap_or("error").to_string();
                if let Some(code) = e["code"].as_i64() {
                    text.push_str(&format!(" (code {code})"));
                }
                anyhow::bail!(text);
            }
            return Ok(msg["result"].clone());
        }
    }

    fn read(&mut self) -> anyhow::Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            anyhow::bail!(
                "the daemon closed the connection (if it does so at once, its log says why: \
                 your uid may not be in daemon.admin_allowed_uids)"
            );
        }
        Ok(serde_json::from_str(&line)?)
    }
}

fn params(pairs: &[(&str, Option<Value>)]) -> Value {
    let map: Map<String, Value> = pairs
        .iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v)))
        .collect();
    Value::Object(map)
}

fn s(v: &Option<String>) -> Option<Value> {
    v.clone().map(Value::String)
}

fn n<T: Into<u64> + Copy>(v: &Option<T>) -> Option<Value> {
    v.map(|x| json!(x.into()))
}

fn ctl(cli: &CtlCli) -> anyhow::Result<()> {
    let mut conn = Conn::open(&cli.socket)?;
    let (result, show): (Value, fn(&Value)) = match &cli.command {
        CtlCommand::Invoice(cmd) => match cmd {
            InvoiceCommand::Create(a) => {
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
                    Some(m) => Some(
                        serde_json::from_str::<Value>(m)
                            .map_err(|e| anyhow::anyhow!("--metadata: {e}"))?,
                    ),
                };
                let p = params(&[
                    ("chain", Some(json!(a.chain))),
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
                (conn.call("invoice.create", p)?, show_invoice)
            }
            InvoiceCommand::Get { id } => {
                (conn.call("invoice.get", json!({ "id": id }))?, show_invoice)
            }
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
                (conn.call("invoice.list", p)?, show_list)
            }
            InvoiceCommand::Void { id } => (
                conn.call("invoice.void", json!({ "id": id }))?,
                show_invoice,
            ),
            InvoiceCommand::MarkCompleted { id } => (
                conn.call("invoice.mark_completed", json!({ "id": id }))?,
                show_invoice,
            ),
            InvoiceCommand::MarkRefunded { id } => (
                conn.call("invoice.mark_refunded", json!({ "id": id }))?,
                show_invoice,
            ),
            InvoiceCommand::Extend { id, expires_in } => (
                conn.call(
                    "invoice.extend",
                    json!({ "id": id, "expires_in": expires_in }),
                )?,
                show_invoice,
            ),
            InvoiceCommand::Rescan { id, from_height } => (
                conn.call(
                    "invoice.rescan",
                    params(&[("id", Some(json!(id))), ("from_height", n(from_height))]),
                )?,
                |v| {
                    println!("payments found: {}", v["payments_found"]);
                    if let Some(gap) = v["unexplained_balance"].as_str() {
                        println!(
                            "unexplained balance: {gap} (the address holds this much more than its \
                             recorded payments: probably paid by a contract, which this node cannot trace)"
                        );
                    }
                },
            ),
        },
        CtlCommand::Status => {
            let daemon = conn.call("daemon.status", json!({}))?;
            let chains = conn.call("chain.status", json!({}))?;
            (
                json!({ "daemon": daemon, "chains": chains["chains"] }),
                show_status,
            )
        }
        CtlCommand::Events(EventsCommand::List {
            after_seq,
            limit,
            invoice,
        }) => {
            let p = params(&[
                ("after_seq", n(after_seq)),
                ("limit", n(limit)),
                ("invoice_id", s(invoice)),
            ]);
            (conn.call("events.list", p)?, |v| {
                for e in v["events"].as_array().into_iter().flatten() {
                    println!("{}", event_line(e));
                }
            })
        }
        CtlCommand::Backup { path } => {
            let path = std::env::current_dir()?.join(path);
            let p = json!({ "path": path });
            let v = conn.call("daemon.backup", p)?;
            // The daemon may see another filesystem than ours (its own mount namespace):
            // a copy we cannot see is no backup.
            let here = std::fs::metadata(&path).map(|m| m.len()).ok();
            if here != v["bytes"].as_u64() {
                anyhow::bail!(
                    "the daemon wrote {} ({} bytes), but it is not there as seen from here: \
                     settled runs with its own view of the filesystem; back up into \
                     /var/lib/settled",
                    path.display(),
                    text(&v["bytes"])
                );
            }
            (v, |v| {
                println!(
                    "backed up to {} ({} bytes in {} ms)",
                    text(&v["path"]),
                    text(&v["bytes"]),
                    text(&v["took_ms"])
                )
            })
        }
        CtlCommand::Webhooks(WebhooksCommand::List { status, limit }) => {
            let p = params(&[("status", s(status)), ("limit", n(limit))]);
            (conn.call("webhook.deliveries", p)?, |v| {
                for d in v["deliveries"].as_array().into_iter().flatten() {
                    println!("{}", delivery_line(d));
                }
            })
        }
        CtlCommand::Webhooks(WebhooksCommand::Redeliver {
            event_seq,
            delivery_id,
        }) => {
            let p = params(&[("event_seq", n(event_seq)), ("delivery_id", n(delivery_id))]);
            (conn.call("webhook.redeliver", p)?, |d| {
                println!("queued again: {}", delivery_line(d))
            })
        }
        CtlCommand::Events(EventsCommand::Follow { after_seq }) => {
            conn.call("events.subscribe", params(&[("after_seq", n(after_seq))]))?;
            loop {
                let msg = conn.read()?;
                if msg["method"] == "event" {
                    if cli.json {
                        println!("{}", msg["params"]);
                    } else {
                        println!("{}", event_line(&msg["params"]));
                    }
                    std::io::stdout().flush()?;
                }
            }
        }
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        show(&result);
    }
    Ok(())
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

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn show_invoice(v: &Value) {
    let asset = text(&v["asset"]);
    let status = match v["reason"].as_str() {
        Some(r) => format!("{} ({r})", text(&v["status"])),
        None => text(&v["status"]),
    };
    let rows = [
        ("id", text(&v["id"])),
        ("status", status),
        ("chain", text(&v["chain"])),
        ("address", text(&v["address"])),
        ("amount due", format!("{} {asset}", text(&v["amount_due"]))),
        ("paid", format!("{} {asset}", text(&v["amount_paid"]))),
        (
            "confirmed",
            format!("{} {asset}", text(&v["amount_confirmed"])),
        ),
        (
            "overpaid",
            format!("{} {asset}", text(&v["overpaid_amount"])),
        ),
        ("confirmations", text(&v["confirmations_required"])),
        ("order", text(&v["order_id"])),
        ("expires at", text(&v["expires_at"])),
    ];
    for (k, val) in rows {
        println!("{k:<14} {val}");
    }
    let pays = v["payments"].as_array().cloned().unwrap_or_default();
    if !pays.is_empty() {
        println!(
            "\n{:<70} {:>14} {:<9} {:>5} {:>5}",
            "PAYMENT", "AMOUNT", "STATE", "CONFS", "LATE"
        );
        for p in pays {
            println!(
                "{:<70} {:>14} {:<9} {:>5} {:>5}",
                format!("{}:{}", text(&p["txid"]), text(&p["index"])),
                text(&p["amount"]),
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
        println!(
            "{:<36}  {:<26}  {:<10}  {:>14}  {:>14}  {}",
            text(&i["id"]),
            text(&i["status"]),
            text(&i["chain"]),
            text(&i["amount_due"]),
            text(&i["amount_paid"]),
            text(&i["order_id"]),
        );
    }
    if let Some(c) = v["next_cursor"].as_str() {
        println!("(more: --cursor {c})");
    }
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

fn event_line(e: &Value) -> String {
    let d = &e["data"];
    let what = match e["type"].as_str() {
        Some("invoice.status_changed") | Some("invoice.reverted") => {
            format!("{} -> {}", text(&d["from"]), text(&d["to"]))
        }
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
        text(&e["invoice_id"]),
        what
    )
}
