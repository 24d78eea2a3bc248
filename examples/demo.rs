//! `scripts/demo`: a regtest node and an anvil node, settled watching both, and three
//! invoices: BTC paid in two installments, ETH sent by a contract, USDT paid in two
//! transfers; every event printed as it happens.

#[path = "../tests/common/mod.rs"]
mod common;

use alloy::primitives::U256;
use common::anvil::{Anvil, USDT, wei};
use common::{Daemon, Node, Payer};
use serde_json::{Value, json};

#[tokio::main]
async fn main() {
    println!("starting bitcoind -regtest and mining coins for a payer...");
    let node = Node::start().await;
    let mut payer = Payer::fund(&node).await;
    println!("starting anvil and deploying a test USDT (6 decimals)...");
    let anvil = Anvil::start().await;
    let daemon = Daemon::start_regtest_and_anvil(&node, &anvil).await;
    println!(
        "settled is running; admin socket {}",
        daemon.socket.display()
    );
    println!(
        "(its log: {})\n",
        daemon.dir.path().join("settled.log").display()
    );

    let mut sub = daemon.admin().await;
    sub.ok("events.subscribe", json!({})).await;
    // Prints events until the four invoices are completed.
    let printer = tokio::spawn(async move {
        let mut completed = 0;
        while let Some(msg) = sub.read().await {
            let event = &msg["params"];
            print_event(event);
            if event["data"]["to"] == "COMPLETED" {
                completed += 1;
                if completed == 4 {
                    return;
                }
            }
        }
    });

    let mut admin = daemon.admin().await;
    let inv = admin
        .invoice(json!({"amount": "0.5", "order_id": "demo-1", "title": "Demo order"}))
        .await;
    let id = inv["id"].as_str().unwrap().to_string();
    let address = inv["address"].as_str().unwrap().to_string();
    println!("invoice {id}: pay 0.5 BTC to {address}\n");
    let me = payer.address.to_string();

    println!("> the customer pays 0.2 BTC, and a block is mined");
    payer.pay(&node, &address, "0.2", false).await;
    node.mine_to(1, &me).await;
    admin.wait_status(&id, "PARTIAL").await;

    println!("> the customer pays the remaining 0.3 BTC");
    payer.pay(&node, &address, "0.3", false).await;
    admin.wait_status(&id, "WAITING_FOR_CONFIRMATIONS").await;

    println!("> a block is mined");
    node.mine_to(1, &me).await;
    let btc = admin.wait_status(&id, "COMPLETED").await;

    admin.chain = "anvil".into();
    let inv = admin
        .invoice(json!({"asset": "ETH", "amount": "0.3", "order_id": "demo-2"}))
        .await;
    let eth_id = inv["id"].as_str().unwrap().to_string();
    let address = inv["address"].as_str().unwrap().to_string();
    println!("\ninvoice {eth_id}: pay 0.3 ETH to {address}\n");
    println!("> a smart-contract wallet pays 0.3 ETH from inside a contract call");
    anvil.pay_through_contract(&address, wei("0.3")).await;
    let eth = admin.wait_status(&eth_id, "COMPLETED").await;

    let inv = admin
        .invoice(json!({"asset": "USDT", "amount": "25", "order_id": "demo-3"}))
        .await;
    let usdt_id = inv["id"].as_str().unwrap().to_string();
    let address = inv["address"].as_str().unwrap().to_string();
    println!("\ninvoice {usdt_id}: pay 25 USDT to {address}\n");
    println!("> the customer transfers 10 USDT");
    anvil
        .pay_token(USDT, &address, U256::from(10_000_000u64))
        .await;
    admin.wait_status(&usdt_id, "PARTIAL").await;
    println!("> the customer transfers the remaining 15 USDT");
    anvil
        .pay_token(USDT, &address, U256::from(15_000_000u64))
        .await;
    let usdt = admin.wait_status(&usdt_id, "COMPLETED").await;

    // One order, its currency chosen later, paid in two assets on two chains.
    let order = admin
        .ok(
            "invoice.create",
            json!({"price": {"amount": "50", "currency": "USD"}, "order_id": "demo-4"}),
        )
        .await;
    let order_id = order["id"].as_str().unwrap().to_string();
    println!("\ninvoice {order_id}: 50 USD, the currency not chosen yet\n");
    let add = |chain: &str, asset: &str, amount: &str| {
        json!({"id": order_id, "chain": chain, "asset": asset, "amount": amount,
               "expires_in": 2700})
    };
    println!("> the customer picks USDT: 50 USDT, a 45-minute window from now");
    let picked = admin
        .ok("invoice.add_option", add("anvil", "USDT", "50"))
        .await;
    let usdt_to = picked["address"].as_str().unwrap().to_string();
    println!("> and transfers 20 USDT to {usdt_to}");
    anvil
        .pay_token(USDT, &usdt_to, U256::from(20_000_000u64))
        .await;
    admin.wait_status(&order_id, "PARTIAL").await;
    println!("> then chooses to finish in BTC: 0.001 BTC would pay the whole order");
    let both = admin
        .ok("invoice.add_option", add("regtest", "BTC", "0.001"))
        .await;
    let option = &both["options"][1];
    let (btc_to, remaining) = (
        option["address"].as_str().unwrap().to_string(),
        option["remaining"].as_str().unwrap().to_string(),
    );
    println!(
        "> paid {} of the order; {remaining} BTC remains: paid to {btc_to}, and a block is mined",
        both["paid_ratio"].as_str().unwrap()
    );
    payer.pay(&node, &btc_to, &remaining, false).await;
    node.mine_to(1, &me).await;
    let order = admin.wait_status(&order_id, "COMPLETED").await;
    printer.await.unwrap();

    println!();
    for inv in [btc, eth, usdt] {
        println!(
            "done: {} paid {} {} of {} in {} payment(s)",
            inv["status"].as_str().unwrap(),
            inv["amount_paid"].as_str().unwrap(),
            inv["asset"].as_str().unwrap(),
            inv["amount_due"].as_str().unwrap(),
            inv["payments"].as_array().unwrap().len()
        );
    }
    println!(
        "done: {} paid x{} of 50 USD in {} payments on two chains",
        order["status"].as_str().unwrap(),
        order["paid_ratio"].as_str().unwrap(),
        order["payments"].as_array().unwrap().len()
    );
}

fn print_event(e: &Value) {
    let d = &e["data"];
    let what = match e["type"].as_str().unwrap_or("") {
        "invoice.status_changed" => format!(
            "{} -> {}",
            d["from"].as_str().unwrap_or("-"),
            d["to"].as_str().unwrap_or("-")
        ),
        t if t.starts_with("payment.") => format!(
            "{} {}, {} confirmation(s)",
            d["payment"]["amount"].as_str().unwrap_or("?"),
            d["payment"]["asset"].as_str().unwrap_or(""),
            d["payment"]["confirmations"]
        ),
        "invoice.option_added" => format!(
            "{} {} on {}",
            d["option"]["amount_due"].as_str().unwrap_or("-"),
            d["option"]["asset"].as_str().unwrap_or(""),
            d["option"]["chain"].as_str().unwrap_or("")
        ),
        _ => match &d["invoice"]["price"] {
            Value::Null => format!(
                "{} {} due",
                d["invoice"]["amount_due"].as_str().unwrap_or("-"),
                d["invoice"]["asset"].as_str().unwrap_or("")
            ),
            p => format!(
                "{} {} (the currency to be chosen)",
                p["amount"].as_str().unwrap_or("-"),
                p["currency"].as_str().unwrap_or("")
            ),
        },
    };
    println!(
        "  event #{:<3} {:<24} {}",
        e["seq"],
        e["type"].as_str().unwrap_or(""),
        what
    );
}
