//! `settlectl` against a running daemon: readable output, `--json`, errors.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

fn ctl_command(daemon: &Daemon, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_settlectl"));
    cmd.arg("--socket").arg(&daemon.socket).args(args);
    cmd
}

fn ctl(daemon: &Daemon, args: &[&str]) -> (bool, String, String) {
    let out = ctl_command(daemon, args).output().unwrap();
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

    let (ok, out, _) = ctl(&daemon, &["invoice", "list"]);
    assert!(ok && out.contains(id) && out.contains("o-1"), "{out}");

    let (ok, out, _) = ctl(&daemon, &["status"]);
    assert!(
        ok && out.contains("regtest") && out.contains("settled"),
        "{out}"
    );

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
    let mut follow = ctl_command(&daemon, &["events", "follow", "--after-seq", "0"])
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
