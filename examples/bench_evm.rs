//! `scripts/bench`: how fast settled catches up on an EVM chain, and whether the cost
//! of a block grows with the number of open invoices (it should not: addresses are
//! matched in memory, and there is no per-invoice call to the node).
//!
//! For each number of open invoices: settled is stopped, anvil mines blocks with
//! payments to some of the invoices in them, and the time settled takes to catch up is
//! measured. Prints blocks per second; compare the lines.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use alloy::primitives::U256;
use common::Daemon;
use common::anvil::{Anvil, USDT, wei};
use serde_json::json;

const BLOCKS: u64 = 600;
const PAYMENTS: u64 = 60;

#[tokio::main]
async fn main() {
    println!(
        "catch-up over {BLOCKS} blocks holding {PAYMENTS} payments (ETH and USDT), traces on:"
    );
    for open in [10usize, 1_000, 5_000] {
        let anvil = Anvil::start().await;
        let mut daemon = Daemon::start_anvil(&anvil, "").await;
        let mut admin = daemon.admin().await;
        let mut addresses = Vec::with_capacity(open);
        let created = Instant::now();
        for i in 0..open {
            let asset = if i % 2 == 0 { "ETH" } else { "USDT" };
            let inv = admin
                .invoice(json!({"asset": asset, "amount": "1000"}))
                .await;
            addresses.push((asset, inv["address"].as_str().unwrap().to_string()));
        }
        let created = created.elapsed();
        daemon.kill();
        for p in 0..PAYMENTS {
            let (asset, address) = &addresses[(p as usize * 7919) % open];
            match *asset {
                "ETH" => anvil.pay_eth(address, wei("0.001")).await,
                _ => anvil.pay_token(USDT, address, U256::from(1_000u64)).await,
            };
            anvil.mine(BLOCKS / PAYMENTS - 1).await;
        }
        let start = Instant::now();
        daemon.restart().await;
        let secs = start.elapsed().as_secs_f64();
        // The figure counts only if every payment was found.
        let mut admin = daemon.admin().await;
        let (mut after, mut detected) = (0, 0);
        loop {
            let page = admin
                .ok("events.list", json!({"after_seq": after, "limit": 1000}))
                .await;
            let events = page["events"].as_array().unwrap();
            if events.is_empty() {
                break;
            }
            detected += events
                .iter()
                .filter(|e| e["type"] == "payment.detected")
                .count();
            after = page["last_seq"].as_i64().unwrap();
        }
        assert_eq!(detected as u64, PAYMENTS, "every payment found");
        println!(
            "  {open:>5} open invoices: {:>7.1} blocks/s ({:.2} ms per block; {open} invoices created in {:.1} s)",
            BLOCKS as f64 / secs,
            secs * 1000.0 / BLOCKS as f64,
            created.as_secs_f64()
        );
    }
}
