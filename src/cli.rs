//! The two command lines: `settled` (the daemon) and `settlectl` (the admin client).

mod daemon;
mod deposit;
mod events;
mod invoice;
mod webhooks;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::{Map, Value, json};

use deposit::DepositCommand;
use events::EventsCommand;
use invoice::InvoiceCommand;
use webhooks::WebhooksCommand;

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
    /// Deposit addresses: one reusable address per customer.
    #[command(subcommand)]
    Deposit(DepositCommand),
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

/// A command's result, and how to print it without `--json`.
type Shown = (Value, fn(&Value));

fn ctl(cli: &CtlCli) -> anyhow::Result<()> {
    let mut conn = Conn::open(&cli.socket)?;
    let (result, show) = match &cli.command {
        CtlCommand::Invoice(cmd) => invoice::run(&mut conn, cmd)?,
        CtlCommand::Deposit(cmd) => deposit::run(&mut conn, cmd)?,
        CtlCommand::Status => daemon::status(&mut conn)?,
        CtlCommand::Events(EventsCommand::List {
            after_seq,
            limit,
            invoice,
            deposit_address,
        }) => events::list(&mut conn, *after_seq, *limit, invoice, deposit_address)?,
        CtlCommand::Events(EventsCommand::Follow { after_seq }) => {
            return events::follow(&mut conn, *after_seq, cli.json);
        }
        CtlCommand::Webhooks(cmd) => webhooks::run(&mut conn, cmd)?,
        CtlCommand::Backup { path } => daemon::backup(&mut conn, path)?,
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        show(&result);
    }
    Ok(())
}

/// A JSON value as plain text: strings unquoted, null as `-`.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
