//! Crash torture: a random but seeded workload (invoices of every kind, payments and
//! installments, RBF replacements, reorganisations of random depth, node restarts,
//! deposits, failing webhooks) while settled is SIGKILLed at random moments and
//! aborted at named points inside its write path (`SETTLED_FAULT`, debug builds).
//! After every round the invariant checker (`common/checker.rs`) compares settled
//! with the node and the webhook receiver.
//!
//! `SETTLED_TORTURE_ROUNDS` (default 5) and `SETTLED_TORTURE_SEED` (default fixed)
//! set the run; `scripts/torture [ROUNDS] [SEED]` runs a long one. A failure prints
//! the seed that replays it.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use bitcoin::{Amount, Transaction};
use common::checker::Checker;
use common::receiver::Receiver;
use common::{Admin, Daemon, Node, Payer, Utxo, other_address};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// The fault points of `src/fault.rs`.
const POINTS: &[&str] = &[
    "block_before_commit",
    "after_block_commit",
    "event_before_outbox",
    "webhook_mid_delivery",
    "create_before_answer",
];

/// Amounts that meet each confirmation tier of `chains/regtest.toml` (0, 1 and 3).
const AMOUNTS: &[&str] = &["0.0005", "0.001", "0.01", "0.05", "0.3", "1.5"];

#[derive(Debug, Default)]
struct Figures {
    rounds: usize,
    kills: usize,
    faults: usize,
    payments: usize,
    deposits: usize,
    replacements: usize,
    reorgs: usize,
    node_restarts: usize,
    /// Aborts at each fault point.
    at: std::collections::BTreeMap<String, usize>,
}

/// An invoice the workload knows of.
struct Open {
    id: String,
    address: Option<String>,
    due: String,
}

/// A payment that may still be replaced: its input, and the transaction.
struct Sent {
    input: Utxo,
    tx: Transaction,
    /// Its change, spent again once it is deeper than any reorganisation here.
    change: Utxo,
}

struct Torture {
    rng: StdRng,
    node: Node,
    payer: Payer,
    daemon: Daemon,
    receiver: Receiver,
    invoices: Vec<Open>,
    unpriced: Vec<String>,
    addresses: Vec<(String, String)>,
    sent: Vec<Sent>,
    checker: Checker,
    fig: Figures,
}

/// One call on a fresh connection; `None` if the daemon is down or refuses it.
async fn call(socket: &Path, method: &str, params: Value) -> Option<Value> {
    let mut a = Admin::connect(socket).await.ok()?;
    let req = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    a.try_send_line(&req.to_string()).await.ok()?;
    let msg = a.read().await?;
    msg.get("result").cloned()
}

impl Torture {
    /// Starts settled again, clean or with a fault point armed, and waits for its
    /// socket (or for it to die at its fault on the way).
    async fn start_daemon(&mut self, mut fault: Option<String>) {
        let start = Instant::now();
        loop {
            self.daemon.env.retain(|(k, _)| k != "SETTLED_FAULT");
            if let Some(f) = fault.take() {
                self.daemon.env.push(("SETTLED_FAULT".into(), f));
            }
            self.daemon.spawn();
            loop {
                assert!(
                    start.elapsed() < common::WAIT,
                    "settled's socket never came up\n{}",
                    self.daemon.log()
                );
                if !self.daemon.running() {
                    // Stopped at its fault on the way up: clean from now on.
                    self.fault_fired();
                    break;
                }
                if Admin::connect(&self.daemon.socket).await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Brings settled back if a fault point stopped it.
    async fn revive(&mut self) {
        if !self.daemon.running() {
            self.fault_fired();
            self.start_daemon(None).await;
        }
    }

    /// The fault the daemon was started with (`<point>:<n>`), if any.
    fn armed(&self) -> Option<String> {
        self.daemon
            .env
            .iter()
            .find(|(k, _)| k == "SETTLED_FAULT")
            .map(|(_, v)| v.clone())
    }

    /// Counts the abort of the fault point that was armed.
    fn fault_fired(&mut self) {
        self.fig.faults += 1;
        let point = self.armed().map_or("?".to_string(), |v| {
            v.split(':').next().unwrap().to_string()
        });
        *self.fig.at.entry(point).or_default() += 1;
    }

    async fn call(&mut self, method: &str, params: Value) -> Option<Value> {
        call(&self.daemon.socket, method, params).await
    }

    async fn create_invoice(&mut self) {
        let amount = AMOUNTS[self.rng.random_range(0..AMOUNTS.len())];
        let params = match self.rng.random_range(0..5) {
            0 => json!({"chain": "regtest", "asset": "BTC", "mode": "open"}),
            1 => json!({"price": {"amount": "10", "currency": "USD"}}),
            2 => {
                json!({"chain": "regtest", "asset": "BTC", "amount": amount, "underpaid_tolerance": "0.0001"})
            }
            _ => {
                json!({"chain": "regtest", "asset": "BTC", "amount": amount, "order_id": format!("o{}", self.rng.random::<u16>())})
            }
        };
        let Some(inv) = self.call("invoice.create", params).await else {
            return;
        };
        let id = inv["id"].as_str().unwrap().to_string();
        match inv["address"].as_str() {
            Some(a) => self.invoices.push(Open {
                id,
                address: Some(a.to_string()),
                due: inv["amount_due"].as_str().unwrap_or(amount).to_string(),
            }),
            None => self.unpriced.push(id),
        }
    }

    async fn add_option(&mut self) {
        if self.unpriced.is_empty() {
            return self.create_invoice().await;
        }
        let id = self
            .unpriced
            .remove(self.rng.random_range(0..self.unpriced.len()));
        let amount = AMOUNTS[self.rng.random_range(0..AMOUNTS.len())];
        let p = json!({"id": id, "chain": "regtest", "asset": "BTC", "amount": amount, "expires_in": 3600});
        if let Some(inv) = self.call("invoice.add_option", p).await {
            self.invoices.push(Open {
                id,
                address: inv["options"][0]["address"].as_str().map(str::to_string),
                due: amount.to_string(),
            });
        }
    }

    /// Pays `btc` to `address` from a coin of its own (no change reused, so a
    /// replacement never takes other payments with it).
    async fn pay(&mut self, address: &str, btc: &str) {
        if self.payer.coins() == 0 {
            return;
        }
        let rbf = self.rng.random_bool(0.4);
        let input = self.payer.take();
        let tx = self.payer.payment(input, address, btc, rbf);
        let change = self.payer.take_change();
        if self.send(&tx).await {
            self.fig.payments += 1;
            self.sent.push(Sent { input, tx, change });
        }
    }

    /// Broadcasts `tx`; whether the node took it.
    async fn send(&self, tx: &Transaction) -> bool {
        let hex = bitcoin::consensus::encode::serialize_hex(tx);
        self.node
            .try_rpc("sendrawtransaction", json!([hex]))
            .await
            .is_ok()
    }

    async fn pay_invoice(&mut self) {
        if self.invoices.is_empty() {
            return self.create_invoice().await;
        }
        let k = self.rng.random_range(0..self.invoices.len());
        let (Some(address), due) = (
            self.invoices[k].address.clone(),
            self.invoices[k].due.clone(),
        ) else {
            return;
        };
        let sats = Amount::from_str_in(&due, bitcoin::Denomination::Bitcoin)
            .unwrap()
            .to_sat();
        // In full, in installments, over, or short.
        let pay = match self.rng.random_range(0..4) {
            0 => sats / 2,
            1 => sats + 10_000,
            2 => sats.saturating_sub(20_000).max(1_000),
            _ => sats,
        }
        .max(1_000);
        let btc = Amount::from_sat(pay).to_string_in(bitcoin::Denomination::Bitcoin);
        self.pay(&address, &btc).await;
    }

    async fn deposit(&mut self) {
        if self.addresses.is_empty() || self.rng.random_bool(0.2) {
            let client = format!("client-{}", self.rng.random_range(0..6));
            if let Some(a) = self
                .call(
                    "deposit_address.create",
                    json!({"chain": "regtest", "client_id": client}),
                )
                .await
            {
                let pair = (
                    a["id"].as_str().unwrap().to_string(),
                    a["address"].as_str().unwrap().to_string(),
                );
                if !self.addresses.contains(&pair) {
                    self.addresses.push(pair);
                }
            }
            return;
        }
        let (_, address) = self.addresses[self.rng.random_range(0..self.addresses.len())].clone();
        let btc = AMOUNTS[self.rng.random_range(0..AMOUNTS.len())];
        self.pay(&address, btc).await;
        self.fig.deposits += 1;
    }

    /// Replaces a payment still in the mempool by one paying the payer itself.
    async fn replace(&mut self) {
        let pool = self.node.rpc("getrawmempool", json!([])).await;
        let pool: Vec<&str> = pool
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let Some(k) = self
            .sent
            .iter()
            .position(|s| pool.contains(&s.tx.compute_txid().to_string().as_str()))
        else {
            return;
        };
        let s = self.sent.remove(k);
        let fee = Amount::from_sat(self.rng.random_range(20_000..60_000));
        let tx = self.payer.spend_to_self(s.input, fee);
        let change = self.payer.take_change();
        if self.send(&tx).await {
            self.fig.replacements += 1;
            self.sent.push(Sent {
                input: s.input,
                tx,
                change,
            });
        }
    }

    /// Gives the payer back the change of what is 7 blocks deep (past the 3-block
    /// reorganisations and the 6 of finality), so that a long run keeps paying.
    async fn recycle(&mut self) {
        let mut kept = Vec::new();
        for s in std::mem::take(&mut self.sent) {
            let out = self
                .node
                .rpc(
                    "gettxout",
                    json!([
                        s.change.outpoint.txid.to_string(),
                        s.change.outpoint.vout,
                        false
                    ]),
                )
                .await;
            if out["confirmations"].as_u64().is_some_and(|c| c >= 7) {
                self.payer.give(s.change);
            } else {
                kept.push(s);
            }
        }
        self.sent = kept;
    }

    async fn mine(&mut self) {
        let n = self.rng.random_range(1..3);
        self.node.mine_to(n, &other_address()).await;
    }

    /// A reorganisation of 1 to 3 blocks (below the 6 of finality): the old tip's
    /// transactions go back to the mempool, the new branch is one block longer.
    async fn reorg(&mut self) {
        let tip = self.node.height().await;
        let depth = self.rng.random_range(1..4).min(tip - 1);
        let hash = self
            .node
            .rpc("getblockhash", json!([tip + 1 - depth]))
            .await;
        self.node.rpc("invalidateblock", json!([hash])).await;
        // To an address of its own: an empty block to the same address in the same
        // second would be the very block just invalidated.
        let to = self.fresh_address();
        for _ in 0..=depth {
            self.node.mine_block_with(&to, &[]).await;
        }
        self.fig.reorgs += 1;
        if self.rng.random_bool(0.5) {
            self.replace().await;
        }
    }

    fn fresh_address(&mut self) -> String {
        use bitcoin::secp256k1::{Secp256k1, SecretKey};
        let key = SecretKey::from_slice(&self.rng.random::<[u8; 32]>()).unwrap();
        let pk = bitcoin::CompressedPublicKey(key.public_key(&Secp256k1::new()));
        bitcoin::Address::p2wpkh(&pk, bitcoin::Network::Regtest).to_string()
    }

    async fn restart_node(&mut self) {
        self.node.stop().await;
        self.node.restart().await;
        self.fig.node_restarts += 1;
    }

    async fn step(&mut self) {
        match self.rng.random_range(0..20) {
            0..=3 => self.create_invoice().await,
            4 => self.add_option().await,
            5..=8 => self.pay_invoice().await,
            9..=11 => self.deposit().await,
            12 => self.replace().await,
            13..=15 => self.mine().await,
            16 | 17 => self.reorg().await,
            18 => self.restart_node().await,
            _ if !self.invoices.is_empty() => {
                // The backend decides: void, accept as paid, or give more time.
                let k = self.rng.random_range(0..self.invoices.len());
                let id = self.invoices[k].id.clone();
                let method = ["invoice.void", "invoice.mark_completed", "invoice.extend"]
                    [self.rng.random_range(0..3)];
                self.call(method, json!({"id": id, "expires_in": 600}))
                    .await;
            }
            _ => self.create_invoice().await,
        }
    }

    async fn round(&mut self) {
        // Webhooks fail for some rounds: retried, and still delivered in order.
        if self.rng.random_bool(0.3) {
            self.receiver.answer(|_, _| Some((500, Duration::ZERO)));
        }
        if self.rng.random_bool(0.6) {
            let forced = std::env::var("SETTLED_TORTURE_POINT").ok();
            let pick = POINTS[self.rng.random_range(0..POINTS.len())];
            let point = forced.as_deref().unwrap_or(pick);
            let n = self.rng.random_range(1..3);
            self.daemon.kill();
            self.fig.kills += 1;
            self.start_daemon(Some(format!("{point}:{n}"))).await;
        }
        for _ in 0..self.rng.random_range(4..10) {
            self.revive().await;
            self.step().await;
            if self.rng.random_bool(0.15) {
                // A SIGKILL at a random moment of whatever the daemon is doing.
                tokio::time::sleep(Duration::from_millis(self.rng.random_range(0..200))).await;
                // Still armed if its fault has not fired yet.
                let armed = self.armed();
                self.daemon.kill();
                self.fig.kills += 1;
                self.start_daemon(armed).await;
            }
        }
        // A fault still armed: what reaches every point (a block with a payment, a
        // create, their events and webhooks), and a moment for it to fire.
        self.revive().await;
        if self.armed().is_some() {
            self.create_invoice().await;
            self.pay_invoice().await;
            self.node.mine_to(1, &other_address()).await;
            let start = Instant::now();
            while self.daemon.running() && start.elapsed() < Duration::from_secs(2) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            self.revive().await;
        }
        // Clean for the check: a fault still armed would fire while it waits.
        if self.armed().is_some() {
            self.daemon.kill();
            self.fig.kills += 1;
            self.start_daemon(None).await;
        }
        self.receiver.answer(|_, _| Some((200, Duration::ZERO)));
        let mut admin = self.daemon.admin().await;
        self.checker
            .assert_holds(&self.node, &mut admin, Some(&self.receiver))
            .await;
        self.fig.rounds += 1;
        self.recycle().await;
    }
}

/// Prints the seed when the run fails, so that it can be replayed.
struct SeedOnFailure(u64);

impl Drop for SeedOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "torture FAILED: replay with SETTLED_TORTURE_SEED={}",
                self.0
            );
        }
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test]
async fn torture_kills_faults_reorgs_and_failing_webhooks_never_lose_or_double_anything() {
    let rounds = env_or("SETTLED_TORTURE_ROUNDS", 5);
    let seed = env_or("SETTLED_TORTURE_SEED", 14);
    let _seed = SeedOnFailure(seed);
    let node = Node::start().await;
    let payer = Payer::fund_with(&node, 60).await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = common::webhook_secret(dir.path(), "torture-secret-0123456789abcdef");
    let mut daemon = Daemon::configure(
        &node,
        "rpc_user = \"test\"\nrpc_password = \"test\"",
        &format!(
            "[webhook]\nurl = \"{}\"\nsecret_file = \"{}\"\nfirst_retry_ms = 100\nmax_retry_interval = 1\n",
            receiver.url(),
            secret.display()
        ),
    );
    daemon.restart().await;
    let mut t = Torture {
        rng: StdRng::seed_from_u64(seed),
        node,
        payer,
        daemon,
        receiver,
        invoices: Vec::new(),
        unpriced: Vec::new(),
        addresses: Vec::new(),
        sent: Vec::new(),
        checker: Checker::new(),
        fig: Figures::default(),
    };
    let start = Instant::now();
    for _ in 0..rounds {
        t.round().await;
    }
    let f = &t.fig;
    println!(
        "torture seed {seed}: {} rounds, {} kills ({} SIGKILL, {} at fault points), {} payments \
         ({} to deposit addresses), {} replacements, {} reorgs, {} node restarts, {} checks, \
         0 violations, {:.0} s; aborts by fault point: {:?}",
        f.rounds,
        f.kills + f.faults,
        f.kills,
        f.faults,
        f.payments,
        f.deposits,
        f.replacements,
        f.reorgs,
        f.node_restarts,
        // The checker runs after every round.
        f.rounds,
        start.elapsed().as_secs_f64(),
        f.at
    );
}
