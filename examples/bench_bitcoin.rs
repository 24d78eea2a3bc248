//! `scripts/bench`: settled at mainnet scale on a real regtest Core, with the load
//! made here: full blocks (2,000 transactions), a mempool of tens of thousands, and up
//! to a million open invoices. Every figure is printed beside its target, and the
//! catch-up beside its floor from the same run (this bench fetching the same blocks
//! raw over a kept-alive connection, through a gate as the daemon does, and directly).
//! `--short` runs it small, as CI's smoke test: its figures mean nothing, it only shows
//! that every step works. `--reduced` keeps the million invoices but sends the node
//! fewer transactions.
//!
//! Charts go to `SETTLED_BENCH_OUT` (default `target/bench`): the per-block cost
//! against the number of open invoices, and the create rate against the number of
//! clients.

#[path = "bench/chart.rs"]
mod chart;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "bench/load.rs"]
mod load;
#[path = "bench/settled.rs"]
mod settled;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Admin, Daemon, descriptor, free_port};
use load::{Coins, Gate, Rpc};
use serde_json::{Value, json};
use settled::{Lean, configure, create, create_deposits};

/// How many times each catch-up is run.
const CATCH_UP_RUNS: usize = 3;

struct Sizes {
    /// Open invoices at which the catch-up is measured; the last is the big one.
    levels: Vec<usize>,
    /// Creates by one client, one at a time.
    creates_one: usize,
    /// Creates per point of the clients chart.
    creates_chart: usize,
    block_txs: usize,
    blocks: usize,
    /// Blocks processed while `invoice.get` is measured.
    get_blocks: usize,
    mempool_detect: usize,
    mempool_restart: usize,
    samples: usize,
    idle_secs: u64,
    /// The span of `invoice.get` beside a busy thread.
    busy_secs: u64,
    /// Open deposit addresses made beside the big level's invoices.
    deposits: usize,
    /// Deposit addresses per point of their clients chart.
    deposits_chart: usize,
}

impl Sizes {
    fn full() -> Sizes {
        Sizes {
            levels: vec![1_000, 100_000, 1_000_000],
            creates_one: 5_000,
            creates_chart: 20_000,
            block_txs: 2_000,
            blocks: 20,
            get_blocks: 6,
            mempool_detect: 20_000,
            mempool_restart: 100_000,
            samples: 300,
            idle_secs: 20,
            busy_secs: 2,
            deposits: 1_000_000,
            deposits_chart: 40_000,
        }
    }

    /// The full form's invoices, with fewer node transactions: a quicker run.
    fn reduced() -> Sizes {
        Sizes {
            blocks: 12,
            get_blocks: 2,
            mempool_detect: 4_000,
            mempool_restart: 10_000,
            samples: 200,
            ..Sizes::full()
        }
    }

    fn short() -> Sizes {
        Sizes {
            levels: vec![300, 3_000],
            creates_one: 200,
            creates_chart: 800,
            block_txs: 200,
            blocks: 4,
            get_blocks: 2,
            mempool_detect: 500,
            mempool_restart: 1_000,
            samples: 10,
            idle_secs: 2,
            busy_secs: 1,
            deposits: 3_000,
            deposits_chart: 800,
        }
    }
}

/// One line of the results table.
struct Figure {
    what: String,
    figure: String,
    target: String,
}

#[tokio::main]
async fn main() {
    let arg = |a: &str| std::env::args().any(|x| x == a);
    let z = match (arg("--short"), arg("--reduced")) {
        (true, _) => Sizes::short(),
        (_, true) => Sizes::reduced(),
        _ => Sizes::full(),
    };
    println!(
        "bench_bitcoin: open invoices {:?}, {} blocks of {} txs, mempool {} then {}",
        z.levels, z.blocks, z.block_txs, z.mempool_detect, z.mempool_restart
    );
    let out = std::path::PathBuf::from(
        std::env::var("SETTLED_BENCH_OUT").unwrap_or_else(|_| "target/bench".into()),
    );
    std::fs::create_dir_all(&out).unwrap();
    let mut table: Vec<Figure> = Vec::new();
    let mut row = |what: &str, figure: String, target: &str| {
        println!("  {what}: {figure}   [{target}]");
        table.push(Figure {
            what: what.into(),
            figure,
            target: target.into(),
        });
    };

    let zmq = format!("tcp://127.0.0.1:{}", free_port());
    let node = settled::node(&zmq, &["-maxmempool=2000"]).await;
    let rpc = Rpc::new(&node.url());
    let need =
        z.blocks * z.block_txs + z.get_blocks * z.block_txs + z.mempool_restart + z.samples + 1000;
    let t = Instant::now();
    let mut coins = Coins::fund(&rpc, need).await;
    println!("bench: {need} coins in {:.1} s", t.elapsed().as_secs_f64());
    let paid = node.derive_addresses(&descriptor(), 100).await;

    // Full blocks, each paying a few of the first invoices; mined once, scanned at
    // every level.
    let start_height = rpc.height().await + 1;
    let t = Instant::now();
    let mut hashes = Vec::new();
    for b in 0..z.blocks {
        let to: Vec<Option<&str>> = (0..z.block_txs)
            .map(|i| (i < 3).then(|| paid[(b * 3 + i) % paid.len()].as_str()))
            .collect();
        let txs = coins.payments(&to);
        rpc.send_all(&txs).await;
        hashes.extend(rpc.mine(1, &coins.address).await);
    }
    let tip = rpc.height().await;
    println!(
        "bench: {} blocks of {} transactions made in {:.1} s",
        z.blocks,
        z.block_txs,
        t.elapsed().as_secs_f64()
    );
    // The floor: the same blocks fetched raw, one after the other (warm, best of 3),
    // through a gate as the daemon reaches the node (the gate's own copy of each block
    // is no cost of the daemon's), and directly.
    let direct_ms = fetch_floor(&rpc, &hashes).await;
    let floor_ms = {
        let gate = Gate::new(node.rpc_port).await;
        gate.open();
        fetch_floor(&Rpc::new(&gate.url), &hashes).await
    };
    println!(
        "bench: raw fetch floor {floor_ms:.2} ms per block through a gate, {direct_ms:.2} ms directly"
    );
    let floor = |ms: f64| {
        format!(
            "{:.2}x the floor ({floor_ms:.2} ms through the gate; {:.2}x the direct fetch, {direct_ms:.2} ms)",
            ms / floor_ms,
            ms / direct_ms
        )
    };

    let mut per_block: Vec<(f64, f64)> = Vec::new();
    let mut rss_small = None;
    let mut big: Option<(Daemon, Vec<String>, Gate)> = None;
    let levels = z.levels.clone();
    // The create rates, on a daemon of their own (so that the first level keeps its
    // own number of invoices).
    {
        let gate = Gate::new(node.rpc_port).await;
        let mut daemon = configure(&node, &gate.url, &zmq, start_height);
        daemon.spawn_unsynced().await;
        // One client, one at a time, each answered once durable.
        let mut client = Lean::connect(&daemon).await;
        let line = format!(
            "{}\n",
            json!({"jsonrpc": "2.0", "id": 1, "method": "invoice.create",
                   "params": {"chain": "regtest", "amount": "0.01"}})
        );
        let (t, cpu_before) = (Instant::now(), cpu_secs(daemon.pid()));
        for _ in 0..z.creates_one {
            client.call(&line).await;
        }
        let rate = z.creates_one as f64 / t.elapsed().as_secs_f64();
        // One at a time, the daemon's CPU per create is most of the wait: the fsync is
        // the rest.
        let cpu_us = (cpu_secs(daemon.pid()) - cpu_before) * 1e6 / z.creates_one as f64;
        row(
            "invoice.create, 1 client, one at a time",
            format!("{rate:.0}/s ({cpu_us:.0} us of the daemon's CPU per create)"),
            "2,000/s",
        );
        // The chart: the create rate against the clients (batches of 100).
        let mut points = Vec::new();
        for clients in [1usize, 2, 4, 8] {
            let t = Instant::now();
            create(&daemon, clients, z.creates_chart / clients).await;
            let rate = z.creates_chart as f64 / t.elapsed().as_secs_f64();
            println!("  invoice.create, {clients} client(s), batches of 100: {rate:.0}/s");
            points.push((clients as f64, rate));
        }
        let rate8 = points.last().unwrap().1;
        row(
            "invoice.create, 8 clients, batches of 100",
            format!("{rate8:.0}/s"),
            "5,000/s",
        );
        chart::line(
            &out.join("create-rate.svg"),
            "invoice.create against clients (batches of 100)",
            "clients",
            "creates per second",
            &points,
        );
    }
    for (n, &open) in levels.iter().enumerate() {
        let last = n + 1 == levels.len();
        // The node stays behind the gate until the invoices are made.
        let gate = Gate::new(node.rpc_port).await;
        let mut daemon = configure(&node, &gate.url, &zmq, start_height);
        daemon.spawn_unsynced().await;
        let have = count(&daemon).await;
        if have < open {
            let t = Instant::now();
            create(&daemon, 8, (open - have).div_ceil(8)).await;
            println!(
                "bench: {} open invoices made in {:.1} s",
                open - have,
                t.elapsed().as_secs_f64()
            );
        }
        let open = count(&daemon).await;
        let ids = ids(&daemon, 2_000).await;

        daemon.kill();
        let db = daemon.dir.path().join("data/settled.db");
        let saved = daemon.dir.path().join("saved.db");
        copy_db(&db, &saved);
        let ms = catch_up(&mut daemon, &gate, &saved, open, tip, z.blocks).await;
        if !last {
            remove_db(&saved);
        }
        per_block.push((open as f64, ms));
        row(
            &format!(
                "catch-up, blocks of {} txs, {open} open invoices (median of {CATCH_UP_RUNS})",
                z.block_txs
            ),
            format!("{ms:.2} ms/block = {}", floor(ms)),
            "1.5x",
        );

        // Start-up: a restart with nothing to scan, until the socket answers and the
        // watch set is loaded; then the memory it holds.
        daemon.kill();
        let t = Instant::now();
        start_loaded(&mut daemon, open).await;
        let started = t.elapsed().as_secs_f64();
        let rss = rss_kib(daemon.pid());
        if n == 0 {
            rss_small = Some((open, rss));
        }
        if last {
            row(
                &format!("start-up at {open} open invoices (socket, watch set)"),
                format!("{started:.2} s"),
                "5 s",
            );
            if let Some((small, small_rss)) = rss_small {
                let per =
                    (rss.saturating_sub(small_rss) as f64 * 1024.0) / (open - small).max(1) as f64;
                row(
                    &format!(
                        "memory per watched address (RSS {} MiB at {open})",
                        rss / 1024
                    ),
                    format!("{per:.0} bytes"),
                    "300 bytes",
                );
            }
            big = Some((daemon, ids, gate));
        }
    }
    chart::line(
        &out.join("per-block.svg"),
        &format!("catch-up cost per block of {} txs", z.block_txs),
        "open invoices",
        "ms per block",
        &per_block,
    );
    let (mut daemon, ids, gate) = big.unwrap();
    let open = *levels.last().unwrap();

    // Deposit addresses beside the big level's invoices, made from the database saved
    // before its catch-up (the node behind the gate): their create rate, then the
    // same blocks caught up with all of them watched, start-up and memory.
    let invoices_watched = count(&daemon).await;
    daemon.kill();
    gate.close();
    let db = daemon.dir.path().join("data/settled.db");
    let saved = daemon.dir.path().join("saved.db");
    copy_db(&saved, &db);
    start_loaded(&mut daemon, invoices_watched).await;
    let mut points = Vec::new();
    let mut made = 0;
    for clients in [1usize, 2, 4, 8] {
        let per_client = z.deposits_chart / clients;
        let t = Instant::now();
        create_deposits(&daemon, clients, per_client, made).await;
        let rate = (per_client * clients) as f64 / t.elapsed().as_secs_f64();
        made += per_client * clients;
        println!("  deposit_address.create, {clients} client(s), batches of 100: {rate:.0}/s");
        points.push((clients as f64, rate));
    }
    row(
        &format!("deposit_address.create, 8 clients, batches of 100, beside {open} open invoices"),
        format!("{:.0}/s", points.last().unwrap().1),
        "5,000/s",
    );
    chart::line(
        &out.join("deposit-create-rate.svg"),
        "deposit_address.create against clients (batches of 100)",
        "clients",
        "creates per second",
        &points,
    );
    let t = Instant::now();
    let rest = z.deposits.saturating_sub(made);
    create_deposits(&daemon, 8, rest.div_ceil(8), made).await;
    let watched = count(&daemon).await;
    let deposits = watched - invoices_watched;
    println!(
        "bench: {deposits} deposit addresses in all, the last {rest} made in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    daemon.kill();
    copy_db(&db, &saved);
    let ms = catch_up(&mut daemon, &gate, &saved, watched, tip, z.blocks).await;
    remove_db(&saved);
    let (few, few_ms) = per_block[0];
    row(
        &format!(
            "catch-up, blocks of {} txs, {open} open invoices and {deposits} deposit addresses",
            z.block_txs
        ),
        format!(
            "{ms:.2} ms/block = {:.2}x the same blocks at {few} open invoices ({few_ms:.2} ms), {}",
            ms / few_ms,
            floor(ms)
        ),
        "1.2x",
    );
    daemon.kill();
    let t = Instant::now();
    start_loaded(&mut daemon, watched).await;
    row(
        &format!("start-up with {watched} watched addresses ({deposits} deposit addresses)"),
        format!("{:.2} s", t.elapsed().as_secs_f64()),
        "5 s",
    );
    if let Some((small, small_rss)) = rss_small {
        let rss = rss_kib(daemon.pid());
        let per = (rss.saturating_sub(small_rss) as f64 * 1024.0) / (watched - small).max(1) as f64;
        row(
            &format!(
                "memory per watched address, invoices and deposit addresses (RSS {} MiB at {watched})",
                rss / 1024
            ),
            format!("{per:.0} bytes"),
            "300 bytes",
        );
    }
    // From here on, every figure is taken with the deposit addresses watched too.
    let open = format!("{open} open invoices and {deposits} deposit addresses");

    // Idle: at the tip with nothing new, polls once a second.
    let cpu = idle_cpu(daemon.pid(), z.idle_secs).await;
    row(&format!("idle CPU at {open}"), format!("{cpu:.2}%"), "1%");

    // invoice.get from 8 clients while blocks are processed, and the same calls split
    // by what was busy when they began: the node connecting the block, or settled
    // processing it.
    let (g, node_spans, settled_spans) =
        gets_during_blocks(&daemon, &ids, &rpc, &mut coins, &z).await;
    row(
        &format!("invoice.get, 8 clients, during blocks, {open}"),
        g.figure(None),
        "20,000/s, p99 2 ms, max 20 ms",
    );
    for (spans, what) in [
        (&node_spans, "while the node connects a block"),
        (&settled_spans, "while settled processes a block"),
    ] {
        row(
            &format!("invoice.get, the calls above begun {what}"),
            g.figure(Some(spans)),
            "p99 2 ms, max 20 ms",
        );
    }
    // Its floors: the same clients with no block at all, alone on the cores, then
    // beside one busy thread.
    for (busy, what) in [
        (false, "nothing else running"),
        (true, "beside one busy thread"),
    ] {
        let g = gets_without_blocks(&daemon, &ids, z.busy_secs, busy).await;
        row(
            &format!("invoice.get, 8 clients, no blocks, {what}, {open}"),
            format!(
                "{} ({:.0} us of the daemon's CPU per call)",
                g.figure(None),
                g.cpu_per_call()
            ),
            "a floor of the line above",
        );
    }

    // Detection through zmq_sequence with a busy mempool.
    let background: Vec<Option<&str>> = vec![None; z.mempool_detect];
    let txs = coins.payments(&background);
    rpc.send_all(&txs).await;
    let (p50, p99) = detection(&daemon, &rpc, &mut coins, z.samples).await;
    row(
        &format!(
            "detection with zmq_sequence, {} txs in the mempool",
            z.mempool_detect
        ),
        format!("p50 {p50:.1} ms, p99 {p99:.1} ms"),
        "p99 100 ms",
    );

    // A restart with a full mempool: the first poll reads all of it.
    let more: Vec<Option<&str>> = vec![None; z.mempool_restart.saturating_sub(z.mempool_detect)];
    let txs = coins.payments(&more);
    rpc.send_all(&txs).await;
    let size = rpc.call("getmempoolinfo", json!([])).await["size"]
        .as_u64()
        .unwrap();
    daemon.kill();
    let t = Instant::now();
    daemon.spawn_unsynced().await;
    let mut admin = daemon.admin().await;
    admin
        .wait_chain_for("the first poll", Duration::from_secs(600), |c| {
            c["last_poll_at"].is_i64() && c["lag_blocks"] == json!(0)
        })
        .await;
    row(
        &format!("restart with {size} mempool txs: first poll done"),
        format!("{:.2} s", t.elapsed().as_secs_f64()),
        "10 s",
    );

    println!("\n| what | figure | target |\n|---|---|---|");
    for f in &table {
        println!("| {} | {} | {} |", f.what, f.figure, f.target);
    }
    println!("\ncharts: {}", out.display());
}

/// `hashes` fetched raw one after the other through `rpc`, best of 3: ms per block.
async fn fetch_floor(rpc: &Rpc, hashes: &[String]) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        for h in hashes {
            rpc.call("getblock", json!([h, 0])).await;
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    best * 1000.0 / hashes.len() as f64
}

/// A daemon reaching `node` at `url` (the gate), from `start_height`, with push.
async fn count(daemon: &Daemon) -> usize {
    let mut admin = daemon.admin().await;
    let c = admin.ok("chain.status", json!({"chain": "regtest"})).await;
    c["chains"][0]["watched_addresses"].as_u64().unwrap() as usize
}

/// The ids of up to `n` invoices.
async fn ids(daemon: &Daemon, n: usize) -> Vec<String> {
    let mut admin = daemon.admin().await;
    let mut out = Vec::new();
    let mut cursor: Option<i64> = None;
    while out.len() < n {
        let mut p = json!({"limit": 1000});
        if let Some(c) = cursor {
            p["cursor"] = json!(c.to_string());
        }
        let page = admin.ok("invoice.list", p).await;
        out.extend(
            page["invoices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str().and_then(|c| c.parse().ok()) {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    out
}

/// Starts the daemon and waits until its socket answers and its watch set holds the
/// `open` invoices.
async fn start_loaded(daemon: &mut Daemon, open: usize) -> Admin {
    daemon.spawn_unsynced().await;
    let mut admin = daemon.admin().await;
    admin
        .wait_chain_for("the watch set loaded", Duration::from_secs(600), |c| {
            c["watched_addresses"].as_u64() == Some(open as u64)
        })
        .await;
    admin
}

/// The catch-up over the full blocks: from the first call that reaches the node to the
/// last block committed, in ms per block. `CATCH_UP_RUNS` times from the database
/// `saved` (the daemon stopped, the node behind the closed gate), the median reported:
/// one run on this machine varies by a third. Every payment in the blocks is found once.
async fn catch_up(
    daemon: &mut Daemon,
    gate: &Gate,
    saved: &std::path::Path,
    watched: usize,
    tip: u64,
    blocks: usize,
) -> f64 {
    let db = daemon.dir.path().join("data/settled.db");
    let mut runs = Vec::new();
    for run in 0..CATCH_UP_RUNS {
        if run > 0 {
            daemon.kill();
            gate.close();
        }
        copy_db(saved, &db);
        let mut admin = start_loaded(daemon, watched).await;
        gate.open();
        // Asked every 2 ms, not every 20: the wait's own granularity would add up to a
        // millisecond per block to a catch-up of 20 blocks.
        admin
            .wait_chain_every(
                "the catch-up",
                Duration::from_secs(900),
                Duration::from_millis(2),
                |c| c["scanned_height"].as_u64() == Some(tip),
            )
            .await;
        runs.push(gate.first().unwrap().elapsed().as_secs_f64());
        let detected = admin.count_events("payment.detected").await;
        assert_eq!(
            detected,
            blocks * 3,
            "every payment in the blocks found once"
        );
    }
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2] * 1000.0 / blocks as f64
}

fn remove_db(db: &std::path::Path) {
    for f in [db.to_path_buf(), wal(db)] {
        let _ = std::fs::remove_file(f);
    }
}

/// Copies a database that no process has open, with its write-ahead log.
fn copy_db(from: &std::path::Path, to: &std::path::Path) {
    std::fs::copy(from, to).unwrap();
    let _ = std::fs::remove_file(wal(to));
    let _ = std::fs::remove_file(to.with_extension("db-shm"));
    if wal(from).exists() {
        std::fs::copy(wal(from), wal(to)).unwrap();
    }
}

fn wal(db: &std::path::Path) -> std::path::PathBuf {
    db.with_extension("db-wal")
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The CPU seconds (user and system) process `pid` has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command's closing parenthesis: utime and stime are fields 14 and 15,
    // in clock ticks of 1/100 s (Linux's USER_HZ).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    (f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()) as f64 / 100.0
}

async fn idle_cpu(pid: u32, secs: u64) -> f64 {
    let before = cpu_secs(pid);
    let t = Instant::now();
    // Measuring: a fixed span of time is the measurement itself.
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let used = cpu_secs(pid) - before;
    used / t.elapsed().as_secs_f64() * 100.0
}

/// `invoice.get` from 8 clients for as long as `z.get_blocks` full blocks take to be
/// mined and processed, and the spans in which the node was connecting a block
/// (`generateblock` called and not yet answered) and in which settled was processing
/// it (from the node's answer until the daemon has scanned the block).
async fn gets_during_blocks(
    daemon: &Daemon,
    ids: &[String],
    rpc: &Rpc,
    coins: &mut Coins,
    z: &Sizes,
) -> (Gets, Vec<(Instant, Instant)>, Vec<(Instant, Instant)>) {
    // The blocks' transactions go to the mempool first, and the daemon takes them in,
    // outside the measurement: it measures block processing, not Core validating
    // thousands of transactions a second on the same two cores.
    let mut blocks = Vec::new();
    for _ in 0..z.get_blocks {
        let to: Vec<Option<&str>> = vec![None; z.block_txs];
        let txs = coins.payments(&to);
        rpc.send_all(&txs).await;
        blocks.push(
            txs.iter()
                .map(|t| json!(t.compute_txid().to_string()))
                .collect::<Vec<_>>(),
        );
    }
    let mut admin = daemon.admin().await;
    let polled =
        admin.ok("chain.status", json!({"chain": "regtest"})).await["chains"][0]["last_poll_at"]
            .as_i64()
            .unwrap_or(0);
    admin
        .wait_chain_for(
            "a poll after the mempool filled",
            Duration::from_secs(120),
            |c| c["last_poll_at"].as_i64() > Some(polled + 1),
        )
        .await;
    let (mut node_spans, mut settled_spans) = (Vec::new(), Vec::new());
    let g = gets(daemon, ids, async {
        for txids in &blocks {
            let called = Instant::now();
            rpc.call("generateblock", json!([common::other_address(), txids]))
                .await;
            let answered = Instant::now();
            let h = rpc.height().await;
            admin
                .wait_chain_for("the block", Duration::from_secs(60), |c| {
                    c["scanned_height"].as_u64() >= Some(h)
                })
                .await;
            node_spans.push((called, answered));
            settled_spans.push((answered, Instant::now()));
        }
    })
    .await;
    (g, node_spans, settled_spans)
}

/// `invoice.get` from 8 clients for `secs`, no block in sight, with or without one
/// thread spinning on the same cores: the latency this machine gives with nothing
/// else to do, and the floor that sharing its two cores with one busy process (the
/// node connecting a block) sets.
async fn gets_without_blocks(
    daemon: &Daemon,
    ids: &[String],
    secs: u64,
    beside_busy: bool,
) -> Gets {
    let spin = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(beside_busy));
    let busy = {
        let spin = spin.clone();
        std::thread::spawn(move || {
            let mut x = 0u64;
            while spin.load(std::sync::atomic::Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        })
    };
    // Measuring: a fixed span of time is the measurement itself.
    let r = gets(daemon, ids, tokio::time::sleep(Duration::from_secs(secs))).await;
    spin.store(false, std::sync::atomic::Ordering::Relaxed);
    busy.join().unwrap();
    r
}

/// What 8 clients of `invoice.get` saw: when each call began and how long it took.
struct Gets {
    /// Each call's start and latency in ms.
    calls: Vec<(Instant, f64)>,
    secs: f64,
    /// The daemon's CPU time (user and system) over the span, in seconds.
    cpu_secs: f64,
}

impl Gets {
    /// The rate, p99 and maximum of the calls that began inside one of `spans` (all
    /// calls if `None`), as the table prints them; the rate is over the whole span.
    fn figure(&self, spans: Option<&[(Instant, Instant)]>) -> String {
        let mut lat: Vec<f64> = self
            .calls
            .iter()
            .filter(|(t, _)| spans.is_none_or(|s| s.iter().any(|(a, b)| a <= t && t < b)))
            .map(|&(_, ms)| ms)
            .collect();
        if lat.is_empty() {
            return "no call".into();
        }
        lat.sort_by(f64::total_cmp);
        let p99 = settled::quantile(&lat, 99);
        let max = lat.last().unwrap();
        match spans {
            None => format!(
                "{:.0}/s, p99 {p99:.2} ms, max {max:.1} ms",
                self.calls.len() as f64 / self.secs
            ),
            Some(_) => format!("{} calls, p99 {p99:.2} ms, max {max:.1} ms", lat.len()),
        }
    }

    /// The daemon's CPU time per call, in microseconds.
    fn cpu_per_call(&self) -> f64 {
        self.cpu_secs * 1e6 / self.calls.len().max(1) as f64
    }
}

/// `invoice.get` from 8 lean clients (see `Lean`), each answer checked for its id,
/// until `until` is done.
async fn gets(
    daemon: &Daemon,
    ids: &[String],
    until: impl std::future::Future<Output = ()>,
) -> Gets {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..8 {
        let mut client = Lean::connect(daemon).await;
        let lines: Vec<(String, String)> = ids
            .iter()
            .map(|id| {
                let req = json!({"jsonrpc": "2.0", "id": id, "method": "invoice.get",
                                 "params": {"id": id}});
                (format!("{req}\n"), format!("\"id\":\"{id}\""))
            })
            .collect();
        let done = done.clone();
        clients.push(tokio::spawn(async move {
            let mut calls = Vec::new();
            let mut i = c * 97;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let (line, id) = &lines[i % lines.len()];
                i += 1;
                let t = Instant::now();
                let answer = client.call(line).await;
                calls.push((t, t.elapsed().as_secs_f64() * 1000.0));
                assert!(answer.contains(id.as_str()), "invoice.get: {answer}");
            }
            calls
        }));
    }
    let cpu_before = cpu_secs(daemon.pid());
    let t = Instant::now();
    until.await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let secs = t.elapsed().as_secs_f64();
    let cpu_used = cpu_secs(daemon.pid()) - cpu_before;
    let mut calls = Vec::new();
    for c in clients {
        calls.extend(c.await.unwrap());
    }
    Gets {
        calls,
        secs,
        cpu_secs: cpu_used,
    }
}

/// `samples` payments sent one by one, each timed from `sendrawtransaction` to its
/// `payment.detected` event on a subscription: p50 and p99 in ms.
async fn detection(daemon: &Daemon, rpc: &Rpc, coins: &mut Coins, samples: usize) -> (f64, f64) {
    // Invoices of their own for the samples.
    let mut by_address = HashMap::new();
    let mut creator = daemon.admin().await;
    for _ in 0..samples {
        let inv = creator.invoice(json!({"amount": "0.001"})).await;
        by_address.insert(
            inv["address"].as_str().unwrap().to_string(),
            inv["id"].as_str().unwrap().to_string(),
        );
    }
    let mut admin = settled::subscribed(daemon).await;
    let mut lat = Vec::new();
    for (address, id) in &by_address {
        let tx = coins.payments(&[Some(address.as_str())]);
        let t = Instant::now();
        rpc.send_all(&tx).await;
        loop {
            let msg = admin.read().await.unwrap();
            let ev = &msg["params"];
            if ev["type"] == "payment.detected" && ev["invoice_id"] == json!(id) {
                break;
            }
        }
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    let at = |q: usize| settled::quantile(&lat, q);
    (at(50), at(99))
}

impl Admin {
    /// As `wait_chain`, for as long as `limit`.
    async fn wait_chain_for(&mut self, what: &str, limit: Duration, pred: impl Fn(&Value) -> bool) {
        self.wait_chain_every(what, limit, Duration::from_millis(20), pred)
            .await
    }

    /// As `wait_chain_for`, asking every `every`.
    async fn wait_chain_every(
        &mut self,
        what: &str,
        limit: Duration,
        every: Duration,
        pred: impl Fn(&Value) -> bool,
    ) {
        let t = Instant::now();
        loop {
            let s = self.ok("chain.status", json!({"chain": "regtest"})).await;
            if pred(&s["chains"][0]) {
                return;
            }
            assert!(t.elapsed() < limit, "timed out waiting for {what}: {s}");
            tokio::time::sleep(every).await;
        }
    }
}
