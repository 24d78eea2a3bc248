//! The disk under the database failing settled: a filesystem that fills up (a tmpfs
//! with a size, mounted by the test), a database that can only be read, and a file
//! at the database's place that is corrupt or another program's. settled refuses
//! what it cannot write with an error that says why, half-commits nothing, and
//! carries on by itself when space comes back; a file it cannot use is refused at
//! start, named, and left as it was. Needs root (to mount), as CI has.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::checker::Checker;
use common::receiver::Receiver;
use common::{Daemon, Node, Payer, wait_for};
use serde_json::{Value, json};

/// A tmpfs of `size` mounted at a directory for the test's life.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(ok.success(), "mounting a tmpfs at {dir:?} (needs root)");
        Tmpfs(dir.to_path_buf())
    }

    /// Remounts with `opts` (`ro`, `rw`): only while no file on it is open to write.
    fn remount(&self, opts: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(ok.success(), "remounting {:?} {opts}", self.0);
    }

    /// Every file on it and its bytes.
    fn files(&self) -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&p).unwrap())
            })
            .collect()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: the daemon may still hold its files open.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Appends to `path` until the filesystem has no room left.
fn fill(path: &Path) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    while f.write_all(&[0xa5]).is_ok() {}
}

fn is_full(e: &Value) -> bool {
    e["code"] == json!(-32603)
        && e["message"]
            .as_str()
            .is_some_and(|m| m.contains("database full"))
}

/// A settled whose data directory is a fresh tmpfs of `size`, with `extra` config
/// lines after its chain's; started.
async fn daemon_on_tmpfs(node: &Node, size: &str, extra: &str) -> (Daemon, Tmpfs) {
    let mut daemon = Daemon::configure(node, "rpc_user = \"test\"\nrpc_password = \"test\"", extra);
    let disk = Tmpfs::mount(&daemon.dir.path().join("data"), size);
    daemon.restart().await;
    (daemon, disk)
}

#[tokio::test]
async fn a_full_disk_refuses_writes_and_carries_on_when_space_comes_back() {
    let node = Node::start().await;
    let mut payer = Payer::fund(&node).await;
    // Webhooks failing, so that a delivery is being retried when the disk fills.
    let receiver = Receiver::start().await;
    receiver.answer(|_, _| Some((500, Duration::ZERO)));
    let keys = tempfile::tempdir().unwrap();
    let secret = common::webhook_secret(keys.path(), "disk-faults-secret-0123456789");
    let webhook = format!(
        "[webhook]\nurl = \"{}\"\nsecret_file = \"{}\"\nfirst_retry_ms = 100\nmax_retry_interval = 1\n",
        receiver.url(),
        secret.display()
    );
    let (mut daemon, disk) = daemon_on_tmpfs(&node, "16m", &webhook).await;
    let mut admin = daemon.admin().await;
    let paid = admin.invoice(json!({"amount": "0.01"})).await;
    let created = admin.events_of(paid["id"].as_str().unwrap()).await[0]["id"].clone();
    wait_for("a delivery refused", || {
        let n = receiver.requests().len();
        async move { (n > 0).then_some(()) }
    })
    .await;
    let address = paid["address"].as_str().unwrap().to_string();
    let filler = disk.0.join("filler");
    fill(&filler);

    // The database's own files have room inside them (the WAL is reused after a
    // checkpoint): creates succeed until that room is gone too, then each is refused.
    let pad = "x".repeat(8 * 1024);
    let mut acknowledged = 0;
    let refused = loop {
        assert!(acknowledged < 5_000, "no create was refused on a full disk");
        let r = admin
            .call(
                "invoice.create",
                json!({"chain": "regtest", "asset": "BTC", "amount": "0.001",
                       "metadata": {"pad": pad}, "idempotency_key": format!("fill-{acknowledged}")}),
            )
            .await;
        match r {
            Ok(_) => acknowledged += 1,
            Err(e) => break e,
        }
    };
    eprintln!("after {acknowledged} creates: {refused}");
    assert!(is_full(&refused), "a create on a full disk: {refused}");
    // Whatever the refused write had freed, taken too.
    fill(&filler);
    let small = admin
        .call(
            "invoice.create",
            json!({"chain": "regtest", "asset": "BTC", "amount": "0.001"}),
        )
        .await
        .unwrap_err();
    assert!(is_full(&small), "a small create on a full disk: {small}");
    // The receiver takes the event now, and settled cannot record that it did.
    receiver.answer(|_, _| Some((200, Duration::ZERO)));
    let delivered = |receiver: &Receiver| {
        let accepted = receiver.accepted();
        accepted
            .iter()
            .filter(|r| json!(r.event_id()) == created)
            .count()
    };
    wait_for("the event delivered on a full disk", || {
        let n = delivered(&receiver);
        async move { (n > 0).then_some(()) }
    })
    .await;
    let full_since = Instant::now();
    assert_eq!(admin.count_invoices().await, 1 + acknowledged);

    // Blocks paying the invoice: the follower cannot commit them, stops and says so.
    let status = loop {
        payer.pay(&node, &address, "0.01", false).await;
        let tip = node.height().await + 1;
        node.mine_to(1, &payer.address.to_string()).await;
        let c = admin
            .wait_chain("the block applied or the disk said full", |c| {
                c["scanned_height"].as_u64() == Some(tip)
                    || c["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("database full"))
            })
            .await;
        if c["scanned_height"].as_u64() < Some(tip) {
            break c;
        }
    };
    eprintln!("the follower on a full disk: {status}");
    assert!(daemon.running(), "settled stopped on a full disk");
    let tip = node.height().await;
    assert!(status["scanned_height"].as_u64() < Some(tip));
    assert!(status["lag_blocks"].as_u64() > Some(0), "{status}");

    // An unrecorded delivery is sent again, but not as fast as the receiver answers.
    let full_for = full_since.elapsed().as_secs_f64();
    let sent = delivered(&receiver);
    eprintln!("the created event delivered {sent} times in {full_for:.1} s of a full disk");
    assert!(
        (sent as f64) < 3.0 + full_for * 2.0,
        "the created event delivered {sent} times in {full_for:.1} s of a full disk"
    );

    // Space comes back: everything carries on without a restart.
    std::fs::remove_file(&filler).unwrap();
    admin.wait_scanned(tip).await;
    admin
        .wait_chain("the error cleared", |c| c["last_error"].is_null())
        .await;
    admin
        .wait_status(paid["id"].as_str().unwrap(), "COMPLETED")
        .await;
    admin.invoice(json!({"amount": "0.001"})).await;
    assert_eq!(admin.count_invoices().await, 2 + acknowledged);
    Checker::new()
        .assert_holds(&node, &mut admin, Some(&receiver))
        .await;
}

/// Waits for the daemon to end by itself; returns its log.
async fn refused_at_start(daemon: &mut Daemon) -> String {
    daemon.spawn();
    wait_for("settled to refuse to start", || {
        let gone = daemon.exited();
        async move { gone.then_some(()) }
    })
    .await;
    daemon.log()
}

#[tokio::test]
async fn a_read_only_database_is_refused_at_start_and_left_alone() {
    let node = Node::start().await;
    Payer::fund(&node).await;
    let (mut daemon, disk) = daemon_on_tmpfs(&node, "64m", "").await;
    let id = daemon
        .admin()
        .await
        .invoice(json!({"amount": "0.01"}))
        .await["id"]
        .clone();
    let status = daemon.signal_and_wait("TERM", std::time::Duration::from_secs(10));
    assert!(status.success());
    let before = disk.files();
    disk.remount("ro");

    let log = refused_at_start(&mut daemon).await;
    let db = disk.0.join("settled.db");
    assert!(
        log.contains(&db.display().to_string()) && log.contains("read-only"),
        "the refusal names the file and says why: {log}"
    );
    assert_eq!(disk.files(), before, "the database was changed");

    disk.remount("rw");
    daemon.restart().await;
    let inv = daemon
        .admin()
        .await
        .ok("invoice.get", json!({"id": id}))
        .await;
    assert_eq!(inv["id"], id);
}

#[tokio::test]
async fn a_corrupt_or_foreign_database_is_refused_at_start_and_left_alone() {
    let node = Node::start().await;
    Payer::fund(&node).await;
    // settled's own database, whose first page (the schema) is damaged.
    let (mut daemon, disk) = daemon_on_tmpfs(&node, "64m", "").await;
    daemon
        .admin()
        .await
        .invoice(json!({"amount": "0.01"}))
        .await;
    daemon.signal_and_wait("TERM", std::time::Duration::from_secs(10));
    let db = disk.0.join("settled.db");
    let mut damaged = std::fs::read(&db).unwrap();
    damaged[100..200].fill(0x5a);

    let foreign = disk.0.join("foreign.db");
    let other = rusqlite::Connection::open(&foreign).unwrap();
    other
        .execute_batch("CREATE TABLE songs (title TEXT); INSERT INTO songs VALUES ('x');")
        .unwrap();
    drop(other);
    let foreign = std::fs::read(&foreign).unwrap();
    let garbage: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7919 % 251) as u8).collect();

    for (what, bytes, says) in [
        ("not SQLite at all", garbage, "not a SQLite database"),
        ("another program's", foreign, "not a settled database"),
        ("damaged", damaged, "malformed"),
    ] {
        for f in disk.files().keys() {
            std::fs::remove_file(disk.0.join(f)).unwrap();
        }
        std::fs::write(&db, &bytes).unwrap();
        let log = refused_at_start(&mut daemon).await;
        let last = log
            .lines()
            .rev()
            .find(|l| l.contains("settled:"))
            .unwrap_or("");
        eprintln!("{what}: {last}");
        assert!(
            last.contains(&db.display().to_string()) && last.contains(says),
            "a {what} database: the refusal names the file and says why: {log}"
        );
        assert_eq!(
            std::fs::read(&db).unwrap(),
            bytes,
            "a {what} database was changed"
        );
        assert_eq!(disk.files().len(), 1, "files made beside a {what} database");
    }
}
