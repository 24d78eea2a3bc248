//! settled under bench: its config, and the clients that load its admin socket.

// Shared by the benches; each uses a part.
#![allow(dead_code)]

use serde_json::{Value, json};

use crate::common::{Admin, Daemon, Node, descriptor};

/// The `q`th percentile of `sorted` (ascending).
pub fn quantile(sorted: &[f64], q: usize) -> f64 {
    sorted[(sorted.len() * q / 100).min(sorted.len() - 1)]
}

/// The bench's regtest Core, publishing `zmq_sequence` at `zmq`, with `extra` args.
pub async fn node(zmq: &str, extra: &[&str]) -> Node {
    let mut args = vec![
        format!("-zmqpubsequence={zmq}"),
        // Regtest checks the whole mempool after every transaction by default (a
        // debugging aid that makes filling it quadratic: 2,000 transactions took 13 s
        // into an empty mempool and 230 s into one of 6,000), and the whole block
        // index after every block. Mainnet does neither.
        "-checkmempool=0".into(),
        "-checkblockindex=0".into(),
        "-rpcthreads=16".into(),
        "-rpcworkqueue=256".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    Node::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>()).await
}

/// An admin connection subscribed to the events from now on.
pub async fn subscribed(daemon: &Daemon) -> Admin {
    let mut admin = daemon.admin().await;
    let last = admin.ok("daemon.status", json!({})).await["events_last_seq"].clone();
    admin
        .send_line(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "events.subscribe",
                    "params": {"after_seq": last}})
            .to_string(),
        )
        .await;
    admin.read().await.unwrap();
    admin
}

/// settled on `node` through `url` (the node's, or a gate before it), pushed to by
/// `zmq`, starting at `start_height`, polling every second, logging only warnings.
pub fn configure(node: &Node, url: &str, zmq: &str, start_height: u64) -> Daemon {
    let mut d = Daemon::configure(node, "rpc_user = \"test\"\nrpc_password = \"test\"", "");
    let text = std::fs::read_to_string(&d.config).unwrap();
    let head = text.split("[chains.regtest]").next().unwrap().to_string();
    let chain = format!(
        "[chains.regtest]\nrpc_url = \"{url}\"\nrpc_user = \"test\"\nrpc_password = \"test\"\n\
         descriptor = \"{}\"\npoll_interval_ms = 1000\nstart_height = {start_height}\n\
         zmq_sequence = \"{zmq}\"\n",
        descriptor()
    );
    std::fs::write(&d.config, head + &chain).unwrap();
    d.env.push(("RUST_LOG".into(), "warn".into()));
    d
}

/// `per_client` creates from each of `clients` connections at once, in batches of 100;
/// the invoices made.
pub async fn create(daemon: &Daemon, clients: usize, per_client: usize) -> Vec<Value> {
    let params = |_| json!({"chain": "regtest", "amount": "0.01"});
    batches(daemon, "invoice.create", clients, per_client, &params).await
}

/// `per_client` deposit addresses from each of `clients` connections at once, in
/// batches of 100, each for a client of its own (`user-<first + n>`).
pub async fn create_deposits(daemon: &Daemon, clients: usize, per_client: usize, first: usize) {
    let params = |n: usize| json!({"chain": "regtest", "client_id": format!("user-{}", first + n)});
    batches(
        daemon,
        "deposit_address.create",
        clients,
        per_client,
        &params,
    )
    .await;
}

/// `per_client` calls of `method` from each of `clients` connections at once, in
/// batches of 100, the `n`th call of all with `params(n)`; each must answer an id.
/// The results.
pub async fn batches(
    daemon: &Daemon,
    method: &str,
    clients: usize,
    per_client: usize,
    params: &(dyn Fn(usize) -> Value + Sync),
) -> Vec<Value> {
    let mut admins = Vec::new();
    for _ in 0..clients {
        admins.push(daemon.admin().await);
    }
    let made = futures_util::future::join_all(admins.iter_mut().enumerate().map(
        |(c, admin)| async move {
            let mut made = Vec::new();
            let mut done = 0;
            while done < per_client {
                let n = (per_client - done).min(100);
                let batch: Vec<Value> = (0..n)
                    .map(|i| {
                        json!({"jsonrpc": "2.0", "id": i, "method": method,
                           "params": params(c * per_client + done + i)})
                    })
                    .collect();
                done += n;
                admin.send_line(&Value::Array(batch).to_string()).await;
                let answers = admin.read().await.unwrap();
                let answers = answers.as_array().unwrap();
                assert!(
                    answers.iter().all(|a| a["result"]["id"].is_string()),
                    "{answers:?}"
                );
                made.extend(answers.iter().map(|a| a["result"].clone()));
            }
            made
        },
    ))
    .await;
    made.into_iter().flatten().collect()
}

/// A client as lean as a load generator: a prepared line out, the answer's line in,
/// checked for a result without parsing it. The clients run on the two cores the
/// daemon runs on; parsing every answer took them a good part of one.
pub struct Lean {
    read: tokio::io::BufReader<tokio::net::unix::OwnedReadHalf>,
    write: tokio::net::unix::OwnedWriteHalf,
    answer: String,
}

impl Lean {
    pub async fn connect(daemon: &Daemon) -> Lean {
        let stream = tokio::net::UnixStream::connect(&daemon.socket)
            .await
            .unwrap();
        let (read, write) = stream.into_split();
        Lean {
            read: tokio::io::BufReader::new(read),
            write,
            answer: String::new(),
        }
    }

    /// Sends `line` (ending in a newline); the answer, which must be a result object.
    pub async fn call(&mut self, line: &str) -> &str {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        self.write.write_all(line.as_bytes()).await.unwrap();
        self.answer.clear();
        self.read.read_line(&mut self.answer).await.unwrap();
        assert!(self.answer.contains("\"result\":{"), "{}", self.answer);
        &self.answer
    }
}
