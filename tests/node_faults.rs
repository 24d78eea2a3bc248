//! The node misbehaving, through a proxy between settled and Bitcoin Core
//! (`common/proxy.rs`): a connection reset in the middle of an answer, 500 and 503,
//! an answer cut short, one that is not JSON, one that never comes (past
//! `rpc_timeout`), and a switch to a node that lost its last blocks. For each,
//! settled keeps running, says what is wrong in `chain.status`, retries, skips no
//! block (a payment in each block mined meanwhile), and the checker passes after.

mod common;

use common::checker::Checker;
use common::proxy::{Fault, Proxy};
use common::{Admin, Daemon, Node, Payer, descriptor};
use serde_json::json;

/// settled on `proxy`, polling every 100 ms, giving up on a node call after 2 s.
async fn daemon_on(proxy: &Proxy) -> Daemon {
    let mut d = Daemon::configure_chain(
        "regtest",
        &format!(
            "rpc_url = \"{}\"\nrpc_user = \"test\"\nrpc_password = \"test\"\ndescriptor = \"{}\"\n\
             poll_interval_ms = 100\nrpc_timeout = 2\n",
            proxy.url(),
            descriptor()
        ),
    );
    d.restart().await;
    d
}

/// Pays a new invoice and mines the block that holds it; returns the invoice id.
async fn paid_block(admin: &mut Admin, node: &Node, payer: &mut Payer) -> String {
    let inv = admin.invoice(json!({"amount": "0.01"})).await;
    payer
        .pay(node, inv["address"].as_str().unwrap(), "0.01", false)
        .await;
    node.mine_to(1, &payer.address.to_string()).await;
    inv["id"].as_str().unwrap().to_string()
}

async fn survives(fault: Fault, says: &[&str]) {
    let node = Node::start().await;
    let mut payer = Payer::fund(&node).await;
    let proxy = Proxy::start(node.rpc_port).await;
    let mut daemon = daemon_on(&proxy).await;
    let mut admin = daemon.admin().await;
    let mut ids = vec![paid_block(&mut admin, &node, &mut payer).await];
    admin.wait_status(&ids[0], "COMPLETED").await;

    proxy.set(fault);
    // Invoices are created on the admin socket, which the node's trouble leaves alone.
    ids.push(paid_block(&mut admin, &node, &mut payer).await);
    ids.push(paid_block(&mut admin, &node, &mut payer).await);
    let status = admin
        .wait_chain(&format!("chain.status to say what {fault:?} is"), |c| {
            c["last_error"]
                .as_str()
                .is_some_and(|e| says.iter().any(|s| e.contains(s)))
        })
        .await;
    eprintln!("{fault:?}: chain.status says {}", status["last_error"]);
    assert!(proxy.broken() > 0);
    assert!(daemon.running(), "settled stopped on {fault:?}");
    assert!(
        status["scanned_height"].as_u64() < Some(node.height().await),
        "blocks came through a broken node: {status}"
    );

    proxy.set(Fault::Pass);
    admin.wait_scanned(node.height().await).await;
    let c = admin
        .wait_chain("the error cleared", |c| c["last_error"].is_null())
        .await;
    assert_eq!(c["running"], json!(true));
    for id in &ids {
        admin.wait_status(id, "COMPLETED").await;
    }
    Checker::new().assert_holds(&node, &mut admin, None).await;
}

#[tokio::test]
async fn a_connection_reset_mid_answer() {
    survives(
        Fault::Reset,
        &["connection", "reset", "closed", "error sending", "decoding"],
    )
    .await;
}

#[tokio::test]
async fn a_500_answer() {
    survives(Fault::Status(500), &["500"]).await;
}

#[tokio::test]
async fn a_503_answer() {
    survives(Fault::Status(503), &["503"]).await;
}

#[tokio::test]
async fn an_answer_cut_short() {
    survives(
        Fault::Truncate,
        &["connection", "closed", "body", "decoding", "EOF", "error"],
    )
    .await;
}

#[tokio::test]
async fn an_answer_that_is_not_json() {
    survives(Fault::Garbage, &["JSON", "json"]).await;
}

#[tokio::test]
async fn an_answer_that_never_comes() {
    survives(Fault::Stall, &["timed out", "timeout", "no answer"]).await;
}

/// A node restarted from an old copy of its data: behind settled. settled waits for
/// it rather than taking its shorter chain for a reorganisation, and carries on
/// when it has the blocks again.
#[tokio::test]
async fn a_node_that_lost_its_last_blocks() {
    let node = Node::start().await;
    let mut payer = Payer::fund(&node).await;
    let proxy = Proxy::start(node.rpc_port).await;
    let daemon = daemon_on(&proxy).await;
    let mut admin = daemon.admin().await;

    // The other node holds the same chain up to here, and no further.
    let behind = Node::start().await;
    let copy = |from: u64, to: u64| {
        let (node, behind) = (&node, &behind);
        async move {
            for h in from..=to {
                let hash = node.rpc("getblockhash", json!([h])).await;
                let raw = node.rpc("getblock", json!([hash, 0])).await;
                let r = behind.rpc("submitblock", json!([raw])).await;
                assert!(r.is_null() || r == json!("duplicate"), "submitblock: {r}");
            }
        }
    };
    let lost_from = node.height().await + 1;
    copy(1, lost_from - 1).await;

    let ids = vec![
        paid_block(&mut admin, &node, &mut payer).await,
        paid_block(&mut admin, &node, &mut payer).await,
    ];
    for id in &ids {
        admin.wait_status(id, "COMPLETED").await;
    }
    let tip = node.height().await;
    admin.wait_scanned(tip).await;

    proxy.point_at(behind.rpc_port);
    let c = admin
        .wait_chain("chain.status to say the node is behind", |c| {
            c["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("behind"))
        })
        .await;
    // Nothing was taken back: the blocks are only missing from this node.
    assert_eq!(c["scanned_height"], json!(tip), "{c}");
    for id in &ids {
        let inv = admin.ok("invoice.get", json!({"id": id})).await;
        assert_eq!(inv["status"], "COMPLETED", "{inv}");
    }
    let events = common::checker::events(&mut admin).await;
    assert!(
        !events.iter().any(|e| e["type"] == "invoice.reverted"),
        "a reorganisation was reported: {:?}",
        common::types(&events)
    );

    // It gets the blocks back, and one more with a payment.
    copy(lost_from, tip).await;
    let more = paid_block(&mut admin, &node, &mut payer).await;
    copy(tip + 1, tip + 1).await;
    admin.wait_status(&more, "COMPLETED").await;
    admin
        .wait_chain("the error cleared", |c| c["last_error"].is_null())
        .await;
    Checker::new().assert_holds(&behind, &mut admin, None).await;
}
