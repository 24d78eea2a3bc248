//! The invariant checker: recomputes from the Bitcoin node alone what settled must
//! hold, reads what it holds through its admin socket (and what a webhook receiver
//! got), and lists every difference.
//!
//! - every output to an invoice's or a deposit address's address in the best chain
//!   or the mempool is recorded exactly once, with its amount, state and block; a
//!   record the chain no longer holds is `DROPPED`;
//! - every invoice's status and amounts are what the reference model
//!   (`model.rs`) gives for its recorded payments;
//! - a deposit is credited exactly when the credit rule says, and its
//!   `deposit.confirmed`/`deposit.reverted` events alternate to its credit;
//! - events are gap-free by `seq`; every invoice's status changes chain from its
//!   creation to its status; every payment and deposit has its events and no event
//!   names one that is not recorded;
//! - every event reached the receiver at least once, first in `seq` order per
//!   invoice and per deposit address.
//!
//! It assumes what the tests that use it arrange: every address watched for the whole
//! run (late windows longer than the run) and no payment outstaying its
//! confirmation window (an `EXPIRED` invoice with reason `confirmation_timeout` is
//! not judged: the payments' timed-out flags are not in the API).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::{Amount, Block, Denomination, ScriptBuf, Transaction};
use serde_json::{Value, json};

use super::model;
use super::receiver::Receiver;
use super::{Admin, Node, WAIT, script_of as script, unix_now};

/// An output of the chain to one of settled's addresses.
#[derive(Debug, Clone, PartialEq)]
struct Transfer {
    sats: u64,
    /// `None` in the mempool.
    height: Option<u64>,
}

/// The checker; it keeps the best chain it last read, block by block, and reads
/// again only from where the node's differs.
#[derive(Default)]
pub struct Checker {
    /// By height: the hash and the block (`None` until read).
    best: Vec<Option<(String, Block)>>,
}

/// The transfers to each script, by (txid, output).
type Transfers = HashMap<ScriptBuf, HashMap<(String, u32), Transfer>>;

fn sats(text: &Value) -> u64 {
    let s = text
        .as_str()
        .unwrap_or_else(|| panic!("amount {text} is not a string"));
    Amount::from_str_in(s, Denomination::Bitcoin)
        .unwrap_or_else(|e| panic!("amount {s}: {e}"))
        .to_sat()
}

/// Every page of a list method.
async fn all(admin: &mut Admin, method: &str, mut params: Value, key: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let page = admin.ok(method, params.clone()).await;
        out.extend(page[key].as_array().unwrap().iter().cloned());
        if page["next_cursor"].is_null() {
            return out;
        }
        params["cursor"] = page["next_cursor"].clone();
    }
}

/// Every event, oldest first.
pub async fn events(admin: &mut Admin) -> Vec<Value> {
    let (mut after, mut out) = (0, Vec::new());
    loop {
        let page = admin
            .ok("events.list", json!({"after_seq": after, "limit": 1000}))
            .await;
        let evs = page["events"].as_array().unwrap();
        if evs.is_empty() {
            return out;
        }
        out.extend(evs.iter().cloned());
        after = page["last_seq"].as_i64().unwrap();
    }
}

impl Checker {
    /// A checker with no blocks read yet.
    pub fn new() -> Checker {
        Checker::default()
    }

    /// Waits until every invariant holds (settled catches up, polls, delivers), and
    /// fails the test with the differences if they do not within [`WAIT`].
    pub async fn assert_holds(
        &mut self,
        node: &Node,
        admin: &mut Admin,
        receiver: Option<&Receiver>,
    ) {
        let start = Instant::now();
        loop {
            let bad = self.check(node, admin, receiver).await;
            if bad.is_empty() {
                return;
            }
            if start.elapsed() > WAIT {
                panic!(
                    "{} invariant(s) violated:\n  {}",
                    bad.len(),
                    bad.join("\n  ")
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// One comparison: every difference found.
    pub async fn check(
        &mut self,
        node: &Node,
        admin: &mut Admin,
        receiver: Option<&Receiver>,
    ) -> Vec<String> {
        let mut bad = Vec::new();
        // settled first, then the node: what the node says last is what settled must
        // have caught up with, and a difference is waited out by `assert_holds`.
        let status =
            admin.ok("chain.status", json!({"chain": "regtest"})).await["chains"][0].clone();
        let invoices = all(admin, "invoice.list", json!({"limit": 1000}), "invoices").await;
        let addresses = all(
            admin,
            "deposit_address.list",
            json!({"limit": 1000}),
            "deposit_addresses",
        )
        .await;
        let mut deposits = BTreeMap::new();
        for a in &addresses {
            let id = a["id"].as_str().unwrap().to_string();
            let list = all(
                admin,
                "deposit_address.deposits",
                json!({"id": id, "limit": 1000}),
                "deposits",
            )
            .await;
            deposits.insert(id, list);
        }
        let evs = events(admin).await;
        let now = unix_now();
        let (tip, chain) = self.chain(node).await;

        if status["scanned_height"].as_u64() != Some(tip) {
            bad.push(format!(
                "scanned {} of the node's {tip}",
                status["scanned_height"]
            ));
        }
        let synced_at = status["last_poll_at"].as_i64();

        // Transfers to each invoice's address.
        for inv in &invoices {
            let id = inv["id"].as_str().unwrap();
            let mut expected: HashMap<(String, u32), Transfer> = HashMap::new();
            for o in inv["options"].as_array().unwrap() {
                if o["chain"] == json!("regtest")
                    && let Some(a) = o["address"].as_str()
                    && let Some(t) = chain.get(&script(a))
                {
                    expected.extend(t.clone());
                }
            }
            let pays = inv["payments"].as_array().unwrap();
            compare(&format!("invoice {id}"), &expected, pays, &mut bad);
            judge(inv, synced_at, now, &mut bad);
        }
        // Deposits to each deposit address.
        for a in &addresses {
            let id = a["id"].as_str().unwrap();
            let expected = chain
                .get(&script(a["address"].as_str().unwrap()))
                .cloned()
                .unwrap_or_default();
            let list = &deposits[id];
            compare(&format!("deposit address {id}"), &expected, list, &mut bad);
            for d in list {
                let credited = d["credited"] == json!(true);
                let confs = d["confirmations"].as_u64().unwrap();
                let required = d["confirmations_required"].as_u64().unwrap();
                let held = match d["state"].as_str().unwrap() {
                    "CONFIRMED" => true,
                    "PENDING" => required == 0,
                    _ => false,
                };
                let reached = d["state"] == json!("CONFIRMED") && confs >= required;
                if credited && !held || reached && !credited {
                    bad.push(format!(
                        "deposit {}:{} of {id} credited {credited} at {confs}/{required} confirmations, {}",
                        d["txid"], d["index"], d["state"]
                    ));
                }
            }
        }
        check_events(&evs, &invoices, &deposits, &mut bad);
        if let Some(r) = receiver {
            check_deliveries(&evs, r, &mut bad);
        }
        bad
    }

    /// The node's tip, and every output of its best chain and mempool, by script.
    async fn chain(&mut self, node: &Node) -> (u64, Transfers) {
        let tip = node.height().await;
        // Walk down from the tip to the first block still as last read: only what a
        // reorganisation or new blocks changed is fetched again.
        self.best.truncate(tip as usize + 1);
        for h in (0..=tip).rev() {
            let hash = node.rpc("getblockhash", json!([h])).await;
            let hash = hash.as_str().unwrap().to_string();
            let at = h as usize;
            if let Some(Some((known, _))) = self.best.get(at)
                && *known == hash
            {
                break;
            }
            if self.best.len() <= at {
                self.best.resize_with(at + 1, || None);
            }
            self.best[at] = Some((hash.clone(), node.block(&hash).await));
        }
        let mut out = Transfers::new();
        let mut add = |tx: &Transaction, height: Option<u64>| {
            let txid = tx.compute_txid().to_string();
            for (i, o) in tx.output.iter().enumerate() {
                out.entry(o.script_pubkey.clone()).or_default().insert(
                    (txid.clone(), i as u32),
                    Transfer {
                        sats: o.value.to_sat(),
                        height,
                    },
                );
            }
        };
        for (h, (_, block)) in self
            .best
            .iter()
            .enumerate()
            .filter_map(|(h, b)| Some((h, b.as_ref()?)))
        {
            for tx in &block.txdata {
                add(tx, Some(h as u64));
            }
        }
        let mempool = node.rpc("getrawmempool", json!([])).await;
        for txid in mempool.as_array().unwrap() {
            // Gone between the two calls: the next check sees it mined or dropped.
            let Ok(hex) = node.try_rpc("getrawtransaction", json!([txid])).await else {
                continue;
            };
            let tx: Transaction = deserialize_hex(hex.as_str().unwrap()).unwrap();
            add(&tx, None);
        }
        (tip, out)
    }
}

/// Recorded payments or deposits against the chain's transfers to their address.
fn compare(
    what: &str,
    expected: &HashMap<(String, u32), Transfer>,
    recorded: &[Value],
    bad: &mut Vec<String>,
) {
    let mut keys = HashSet::new();
    for r in recorded {
        let key = (
            r["txid"].as_str().unwrap().to_string(),
            r["index"].as_u64().unwrap() as u32,
        );
        if !keys.insert(key.clone()) {
            bad.push(format!("{what}: {key:?} recorded twice"));
        }
        let state = r["state"].as_str().unwrap();
        match expected.get(&key) {
            None if state != "DROPPED" => bad.push(format!(
                "{what}: {key:?} is {state} but neither the best chain nor the mempool holds it"
            )),
            None => {}
            Some(t) => {
                let want_state = if t.height.is_some() {
                    "CONFIRMED"
                } else {
                    "PENDING"
                };
                if state != want_state || r["block_height"].as_u64() != t.height {
                    bad.push(format!(
                        "{what}: {key:?} is {state} at {} but the node has it {want_state} at {:?}",
                        r["block_height"], t.height
                    ));
                }
                if sats(&r["amount"]) != t.sats {
                    bad.push(format!(
                        "{what}: {key:?} recorded {} for {} sat",
                        r["amount"], t.sats
                    ));
                }
            }
        }
    }
    for key in expected.keys() {
        if !keys.contains(key) {
            bad.push(format!(
                "{what}: {key:?} is on the node but was never recorded"
            ));
        }
    }
}

/// An invoice's status and amounts against the reference model.
fn judge(inv: &Value, synced_at: Option<i64>, now: i64, bad: &mut Vec<String>) {
    let id = inv["id"].as_str().unwrap();
    let status = inv["status"].as_str().unwrap();
    let options = inv["options"].as_array().unwrap();
    // The backend's decisions and finality stand; a timed-out payment's flag is not
    // shown.
    let decided = match status {
        "VOIDED" | "REFUNDED" => return,
        "COMPLETED" if inv["marked"] == json!(true) => return,
        "EXPIRED" if inv["reason"] == json!("confirmation_timeout") => return,
        _ => None,
    };
    let m = model::Invoice {
        options: options
            .iter()
            .map(|o| model::Option_ {
                chain: 0,
                amount_due: o["amount_due"]
                    .as_str()
                    .map(|_| u128::from(sats(&o["amount_due"]))),
                tolerance: u128::from(sats(&o["underpaid_tolerance"])),
                required: o["confirmations_required"].as_u64().unwrap() as u32,
            })
            .collect(),
        open: inv["mode"] == json!("open"),
        expires_at: inv["expires_at"].as_i64(),
        decided,
    };
    let m = model::Invoice {
        // Open mode: what the first payment set is the model's to find.
        options: if m.open {
            m.options
                .into_iter()
                .map(|o| model::Option_ {
                    amount_due: None,
                    ..o
                })
                .collect()
        } else {
            m.options
        },
        ..m
    };
    let pays: Vec<model::Payment> = inv["payments"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(n, p)| model::Payment {
            option: options
                .iter()
                .position(|o| o["chain"] == p["chain"] && o["asset"] == p["asset"]),
            amount: u128::from(sats(&p["amount"])),
            state: match p["state"].as_str().unwrap() {
                "PENDING" => model::State::Pending,
                "CONFIRMED" => model::State::Confirmed,
                _ => model::State::Dropped,
            },
            confirmations: p["confirmations"].as_u64().unwrap(),
            rbf: p["rbf"] == json!(true),
            seen_at: p["seen_at"].as_i64().unwrap(),
            // The API lists payments in the order they were detected.
            order: n as i64,
            timed_out: false,
        })
        .collect();
    let chains = [model::Chain {
        confirmation_window: 86_400,
        accept_late_payments: false,
        synced_at,
    }];
    let (want, reason) = model::status(&m, &pays, &chains, now);
    // Completed with every payment final: no reorganisation takes it back.
    let final_ = status == "COMPLETED"
        && pays
            .iter()
            .all(|p| p.state == model::State::Confirmed && p.confirmations >= 6);
    let differs = if want == status {
        reason.as_deref() != inv["reason"].as_str()
    } else {
        !final_
    };
    if differs {
        bad.push(format!(
            "invoice {id} is {status} {} but the model says {want} {reason:?}",
            inv["reason"]
        ));
    }
    for (k, o) in options.iter().enumerate() {
        if o["chain"] == json!("regtest")
            && sats(&o["amount_paid"]) as u128 != model::paid(&pays, k)
        {
            bad.push(format!(
                "invoice {id} option {k} shows {} paid, its payments sum to {} sat",
                o["amount_paid"],
                model::paid(&pays, k)
            ));
        }
    }
}

/// The event log against the records.
fn check_events(
    evs: &[Value],
    invoices: &[Value],
    deposits: &BTreeMap<String, Vec<Value>>,
    bad: &mut Vec<String>,
) {
    for (i, e) in evs.iter().enumerate() {
        if e["seq"].as_i64() != Some(i as i64 + 1) {
            bad.push(format!(
                "event {} at place {} of the log: a gap",
                e["seq"],
                i + 1
            ));
            break;
        }
    }
    let mut of_invoice: HashMap<&str, Vec<&Value>> = HashMap::new();
    let mut of_address: HashMap<&str, Vec<&Value>> = HashMap::new();
    for e in evs {
        if let Some(id) = e["invoice_id"].as_str() {
            of_invoice.entry(id).or_default().push(e);
        } else if let Some(id) = e["deposit_address_id"].as_str() {
            of_address.entry(id).or_default().push(e);
        }
    }
    for inv in invoices {
        let id = inv["id"].as_str().unwrap();
        let evs = of_invoice.remove(id).unwrap_or_default();
        if evs.first().map(|e| &e["type"]) != Some(&json!("invoice.created")) {
            bad.push(format!(
                "invoice {id}: its first event is not invoice.created"
            ));
            continue;
        }
        // Status changes chain from the status it was created with to its status.
        let mut at = evs[0]["data"]["invoice"]["status"].clone();
        for e in evs.iter().filter(|e| e["type"] == "invoice.status_changed") {
            if e["data"]["from"] != at {
                bad.push(format!(
                    "invoice {id}: a change from {} while it was {at}",
                    e["data"]["from"]
                ));
            }
            at = e["data"]["to"].clone();
        }
        if at != inv["status"] {
            bad.push(format!(
                "invoice {id} is {} but its events leave it {at}",
                inv["status"]
            ));
        }
        let pays = inv["payments"].as_array().unwrap();
        last_state_matches(
            &format!("invoice {id}"),
            &evs,
            "payment",
            ("payment.detected", "payment.dropped"),
            pays,
            bad,
        );
    }
    for id in of_invoice.keys() {
        bad.push(format!(
            "events of invoice {id}, which settled does not list"
        ));
    }
    for (id, list) in deposits {
        let evs = of_address.remove(id.as_str()).unwrap_or_default();
        if evs.first().map(|e| &e["type"]) != Some(&json!("deposit_address.created")) {
            bad.push(format!(
                "deposit address {id}: its first event is not deposit_address.created"
            ));
        }
        last_state_matches(
            &format!("deposit address {id}"),
            &evs,
            "deposit",
            ("deposit.detected", "deposit.dropped"),
            list,
            bad,
        );
        // Credit and its taking back alternate, and end where the deposit stands.
        for d in list {
            let key = (&d["txid"], &d["index"]);
            let mut credited = false;
            for e in evs.iter().filter(|e| {
                (
                    &e["data"]["deposit"]["txid"],
                    &e["data"]["deposit"]["index"],
                ) == key
            }) {
                match e["type"].as_str().unwrap() {
                    "deposit.confirmed" if credited => bad.push(format!(
                        "deposit {key:?} of {id} credited twice without a reversal"
                    )),
                    "deposit.confirmed" => credited = true,
                    "deposit.reverted" if !credited => bad.push(format!(
                        "deposit {key:?} of {id} reverted while not credited"
                    )),
                    "deposit.reverted" => credited = false,
                    _ => {}
                }
            }
            if credited != (d["credited"] == json!(true)) {
                bad.push(format!(
                    "deposit {key:?} of {id}: credited {} but its events say {credited}",
                    d["credited"]
                ));
            }
        }
    }
    for id in of_address.keys() {
        bad.push(format!(
            "events of deposit address {id}, which settled does not list"
        ));
    }
}

/// Every record has its `detected` event, none is named by an event and missing, and
/// the last of its `detected`/`dropped` events says whether it is `DROPPED`.
fn last_state_matches(
    what: &str,
    evs: &[&Value],
    field: &str,
    (detected, dropped): (&str, &str),
    records: &[Value],
    bad: &mut Vec<String>,
) {
    let key = |v: &Value| {
        (
            v["txid"].as_str().unwrap_or_default().to_string(),
            v["index"].as_u64().unwrap_or(u64::MAX),
        )
    };
    let mut last: HashMap<(String, u64), &str> = HashMap::new();
    for e in evs {
        let t = e["type"].as_str().unwrap();
        if !t.starts_with(&format!("{field}.")) {
            continue;
        }
        let k = key(&e["data"][field]);
        if t == detected || t == dropped {
            last.insert(k, t);
        } else {
            last.entry(k).or_insert("(none before)");
        }
    }
    for r in records {
        let k = key(r);
        let dropped_now = r["state"] == json!("DROPPED");
        match last.remove(&k) {
            None => bad.push(format!("{what}: {k:?} has no {detected} event")),
            Some(t) if (t == dropped) != dropped_now => bad.push(format!(
                "{what}: {k:?} is {} but its last event is {t}",
                r["state"]
            )),
            Some(_) => {}
        }
    }
    for k in last.keys() {
        bad.push(format!(
            "{what}: events of {field} {k:?}, which is not recorded"
        ));
    }
}

/// Every event delivered at least once, first delivered in `seq` order per invoice
/// and per deposit address.
fn check_deliveries(evs: &[Value], receiver: &Receiver, bad: &mut Vec<String>) {
    let got = receiver.accepted();
    let mut first: HashMap<String, usize> = HashMap::new();
    let mut order: HashMap<String, Vec<i64>> = HashMap::new();
    for (n, r) in got.iter().enumerate() {
        let e = r.event();
        let id = e["id"].as_str().unwrap_or_default().to_string();
        if first.insert(id, n).is_none() {
            let owner = e["invoice_id"]
                .as_str()
                .or(e["deposit_address_id"].as_str())
                .unwrap_or_default();
            order
                .entry(owner.to_string())
                .or_default()
                .push(e["seq"].as_i64().unwrap());
        }
    }
    let missing: Vec<_> = evs
        .iter()
        .filter(|e| !first.contains_key(e["id"].as_str().unwrap()))
        .map(|e| e["seq"].clone())
        .collect();
    if !missing.is_empty() {
        bad.push(format!(
            "{} event(s) never delivered, seq {missing:?}",
            missing.len()
        ));
    }
    for (owner, seqs) in order {
        if seqs.windows(2).any(|w| w[0] > w[1]) {
            bad.push(format!("deliveries of {owner} out of seq order: {seqs:?}"));
        }
    }
}
