//! The config loader on mutated configs: a valid `config.toml` with one value
//! replaced by junk of another type or range, or a line lost or doubled. Loading
//! never panics, and a refusal names the key whose value was changed.

use proptest::prelude::*;

use super::Settings;

const TPUB: &str = "tpubD6NzVbkrYhZ4XgiXtGrdW5XDAPFCL9h7we1vwNCpn8tGbBcgfVYjXyhWo4E1xkh56hjod1RhGjxbaTLV3X4FyWuejifB9jusQ46QzG87VKp";
const ETH_XPUB: &str = "xpub6DCoCpSuQZB2jawqnGMEPS63ePKWkwWPH4TU45Q7LPXWuNd8TMtVxRrgjtEshuqpK3mdhaWHPFsBngh5GFZaM6si3yZdUsT8ddYM3PwnATt";

fn valid(dir: &std::path::Path) -> String {
    let chains = concat!(env!("CARGO_MANIFEST_DIR"), "/chains");
    format!(
        r#"[daemon]
data_dir = "{data}"
admin_socket = "{data}/admin.sock"
chains_dir = "{chains}"
log_format = "text"

[invoice]
expires_in = 3600

[webhook]
url = "http://127.0.0.1:9/hook"
secret_file = "{data}/webhook.secret"
retry_for = 600
timeout = 10
first_retry_ms = 500
max_retry_interval = 60
max_in_flight = 4

[chains.regtest]
rpc_url = "http://127.0.0.1:18443"
rpc_user = "u"
rpc_password = "p"
xpub = "{TPUB}"
poll_interval_ms = 1000
rpc_timeout = 30
confirmation_window = 86400
late_payment_window = 604800
accept_late_payments = false
final_confirmations = 6
max_reorg_depth = 100

[chains.anvil]
rpc_url = "http://127.0.0.1:8545"
xpub = "{ETH_XPUB}"
tokens = ["USDT", "USDC"]
poll_interval_ms = 2000
"#,
        data = dir.display(),
    )
}

fn junk() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("-1".to_string()),
        Just("0".to_string()),
        Just("1e400".to_string()),
        Just("99999999999999999999999".to_string()),
        Just("true".to_string()),
        Just("\"\"".to_string()),
        Just("\"x\"".to_string()),
        Just("[]".to_string()),
        Just("[1, \"a\"]".to_string()),
        Just("{}".to_string()),
        Just("\"http://\"".to_string()),
        Just("\"\\u0000\"".to_string()),
        "\\PC{0,20}".prop_map(|s| format!("\"{}\"", s.replace(['\\', '"'], ""))),
        // Not TOML at all.
        "[{}\\[\\]=\"',#a-z0-9]{1,8}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn a_mutated_config_loads_or_is_refused_naming_the_key(
        line in 0usize..64, how in 0..3u8, value in junk(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("webhook.secret");
        std::fs::write(&secret, "0123456789abcdef0123456789abcdef").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let text = valid(dir.path());
        // The config mutated from must load: were it refused, every case would pass.
        let base = dir.path().join("valid.toml");
        std::fs::write(&base, &text).unwrap();
        if let Err(e) = Settings::load(&base) {
            prop_assert!(false, "the unmutated config is refused: {e:#}");
        }
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        // Only lines holding a value are changed.
        let values: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].contains(" = ")).collect();
        let at = values[line % values.len()];
        let key = lines[at].split(" = ").next().unwrap().to_string();
        match how {
            0 => lines[at] = format!("{key} = {value}"),
            1 => { lines.remove(at); }
            _ => { let l = lines[at].clone(); lines.insert(at, l); }
        }
        let path = dir.path().join("config.toml");
        std::fs::write(&path, lines.join("\n")).unwrap();
        if let Err(e) = Settings::load(&path) {
            let msg = format!("{e:#}");
            prop_assert!(!msg.is_empty());
            // A changed value is named; a line lost or doubled may be named by its
            // section (a missing required key) or by TOML's own position.
            if msg.contains("TOML parse error") {
                prop_assert!(msg.contains("line"), "{key} = {value}: {msg}");
            } else if how == 0 {
                prop_assert!(msg.contains(&key), "{key} = {value}: {msg}");
            }
        }
    }
}
