//! `scripts/bench`: settled under a crowd, on a real regtest Core. 32 admin clients
//! at once, each creating and reading invoices (one create for every four reads),
//! first with no block in sight, then while full blocks paying some of the invoices
//! arrive. Prints the requests per second, the latency of `invoice.get` and
//! `invoice.create` (p50, p99, max) in both spans, and the block-to-event latency:
//! from the node having the block (`generatetoaddress` answered; its transactions
//! were in the mempool and detected before) to the last `payment.confirmed` of the
//! block's payments on an `events.subscribe` stream,
//! beside its floor from the same run, the node's raw fetch of the same block, and
//! beside the same latency of blocks that arrive once the crowd has gone.
//! `--short` runs it small, as CI's smoke test: its figures mean nothing.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "bench/load.rs"]
mod load;
#[path = "bench/settled.rs"]
mod settled;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Daemon, free_port};
use load::{Coins, Rpc};
use serde_json::{Value, json};
use settled::{Lean, configure, create, quantile};

struct Sizes {
    clients: usize,
    /// Invoices made before the crowd comes, read by it.
    open: usize,
    blocks: usize,
    /// Blocks after the crowd has gone.
    alone_blocks: usize,
    block_txs: usize,
    /// Payments to invoices in each block (the rest pay elsewhere).
    paid_per_block: usize,
    /// The span of the quiet run.
    quiet_secs: u64,
}

impl Sizes {
    fn full() -> Sizes {
        Sizes {
            clients: 32,
            open: 20_000,
            blocks: 10,
            alone_blocks: 5,
            block_txs: 1_000,
            paid_per_block: 50,
            quiet_secs: 10,
        }
    }

    fn short() -> Sizes {
        Sizes {
            clients: 32,
            open: 500,
            blocks: 2,
            alone_blocks: 1,
            block_txs: 50,
            paid_per_block: 5,
            quiet_secs: 1,
        }
    }
}

/// What one span of the crowd did.
struct Span {
    secs: f64,
    gets: Vec<f64>,
    creates: Vec<f64>,
}

impl Span {
    fn print(&self, what: &str) {
        let n = self.gets.len() + self.creates.len();
        println!(
            "  {what}: {:.0} requests/s ({:.0} invoice.get/s, {:.0} invoice.create/s)",
            n as f64 / self.secs,
            self.gets.len() as f64 / self.secs,
            self.creates.len() as f64 / self.secs,
        );
        println!("    invoice.get    {}", quantiles(&self.gets));
        println!("    invoice.create {}", quantiles(&self.creates));
    }
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn quantiles(v: &[f64]) -> String {
    let v = sorted(v.to_vec());
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms ({} calls)",
        quantile(&v, 50),
        quantile(&v, 99),
        v.last().unwrap(),
        v.len()
    )
}

#[tokio::main]
async fn main() {
    let z = match std::env::args().any(|a| a == "--short") {
        true => Sizes::short(),
        false => Sizes::full(),
    };
    println!(
        "bench_load: {} clients, {} open invoices, {} blocks of {} txs ({} paying invoices)",
        z.clients, z.open, z.blocks, z.block_txs, z.paid_per_block
    );
    let zmq = format!("tcp://127.0.0.1:{}", free_port());
    let node = settled::node(&zmq, &[]).await;
    let rpc = Rpc::new(&node.url());
    let mut coins = Coins::fund(&rpc, (z.blocks + z.alone_blocks) * z.block_txs + 100).await;
    let mut daemon = configure(&node, &node.url(), &zmq, rpc.height().await + 1);
    daemon.restart().await;
    let open = create(&daemon, 8, z.open.div_ceil(8)).await;
    let ids: Vec<String> = open
        .iter()
        .map(|i| i["id"].as_str().unwrap().into())
        .collect();

    let quiet = crowd(&daemon, &ids, z.clients, async {
        // Measuring: a fixed span of time is the measurement itself.
        tokio::time::sleep(Duration::from_secs(z.quiet_secs)).await;
    })
    .await;

    let seen = subscribe(&daemon).await;
    let mut to_pay = open.iter().map(|i| i["address"].as_str().unwrap());
    let mut under_crowd = Vec::new();
    let busy = crowd(&daemon, &ids, z.clients, async {
        under_crowd = blocks(&rpc, &mut coins, &mut to_pay, &seen, &z, z.blocks).await;
    })
    .await;
    // The same blocks with the crowd gone: what the crowd adds.
    let alone = blocks(&rpc, &mut coins, &mut to_pay, &seen, &z, z.alone_blocks).await;

    quiet.print(&format!("{} clients, no block", z.clients));
    busy.print(&format!("{} clients, blocks arriving", z.clients));
    for (what, lags) in [("with the crowd", under_crowd), ("alone", alone)] {
        // The floor: the node's raw fetch of the same blocks.
        let mut floor = Vec::new();
        for (h, _) in &lags {
            let t = Instant::now();
            rpc.call("getblock", json!([h, 0])).await;
            floor.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let lags = sorted(lags.into_iter().map(|(_, l)| l).collect());
        let floor = sorted(floor);
        println!(
            "  block to its last payment.confirmed, {what}: p50 {:.1} ms ({:.1}x the raw \
             fetch floor of {:.2} ms), max {:.1} ms, over {} blocks of {} txs",
            quantile(&lags, 50),
            quantile(&lags, 50) / quantile(&floor, 50),
            quantile(&floor, 50),
            lags.last().unwrap(),
            lags.len(),
            z.block_txs
        );
    }
    drop(daemon);
}

/// `n` blocks of `z.block_txs` transactions, the last `z.paid_per_block` of each
/// paying the next addresses of `to_pay`, sent to the mempool and, once detected, mined: each
/// block's hash and the ms from its mining to its payments' last `payment.confirmed`.
async fn blocks<'a>(
    rpc: &Rpc,
    coins: &mut Coins,
    to_pay: &mut impl Iterator<Item = &'a str>,
    seen: &Seen,
    z: &Sizes,
    n: usize,
) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for _ in 0..n {
        // The payments last: once settled has seen them, it has taken in the rest of
        // the mempool too, and the figure is the block's alone.
        let first_paid = z.block_txs - z.paid_per_block;
        let to: Vec<Option<&str>> = (0..z.block_txs)
            .map(|i| (i >= first_paid).then(|| to_pay.next()).flatten())
            .collect();
        let txs = coins.payments(&to);
        let paid: Vec<String> = txs[first_paid..]
            .iter()
            .map(|t| t.compute_txid().to_string())
            .collect();
        rpc.send_all(&txs).await;
        wait_seen(seen, "payment.detected", &paid).await;
        let hash = rpc.mine(1, &coins.address).await.remove(0);
        let mined = Instant::now();
        let last = wait_seen(seen, "payment.confirmed", &paid).await;
        out.push((hash, last.duration_since(mined).as_secs_f64() * 1000.0));
    }
    out
}

/// `clients` lean clients, each one create for every four `invoice.get` of `ids`,
/// until `until` is done; every answer checked for a result.
async fn crowd(
    daemon: &Daemon,
    ids: &[String],
    clients: usize,
    until: impl std::future::Future<Output = ()>,
) -> Span {
    let done = Arc::new(AtomicBool::new(false));
    let create = format!(
        "{}\n",
        json!({"jsonrpc": "2.0", "id": 0, "method": "invoice.create",
               "params": {"chain": "regtest", "asset": "BTC", "amount": "0.01"}})
    );
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = Lean::connect(daemon).await;
        let gets: Vec<String> = (0..256)
            .map(|k| &ids[(c * 7919 + k * 104_729) % ids.len()])
            .map(|id| {
                let req = json!({"jsonrpc": "2.0", "id": 1, "method": "invoice.get",
                                 "params": {"id": id}});
                format!("{req}\n")
            })
            .collect();
        let (done, create) = (done.clone(), create.clone());
        tasks.push(tokio::spawn(async move {
            let (mut g, mut cr) = (Vec::new(), Vec::new());
            let mut i = 0;
            while !done.load(Ordering::Relaxed) {
                let t = Instant::now();
                if i % 5 == 4 {
                    client.call(&create).await;
                    cr.push(t.elapsed().as_secs_f64() * 1000.0);
                } else {
                    client.call(&gets[i % gets.len()]).await;
                    g.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                i += 1;
            }
            (g, cr)
        }));
    }
    let t = Instant::now();
    until.await;
    done.store(true, Ordering::Relaxed);
    let secs = t.elapsed().as_secs_f64();
    let mut span = Span {
        secs,
        gets: Vec::new(),
        creates: Vec::new(),
    };
    for task in tasks {
        let (g, c) = task.await.unwrap();
        span.gets.extend(g);
        span.creates.extend(c);
    }
    span
}

/// When each payment event arrived, by (type, txid).
type Seen = Mutex<HashMap<(String, String), Instant>>;

/// The payment events from now on, as they arrive, from a subscription of its own.
async fn subscribe(daemon: &Daemon) -> Arc<Seen> {
    let mut admin = settled::subscribed(daemon).await;
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let into = seen.clone();
    tokio::spawn(async move {
        while let Some(msg) = admin.read().await {
            let ev: &Value = &msg["params"];
            if let (Some(kind), Some(txid)) =
                (ev["type"].as_str(), ev["data"]["payment"]["txid"].as_str())
            {
                let key = (kind.to_string(), txid.to_string());
                into.lock().unwrap().insert(key, Instant::now());
            }
        }
    });
    seen
}

/// Waits until every one of `txids` has had its `kind` event; when the last came.
async fn wait_seen(seen: &Seen, kind: &str, txids: &[String]) -> Instant {
    let t = Instant::now();
    loop {
        if let Some(all) = {
            let seen = seen.lock().unwrap();
            txids
                .iter()
                .map(|t| seen.get(&(kind.to_string(), t.clone())).copied())
                .collect::<Option<Vec<_>>>()
        } {
            return all.into_iter().max().unwrap();
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the block's payments had no {kind}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
