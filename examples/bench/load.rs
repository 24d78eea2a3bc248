//! The load the bench makes itself: coins of its own key fanned out into many small
//! outputs, payments signed here (the node has no wallet), sent and fetched through a
//! kept-alive JSON-RPC client with batches.

// Shared by the benches; each uses a part.
#![allow(dead_code)]

use bitcoin::consensus::encode::serialize_hex;
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{All, Message, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{
    Address, Amount, CompressedPublicKey, Network, OutPoint, ScriptBuf, Sequence, Transaction,
    TxIn, TxOut, Witness, absolute, transaction,
};
use serde_json::{Value, json};
use std::str::FromStr;

/// A JSON-RPC client of the node, on kept-alive connections.
#[derive(Clone)]
pub struct Rpc {
    http: reqwest::Client,
    url: String,
}

impl Rpc {
    pub fn new(url: &str) -> Rpc {
        Rpc {
            http: reqwest::Client::builder()
                .tls_certs_only(Vec::new())
                .timeout(std::time::Duration::from_secs(300))
                .build()
                .unwrap(),
            url: url.to_string(),
        }
    }

    pub async fn call(&self, method: &str, params: Value) -> Value {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let r = self.post(&body).await;
        assert!(r["error"].is_null(), "{method}: {r}");
        r["result"].clone()
    }

    async fn post(&self, body: &Value) -> Value {
        self.http
            .post(&self.url)
            .basic_auth("test", Some("test"))
            .json(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `method` once per entry of `params`, 1000 to a request.
    pub async fn batch(&self, method: &str, params: Vec<Value>) -> Vec<Value> {
        let mut out = Vec::with_capacity(params.len());
        for chunk in params.chunks(1000) {
            let body: Vec<Value> = chunk
                .iter()
                .enumerate()
                .map(|(i, p)| json!({"jsonrpc": "2.0", "id": i, "method": method, "params": p}))
                .collect();
            let r = self.post(&Value::Array(body)).await;
            for a in r.as_array().unwrap() {
                assert!(a["error"].is_null(), "{method}: {a}");
                out.push(a["result"].clone());
            }
        }
        out
    }

    pub async fn mine(&self, n: u64, to: &str) -> Vec<String> {
        let r = self.call("generatetoaddress", json!([n, to])).await;
        r.as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap().to_string())
            .collect()
    }

    pub async fn height(&self) -> u64 {
        self.call("getblockcount", json!([]))
            .await
            .as_u64()
            .unwrap()
    }

    /// Sends `txs` in batches over 16 connections at once: Core waits for its
    /// notifications after each one, and that wait overlaps across connections.
    pub async fn send_all(&self, txs: &[Transaction]) {
        let per = txs.len().div_ceil(16).max(1);
        futures_util::future::join_all(txs.chunks(per).map(|chunk| {
            let params = chunk.iter().map(|t| json!([serialize_hex(t)])).collect();
            self.batch("sendrawtransaction", params)
        }))
        .await;
    }
}

/// Coins of the bench's own key.
pub struct Coins {
    secp: Secp256k1<All>,
    secret: SecretKey,
    pk: CompressedPublicKey,
    pub address: String,
    coins: Vec<(OutPoint, Amount)>,
}

/// What each fanned-out coin holds.
const COIN: Amount = Amount::from_sat(500_000);
const FEE: Amount = Amount::from_sat(1_000);

impl Coins {
    /// At least `n` confirmed coins of [`COIN`], fanned out from coinbases mined here.
    pub async fn fund(rpc: &Rpc, n: usize) -> Coins {
        let secp = Secp256k1::new();
        let secret = SecretKey::from_slice(&[0x44; 32]).unwrap();
        let pk = CompressedPublicKey(secret.public_key(&secp));
        let address = Address::p2wpkh(&pk, Network::Regtest).to_string();
        let per_tx = 2_000usize;
        let fan_outs = n.div_ceil(per_tx);
        let hashes = rpc.mine(fan_outs as u64 + 100, &address).await;
        let mut c = Coins {
            secp,
            secret,
            pk,
            address,
            coins: Vec::new(),
        };
        let mut pending = Vec::new();
        for h in &hashes[..fan_outs] {
            let block = rpc.call("getblock", json!([h, 2])).await;
            let cb = &block["tx"][0];
            let txid = bitcoin::Txid::from_str(cb["txid"].as_str().unwrap()).unwrap();
            let sats = (cb["vout"][0]["value"].as_f64().unwrap() * 1e8).round() as u64;
            let input = (OutPoint::new(txid, 0), Amount::from_sat(sats));
            let script = c.script();
            let outputs = vec![
                TxOut {
                    value: COIN,
                    script_pubkey: script
                };
                per_tx
            ];
            let tx = c.sign(input, outputs);
            let txid = tx.compute_txid();
            c.coins
                .extend((0..per_tx).map(|i| (OutPoint::new(txid, i as u32), COIN)));
            pending.push(tx);
            // About a dozen fan-outs fill a block.
            if pending.len() == 10 {
                rpc.send_all(&pending).await;
                rpc.mine(1, &c.address).await;
                pending.clear();
            }
        }
        rpc.send_all(&pending).await;
        rpc.mine(1, &c.address).await;
        c
    }

    fn script(&self) -> ScriptBuf {
        ScriptBuf::new_p2wpkh(&self.pk.wpubkey_hash())
    }

    /// Payments of one coin each: to `to[i]` where given, else back to the bench.
    pub fn payments(&mut self, to: &[Option<&str>]) -> Vec<Transaction> {
        to.iter()
            .map(|addr| {
                let coin = self.coins.pop().expect("the bench has coins left");
                let script_pubkey = match addr {
                    Some(a) => Address::from_str(a)
                        .unwrap()
                        .require_network(Network::Regtest)
                        .unwrap()
                        .script_pubkey(),
                    None => self.script(),
                };
                self.sign(
                    coin,
                    vec![TxOut {
                        value: coin.1 - FEE,
                        script_pubkey,
                    }],
                )
            })
            .collect()
    }

    fn sign(&self, input: (OutPoint, Amount), output: Vec<TxOut>) -> Transaction {
        let spent: Amount = output.iter().map(|o| o.value).sum();
        let mut output = output;
        // A fan-out keeps its change; a payment spends the whole coin.
        let change = input
            .1
            .checked_sub(spent + FEE * 10)
            .unwrap_or(Amount::ZERO);
        if change > Amount::from_sat(10_000) {
            output.push(TxOut {
                value: change,
                script_pubkey: self.script(),
            });
        }
        let mut tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: input.0,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::default(),
            }],
            output,
        };
        let sighash = SighashCache::new(&tx)
            .p2wpkh_signature_hash(0, &self.script(), input.1, EcdsaSighashType::All)
            .unwrap();
        let sig = self
            .secp
            .sign_ecdsa(&Message::from_digest(sighash.to_byte_array()), &self.secret);
        tx.input[0].witness =
            Witness::p2wpkh(&bitcoin::ecdsa::Signature::sighash_all(sig), &self.pk.0);
        tx
    }
}

/// A TCP forwarder to the node that the bench opens when it wants settled to start:
/// closed, it drops every connection (the node looks down); open, it forwards, and
/// it remembers when the first forwarded connection came.
pub struct Gate {
    pub url: String,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    first: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

impl Gate {
    pub async fn new(node_port: u16) -> Gate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let first = std::sync::Arc::new(std::sync::Mutex::new(None));
        let (o, f) = (open.clone(), first.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !o.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                f.lock()
                    .unwrap()
                    .get_or_insert_with(std::time::Instant::now);
                tokio::spawn(async move {
                    let _ = inbound.set_nodelay(true);
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", node_port)).await
                    else {
                        return;
                    };
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        Gate { url, open, first }
    }

    /// Lets connections through from now on.
    pub fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Drops new connections again, and forgets when the first one went through.
    pub fn close(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        *self.first.lock().unwrap() = None;
    }

    /// When the first connection went through.
    pub fn first(&self) -> Option<std::time::Instant> {
        *self.first.lock().unwrap()
    }
}
