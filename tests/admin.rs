//! The admin socket: framing, errors, bad input, decisions, events.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use serde_json::{Value, json};

async fn error_of(admin: &mut Admin, method: &str, params: Value) -> Value {
    admin
        .call(method, params)
        .await
        .expect_err("the call must fail")
}

#[tokio::test]
async fn bad_input_is_refused_with_the_field_and_changes_nothing() {
    let (_node, _payer, daemon) = setup("").await;
    let mut admin = daemon.admin().await;

    for (params, field) in [
        (
            json!({"chain": "regtest", "amount": "0.000000001"}),
            "amount",
        ),
        (json!({"chain": "regtest", "amount": 0.1}), "amount"),
        (json!({"chain": "regtest", "amount": "-1"}), "amount"),
        (json!({"chain": "regtest", "amount": "0"}), "amount"),
        (json!({"chain": "regtest"}), "amount"),
        (
            json!({"chain": "regtest", "amount": "1", "title": "x".repeat(51)}),
            "title",
        ),
        (
            json!({"chain": "regtest", "amount": "1", "description": "x".repeat(301)}),
            "description",
        ),
        (
            json!({"chain": "regtest", "amount": "1", "metadata": [1]}),
            "metadata",
        ),
        (
            json!({"chain": "regtest", "amount": "1", "metadata": {"x": "y".repeat(17000)}}),
            "metadata",
        ),
        (
            json!({"chain": "regtest", "amount": "1", "mode": "weird"}),
            "mode",
        ),
        (
            json!({"chain": "regtest", "amount": "1", "asset": "ETH"}),
            "asset",
        ),
        (
            json!({"chain": "regtest", "amount": "1", "expires_in": -5}),
            "expires_in",
        ),
        (
            json!({"chain": "regtest", "amount": "1", "underpaid_tolerance": "2"}),
            "underpaid_tolerance",
        ),
        (
            json!({"chain": "regtest", "amount": "1", "callback_url": "ftp://x"}),
            "callback_url",
        ),
        (
            json!({"chain": "regtest", "amount": "1", "colour": "red"}),
            "colour",
        ),
        (
            json!({"chain": "regtest", "mode": "open", "amount": "1"}),
            "amount",
        ),
    ] {
        let e = error_of(&mut admin, "invoice.create", params.clone()).await;
        assert_eq!(e["code"], json!(-32602), "{params}: {e}");
        assert_eq!(e["data"]["field"], json!(field), "{params}: {e}");
        assert!(e["data"]["reason"].is_string(), "{e}");
    }
    let e = error_of(
        &mut admin,
        "invoice.create",
        json!({"chain": "dogecoin", "amount": "1"}),
    )
    .await;
    assert_eq!(e["code"], json!(1003));

    // Nothing was created, and no address was used up.
    let list = admin.ok("invoice.list", json!({})).await;
    assert_eq!(list["invoices"], json!([]));
    let inv = admin.invoice(json!({"amount": "1"})).await;
    assert_eq!(inv["derivation_index"], json!(0));

    let e = error_of(
        &mut admin,
        "invoice.get",
        json!({"id": "00000000-0000-0000-0000-000000000000"}),
    )
    .await;
    assert_eq!(e["code"], json!(1001));
    let e = error_of(&mut admin, "invoice.get", json!({})).await;
    assert_eq!(e["data"]["field"], json!("id"));
    let e = error_of(&mut admin, "invoice.list", json!({"limit": 1001})).await;
    assert_eq!(e["data"]["field"], json!("limit"));
    let e = error_of(&mut admin, "nope.nothing", json!({})).await;
    assert_eq!(e["code"], json!(-32601));
}

#[tokio::test]
async fn framing_errors_and_huge_lines_never_disturb_others() {
    let (_node, _payer, daemon) = setup("").await;
    let mut a = daemon.admin().await;
    let mut b = daemon.admin().await;

    a.send_line("this is not json").await;
    assert_eq!(a.read().await.unwrap()["error"]["code"], json!(-32700));
    a.send_line(r#"{"id": 1, "method": "daemon.status"}"#).await;
    assert_eq!(a.read().await.unwrap()["error"]["code"], json!(-32600));
    a.send_line("[]").await;
    assert_eq!(a.read().await.unwrap()["error"]["code"], json!(-32600));
    // A batch gets an array of answers, in order.
    a.send_line(
        r#"[{"jsonrpc":"2.0","id":"x","method":"daemon.status"},{"jsonrpc":"2.0","id":"y","method":"nope"}]"#,
    )
    .await;
    let batch = a.read().await.unwrap();
    assert_eq!(batch[0]["id"], "x");
    assert!(batch[0]["result"]["version"].is_string());
    assert_eq!(batch[1]["error"]["code"], json!(-32601));

    // 2 MiB on one line: refused, the connection closed; the other client is served.
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"daemon.status","pad":"{}"}}"#,
        "x".repeat(2 << 20)
    );
    let mut c = daemon.admin().await;
    let _ = c.try_send_line(&huge).await;
    // `read` fails the test if nothing comes in time: leaving the loop means closed.
    while let Some(msg) = c.read().await {
        assert_eq!(msg["error"]["code"], json!(-32700));
    }
    assert!(b.ok("daemon.status", json!({})).await["uptime_s"].is_u64());
    assert!(a.ok("daemon.status", json!({})).await["uptime_s"].is_u64());

    let mode = std::fs::metadata(&daemon.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660);
}

#[tokio::test]
async fn idempotent_create() {
    let (_node, _payer, daemon) = setup("").await;
    let mut admin = daemon.admin().await;
    let p = json!({"chain": "regtest", "amount": "0.3", "idempotency_key": "k1", "order_id": "o1"});
    let first = admin.ok("invoice.create", p.clone()).await;
    let again = admin.ok("invoice.create", p).await;
    assert_eq!(first["id"], again["id"]);
    let e = error_of(
        &mut admin,
        "invoice.create",
        json!({"chain": "regtest", "amount": "0.4", "idempotency_key": "k1", "order_id": "o1"}),
    )
    .await;
    assert_eq!(e["code"], json!(1004));
    assert_eq!(
        admin.ok("invoice.list", json!({})).await["invoices"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn backend_decisions_and_their_limits() {
    let (node, mut payer, daemon) = setup("").await;
    let mut admin = daemon.admin().await;
    let a = admin.invoice(json!({"amount": "0.1"})).await;
    let id = a["id"].as_str().unwrap();
    let v = admin.ok("invoice.void", json!({"id": id})).await;
    assert_eq!(v["status"], "VOIDED");
    let e = error_of(&mut admin, "invoice.mark_completed", json!({"id": id})).await;
    assert_eq!(e["code"], json!(1002));

    // A payment to a voided invoice is still recorded and reported.
    payer
        .pay(&node, a["address"].as_str().unwrap(), "0.1", false)
        .await;
    let v = admin
        .wait_invoice(id, "the payment recorded", |i| {
            i["payments"].as_array().is_some_and(|p| !p.is_empty())
        })
        .await;
    assert_eq!(v["status"], "VOIDED");

    let b = admin.invoice(json!({"amount": "0.1"})).await;
    let bid = b["id"].as_str().unwrap();
    payer
        .pay(&node, b["address"].as_str().unwrap(), "0.05", false)
        .await;
    admin.wait_status(bid, "PARTIAL").await;
    let m = admin.ok("invoice.mark_completed", json!({"id": bid})).await;
    assert_eq!(
        (m["status"].clone(), m["marked"].clone()),
        (json!("COMPLETED"), json!(true))
    );
    let e = error_of(&mut admin, "invoice.void", json!({"id": bid})).await;
    assert_eq!(e["code"], json!(1002));
    let r = admin.ok("invoice.mark_refunded", json!({"id": bid})).await;
    assert_eq!(r["status"], "REFUNDED");

    let c = admin
        .invoice(json!({"amount": "0.1", "expires_in": 60}))
        .await;
    let x = admin
        .ok("invoice.extend", json!({"id": c["id"], "expires_in": 3600}))
        .await;
    assert!(x["expires_at"].as_i64().unwrap() >= c["expires_at"].as_i64().unwrap() + 3000);
}

#[tokio::test]
async fn events_subscribe_skips_nothing_between_backlog_and_live() {
    let (node, mut payer, daemon) = setup("").await;
    let mut admin = daemon.admin().await;
    for _ in 0..3 {
        admin.invoice(json!({"amount": "0.1"})).await;
    }
    let mut sub = daemon.admin().await;
    let r = sub.ok("events.subscribe", json!({"after_seq": 1})).await;
    assert_eq!(r, json!({"subscribed": true}));
    // Live events while the backlog is being sent.
    completed_invoice(&mut admin, &node, &mut payer, "0.1").await;

    let all = admin.ok("events.list", json!({"after_seq": 1})).await;
    let want: Vec<i64> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    let mut got = Vec::new();
    while got.len() < want.len() {
        let n = sub.read().await.expect("an event");
        assert_eq!(n["method"], "event");
        got.push(n["params"]["seq"].as_i64().unwrap());
    }
    assert_eq!(got, want);
    assert_eq!(want.first(), Some(&2));

    // events.list pages until empty.
    let page = admin
        .ok("events.list", json!({"after_seq": 0, "limit": 2}))
        .await;
    assert_eq!(page["last_seq"], json!(2));
    let last = want.last().unwrap();
    let empty = admin.ok("events.list", json!({"after_seq": last})).await;
    assert_eq!(empty, json!({"events": [], "last_seq": last}));
}

#[tokio::test]
async fn list_filters_and_pages_newest_first() {
    let (_node, _payer, daemon) = setup("").await;
    let mut admin = daemon.admin().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let inv = admin
            .invoice(json!({"amount": "0.1", "order_id": format!("o{}", i % 2)}))
            .await;
        ids.push(inv["id"].clone());
    }
    let p1 = admin.ok("invoice.list", json!({"limit": 3})).await;
    let p2 = admin
        .ok(
            "invoice.list",
            json!({"limit": 3, "cursor": p1["next_cursor"]}),
        )
        .await;
    let got: Vec<Value> = p1["invoices"]
        .as_array()
        .unwrap()
        .iter()
        .chain(p2["invoices"].as_array().unwrap())
        .map(|i| i["id"].clone())
        .collect();
    ids.reverse();
    assert_eq!(got, ids);
    assert_eq!(p2["next_cursor"], json!(null));
    let o1 = admin.ok("invoice.list", json!({"order_id": "o1"})).await;
    assert_eq!(o1["invoices"].as_array().unwrap().len(), 2);
    let none = admin
        .ok("invoice.list", json!({"status": "COMPLETED"}))
        .await;
    assert_eq!(none["invoices"], json!([]));
}

/// Creates from many clients at once, some in batches, share commits; every one that
/// was answered is on disk, however soon after its answer the daemon is killed.
#[tokio::test]
async fn concurrent_creates_are_all_durable_across_a_sigkill_right_after_their_answers() {
    let (_node, _payer, mut daemon) = setup("").await;
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(daemon.admin().await);
    }
    let created = futures_util::future::join_all(clients.iter_mut().enumerate().map(
        |(c, admin)| async move {
            let mut ids = Vec::new();
            for round in 0..10 {
                if c % 2 == 0 {
                    let id = admin.invoice(json!({"amount": "0.01"})).await["id"].clone();
                    ids.push(id);
                    continue;
                }
                // A batch of 10 on one line.
                let batch: Vec<Value> = (0..10)
                    .map(|i| {
                        json!({"jsonrpc": "2.0", "id": round * 10 + i, "method": "invoice.create",
                               "params": {"chain": "regtest", "amount": "0.01"}})
                    })
                    .collect();
                admin.send_line(&Value::Array(batch).to_string()).await;
                let answers = admin.read().await.unwrap();
                let answers = answers.as_array().unwrap();
                assert_eq!(answers.len(), 10, "{answers:?}");
                for (i, a) in answers.iter().enumerate() {
                    // In the batch's order.
                    assert_eq!(a["id"], json!(round * 10 + i as u64), "{a}");
                    ids.push(a["result"]["id"].clone());
                }
            }
            ids
        },
    ))
    .await;
    daemon.kill();
    let ids: Vec<Value> = created.into_iter().flatten().collect();
    assert_eq!(ids.len(), 4 * 10 + 4 * 100);
    assert!(ids.iter().all(Value::is_string));

    daemon.restart().await;
    let mut admin = daemon.admin().await;
    for id in &ids {
        let got = admin.ok("invoice.get", json!({"id": id})).await;
        assert_eq!(got["status"], "PENDING");
    }
    // Every one its own address.
    let listed = admin.ok("invoice.list", json!({"limit": 1000})).await;
    let mut addresses: Vec<&str> = listed["invoices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["address"].as_str().unwrap())
        .collect();
    assert_eq!(addresses.len(), ids.len());
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), ids.len());
}

#[tokio::test]
async fn what_create_answers_is_what_get_reads_back() {
    let daemon = Daemon::start_offline("").await;
    let mut admin = daemon.admin().await;
    for params in [
        json!({"chain": "regtest", "amount": "0.0015", "underpaid_tolerance": "0.0001",
               "confirmations": 2, "expires_in": 600, "order_id": "o-1", "client_id": "c-1",
               "email": "a@b.c", "title": "Plan", "description": "A year",
               "metadata": {"k": [1, "x"]}, "price": {"amount": "24.99", "currency": "USD"}}),
        json!({"chain": "regtest", "mode": "open", "expires_in": null}),
        json!({"price": {"amount": "5", "currency": "EUR"}}),
    ] {
        let made = admin.ok("invoice.create", params.clone()).await;
        let got = admin.ok("invoice.get", json!({"id": made["id"]})).await;
        assert_eq!(got, made, "{params}");
    }
}
