//! `settlectl` against a running daemon: readable output, `--json`, errors.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use common::*;
use serde_json::Value;

fn ctl(daemon: &Daemon, args: &[&str]) -> (bool, String, String) {
    let out = daemon.ctl_command(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn settlectl_speaks_for_people_and_scripts() {
    let (_node, _payer, daemon) = setup("").await;

    // --json after the subcommand: the method's result as it is.
    let (ok, out, err) = ctl(
        &daemon,
        &[
            "invoice",
            "create",
            "--chain",
            "regtest",
            "--amount",
            "0.1",
            "--order-id",
            "o-1",
            "--json",
        ],
    );
    assert!(ok, "{err}");
    let inv: Value = serde_json::from_str(&out).unwrap();
    let id = inv["id"].as_str().unwrap();
    assert_eq!(inv["amount_due"], "0.1");

    let (ok, out, _) = ctl(&daemon, &["invoice", "get", id]);
    assert!(ok);
    assert!(out.contains("PENDING"), "{out}");
    assert!(out.contains("0.1 BTC"), "{out}");
    assert!(out.contains(inv["address"].as_str().unwrap()), "{out}");
    // Its one option, with what is left to pay in it.
    let option = out.lines().find(|l| l.starts_with("regtest BTC"));
    assert!(
        out.contains("REMAINING") && option.is_some_and(|l| l.matches("0.1 BTC").count() == 2),
        "{out}"
    );

    let (ok, out, _) = ctl(&daemon, &["invoice", "list"]);
    assert!(ok && out.contains(id) && out.contains("o-1"), "{out}");

    // Status at a glance: the daemon's line, then one row per chain.
    let (ok, out, _) = ctl(&daemon, &["status"]);
    assert!(ok, "{out}");
    assert!(
        out.starts_with("settled ") && out.contains(", up "),
        "{out}"
    );
    assert!(out.contains("webhook backlog 0"), "{out}");
    assert!(out.contains("LAST POLL"), "{out}");
    let row: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("regtest"))
        .unwrap()
        .split_whitespace()
        .collect();
    // CHAIN STATE NODE TIP SCANNED LAG WATCHED LAST-POLL
    assert_eq!(row[1..3], ["ok", "ok"], "{out}");
    assert_eq!(row[3], row[4], "scanned to the tip: {out}");
    assert_eq!(row[5], "0", "{out}");
    assert!(row.last() == Some(&"ago"), "{out}");

    let (ok, out, _) = ctl(&daemon, &["events", "list"]);
    assert!(ok && out.contains("invoice.created"), "{out}");

    let (ok, out, _) = ctl(&daemon, &["--json", "invoice", "void", id]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["status"],
        "VOIDED"
    );

    // Errors: a message and a non-zero exit.
    let (ok, _, err) = ctl(&daemon, &["invoice", "get", "no-such-invoice"]);
    assert!(!ok);
    assert!(err.contains("not found") && err.contains("1001"), "{err}");
    let (ok, _, err) = ctl(
        &daemon,
        &[
            "invoice",
            "create",
            "--chain",
            "regtest",
            "--amount",
            "0.123456789",
        ],
    );
    assert!(!ok && err.contains("amount"), "{err}");

    // events follow prints the backlog, then keeps going.
    let mut follow = daemon
        .ctl_command(&["events", "follow", "--after-seq", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.contains("invoice.created") && first.contains(id),
        "{first}"
    );
    follow.kill().unwrap();
    follow.wait().unwrap();
}

#[tokio::test]
async fn status_shows_a_node_that_is_down_and_why() {
    let daemon = Daemon::start_offline("").await;
    let out = wait_for("the failed poll in the status", || async {
        let (ok, out, _) = ctl(&daemon, &["status"]);
        (ok && out.contains("!")).then_some(out)
    })
    .await;
    let row = out.lines().find(|l| l.starts_with("regtest")).unwrap();
    assert!(row.contains("error") && row.contains("DOWN"), "{out}");
    let why = out
        .lines()
        .skip_while(|l| !l.starts_with("regtest"))
        .nth(1)
        .unwrap();
    assert!(why.trim_start().starts_with("! node unreachable"), "{out}");
}

#[tokio::test]
async fn settlectl_deposit_commands() {
    let (node, mut payer, daemon) = setup("").await;
    let args = [
        "deposit",
        "create",
        "--chain",
        "regtest",
        "--client-id",
        "user-5",
        "--label",
        "main",
        "--json",
    ];
    let (ok, out, err) = ctl(&daemon, &args);
    assert!(ok, "{err}");
    let a: Value = serde_json::from_str(&out).unwrap();
    let (id, address) = (a["id"].as_str().unwrap(), a["address"].as_str().unwrap());
    // The same client again: the same address.
    let (ok, out, _) = ctl(&daemon, &args);
    let again: Value = serde_json::from_str(&out).unwrap();
    assert!(ok && again["id"] == a["id"], "{out}");

    payer.pay(&node, address, "0.25", false).await;
    node.mine_to(1, &payer.address.to_string()).await;
    let mut admin = daemon.admin().await;
    admin.wait_scanned(node.height().await).await;
    wait_for("the deposit credited", || async {
        let (_, out, _) = ctl(&daemon, &["deposit", "get", id]);
        out.contains("0.25 BTC").then_some(())
    })
    .await;
    let (ok, out, _) = ctl(&daemon, &["deposit", "get", id]);
    assert!(
        ok && out.contains(address) && out.contains("user-5"),
        "{out}"
    );
    assert!(out.contains("CREDITED") && out.contains("yes"), "{out}");
    let (ok, out, _) = ctl(
        &daemon,
        &["deposit", "get", "--chain", "regtest", "--address", address],
    );
    assert!(ok && out.contains(id), "{out}");
    let (ok, out, _) = ctl(&daemon, &["deposit", "list", "--client-id", "user-5"]);
    assert!(ok && out.contains(id) && out.contains("OPEN"), "{out}");
    let (ok, out, _) = ctl(&daemon, &["deposit", "deposits", id, "--json"]);
    let page: Value = serde_json::from_str(&out).unwrap();
    assert!(ok && page["deposits"][0]["amount"] == "0.25", "{out}");
    let (ok, out, _) = ctl(&daemon, &["deposit", "rescan", id]);
    assert!(ok && out.contains("deposits found: 0"), "{out}");
    let (ok, out, _) = ctl(&daemon, &["events", "list", "--deposit-address", id]);
    assert!(
        ok && out.contains("deposit.confirmed") && out.contains("0.25 BTC"),
        "{out}"
    );
    let (ok, out, _) = ctl(&daemon, &["deposit", "close", id]);
    assert!(ok && out.contains("CLOSED"), "{out}");
    // A bad param: the daemon's message, and a failure.
    let (ok, _, err) = ctl(&daemon, &["deposit", "list", "--status", "shut"]);
    assert!(!ok && err.contains("status"), "{err}");
}
