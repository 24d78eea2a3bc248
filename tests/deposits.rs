//! Deposit addresses on a real regtest Core: every deposit credited once, a credit
//! taken back by a reorganisation and given again when the deposit is mined again, the
//! late window after closing, rescans, restarts, and bad params.

mod common;

use common::*;
use serde_json::{Value, json};

/// Creates (or gets) the deposit address of `client` on regtest.
async fn deposit_address(admin: &mut Admin, client: &str) -> Value {
    admin
        .ok(
            "deposit_address.create",
            json!({"chain": "regtest", "client_id": client}),
        )
        .await
}

/// The deposit address's events, oldest first.
async fn events_of(admin: &mut Admin, id: &str) -> Vec<Value> {
    let r = admin
        .ok(
            "events.list",
            json!({"deposit_address_id": id, "limit": 1000}),
        )
        .await;
    r["events"].as_array().unwrap().clone()
}

/// Waits until the deposit address satisfies `pred`, returning it.
async fn wait_address(
    admin: &mut Admin,
    id: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let start = std::time::Instant::now();
    loop {
        let a = admin.ok("deposit_address.get", json!({"id": id})).await;
        if pred(&a) {
            return a;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "timed out waiting for {what}: {a}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn credited(a: &Value) -> usize {
    a["deposits"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["credited"] == true)
        .count()
}

fn count(events: &[Value], kind: &str) -> usize {
    events.iter().filter(|e| e["type"] == kind).count()
}

#[tokio::test]
async fn three_deposits_in_two_blocks_are_each_credited_once() {
    let (node, mut payer, daemon) = setup("").await;
    let mut admin = daemon.admin().await;
    let a = deposit_address(&mut admin, "user-981").await;
    let id = a["id"].as_str().unwrap().to_string();
    let address = a["address"].as_str().unwrap().to_string();
    assert_eq!(
        (
            a["status"].clone(),
            a["totals"].clone(),
            a["deposits"].clone()
        ),
        (json!("OPEN"), json!([]), json!([]))
    );
    // What create answers is what the store holds.
    assert_eq!(admin.ok("deposit_address.get", json!({"id": id})).await, a);
    // A second create for the same client is the same address, and makes nothing.
    let again = deposit_address(&mut admin, "user-981").await;
    assert_eq!(again, a);

    let me = payer.address.to_string();
    let one = payer.pay(&node, &address, "0.1", false).await;
    let two = payer.pay(&node, &address, "0.2", false).await;
    node.mine_block_with(&me, &[&one, &two]).await;
    let three = payer.pay(&node, &address, "0.3", false).await;
    node.mine_block_with(&me, &[&three]).await;
    let a = wait_address(&mut admin, &id, "three credited deposits", |a| {
        credited(a) == 3
    })
    .await;
    assert_eq!(
        a["totals"],
        json!([{"asset": "BTC", "amount_confirmed": "0.6", "amount_pending": "0"}])
    );
    let amounts: Vec<&str> = a["deposits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["amount"].as_str().unwrap())
        .collect();
    assert_eq!(amounts, ["0.1", "0.2", "0.3"]);
    assert_eq!(
        a["deposits"][0]["txid"],
        json!(one.compute_txid().to_string())
    );
    assert_eq!(a["deposits"][0]["confirmations_required"], 1);
    assert_eq!(a["deposits"][0]["state"], "CONFIRMED");

    // More blocks: nothing is credited twice.
    node.mine_to(2, &me).await;
    admin.wait_scanned(node.height().await).await;
    let events = events_of(&mut admin, &id).await;
    assert_eq!(
        (
            count(&events, "deposit_address.created"),
            count(&events, "deposit.detected"),
            count(&events, "deposit.confirmed"),
            count(&events, "deposit.reverted")
        ),
        (1, 3, 3, 0),
        "{:?}",
        types(&events)
    );
    // Each deposit event names the address, not an invoice, and carries both objects.
    let e = events
        .iter()
        .find(|e| e["type"] == "deposit.confirmed")
        .unwrap();
    assert_eq!(
        (e["deposit_address_id"].clone(), e["invoice_id"].clone()),
        (json!(id), json!(null))
    );
    assert_eq!(e["data"]["deposit"]["credited"], true);
    assert!(
        e["data"]["deposit_address"].get("deposits").is_none(),
        "{e}"
    );

    // The same object by address; the deposits paged, oldest first.
    let by_address = admin
        .ok(
            "deposit_address.get",
            json!({"chain": "regtest", "address": address}),
        )
        .await;
    assert_eq!(by_address["id"], json!(id));
    let page = admin
        .ok("deposit_address.deposits", json!({"id": id, "limit": 2}))
        .await;
    assert_eq!(page["deposits"].as_array().unwrap().len(), 2);
    let rest = admin
        .ok(
            "deposit_address.deposits",
            json!({"id": id, "limit": 2, "cursor": page["next_cursor"]}),
        )
        .await;
    assert_eq!(rest["deposits"][0]["amount"], "0.3");
    assert_eq!(rest["next_cursor"], json!(null));
}

#[tokio::test]
async fn a_reorg_takes_the_credit_back_and_mining_it_again_credits_it_again() {
    let (node, mut payer, daemon) = setup("").await;
    let mut admin = daemon.admin().await;
    let a = deposit_address(&mut admin, "user-1").await;
    let id = a["id"].as_str().unwrap().to_string();
    let tx = payer
        .pay(&node, a["address"].as_str().unwrap(), "0.1", false)
        .await;
    let block = node.mine_to(1, &payer.address.to_string()).await.remove(0);
    wait_address(&mut admin, &id, "the deposit credited", |a| {
        credited(a) == 1
    })
    .await;

    // A competing branch without it: the credit is taken back.
    node.rpc("invalidateblock", json!([block])).await;
    node.mine_block_with(&other_address(), &[]).await;
    node.mine_block_with(&other_address(), &[]).await;
    let a = wait_address(&mut admin, &id, "the credit taken back", |a| {
        a["deposits"][0]["credited"] == false
    })
    .await;
    assert_eq!(a["deposits"][0]["state"], "PENDING");
    assert_eq!(
        a["totals"],
        json!([{"asset": "BTC", "amount_confirmed": "0", "amount_pending": "0.1"}])
    );

    // Mined again in the new branch: credited again, under the same key.
    node.mine_block_with(&other_address(), &[&tx]).await;
    let a = wait_address(&mut admin, &id, "credited again", |a| credited(a) == 1).await;
    assert_eq!(a["deposits"].as_array().unwrap().len(), 1);
    assert_eq!(a["totals"][0]["amount_confirmed"], "0.1");
    let events = events_of(&mut admin, &id).await;
    // The credit's events; a poll that read the mempool while the node was moving
    // may also have seen it dropped and detected again in between, which credits
    // nothing.
    assert_eq!(
        types(&events)
            .into_iter()
            .filter(|t| t == "deposit.confirmed" || t == "deposit.reverted")
            .collect::<Vec<_>>(),
        ["deposit.confirmed", "deposit.reverted", "deposit.confirmed"],
        "{:?}",
        types(&events)
    );
    let keys: Vec<(Value, Value)> = events
        .iter()
        .filter(|e| e["type"] != "deposit_address.created")
        .map(|e| {
            (
                e["data"]["deposit"]["txid"].clone(),
                e["data"]["deposit"]["index"].clone(),
            )
        })
        .collect();
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    // The backend's ledger, summed from the events, equals the chain.
    let ledger: i64 = events
        .iter()
        .map(|e| match e["type"].as_str() {
            Some("deposit.confirmed") => 1,
            Some("deposit.reverted") => -1,
            _ => 0,
        })
        .sum();
    assert_eq!(ledger, 1);
}

#[tokio::test]
async fn a_closed_address_is_watched_for_its_late_window_and_rescan_finds_the_rest() {
    let (node, mut payer, daemon) = setup("late_payment_window = 5").await;
    let mut admin = daemon.admin().await;
    let a = deposit_address(&mut admin, "user-7").await;
    let id = a["id"].as_str().unwrap().to_string();
    let address = a["address"].as_str().unwrap().to_string();
    let me = payer.address.to_string();
    let closed = admin.ok("deposit_address.close", json!({"id": id})).await;
    assert_eq!(closed["status"], "CLOSED");
    assert!(closed["closed_at"].is_i64());
    // Closing again changes nothing.
    let again = admin.ok("deposit_address.close", json!({"id": id})).await;
    assert_eq!(again["closed_at"], closed["closed_at"]);

    // Inside the window: still a deposit. Settled (six blocks) so that nothing keeps
    // the address watched past its window.
    payer.pay(&node, &address, "0.1", false).await;
    node.mine_to(6, &me).await;
    wait_address(&mut admin, &id, "the deposit in the window", |a| {
        credited(a) == 1
    })
    .await;
    admin
        .wait_chain("the closed address left the watch set", |c| {
            c["watched_addresses"] == 0
        })
        .await;

    // After it: not watched, not seen, until a rescan.
    payer.pay(&node, &address, "0.2", false).await;
    node.mine_to(1, &me).await;
    admin.wait_scanned(node.height().await).await;
    let a = admin.ok("deposit_address.get", json!({"id": id})).await;
    assert_eq!(a["deposits"].as_array().unwrap().len(), 1);
    let r = admin.ok("deposit_address.rescan", json!({"id": id})).await;
    assert_eq!(r["deposits_found"], 1);
    let a = wait_address(&mut admin, &id, "the rescanned deposit", |a| {
        credited(a) == 2
    })
    .await;
    assert_eq!(a["totals"][0]["amount_confirmed"], "0.3");
    let events = events_of(&mut admin, &id).await;
    assert_eq!(
        (
            count(&events, "deposit_address.closed"),
            count(&events, "deposit.confirmed")
        ),
        (1, 2)
    );

    // The client's next address is a new one.
    let next = deposit_address(&mut admin, "user-7").await;
    assert_ne!(next["id"], json!(id));
    assert_ne!(next["address"], json!(address));
}

#[tokio::test]
async fn deposits_survive_a_kill_and_are_never_counted_twice() {
    let (node, mut payer, mut daemon) = setup("").await;
    let mut admin = daemon.admin().await;
    let a = deposit_address(&mut admin, "user-2").await;
    let id = a["id"].as_str().unwrap().to_string();
    let address = a["address"].as_str().unwrap().to_string();
    let one = payer.pay(&node, &address, "0.1", false).await;
    wait_address(&mut admin, &id, "the first deposit seen", |a| {
        a["deposits"].as_array().unwrap().len() == 1
    })
    .await;
    // Killed between the two deposits: the second and the block that holds both come
    // while it is down.
    daemon.kill();
    let two = payer.pay(&node, &address, "0.2", false).await;
    let me = payer.address.to_string();
    node.mine_block_with(&me, &[&one, &two]).await;
    daemon.restart().await;
    let mut admin = daemon.admin().await;
    wait_address(&mut admin, &id, "both credited", |a| credited(a) == 2).await;
    // Killed again once both are credited, and a block more: nothing twice.
    daemon.kill();
    node.mine_to(1, &me).await;
    daemon.restart().await;
    let mut admin = daemon.admin().await;
    admin.wait_scanned(node.height().await).await;
    let events = events_of(&mut admin, &id).await;
    assert_eq!(
        (
            count(&events, "deposit.detected"),
            count(&events, "deposit.confirmed")
        ),
        (2, 2),
        "{:?}",
        types(&events)
    );
    let a = admin.ok("deposit_address.get", json!({"id": id})).await;
    assert_eq!(a["totals"][0]["amount_confirmed"], "0.3");
}

#[tokio::test]
async fn invoices_and_deposit_addresses_never_share_an_index() {
    let node = Node::start().await;
    node.mine_to(1, &other_address()).await;
    let daemon = Daemon::start(&node, "").await;
    let mut admin = daemon.admin().await;
    let i1 = admin.invoice(json!({"amount": "0.1"})).await;
    let d1 = deposit_address(&mut admin, "a").await;
    let i2 = admin.invoice(json!({"amount": "0.1"})).await;
    let d2 = deposit_address(&mut admin, "b").await;
    let indexes: Vec<u64> = [&i1, &d1, &i2, &d2]
        .iter()
        .map(|v| v["derivation_index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [0, 1, 2, 3]);
    // Bitcoin Core derives the same addresses from the same descriptor.
    let expected = node.derive_addresses(&descriptor(), 3).await;
    assert_eq!(d1["address"], json!(expected[1]));
    assert_eq!(d2["address"], json!(expected[3]));
    let list = admin
        .ok("deposit_address.list", json!({"chain": "regtest"}))
        .await;
    let ids: Vec<&Value> = list["deposit_addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["id"])
        .collect();
    assert_eq!(ids, [&d2["id"], &d1["id"]]);
    let one = admin
        .ok(
            "deposit_address.list",
            json!({"client_id": "a", "status": "OPEN"}),
        )
        .await;
    assert_eq!(one["deposit_addresses"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_params_name_the_field_and_change_nothing() {
    let node = Node::start().await;
    node.mine_to(1, &other_address()).await;
    let daemon = Daemon::start(&node, "").await;
    let mut admin = daemon.admin().await;
    let field = |e: &Value| e["data"]["field"].as_str().unwrap_or("").to_string();
    let cases = [
        (
            "deposit_address.create",
            json!({"chain": "regtest"}),
            "client_id",
        ),
        (
            "deposit_address.create",
            json!({"chain": "regtest", "client_id": ""}),
            "client_id",
        ),
        (
            "deposit_address.create",
            json!({"chain": "regtest", "client_id": "u", "metadata": [1]}),
            "metadata",
        ),
        (
            "deposit_address.create",
            json!({"chain": "regtest", "client_id": "u", "metadata": {"k": "x".repeat(17 * 1024)}}),
            "metadata",
        ),
        (
            "deposit_address.create",
            json!({"chain": "regtest", "client_id": "u", "callback_url": "http://x/"}),
            "callback_url",
        ),
        (
            "deposit_address.create",
            json!({"chain": "regtest", "client_id": "u", "amount": "1"}),
            "amount",
        ),
        ("deposit_address.get", json!({}), "id"),
        (
            "deposit_address.get",
            json!({"id": "x", "chain": "regtest"}),
            "id",
        ),
        (
            "deposit_address.get",
            json!({"chain": "regtest"}),
            "address",
        ),
        ("deposit_address.list", json!({"status": "open"}), "status"),
        ("deposit_address.list", json!({"limit": 0}), "limit"),
        (
            "deposit_address.deposits",
            json!({"id": "x", "state": "credited"}),
            "state",
        ),
        ("deposit_address.close", json!({}), "id"),
    ];
    for (method, params, want) in cases {
        let e = admin.call(method, params.clone()).await.unwrap_err();
        assert_eq!(
            (e["code"].as_i64(), field(&e)),
            (Some(-32602), want.to_string()),
            "{method} {params}: {e}"
        );
    }
    let e = admin
        .call(
            "deposit_address.create",
            json!({"chain": "dogecoin", "client_id": "u"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], 1003);
    for method in ["deposit_address.get", "deposit_address.close"] {
        let e = admin.call(method, json!({"id": "nope"})).await.unwrap_err();
        assert_eq!(e["code"], 1001, "{method}");
    }
    // Idempotency: the same key and params are the same address; other params, 1004.
    let params = json!({"chain": "regtest", "client_id": "k", "idempotency_key": "key-1"});
    let first = admin.ok("deposit_address.create", params.clone()).await;
    let again = admin.ok("deposit_address.create", params).await;
    assert_eq!(first["id"], again["id"]);
    let e = admin
        .call(
            "deposit_address.create",
            json!({"chain": "regtest", "client_id": "other", "idempotency_key": "key-1"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], 1004);
    // Nothing but that one address was made.
    let list = admin.ok("deposit_address.list", json!({})).await;
    assert_eq!(list["deposit_addresses"].as_array().unwrap().len(), 1);
    assert_eq!(admin.count_events("deposit_address.created").await, 1);
}

#[tokio::test]
async fn an_evm_address_takes_eth_direct_and_from_a_contract_usdt_and_usdc_each_in_its_asset() {
    use common::anvil::{Anvil, USDC, USDT, wei};
    let anvil = Anvil::start().await;
    let daemon = Daemon::start_anvil(&anvil, "").await;
    let mut admin = daemon.admin().await;
    let a = admin
        .ok(
            "deposit_address.create",
            json!({"chain": "anvil", "client_id": "player-1"}),
        )
        .await;
    let id = a["id"].as_str().unwrap().to_string();
    let address = a["address"].as_str().unwrap().to_string();
    let six = |n: u64| alloy::primitives::U256::from(n * 1_000_000);
    let direct = anvil.pay_eth(&address, wei("0.5")).await;
    let inner = anvil.pay_through_contract(&address, wei("0.25")).await;
    let usdt = anvil.pay_token(USDT, &address, six(100)).await;
    // Above the token's first tier: three confirmations.
    let usdc = anvil.pay_token(USDC, &address, six(200)).await;
    anvil.mine(3).await;
    let a = wait_address(&mut admin, &id, "four credited deposits", |a| {
        credited(a) == 4
    })
    .await;
    let got: Vec<(String, u64, String, String, u64)> = a["deposits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["txid"].as_str().unwrap().to_string(),
                d["index"].as_u64().unwrap(),
                d["asset"].as_str().unwrap().to_string(),
                d["amount"].as_str().unwrap().to_string(),
                d["confirmations_required"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (direct, 0, "ETH".into(), "0.5".into(), 1),
            (inner, 1, "ETH".into(), "0.25".into(), 1),
            (usdt.clone(), got[2].1, "USDT".into(), "100".into(), 1),
            (usdc.clone(), got[3].1, "USDC".into(), "200".into(), 3),
        ]
    );
    assert_eq!(
        a["totals"],
        json!([
            {"asset": "ETH", "amount_confirmed": "0.75", "amount_pending": "0"},
            {"asset": "USDT", "amount_confirmed": "100", "amount_pending": "0"},
            {"asset": "USDC", "amount_confirmed": "200", "amount_pending": "0"},
        ])
    );
    let events = events_of(&mut admin, &id).await;
    assert_eq!(
        (
            count(&events, "deposit.detected"),
            count(&events, "deposit.confirmed")
        ),
        (4, 4)
    );
}

#[tokio::test]
async fn a_replaced_deposit_is_dropped_and_never_credited() {
    let (node, mut payer, daemon) = setup("").await;
    let mut admin = daemon.admin().await;
    let a = deposit_address(&mut admin, "user-3").await;
    let id = a["id"].as_str().unwrap().to_string();
    let coin = payer.take();
    let to_us = payer.payment(coin, a["address"].as_str().unwrap(), "0.1", true);
    node.send(&to_us).await;
    wait_address(&mut admin, &id, "the deposit seen", |a| {
        a["deposits"][0]["state"] == "PENDING"
    })
    .await;
    // The payer replaces it, paying themselves instead.
    payer.forget(&to_us);
    let elsewhere = payer.spend_to_self(coin, bitcoin::Amount::from_sat(10_000));
    node.send(&elsewhere).await;
    let a = wait_address(&mut admin, &id, "the deposit dropped", |a| {
        a["deposits"][0]["state"] == "DROPPED"
    })
    .await;
    assert_eq!(
        a["totals"],
        json!([{"asset": "BTC", "amount_confirmed": "0", "amount_pending": "0"}])
    );
    node.mine_to(1, &payer.address.to_string()).await;
    admin.wait_scanned(node.height().await).await;
    let events = events_of(&mut admin, &id).await;
    assert_eq!(
        types(&events),
        [
            "deposit_address.created",
            "deposit.detected",
            "deposit.dropped"
        ]
    );
}
