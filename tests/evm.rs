//! Ethereum on a real anvil: native ETH (direct and from contracts), ERC-20 tokens of
//! 6 and 18 decimals, failures that never count, reorganisations, restarts and expiry.

mod common;

use alloy::primitives::U256;
use common::anvil::{Anvil, DAI, USDT, wei};
use common::{Daemon, types};
use serde_json::json;

#[tokio::test]
async fn eth_payment_waits_for_confirmations_then_completes() {
    let anvil = Anvil::start().await;
    let daemon = Daemon::start_anvil(&anvil, "").await;
    let mut admin = daemon.admin().await;
    // 2 ETH needs 3 confirmations on anvil.toml.
    let inv = admin.invoice(json!({"asset": "ETH", "amount": "2"})).await;
    let id = inv["id"].as_str().unwrap();
    let address = inv["address"].as_str().unwrap();
    assert_eq!(inv["address"], json!("0x9858EfFD232B4033E47d90003D41EC34EcaEda94"));
    let tx = anvil.pay_eth(&address.to_lowercase(), wei("2")).await;
    let waiting = admin.wait_status(id, "WAITING_FOR_CONFIRMATIONS").await;
    assert_eq!(waiting["amount_paid"], json!("2"));
    let p = &waiting["payments"][0];
    assert_eq!((p["txid"].as_str(), p["index"].as_u64()), (Some(tx.as_str()), Some(0)));
    assert_eq!(p["confirmations"], json!(1));
    anvil.mine(2).await;
    let done = admin.wait_status(id, "COMPLETED").await;
    assert_eq!(done["amount_confirmed"], json!("2"));
    assert_eq!(
        types(&admin.events_of(id).await),
        [
            "invoice.created",
            "payment.detected",
            "invoice.status_changed",
            "payment.confirmed",
            "invoice.status_changed"
        ]
    );
}
