//! `settled check-config`: the configuration contract, checked from the outside.

use std::path::Path;
use std::process::Command;

const TPUB: &str = "tpubD6NzVbkrYhZ4XgiXtGrdW5XDAPFCL9h7we1vwNCpn8tGbBcgfVYjXyhWo4E1xkh56hjod1RhGjxbaTLV3X4FyWuejifB9jusQ46QzG87VKp";
// BIP84's published account key (mainnet).
const ZPUB: &str = "zpub6rFR7y4Q2AijBEqTUquhVz398htDFrtymD9xYYfG1m4wAcvPhXNfE3EfH1r1ADqtfSdVCToUG868RvUUkgDKf31mGDtKsAYz2oz2AGutZYs";

/// Runs `settled check-config` on `chain_section` (appended to a valid [daemon]).
fn check(body: &str, env: &[(&str, &str)]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
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
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_settled"));
    cmd.arg("check-config").arg("--config").arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
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
        "[chains.dogecoin]\nrpc_url = \"http://x:1\"",
        "chains.dogecoin",
    );
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
