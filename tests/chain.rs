//! The chain moving under an invoice: RBF replacement, reorganisations, and the daemon
//! killed while payments and blocks keep coming.

mod common;

use bitcoin::Amount;
use common::*;
use serde_json::json;

#[tokio::test]
async fn rbf_replacement_paying_elsewhere_drops_the_payment() {
    let (node, mut payer, daemon) = setup("").await;
    let mut admin = daemon.admin().await;
    let inv = admin.invoice(json!({"amount": "0.1"})).await;
    let id = inv["id"].as_str().unwrap();
    let coin = payer.take();
    let to_us = payer.payment(coin, inv["address"].as_str().unwrap(), "0.1", true);
    node.send(&to_us).await;
    admin.wait_status(id, "WAITING_FOR_CONFIRMATIONS").await;

    // The payer replaces it, paying themselves instead.
    payer.forget(&to_us);
    let elsewhere = payer.spend_to_self(coin, Amount::from_sat(10_000));
    node.send(&elsewhere).await;
    let inv = admin.wait_status(id, "PENDING").await;
    assert_eq!(inv["payments"][0]["state"], "DROPPED");
    assert_eq!(inv["amount_paid"], "0");
    let t = types(&admin.events_of(id).await);
    assert_eq!(
        t,
        [
            "invoice.created",
            "payment.detected",
            "invoice.status_changed",
            "payment.dropped",
            "invoice.status_changed"
        ]
    );
    // Mining the replacement changes nothing more.
    node.mine_to(1, &payer.address.to_string()).await;
    admin.wait_scanned(node.height().await).await;
    let inv = admin.ok("invoice.get", json!({"id": id})).await;
    assert_eq!(inv["status"], "PENDING");
}

#[tokio::test]
async fn reorg_reverts_a_completed_invoice() {
    let (node, mut payer, daemon) = setup("").await;
    let mut admin = daemon.admin().await;
    let inv = admin.invoice(json!({"amount": "0.1"})).await;
    let id = inv["id"].as_str().unwrap();
    let coin = payer.take();
    let tx = payer.payment(coin, inv["address"].as_str().unwrap(), "0.1", false);
    node.send(&tx).await;
    let me = payer.address.to_string();
    let block = node.mine_to(1, &me).await.remove(0);
    admin.wait_status(id, "COMPLETED").await;

    // The node drops the block: a shorter chain on the same branch is a node behind,
    // not a reorganisation. settled waits and says so.
    node.rpc("invalidateblock", json!([block])).await;
    admin
        .wait_chain("the node reported behind", |c| {
            c["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("behind"))
        })
        .await;
    let inv = admin.ok("invoice.get", json!({"id": id})).await;
    assert_eq!(inv["status"], "COMPLETED");

    // A competing block without the payment: now it is a reorganisation, and the
    // transaction is back in the mempool.
    node.mine_block_with(&other_address(), &[]).await;
    let inv = admin.wait_status(id, "WAITING_FOR_CONFIRMATIONS").await;
    assert_eq!(inv["payments"][0]["state"], "PENDING");
    assert_eq!(inv["payments"][0]["block_hash"], json!(null));
    let t = types(&admin.events_of(id).await);
    assert!(t.contains(&"invoice.reverted".to_string()), "{t:?}");

    // The new branch spends the same coin elsewhere: the payment is gone for good.
    payer.forget(&tx);
    let conflict = payer.spend_to_self(coin, Amount::from_sat(2_000));
    node.mine_block_with(&me, &[&conflict]).await;
    node.mine_to(1, &me).await;
    let inv = admin.wait_status(id, "PENDING").await;
    assert_eq!(inv["payments"][0]["state"], "DROPPED");
    let t = types(&admin.events_of(id).await);
    assert_eq!(
        t.iter().filter(|t| *t == "payment.dropped").count(),
        1,
        "{t:?}"
    );
}

/// The first run keeps the hashes of the blocks below its first cursor (asked of the
/// node in one batch): a reorganisation that replaces the tip it started at, and the
/// block below, finds its fork point there instead of halting the chain.
#[tokio::test]
async fn reorg_of_the_first_runs_tip_finds_the_fork_below_it() {
    let (node, _payer, daemon) = setup("").await;
    let mut admin = daemon.admin().await;
    let start = node.height().await;
    admin.wait_scanned(start).await;
    let below = node.rpc("getblockhash", json!([start - 1])).await;
    node.rpc("invalidateblock", json!([below])).await;
    for _ in 0..3 {
        node.mine_block_with(&other_address(), &[]).await;
    }
    let tip = node.height().await;
    assert_eq!(tip, start + 1);
    let tip_hash = node.rpc("getblockhash", json!([tip])).await;
    admin
        .wait_chain("the new branch followed", |c| {
            c["scanned_height"].as_u64() == Some(tip) && c["last_error"].is_null()
        })
        .await;
    let status = admin.ok("chain.status", json!({"chain": "regtest"})).await;
    assert_eq!(status["chains"][0]["running"], true, "{status}");
    assert_eq!(status["chains"][0]["scanned_hash"], tip_hash, "{status}");
}

#[tokio::test]
async fn reorg_that_mines_the_payment_again_keeps_it() {
    let (node, mut payer, daemon) = setup("").await;
    let mut admin = daemon.admin().await;
    let inv = admin.invoice(json!({"amount": "0.1"})).await;
    let id = inv["id"].as_str().unwrap();
    let (tx, mut mined) = payer.pay_and_mine(&node, &inv, "0.1", 1).await;
    let old = mined.remove(0);
    let me = payer.address.to_string();
    admin.wait_status(id, "COMPLETED").await;
    // A longer branch that holds the same transaction one block higher.
    node.rpc("invalidateblock", json!([old])).await;
    node.mine_block_with(&me, &[]).await;
    node.mine_block_with(&me, &[&tx]).await;
    let tip = node.rpc("getbestblockhash", json!([])).await;
    let inv = admin
        .wait_invoice(id, "the payment in the new branch", |i| {
            i["payments"][0]["block_hash"] == tip
        })
        .await;
    assert_eq!(inv["status"], "COMPLETED");
    assert_eq!(inv["payments"].as_array().unwrap().len(), 1);
    assert_eq!(inv["amount_paid"], "0.1");
}

#[tokio::test]
async fn a_final_invoice_is_not_rolled_back_and_the_reorg_is_an_alarm() {
    let (node, mut payer, daemon) = setup("final_confirmations = 2").await;
    let mut admin = daemon.admin().await;
    let inv = admin.invoice(json!({"amount": "0.1"})).await;
    let id = inv["id"].as_str().unwrap();
    let (_, blocks) = payer.pay_and_mine(&node, &inv, "0.1", 2).await;
    admin.wait_status(id, "COMPLETED").await;
    admin.wait_scanned(node.height().await).await;

    // A longer branch without the payment (empty blocks: the transaction stays in the
    // mempool), so a non-final invoice would go back to WAITING_FOR_CONFIRMATIONS.
    node.rpc("invalidateblock", json!([blocks[0]])).await;
    for _ in 0..3 {
        node.mine_block_with(&other_address(), &[]).await;
    }
    let c = admin
        .wait_chain("the alarm in chain.status", |c| c["alarm"].is_string())
        .await;
    assert!(c["last_error"].as_str().unwrap().contains("ALARM"), "{c}");
    let inv = admin.ok("invoice.get", json!({"id": id})).await;
    assert_eq!(
        inv["payments"][0]["state"], "PENDING",
        "the reorg reached the payment"
    );
    assert_eq!(inv["status"], "COMPLETED");
    assert!(!types(&admin.events_of(id).await).contains(&"invoice.reverted".to_string()));
}

#[tokio::test]
async fn reorg_deeper_than_max_reorg_depth_stops_the_chain() {
    let (node, payer, daemon) = setup("final_confirmations = 2\nmax_reorg_depth = 3").await;
    let mut admin = daemon.admin().await;
    let me = payer.address.to_string();
    let blocks = node.mine_to(5, &me).await;
    admin.wait_scanned(node.height().await).await;
    node.rpc("invalidateblock", json!([blocks[0]])).await;
    node.mine_to(7, &other_address()).await;
    let c = admin
        .wait_chain("the chain to stop", |c| c["running"] == json!(false))
        .await;
    let err = c["last_error"].as_str().unwrap();
    assert!(err.contains("max_reorg_depth"), "{err}");
}

#[tokio::test]
async fn killed_daemon_catches_up_without_counting_twice() {
    let (node, mut payer, mut daemon) = setup("").await;
    let mut admin = daemon.admin().await;
    let seen = admin.invoice(json!({"amount": "0.5"})).await;
    let unseen = admin.invoice(json!({"amount": "0.5"})).await;
    let (seen_id, unseen_id) = (seen["id"].as_str().unwrap(), unseen["id"].as_str().unwrap());
    payer
        .pay(&node, seen["address"].as_str().unwrap(), "0.5", false)
        .await;
    admin
        .wait_status(seen_id, "WAITING_FOR_CONFIRMATIONS")
        .await;

    daemon.kill();
    // While it is down: the first payment is mined, a second is paid and mined.
    let me = payer.address.to_string();
    node.mine_to(2, &me).await;
    payer
        .pay(&node, unseen["address"].as_str().unwrap(), "0.5", false)
        .await;
    node.mine_to(3, &me).await;
    daemon.restart().await;

    let mut admin = daemon.admin().await;
    for id in [seen_id, unseen_id] {
        let inv = admin.wait_status(id, "COMPLETED").await;
        assert_eq!(inv["amount_paid"], "0.5");
        assert_eq!(inv["payments"].as_array().unwrap().len(), 1);
        let t = types(&admin.events_of(id).await);
        assert_eq!(
            t.iter().filter(|t| *t == "payment.detected").count(),
            1,
            "{t:?}"
        );
        assert_eq!(
            t.iter().filter(|t| *t == "payment.confirmed").count(),
            1,
            "{t:?}"
        );
    }
}

#[tokio::test]
async fn a_payment_made_on_time_while_the_daemon_was_down_is_on_time() {
    let (node, mut payer, mut daemon) = setup("").await;
    let mut admin = daemon.admin().await;
    // The next block's time is at most one second past the tip's, which may be ahead
    // of the clock: expire a few seconds after that.
    let expires_in = (node.tip_time().await - unix_now()).max(0) + 5;
    let inv = admin
        .invoice(json!({"amount": "0.2", "expires_in": expires_in}))
        .await;
    let id = inv["id"].as_str().unwrap().to_string();
    let expires_at = inv["expires_at"].as_i64().unwrap();
    daemon.kill();
    payer.pay_and_mine(&node, &inv, "0.2", 1).await;
    wait_for("expires_at to pass", || async {
        (unix_now() > expires_at + 1).then_some(())
    })
    .await;
    daemon.restart().await;
    let mut admin = daemon.admin().await;
    let inv = admin.wait_status(&id, "COMPLETED").await;
    assert_eq!(inv["payments"][0]["late"], json!(false));
    let t = types(&admin.events_of(&id).await);
    let events = admin.events_of(&id).await;
    assert!(
        events.iter().all(|e| e["data"]["to"] != "EXPIRED"),
        "the invoice never expired: {t:?}"
    );
}
