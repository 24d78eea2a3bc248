//! settled under a real systemd: a minimal Debian booted with `systemd-nspawn -b`
//! (made by `scripts/build-systemd-image`), set up by the README's "Running in
//! production" steps, and used as an operator would. Needs root, as CI has.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The image `scripts/build-systemd-image` made (scripts/test passes it on).
fn image() -> PathBuf {
    let p = std::env::var_os("SETTLED_SYSTEMD_IMAGE").map(PathBuf::from);
    let p = p.unwrap_or_else(|| {
        let suite = std::fs::read_to_string("/etc/os-release")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VERSION_CODENAME=").map(str::to_string))
            .unwrap_or_default();
        cache_dir().join(format!("debian-{suite}-systemd-1/root"))
    });
    assert!(
        p.join("lib/systemd/systemd").exists(),
        "no systemd image at {}: run scripts/build-systemd-image (scripts/test does), \
         or set SETTLED_SYSTEMD_IMAGE",
        p.display()
    );
    p
}

/// A booted container: its own copy of the image, its systemd as PID 1.
struct Container {
    dir: tempfile::TempDir,
    nspawn: Child,
    /// The container's PID 1, as the host numbers it.
    leader: u32,
}

impl Container {
    /// Copies the image, boots it with the checkout at /src and the binaries at
    /// /build (both read-only), and waits until its systemd has finished starting.
    async fn boot() -> Container {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let cp = Command::new("cp")
            .arg("-a")
            .arg(image())
            .arg(&root)
            .status()
            .unwrap();
        assert!(cp.success(), "copying the image");
        let src = Path::new(env!("CARGO_MANIFEST_DIR"));
        let build = settled_bin().parent().unwrap().to_path_buf();
        let log = std::fs::File::create(dir.path().join("console.log")).unwrap();
        let nspawn = Command::new("systemd-nspawn")
            .arg("--quiet")
            .arg("--register=no")
            // Its own name: nspawn keeps per-machine state under it.
            .arg(format!("--machine=settled-test-{}", std::process::id()))
            .arg("--keep-unit")
            .arg("--boot")
            .arg(format!("--directory={}", root.display()))
            .arg(format!("--bind-ro={}:/src", src.display()))
            .arg(format!("--bind-ro={}:/build", build.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("systemd-nspawn runs (scripts/build-systemd-image installs it)");
        let pid = nspawn.id();
        let leader = wait_for("the container's systemd", || async {
            let children =
                std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
            let leader: u32 = children.split_whitespace().next()?.parse().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{leader}/comm")).ok()?;
            (comm.trim() == "systemd").then_some(leader)
        })
        .await;
        let c = Container {
            dir,
            nspawn,
            leader,
        };
        let state = wait_for("the container to finish booting", || async {
            // Answers once systemd inside takes requests and has finished starting.
            let out = c.sh("systemctl is-system-running --wait");
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (!state.is_empty() && state != "starting" && state != "initializing").then_some(state)
        })
        .await;
        assert!(
            state == "running" || state == "degraded",
            "booted to {state}: {}",
            c.console()
        );
        c
    }

    /// Runs `script` with `sh -c` as root inside the container, in all its namespaces.
    fn sh(&self, script: &str) -> Output {
        Command::new("nsenter")
            .arg(format!("--target={}", self.leader))
            .args(["--all", "--", "/usr/bin/env", "-i"])
            .arg("PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .args(["/bin/sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `sh`, which must succeed; its stdout, trimmed.
    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "{script}\n{}\n{}\njournal:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.journal()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `sh`, which must fail; its stderr.
    fn fails(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            !out.status.success(),
            "{script} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// A property of the settled unit (`systemctl show`).
    fn unit(&self, property: &str) -> String {
        self.ok(&format!(
            "systemctl show --property={property} --value settled"
        ))
    }

    fn journal(&self) -> String {
        let out = self.sh("journalctl --no-pager -n 60 -u settled");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }

    /// Shuts the container down the way an operator would and waits for it.
    fn poweroff(mut self) {
        let _ = self.sh("systemctl poweroff");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.nspawn.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the container did not shut down: {}", self.console());
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- journal of settled ---\n{}", self.journal());
        }
        if self.nspawn.try_wait().ok().flatten().is_none() {
            // Killing the namespace's PID 1 ends everything in it.
            let _ = Command::new("kill")
                .args(["-KILL", &self.leader.to_string()])
                .status();
            let _ = self.nspawn.kill();
            let _ = self.nspawn.wait();
        }
    }
}

/// The README's steps 1 to 5, as one script: binaries, chain files, the doc, the
/// user, the configuration and the webhook secret, the unit.
fn install_script(config: &str) -> String {
    format!(
        r#"set -e
cd /src
install -m 0755 /build/settled /build/settlectl /usr/local/bin/
install -d /usr/share/settled && cp -r chains /usr/share/settled/
install -D -m 0644 README.md /usr/share/doc/settled/README.md
install -m 0644 systemd/sysusers.d/settled.conf /usr/lib/sysusers.d/ && systemd-sysusers
install -d -m 0750 -g settled /etc/settled
cat > /etc/settled/config.toml <<'TOML'
{config}
TOML
chgrp settled /etc/settled/config.toml && chmod 0640 /etc/settled/config.toml
printf 'live-systemd-secret\n' > /etc/settled/webhook.secret
chgrp settled /etc/settled/webhook.secret && chmod 0640 /etc/settled/webhook.secret
install -m 0644 systemd/settled.service /etc/systemd/system/
systemctl daemon-reload && systemctl enable --now settled
"#
    )
}

#[tokio::test]
async fn the_unit_runs_under_a_real_systemd_as_the_readme_says() {
    let node = Node::start().await;
    node.mine_to(1, &other_address()).await;
    let height = node.height().await;
    let webhook = format!("http://127.0.0.1:{}/hook", free_port());
    let chain = format!(
        "[chains.regtest]\nrpc_url = \"{}\"\nrpc_user = \"test\"\nrpc_password = \"test\"\n\
         descriptor = \"{}\"\npoll_interval_ms = 200\n",
        node.url(),
        descriptor()
    );
    let config = format!(
        "[webhook]\nurl = \"{webhook}\"\nsecret_file = \"/etc/settled/webhook.secret\"\n\
         first_retry_ms = 200\n\n{chain}"
    );
    let c = Container::boot().await;

    // enable --now returns once a Type=notify service said READY=1.
    let started = Instant::now();
    c.ok(&install_script(&config));
    assert_eq!(c.ok("systemctl is-active settled"), "active");
    assert_eq!(c.unit("Type"), "notify");
    // STATUS= carries the lag as soon as the first poll knows it, not at the first
    // watchdog ping (30 s after start).
    let want = format!("regtest {height} (lag 0)");
    let status = wait_for("STATUS= with the lag", || async {
        let s = c.unit("StatusText");
        s.contains(&want).then_some(s)
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{status} came after {:?}",
        started.elapsed()
    );

    // The doc the unit names is where the README's step 1 put it.
    let doc = c.unit("Documentation");
    let doc = doc
        .strip_prefix("file://")
        .expect("a file:// documentation");
    c.ok(&format!("test -s {doc}"));

    // A member of the group creates an invoice through the socket; another user is
    // refused.
    c.ok("useradd --no-create-home --groups settled backend && useradd --no-create-home other");
    let created = c.ok("setpriv --reuid=backend --regid=backend --init-groups \
         settlectl --json invoice create --chain regtest --amount 0.001");
    let invoice: serde_json::Value = serde_json::from_str(&created).unwrap();
    assert_eq!(invoice["status"], "PENDING", "{invoice}");
    let refused =
        c.fails("setpriv --reuid=other --regid=other --init-groups settlectl invoice list");
    assert!(refused.contains("ermission denied"), "{refused}");

    // The configuration is read-only to the service (root outside it may write).
    let ro = c.fails(
        "nsenter --target=$(systemctl show --property=MainPID --value settled) --mount \
         touch /etc/settled/written-by-the-service",
    );
    assert!(ro.contains("Read-only file system"), "{ro}");
    c.ok("touch /etc/settled/written-by-root && rm /etc/settled/written-by-root");

    // A backup to the service's private /tmp, or to a directory it cannot write, is
    // refused with the reason; one to /var/lib/settled is there for the operator.
    let tmp = c.fails("settlectl backup /tmp/settled.db");
    assert!(tmp.contains("PrivateTmp="), "{tmp}");
    c.ok("test ! -e /tmp/settled.db");
    let ro = c.fails("settlectl backup /var/backups/settled.db");
    assert!(ro.contains("read-only to settled"), "{ro}");
    let done = c.ok("settlectl backup /var/lib/settled/backup.db");
    assert!(
        done.starts_with("backed up to /var/lib/settled/backup.db"),
        "{done}"
    );
    c.ok("test -s /var/lib/settled/backup.db");

    // The webhook receiver is not there: the attempt says so, in those words.
    let deliveries = wait_for("a failed webhook attempt", || async {
        let list = c.ok("settlectl webhooks list");
        list.contains("connection refused").then_some(list)
    })
    .await;
    assert!(
        !deliveries.contains("error sending request"),
        "{deliveries}"
    );

    // A cookie settled's user cannot read fails check-config, as a credentials problem.
    let cookie_config = config.replace(
        "rpc_user = \"test\"\nrpc_password = \"test\"\n",
        "rpc_cookie_file = \"/etc/settled/node.cookie\"\n",
    );
    c.ok(&format!(
        "printf '__cookie__:x\\n' > /etc/settled/node.cookie && chmod 0600 /etc/settled/node.cookie
cat > /etc/settled/cookie.toml <<'TOML'
{cookie_config}
TOML
chgrp settled /etc/settled/cookie.toml && chmod 0640 /etc/settled/cookie.toml"
    ));
    let cookie = c.fails(
        "setpriv --reuid=settled --regid=settled --init-groups \
         settled check-config --config /etc/settled/cookie.toml",
    );
    assert!(
        cookie.contains("RPC credentials: user settled") && cookie.contains("node.cookie"),
        "{cookie}"
    );
    assert!(!cookie.contains("unreachable"), "{cookie}");

    // Stopped: exit status 0, never restarted, the watchdog fed throughout.
    c.ok("systemctl stop settled");
    assert_eq!(c.unit("ActiveState"), "inactive");
    assert_eq!(c.unit("Result"), "success", "{}", c.journal());
    assert_eq!(c.unit("ExecMainStatus"), "0");
    assert_eq!(c.unit("NRestarts"), "0");
    c.poweroff();
}
