//! A real anvil on a free loopback port, with the test contracts of
//! `tests/contracts/` deployed at the addresses `chains/anvil.toml` lists, and
//! helpers to pay from its unlocked accounts.
//!
//! `SETTLED_ANVIL` points the tests at another anvil; by default they use the one
//! `scripts/install-anvil` cached.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use alloy::primitives::{Address, U256};
use alloy::providers::{Provider, RootProvider};
use alloy::sol_types::{SolCall, SolValue};
use serde_json::{Value, json};

use super::{Daemon, free_port, wait_for};

alloy::sol! {
    #[derive(Debug)]
    function mint(address to, uint256 value);
    function transfer(address to, uint256 value) returns (bool);
    function pay(address to);
    function split(address a, address b);
    function payInRevertedFrame(address to);
    function payThenFail(address to);
}

/// m/44'/60'/0' of the mnemonic "abandon" x11 + "about"; address 0/0 is
/// 0x9858EfFD232B4033E47d90003D41EC34EcaEda94.
pub const ETH_XPUB: &str = "xpub6DCoCpSuQZB2jawqnGMEPS63ePKWkwWPH4TU45Q7LPXWuNd8TMtVxRrgjtEshuqpK3mdhaWHPFsBngh5GFZaM6si3yZdUsT8ddYM3PwnATt";

/// anvil's first account: deploys the contracts.
pub const DEPLOYER: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
/// anvil's second account: pays the invoices.
pub const PAYER: &str = "0x70997970C51812dc3A010C7d01b50e0d17dC79C8";
/// Where `chains/anvil.toml` expects the tokens.
pub const USDT: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
pub const DAI: &str = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512";
/// Deployed after the others, so that their addresses stay where they were.
pub const USDC: &str = "0x5FC8d32690cc91D4c39d9d3abcBD16989F875707";

/// The anvil binary the tests run.
pub fn anvil_path() -> PathBuf {
    if let Some(p) = std::env::var_os("SETTLED_ANVIL") {
        return p.into();
    }
    let p = super::cache_dir().join("anvil-1.7.1/anvil");
    assert!(
        p.exists(),
        "no anvil at {}: run scripts/install-anvil (scripts/test does), or set SETTLED_ANVIL",
        p.display()
    );
    p
}

fn artifact(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/contracts/build/{name}.json"));
    let json: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    hex(json["bytecode"].as_str().unwrap())
}

fn hex(s: &str) -> Vec<u8> {
    alloy::primitives::hex::decode(s).unwrap()
}

/// A running anvil.
pub struct Anvil {
    child: Child,
    pub port: u16,
    provider: RootProvider,
    /// The `Payer` contract (sends ETH from inside a contract).
    pub payer_contract: String,
}

impl Anvil {
    /// Starts anvil (chain id 31337) and deploys the test contracts.
    pub async fn start() -> Anvil {
        Anvil::start_with(&[]).await
    }

    /// Starts anvil with extra options and deploys the test contracts.
    pub async fn start_with(args: &[&str]) -> Anvil {
        let port = free_port();
        let child = Command::new(anvil_path())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("anvil starts");
        let url = format!("http://127.0.0.1:{port}");
        let provider = RootProvider::new_http(url.parse().unwrap());
        let mut anvil = Anvil {
            child,
            port,
            provider,
            payer_contract: String::new(),
        };
        wait_for("anvil's RPC", || {
            let p = anvil.provider.clone();
            async move { p.get_chain_id().await.ok() }
        })
        .await;
        let usdt = anvil
            .deploy(
                "TestToken",
                ("USDT".to_string(), U256::from(6u8)).abi_encode_params(),
            )
            .await;
        let dai = anvil
            .deploy(
                "TestToken",
                ("DAI".to_string(), U256::from(18u8)).abi_encode_params(),
            )
            .await;
        assert_eq!(
            (usdt.as_str(), dai.as_str()),
            (USDT, DAI),
            "the tokens of chains/anvil.toml"
        );
        anvil.payer_contract = anvil.deploy("Payer", Vec::new()).await;
        for token in [USDT, DAI] {
            let call = mintCall {
                to: PAYER.parse().unwrap(),
                value: U256::from(10u64).pow(U256::from(30u64)),
            };
            anvil.call(DEPLOYER, token, &call.abi_encode(), 0).await;
        }
        let usdc = anvil
            .deploy(
                "TestToken",
                ("USDC".to_string(), U256::from(6u8)).abi_encode_params(),
            )
            .await;
        assert_eq!(usdc, USDC, "the USDC of chains/anvil.toml");
        let call = mintCall {
            to: PAYER.parse().unwrap(),
            value: U256::from(10u64).pow(U256::from(30u64)),
        };
        anvil.call(DEPLOYER, USDC, &call.abi_encode(), 0).await;
        anvil
    }

    /// Stops the node's process where it is (SIGSTOP): it holds every connection and
    /// answers nothing until [`Anvil::resume`], as a hung node does.
    pub fn pause(&self) {
        signal(self.child.id(), "-STOP");
    }

    /// Lets a paused node run again (SIGCONT), with its state as it was.
    pub fn resume(&self) {
        signal(self.child.id(), "-CONT");
    }

    /// The RPC URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A raw JSON-RPC call.
    pub async fn rpc(&self, method: &'static str, params: Value) -> Value {
        self.provider
            .raw_request::<_, Value>(method.into(), params)
            .await
            .unwrap_or_else(|e| panic!("{method} failed: {e}"))
    }

    /// The tip's height.
    pub async fn height(&self) -> u64 {
        self.provider.get_block_number().await.unwrap()
    }

    /// Mines `n` empty blocks.
    pub async fn mine(&self, n: u64) {
        self.rpc("anvil_mine", json!([format!("0x{n:x}")])).await;
    }

    /// Sends a transaction from an unlocked account and waits for its receipt (anvil
    /// mines it at once unless automining is off). `gas` set skips estimation, so a
    /// reverting transaction is mined too.
    pub async fn send(&self, tx: Value) -> String {
        let hash = self.rpc("eth_sendTransaction", json!([tx])).await;
        hash.as_str().unwrap().to_string()
    }

    /// The receipt of `tx`, once mined.
    pub async fn receipt(&self, tx: &str) -> Value {
        let tx = tx.to_string();
        wait_for(&format!("receipt of {tx}"), || {
            let tx = tx.clone();
            async move {
                let r = self.rpc("eth_getTransactionReceipt", json!([tx])).await;
                (!r.is_null()).then_some(r)
            }
        })
        .await
    }

    async fn deploy(&self, name: &str, args: Vec<u8>) -> String {
        let mut code = artifact(name);
        code.extend(args);
        let tx = self
            .send(json!({"from": DEPLOYER, "data": format!("0x{}", alloy::primitives::hex::encode(code))}))
            .await;
        let r = self.receipt(&tx).await;
        let a: Address = r["contractAddress"].as_str().unwrap().parse().unwrap();
        a.to_checksum(None)
    }

    /// Calls a contract from `from` with `value` wei and waits until it is mined.
    pub async fn call(&self, from: &str, to: &str, data: &[u8], value: u128) -> String {
        let tx = self
            .send(json!({
                "from": from,
                "to": to,
                "data": format!("0x{}", alloy::primitives::hex::encode(data)),
                "value": format!("0x{value:x}"),
            }))
            .await;
        self.receipt(&tx).await;
        tx
    }

    /// Sends `wei` from the payer account to `to`.
    pub async fn pay_eth(&self, to: &str, wei: u128) -> String {
        let tx = self
            .send(json!({"from": PAYER, "to": to, "value": format!("0x{wei:x}")}))
            .await;
        self.receipt(&tx).await;
        tx
    }

    /// Transfers `units` of `token` from the payer to `to`.
    pub async fn pay_token(&self, token: &str, to: &str, units: U256) -> String {
        let call = transferCall {
            to: to.parse().unwrap(),
            value: units,
        };
        self.call(PAYER, token, &call.abi_encode(), 0).await
    }

    /// A token transfer beyond the payer's balance, mined with a fixed gas limit: it
    /// reverts. Returns the transaction hash.
    pub async fn failing_token_transfer(&self, token: &str, from: &str, to: &str) -> String {
        let call = transferCall {
            to: to.parse().unwrap(),
            value: U256::from(1u8),
        };
        let tx = self
            .send(json!({
                "from": from,
                "to": token,
                "data": format!("0x{}", alloy::primitives::hex::encode(call.abi_encode())),
                "gas": "0x30000",
            }))
            .await;
        let r = self.receipt(&tx).await;
        assert_eq!(r["status"], json!("0x0"), "the transfer reverted");
        tx
    }

    /// Sends `wei` to `to` from inside the Payer contract (an internal transfer).
    pub async fn pay_through_contract(&self, to: &str, wei: u128) -> String {
        let call = payCall {
            to: to.parse().unwrap(),
        };
        self.call(PAYER, &self.payer_contract.clone(), &call.abi_encode(), wei)
            .await
    }

    /// Splits `wei` between `a` and `b` from inside the Payer contract.
    pub async fn split_through_contract(&self, a: &str, b: &str, wei: u128) -> String {
        let call = splitCall {
            a: a.parse().unwrap(),
            b: b.parse().unwrap(),
        };
        self.call(PAYER, &self.payer_contract.clone(), &call.abi_encode(), wei)
            .await
    }

    /// A successful transaction whose frame that paid `to` reverted. The gas is set:
    /// anvil's estimate would leave the inner frame too little to pay at all.
    pub async fn pay_in_reverted_frame(&self, to: &str, wei: u128) -> String {
        let call = payInRevertedFrameCall {
            to: to.parse().unwrap(),
        };
        let tx = self.call_with_gas(&call.abi_encode(), wei).await;
        assert_eq!(self.receipt(&tx).await["status"], json!("0x1"));
        // The frame did pay, then reverted: what a follower must not count.
        let trace = self
            .rpc(
                "debug_traceTransaction",
                json!([tx, {"tracer": "callTracer"}]),
            )
            .await;
        let inner = &trace["calls"][0];
        assert!(inner["error"].is_string(), "{trace}");
        assert_eq!(
            inner["calls"][0]["to"].as_str().map(str::to_lowercase),
            Some(to.to_lowercase()),
            "{trace}"
        );
        tx
    }

    /// A transaction that pays `to` from inside the contract and then reverts as a
    /// whole (receipt status 0), mined with a fixed gas limit.
    pub async fn reverted_payment(&self, to: &str, wei: u128) -> String {
        let call = payThenFailCall {
            to: to.parse().unwrap(),
        };
        let tx = self.call_with_gas(&call.abi_encode(), wei).await;
        let r = self.receipt(&tx).await;
        assert_eq!(r["status"], json!("0x0"), "the transaction reverted");
        tx
    }

    /// Calls the Payer contract from the payer with `wei` and a fixed gas limit (no
    /// estimate, so a reverting call is mined too).
    async fn call_with_gas(&self, data: &[u8], wei: u128) -> String {
        self.send(json!({
            "from": PAYER,
            "to": self.payer_contract,
            "data": format!("0x{}", alloy::primitives::hex::encode(data)),
            "value": format!("0x{wei:x}"),
            "gas": "0x40000",
        }))
        .await
    }

    /// Balance of `address` at the tip, in wei.
    pub async fn balance(&self, address: &str) -> U256 {
        self.provider
            .get_balance(address.parse().unwrap())
            .await
            .unwrap()
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// `wei` of `eth` ("0.5" ETH).
pub fn wei(eth: &str) -> u128 {
    let (int, frac) = eth.split_once('.').unwrap_or((eth, ""));
    let frac = format!("{frac:0<18}");
    int.parse::<u128>().unwrap() * 10u128.pow(18) + frac.parse::<u128>().unwrap()
}

impl Daemon {
    /// settled on `anvil`'s chain with its tokens, the test xpub, and `extra` lines.
    pub async fn start_anvil(anvil: &Anvil, extra: &str) -> Daemon {
        let mut d = Daemon::configure_anvil(anvil, extra);
        d.restart().await;
        d
    }

    /// settled on Bitcoin regtest (`node`) and on `anvil` at once.
    pub async fn start_regtest_and_anvil(node: &super::Node, anvil: &Anvil) -> Daemon {
        let anvil_section = format!(
            "\n[chains.anvil]\nrpc_url = \"{}\"\nxpub = \"{ETH_XPUB}\"\ntokens = [\"USDT\", \"DAI\", \"USDC\"]\npoll_interval_ms = 100",
            anvil.url()
        );
        let mut d = Daemon::configure(
            node,
            "rpc_user = \"test\"\nrpc_password = \"test\"",
            &anvil_section,
        );
        d.restart().await;
        let mut admin = d.admin().await;
        admin.chain = "anvil".into();
        admin.wait_scanned(anvil.height().await).await;
        d
    }

    /// The config of [`Daemon::start_anvil`]; starts nothing.
    pub fn configure_anvil(anvil: &Anvil, extra: &str) -> Daemon {
        // Polls every 100 ms, unless `extra` says otherwise.
        let poll = match extra.contains("poll_interval_ms") {
            true => "",
            false => "poll_interval_ms = 100\n",
        };
        Daemon::configure_chain(
            "anvil",
            &format!(
                "rpc_url = \"{}\"\nxpub = \"{ETH_XPUB}\"\ntokens = [\"USDT\", \"DAI\", \"USDC\"]\n{poll}{extra}",
                anvil.url()
            ),
        )
    }
}
