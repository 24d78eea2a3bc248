//! `scripts/bench`: how fast settled catches up on an EVM chain, beside the floor of
//! fetching the same blocks, logs and traces raw, and whether the cost of a block
//! grows with the number of open invoices (it should not: addresses are matched in
//! memory, and there is no per-invoice call to the node).
//!
//! Blocks of 200 transactions on anvil, half ETH payments and half USDT transfers,
//! a few to invoices, traces on. For each number of open invoices: settled is
//! stopped, the blocks are mined, and the time settled takes from its restart to the
//! last block is measured; every payment is checked to have been found. `--short`
//! runs it small (CI's smoke test; its figures mean nothing).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use alloy::primitives::U256;
use alloy::sol_types::SolCall;
use common::Daemon;
use common::anvil::{Anvil, PAYER, USDT, transferCall, wei};
use serde_json::json;

#[tokio::main]
async fn main() {
    let short = std::env::args().any(|a| a == "--short");
    let (blocks, per_block, levels) = match short {
        true => (4u64, 40usize, vec![10usize, 200]),
        false => (40, 200, vec![10, 1_000, 5_000]),
    };
    let paid_per_block = 4;
    println!(
        "EVM catch-up over {blocks} blocks of {per_block} transactions (ETH and USDT), traces on:"
    );
    for open in levels {
        let anvil = Anvil::start().await;
        let mut daemon = Daemon::start_anvil(&anvil, "").await;
        let mut admin = daemon.admin().await;
        let mut addresses = Vec::with_capacity(open);
        for i in 0..open {
            let asset = if i % 2 == 0 { "ETH" } else { "USDT" };
            let inv = admin
                .invoice(json!({"asset": asset, "amount": "1000"}))
                .await;
            addresses.push((asset, inv["address"].as_str().unwrap().to_string()));
        }
        let payments = before(&mut admin).await;
        daemon.kill();
        let from = anvil.height().await + 1;
        anvil.rpc("evm_setAutomine", json!([false])).await;
        let other = "0x000000000000000000000000000000000000dEaD";
        let mut paid = 0;
        for b in 0..blocks as usize {
            for t in 0..per_block {
                let to = if t < paid_per_block {
                    paid += 1;
                    addresses[(b * paid_per_block + t) % open].clone()
                } else {
                    ("ETH", other.to_string())
                };
                let tx = match (t % 2, to.0) {
                    (0, _) | (_, "ETH") => {
                        json!({"from": PAYER, "to": to.1, "value": format!("0x{:x}", wei("0.001"))})
                    }
                    _ => {
                        let call = transferCall {
                            to: to.1.parse().unwrap(),
                            value: U256::from(1_000u64),
                        };
                        json!({"from": PAYER, "to": USDT,
                               "data": format!("0x{}", alloy::primitives::hex::encode(call.abi_encode()))})
                    }
                };
                anvil.send(tx).await;
            }
            anvil.rpc("evm_mine", json!([])).await;
        }
        let tip = anvil.height().await;
        // The floor: the same blocks, their traces and the range's logs, fetched raw.
        let t = Instant::now();
        for n in from..=tip {
            let n = format!("0x{n:x}");
            anvil.rpc("eth_getBlockByNumber", json!([n, true])).await;
            anvil
                .rpc(
                    "debug_traceBlockByNumber",
                    json!([n, {"tracer": "callTracer"}]),
                )
                .await;
        }
        anvil
            .rpc(
                "eth_getLogs",
                json!([{"fromBlock": format!("0x{from:x}"), "toBlock": format!("0x{tip:x}"), "address": USDT}]),
            )
            .await;
        let floor = t.elapsed().as_secs_f64() * 1000.0 / blocks as f64;
        println!("  floor: {floor:.2} ms per block (block, trace and logs fetched raw)");

        // From the restart to the last block scanned; a big form takes longer than the
        // tests' waits.
        let start = Instant::now();
        daemon.spawn_unsynced().await;
        let mut admin = daemon.admin().await;
        loop {
            let s = admin.ok("chain.status", json!({"chain": "anvil"})).await;
            if s["chains"][0]["scanned_height"].as_u64() >= Some(tip) {
                break;
            }
            assert!(start.elapsed().as_secs() < 1800, "catch-up timed out: {s}");
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let ms = start.elapsed().as_secs_f64() * 1000.0 / blocks as f64;
        // The figure counts only if every payment was found.
        let detected = admin.count_events("payment.detected").await - payments;
        assert_eq!(detected, paid, "every payment found");
        println!(
            "  {open:>5} open invoices: {ms:.2} ms per block = {:.2}x the floor ({floor:.2} ms)   [1.5x]",
            ms / floor
        );
    }
}

/// Payments already recorded (none: the invoices are new).
async fn before(admin: &mut common::Admin) -> usize {
    admin.count_events("payment.detected").await
}
