//! `scripts/demo`: a regtest node, settled, one invoice paid in two installments, and
//! every event printed as it happens.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Daemon, Node, Payer};
use serde_json::{Value, json};

#[tokio::main]
async fn main() {
    println!("starting bitcoind -regtest and mining coins for a payer...");
    let node = Node::start().await;
    let mut payer = Payer::fund(&node).await;
    let daemon = Daemon::start(&node, "").await;
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
    // Prints events until the one that completes the invoice.
    let printer = tokio::spawn(async move {
        while let Some(msg) = sub.read().await {
            let event = &msg["params"];
            print_event(event);
            if event["data"]["to"] == "COMPLETED" {
                return;
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
    let inv = admin.wait_status(&id, "COMPLETED").await;
    printer.await.unwrap();
    println!(
        "\ndone: {} paid {} BTC of {} in {} payments",
        inv["status"].as_str().unwrap(),
        inv["amount_paid"].as_str().unwrap(),
        inv["amount_due"].as_str().unwrap(),
        inv["payments"].as_array().unwrap().len()
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
            "{} BTC, {} confirmation(s)",
            d["payment"]["amount"].as_str().unwrap_or("?"),
            d["payment"]["confirmations"]
        ),
        _ => format!(
            "{} BTC due",
            d["invoice"]["amount_due"].as_str().unwrap_or("-")
        ),
    };
    println!(
        "  event #{:<3} {:<24} {}",
        e["seq"],
        e["type"].as_str().unwrap_or(""),
        what
    );
}
