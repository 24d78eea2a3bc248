//! `settled check-config`: the configuration contract, checked from the outside.

use std::path::Path;
use std::process::Command;

const TPUB: &str = "tpubD6NzVbkrYhZ4XgiXtGrdW5XDAPFCL9h7we1vwNCpn8tGbBcgfVYjXyhWo4E1xkh56hjod1RhGjxbaTLV3X4FyWuejifB9jusQ46QzG87VKp";
// BIP84's published account key (mainnet).
const ZPUB: &str = "zpub6rFR7y4Q2AijBEqTUquhVz398htDFrtymD9xYYfG1m4wAcvPhXNfE3EfH1r1ADqtfSdVCToUG868RvUUkgDKf31mGDtKsAYz2oz2AGutZYs";

/// Runs `settled check-config` on `body` (appended to a valid [daemon]).
fn check(body: &str, env: &[(&str, &str)]) -> (bool, String, String) {
    check_as(body, env, None)
}

/// As [`check`], as user `uid` (group nogroup) when given: the config and its folder
/// are readable by all, as under the unit.
fn check_as(body: &str, env: &[(&str, &str)], uid: Option<u32>) -> (bool, String, String) {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let chains = Path::new(env!("CARGO_MANIFEST_DIR")).join("chains");
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[daemon]\ndata_dir = \"{}\"\nchains_dir = \"{}\"\n\n{body}\n",
            dir.path().display(),
            chains.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_settled"));
    cmd.arg("check-config").arg("--config").arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(uid) = uid {
        cmd.uid(uid).gid(65534);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn regtest(extra: &str) -> String {
    format!(
        "[chains.regtest]\nrpc_url = \"http://127.0.0.1:18443\"\nrpc_user = \"u\"\nrpc_password = \"s3cret\"\nxpub = \"{TPUB}\"\n{extra}"
    )
}

fn refused(body: &str, key: &str) {
    let (ok, _, err) = check(body, &[]);
    assert!(!ok, "accepted: {body}");
    assert!(err.contains(key), "the error does not name {key}: {err}");
}

#[test]
fn a_valid_config_is_printed_with_secrets_hidden() {
    let (ok, out, err) = check(&regtest(""), &[]);
    assert!(ok, "{err}");
    assert!(out.contains("rpc_password = \"(hidden)\""), "{out}");
    assert!(!out.contains("s3cret"));
    assert!(out.contains("first address: bcrt1q"), "{out}");
}

#[test]
fn unknown_keys_are_errors_naming_the_key() {
    refused("[daemon2]\nx = 1", "daemon2");
    refused(&format!("{}\ncolour = \"red\"", regtest("")), "colour");
    refused("[invoice]\nexpires = 5", "expires");
    let (ok, _, err) = check(&regtest(""), &[("SETTLED__CHAINS__REGTEST__BOGUS", "1")]);
    assert!(!ok && err.contains("bogus"), "{err}");
}

#[test]
fn environment_overrides_the_file() {
    let (ok, out, err) = check(
        &regtest(""),
        &[("SETTLED__CHAINS__REGTEST__POLL_INTERVAL_MS", "250")],
    );
    assert!(ok, "{err}");
    assert!(out.contains("poll_interval_ms = 250"), "{out}");
}

#[test]
fn cross_field_mistakes_name_the_key() {
    refused(
        &format!("[chains.regtest]\nrpc_user = \"u\"\nrpc_password = \"p\"\nxpub = \"{TPUB}\""),
        "chains.regtest.rpc_url",
    );
    refused(
        &format!("[chains.regtest]\nrpc_url = \"http://x:1\"\nrpc_user = \"u\"\nxpub = \"{TPUB}\""),
        "chains.regtest.rpc_password",
    );
    refused(
        &format!("[chains.regtest]\nrpc_url = \"http://x:1\"\nxpub = \"{TPUB}\""),
        "chains.regtest.rpc_cookie_file",
    );
    // A mainnet key on regtest.
    refused(
        "[chains.regtest]\nrpc_url = \"http://x:1\"\nrpc_user = \"u\"\nrpc_password = \"p\"\nxpub = \"ZPUB\""
            .replace("ZPUB", ZPUB)
            .as_str(),
        "chains.regtest.xpub",
    );
    refused(
        "[chains.regtest]\nrpc_url = \"http://x:1\"\nrpc_user = \"u\"\nrpc_password = \"p\"\nxpub = \"not-a-key\"",
        "chains.regtest.xpub",
    );
    refused(
        &format!(
            "[chains.regtest]\nrpc_url = \"http://x:1\"\nrpc_user = \"u\"\nrpc_password = \"p\"\ndescriptor = \"wpkh({TPUB}/0/*)#aaaaaaaa\""
        ),
        "chains.regtest.descriptor",
    );
    refused(&regtest("descriptor = \"wpkh(x)\""), "chains.regtest.xpub");
    refused(
        &regtest(
            "[[chains.regtest.confirmations]]\nrequired = 1\n[[chains.regtest.confirmations]]\nup_to = \"1\"\nrequired = 2",
        ),
        "chains.regtest.confirmations[0].up_to",
    );
    refused(
        &regtest("final_confirmations = 10\nmax_reorg_depth = 5"),
        "chains.regtest.max_reorg_depth",
    );
    refused(
        &regtest("poll_interval_ms = 0"),
        "chains.regtest.poll_interval_ms",
    );
    refused(
        &regtest("zmq_sequence = \"127.0.0.1:28332\""),
        "chains.regtest.zmq_sequence",
    );
    refused(
        &regtest("ws_url = \"ws://127.0.0.1:8546\""),
        "chains.regtest.ws_url",
    );
    refused(
        "[chains.dogecoin]\nrpc_url = \"http://x:1\"",
        "chains.dogecoin",
    );
}

#[test]
fn service_keys_are_checked() {
    refused(&regtest("rpc_timeout = 0"), "chains.regtest.rpc_timeout");
    refused(
        &format!("[metrics]\nlisten = \"localhost\"\n{}", regtest("")),
        "metrics.listen",
    );
    refused(
        &format!(
            // Bare keys first land in the [daemon] table the test config starts.
            "admin_socket_group = \"no-such-group-here\"\n{}",
            regtest("")
        ),
        "daemon.admin_socket_group",
    );
    let (ok, out, err) = check(
        &format!(
            "admin_socket_group = \"nogroup\"\nadmin_allowed_uids = [0, 1001]\n\
             [metrics]\nlisten = \"127.0.0.1:9184\"\n{}",
            regtest("rpc_timeout = 5")
        ),
        &[],
    );
    assert!(ok, "{err}");
    assert!(out.contains("listen = \"127.0.0.1:9184\""), "{out}");
    assert!(out.contains("rpc_timeout = 5"), "{out}");
}

#[test]
fn every_shipped_bitcoin_chain_file_loads() {
    for (chain, key) in [
        ("bitcoin", ZPUB),
        ("testnet4", TPUB),
        ("signet", TPUB),
        ("regtest", TPUB),
    ] {
        let body = format!(
            "[chains.{chain}]\nrpc_url = \"http://127.0.0.1:1\"\nrpc_cookie_file = \"/nonexistent/.cookie\"\nxpub = \"{key}\""
        );
        let (ok, out, err) = check(&body, &[]);
        assert!(ok, "{chain}: {err}");
        assert!(out.contains("final_confirmations = 6"), "{chain}: {out}");
    }
}

#[test]
fn a_disabled_chain_needs_no_node() {
    let (ok, _, err) = check("[chains.regtest]\nenabled = false", &[]);
    assert!(ok, "{err}");
}

/// m/44'/60'/0' of the mnemonic "abandon" x11 + "about": its address 0/0 is
/// 0x9858EfFD232B4033E47d90003D41EC34EcaEda94.
const ETH_XPUB: &str = "xpub6DCoCpSuQZB2jawqnGMEPS63ePKWkwWPH4TU45Q7LPXWuNd8TMtVxRrgjtEshuqpK3mdhaWHPFsBngh5GFZaM6si3yZdUsT8ddYM3PwnATt";

#[test]
fn every_shipped_ethereum_chain_file_loads_with_its_tokens() {
    for (chain, id, tokens, decimals) in [
        ("ethereum", 1, &["USDT", "USDC"][..], 6),
        ("sepolia", 11155111, &["USDC"][..], 6),
        ("polygon", 137, &["USDT", "USDC"][..], 6),
        ("arbitrum", 42161, &["USDT", "USDC"][..], 6),
        ("base", 8453, &["USDC"][..], 6),
        ("bsc", 56, &["USDT", "USDC"][..], 18),
        ("anvil", 31337, &["USDT"][..], 6),
    ] {
        let list = tokens
            .iter()
            .map(|t| format!("{t:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let body = format!(
            "[chains.{chain}]\nrpc_url = \"http://127.0.0.1:1\"\nxpub = \"{ETH_XPUB}\"\ntokens = [{list}]"
        );
        let (ok, out, err) = check(&body, &[]);
        assert!(ok, "{chain}: {err}");
        assert!(out.contains(&format!("chain id {id}")), "{chain}: {out}");
        assert!(
            out.contains("0x9858EfFD232B4033E47d90003D41EC34EcaEda94"),
            "{chain}: {out}"
        );
        for t in tokens {
            assert!(
                out.contains(&format!("token {t}: contract 0x")),
                "{chain}: {out}"
            );
            assert!(
                out.contains(&format!("{decimals} decimals")),
                "{chain}: {out}"
            );
        }
    }
}

#[test]
fn ethereum_mistakes_are_named() {
    let eth = |extra: &str| {
        format!(
            "[chains.ethereum]\nrpc_url = \"http://127.0.0.1:1\"\nxpub = \"{ETH_XPUB}\"\n{extra}"
        )
    };
    let refused = |body: &str, key: &str| {
        let (ok, _, err) = check(body, &[]);
        assert!(!ok && err.contains(key), "expected {key} in: {err}");
    };
    refused(&eth("tokens = [\"DOGE\"]"), "chains.ethereum.tokens[0]");
    refused(
        &eth("ws_url = \"http://127.0.0.1:8546\""),
        "chains.ethereum.ws_url",
    );
    refused(
        &eth("zmq_sequence = \"tcp://127.0.0.1:28332\""),
        "chains.ethereum.zmq_sequence",
    );
    refused(
        &eth("descriptor = \"wpkh(x)\""),
        "chains.ethereum.descriptor",
    );
    refused(
        &eth("final_confirmations = \"soon\""),
        "chains.ethereum.final_confirmations",
    );
    refused(
        &eth("rpc_cookie_file = \"/x\""),
        "chains.ethereum.rpc_cookie_file",
    );
    refused(
        &format!("[chains.ethereum]\nrpc_url = \"http://127.0.0.1:1\"\nxpub = \"{ZPUB}\""),
        "chains.ethereum.xpub",
    );
    refused(
        "[chains.ethereum]\nrpc_url = \"http://127.0.0.1:1\"",
        "chains.ethereum.xpub",
    );
    refused(
        &regtest("final_confirmations = \"finalized\""),
        "chains.regtest.final_confirmations",
    );
    refused(
        &regtest("trace_internal_transfers = true"),
        "chains.regtest.trace_internal_transfers",
    );
    // "finalized" and a trace override are taken, from the file or the environment.
    let (ok, out, err) = check(
        &eth("trace_internal_transfers = false"),
        &[(
            "SETTLED__CHAINS__ETHEREUM__FINAL_CONFIRMATIONS",
            "finalized",
        )],
    );
    assert!(ok, "{err}");
    assert!(out.contains("trace_internal_transfers = false"), "{out}");
    assert!(out.contains("final_confirmations = \"finalized\""), "{out}");
}

#[test]
fn the_cookie_file_is_read_as_the_daemon_would() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cookie = dir.path().join(".cookie");
    std::fs::write(&cookie, "__cookie__:abc\n").unwrap();
    std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o600)).unwrap();
    let with_cookie = |cookie: &Path| {
        format!(
            "[chains.regtest]\nrpc_url = \"http://127.0.0.1:18443\"\n\
             rpc_cookie_file = \"{}\"\nxpub = \"{TPUB}\"\n",
            cookie.display()
        )
    };

    let (ok, out, err) = check(&with_cookie(&cookie), &[]);
    assert!(ok, "{err}");
    assert!(out.contains(".cookie: readable"), "{out}");
    // Not there yet is no error: the node writes it when it starts.
    let (ok, out, err) = check(&with_cookie(&dir.path().join("missing")), &[]);
    assert!(ok, "{err}");
    assert!(out.contains("not there yet"), "{out}");

    // Another user than the file's owner, as settled's user beside bitcoind's.
    let root = std::fs::metadata("/proc/self").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    if root.unwrap_or(false) {
        let (ok, _, err) = check_as(&with_cookie(&cookie), &[], Some(65534));
        assert!(!ok, "an unreadable cookie passed");
        assert!(
            err.contains("chains.regtest.rpc_cookie_file: RPC credentials: user nobody (uid 65534) cannot read the cookie file"),
            "{err}"
        );
        assert!(err.contains("Permission denied"), "{err}");
    }
}
