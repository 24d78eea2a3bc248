//! This installation's `config.toml` (then `SETTLED__<SECTION>__<KEY>` variables),
//! checked field by field and across fields, and resolved with the chain files into
//! [`Settings`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::chains::{
    Asset, ChainFile, Finality, FinalityFile, Kind, Policy, PolicyFile, TierFile, Token,
};
use crate::keys::AddressSource;

/// `config.toml` as written.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    #[serde(default)]
    pub(crate) daemon: DaemonSection,
    #[serde(default)]
    pub(crate) invoice: InvoiceSection,
    #[serde(default)]
    pub(crate) webhook: WebhookSection,
    #[serde(default)]
    pub(crate) metrics: MetricsSection,
    #[serde(default)]
    pub(crate) chains: BTreeMap<String, ChainSection>,
}

/// `[metrics]`: nothing listens unless `listen` is set.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MetricsSection {
    /// Where to serve Prometheus text, e.g. `127.0.0.1:9184`.
    pub(crate) listen: Option<String>,
}

/// `[daemon]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DaemonSection {
    pub(crate) data_dir: PathBuf,
    pub(crate) admin_socket: PathBuf,
    pub(crate) chains_dir: PathBuf,
    pub(crate) log_format: LogFormat,
    /// The admin socket's group (mode 0660); by default the daemon's own group.
    pub(crate) admin_socket_group: Option<String>,
    /// When set, only these uids may use the admin socket, whatever its mode allows.
    pub(crate) admin_allowed_uids: Option<Vec<u32>>,
}

impl Default for DaemonSection {
    fn default() -> Self {
        DaemonSection {
            data_dir: "/var/lib/settled".into(),
            admin_socket: "/run/settled/admin.sock".into(),
            chains_dir: "/usr/share/settled/chains".into(),
            log_format: LogFormat::Text,
            admin_socket_group: None,
            admin_allowed_uids: None,
        }
    }
}

/// How the daemon writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// `[invoice]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct InvoiceSection {
    pub(crate) expires_in: u64,
}

impl Default for InvoiceSection {
    fn default() -> Self {
        InvoiceSection { expires_in: 86_400 }
    }
}

/// `[webhook]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct WebhookSection {
    pub(crate) url: Option<String>,
    pub(crate) secret_file: Option<PathBuf>,
    pub(crate) retry_for: u64,
    pub(crate) timeout: u64,
    /// The first retry's delay; each next one doubles, up to `max_retry_interval`.
    pub(crate) first_retry_ms: u64,
    pub(crate) max_retry_interval: u64,
    pub(crate) max_in_flight: usize,
}

impl Default for WebhookSection {
    fn default() -> Self {
        WebhookSection {
            url: None,
            secret_file: None,
            retry_for: 259_200,
            timeout: 10,
            first_retry_ms: 5_000,
            max_retry_interval: 3_600,
            max_in_flight: 16,
        }
    }
}

/// Webhooks, resolved: on when `webhook.secret_file` is set.
#[derive(Clone)]
pub(crate) struct WebhookSettings {
    pub(crate) url: Option<String>,
    /// The HMAC key: the secret file's content, surrounding whitespace trimmed.
    pub(crate) secret: Vec<u8>,
    pub(crate) retry_for: Duration,
    pub(crate) timeout: Duration,
    pub(crate) first_retry: Duration,
    pub(crate) max_retry: Duration,
    pub(crate) max_in_flight: usize,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("url", &self.url)
            .field("secret", &"(hidden)")
            .finish_non_exhaustive()
    }
}

/// `[chains.<name>]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChainSection {
    #[serde(default = "yes")]
    pub(crate) enabled: bool,
    pub(crate) rpc_url: Option<String>,
    pub(crate) rpc_cookie_file: Option<PathBuf>,
    pub(crate) rpc_user: Option<String>,
    #[serde(serialize_with = "hide")]
    pub(crate) rpc_password: Option<String>,
    pub(crate) descriptor: Option<String>,
    pub(crate) xpub: Option<String>,
    #[serde(default)]
    pub(crate) tokens: Vec<String>,
    #[serde(default = "default_poll")]
    pub(crate) poll_interval_ms: u64,
    /// Seconds a node call may take before it is given up and retried.
    #[serde(default = "default_rpc_timeout")]
    pub(crate) rpc_timeout: u64,
    pub(crate) start_height: Option<u64>,
    pub(crate) trace_internal_transfers: Option<bool>,
    /// Bitcoin: the node's `-zmqpubsequence` endpoint, pushing blocks and mempool changes.
    pub(crate) zmq_sequence: Option<String>,
    /// Ethereum: the node's WebSocket endpoint, pushing new heads.
    pub(crate) ws_url: Option<String>,
    // The chain file's policy keys, overridable here.
    pub(crate) final_confirmations: Option<FinalityFile>,
    pub(crate) confirmation_window: Option<u64>,
    pub(crate) late_payment_window: Option<u64>,
    pub(crate) accept_late_payments: Option<bool>,
    pub(crate) max_reorg_depth: Option<u32>,
    pub(crate) confirmations: Option<Vec<TierFile>>,
}

fn yes() -> bool {
    true
}

fn default_poll() -> u64 {
    1000
}

fn default_rpc_timeout() -> u64 {
    30
}

fn hide<S: serde::Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str("(hidden)"),
        None => s.serialize_none(),
    }
}

/// How to reach a node's JSON-RPC.
#[derive(Debug, Clone)]
pub(crate) enum RpcAuth {
    None,
    UserPass(String, String),
    Cookie(PathBuf),
}

/// Why settled's user cannot read a node's cookie file `path` (shown after "RPC
/// credentials: ").
pub(crate) fn cookie_unreadable(path: &Path, e: &std::io::Error) -> String {
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid).ok().flatten().map_or_else(
        || format!("uid {uid}"),
        |u| format!("user {} (uid {uid})", u.name),
    );
    format!(
        "{user} cannot read the cookie file {}: {e}; run bitcoind with \
         -rpccookieperms=group and add this user to its group (README, \"Running in \
         production\", step 4), or use rpc_user and rpc_password",
        path.display()
    )
}

/// One configured chain, resolved and checked.
#[derive(Debug, Clone)]
pub(crate) struct ChainSettings {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) enabled: bool,
    pub(crate) network: Option<bitcoin::Network>,
    pub(crate) native: Asset,
    pub(crate) policy: Policy,
    pub(crate) rpc_url: String,
    pub(crate) rpc_auth: RpcAuth,
    pub(crate) addresses: Option<AddressSource>,
    pub(crate) poll_interval: Duration,
    pub(crate) rpc_timeout: Duration,
    pub(crate) start_height: Option<u64>,
    /// Ethereum-like chains: the EIP-155 chain id the node must report.
    pub(crate) chain_id: Option<u64>,
    /// Ethereum-like chains: the accepted tokens.
    pub(crate) tokens: Vec<Token>,
    /// Ethereum-like chains: find ETH sent by contracts in call traces.
    pub(crate) trace_internal_transfers: bool,
    /// Where the node pushes what changed (`zmq_sequence`, `ws_url`); polling stays.
    pub(crate) push_url: Option<String>,
}

impl ChainSettings {
    /// The asset called `symbol` on this chain, and its token when it is one.
    pub(crate) fn asset(&self, symbol: &str) -> Option<(&Asset, Option<&Token>)> {
        if symbol == self.native.symbol {
            return Some((&self.native, None));
        }
        self.tokens
            .iter()
            .find(|t| t.asset.symbol == symbol)
            .map(|t| (&t.asset, Some(t)))
    }
}

/// The whole resolved configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) data_dir: PathBuf,
    pub(crate) admin_socket: PathBuf,
    pub(crate) log_format: LogFormat,
    /// The admin socket's group id, when one is configured.
    pub(crate) admin_socket_gid: Option<u32>,
    pub(crate) admin_allowed_uids: Option<Vec<u32>>,
    /// Where the Prometheus metrics are served, when they are.
    pub(crate) metrics_listen: Option<std::net::SocketAddr>,
    pub(crate) default_expires_in: u64,
    pub(crate) chains: Vec<ChainSettings>,
    /// `None` when webhooks are off (no `webhook.secret_file`).
    pub(crate) webhook: Option<WebhookSettings>,
}

impl Settings {
    /// The database file in `data_dir`.
    pub(crate) fn db_path(&self) -> PathBuf {
        self.data_dir.join("settled.db")
    }

    /// Reads `path`, applies the environment, and checks everything. Errors name the key.
    pub(crate) fn load(path: &Path) -> anyhow::Result<(Settings, ConfigFile)> {
        let file = read(path)?;
        let settings = resolve(&file)?;
        Ok((settings, file))
    }
}

fn read(path: &Path) -> anyhow::Result<ConfigFile> {
    if !path.is_file() {
        bail!("config file {} does not exist", path.display());
    }
    // The config crate reports TOML syntax errors without their line ("floating-point
    // number overflowed"): toml's own parser shows the line and the key. The file is
    // read once, and the config crate is given the text.
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
    if let Err(e) = text.parse::<toml::Table>() {
        bail!("{}: {e}", path.display());
    }
    config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("SETTLED")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        )
        .build()
        .and_then(|c| c.try_deserialize::<ConfigFile>())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn resolve(file: &ConfigFile) -> anyhow::Result<Settings> {
    if file.invoice.expires_in == 0 {
        bail!("invoice.expires_in: must be more than 0 seconds");
    }
    if let Some(url) = &file.webhook.url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        bail!("webhook.url: {url:?} is not an http:// or https:// URL");
    }
    let mut chains = Vec::new();
    for (name, section) in &file.chains {
        chains.push(resolve_chain(&file.daemon.chains_dir, name, section)?);
    }
    Ok(Settings {
        data_dir: file.daemon.data_dir.clone(),
        admin_socket: file.daemon.admin_socket.clone(),
        log_format: file.daemon.log_format,
        admin_socket_gid: file
            .daemon
            .admin_socket_group
            .as_deref()
            .map(group_id)
            .transpose()?,
        admin_allowed_uids: file.daemon.admin_allowed_uids.clone(),
        metrics_listen: file
            .metrics
            .listen
            .as_deref()
            .map(|a| {
                a.parse().map_err(|_| {
                    anyhow::anyhow!(
                        "metrics.listen: {a:?} is not an address and port such as 127.0.0.1:9184"
                    )
                })
            })
            .transpose()?,
        default_expires_in: file.invoice.expires_in,
        chains,
        webhook: resolve_webhook(&file.webhook)?,
    })
}

/// The id of the group named `name` (or given by number).
fn group_id(name: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = name.parse() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => bail!("daemon.admin_socket_group: there is no group {name:?} on this system"),
        Err(e) => bail!("daemon.admin_socket_group: cannot look up group {name:?}: {e}"),
    }
}

fn resolve_webhook(w: &WebhookSection) -> anyhow::Result<Option<WebhookSettings>> {
    let Some(path) = &w.secret_file else {
        if w.url.is_some() {
            bail!(
                "webhook.secret_file: webhook.url is set, but deliveries are signed with this secret"
            );
        }
        return Ok(None);
    };
    if w.retry_for == 0 {
        bail!("webhook.retry_for: must be more than 0 seconds");
    }
    if w.timeout == 0 {
        bail!("webhook.timeout: must be more than 0 seconds");
    }
    if w.first_retry_ms == 0 {
        bail!("webhook.first_retry_ms: must be more than 0");
    }
    if w.max_in_flight == 0 {
        bail!("webhook.max_in_flight: must be at least 1");
    }
    Ok(Some(WebhookSettings {
        url: w.url.clone(),
        secret: read_secret(path)?,
        retry_for: Duration::from_secs(w.retry_for),
        timeout: Duration::from_secs(w.timeout),
        first_retry: Duration::from_millis(w.first_retry_ms),
        max_retry: Duration::from_secs(w.max_retry_interval)
            .max(Duration::from_millis(w.first_retry_ms)),
        max_in_flight: w.max_in_flight,
    }))
}

/// The webhook secret: refused when others may read the file, or when it is empty.
fn read_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::os::unix::fs::PermissionsExt;
    let at = format!("webhook.secret_file: {}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o007 != 0 {
        bail!(
            "{at}: is readable by others (mode {mode:04o}); anyone who reads it can forge \
             webhooks: chmod 600 (or 640 for a group) and start again"
        );
    }
    let text = std::fs::read(path).map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
    let secret = text.trim_ascii().to_vec();
    if secret.is_empty() {
        bail!("{at}: is empty");
    }
    Ok(secret)
}

fn resolve_chain(chains_dir: &Path, name: &str, s: &ChainSection) -> anyhow::Result<ChainSettings> {
    let at = format!("chains.{name}");
    let chain_file = ChainFile::load(chains_dir, name)?;
    let native = Asset {
        symbol: chain_file.native.symbol.clone(),
        decimals: chain_file.native.decimals,
    };
    let over = PolicyFile {
        final_confirmations: s.final_confirmations.clone(),
        confirmation_window: s.confirmation_window,
        late_payment_window: s.late_payment_window,
        accept_late_payments: s.accept_late_payments,
        max_reorg_depth: s.max_reorg_depth,
        confirmations: s.confirmations.clone(),
    };
    let tokens = match chain_file.kind {
        Kind::Bitcoin if !s.tokens.is_empty() => {
            bail!("{at}.tokens: bitcoin chains have no tokens")
        }
        Kind::Bitcoin => Vec::new(),
        Kind::Ethereum => chain_file.tokens(&at, &s.tokens)?,
    };
    let policy = Policy::resolve(&at, &chain_file.policy(), &over, &native, &tokens)?;
    if chain_file.kind == Kind::Bitcoin && policy.finality == Finality::Finalized {
        bail!("{at}.final_confirmations: \"finalized\" is for ethereum chains; give a number");
    }
    if s.poll_interval_ms == 0 {
        bail!("{at}.poll_interval_ms: must be more than 0");
    }
    if s.rpc_timeout == 0 {
        bail!("{at}.rpc_timeout: must be more than 0 seconds");
    }
    let rpc_url = match (&s.rpc_url, s.enabled) {
        (Some(u), _) if u.starts_with("http://") || u.starts_with("https://") => u.clone(),
        (Some(u), _) => bail!("{at}.rpc_url: {u:?} is not an http:// or https:// URL"),
        (None, true) => bail!("{at}.rpc_url: an enabled chain needs its node's URL"),
        (None, false) => String::new(),
    };
    let rpc_auth = match (&s.rpc_cookie_file, &s.rpc_user, &s.rpc_password) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            bail!(
                "{at}.rpc_cookie_file: give either a cookie file or rpc_user and rpc_password, not both"
            )
        }
        (Some(c), None, None) => RpcAuth::Cookie(c.clone()),
        (None, Some(u), Some(p)) => RpcAuth::UserPass(u.clone(), p.clone()),
        (None, Some(_), None) => bail!("{at}.rpc_password: rpc_user is set without it"),
        (None, None, Some(_)) => bail!("{at}.rpc_user: rpc_password is set without it"),
        (None, None, None) => RpcAuth::None,
    };
    let push_url = match (chain_file.kind, &s.zmq_sequence, &s.ws_url) {
        (Kind::Bitcoin, _, Some(_)) => {
            bail!("{at}.ws_url: only ethereum chains have one; bitcoin's push is zmq_sequence")
        }
        (Kind::Ethereum, Some(_), _) => {
            bail!("{at}.zmq_sequence: only bitcoin chains have one; ethereum's push is ws_url")
        }
        (Kind::Bitcoin, Some(u), None) if u.starts_with("tcp://") && u.len() > 6 => Some(u.clone()),
        (Kind::Bitcoin, Some(u), None) => {
            bail!("{at}.zmq_sequence: {u:?} is not a tcp:// address (the node's -zmqpubsequence)")
        }
        (Kind::Ethereum, None, Some(u)) if u.starts_with("ws://") || u.starts_with("wss://") => {
            Some(u.clone())
        }
        (Kind::Ethereum, None, Some(u)) => {
            bail!("{at}.ws_url: {u:?} is not a ws:// or wss:// URL")
        }
        (_, None, None) => None,
    };
    let (network, addresses) = match chain_file.kind {
        Kind::Bitcoin => {
            let network = bitcoin_network(&at, chain_file.network.as_deref())?;
            if s.trace_internal_transfers.is_some() {
                bail!(
                    "{at}.trace_internal_transfers: only ethereum chains have internal transfers"
                );
            }
            let key = match (&s.descriptor, &s.xpub) {
                (Some(d), None) => ("descriptor", d),
                (None, Some(x)) => ("xpub", x),
                (Some(_), Some(_)) => bail!("{at}.xpub: give either descriptor or xpub, not both"),
                (None, None) if s.enabled => {
                    bail!("{at}.descriptor: an enabled bitcoin chain needs a descriptor or an xpub")
                }
                (None, None) => ("descriptor", &String::new()),
            };
            let source = if key.1.is_empty() {
                None
            } else {
                Some(
                    AddressSource::parse(key.1, network)
                        .map_err(|e| anyhow::anyhow!("{at}.{}: {e}", key.0))?,
                )
            };
            if s.enabled && matches!(rpc_auth, RpcAuth::None) {
                bail!(
                    "{at}.rpc_cookie_file: Bitcoin Core needs rpc_cookie_file, or rpc_user and rpc_password"
                );
            }
            (Some(network), source)
        }
        Kind::Ethereum => {
            if chain_file.chain_id.is_none() {
                bail!("{at}: the chain file chains/{name}.toml has no chain_id");
            }
            if s.descriptor.is_some() {
                bail!("{at}.descriptor: ethereum chains take an xpub, not a descriptor");
            }
            if !matches!(rpc_auth, RpcAuth::None | RpcAuth::UserPass(..)) {
                bail!(
                    "{at}.rpc_cookie_file: is for Bitcoin Core; an ethereum node takes rpc_user and rpc_password, or none"
                );
            }
            let source = match &s.xpub {
                Some(x) => Some(
                    AddressSource::parse_evm(x).map_err(|e| anyhow::anyhow!("{at}.xpub: {e}"))?,
                ),
                None if s.enabled => bail!(
                    "{at}.xpub: an enabled ethereum chain needs the account xpub (m/44'/60'/0')"
                ),
                None => None,
            };
            (None, source)
        }
    };
    Ok(ChainSettings {
        name: name.to_string(),
        kind: chain_file.kind,
        enabled: s.enabled,
        network,
        native,
        policy,
        rpc_url,
        rpc_auth,
        addresses,
        poll_interval: Duration::from_millis(s.poll_interval_ms),
        rpc_timeout: Duration::from_secs(s.rpc_timeout),
        start_height: s.start_height,
        chain_id: chain_file.chain_id,
        trace_internal_transfers: s
            .trace_internal_transfers
            .or(chain_file.trace_internal_transfers)
            .unwrap_or(false),
        tokens,
        push_url,
    })
}

fn bitcoin_network(at: &str, network: Option<&str>) -> anyhow::Result<bitcoin::Network> {
    use bitcoin::Network::*;
    Ok(match network {
        Some("mainnet") => Bitcoin,
        Some("testnet4") => Testnet4,
        Some("testnet") | Some("testnet3") => Testnet,
        Some("signet") => Signet,
        Some("regtest") => Regtest,
        Some(other) => bail!(
            "{at}: the chain file's network {other:?} is not mainnet, testnet4, signet or regtest"
        ),
        None => bail!("{at}: the chain file has no network"),
    })
}

/// `settled check-config`: validates and prints the effective configuration with
/// secrets hidden.
pub(crate) fn check(path: &Path) -> anyhow::Result<String> {
    let (settings, file) = Settings::load(path)?;
    let mut out = toml::to_string_pretty(&file).context("printing the configuration")?;
    for c in &settings.chains {
        out.push_str(&format!(
            "\n# chains.{}: {} {} ({}), effective policy:\n",
            c.name,
            match c.kind {
                Kind::Bitcoin => "bitcoin",
                Kind::Ethereum => "ethereum",
            },
            match (c.network, c.chain_id) {
                (Some(n), _) => n.to_string(),
                (None, Some(id)) => format!("chain id {id}"),
                (None, None) => String::new(),
            },
            if c.enabled { "enabled" } else { "disabled" },
        ));
        let p = &c.policy;
        out.push_str(&format!(
            "#   final_confirmations = {}\n#   confirmation_window = {}\n#   late_payment_window = {}\n\
             #   accept_late_payments = {}\n#   max_reorg_depth = {}\n",
            p.finality,
            p.confirmation_window,
            p.late_payment_window,
            p.accept_late_payments,
            p.max_reorg_depth
        ));
        for t in &p.tiers {
            let up_to = t.up_to.map_or("any amount".to_string(), |u| {
                format!(
                    "up to {} {}",
                    crate::amount::format(u, c.native.decimals),
                    c.native.symbol
                )
            });
            out.push_str(&format!("#   {up_to}: {} confirmation(s)\n", t.required));
        }
        for t in &c.tokens {
            out.push_str(&format!(
                "#   token {}: contract {}, {} decimals\n",
                t.asset.symbol,
                t.contract.to_checksum(None),
                t.asset.decimals
            ));
            let tiers = p.token_tiers.get(&t.asset.symbol).into_iter().flatten();
            for tier in tiers {
                out.push_str(&format!(
                    "#     {}: {} confirmation(s)\n",
                    tier.up_to.map_or("any amount".to_string(), |u| format!(
                        "up to {} {}",
                        crate::amount::format(u, t.asset.decimals),
                        t.asset.symbol
                    )),
                    tier.required
                ));
            }
        }
        if c.kind == Kind::Ethereum {
            out.push_str(&format!(
                "#   trace_internal_transfers = {}\n",
                c.trace_internal_transfers
            ));
        }
        if let (RpcAuth::Cookie(path), true) = (&c.rpc_auth, c.enabled) {
            // Read as the daemon will: under the unit, check-config runs as its user.
            match std::fs::File::open(path) {
                Ok(_) => out.push_str(&format!(
                    "#   rpc_cookie_file {}: readable\n",
                    path.display()
                )),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => out.push_str(&format!(
                    "#   rpc_cookie_file {}: not there yet (the node writes it when it starts)\n",
                    path.display()
                )),
                Err(e) => bail!(
                    "chains.{}.rpc_cookie_file: RPC credentials: {}",
                    c.name,
                    cookie_unreadable(path, &e)
                ),
            }
        }
        if let Some(a) = &c.addresses {
            out.push_str(&format!(
                "#   first address: {}\n",
                a.derive(0).map(|d| d.address).unwrap_or_default()
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod props;
