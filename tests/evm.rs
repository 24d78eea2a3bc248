//! Ethereum on a real anvil: native ETH (direct and from contracts), ERC-20 tokens of
//! 6 and 18 decimals, failures that never count, reorganisations, restarts and expiry.

mod common;

use alloy::primitives::U256;
use common::anvil::{Anvil, DAI, DEPLOYER, USDC, USDT, wei};
use common::{Admin, Daemon, types};
use serde_json::{Value, json};

/// Creates an invoice on anvil.
async fn invoice(admin: &mut Admin, asset: &str, amount: &str) -> (String, String) {
    let inv = admin
        .invoice(json!({"asset": asset, "amount": amount}))
        .await;
    (
        inv["id"].as_str().unwrap().to_string(),
        inv["address"].as_str().unwrap().to_string(),
    )
}

/// The invoice's payments as (txid, index, amount, state).
fn payments(inv: &Value) -> Vec<(String, u64, String, String)> {
    inv["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["txid"].as_str().unwrap().to_string(),
                p["index"].as_u64().unwrap(),
                p["amount"].as_str().unwrap().to_string(),
                p["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn units(n: u64, decimals: u32) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(decimals))
}

#[tokio::test]
async fn eth_payment_waits_for_confirmations_then_completes() {
    let anvil = Anvil::start().await;
    let daemon = Daemon::start_anvil(&anvil, "").await;
    let mut admin = daemon.admin().await;
    // 2 ETH needs 3 confirmations on anvil.toml.
    let (id, address) = invoice(&mut admin, "ETH", "2").await;
    assert_eq!(address, "0x9858EfFD232B4033E47d90003D41EC34EcaEda94");
    // Nodes and wallets write addresses in lower case: the same address.
    let tx = anvil.pay_eth(&address.to_lowercase(), wei("2")).await;
    let waiting = admin.wait_status(&id, "WAITING_FOR_CONFIRMATIONS").await;
    assert_eq!(waiting["amount_paid"], json!("2"));
    assert_eq!(
        payments(&waiting),
        [(tx, 0, "2".into(), "CONFIRMED".into())]
    );
    assert_eq!(waiting["payments"][0]["confirmations"], json!(1));
    anvil.mine(2).await;
    let done = admin.wait_status(&id, "COMPLETED").await;
    assert_eq!(done["amount_confirmed"], json!("2"));
    assert_eq!(
        types(&admin.events_of(&id).await),
        [
            "invoice.created",
            "payment.detected",
            "invoice.status_changed",
            "payment.confirmed",
            "invoice.status_changed"
        ]
    );
}

#[tokio::test]
async fn eth_sent_by_a_contract_is_found_by_its_place_in_the_call_tree() {
    let anvil = Anvil::start().await;
    let daemon = Daemon::start_anvil(&anvil, "").await;
    let mut admin = daemon.admin().await;
    let (one, one_addr) = invoice(&mut admin, "ETH", "0.5").await;
    let tx = anvil.pay_through_contract(&one_addr, wei("0.5")).await;
    let done = admin.wait_status(&one, "COMPLETED").await;
    // 0 is the call into the contract, 1 its transfer to the invoice.
    assert_eq!(payments(&done), [(tx, 1, "0.5".into(), "CONFIRMED".into())]);

    // One transaction paying two invoices from inside a contract: positions 1 and 2.
    let (a, a_addr) = invoice(&mut admin, "ETH", "0.25").await;
    let (b, b_addr) = invoice(&mut admin, "ETH", "0.25").await;
    let tx = anvil
        .split_through_contract(&a_addr, &b_addr, wei("0.5"))
        .await;
    let a_done = admin.wait_status(&a, "COMPLETED").await;
    let b_done = admin.wait_status(&b, "COMPLETED").await;
    assert_eq!(
        payments(&a_done),
        [(tx.clone(), 1, "0.25".into(), "CONFIRMED".into())]
    );
    assert_eq!(
        payments(&b_done),
        [(tx, 2, "0.25".into(), "CONFIRMED".into())]
    );
}

#[tokio::test]
async fn tokens_of_6_and_18_decimals_are_paid_by_transfer_logs() {
    let anvil = Anvil::start().await;
    let daemon = Daemon::start_anvil(&anvil, "").await;
    let mut admin = daemon.admin().await;
    let (usdt, usdt_addr) = invoice(&mut admin, "USDT", "12.5").await;
    let (dai, dai_addr) = invoice(&mut admin, "DAI", "0.000000000000000001").await;
    // More decimals than the token has is refused, never rounded.
    let e = admin
        .call(
            "invoice.create",
            json!({"chain": "anvil", "asset": "USDT", "amount": "1.0000001"}),
        )
        .await
        .unwrap_err();
    assert!(e["message"].as_str().unwrap().contains("amount"), "{e}");

    // ETH to a token invoice's address is not a payment of the token: it is listed,
    // not accepted, and never counted.
    let eth = anvil.pay_eth(&usdt_addr, wei("1")).await;
    let tx = anvil
        .pay_token(USDT, &usdt_addr, U256::from(12_500_000u64))
        .await;
    let done = admin.wait_status(&usdt, "COMPLETED").await;
    let log_index = anvil.receipt(&tx).await["logs"][0]["logIndex"].clone();
    let log_index =
        u64::from_str_radix(log_index.as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(
        payments(&done),
        [
            (eth, 0, "1".into(), "CONFIRMED".into()),
            (tx, log_index, "12.5".into(), "CONFIRMED".into())
        ]
    );
    let accepted: Vec<&Value> = done["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["accepted"])
        .collect();
    assert_eq!(accepted, [&json!(false), &json!(true)]);
    assert_eq!(done["amount_paid"], json!("12.5"));
    assert_eq!(done["asset"], json!("USDT"));

    anvil.pay_token(DAI, &dai_addr, U256::from(3u8)).await;
    let done = admin.wait_status(&dai, "COMPLETED").await;
    assert_eq!(done["amount_paid"], json!("0.000000000000000003"));
    assert_eq!(done["overpaid_amount"], json!("0.000000000000000002"));
}

#[tokio::test]
async fn failed_transactions_and_reverted_frames_never_count() {
    let anvil = Anvil::start().await;
    let daemon = Daemon::start_anvil(&anvil, "").await;
    let mut admin = daemon.admin().await;
    let (eth, eth_addr) = invoice(&mut admin, "ETH", "1").await;
    let (usdt, usdt_addr) = invoice(&mut admin, "USDT", "1").await;
    // A transaction that paid the address from inside, then reverted (status 0).
    anvil.reverted_payment(&eth_addr, wei("1")).await;
    // A successful transaction whose paying frame reverted.
    anvil.pay_in_reverted_frame(&eth_addr, wei("1")).await;
    // A token transfer that fails (the sender holds none).
    anvil
        .failing_token_transfer(USDT, DEPLOYER, &usdt_addr)
        .await;
    let height = anvil.height().await;
    admin.wait_scanned(height).await;
    for id in [&eth, &usdt] {
        let inv = admin.ok("invoice.get", json!({ "id": id })).await;
        assert_eq!(
            (inv["status"].as_str(), payments(&inv).len()),
            (Some("PENDING"), 0),
            "{inv}"
        );
    }
    // What does pay still counts.
    anvil.pay_eth(&eth_addr, wei("1")).await;
    admin.wait_status(&eth, "COMPLETED").await;
}

#[tokio::test]
async fn a_failed_transfer_to_the_address_never_counts_by_its_receipt() {
    // Without traces only the receipt tells a failed transaction from a payment.
    let anvil = Anvil::start().await;
    let daemon = Daemon::start_anvil(&anvil, "trace_internal_transfers = false").await;
    let mut admin = daemon.admin().await;
    let (id, address) = invoice(&mut admin, "ETH", "1").await;
    // Code at the address that reverts (PUSH1 0, PUSH1 0, REVERT): a plain transfer to
    // it fails, with `to` the invoice address and a value.
    anvil
        .rpc("anvil_setCode", json!([address, "0x60006000fd"]))
        .await;
    let tx = anvil
        .send(json!({
            "from": common::anvil::PAYER, "to": address,
            "value": format!("0x{:x}", wei("1")), "gas": "0x20000",
        }))
        .await;
    assert_eq!(anvil.receipt(&tx).await["status"], json!("0x0"));
    anvil.rpc("anvil_setCode", json!([address, "0x"])).await;
    admin.wait_scanned(anvil.height().await).await;
    let inv = admin.ok("invoice.get", json!({ "id": id })).await;
    assert_eq!(
        (inv["status"].as_str(), payments(&inv).len()),
        (Some("PENDING"), 0),
        "{inv}"
    );
    anvil.pay_eth(&address, wei("1")).await;
    admin.wait_status(&id, "COMPLETED").await;
}

#[tokio::test]
async fn installments_in_one_block_and_across_blocks_add_up() {
    let anvil = Anvil::start().await;
    let daemon = Daemon::start_anvil(&anvil, "").await;
    let mut admin = daemon.admin().await;
    let (id, address) = invoice(&mut admin, "USDT", "30").await;
    anvil.pay_token(USDT, &address, units(10, 6)).await;
    admin.wait_status(&id, "PARTIAL").await;
    anvil.mine(2).await;
    // Two transfers in one block: a native one too, which does not count for USDT.
    anvil.rpc("evm_setAutomine", json!([false])).await;
    let first = anvil
        .send(json!({
            "from": common::anvil::PAYER, "to": USDT,
            "data": transfer_data(&address, units(10, 6)),
        }))
        .await;
    let second = anvil
        .send(json!({
            "from": common::anvil::PAYER, "to": USDT,
            "data": transfer_data(&address, units(10, 6)),
        }))
        .await;
    anvil.rpc("evm_mine", json!([])).await;
    anvil.rpc("evm_setAutomine", json!([true])).await;
    let r1 = anvil.receipt(&first).await;
    let r2 = anvil.receipt(&second).await;
    assert_eq!(r1["blockNumber"], r2["blockNumber"], "one block");
    let done = admin.wait_status(&id, "COMPLETED").await;
    assert_eq!(payments(&done).len(), 3);
    assert_eq!(done["amount_paid"], json!("30"));
    assert_eq!(
        types(&admin.events_of(&id).await)
            .iter()
            .filter(|t| *t == "payment.detected")
            .count(),
        3
    );
}

fn transfer_data(to: &str, units: U256) -> String {
    use alloy::sol_types::SolCall;
    let call = common::anvil::transferCall {
        to: to.parse().unwrap(),
        value: units,
    };
    format!("0x{}", alloy::primitives::hex::encode(call.abi_encode()))
}

#[tokio::test]
async fn expiry_then_a_late_payment() {
    let anvil = Anvil::start().await;
    let daemon = Daemon::start_anvil(&anvil, "").await;
    let mut admin = daemon.admin().await;
    let inv = admin
        .invoice(json!({"asset": "ETH", "amount": "0.1", "expires_in": 1}))
        .await;
    let id = inv["id"].as_str().unwrap();
    let expired = admin.wait_status(id, "EXPIRED").await;
    assert_eq!(expired["reason"], json!("unpaid"));
    // Past the window: the block's time is after expires_at.
    anvil
        .rpc(
            "evm_setNextBlockTimestamp",
            json!([expired["expires_at"].as_i64().unwrap() + 5]),
        )
        .await;
    anvil
        .pay_eth(inv["address"].as_str().unwrap(), wei("0.1"))
        .await;
    let late = admin.wait_status(id, "EXPIRED_LATE_PAYMENT").await;
    assert_eq!(late["amount_paid"], json!("0.1"));
}

#[tokio::test]
async fn a_reorg_reverts_a_completed_invoice() {
    let anvil = Anvil::start().await;
    let daemon = Daemon::start_anvil(&anvil, "").await;
    let mut admin = daemon.admin().await;
    let (id, address) = invoice(&mut admin, "DAI", "5").await;
    let snapshot = anvil.rpc("evm_snapshot", json!([])).await;
    anvil.pay_token(DAI, &address, units(5, 18)).await;
    anvil.mine(2).await;
    admin.wait_status(&id, "COMPLETED").await;
    // The chain without the payment, longer than the one with it.
    anvil.rpc("evm_revert", json!([snapshot])).await;
    anvil.mine(5).await;
    let back = admin
        .wait_invoice(&id, "the payment dropped", |i| {
            i["payments"][0]["state"] == json!("DROPPED")
        })
        .await;
    assert_eq!(back["status"], json!("PENDING"));
    // Back to waiting (the block left), then pending (the payment did not come back).
    let events = types(&admin.events_of(&id).await);
    assert_eq!(
        events[events.len() - 4..],
        [
            "invoice.status_changed",
            "invoice.reverted",
            "payment.dropped",
            "invoice.status_changed"
        ],
        "{events:?}"
    );
    // Paid again on the new chain: completed again.
    anvil.pay_token(DAI, &address, units(5, 18)).await;
    anvil.mine(2).await;
    admin.wait_status(&id, "COMPLETED").await;
}

#[tokio::test]
async fn a_restart_catches_up_on_blocks_mined_while_down() {
    let anvil = Anvil::start().await;
    let mut daemon = Daemon::start_anvil(&anvil, "").await;
    let mut admin = daemon.admin().await;
    let (eth, eth_addr) = invoice(&mut admin, "ETH", "3").await;
    let (usdt, usdt_addr) = invoice(&mut admin, "USDT", "7").await;
    anvil.pay_eth(&eth_addr, wei("1")).await;
    admin.wait_status(&eth, "PARTIAL").await;
    daemon.kill();
    // More than one step of blocks, payments spread over them.
    anvil.mine(120).await;
    anvil.pay_token(USDT, &usdt_addr, units(7, 6)).await;
    anvil.mine(130).await;
    anvil.pay_through_contract(&eth_addr, wei("2")).await;
    anvil.mine(3).await;
    daemon.restart().await;
    let mut admin = daemon.admin().await;
    let done = admin.wait_status(&eth, "COMPLETED").await;
    assert_eq!(payments(&done).len(), 2);
    assert_eq!(done["amount_paid"], json!("3"));
    let done = admin.wait_status(&usdt, "COMPLETED").await;
    assert_eq!(payments(&done).len(), 1);
    // Once more, with nothing new: nothing counted twice.
    daemon.kill();
    daemon.restart().await;
    let mut admin = daemon.admin().await;
    let again = admin.ok("invoice.get", json!({ "id": eth })).await;
    assert_eq!(payments(&again).len(), 2);
    let detected = types(&admin.events_of(&eth).await)
        .iter()
        .filter(|t| *t == "payment.detected")
        .count();
    assert_eq!(detected, 2);
}

#[tokio::test]
async fn a_node_of_another_chain_id_is_refused_and_other_chains_run() {
    let anvil = Anvil::start_with(&["--chain-id", "999"]).await;
    let node = common::Node::start().await;
    node.mine_to(1, &common::other_address()).await;
    let regtest = format!(
        "\n[chains.regtest]\nrpc_url = \"{}\"\nrpc_user = \"test\"\nrpc_password = \"test\"\n\
         descriptor = \"{}\"\npoll_interval_ms = 100",
        node.url(),
        common::descriptor()
    );
    let mut daemon = Daemon::configure_anvil(&anvil, &regtest);
    daemon.spawn_unsynced().await;
    let mut admin = daemon.admin().await;
    let c = admin
        .wait_chain("the chain stopped", |c| {
            c["running"] == json!(false) && c["last_error"].is_string()
        })
        .await;
    let msg = c["last_error"].as_str().unwrap();
    assert!(msg.contains("999") && msg.contains("31337"), "{msg}");
    assert!(daemon.log().contains("999"), "logged");
    // Bitcoin keeps running and taking invoices.
    admin.chain = "regtest".into();
    let height = node.height().await;
    admin.wait_scanned(height).await;
    admin.invoice(json!({"amount": "0.01"})).await;
}

#[tokio::test]
async fn rescan_finds_what_was_missed_and_reports_an_unexplained_balance() {
    let anvil = Anvil::start().await;
    // A node treated as one that cannot trace: ETH from contracts is not seen.
    let mut daemon = Daemon::start_anvil(&anvil, "trace_internal_transfers = false").await;
    let mut admin = daemon.admin().await;
    let (id, address) = invoice(&mut admin, "ETH", "1").await;
    anvil.pay_eth(&address, wei("0.25")).await;
    anvil.pay_through_contract(&address, wei("0.75")).await;
    admin.wait_status(&id, "PARTIAL").await;
    admin.wait_scanned(anvil.height().await).await;
    let r = admin.ok("invoice.rescan", json!({ "id": id })).await;
    assert_eq!(
        r,
        json!({"payments_found": 0, "unexplained_balance": "0.75"})
    );
    assert_eq!(
        admin.ok("invoice.get", json!({ "id": id })).await["status"],
        json!("PARTIAL")
    );

    // With traces, the same rescan finds the internal transfer.
    daemon.kill();
    std::fs::write(
        &daemon.config,
        std::fs::read_to_string(&daemon.config)
            .unwrap()
            .replace("trace_internal_transfers = false", ""),
    )
    .unwrap();
    daemon.restart().await;
    let mut admin = daemon.admin().await;
    let r = admin.ok("invoice.rescan", json!({ "id": id })).await;
    assert_eq!(r, json!({"payments_found": 1}));
    admin.wait_status(&id, "COMPLETED").await;
}

#[tokio::test]
async fn at_the_nodes_finalized_block_a_payment_is_final_and_a_deeper_reorg_is_an_alarm() {
    // anvil finalizes the block two below its tip with one slot per epoch.
    let anvil = Anvil::start_with(&["--slots-in-an-epoch", "1"]).await;
    let daemon = Daemon::start_anvil(&anvil, "final_confirmations = \"finalized\"").await;
    let mut admin = daemon.admin().await;
    let (id, address) = invoice(&mut admin, "ETH", "0.5").await;
    let snapshot = anvil.rpc("evm_snapshot", json!([])).await;
    let tx = anvil.pay_eth(&address, wei("0.5")).await;
    let paid_at = u64::from_str_radix(
        anvil.receipt(&tx).await["blockNumber"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
        16,
    )
    .unwrap();
    admin.wait_status(&id, "COMPLETED").await;
    anvil.mine(3).await;
    admin
        .wait_chain("the payment's block finalized", |c| {
            c["finalized_height"].as_u64() >= Some(paid_at) && c["lag_blocks"] == json!(0)
        })
        .await;
    // A reorganisation below the finalized block: the invoice stays, the chain alarms.
    anvil.rpc("evm_revert", json!([snapshot])).await;
    anvil.mine(8).await;
    let c = admin
        .wait_chain("the alarm", |c| c["alarm"].is_string())
        .await;
    assert!(c["alarm"].as_str().unwrap().contains("ALARM"), "{c}");
    let inv = admin
        .wait_invoice(&id, "the payment dropped", |i| {
            i["payments"][0]["state"] == json!("DROPPED")
        })
        .await;
    assert_eq!(inv["status"], json!("COMPLETED"));
    let events = types(&admin.events_of(&id).await);
    assert!(
        !events.contains(&"invoice.reverted".to_string()),
        "{events:?}"
    );
}

#[tokio::test]
async fn open_mode_first_is_the_earlier_transaction_in_the_block_not_the_smaller_hash() {
    use common::anvil::PAYER;
    let anvil = Anvil::start().await;
    let daemon = Daemon::start_anvil(&anvil, "").await;
    let mut admin = daemon.admin().await;
    let inv = admin.invoice(json!({"asset": "ETH", "mode": "open"})).await;
    let (id, address) = (
        inv["id"].as_str().unwrap(),
        inv["address"].as_str().unwrap(),
    );

    // Two payments from one account land in one block in nonce order; the second is
    // sent again with another amount until its hash sorts before the first's.
    anvil.rpc("evm_setAutomine", json!([false])).await;
    let pay = |value: u128| json!({"from": PAYER, "to": address, "value": format!("0x{value:x}")});
    let first = anvil.send(pay(wei("1.5"))).await;
    let mut later = None;
    for k in 0..64u128 {
        let tx = anvil.send(pay(wei("0.25") + k)).await;
        if tx < first {
            later = Some(tx);
            break;
        }
        anvil.rpc("anvil_dropTransaction", json!([tx])).await;
    }
    let later = later.expect("one of 64 hashes sorts before the first");
    anvil.rpc("evm_mine", json!([])).await;
    anvil.rpc("evm_setAutomine", json!([true])).await;
    let (a, b) = (anvil.receipt(&first).await, anvil.receipt(&later).await);
    assert_eq!(a["blockNumber"], b["blockNumber"]);
    let position =
        |r: &Value| u64::from_str_radix(&r["transactionIndex"].as_str().unwrap()[2..], 16);
    assert!(position(&a).unwrap() < position(&b).unwrap());

    anvil.mine(5).await;
    let inv = admin.wait_status(id, "COMPLETED").await;
    assert_eq!(inv["amount_due"], "1.5", "{inv}");
    let extra = inv["overpaid_amount"].as_str().unwrap();
    assert!(extra.starts_with("0.25"), "{inv}");
}

/// With `ws_url`, each new head is pushed: a payment and the blocks after it are seen
/// at once though polling waits a minute.
#[tokio::test]
async fn with_polling_at_a_minute_new_heads_bring_payments_at_once() {
    let anvil = Anvil::start().await;
    let ws = format!("ws://127.0.0.1:{}", anvil.port);
    let extra = format!("poll_interval_ms = 60000\nws_url = \"{ws}\"");
    let daemon = Daemon::start_anvil(&anvil, &extra).await;
    common::wait_for("the subscription", || async {
        daemon
            .log()
            .contains("subscribed to newHeads")
            .then_some(())
    })
    .await;
    let mut admin = daemon.admin().await;
    // 2 ETH needs 3 confirmations on anvil.toml.
    let (id, address) = invoice(&mut admin, "ETH", "2").await;
    anvil.pay_eth(&address, wei("2")).await;
    let inv = admin.wait_status(&id, "WAITING_FOR_CONFIRMATIONS").await;
    assert_eq!(inv["amount_paid"], json!("2"));
    anvil.mine(1).await;
    admin
        .wait_invoice(&id, "a second confirmation", |i| {
            i["payments"][0]["confirmations"] == json!(2)
        })
        .await;
}

#[tokio::test]
async fn assets_the_invoice_does_not_take_are_recorded_but_never_counted() {
    let anvil = Anvil::start().await;
    let daemon = Daemon::start_anvil(&anvil, "").await;
    let mut admin = daemon.admin().await;
    let (id, address) = invoice(&mut admin, "USDT", "25").await;
    // USDC, DAI and ETH to a USDT invoice's address, each enough if it counted.
    let usdc = anvil.pay_token(USDC, &address, units(25, 6)).await;
    let dai = anvil.pay_token(DAI, &address, units(25, 18)).await;
    let eth = anvil.pay_eth(&address, 10u128.pow(18)).await;
    anvil.mine(12).await;
    let inv = admin
        .wait_invoice(&id, "the three transfers recorded", |i| {
            i["payments"].as_array().is_some_and(|p| p.len() == 3)
        })
        .await;
    admin.wait_scanned(anvil.height().await).await;
    let seen: Vec<(String, String, String, Value)> = inv["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["txid"].as_str().unwrap().to_string(),
                p["asset"].as_str().unwrap().to_string(),
                p["amount"].as_str().unwrap().to_string(),
                p["accepted"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (usdc.clone(), "USDC".into(), "25".into(), json!(false)),
            (dai.clone(), "DAI".into(), "25".into(), json!(false)),
            (eth.clone(), "ETH".into(), "1".into(), json!(false)),
        ]
    );
    assert_eq!(inv["status"], "PENDING");
    assert_eq!(inv["amount_paid"], "0");
    assert_eq!(inv["paid_ratio"], "0");
    assert_eq!(inv["options"][0]["remaining"], "25");
    // Each reported to the backend, so that it can refund it; no status changed.
    let events = admin.events_of(&id).await;
    let detected: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "payment.detected")
        .map(|e| &e["data"]["payment"])
        .collect();
    assert_eq!(detected.len(), 3, "{events:#?}");
    assert!(detected.iter().all(|p| p["accepted"] == json!(false)));
    // And confirmed by the chain's tiers for their own amounts: safe to refund.
    let confirmed = events
        .iter()
        .filter(|e| e["type"] == "payment.confirmed")
        .count();
    assert_eq!(confirmed, 3, "{events:#?}");
    assert!(!types(&events).contains(&"invoice.status_changed".to_string()));
    // The invoice's own asset still completes it.
    anvil.pay_token(USDT, &address, units(25, 6)).await;
    anvil.mine(12).await;
    let done = admin.wait_status(&id, "COMPLETED").await;
    assert_eq!(done["amount_paid"], "25");
}
