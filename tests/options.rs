//! Payment options on real nodes: one settled following Bitcoin regtest and anvil
//! together, an order payable in BTC, ETH and USDT, paid across chains, the currency
//! chosen later, a chain that stops answering, and a reorganisation on one chain.

mod common;

use alloy::primitives::U256;
use common::anvil::{Anvil, USDT, wei};
use common::{Admin, Daemon, Node, Payer, types, unix_now};
use serde_json::{Value, json};

fn usdt(n: u64) -> U256 {
    U256::from(n) * U256::from(1_000_000u64)
}

/// Both nodes, a funded Bitcoin payer, and settled following both.
async fn setup() -> (Node, Payer, Anvil, Daemon) {
    let node = Node::start().await;
    let payer = Payer::fund(&node).await;
    let anvil = Anvil::start().await;
    let daemon = Daemon::start_regtest_and_anvil(&node, &anvil).await;
    (node, payer, anvil, daemon)
}

/// The invoice's option for `asset`.
fn option<'a>(inv: &'a Value, asset: &str) -> &'a Value {
    inv["options"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["asset"] == json!(asset))
        .unwrap_or_else(|| panic!("no {asset} option: {inv:#}"))
}

fn address(inv: &Value, asset: &str) -> String {
    option(inv, asset)["address"].as_str().unwrap().to_string()
}

fn id(inv: &Value) -> String {
    inv["id"].as_str().unwrap().to_string()
}

async fn create(admin: &mut Admin, params: Value) -> Value {
    admin.ok("invoice.create", params).await
}

/// The error code of a call that must fail.
async fn refused(admin: &mut Admin, method: &str, params: Value) -> Value {
    match admin.call(method, params).await {
        Ok(v) => panic!("{method} succeeded: {v:#}"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn an_order_paid_half_in_btc_and_the_rest_in_usdt_completes() {
    let (node, mut payer, anvil, daemon) = setup().await;
    let mut admin = daemon.admin().await;
    let inv = create(
        &mut admin,
        json!({"options": [
            {"chain": "regtest", "asset": "BTC", "amount": "0.5"},
            {"chain": "anvil", "asset": "ETH", "amount": "2"},
            {"chain": "anvil", "asset": "USDT", "amount": "500"},
        ], "price": {"amount": "500", "currency": "USD"}}),
    )
    .await;
    let id = id(&inv);
    assert_eq!(inv["status"], json!("PENDING"));
    // What create answers is what the store holds.
    assert_eq!(admin.ok("invoice.get", json!({"id": id})).await, inv);
    // Several options: nothing at the top level that belongs to one of them.
    for k in ["chain", "asset", "address", "amount_due", "amount_paid"] {
        assert_eq!(inv[k], Value::Null, "{k}");
    }
    assert_eq!(inv["price"], json!({"amount": "500", "currency": "USD"}));
    // One address per chain: ETH and USDT share anvil's.
    let btc = address(&inv, "BTC");
    assert!(btc.starts_with("bcrt1"), "{btc}");
    assert_eq!(address(&inv, "ETH"), address(&inv, "USDT"));
    assert_eq!(option(&inv, "USDT")["remaining"], json!("500"));

    payer.pay(&node, &btc, "0.25", false).await;
    let partial = admin.wait_status(&id, "PARTIAL").await;
    assert_eq!(partial["paid_ratio"], json!("0.5"));
    assert_eq!(option(&partial, "USDT")["remaining"], json!("250"));
    assert_eq!(option(&partial, "ETH")["remaining"], json!("1"));
    assert_eq!(option(&partial, "BTC")["amount_paid"], json!("0.25"));

    // The rest in USDT on the other chain: covered, one block deep of the three 500
    // USDT needs, and the BTC still in the mempool.
    anvil
        .pay_token(USDT, &address(&inv, "USDT"), usdt(250))
        .await;
    let waiting = admin.wait_status(&id, "WAITING_FOR_CONFIRMATIONS").await;
    assert_eq!(waiting["paid_ratio"], json!("1"));
    assert_eq!(option(&waiting, "USDT")["remaining"], json!("0"));

    node.mine_to(1, &payer.address.to_string()).await;
    admin
        .wait_invoice(&id, "the BTC payment confirmed", |i| {
            option(i, "BTC")["amount_confirmed"] == json!("0.25")
        })
        .await;
    assert_eq!(
        admin.ok("invoice.get", json!({"id": id})).await["status"],
        json!("WAITING_FOR_CONFIRMATIONS"),
        "USDT has 1 of its 3 confirmations"
    );
    anvil.mine(2).await;
    let done = admin.wait_status(&id, "COMPLETED").await;
    assert_eq!(done["overpaid_ratio"], json!("0"));
    let payments = done["payments"].as_array().unwrap();
    assert_eq!(payments.len(), 2);
    assert!(payments.iter().all(|p| p["accepted"] == json!(true)));
    let chains: Vec<&str> = payments
        .iter()
        .map(|p| p["chain"].as_str().unwrap())
        .collect();
    assert_eq!(chains, ["regtest", "anvil"]);
    let events = types(&admin.events_of(&id).await);
    assert_eq!(
        events
            .iter()
            .filter(|t| *t == "invoice.status_changed")
            .count(),
        3,
        "{events:?}"
    );
}

#[tokio::test]
async fn paid_in_full_on_two_options_is_completed_and_overpaid_by_one() {
    let (node, mut payer, anvil, daemon) = setup().await;
    let mut admin = daemon.admin().await;
    let inv = create(
        &mut admin,
        json!({"options": [
            {"chain": "regtest", "asset": "BTC", "amount": "0.01"},
            {"chain": "anvil", "asset": "ETH", "amount": "1"},
        ]}),
    )
    .await;
    let id = id(&inv);
    payer.pay(&node, &address(&inv, "BTC"), "0.01", false).await;
    node.mine_to(1, &payer.address.to_string()).await;
    anvil.pay_eth(&address(&inv, "ETH"), wei("1")).await;
    let done = admin
        .wait_invoice(&id, "both payments counted", |i| {
            i["status"] == json!("COMPLETED") && i["paid_ratio"] == json!("2")
        })
        .await;
    assert_eq!(done["overpaid_ratio"], json!("1"));
    assert_eq!(option(&done, "ETH")["remaining"], json!("0"));
}

#[tokio::test]
async fn the_currency_is_chosen_later_and_quoted_again_before_payment() {
    let (_node, _payer, anvil, daemon) = setup().await;
    let mut admin = daemon.admin().await;
    let inv = create(
        &mut admin,
        json!({"price": {"amount": "24.99", "currency": "USD"}, "expires_in": 60}),
    )
    .await;
    let id = id(&inv);
    assert_eq!(inv["status"], json!("PENDING"));
    assert_eq!(inv["options"], json!([]));
    assert_eq!(inv["address"], Value::Null);
    assert_eq!(inv["price"], json!({"amount": "24.99", "currency": "USD"}));

    // The customer picks USDT: a 45-minute window from now.
    let before = unix_now();
    let picked = admin
        .ok(
            "invoice.add_option",
            json!({"id": id, "chain": "anvil", "asset": "USDT", "amount": "25", "expires_in": 2700}),
        )
        .await;
    let usdt_address = address(&picked, "USDT");
    assert!(usdt_address.starts_with("0x"), "{usdt_address}");
    assert!(picked["expires_at"].as_i64().unwrap() >= before + 2700);
    assert_eq!(picked["amount_due"], json!("25"), "one option: at the top");
    assert_eq!(picked["address"], json!(usdt_address));

    // The rate moved before anyone paid: a new quote, same address and place.
    let quoted = admin
        .ok(
            "invoice.add_option",
            json!({"id": id, "chain": "anvil", "asset": "USDT", "amount": "24"}),
        )
        .await;
    assert_eq!(quoted["options"].as_array().unwrap().len(), 1);
    assert_eq!(option(&quoted, "USDT")["amount_due"], json!("24"));
    assert_eq!(address(&quoted, "USDT"), usdt_address);

    anvil.pay_token(USDT, &usdt_address, usdt(10)).await;
    admin.wait_status(&id, "PARTIAL").await;
    // Paid into: its amount is fixed now.
    let e = refused(
        &mut admin,
        "invoice.add_option",
        json!({"id": id, "chain": "anvil", "asset": "USDT", "amount": "30"}),
    )
    .await;
    assert_eq!(e["code"], json!(1002), "{e}");
    // Another asset may still be added while PARTIAL, on the same address.
    let more = admin
        .ok(
            "invoice.add_option",
            json!({"id": id, "chain": "anvil", "asset": "ETH", "amount": "0.01"}),
        )
        .await;
    assert_eq!(address(&more, "ETH"), usdt_address);
    assert_eq!(option(&more, "USDT")["amount_due"], json!("24"));

    anvil.pay_token(USDT, &usdt_address, usdt(14)).await;
    let done = admin.wait_status(&id, "COMPLETED").await;
    assert_eq!(option(&done, "USDT")["amount_paid"], json!("24"));
    let events = admin.events_of(&id).await;
    let added: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "invoice.option_added")
        .collect();
    assert_eq!(added.len(), 3, "{:?}", types(&events));
    assert_eq!(added[1]["data"]["option"]["amount_due"], json!("24"));
}

#[tokio::test]
async fn add_option_is_refused_on_a_closed_invoice_and_changes_nothing() {
    let (node, mut payer, _anvil, daemon) = setup().await;
    let mut admin = daemon.admin().await;
    let expired = admin
        .invoice(json!({"amount": "0.01", "expires_in": 1}))
        .await;
    let expired = admin.wait_status(&id(&expired), "EXPIRED").await;
    let completed = common::completed_invoice(&mut admin, &node, &mut payer, "0.01").await;
    let voided = admin.invoice(json!({"amount": "0.01"})).await;
    let voided = admin.ok("invoice.void", json!({"id": id(&voided)})).await;
    // Open mode: its one option's amount is set by the first payment.
    let open = admin.invoice(json!({"mode": "open"})).await;
    for inv in [expired, completed, voided, open] {
        let id = id(&inv);
        let before = admin.ok("invoice.get", json!({"id": id})).await;
        let e = refused(
            &mut admin,
            "invoice.add_option",
            json!({"id": id, "chain": "anvil", "asset": "USDT", "amount": "5"}),
        )
        .await;
        assert_eq!(e["code"], json!(1002), "{} {e}", inv["status"]);
        let after = admin.ok("invoice.get", json!({"id": id})).await;
        assert_eq!(before, after);
        let events = types(&admin.events_of(&id).await);
        assert!(!events.contains(&"invoice.option_added".to_string()));
    }
}

#[tokio::test]
async fn an_invoice_does_not_expire_while_one_of_its_chains_is_not_followed() {
    let (_node, _payer, anvil, daemon) = setup().await;
    let mut admin = daemon.admin().await;
    let inv = create(
        &mut admin,
        json!({"options": [
            {"chain": "regtest", "asset": "BTC", "amount": "0.01"},
            {"chain": "anvil", "asset": "USDT", "amount": "5"},
        ], "expires_in": 2}),
    )
    .await;
    let id = id(&inv);
    let expires_at = inv["expires_at"].as_i64().unwrap();
    anvil.pause();
    // Bitcoin is followed to its tip well past expires_at; anvil answers nothing.
    admin
        .wait_chain("regtest polled after expiry", |c| {
            c["last_poll_at"].as_i64() > Some(expires_at + 1) && c["lag_blocks"] == json!(0)
        })
        .await;
    assert_eq!(
        admin.ok("invoice.get", json!({"id": id})).await["status"],
        json!("PENDING")
    );
    anvil.resume();
    let expired = admin.wait_status(&id, "EXPIRED").await;
    assert_eq!(expired["reason"], json!("unpaid"));
}

#[tokio::test]
async fn a_reorg_on_one_chain_reverts_a_completed_two_chain_invoice() {
    let (node, mut payer, anvil, daemon) = setup().await;
    let mut admin = daemon.admin().await;
    let inv = create(
        &mut admin,
        json!({"options": [
            {"chain": "regtest", "asset": "BTC", "amount": "0.02"},
            {"chain": "anvil", "asset": "USDT", "amount": "50"},
        ]}),
    )
    .await;
    let id = id(&inv);
    payer.pay(&node, &address(&inv, "BTC"), "0.01", false).await;
    node.mine_to(1, &payer.address.to_string()).await;
    admin.wait_status(&id, "PARTIAL").await;
    let snapshot = anvil.rpc("evm_snapshot", json!([])).await;
    anvil
        .pay_token(USDT, &address(&inv, "USDT"), usdt(25))
        .await;
    admin.wait_status(&id, "COMPLETED").await;
    // anvil's chain without the USDT payment, longer than the one with it.
    anvil.rpc("evm_revert", json!([snapshot])).await;
    anvil.mine(5).await;
    let back = admin
        .wait_invoice(&id, "the USDT payment dropped", |i| {
            i["payments"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["asset"] == json!("USDT") && p["state"] == json!("DROPPED"))
        })
        .await;
    assert_eq!(back["status"], json!("PARTIAL"));
    assert_eq!(back["paid_ratio"], json!("0.5"));
    let events = types(&admin.events_of(&id).await);
    assert!(
        events.contains(&"invoice.reverted".to_string()),
        "{events:?}"
    );
}

#[tokio::test]
async fn bad_options_name_the_field_and_create_nothing() {
    let (_node, _payer, _anvil, daemon) = setup().await;
    let mut admin = daemon.admin().await;
    let btc = json!({"chain": "regtest", "asset": "BTC", "amount": "0.01"});
    let seventeen: Vec<Value> = (0..17)
        .map(|i| json!({"chain": "regtest", "asset": format!("X{i}"), "amount": "1"}))
        .collect();
    let cases = [
        (
            json!({"options": [{"chain": "litecoin", "amount": "1"}]}),
            1003,
            None,
        ),
        (
            json!({"options": [btc, {"chain": "anvil", "asset": "SHIB", "amount": "1"}]}),
            -32602,
            Some("options"),
        ),
        (json!({"options": [btc, btc]}), -32602, Some("options")),
        (json!({"options": seventeen}), -32602, Some("options")),
        (json!({"options": []}), -32602, Some("options")),
        (
            json!({"options": [{"chain": "anvil", "asset": "USDT", "amount": "1.0000001"}]}),
            -32602,
            Some("options"),
        ),
        (
            json!({"chain": "regtest", "amount": "1", "options": [btc]}),
            -32602,
            Some("options"),
        ),
        (json!({}), -32602, Some("price")),
        (
            json!({"price": {"amount": "ten", "currency": "USD"}}),
            -32602,
            Some("price"),
        ),
        (
            json!({"mode": "open", "options": [
                {"chain": "regtest"}, {"chain": "anvil", "asset": "USDT"}]}),
            -32602,
            Some("mode"),
        ),
    ];
    for (params, code, field) in cases {
        let e = refused(&mut admin, "invoice.create", params.clone()).await;
        assert_eq!(e["code"], json!(code), "{params}: {e}");
        if let Some(f) = field {
            assert_eq!(e["data"]["field"], json!(f), "{params}: {e}");
        }
    }
    let e = refused(
        &mut admin,
        "invoice.add_option",
        json!({"id": "nope", "chain": "anvil", "asset": "USDT", "amount": "1"}),
    )
    .await;
    assert_eq!(e["code"], json!(1001), "{e}");
    let listed = admin.ok("invoice.list", json!({})).await;
    assert_eq!(listed["invoices"], json!([]));
    assert_eq!(admin.count_events("invoice.created").await, 0);
}

#[tokio::test]
async fn invoice_list_by_chain_matches_any_option() {
    let (_node, _payer, _anvil, daemon) = setup().await;
    let mut admin = daemon.admin().await;
    let both = create(
        &mut admin,
        json!({"options": [
            {"chain": "regtest", "asset": "BTC", "amount": "0.01"},
            {"chain": "anvil", "asset": "USDT", "amount": "5"},
        ]}),
    )
    .await;
    let btc_only = admin.invoice(json!({"amount": "0.01"})).await;
    let ids =
        |v: &Value| -> Vec<String> { v["invoices"].as_array().unwrap().iter().map(id).collect() };
    let on_anvil = admin.ok("invoice.list", json!({"chain": "anvil"})).await;
    assert_eq!(ids(&on_anvil), [id(&both)]);
    let on_regtest = admin.ok("invoice.list", json!({"chain": "regtest"})).await;
    assert_eq!(ids(&on_regtest), [id(&btc_only), id(&both)]);
}

#[tokio::test]
async fn settlectl_creates_with_options_and_a_price_and_adds_one() {
    let (_node, _payer, _anvil, daemon) = setup().await;
    let out = daemon.ctl(
        None,
        &[
            "invoice",
            "create",
            "--option",
            "regtest:BTC:0.01",
            "--option",
            "anvil:USDT:25",
            "--price",
            "24.99:USD",
            "--json",
        ],
    );
    let inv: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(inv["options"].as_array().unwrap().len(), 2, "{inv:#}");
    assert_eq!(inv["price"], json!({"amount": "24.99", "currency": "USD"}));
    // Readable: each option on its own row, with its address and what remains.
    let shown = daemon.ctl(None, &["invoice", "get", &id(&inv)]);
    assert!(shown.contains("24.99 USD"), "{shown}");
    for (row, asset) in [("regtest BTC", "BTC"), ("anvil USDT", "USDT")] {
        let line = shown
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no {row} row: {shown}"));
        assert!(line.contains(&address(&inv, asset)), "{line}");
    }
    assert!(shown.contains("REMAINING"), "{shown}");

    let later = daemon.ctl(None, &["invoice", "create", "--price", "10:EUR", "--json"]);
    let later: Value = serde_json::from_str(&later).unwrap();
    let added = daemon.ctl(
        None,
        &[
            "invoice",
            "add-option",
            &id(&later),
            "--chain",
            "anvil",
            "--asset",
            "USDT",
            "--amount",
            "11",
            "--expires-in",
            "2700",
            "--json",
        ],
    );
    let added: Value = serde_json::from_str(&added).unwrap();
    assert_eq!(added["amount_due"], json!("11"));
    assert!(added["address"].as_str().unwrap().starts_with("0x"));
    let listed = daemon.ctl(None, &["invoice", "list"]);
    assert!(listed.contains("regtest,anvil"), "{listed}");
}
