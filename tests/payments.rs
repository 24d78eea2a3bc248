//! Invoices paid on a real regtest node: the happy path, installments, overpayment,
//! expiry, late payments and zero-conf.

mod common;

use bitcoin::Amount;
use common::*;
use serde_json::json;

#[tokio::test]
async fn addresses_match_bitcoin_core_and_are_never_reused() {
    let (node, _payer, mut daemon) = setup("").await;
    let mut admin = daemon.admin().await;
    let expected = node.derive_addresses(&descriptor(), 19).await;
    let mut got = Vec::new();
    for i in 0..20 {
        let inv = admin.invoice(json!({"amount": "0.01"})).await;
        assert_eq!(inv["derivation_index"], json!(i));
        got.push(inv["address"].as_str().unwrap().to_string());
    }
    assert_eq!(got, expected);

    // The next index survives a restart.
    daemon.kill();
    daemon.restart().await;
    let mut admin = daemon.admin().await;
    let inv = admin.invoice(json!({"amount": "0.01"})).await;
    assert_eq!(inv["derivation_index"], json!(20));
    assert!(!expected.contains(&inv["address"].as_str().unwrap().to_string()));
}

#[tokio::test]
async fn full_payment_waits_for_the_required_confirmations() {
    let (node, mut payer, daemon) = setup("").await;
    let mut admin = daemon.admin().await;
    // 2 BTC: the regtest tier above 1 BTC needs 3 confirmations.
    let inv = admin
        .invoice(json!({"amount": "2", "order_id": "order-1"}))
        .await;
    assert_eq!(inv["status"], "PENDING");
    assert_eq!(inv["confirmations_required"], json!(3));
    let id = inv["id"].as_str().unwrap();
    let address = inv["address"].as_str().unwrap();

    let tx = payer.pay(&node, address, "2", false).await;
    let inv = admin.wait_status(id, "WAITING_FOR_CONFIRMATIONS").await;
    assert_eq!(inv["amount_paid"], "2");
    assert_eq!(inv["amount_confirmed"], "0");
    assert_eq!(inv["payments"][0]["state"], "PENDING");
    assert_eq!(inv["payments"][0]["txid"], tx.compute_txid().to_string());

    let me = payer.address.to_string();
    node.mine_to(2, &me).await;
    let h = node.height().await;
    admin.wait_scanned(h).await;
    let inv = admin.ok("invoice.get", json!({"id": id})).await;
    assert_eq!(inv["status"], "WAITING_FOR_CONFIRMATIONS");
    assert_eq!(inv["payments"][0]["confirmations"], json!(2));

    node.mine_to(1, &me).await;
    let inv = admin.wait_status(id, "COMPLETED").await;
    assert_eq!(inv["amount_confirmed"], "2");
    assert_eq!(inv["overpaid_amount"], "0");
    assert!(inv["completed_at"].is_i64());
    assert_eq!(
        types(&admin.events_of(id).await),
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
async fn installments_add_up() {
    let (node, mut payer, daemon) = setup("").await;
    let mut admin = daemon.admin().await;
    let inv = admin.invoice(json!({"amount": "0.5"})).await;
    let id = inv["id"].as_str().unwrap();
    let address = inv["address"].as_str().unwrap();
    let me = payer.address.to_string();

    payer.pay(&node, address, "0.2", false).await;
    node.mine_to(1, &me).await;
    let inv = admin.wait_status(id, "PARTIAL").await;
    assert_eq!(inv["amount_paid"], "0.2");
    // A one-option invoice: its one option says what is left, exactly.
    assert_eq!(inv["paid_ratio"], "0.4");
    assert_eq!(inv["overpaid_ratio"], "0");
    assert_eq!(inv["price"], json!(null));
    let option = &inv["options"][0];
    assert_eq!(inv["options"].as_array().unwrap().len(), 1);
    assert_eq!(option["chain"], "regtest");
    assert_eq!(option["asset"], "BTC");
    assert_eq!(option["address"], inv["address"]);
    assert_eq!(option["amount_due"], "0.5");
    assert_eq!(option["amount_paid"], "0.2");
    assert_eq!(option["remaining"], "0.3");
    let payment = &inv["payments"][0];
    assert_eq!(
        (&payment["chain"], &payment["asset"], &payment["accepted"]),
        (&json!("regtest"), &json!("BTC"), &json!(true))
    );

    payer.pay(&node, address, "0.3", false).await;
    admin.wait_status(id, "WAITING_FOR_CONFIRMATIONS").await;
    node.mine_to(1, &me).await;
    let inv = admin.wait_status(id, "COMPLETED").await;
    assert_eq!(inv["amount_paid"], "0.5");
    assert_eq!(inv["payments"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn overpayment_is_reported() {
    let (node, mut payer, daemon) = setup("").await;
    let mut admin = daemon.admin().await;
    let inv = admin.invoice(json!({"amount": "0.1"})).await;
    let id = inv["id"].as_str().unwrap();
    payer.pay_and_mine(&node, &inv, "0.15", 1).await;
    let inv = admin.wait_status(id, "COMPLETED").await;
    assert_eq!(inv["amount_paid"], "0.15");
    assert_eq!(inv["overpaid_amount"], "0.05");
    assert_eq!(inv["paid_ratio"], "1.5");
    assert_eq!(inv["overpaid_ratio"], "0.5");
    assert_eq!(inv["options"][0]["remaining"], "0");
}

#[tokio::test]
async fn expiry_unpaid_underpaid_then_a_late_payment() {
    let (node, mut payer, daemon) = setup("").await;
    let mut admin = daemon.admin().await;
    let unpaid = admin
        .invoice(json!({"amount": "0.1", "expires_in": 2}))
        .await;
    let under = admin
        .invoice(json!({"amount": "0.1", "expires_in": 2}))
        .await;
    payer
        .pay(&node, under["address"].as_str().unwrap(), "0.04", false)
        .await;
    let under_id = under["id"].as_str().unwrap();
    admin.wait_status(under_id, "PARTIAL").await;

    let unpaid_id = unpaid["id"].as_str().unwrap();
    let inv = admin.wait_status(unpaid_id, "EXPIRED").await;
    assert_eq!(inv["reason"], "unpaid");
    let inv = admin.wait_status(under_id, "EXPIRED").await;
    assert_eq!(inv["reason"], "underpaid");

    // A late payment is tracked, confirmed and reported, but does not complete.
    payer
        .pay(&node, unpaid["address"].as_str().unwrap(), "0.1", false)
        .await;
    let inv = admin.wait_status(unpaid_id, "EXPIRED_LATE_PAYMENT").await;
    assert_eq!(inv["payments"][0]["late"], json!(true));
    node.mine_to(1, &payer.address.to_string()).await;
    let inv = admin
        .wait_invoice(unpaid_id, "the late payment confirmed", |i| {
            i["payments"][0]["confirmations"] == json!(1)
        })
        .await;
    assert_eq!(inv["status"], "EXPIRED_LATE_PAYMENT");
    assert_eq!(inv["amount_paid"], "0.1");
    let t = types(&admin.events_of(unpaid_id).await);
    assert!(t.contains(&"payment.confirmed".to_string()), "{t:?}");
}

/// Deadlines come from the deadline index, not from looking at every open invoice: an
/// unpaid invoice expires, a payment outstays the confirmation window, and addresses
/// leave the watch set when their window has ended and their payments are final,
/// each at its own time and without a restart.
#[tokio::test]
async fn invoices_expire_time_out_and_leave_the_watch_set_at_their_deadlines() {
    let (node, mut payer, daemon) =
        setup("late_payment_window = 2\nconfirmation_window = 3\nfinal_confirmations = 2").await;
    let mut admin = daemon.admin().await;
    let unpaid = admin
        .invoice(json!({"amount": "0.1", "expires_in": 2}))
        .await;
    let waiting = admin
        .invoice(json!({"amount": "0.1", "expires_in": 2}))
        .await;
    let kept = admin.invoice(json!({"amount": "0.1"})).await;
    let (unpaid_id, waiting_id) = (
        unpaid["id"].as_str().unwrap(),
        waiting["id"].as_str().unwrap(),
    );
    let tx = payer
        .pay(&node, waiting["address"].as_str().unwrap(), "0.1", false)
        .await;
    let paid = admin
        .wait_status(waiting_id, "WAITING_FOR_CONFIRMATIONS")
        .await;
    let seen_at = paid["payments"][0]["seen_at"].as_i64().unwrap();

    let inv = admin.wait_status(unpaid_id, "EXPIRED").await;
    let expires_at = inv["expires_at"].as_i64().unwrap();
    assert_eq!(inv["reason"], "unpaid");
    // Judged at its deadline: once the clock passed expires_at, at the next poll.
    let at = inv["updated_at"].as_i64().unwrap();
    assert!((expires_at + 1..=expires_at + 3).contains(&at), "{inv}");

    // Unconfirmed past confirmation_window (3 s), after its expiry: a timeout.
    let inv = admin.wait_status(waiting_id, "EXPIRED").await;
    assert_eq!(inv["reason"], "confirmation_timeout");
    let at = inv["updated_at"].as_i64().unwrap();
    assert!((seen_at + 4..=seen_at + 6).contains(&at), "{inv}");

    // The unpaid one leaves 2 s after it closed; the other stays while its payment is
    // in the mempool, and the open one stays.
    let c = admin
        .wait_chain("the expired unpaid address to leave the watch set", |c| {
            c["watched_addresses"] == json!(2)
        })
        .await;
    let unpaid_closed = admin.ok("invoice.get", json!({"id": unpaid_id})).await["updated_at"]
        .as_i64()
        .unwrap();
    assert!(
        (unpaid_closed + 2..=unpaid_closed + 5).contains(&unix_now()),
        "{c}"
    );
    node.mine_to(1, &other_address()).await;
    admin.wait_scanned(node.height().await).await;
    let inv = admin.ok("invoice.get", json!({"id": waiting_id})).await;
    assert_eq!(inv["payments"][0]["txid"], tx.compute_txid().to_string());
    assert_eq!(inv["payments"][0]["state"], "CONFIRMED");
    let c = admin.ok("chain.status", json!({})).await;
    assert_eq!(c["chains"][0]["watched_addresses"], json!(2), "{c}");
    // Final at two confirmations: then the address leaves too.
    node.mine_to(1, &other_address()).await;
    admin
        .wait_chain("the final payment's address to leave the watch set", |c| {
            c["watched_addresses"] == json!(1)
        })
        .await;

    // The database agrees: a restart loads the same watch set.
    let kept_id = kept["id"].as_str().unwrap();
    let got = admin.ok("invoice.get", json!({"id": kept_id})).await;
    assert_eq!(got["status"], "PENDING");
    drop(admin);
    let mut daemon = daemon;
    daemon.kill();
    daemon.restart().await;
    let mut admin = daemon.admin().await;
    let c = admin.wait_chain("any status", |_| true).await;
    assert_eq!(c["watched_addresses"], json!(1), "{c}");
}

/// At the tip with nothing new, a poll writes nothing: the database's write-ahead log
/// stays as it was while the watcher polls on.
#[tokio::test]
async fn an_idle_poll_writes_nothing() {
    let (node, _payer, daemon) = setup("").await;
    let mut admin = daemon.admin().await;
    admin
        .invoice(json!({"amount": "0.1", "expires_in": 3600}))
        .await;
    admin.wait_scanned(node.height().await).await;
    let wal = daemon.dir.path().join("data/settled.db-wal");
    let look = || {
        let m = std::fs::metadata(&wal).unwrap();
        (m.len(), m.modified().unwrap())
    };
    // A poll that began after the last write has ended.
    let first = admin
        .wait_chain("a poll", |c| c["last_poll_at"].is_i64())
        .await;
    let after = first["last_poll_at"].as_i64().unwrap() + 1;
    admin
        .wait_chain("a poll after the last write", |c| {
            c["last_poll_at"].as_i64() > Some(after)
        })
        .await;
    let before = look();
    // Polls every 100 ms: some thirty in three seconds.
    let from = unix_now();
    admin
        .wait_chain("three seconds of polls", |c| {
            c["last_poll_at"].as_i64() >= Some(from + 3)
        })
        .await;
    assert_eq!(look(), before, "idle polls wrote to the database");
}

#[tokio::test]
async fn late_payments_complete_when_the_chain_accepts_them() {
    let (node, mut payer, daemon) = setup("accept_late_payments = true").await;
    let mut admin = daemon.admin().await;
    let inv = admin
        .invoice(json!({"amount": "0.1", "expires_in": 1}))
        .await;
    let id = inv["id"].as_str().unwrap();
    admin.wait_status(id, "EXPIRED").await;
    payer.pay_and_mine(&node, &inv, "0.1", 1).await;
    admin.wait_status(id, "COMPLETED").await;
}

#[tokio::test]
async fn zero_conf_is_refused_for_rbf_signalling_transactions() {
    let (node, mut payer, daemon) = setup("").await;
    let mut admin = daemon.admin().await;
    // 0.0005 BTC: the regtest tier that accepts payments from the mempool.
    let plain = admin.invoice(json!({"amount": "0.0005"})).await;
    let rbf = admin.invoice(json!({"amount": "0.0005"})).await;
    assert_eq!(plain["confirmations_required"], json!(0));
    payer
        .pay(&node, plain["address"].as_str().unwrap(), "0.0005", false)
        .await;
    let rbf_tx = payer
        .pay(&node, rbf["address"].as_str().unwrap(), "0.0005", true)
        .await;

    admin
        .wait_status(plain["id"].as_str().unwrap(), "COMPLETED")
        .await;
    let rbf_id = rbf["id"].as_str().unwrap();
    let inv = admin.wait_status(rbf_id, "WAITING_FOR_CONFIRMATIONS").await;
    assert_eq!(inv["payments"][0]["rbf"], json!(true));
    // It stays waiting while in the mempool ...
    let h = node.height().await;
    admin.wait_scanned(h).await;
    assert!(node.in_mempool(&rbf_tx.compute_txid()).await);
    let inv = admin.ok("invoice.get", json!({"id": rbf_id})).await;
    assert_eq!(inv["status"], "WAITING_FOR_CONFIRMATIONS");
    // ... and completes once mined.
    node.mine_to(1, &payer.address.to_string()).await;
    admin.wait_status(rbf_id, "COMPLETED").await;
}

#[tokio::test]
async fn open_mode_takes_the_first_payment_as_due() {
    let (node, mut payer, daemon) = setup("").await;
    let mut admin = daemon.admin().await;
    let inv = admin.invoice(json!({"mode": "open"})).await;
    assert_eq!(inv["amount_due"], json!(null));
    let id = inv["id"].as_str().unwrap();
    payer.pay_and_mine(&node, &inv, "0.3", 1).await;
    let inv = admin.wait_status(id, "COMPLETED").await;
    assert_eq!(inv["amount_due"], "0.3");
}

#[tokio::test]
async fn open_mode_first_is_the_first_detected_even_in_the_same_second() {
    let (node, mut payer, mut daemon) = setup("").await;
    let mut admin = daemon.admin().await;
    let inv = admin.invoice(json!({"mode": "open"})).await;
    let id = inv["id"].as_str().unwrap().to_string();
    let address = inv["address"].as_str().unwrap();

    // The first payment, then a later one whose txid sorts before it.
    let coin = payer.take();
    let first = payer.payment(coin, address, "0.123", false);
    let coin = payer.take();
    let candidates: Vec<_> = (0..32)
        .map(|k| {
            let fee = Amount::from_sat(1_000 + k);
            payer.build(coin, &[(address, Amount::from_sat(5_000_000))], fee, false)
        })
        .collect();
    candidates.iter().for_each(|t| payer.forget(t));
    let later = candidates
        .into_iter()
        .find(|t| t.compute_txid().to_string() < first.compute_txid().to_string())
        .expect("one of 32 txids sorts before the first");

    // Both found in blocks of the same second, already past: both get it as seen_at.
    let t = node.tip_time().await + 1;
    node.rpc("setmocktime", json!([t])).await;
    wait_for("the clock to pass the blocks' time", || async {
        (unix_now() > t).then_some(())
    })
    .await;
    let a = node.mine_block_with(&other_address(), &[&first]).await;
    admin.wait_scanned(node.height().await).await;
    let b = node.mine_block_with(&other_address(), &[&later]).await;
    assert_eq!(node.block_time(&a).await, node.block_time(&b).await);
    admin.wait_scanned(node.height().await).await;

    let check = |inv: &serde_json::Value| {
        let pays = &inv["payments"];
        assert_eq!(pays[0]["seen_at"], pays[1]["seen_at"], "{inv}");
        assert_eq!(inv["amount_due"], "0.123", "{inv}");
        assert_eq!(inv["overpaid_amount"], "0.05");
        assert_eq!(inv["status"], "COMPLETED");
    };
    check(&admin.wait_status(&id, "COMPLETED").await);
    daemon.kill();
    daemon.restart().await;
    let mut admin = daemon.admin().await;
    check(&admin.ok("invoice.get", json!({ "id": id })).await);
}

#[tokio::test]
async fn zero_conf_is_refused_for_a_child_of_a_signalling_parent() {
    let (node, mut payer, daemon) = setup("").await;
    let mut admin = daemon.admin().await;
    let mut invoices = Vec::new();
    for _ in 0..3 {
        invoices.push(admin.invoice(json!({"amount": "0.0005"})).await);
    }
    let [inherits, replaced, plain] = &invoices[..] else {
        unreachable!()
    };
    assert_eq!(plain["confirmations_required"], json!(0));

    // A parent paying the payer (signalling or not), and a child of it that does not
    // signal, paying the invoice.
    let child_of = |payer: &mut Payer, parent_signals: bool, inv: &serde_json::Value| {
        let coin = payer.take();
        let parent = payer.build(coin, &[], Amount::from_sat(1_000), parent_signals);
        let change = payer.take_change();
        let child = payer.payment(change, inv["address"].as_str().unwrap(), "0.0005", false);
        (coin, parent, child)
    };
    let (_, p1, c1) = child_of(&mut payer, true, inherits);
    let (coin2, p2, c2) = child_of(&mut payer, true, replaced);
    for tx in [&p1, &c1, &p2, &c2] {
        node.send(tx).await;
    }
    for inv in [inherits, replaced] {
        let inv = admin
            .wait_status(inv["id"].as_str().unwrap(), "WAITING_FOR_CONFIRMATIONS")
            .await;
        assert_eq!(inv["payments"][0]["rbf"], json!(true), "{inv}");
    }

    // A chain of transactions none of which signals is accepted from the mempool; seen
    // after the others, it also shows the daemon has looked again since.
    let (_, p3, c3) = child_of(&mut payer, false, plain);
    node.send(&p3).await;
    node.send(&c3).await;
    let inv = admin
        .wait_status(plain["id"].as_str().unwrap(), "COMPLETED")
        .await;
    assert_eq!(inv["payments"][0]["rbf"], json!(false));
    for inv in [inherits, replaced] {
        let inv = admin.ok("invoice.get", json!({"id": inv["id"]})).await;
        assert_eq!(inv["status"], "WAITING_FOR_CONFIRMATIONS", "{inv}");
    }

    // The parent replaced: its child is gone, and with it the payment.
    payer.forget(&p2);
    payer.forget(&c2);
    let replacement = payer.spend_to_self(coin2, Amount::from_sat(20_000));
    node.send(&replacement).await;
    let inv = admin
        .wait_status(replaced["id"].as_str().unwrap(), "PENDING")
        .await;
    assert_eq!(inv["payments"][0]["state"], "DROPPED");

    // Mined, the child of a signalling parent completes its invoice.
    node.mine_to(1, &payer.address.to_string()).await;
    admin
        .wait_status(inherits["id"].as_str().unwrap(), "COMPLETED")
        .await;
    admin.wait_scanned(node.height().await).await;
    let inv = admin.ok("invoice.get", json!({"id": replaced["id"]})).await;
    assert_eq!(inv["status"], "PENDING");
}
