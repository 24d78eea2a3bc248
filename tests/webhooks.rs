//! Webhooks against a receiver on loopback: signed, retried, ordered, kept across
//! restarts and SIGKILL, and redelivered on request.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::receiver::{Receiver, Request};
use common::{Admin, Daemon, unix_now};
use serde_json::{Value, json};

/// The secret as the file holds it, and as the HMAC key (trimmed).
const SECRET_FILE: &str = "  test-secret\n";
const SECRET: &[u8] = b"test-secret";

struct Setup {
    daemon: Daemon,
    _secret: tempfile::TempDir,
}

/// settled with webhooks on (`webhook` holds more `[webhook]` lines) and a Bitcoin
/// chain whose node is away: invoices and the backend's decisions still make events.
async fn start(webhook: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let secret = common::webhook_secret(dir.path(), SECRET_FILE);
    let daemon = Daemon::start_offline(&format!(
        "[webhook]\nsecret_file = \"{}\"\nfirst_retry_ms = 100\n{webhook}",
        secret.display()
    ))
    .await;
    Setup {
        daemon,
        _secret: dir,
    }
}

/// An invoice with three events: created, completed and refunded by the backend.
async fn three_events(admin: &mut Admin, extra: Value) -> String {
    let mut p = json!({"amount": "0.1"});
    p.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let id = admin.invoice(p).await["id"].as_str().unwrap().to_string();
    admin
        .ok("invoice.mark_completed", json!({ "id": id }))
        .await;
    admin.ok("invoice.mark_refunded", json!({ "id": id })).await;
    id
}

/// A new invoice's first event (`invoice.created`).
async fn created(admin: &mut Admin, params: Value) -> Value {
    let inv = admin.invoice(params).await;
    admin.events_of(inv["id"].as_str().unwrap()).await[0].clone()
}

/// The delivery of `event_seq`, once `pred` holds for it.
async fn wait_delivery(admin: &mut Admin, event_seq: i64, pred: impl Fn(&Value) -> bool) -> Value {
    let start = std::time::Instant::now();
    loop {
        let r = admin.ok("webhook.deliveries", json!({"limit": 1000})).await;
        let d = r["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["event_seq"] == json!(event_seq))
            .cloned();
        if let Some(d) = d.filter(|d| pred(d)) {
            return d;
        }
        assert!(
            start.elapsed() < common::WAIT,
            "timed out waiting for delivery of {event_seq}: {r:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn retried_until_accepted_with_the_same_event_id_and_a_valid_signature() {
    let receiver = Receiver::start().await;
    receiver.answer(|n, _| Some((if n < 2 { 500 } else { 200 }, Duration::ZERO)));
    let s = start(&format!("url = \"{}\"", receiver.url())).await;
    let mut admin = s.daemon.admin().await;
    let event = &created(&mut admin, json!({"amount": "0.1"})).await;
    let seq = event["seq"].as_i64().unwrap();
    let d = wait_delivery(&mut admin, seq, |d| d["status"] == json!("delivered")).await;
    let statuses: Vec<Value> = d["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["http_status"].clone())
        .collect();
    assert_eq!(statuses, [json!(500), json!(500), json!(200)]);
    assert_eq!(d["attempts"][0]["body"], json!("answer 500"));
    assert_eq!(d["event_id"], event["id"]);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 3);
    for r in &requests {
        assert_eq!(r.event_id(), event["id"].as_str().unwrap());
        assert_eq!(r.event(), *event, "the body is the event object");
        assert_eq!(r.headers["content-type"], "application/json");
        let t = r.verify(SECRET);
        assert!((t - unix_now()).abs() < 60, "t={t}");
    }
    assert_eq!(
        admin.ok("daemon.status", json!({})).await["webhook_backlog"],
        json!(0)
    );
}

#[tokio::test]
async fn nothing_is_lost_while_the_receiver_is_down_and_settled_restarts() {
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let mut s = start(&format!("url = \"{url}\"")).await;
    let mut admin = s.daemon.admin().await;
    let a = three_events(&mut admin, json!({})).await;
    let b = three_events(&mut admin, json!({})).await;
    let first = admin.events_of(&a).await[0]["seq"].as_i64().unwrap();
    let d = wait_delivery(&mut admin, first, |d| {
        !d["attempts"].as_array().unwrap().is_empty()
    })
    .await;
    assert!(
        d["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("connect"),
        "{d}"
    );
    assert!(admin.ok("daemon.status", json!({})).await["webhook_backlog"].as_i64() >= Some(6));
    s.daemon.kill();
    let receiver = Receiver::start_on(port).await;
    s.daemon.spawn_unsynced().await;
    let mut admin = s.daemon.admin().await;
    let mut want = Vec::new();
    for id in [&a, &b] {
        for e in admin.events_of(id).await {
            want.push(e["id"].as_str().unwrap().to_string());
        }
    }
    let got = receiver
        .wait("every event delivered", |r| {
            want.iter().all(|w| r.iter().any(|q| q.event_id() == w))
        })
        .await;
    assert_eq!(got.len(), 6, "each once");
    common::wait_for("an empty backlog", || {
        let socket = s.daemon.socket.clone();
        async move {
            let mut a = Admin::connect(&socket).await.ok()?;
            let st = a.ok("daemon.status", json!({})).await;
            (st["webhook_backlog"] == json!(0)).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_delivery_in_flight_at_sigkill_is_sent_again_with_the_same_event_id() {
    let receiver = Receiver::start().await;
    // The first request is never answered.
    receiver.answer(|n, _| (n > 0).then_some((200, Duration::ZERO)));
    let mut s = start(&format!("url = \"{}\"", receiver.url())).await;
    let mut admin = s.daemon.admin().await;
    let event = created(&mut admin, json!({"amount": "0.1"})).await;
    receiver
        .wait("the request in flight", |r| r.len() == 1)
        .await;
    s.daemon.kill();
    s.daemon.spawn_unsynced().await;
    let got = receiver
        .wait("the same event again", |r| r.len() == 2)
        .await;
    assert_eq!(got[0].event_id(), got[1].event_id());
    assert_eq!(got[1].event_id(), event["id"].as_str().unwrap());
    let mut admin = s.daemon.admin().await;
    wait_delivery(&mut admin, event["seq"].as_i64().unwrap(), |d| {
        d["status"] == json!("delivered")
    })
    .await;
}

#[tokio::test]
async fn an_invoices_events_arrive_in_seq_order_under_failures() {
    let receiver = Receiver::start().await;
    // Every other request fails.
    receiver.answer(|n, _| Some((if n % 2 == 0 { 503 } else { 200 }, Duration::ZERO)));
    let s = start(&format!("url = \"{}\"", receiver.url())).await;
    let mut admin = s.daemon.admin().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(three_events(&mut admin, json!({})).await);
    }
    let total = 9;
    let got = receiver
        .wait("every event accepted once", |r| {
            let mut seen = std::collections::HashSet::new();
            r.iter().for_each(|q| {
                seen.insert(q.event_id().to_string());
            });
            seen.len() == total
        })
        .await;
    // Per invoice, requests never go back to an earlier event, nor skip ahead of one.
    let mut by_invoice: HashMap<String, Vec<i64>> = HashMap::new();
    for r in &got {
        let e = r.event();
        by_invoice
            .entry(e["invoice_id"].as_str().unwrap().to_string())
            .or_default()
            .push(e["seq"].as_i64().unwrap());
    }
    for id in &ids {
        let seqs = &by_invoice[id];
        assert!(seqs.windows(2).all(|w| w[0] <= w[1]), "{id}: {seqs:?}");
        let want: Vec<i64> = admin
            .events_of(id)
            .await
            .iter()
            .map(|e| e["seq"].as_i64().unwrap())
            .collect();
        let mut distinct = seqs.clone();
        distinct.dedup();
        assert_eq!(distinct, want, "{id}");
    }
}

#[tokio::test]
async fn a_slow_receiver_does_not_hold_back_another() {
    let slow = Receiver::start().await;
    slow.answer(|_, _| None);
    let fast = Receiver::start().await;
    let s = start(&format!("url = \"{}\"", fast.url())).await;
    let mut admin = s.daemon.admin().await;
    let a = admin
        .invoice(json!({"amount": "0.1", "callback_url": slow.url()}))
        .await;
    slow.wait("the slow receiver's request", |r| r.len() == 1)
        .await;
    let b = three_events(&mut admin, json!({})).await;
    let got = fast
        .wait("the other receiver's events", |r| r.len() == 3)
        .await;
    assert!(got.iter().all(|r| r.event()["invoice_id"] == json!(b)));
    assert_eq!(slow.requests()[0].event()["invoice_id"], a["id"]);
}

#[tokio::test]
async fn a_failed_delivery_is_redelivered_on_request() {
    let receiver = Receiver::start().await;
    receiver.answer(|_, _| Some((500, Duration::ZERO)));
    let s = start(&format!("url = \"{}\"\nretry_for = 2", receiver.url())).await;
    let mut admin = s.daemon.admin().await;
    let event = created(&mut admin, json!({"amount": "0.1"})).await;
    let seq = event["seq"].as_i64().unwrap();
    let failed = wait_delivery(&mut admin, seq, |d| d["status"] == json!("failed")).await;
    let tries = failed["attempts"].as_array().unwrap().len();
    assert!(tries >= 2, "{failed}");
    let listed = admin
        .ok("webhook.deliveries", json!({"status": "failed"}))
        .await;
    assert_eq!(listed["deliveries"][0]["id"], failed["id"]);
    receiver.answer(|_, _| Some((200, Duration::ZERO)));
    let queued = admin
        .ok("webhook.redeliver", json!({ "event_seq": seq }))
        .await;
    assert_eq!(queued["status"], json!("pending"));
    let done = wait_delivery(&mut admin, seq, |d| d["status"] == json!("delivered")).await;
    assert_eq!(done["attempts"].as_array().unwrap().len(), tries + 1);
    let last: &Request = &receiver.requests()[tries];
    assert_eq!(last.event_id(), event["id"].as_str().unwrap());
    last.verify(SECRET);
    // By delivery id too; an unknown one is not found.
    admin
        .ok("webhook.redeliver", json!({ "delivery_id": done["id"] }))
        .await;
    let e = admin
        .call("webhook.redeliver", json!({ "delivery_id": 999_999 }))
        .await
        .unwrap_err();
    assert_eq!(e["code"], json!(1001));
}

#[tokio::test]
async fn settlectl_lists_and_redelivers() {
    let receiver = Receiver::start().await;
    let s = start(&format!("url = \"{}\"", receiver.url())).await;
    let mut admin = s.daemon.admin().await;
    let seq = created(&mut admin, json!({"amount": "0.1"})).await["seq"]
        .as_i64()
        .unwrap();
    wait_delivery(&mut admin, seq, |d| d["status"] == json!("delivered")).await;
    let ctl = |args: &[&str]| s.daemon.ctl(None, args);
    let list = ctl(&["webhooks", "list", "--status", "delivered"]);
    assert!(
        list.contains("delivered") && list.contains(&receiver.url()),
        "{list}"
    );
    assert!(list.contains("HTTP 200"), "{list}");
    let again = ctl(&["webhooks", "redeliver", "--event-seq", &seq.to_string()]);
    assert!(again.starts_with("queued again"), "{again}");
    receiver.wait("the redelivery", |r| r.len() == 2).await;
    let json = ctl(&["--json", "webhooks", "list"]);
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["deliveries"][0]["event_seq"], json!(seq));
}

#[tokio::test]
async fn a_secret_others_can_read_is_refused_and_said_so() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("webhook.secret");
    std::fs::write(&secret, SECRET_FILE).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\ndata_dir = \"{}\"\nadmin_socket = \"{}\"\n\n[webhook]\nurl = \"http://127.0.0.1:1/\"\nsecret_file = \"{}\"\n",
            dir.path().join("data").display(),
            dir.path().join("admin.sock").display(),
            secret.display()
        ),
    )
    .unwrap();
    for args in [&["check-config", "--config"][..], &["--config"][..]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_settled"))
            .args(args)
            .arg(&config)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains("webhook.secret_file") && err.contains("readable by others"),
            "{err}"
        );
    }
    assert!(
        !dir.path().join("data").exists(),
        "the daemon did not start"
    );
    // Readable by its group only is fine.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_settled"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("test-secret"));
}

#[tokio::test]
async fn the_readmes_python_and_javascript_receivers_accept_real_deliveries() {
    let receiver = Receiver::start().await;
    let s = start(&format!("url = \"{}\"", receiver.url())).await;
    let mut admin = s.daemon.admin().await;
    admin
        .invoice(json!({"amount": "0.1", "metadata": {"note": "ünïcode"}}))
        .await;
    let r = receiver.wait("a delivery", |r| !r.is_empty()).await[0].clone();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/webhooks");
    let secret = s._secret.path().join("webhook.secret");
    for (program, script) in [("python3", "verify.py"), ("node", "verify.js")] {
        let run = |body: &str| {
            use std::io::Write;
            let mut child = std::process::Command::new(program)
                .arg(dir.join(script))
                .arg(&secret)
                .arg(&r.headers["settled-signature"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("{program}: {e}"));
            child
                .stdin
                .take()
                .unwrap()
                .write_all(body.as_bytes())
                .unwrap();
            child.wait().unwrap().success()
        };
        assert!(run(&r.body), "{script} accepts the delivery");
        assert!(
            !run(&r.body.replace("0.1", "0.2")),
            "{script} refuses a changed body"
        );
    }
}

#[tokio::test]
async fn timeouts_and_redirects_are_retried_and_answers_kept_to_1_kib() {
    let receiver = Receiver::start().await;
    // No answer (a timeout), a redirect, a 500 with a long answer, then 200.
    receiver.answer(|n, _| match n {
        0 => None,
        1 => Some((302, Duration::ZERO)),
        2 => Some((500, Duration::ZERO)),
        _ => Some((200, Duration::ZERO)),
    });
    let s = start(&format!("url = \"{}\"\ntimeout = 1", receiver.url())).await;
    let mut admin = s.daemon.admin().await;
    let seq = created(&mut admin, json!({"amount": "0.1"})).await["seq"]
        .as_i64()
        .unwrap();
    receiver.wait("the redirect", |r| r.len() == 2).await;
    receiver.answer_body(&"x".repeat(5000));
    let d = wait_delivery(&mut admin, seq, |d| d["status"] == json!("delivered")).await;
    let a = d["attempts"].as_array().unwrap();
    assert_eq!(a.len(), 4, "{d:#}");
    let timed_out = a[0]["error"].as_str().unwrap();
    assert!(
        timed_out.starts_with("timed out: no answer within 1 s"),
        "{timed_out}"
    );
    assert_eq!(a[1]["http_status"], json!(302));
    assert_eq!(a[2]["http_status"], json!(500));
    assert_eq!(a[2]["body"].as_str().unwrap().len(), 1024);
    // The redirect's target was never asked: every request came here.
    assert_eq!(receiver.requests().len(), 4);
}

#[tokio::test]
async fn an_attempt_that_cannot_connect_says_why() {
    let receiver = Receiver::start().await;
    let s = start("").await;
    let mut admin = s.daemon.admin().await;
    let refused = format!("http://127.0.0.1:{}/hook", common::free_port());
    // The receiver speaks plain HTTP: a TLS client gets no handshake from it.
    let tls = receiver.url().replace("http://", "https://");
    for (url, cause) in [(refused, "connection refused: "), (tls, "TLS failed: ")] {
        let seq = created(&mut admin, json!({"amount": "0.1", "callback_url": url})).await["seq"]
            .as_i64()
            .unwrap();
        let d = wait_delivery(&mut admin, seq, |d| d["attempts"][0]["error"].is_string()).await;
        let error = d["attempts"][0]["error"].as_str().unwrap().to_string();
        assert!(error.starts_with(cause), "{error}");
        assert!(!error.contains("error sending request"), "{error}");
        common::wait_for("the cause in the log", || async {
            s.daemon.log().contains(&error).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn deposit_address_events_go_to_its_callback_url_or_the_default_signed_and_in_order() {
    let default = Receiver::start().await;
    let own = Receiver::start().await;
    let s = start(&format!("url = \"{}\"", default.url())).await;
    let mut admin = s.daemon.admin().await;
    let with_url = admin
        .ok(
            "deposit_address.create",
            json!({"chain": "regtest", "client_id": "a", "callback_url": own.url()}),
        )
        .await;
    let plain = admin
        .ok(
            "deposit_address.create",
            json!({"chain": "regtest", "client_id": "b"}),
        )
        .await;
    for a in [&with_url, &plain] {
        admin
            .ok("deposit_address.close", json!({"id": a["id"]}))
            .await;
    }
    for (receiver, a) in [(&own, &with_url), (&default, &plain)] {
        let got = receiver.wait("two events", |r| r.len() >= 2).await;
        let events: Vec<Value> = got.iter().map(|r| r.event()).collect();
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["deposit_address.created", "deposit_address.closed"]);
        for (r, e) in got.iter().zip(&events) {
            r.verify(SECRET);
            assert_eq!(r.event_id(), e["id"].as_str().unwrap());
            assert_eq!(e["deposit_address_id"], a["id"]);
            assert_eq!(e["invoice_id"], json!(null));
            assert_eq!(e["data"]["deposit_address"]["id"], a["id"]);
        }
        assert!(events[0]["seq"].as_i64() < events[1]["seq"].as_i64());
    }
    assert_eq!(own.requests().len(), 2);
}
