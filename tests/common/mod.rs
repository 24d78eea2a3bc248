//! The test harness: a real `bitcoind -regtest` on free loopback ports, a payer that
//! builds and signs its own transactions from coinbase outputs (the node has no
//! wallet), and `settled` run as the real binary, spoken to over its admin socket.
//!
//! `SETTLED_BITCOIND` points the tests at another bitcoind; by default they use the
//! one `scripts/build-bitcoind` cached.

#![allow(dead_code)]

pub mod anvil;
pub mod checker;
pub mod http;
pub mod model;
pub mod proxy;
pub mod receiver;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use bitcoin::consensus::encode::{deserialize_hex, serialize_hex};
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{
    Address, Amount, Block, CompressedPublicKey, Network, OutPoint, ScriptBuf, Sequence,
    Transaction, TxIn, TxOut, Txid, Witness, absolute, transaction,
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// How long any condition is waited for before a test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// The account key the daemon derives deposit addresses from (public only).
pub const TPUB: &str = "tpubD6NzVbkrYhZ4XgiXtGrdW5XDAPFCL9h7we1vwNCpn8tGbBcgfVYjXyhWo4E1xkh56hjod1RhGjxbaTLV3X4FyWuejifB9jusQ46QzG87VKp";

/// The descriptor settled uses for [`TPUB`].
pub fn descriptor() -> String {
    format!("wpkh({TPUB}/0/*)")
}

/// A loopback port free now, for a node or a receiver started next, and kept from
/// every other test process until this one ends.
///
/// Taken below the kernel's ephemeral range (32768 and up), not by binding port 0:
/// a port from that range is handed to the next outbound connection too (the
/// daemon's, a node's), which then holds it when the test binds it (CI saw
/// `AddrInUse`). A port handed out is free when checked but bound only later, by a
/// node still starting: another test process (a second suite, the bench) checking it
/// in between would see it free too (CI saw `AddrInUse` again). So each port is
/// also reserved by a lock on a file named after it, held until this process exits.
pub fn free_port() -> u16 {
    use std::fs::{File, OpenOptions};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());
    let dir = ports_dir();
    let start = std::process::id().wrapping_mul(7_919) % SPAN;
    for _ in 0..SPAN {
        let port = (FIRST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN) as u16;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))
            .unwrap();
        if lock.try_lock().is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            HELD.lock().unwrap().push(lock);
            return port;
        }
    }
    panic!("no free loopback port below 32000")
}

/// Where [`free_port`] keeps its lock files, made once per process.
fn ports_dir() -> &'static Path {
    static DIR: std::sync::LazyLock<PathBuf> = std::sync::LazyLock::new(|| {
        let dir = std::env::temp_dir().join("settled-test-ports");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    });
    &DIR
}

#[cfg(test)]
mod ports {
    /// A port handed out stays reserved: another process (here, another open file
    /// description, which flock treats alike) cannot lock it, and it is not handed out
    /// again.
    #[test]
    fn a_port_handed_out_is_reserved_from_other_processes() {
        let port = super::free_port();
        let file = std::fs::File::open(super::ports_dir().join(port.to_string())).unwrap();
        assert!(file.try_lock().is_err(), "port {port} is not reserved");
        assert_ne!(super::free_port(), port);
    }
}

/// A listener of this process on a free loopback port: another port is tried if one
/// [`free_port`] gave is taken before it is bound (by a process that does not reserve
/// its ports).
pub async fn listen() -> (tokio::net::TcpListener, u16) {
    loop {
        let port = free_port();
        if let Ok(l) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            return (l, port);
        }
    }
}

/// Where the project's scripts cache the nodes they build or install.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("SETTLED_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                });
            home.join("settled")
        })
}

/// Writes a webhook secret file holding `content`, readable by its owner only.
pub fn webhook_secret(dir: &Path, content: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("webhook.secret");
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The bitcoind binary the tests run.
pub fn bitcoind_path() -> PathBuf {
    if let Some(p) = std::env::var_os("SETTLED_BITCOIND") {
        return p.into();
    }
    let p = cache_dir().join("bitcoin-core-kernel-sys-0.4.1-zmq/bin/bitcoind");
    assert!(
        p.exists(),
        "no bitcoind at {}: run scripts/build-bitcoind (scripts/test does), or set SETTLED_BITCOIND",
        p.display()
    );
    p
}

/// The settled binary: cargo's for the tests, `SETTLED_BIN` for the demo.
pub fn settled_bin() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_settled") {
        return p.into();
    }
    std::env::var_os("SETTLED_BIN")
        .map(PathBuf::from)
        .expect("SETTLED_BIN names the settled binary")
}

/// The settlectl binary: cargo's for the tests, beside `settled_bin` otherwise.
pub fn settlectl_bin() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_settlectl") {
        return p.into();
    }
    settled_bin().with_file_name("settlectl")
}

/// Polls `f` until it returns `Some`, or fails the test with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A regtest node of our own.
pub struct Node {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub rpc_port: u16,
    p2p_port: u16,
    args: Vec<String>,
    http: corepc_client::Client,
}

// `-rpcauth` for user "test", password "test" (salted HMAC-SHA256, as Core's
// rpcauth.py writes it). Unlike -rpcpassword it leaves the cookie file on too.
const RPCAUTH: &str = "test:0123456789abcdef0123456789abcdef$3aeecd2a3f581a29df60e4e8f9bd0b7f2ed98f94b21df0f4721a7ac59fbd533c";

/// A spendable output of the payer.
#[derive(Debug, Clone, Copy)]
pub struct Utxo {
    pub outpoint: OutPoint,
    pub value: Amount,
}

impl Node {
    /// Starts `bitcoind -regtest` and waits for its RPC.
    pub async fn start() -> Node {
        Node::start_with(&[]).await
    }

    /// Starts `bitcoind -regtest` with extra options.
    pub async fn start_with(args: &[&str]) -> Node {
        let rpc_port = free_port();
        let mut node = Node {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            rpc_port,
            p2p_port: free_port(),
            args: args.iter().map(|a| a.to_string()).collect(),
            http: corepc_client::Client::new_with_auth(
                &format!("http://127.0.0.1:{rpc_port}"),
                corepc_client::Auth::UserPass("test".into(), "test".into()),
            )
            .unwrap(),
        };
        node.restart().await;
        node
    }

    /// The options the node starts with from its next restart on.
    pub fn set_args(&mut self, args: &[&str]) {
        self.args = args.iter().map(|a| a.to_string()).collect();
    }

    /// Starts the node again on the same data and ports.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the node is running");
        let child = Command::new(bitcoind_path())
            .args([
                "-regtest",
                &format!("-datadir={}", self.dir.path().display()),
                &format!("-rpcport={}", self.rpc_port),
                &format!("-port={}", self.p2p_port),
                "-rpcbind=127.0.0.1",
                "-rpcallowip=127.0.0.1",
                &format!("-rpcauth={RPCAUTH}"),
                "-listen=0",
                "-dnsseed=0",
                "-fixedseeds=0",
                "-printtoconsole=0",
                "-server=1",
            ])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("bitcoind starts");
        self.child = Some(child);
        wait_for("bitcoind's RPC", || async {
            self.try_rpc("getblockchaininfo", json!([])).await.ok()
        })
        .await;
    }

    /// Stops the node the way an operator would (`stop`), and waits until it is gone.
    pub async fn stop(&mut self) {
        let _ = self.try_rpc("stop", json!([])).await;
        if let Some(mut c) = self.child.take() {
            let _ = tokio::task::spawn_blocking(move || c.wait()).await;
        }
    }

    /// SIGKILL: the node loses what it had not flushed.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Deletes the stopped node's chain: it restarts as a fresh node at genesis.
    pub fn wipe(&mut self) {
        assert!(self.child.is_none(), "the node is running");
        std::fs::remove_dir_all(self.dir.path().join("regtest")).unwrap();
    }

    /// The cookie file the node writes for RPC clients.
    pub fn cookie_file(&self) -> PathBuf {
        self.dir.path().join("regtest/.cookie")
    }

    /// The RPC URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rpc_port)
    }

    /// Calls the node; its error as text.
    pub async fn try_rpc(&self, method: &str, params: Value) -> Result<Value, String> {
        let args = params.as_array().cloned().unwrap_or_default();
        self.http
            .call::<Value>(method, &args)
            .await
            .map_err(|e| e.to_string())
    }

    /// Calls the node; fails the test on an error.
    pub async fn rpc(&self, method: &str, params: Value) -> Value {
        self.try_rpc(method, params)
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// Current height.
    pub async fn height(&self) -> u64 {
        self.rpc("getblockcount", json!([])).await.as_u64().unwrap()
    }

    /// Mines `n` blocks to `address`, returning their hashes.
    pub async fn mine_to(&self, n: u64, address: &str) -> Vec<String> {
        let hashes = self.rpc("generatetoaddress", json!([n, address])).await;
        hashes
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap().to_string())
            .collect()
    }

    /// Mines a block holding exactly `txs` (plus the coinbase), to `address`.
    pub async fn mine_block_with(&self, address: &str, txs: &[&Transaction]) -> String {
        let raw: Vec<String> = txs.iter().map(|t| serialize_hex(*t)).collect();
        let r = self.rpc("generateblock", json!([address, raw])).await;
        r["hash"].as_str().unwrap().to_string()
    }

    /// Decodes a block.
    pub async fn block(&self, hash: &str) -> Block {
        let hex = self.rpc("getblock", json!([hash, 0])).await;
        deserialize_hex(hex.as_str().unwrap()).unwrap()
    }

    /// The tip's timestamp: ahead of the clock after blocks mined in quick succession.
    pub async fn tip_time(&self) -> i64 {
        let best = self.rpc("getbestblockhash", json!([])).await;
        self.rpc("getblockheader", json!([best])).await["time"]
            .as_i64()
            .unwrap()
    }

    /// A block's timestamp.
    pub async fn block_time(&self, hash: &str) -> i64 {
        self.rpc("getblockheader", json!([hash])).await["time"]
            .as_i64()
            .unwrap()
    }

    /// Broadcasts a transaction.
    pub async fn send(&self, tx: &Transaction) -> Txid {
        let r = self
            .rpc("sendrawtransaction", json!([serialize_hex(tx)]))
            .await;
        Txid::from_str(r.as_str().unwrap()).unwrap()
    }

    /// Whether a transaction is in the mempool.
    pub async fn in_mempool(&self, txid: &Txid) -> bool {
        let pool = self.rpc("getrawmempool", json!([])).await;
        pool.as_array()
            .unwrap()
            .iter()
            .any(|t| t.as_str() == Some(&txid.to_string()))
    }

    /// Addresses of a descriptor, by the node's own derivation.
    pub async fn derive_addresses(&self, descriptor: &str, to: u32) -> Vec<String> {
        let info = self.rpc("getdescriptorinfo", json!([descriptor])).await;
        let with_sum = format!("{descriptor}#{}", info["checksum"].as_str().unwrap());
        let r = self
            .rpc("deriveaddresses", json!([with_sum, [0, to]]))
            .await;
        r.as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A payer with its own key: mines coinbases to itself and spends them.
pub struct Payer {
    secret: SecretKey,
    pub address: Address,
    utxos: Vec<Utxo>,
}

impl Payer {
    /// Mines 110 blocks to a fresh key: 10 mature coinbases to spend.
    pub async fn fund(node: &Node) -> Payer {
        Payer::fund_with(node, 10).await
    }

    /// Mines `coins` + 100 blocks to a fresh key: `coins` mature coinbases to spend.
    pub async fn fund_with(node: &Node, coins: usize) -> Payer {
        let secp = Secp256k1::new();
        let secret = SecretKey::from_slice(&[0x42; 32]).unwrap();
        let pk = CompressedPublicKey(secret.public_key(&secp));
        let address = Address::p2wpkh(&pk, Network::Regtest);
        let hashes = node.mine_to(coins as u64 + 100, &address.to_string()).await;
        let mut utxos = Vec::new();
        for h in &hashes[..coins] {
            let block = node.block(h).await;
            let cb = &block.txdata[0];
            utxos.push(Utxo {
                outpoint: OutPoint::new(cb.compute_txid(), 0),
                value: cb.output[0].value,
            });
        }
        Payer {
            secret,
            address,
            utxos,
        }
    }

    /// How many outputs it has left to spend.
    pub fn coins(&self) -> usize {
        self.utxos.len()
    }

    /// Gives it an output to spend (taken after the others).
    pub fn give(&mut self, u: Utxo) {
        self.utxos.insert(0, u);
    }

    /// Takes an output to spend.
    pub fn take(&mut self) -> Utxo {
        self.utxos.pop().expect("the payer has coins left")
    }

    /// Builds and signs a transaction spending `input` to `outputs`, change to self.
    pub fn build(
        &mut self,
        input: Utxo,
        outputs: &[(&str, Amount)],
        fee: Amount,
        rbf: bool,
    ) -> Transaction {
        let secp = Secp256k1::new();
        let mut out: Vec<TxOut> = outputs
            .iter()
            .map(|(addr, value)| TxOut {
                value: *value,
                script_pubkey: script_of(addr),
            })
            .collect();
        let spent: Amount = outputs.iter().map(|(_, v)| *v).sum();
        let change = input.value - spent - fee;
        out.push(TxOut {
            value: change,
            script_pubkey: self.address.script_pubkey(),
        });
        let mut tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: input.outpoint,
                script_sig: ScriptBuf::new(),
                sequence: if rbf {
                    Sequence::ENABLE_RBF_NO_LOCKTIME
                } else {
                    Sequence::MAX
                },
                witness: Witness::default(),
            }],
            output: out,
        };
        let pk = CompressedPublicKey(self.secret.public_key(&secp));
        let script_code = ScriptBuf::new_p2wpkh(&pk.wpubkey_hash());
        let sighash = SighashCache::new(&tx)
            .p2wpkh_signature_hash(0, &script_code, input.value, EcdsaSighashType::All)
            .unwrap();
        let sig = secp.sign_ecdsa(&Message::from_digest(sighash.to_byte_array()), &self.secret);
        tx.input[0].witness = Witness::p2wpkh(&bitcoin::ecdsa::Signature::sighash_all(sig), &pk.0);
        // The change is ours to spend next.
        self.utxos.insert(
            0,
            Utxo {
                outpoint: OutPoint::new(tx.compute_txid(), (tx.output.len() - 1) as u32),
                value: change,
            },
        );
        tx
    }

    /// Takes the change of the transaction built last (to spend it unconfirmed).
    pub fn take_change(&mut self) -> Utxo {
        self.utxos.remove(0)
    }

    /// Spends `input` back to the payer, paying `fee` (a replacement or a conflict).
    pub fn spend_to_self(&mut self, input: Utxo, fee: Amount) -> Transaction {
        self.build(input, &[], fee, true)
    }

    /// Forgets the change of a transaction that was replaced.
    pub fn forget(&mut self, tx: &Transaction) {
        let txid = tx.compute_txid();
        self.utxos.retain(|u| u.outpoint.txid != txid);
    }

    /// A payment of `btc` (a decimal string) to `address` spending `input`, not sent.
    pub fn payment(&mut self, input: Utxo, address: &str, btc: &str, rbf: bool) -> Transaction {
        let amount = Amount::from_str_in(btc, bitcoin::Denomination::Bitcoin).unwrap();
        self.build(input, &[(address, amount)], Amount::from_sat(1_000), rbf)
    }

    /// Pays `btc` to `address` from the next coin, broadcasting it.
    pub async fn pay(&mut self, node: &Node, address: &str, btc: &str, rbf: bool) -> Transaction {
        let input = self.take();
        let tx = self.payment(input, address, btc, rbf);
        node.send(&tx).await;
        tx
    }

    /// Pays `btc` (no RBF) to the invoice `inv`'s address and mines `blocks` blocks to
    /// itself: the transaction and the blocks' hashes.
    pub async fn pay_and_mine(
        &mut self,
        node: &Node,
        inv: &Value,
        btc: &str,
        blocks: u64,
    ) -> (Transaction, Vec<String>) {
        let tx = self
            .pay(node, inv["address"].as_str().unwrap(), btc, false)
            .await;
        let mined = node.mine_to(blocks, &self.address.to_string()).await;
        (tx, mined)
    }
}

/// An address nobody in the tests pays to: mining a replacement branch there gives
/// its blocks other coinbases than the blocks they replace.
pub fn other_address() -> String {
    let secp = Secp256k1::new();
    let secret = SecretKey::from_slice(&[0x43; 32]).unwrap();
    Address::p2wpkh(
        &CompressedPublicKey(secret.public_key(&secp)),
        Network::Regtest,
    )
    .to_string()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The output script paying `address` (regtest).
pub fn script_of(address: &str) -> ScriptBuf {
    Address::from_str(address)
        .unwrap()
        .require_network(Network::Regtest)
        .unwrap()
        .script_pubkey()
}

/// A running `settled`.
pub struct Daemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
    /// The chain the harness waits on and creates invoices for.
    pub chain: String,
    /// Extra environment of the daemon's process.
    pub env: Vec<(String, String)>,
}

impl Daemon {
    /// Writes a config for `node` (with `extra` lines appended to `[chains.regtest]`)
    /// and starts the daemon.
    pub async fn start(node: &Node, extra: &str) -> Daemon {
        Daemon::start_with_auth(node, "rpc_user = \"test\"\nrpc_password = \"test\"", extra).await
    }

    /// As [`Daemon::start`], with the given auth lines.
    pub async fn start_with_auth(node: &Node, auth: &str, extra: &str) -> Daemon {
        let mut d = Daemon::configure(node, auth, extra);
        d.restart().await;
        d
    }

    /// Writes the config; starts nothing.
    pub fn configure(node: &Node, auth: &str, extra: &str) -> Daemon {
        // Polls every 100 ms, unless `extra` says otherwise.
        let poll = match extra.contains("poll_interval_ms") {
            true => "",
            false => "poll_interval_ms = 100\n",
        };
        let section = format!(
            "rpc_url = \"{url}\"\n{auth}\ndescriptor = \"{desc}\"\n{poll}{extra}",
            url = node.url(),
            desc = descriptor(),
        );
        Daemon::configure_chain("regtest", &section)
    }

    /// Writes a config with one chain, `[chains.<chain>]` holding `section`.
    pub fn configure_chain(chain: &str, section: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        let config = dir.path().join("config.toml");
        let chains = Path::new(env!("CARGO_MANIFEST_DIR")).join("chains");
        std::fs::write(
            &config,
            format!(
                r#"[daemon]
data_dir = "{data}"
admin_socket = "{socket}"
chains_dir = "{chains}"

[chains.{chain}]
{section}
"#,
                data = dir.path().join("data").display(),
                socket = socket.display(),
                chains = chains.display(),
            ),
        )
        .unwrap();
        Daemon {
            child: None,
            dir,
            config,
            socket,
            chain: chain.to_string(),
            env: Vec::new(),
        }
    }

    /// Starts the daemon again on the same data, and waits until it has caught up.
    pub async fn restart(&mut self) {
        self.spawn();
        let socket = self.socket.clone();
        let chain = self.chain.clone();
        wait_for("settled to answer and catch up", || {
            let socket = socket.clone();
            let chain = chain.clone();
            async move {
                let mut a = Admin::connect(&socket).await.ok()?;
                let s = a
                    .call("chain.status", json!({ "chain": chain }))
                    .await
                    .ok()?;
                let c = &s["chains"][0];
                (c["running"] == json!(true)
                    && c["last_poll_at"].is_i64()
                    && c["lag_blocks"] == json!(0))
                .then_some(())
            }
        })
        .await;
    }

    /// Starts the daemon and waits only for its socket (for a chain that cannot
    /// catch up).
    pub async fn start_unsynced(node: &Node, extra: &str) -> Daemon {
        let mut d = Daemon::configure(node, "rpc_user = \"test\"\nrpc_password = \"test\"", extra);
        d.spawn_unsynced().await;
        d
    }

    /// Starts the daemon and waits only for its socket.
    pub async fn spawn_unsynced(&mut self) {
        self.spawn();
        let socket = self.socket.clone();
        wait_for("settled's socket", || {
            let socket = socket.clone();
            async move { Admin::connect(&socket).await.ok().map(|_| ()) }
        })
        .await;
    }

    /// Starts the process and returns at once.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "the daemon is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("settled.log"))
            .unwrap();
        let child = Command::new(settled_bin())
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "settled=debug,info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("settled starts");
        self.child = Some(child);
    }

    /// A daemon whose Bitcoin node is away (invoices and the backend's decisions still
    /// make events), with `extra` TOML after its chain section; started.
    pub async fn start_offline(extra: &str) -> Daemon {
        let mut d = Daemon::configure_offline(extra);
        d.spawn_unsynced().await;
        d
    }

    /// The config of [`Daemon::start_offline`]; starts nothing.
    pub fn configure_offline(extra: &str) -> Daemon {
        let section = format!(
            "rpc_url = \"http://127.0.0.1:9\"\nrpc_user = \"u\"\nrpc_password = \"p\"\n\
             descriptor = \"{}\"\n\n{extra}",
            descriptor()
        );
        Daemon::configure_chain("regtest", &section)
    }

    /// Runs `settlectl` against this daemon from `cwd` (the test's own if `None`);
    /// fails the test unless it succeeds, and returns what it printed.
    pub fn ctl(&self, cwd: Option<&Path>, args: &[&str]) -> String {
        let mut cmd = self.ctl_command(args);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `settlectl --socket <this daemon's> args...`, not started.
    pub fn ctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(settlectl_bin());
        cmd.arg("--socket").arg(&self.socket).args(args);
        cmd
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon is running").id()
    }

    /// Sends `signal` (TERM, INT, ...) and waits for the process to exit, at most
    /// `within`; returns its exit status.
    pub fn signal_and_wait(&mut self, signal: &str, within: Duration) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
        let mut child = self.child.take().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > within {
                let _ = child.kill();
                panic!("settled did not exit within {within:?} of SIG{signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process has ended by itself (a fault point, a crash); then it is
    /// no longer running for [`Daemon::restart`].
    pub fn exited(&mut self) -> bool {
        let gone = self
            .child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_some());
        if gone {
            self.child = None;
        }
        gone
    }

    /// Whether the process runs.
    pub fn running(&mut self) -> bool {
        !self.exited() && self.child.is_some()
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// A new admin connection.
    pub async fn admin(&self) -> Admin {
        let mut a = Admin::connect(&self.socket).await.unwrap();
        a.chain = self.chain.clone();
        a
    }

    /// The daemon's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("settled.log")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- settled log ---\n{}", self.log());
        }
        self.kill();
    }
}

/// A JSON-RPC client of the admin socket.
pub struct Admin {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
    next: u64,
    /// The chain `invoice` and `wait_chain` are about.
    pub chain: String,
}

impl Admin {
    /// Connects.
    pub async fn connect(path: &Path) -> std::io::Result<Admin> {
        let (r, w) = UnixStream::connect(path).await?.into_split();
        Ok(Admin {
            reader: BufReader::new(r),
            writer: w,
            next: 1,
            chain: "regtest".into(),
        })
    }

    /// Sends a raw line.
    pub async fn send_line(&mut self, line: &str) {
        self.try_send_line(line).await.unwrap();
    }

    /// Sends a raw line; the daemon may close the connection before it is all sent.
    pub async fn try_send_line(&mut self, line: &str) -> std::io::Result<()> {
        self.writer.write_all(line.as_bytes()).await?;
        self.writer.write_all(b"\n").await
    }

    /// Reads one message; `None` when the daemon closed the connection.
    pub async fn read(&mut self) -> Option<Value> {
        let mut line = String::new();
        let n = tokio::time::timeout(WAIT, self.reader.read_line(&mut line))
            .await
            .expect("an answer in time")
            .ok()?;
        (n > 0).then(|| serde_json::from_str(&line).unwrap())
    }

    /// Calls a method: the result, or the error object.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        let id = self.next;
        self.next += 1;
        let req = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_line(&req.to_string()).await;
        loop {
            let msg = self
                .read()
                .await
                .ok_or_else(|| json!("connection closed"))?;
            if msg["id"] != json!(id) {
                continue;
            }
            if let Some(e) = msg.get("error") {
                return Err(e.clone());
            }
            return Ok(msg["result"].clone());
        }
    }

    /// Calls a method that must succeed.
    pub async fn ok(&mut self, method: &str, params: Value) -> Value {
        self.call(method, params)
            .await
            .unwrap_or_else(|e| panic!("{method} failed: {e}"))
    }

    /// Creates an invoice on this connection's chain.
    pub async fn invoice(&mut self, params: Value) -> Value {
        let mut p = json!({ "chain": self.chain });
        p.as_object_mut()
            .unwrap()
            .extend(params.as_object().unwrap().clone());
        self.ok("invoice.create", p).await
    }

    /// Waits until the invoice satisfies `pred`, returning it.
    pub async fn wait_invoice(
        &mut self,
        id: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let inv = self.ok("invoice.get", json!({"id": id})).await;
            if pred(&inv) {
                return inv;
            }
            assert!(
                start.elapsed() < WAIT,
                "timed out waiting for {what}; invoice is {inv:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the invoice has `status`.
    pub async fn wait_status(&mut self, id: &str, status: &str) -> Value {
        self.wait_invoice(id, status, |i| i["status"] == json!(status))
            .await
    }

    /// All events of one invoice.
    pub async fn events_of(&mut self, id: &str) -> Vec<Value> {
        let r = self
            .ok("events.list", json!({"invoice_id": id, "limit": 1000}))
            .await;
        r["events"].as_array().unwrap().clone()
    }

    /// How many events of type `kind` the daemon holds, read page by page.
    pub async fn count_events(&mut self, kind: &str) -> usize {
        let all = checker::events(self).await;
        all.iter().filter(|e| e["type"] == kind).count()
    }

    /// How many invoices `invoice.list` gives, page by page.
    pub async fn count_invoices(&mut self) -> usize {
        let mut listed = 0;
        let mut cursor = Value::Null;
        loop {
            let page = self
                .ok("invoice.list", json!({"limit": 1000, "cursor": cursor}))
                .await;
            listed += page["invoices"].as_array().unwrap().len();
            cursor = page["next_cursor"].clone();
            if cursor.is_null() {
                return listed;
            }
        }
    }

    /// Waits until the chain's `chain.status` entry satisfies `pred`, returning it.
    pub async fn wait_chain(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let s = self
                .ok("chain.status", json!({ "chain": self.chain }))
                .await;
            let c = s["chains"][0].clone();
            if pred(&c) {
                return c;
            }
            assert!(start.elapsed() < WAIT, "timed out waiting for {what}: {c}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the watcher has scanned `height` and is at the node's tip.
    pub async fn wait_scanned(&mut self, height: u64) {
        self.wait_chain(&format!("height {height} scanned"), |c| {
            c["scanned_height"].as_u64() >= Some(height) && c["lag_blocks"] == json!(0)
        })
        .await;
    }
}

/// Creates an invoice for `btc`, pays it in full, mines a block, and waits until it
/// is `COMPLETED` (one confirmation: amounts from 0.001 to 1 BTC on regtest).
pub async fn completed_invoice(
    admin: &mut Admin,
    node: &Node,
    payer: &mut Payer,
    btc: &str,
) -> Value {
    let inv = admin.invoice(json!({ "amount": btc })).await;
    payer
        .pay(node, inv["address"].as_str().unwrap(), btc, false)
        .await;
    node.mine_to(1, &payer.address.to_string()).await;
    admin
        .wait_status(inv["id"].as_str().unwrap(), "COMPLETED")
        .await
}

/// Types of the events, in order.
pub fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

/// A node and a funded payer, with settled running against them.
pub async fn setup(extra: &str) -> (Node, Payer, Daemon) {
    let node = Node::start().await;
    let payer = Payer::fund(&node).await;
    let daemon = Daemon::start(&node, extra).await;
    (node, payer, daemon)
}
