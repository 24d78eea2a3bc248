//! Push from the node (`zmq_sequence`): payments and blocks seen at once with polling
//! slowed to a minute, lost messages made good by a whole read of the mempool, and
//! polling that carries on when the push is gone.

mod common;

use common::*;
use serde_json::json;

/// A node publishing `-zmqpubsequence`, and its endpoint.
async fn zmq_node() -> (Node, String) {
    let url = format!("tcp://127.0.0.1:{}", free_port());
    let node = Node::start_with(&[&format!("-zmqpubsequence={url}")]).await;
    (node, url)
}

/// Waits for `line` in the daemon's log.
async fn wait_log(daemon: &Daemon, line: &str) {
    wait_for(&format!("{line:?} in the log"), || async {
        daemon.log().contains(line).then_some(())
    })
    .await;
}

#[tokio::test]
async fn with_polling_at_a_minute_zmq_brings_payments_and_blocks_at_once() {
    let (node, url) = zmq_node().await;
    let mut payer = Payer::fund(&node).await;
    let drop = tempfile::tempdir().unwrap();
    let drop_file = drop.path().join("drop");
    let mut daemon = Daemon::configure(
        &node,
        "rpc_user = \"test\"\nrpc_password = \"test\"",
        &format!("poll_interval_ms = 60000\nzmq_sequence = \"{url}\""),
    );
    daemon.env.push((
        "SETTLED_TEST_ZMQ_DROP".into(),
        drop_file.display().to_string(),
    ));
    daemon.restart().await;
    wait_log(&daemon, "zmq_sequence tcp://127.0.0.1").await;
    let mut admin = daemon.admin().await;
    // The first poll is done; the next is a minute away.
    admin.wait_scanned(node.height().await).await;

    let inv = admin.invoice(json!({"amount": "0.1"})).await;
    let id = inv["id"].as_str().unwrap();
    payer
        .pay(&node, inv["address"].as_str().unwrap(), "0.1", false)
        .await;
    admin.wait_status(id, "WAITING_FOR_CONFIRMATIONS").await;
    node.mine_to(1, &other_address()).await;
    admin.wait_status(id, "COMPLETED").await;

    // A message lost (as ZMQ drops them when busy): the next one shows the gap, and
    // the whole mempool is read again, which finds the payment it announced.
    let lost = admin.invoice(json!({"amount": "0.1"})).await;
    let next = admin.invoice(json!({"amount": "0.1"})).await;
    std::fs::write(&drop_file, "").unwrap();
    payer
        .pay(&node, lost["address"].as_str().unwrap(), "0.1", false)
        .await;
    wait_log(&daemon, "test: a zmq message dropped").await;
    std::fs::remove_file(&drop_file).unwrap();
    payer
        .pay(&node, next["address"].as_str().unwrap(), "0.1", false)
        .await;
    for inv in [&next, &lost] {
        admin
            .wait_status(inv["id"].as_str().unwrap(), "WAITING_FOR_CONFIRMATIONS")
            .await;
    }
    assert!(
        daemon.log().contains("messages were lost"),
        "{}",
        daemon.log()
    );
}

#[tokio::test]
async fn when_zmq_goes_away_polling_still_finds_the_next_payment() {
    let (mut node, url) = zmq_node().await;
    let mut payer = Payer::fund(&node).await;
    let mut daemon = Daemon::configure(
        &node,
        "rpc_user = \"test\"\nrpc_password = \"test\"",
        &format!("poll_interval_ms = 500\nzmq_sequence = \"{url}\""),
    );
    daemon.restart().await;
    wait_log(&daemon, "zmq_sequence tcp://127.0.0.1").await;
    let mut admin = daemon.admin().await;
    let first = admin.invoice(json!({"amount": "0.1"})).await;
    payer
        .pay(&node, first["address"].as_str().unwrap(), "0.1", false)
        .await;
    admin
        .wait_status(first["id"].as_str().unwrap(), "WAITING_FOR_CONFIRMATIONS")
        .await;

    // The node comes back without its ZMQ publisher.
    node.stop().await;
    node.set_args(&[]);
    node.restart().await;
    wait_log(&daemon, "disconnected; polling carries on").await;
    // Polls go on after the disconnection has been taken in; the next payment is
    // found by them, not by a push that no longer comes.
    let from = unix_now();
    admin
        .wait_chain("polls after the disconnection", |c| {
            c["last_poll_at"].as_i64() > Some(from + 1)
        })
        .await;
    let second = admin.invoice(json!({"amount": "0.1"})).await;
    payer
        .pay(&node, second["address"].as_str().unwrap(), "0.1", false)
        .await;
    admin
        .wait_status(second["id"].as_str().unwrap(), "WAITING_FOR_CONFIRMATIONS")
        .await;
}
