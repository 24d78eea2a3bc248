//! The node as an operator sees it: down and back, cookie auth, and rescans for
//! payments to addresses no longer watched.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn node_down_is_reported_and_holds_expiry_until_it_is_back() {
    let (mut node, mut payer, daemon) = setup("").await;
    let mut admin = daemon.admin().await;
    let inv = admin
        .invoice(json!({"amount": "0.1", "expires_in": 2}))
        .await;
    let id = inv["id"].as_str().unwrap();
    let expires_at = inv["expires_at"].as_i64().unwrap();

    node.stop().await;
    let c = admin
        .wait_chain("the node reported down", |c| {
            c["node_reachable"] == json!(false)
        })
        .await;
    assert!(
        c["last_error"].as_str().unwrap().contains("unreachable"),
        "{c}"
    );
    assert_eq!(c["running"], json!(true));
    // Past expires_at, but the watcher has not seen the node since: no expiry.
    wait_for("expires_at to pass", || async {
        (unix_now() > expires_at + 1).then_some(())
    })
    .await;
    let inv = admin.ok("invoice.get", json!({"id": id})).await;
    assert_eq!(inv["status"], "PENDING");

    node.restart().await;
    let c = admin
        .wait_chain("the node back", |c| {
            c["node_reachable"] == json!(true) && c["last_error"].is_null()
        })
        .await;
    assert_eq!(c["lag_blocks"], json!(0));
    let inv = admin.wait_status(id, "EXPIRED").await;
    assert_eq!(inv["reason"], "unpaid");

    // Payments are followed again.
    completed_invoice(&mut admin, &node, &mut payer, "0.1").await;
}

#[tokio::test]
async fn cookie_file_auth() {
    let node = Node::start().await;
    let mut payer = Payer::fund(&node).await;
    let auth = format!("rpc_cookie_file = \"{}\"", node.cookie_file().display());
    let daemon = Daemon::start_with_auth(&node, &auth, "").await;
    let mut admin = daemon.admin().await;
    completed_invoice(&mut admin, &node, &mut payer, "0.1").await;
}

#[tokio::test]
async fn refused_credentials_are_said_to_be_credentials_not_an_unreachable_node() {
    let node = Node::start().await;
    let auth = "rpc_user = \"test\"\nrpc_password = \"wrong\"";
    let mut daemon = Daemon::configure(&node, auth, "");
    daemon.spawn_unsynced().await;
    let mut admin = daemon.admin().await;
    let c = admin
        .wait_chain("a node error", |c| c["last_error"].is_string())
        .await;
    let error = c["last_error"].as_str().unwrap();
    assert!(
        error.starts_with("RPC credentials: the node refused them (HTTP 401)"),
        "{c}"
    );
    assert!(!error.contains("unreachable"), "{c}");
    // It answered: reachable, with the wrong key.
    assert_eq!(c["node_reachable"], json!(true), "{c}");
}

#[tokio::test]
async fn rescan_finds_a_payment_to_an_address_no_longer_watched() {
    let (node, mut payer, mut daemon) = setup("late_payment_window = 1").await;
    let mut admin = daemon.admin().await;
    let inv = admin.invoice(json!({"amount": "0.1"})).await;
    let id = inv["id"].as_str().unwrap();
    admin.ok("invoice.void", json!({"id": id})).await;
    let closed = unix_now();
    wait_for("the late payment window to pass", || async {
        (unix_now() > closed + 2).then_some(())
    })
    .await;
    // The address leaves the watch set when the window ends, and stays out across a
    // restart.
    admin
        .wait_chain("the voided address to leave the watch set", |c| {
            c["watched_addresses"] == json!(0)
        })
        .await;
    daemon.kill();
    daemon.restart().await;
    let mut admin = daemon.admin().await;
    let c = admin.wait_chain("any status", |_| true).await;
    assert_eq!(c["watched_addresses"], json!(0));

    payer.pay_and_mine(&node, &inv, "0.1", 1).await;
    admin.wait_scanned(node.height().await).await;
    let got = admin.ok("invoice.get", json!({"id": id})).await;
    assert_eq!(got["payments"], json!([]));

    let r = admin.ok("invoice.rescan", json!({"id": id})).await;
    assert_eq!(r, json!({"payments_found": 1}));
    let got = admin.ok("invoice.get", json!({"id": id})).await;
    assert_eq!(got["payments"][0]["amount"], "0.1");
    assert_eq!(got["payments"][0]["state"], "CONFIRMED");
    assert_eq!(got["status"], "VOIDED");
    // Found once, counted once.
    let r = admin
        .ok("invoice.rescan", json!({"id": id, "from_height": 0}))
        .await;
    assert_eq!(r, json!({"payments_found": 0}));
    let t = types(&admin.events_of(id).await);
    assert_eq!(
        t.iter().filter(|t| *t == "payment.detected").count(),
        1,
        "{t:?}"
    );
}

#[tokio::test]
async fn a_node_behind_is_waited_for_not_followed_back() {
    let (mut node, _payer, daemon) = setup("").await;
    let mut admin = daemon.admin().await;
    let height = node.height().await;
    admin.wait_scanned(height).await;
    // The node comes back without its chain (a fresh node still syncing, or one that
    // lost unflushed blocks): settled must wait for it, not roll its invoices back.
    node.kill();
    node.wipe();
    node.restart().await;
    assert_eq!(node.height().await, 0);
    let c = admin
        .wait_chain("the node reported behind", |c| {
            c["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("behind"))
        })
        .await;
    assert_eq!(c["running"], json!(true));
    assert_eq!(c["scanned_height"], json!(height));
}

#[tokio::test]
async fn a_pruned_block_settled_still_needs_is_a_loud_error_not_a_skip() {
    // -fastprune: 64 KiB block files, so a regtest node can prune. Only whole files
    // go, and the last 288 blocks stay: 1000 blocks leave room for that.
    let node = Node::start_with(&["-prune=1", "-fastprune"]).await;
    node.mine_to(1000, &other_address()).await;
    let pruned = node
        .rpc("pruneblockchain", json!([600]))
        .await
        .as_i64()
        .unwrap();
    assert!(pruned > 10, "the node pruned up to {pruned}");

    // First run asked to start at block 5, which the node no longer has.
    let daemon = Daemon::start_unsynced(&node, "start_height = 5").await;
    let mut admin = daemon.admin().await;
    let c = admin
        .wait_chain("the pruned-block error", |c| {
            c["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("pruned"))
        })
        .await;
    // Nothing was skipped: the cursor stays before the missing block.
    assert_eq!(c["scanned_height"], json!(4));
    assert!(daemon.log().contains("ERROR"), "logged at error level");
}

/// A catch-up sends its many node calls over a few kept-alive connections, not one
/// connection per call: Core logs every request with the client's port under
/// `-debug=http`.
#[tokio::test]
async fn node_calls_during_a_catch_up_reuse_their_connections() {
    let node = Node::start_with(&["-debug=http"]).await;
    node.mine_to(120, &other_address()).await;
    let height = node.height().await;
    let log = node.dir.path().join("regtest/debug.log");
    let from = std::fs::metadata(&log).unwrap().len() as usize;
    // From here until the catch-up ends, only settled calls the node.
    let daemon = Daemon::start(&node, "start_height = 1").await;
    let mut admin = daemon.admin().await;
    admin.wait_scanned(height).await;
    let text = std::fs::read(&log).unwrap();
    let text = String::from_utf8_lossy(&text[from..]);
    let ports: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once("request for / from ").map(|(_, peer)| peer))
        .filter_map(|peer| peer.trim().rsplit(':').next())
        .collect();
    assert!(ports.len() >= 120, "{} requests:\n{text}", ports.len());
    let connections: std::collections::HashSet<&str> = ports.iter().copied().collect();
    assert!(
        connections.len() <= 16,
        "{} requests over {} connections",
        ports.len(),
        connections.len()
    );
}
