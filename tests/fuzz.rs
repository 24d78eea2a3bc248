//! The admin socket under 10,000 mutated JSON-RPC lines: every line gets a
//! well-formed answer (or none, for a notification), the daemon stays up, and a line
//! answered only with errors creates or changes nothing (no event follows it).

mod common;

use common::{Daemon, Node, other_address};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

const LINES: usize = 10_000;

/// Valid requests of every method that reads or writes (not `daemon.backup`, which
/// writes where it is told, nor `events.subscribe`, which keeps pushing).
fn seeds(invoice: &str, deposit: &str) -> Vec<Value> {
    let r = |method: &str, params: Value| json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    vec![
        r(
            "invoice.create",
            json!({"chain": "regtest", "asset": "BTC", "amount": "0.0015", "order_id": "o-1", "metadata": {"a": [1, 2]}, "expires_in": 900}),
        ),
        r(
            "invoice.create",
            json!({"chain": "regtest", "asset": "BTC", "mode": "open", "confirmations": 2, "underpaid_tolerance": "0.0001", "amount": "0.5"}),
        ),
        r(
            "invoice.create",
            json!({"price": {"amount": "24.99", "currency": "USD"}, "idempotency_key": "k-1"}),
        ),
        r(
            "invoice.create",
            json!({"options": [{"chain": "regtest", "asset": "BTC", "amount": "0.1"}], "callback_url": "http://127.0.0.1:9/h"}),
        ),
        r(
            "invoice.add_option",
            json!({"id": invoice, "chain": "regtest", "asset": "BTC", "amount": "0.2", "expires_in": 600}),
        ),
        r("invoice.get", json!({"id": invoice})),
        r(
            "invoice.list",
            json!({"status": "PENDING", "limit": 10, "chain": "regtest"}),
        ),
        r("invoice.void", json!({"id": invoice})),
        r("invoice.mark_completed", json!({"id": invoice})),
        r("invoice.mark_refunded", json!({"id": invoice})),
        r("invoice.extend", json!({"id": invoice, "expires_in": 3600})),
        r("invoice.rescan", json!({"id": invoice, "from_height": 0})),
        r(
            "deposit_address.create",
            json!({"chain": "regtest", "client_id": "c-1", "label": "x", "metadata": {}}),
        ),
        r("deposit_address.get", json!({"id": deposit})),
        r(
            "deposit_address.list",
            json!({"chain": "regtest", "client_id": "c-1", "limit": 5}),
        ),
        r(
            "deposit_address.deposits",
            json!({"id": deposit, "limit": 5}),
        ),
        r("deposit_address.close", json!({"id": deposit})),
        r(
            "deposit_address.rescan",
            json!({"id": deposit, "from_height": 0}),
        ),
        r("chain.status", json!({"chain": "regtest"})),
        r(
            "events.list",
            json!({"after_seq": 0, "limit": 3, "invoice_id": invoice}),
        ),
        r("daemon.status", json!({})),
        r("webhook.deliveries", json!({"invoice_id": invoice})),
        r(
            "webhook.redeliver",
            json!({"event_id": "00000000-0000-0000-0000-000000000000"}),
        ),
    ]
}

/// A value of another type, or an extreme one.
fn junk(rng: &mut StdRng) -> Value {
    match rng.random_range(0..14) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(-1),
        3 => json!(u64::MAX),
        4 => json!(i64::MIN),
        5 => json!(1.5e300),
        6 => json!(""),
        7 => json!("x".repeat(rng.random_range(1..70_000))),
        8 => json!([]),
        9 => json!({}),
        10 => json!("0.000000000000000000001"),
        11 => json!("-0.5"),
        12 => json!("\u{0}\u{202e}é😀"),
        _ => json!([1, "a", null, {"b": []}]),
    }
}

/// Replaces, removes or adds a field somewhere in `v` (the envelope or the params).
fn mutate_value(rng: &mut StdRng, v: &mut Value) {
    let target = match v {
        Value::Object(o)
            if rng.random_bool(0.6) && o.get("params").is_some_and(Value::is_object) =>
        {
            o.get_mut("params").unwrap()
        }
        other => other,
    };
    let Value::Object(map) = target else {
        *target = junk(rng);
        return;
    };
    let keys: Vec<String> = map.keys().cloned().collect();
    match rng.random_range(0..4) {
        0 if !keys.is_empty() => {
            let k = &keys[rng.random_range(0..keys.len())];
            map.insert(k.clone(), junk(rng));
        }
        1 if !keys.is_empty() => {
            let k = &keys[rng.random_range(0..keys.len())];
            map.remove(k);
        }
        2 => {
            map.insert(format!("extra_{}", rng.random_range(0..9)), junk(rng));
        }
        _ if !keys.is_empty() => {
            // An option's or a nested object's field.
            let k = &keys[rng.random_range(0..keys.len())];
            if let Some(Value::Array(items)) = map.get_mut(k)
                && let Some(Value::Object(first)) = items.first_mut()
            {
                let fk: Vec<String> = first.keys().cloned().collect();
                if let Some(f) = fk.first() {
                    first.insert(f.clone(), junk(rng));
                }
            } else {
                map.insert(k.clone(), junk(rng));
            }
        }
        _ => *target = Value::Object(Map::new()),
    }
}

/// One fuzzed line, as bytes (it may not be UTF-8).
fn line(rng: &mut StdRng, seeds: &[Value]) -> Vec<u8> {
    let mut req = seeds[rng.random_range(0..seeds.len())].clone();
    req["id"] = json!(rng.random_range(0..1_000_000));
    match rng.random_range(0..12) {
        0..=5 => {
            for _ in 0..rng.random_range(1..4) {
                mutate_value(rng, &mut req);
            }
            req.to_string().into_bytes()
        }
        6 => {
            // A batch, some of it junk.
            let items: Vec<Value> = (0..rng.random_range(1..6))
                .map(|_| {
                    let mut r = seeds[rng.random_range(0..seeds.len())].clone();
                    r["id"] = json!(rng.random_range(0..1_000_000));
                    if rng.random_bool(0.7) {
                        mutate_value(rng, &mut r);
                    }
                    r
                })
                .collect();
            json!(items).to_string().into_bytes()
        }
        7 => {
            // Deep nesting.
            let depth = rng.random_range(100..20_000);
            let mut s = "[".repeat(depth);
            s.push_str(&"]".repeat(depth));
            s.into_bytes()
        }
        8 => {
            // Huge numbers written out.
            let digits = "9".repeat(rng.random_range(20..400));
            let mut s = req.to_string();
            s = s.replacen("\"id\":", &format!("\"id\":{digits},\"x\":"), 1);
            s.into_bytes()
        }
        9 => {
            // Invalid UTF-8 inside or around a valid request.
            let mut b = req.to_string().into_bytes();
            let at = rng.random_range(0..b.len());
            b.insert(at, [0xff, 0xc3, 0x80, 0xfe][rng.random_range(0..4)]);
            b
        }
        10 => {
            // Cut short, or a byte flipped.
            let mut b = req.to_string().into_bytes();
            let at = rng.random_range(1..b.len());
            if rng.random_bool(0.5) {
                b.truncate(at);
            } else {
                b[at] = rng.random_range(0x20..0x7f);
            }
            b
        }
        _ => (0..rng.random_range(1..200))
            .map(|_| rng.random_range(0x01..=0xffu8))
            .filter(|b| *b != b'\n')
            .collect(),
    }
}

/// Whether the line holds a request without an `id`: a notification, which may do its
/// work unanswered (a batch's other items may still be refused).
fn holds_notification(bytes: &[u8]) -> bool {
    let is_note = |v: &Value| v.as_object().is_some_and(|o| !o.contains_key("id"));
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Array(items)) => items.iter().any(is_note),
        Ok(one) => is_note(&one),
        Err(_) => false,
    }
}

/// A well-formed JSON-RPC 2.0 answer; returns whether it is a success.
fn check_answer(a: &Value, what: &str) -> bool {
    assert_eq!(a["jsonrpc"], json!("2.0"), "no jsonrpc in {a} for {what}");
    assert!(a.get("id").is_some(), "no id in {a} for {what}");
    match (a.get("result"), a.get("error")) {
        (Some(_), None) => true,
        (None, Some(e)) => {
            assert!(
                e["code"].is_i64(),
                "error without an integer code: {a} for {what}"
            );
            assert!(
                e["message"].is_string(),
                "error without a message: {a} for {what}"
            );
            false
        }
        _ => panic!("neither result nor error, or both: {a} for {what}"),
    }
}

#[tokio::test]
async fn ten_thousand_mutated_lines_each_get_an_answer_and_errors_change_nothing() {
    let node = Node::start().await;
    node.mine_to(1, &other_address()).await;
    let daemon = Daemon::start(&node, "").await;
    let mut admin = daemon.admin().await;
    let inv = admin
        .invoice(json!({"asset": "BTC", "amount": "0.001"}))
        .await;
    let dep = admin
        .ok(
            "deposit_address.create",
            json!({"chain": "regtest", "client_id": "seed"}),
        )
        .await;
    let seeds = seeds(inv["id"].as_str().unwrap(), dep["id"].as_str().unwrap());

    let seed: u64 = std::env::var("SETTLED_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261202);
    eprintln!("fuzz seed {seed} (SETTLED_FUZZ_SEED replays it)");
    let mut rng = StdRng::seed_from_u64(seed);

    let (r, mut w) = UnixStream::connect(&daemon.socket)
        .await
        .unwrap()
        .into_split();
    let mut reader = BufReader::new(r);
    let mut last_seq = admin
        .ok("events.list", json!({"after_seq": 0, "limit": 1000}))
        .await["last_seq"]
        .as_i64()
        .unwrap();
    let (mut errors_only, mut changed) = (0, 0);
    for n in 0..LINES {
        let bytes = line(&mut rng, &seeds);
        let what = format!(
            "line {n}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
        );
        // The sentinel after each line: its answer ends the line's, and tells whether
        // any event was written since.
        let sentinel = json!({"jsonrpc": "2.0", "id": format!("sentinel-{n}"), "method": "events.list",
            "params": {"after_seq": last_seq, "limit": 1000}});
        w.write_all(&bytes).await.unwrap();
        w.write_all(b"\n").await.unwrap();
        w.write_all(format!("{sentinel}\n").as_bytes())
            .await
            .unwrap();
        let (mut answers, mut successes) = (0, 0);
        let events = loop {
            let mut text = String::new();
            let got = tokio::time::timeout(common::WAIT, reader.read_line(&mut text))
                .await
                .unwrap_or_else(|_| panic!("no answer in time to {what}"))
                .unwrap();
            assert!(got > 0, "the daemon closed the connection after {what}");
            let msg: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {text} for {what}"));
            if msg["id"] == json!(format!("sentinel-{n}")) {
                assert!(check_answer(&msg, &what));
                break msg["result"]["events"].as_array().unwrap().clone();
            }
            let items = match msg {
                Value::Array(items) => items,
                one => vec![one],
            };
            for a in &items {
                answers += 1;
                successes += usize::from(check_answer(a, &what));
            }
        };
        if answers > 0 && successes == 0 && !holds_notification(&bytes) {
            errors_only += 1;
            assert!(events.is_empty(), "{what} was refused but wrote {events:?}");
        }
        if let Some(e) = events.last() {
            changed += 1;
            last_seq = e["seq"].as_i64().unwrap();
        }
    }
    eprintln!("{LINES} lines: {errors_only} refused outright, {changed} changed something");
    assert!(errors_only > LINES / 2, "most mutated lines are invalid");
    // Still up, and every invoice it holds has its creation event.
    let status = admin.ok("daemon.status", json!({})).await;
    assert!(status["uptime_s"].is_u64());
    let created = admin.count_events("invoice.created").await;
    let listed = admin.count_invoices().await;
    assert_eq!(
        listed, created,
        "invoices without their invoice.created event"
    );
}
