//! settled as a system service: clean shutdown on signals, and online backups.

mod common;

use std::time::Duration;

use common::{Admin, Daemon};
use serde_json::json;

#[tokio::test]
async fn sigterm_and_sigint_stop_it_cleanly_within_10_s() {
    for signal in ["TERM", "INT"] {
        let mut daemon = Daemon::start_offline("").await;
        let mut admin = daemon.admin().await;
        admin.invoice(json!({"amount": "0.1"})).await;
        let status = daemon.signal_and_wait(signal, Duration::from_secs(10));
        assert_eq!(status.code(), Some(0), "SIG{signal}: {}", daemon.log());
        assert!(!daemon.socket.exists(), "the socket is removed");
        assert!(daemon.log().contains("stopping"), "{}", daemon.log());
        // What was committed is there after a restart.
        daemon.spawn_unsynced().await;
        let mut admin = daemon.admin().await;
        let list = admin.ok("invoice.list", json!({})).await;
        assert_eq!(list["invoices"].as_array().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn a_backup_under_write_load_is_consistent_and_restores() {
    let daemon = Daemon::start_offline("").await;
    // A writer creating invoices the whole time.
    let socket = daemon.socket.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    let writer = tokio::spawn(async move {
        let mut admin = Admin::connect(&socket).await.unwrap();
        let mut n = 0u32;
        while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
            admin.invoice(json!({"amount": "0.1"})).await;
            n += 1;
        }
        n
    });
    let mut admin = daemon.admin().await;
    common::wait_for("some invoices", || {
        let socket = daemon.socket.clone();
        async move {
            let mut a = Admin::connect(&socket).await.ok()?;
            let l = a.ok("invoice.list", json!({"limit": 50})).await;
            (l["invoices"].as_array()?.len() >= 50).then_some(())
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.db");
    let out = daemon.ctl(Some(dir.path()), &["backup", "copy.db"]);
    assert!(out.contains("backed up to"), "{out}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await.unwrap();

    let db = rusqlite::Connection::open(&copy).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let invoices: u32 = db
        .query_row("SELECT COUNT(*) FROM invoices", [], |r| r.get(0))
        .unwrap();
    let events: u32 = db
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert!(
        invoices >= 50 && invoices <= written,
        "{invoices} of {written}"
    );
    assert_eq!(
        events, invoices,
        "every invoice with its event: one snapshot"
    );
    drop(db);

    // Not overwritten; a relative path is refused by the daemon.
    let e = admin
        .call("daemon.backup", json!({ "path": copy }))
        .await
        .unwrap_err();
    assert!(e["message"].as_str().unwrap().contains("exists"), "{e}");
    let e = admin
        .call("daemon.backup", json!({"path": "x.db"}))
        .await
        .unwrap_err();
    assert!(e["message"].as_str().unwrap().contains("absolute"), "{e}");

    // Restore: the copy as another daemon's database.
    let mut restored = Daemon::configure_offline("");
    std::fs::create_dir_all(restored.dir.path().join("data")).unwrap();
    std::fs::copy(&copy, restored.dir.path().join("data/settled.db")).unwrap();
    restored.spawn_unsynced().await;
    let mut admin = restored.admin().await;
    let list = admin.ok("invoice.list", json!({"limit": 1000})).await;
    assert_eq!(list["invoices"].as_array().unwrap().len() as u32, invoices);
}

#[tokio::test]
async fn under_systemd_ready_comes_after_the_socket_and_the_watchdog_is_fed() {
    let mut daemon = Daemon::configure_offline("");
    let systemd = Systemd::for_daemon(&mut daemon);
    let notify = &systemd.socket;
    daemon.spawn_unsynced().await;
    let mut buf = vec![0u8; 4096];
    let mut messages = Vec::new();
    let mut ready_at = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while messages
        .iter()
        .filter(|m: &&String| m.contains("WATCHDOG=1"))
        .count()
        < 3
    {
        assert!(std::time::Instant::now() < deadline, "{messages:?}");
        let n = tokio::time::timeout(Duration::from_secs(5), notify.recv(&mut buf))
            .await
            .expect("a notification")
            .unwrap();
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        if m.contains("READY=1") && ready_at.is_none() {
            // Ready means the admin socket answers.
            let mut admin = Admin::connect(&daemon.socket).await.expect("socket bound");
            admin.ok("daemon.status", json!({})).await;
            ready_at = Some(messages.len());
        }
        messages.push(m);
    }
    assert_eq!(ready_at, Some(0), "READY=1 first: {messages:?}");
    // The node is away: the chain waits honestly, so the watchdog is still fed, and
    // the status says so.
    let status = messages
        .iter()
        .rev()
        .find(|m| m.contains("STATUS="))
        .unwrap();
    assert!(status.contains("regtest"), "{status}");
    let stop = daemon.signal_and_wait("TERM", Duration::from_secs(10));
    assert_eq!(stop.code(), Some(0));
    let mut rest = Vec::new();
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(200), notify.recv(&mut buf)).await
    {
        rest.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(rest.iter().any(|m| m.contains("STOPPING=1")), "{rest:?}");
}

#[tokio::test]
async fn without_systemd_nothing_is_notified() {
    // No NOTIFY_SOCKET: the daemon runs and stops as ever.
    let mut daemon = Daemon::start_offline("").await;
    let stop = daemon.signal_and_wait("TERM", Duration::from_secs(10));
    assert_eq!(stop.code(), Some(0));
    assert!(!daemon.log().contains("cannot notify"), "{}", daemon.log());
}

/// What systemd would hear on `NOTIFY_SOCKET`, with a 1 s watchdog.
struct Systemd {
    socket: tokio::net::UnixDatagram,
    _dir: tempfile::TempDir,
}

impl Systemd {
    fn for_daemon(daemon: &mut Daemon) -> Systemd {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = tokio::net::UnixDatagram::bind(&path).unwrap();
        daemon
            .env
            .push(("NOTIFY_SOCKET".into(), path.display().to_string()));
        daemon.env.push(("WATCHDOG_USEC".into(), "1000000".into()));
        Systemd { socket, _dir: dir }
    }

    /// Every message heard over `span`.
    async fn listen(&self, span: Duration) -> Vec<String> {
        let mut buf = vec![0u8; 4096];
        let mut heard = Vec::new();
        let end = tokio::time::Instant::now() + span;
        while let Ok(Ok(n)) = tokio::time::timeout_at(end, self.socket.recv(&mut buf)).await {
            heard.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        heard
    }

    /// Listens until a message satisfies `pred`, at most `within`; returns it.
    async fn wait(&self, what: &str, within: Duration, pred: impl Fn(&str) -> bool) -> String {
        let mut buf = vec![0u8; 4096];
        let end = tokio::time::Instant::now() + within;
        loop {
            let n = tokio::time::timeout_at(end, self.socket.recv(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no notification {what} within {within:?}"))
                .unwrap();
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            if pred(&m) {
                return m;
            }
        }
    }
}

fn fed(heard: &[String]) -> usize {
    heard.iter().filter(|m| m.contains("WATCHDOG=1")).count()
}

#[tokio::test]
async fn a_node_that_never_answers_keeps_the_watchdog_fed_and_a_stuck_task_starves_it() {
    // A node that accepts connections and never answers: every call must give up at
    // rpc_timeout, so the task keeps showing signs of life (grace: 4 x 1 s).
    let node = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", node.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in node.incoming() {
            held.push(conn);
        }
    });
    let mut daemon = Daemon::configure_chain(
        "regtest",
        &format!(
            "rpc_url = \"{url}\"\nrpc_user = \"u\"\nrpc_password = \"p\"\n\
             descriptor = \"{}\"\npoll_interval_ms = 100\nrpc_timeout = 1\n",
            common::descriptor()
        ),
    );
    let stall = daemon.dir.path().join("stall");
    daemon
        .env
        .push(("SETTLED_TEST_STALL".into(), stall.display().to_string()));
    let systemd = Systemd::for_daemon(&mut daemon);
    daemon.spawn_unsynced().await;
    let heard = systemd.listen(Duration::from_secs(10)).await;
    assert!(
        fed(&heard[heard.len() / 2..]) >= 5,
        "{heard:?}\n{}",
        daemon.log()
    );
    let mut admin = daemon.admin().await;
    let status = admin.ok("chain.status", json!({"chain": "regtest"})).await;
    let error = status["chains"][0]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("rpc_timeout"), "{status}");

    // The task hangs, as a bug would: the watchdog goes hungry and systemd is told why.
    std::fs::write(&stall, "").unwrap();
    systemd
        .wait("saying the chain is stuck", Duration::from_secs(45), |m| {
            m.contains("STUCK: regtest")
        })
        .await;
    let heard = systemd.listen(Duration::from_secs(3)).await;
    assert_eq!(fed(&heard), 0, "{heard:?}");
    assert!(
        daemon.log().contains("not feeding the watchdog"),
        "{}",
        daemon.log()
    );

    // It moves again: fed again.
    std::fs::remove_file(&stall).unwrap();
    systemd
        .wait("feeding the watchdog again", Duration::from_secs(10), |m| {
            m.contains("WATCHDOG=1")
        })
        .await;
}

/// `GET /metrics` on loopback `port`: the body.
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(
        out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200"),
        "{out}"
    );
    out.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// The value of the series written exactly `series` (name and labels).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

/// The TCP ports process `pid` listens on, from its socket inodes in /proc.
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEX_IP:HEX_PORT, st 0A is LISTEN, the inode is field 9.
            if f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                let port = f[1].rsplit(':').next().unwrap();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

#[tokio::test]
async fn metrics_count_blocks_reorgs_payments_and_node_calls_and_only_when_configured() {
    let port = common::free_port();
    // Webhooks to a receiver that is not there: every attempt fails.
    let secrets = tempfile::tempdir().unwrap();
    let secret = common::webhook_secret(secrets.path(), "s3cret");
    let (mut node, mut payer, daemon) = common::setup(&format!(
        "\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\
         [webhook]\nurl = \"http://127.0.0.1:9/\"\nsecret_file = \"{}\"\nfirst_retry_ms = 100\n",
        secret.display()
    ))
    .await;
    assert_eq!(listening_ports(daemon.pid()), [port]);
    let mut admin = daemon.admin().await;
    let inv = admin.invoice(json!({"amount": "0.1"})).await;
    let id = inv["id"].as_str().unwrap();
    payer.pay_and_mine(&node, &inv, "0.1", 2).await;
    admin.wait_status(id, "COMPLETED").await;
    // A reorganisation of one empty block the daemon has seen.
    admin.wait_scanned(node.height().await).await;
    let tip = node.rpc("getbestblockhash", json!([])).await;
    node.rpc("invalidateblock", json!([tip])).await;
    node.mine_to(2, &common::other_address()).await;
    admin.wait_scanned(node.height().await).await;

    let reg = "{chain=\"regtest\"}";
    let events = admin.ok("events.list", json!({})).await["events"]
        .as_array()
        .unwrap()
        .len() as f64;
    // The database's figures are read every few seconds.
    let text = common::wait_for("the metrics to show the payment and the reorg", || async {
        let t = scrape(port);
        (metric(&t, &format!("settled_reorgs_total{reg}")) == Some(1.0)
            && metric(&t, &format!("settled_payments_detected_total{reg}")) == Some(1.0)
            && metric(&t, &format!("settled_scanned_height{reg}"))
                == Some(node.height().await as f64)
            && metric(&t, "settled_webhook_backlog") == Some(events))
        .then_some(t)
    })
    .await;
    let m = |series: &str| metric(&text, series).unwrap_or_else(|| panic!("{series}\n{text}"));
    assert!(m(&format!("settled_blocks_processed_total{reg}")) >= 4.0);
    assert_eq!(m(&format!("settled_reorg_depth_blocks_count{reg}")), 1.0);
    assert_eq!(m(&format!("settled_reorg_depth_blocks_sum{reg}")), 1.0);
    assert_eq!(m(&format!("settled_payments_detected_total{reg}")), 1.0);
    assert_eq!(
        m("settled_invoices{chain=\"regtest\",status=\"COMPLETED\"}"),
        1.0
    );
    assert_eq!(
        m("settled_invoices{chain=\"regtest\",status=\"PENDING\"}"),
        0.0
    );
    assert_eq!(m(&format!("settled_scan_lag_blocks{reg}")), 0.0);
    assert_eq!(
        m(&format!("settled_node_height{reg}")),
        node.height().await as f64
    );
    assert!(
        m("settled_node_rpc_duration_seconds_count{chain=\"regtest\",method=\"getblock\"}") >= 4.0
    );
    // Every event's delivery pending, each tried and failed at least once.
    assert!(
        m("settled_webhook_attempts_failed_total") >= events,
        "{text}"
    );
    assert_eq!(m("settled_webhook_deliveries_failed"), 0.0);
    assert!(text.contains("# HELP settled_scan_lag_blocks"), "{text}");

    // The node goes away: its failed calls are counted.
    node.stop().await;
    common::wait_for("node errors in the metrics", || async {
        let t = scrape(port);
        t.lines()
            .any(|l| l.starts_with("settled_node_rpc_errors_total{chain=\"regtest\""))
            .then_some(())
    })
    .await;

    // Without [metrics], nothing listens.
    let quiet = Daemon::start_offline("").await;
    assert_eq!(listening_ports(quiet.pid()), Vec::<u16>::new());
}

/// `settlectl status` against `daemon` as user `uid` with primary group `gid`.
fn ctl_as(daemon: &Daemon, uid: u32, gid: u32) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    daemon
        .ctl_command(&["status"])
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_admin_socket_belongs_to_its_group_and_listed_uids_only() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if my_uid() != 0 {
        panic!("this test runs as root: it connects as other users");
    }
    const NOBODY: u32 = 65534;
    const NOGROUP: u32 = 65534;
    let mut daemon = Daemon::configure_offline("");
    let config = std::fs::read_to_string(&daemon.config).unwrap().replace(
        "[daemon]\n",
        "[daemon]\nadmin_socket_group = \"nogroup\"\nadmin_allowed_uids = [0]\n",
    );
    std::fs::write(&daemon.config, &config).unwrap();
    // Others may reach the socket's directory; the socket's own mode decides.
    std::fs::set_permissions(daemon.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    daemon.spawn_unsynced().await;
    let meta = std::fs::metadata(&daemon.socket).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), NOGROUP);

    // Root is listed: served, and logged with its credentials.
    assert!(ctl_as(&daemon, 0, 0).status.success());
    common::wait_for("the connection logged", || async {
        daemon.log().contains("admin connection").then_some(())
    })
    .await;
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("admin connection"))
        .unwrap();
    assert!(line.contains("uid=0") && line.contains("pid="), "{line}");

    // Not in the group: the kernel refuses.
    let out = ctl_as(&daemon, NOBODY, 12345);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ermission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // In the group but not listed: settled refuses, and says so in its log.
    let out = ctl_as(&daemon, NOBODY, NOGROUP);
    assert!(!out.status.success(), "{out:?}");
    common::wait_for("the refusal logged", || async {
        daemon
            .log()
            .contains("uid 65534 is not in daemon.admin_allowed_uids")
            .then_some(())
    })
    .await;

    // Listed: served.
    daemon.signal_and_wait("TERM", Duration::from_secs(10));
    std::fs::write(&daemon.config, config.replace("[0]", "[0, 65534]")).unwrap();
    daemon.spawn_unsynced().await;
    let out = ctl_as(&daemon, NOBODY, NOGROUP);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("regtest"));
}

fn my_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}

#[tokio::test]
async fn log_lines_fit_the_journal_and_rust_log_sets_the_level() {
    use std::os::unix::fs::MetadataExt;
    let starts_with_time =
        |line: &str| line.starts_with("20") && line.as_bytes().get(4) == Some(&b'-');

    // On its own: every line starts with its time.
    let plain = Daemon::start_offline("").await;
    let ready = ready_line(&plain).await;
    assert!(starts_with_time(&ready), "{ready}");

    // Under systemd, stderr is the journal's stream (JOURNAL_STREAM names it): the
    // journal stamps each line, so settled does not.
    let mut journal = Daemon::configure_offline("");
    let file = journal.dir.path().join("settled.log");
    std::fs::write(&file, "").unwrap();
    let meta = std::fs::metadata(&file).unwrap();
    journal.env.push((
        "JOURNAL_STREAM".into(),
        format!("{}:{}", meta.dev(), meta.ino()),
    ));
    journal.spawn_unsynced().await;
    let ready = ready_line(&journal).await;
    assert!(ready.trim_start().starts_with("INFO"), "{ready}");
    let log = journal.log();
    assert!(!log.lines().any(starts_with_time), "{log}");
    assert!(!log.contains('\u{1b}'), "no colours: {log}");

    // RUST_LOG=warn: the info lines are gone.
    let mut quiet = Daemon::configure_offline("");
    quiet.env.push(("RUST_LOG".into(), "warn".into()));
    quiet.spawn_unsynced().await;
    let mut admin = quiet.admin().await;
    admin.ok("daemon.status", json!({})).await;
    assert!(!quiet.log().contains("ready"), "{}", quiet.log());
    assert!(!quiet.log().contains("INFO"), "{}", quiet.log());
}

#[tokio::test]
async fn a_database_newer_than_the_binary_is_refused_and_left_alone() {
    let mut daemon = Daemon::start_offline("").await;
    daemon.signal_and_wait("TERM", Duration::from_secs(10));
    let db = daemon.dir.path().join("data/settled.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let known: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    conn.pragma_update(None, "user_version", known + 1).unwrap();
    drop(conn);

    let out = std::process::Command::new(common::settled_bin())
        .arg("--config")
        .arg(&daemon.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "schema version {}, newer than this settled knows ({known})",
            known + 1
        )),
        "{err}"
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let now: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(now, known + 1, "untouched");
}

/// The daemon's "ready" log line; once it answers a request, it has written it.
async fn ready_line(daemon: &Daemon) -> String {
    daemon.admin().await.ok("daemon.status", json!({})).await;
    let log = daemon.log();
    log.lines()
        .find(|l| l.contains("ready"))
        .expect("a ready line")
        .to_string()
}
