//! Push from an Ethereum node (`ws_url`): `eth_subscribe` to `newHeads` over WebSocket,
//! each new head a reason for the follower to poll at once. Nothing is read from the
//! heads themselves: the poll reads the chain as always, so a head lost with a broken
//! subscription costs only the wait for the next poll.

use std::sync::Arc;

use alloy::providers::{Provider, ProviderBuilder, WsConnect};
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Subscribes at `url` until `shutdown`, subscribing again as often as it takes;
/// wakes `ready` on every new head.
pub(crate) async fn run(
    chain: String,
    url: String,
    ready: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let what = format!("ws_url {url}");
    crate::rpc::keep_connected(&chain, &what, &shutdown, || {
        subscribe(&url, &ready, &shutdown)
    })
    .await
}

/// One subscription: `Ok` at shutdown, an error when it failed or ended.
async fn subscribe(url: &str, ready: &Notify, shutdown: &CancellationToken) -> Result<(), String> {
    let provider = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        p = ProviderBuilder::new().connect_ws(WsConnect::new(url)) => {
            p.map_err(|e| format!("cannot connect: {e}"))?
        }
    };
    let subscription = provider
        .subscribe_blocks()
        .await
        .map_err(|e| format!("eth_subscribe newHeads: {e}"))?;
    tracing::info!("ws_url {url}: subscribed to newHeads");
    // A head may have come before the subscription took: look now.
    ready.notify_one();
    let mut heads = subscription.into_stream();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            head = heads.next() => match head {
                Some(_) => ready.notify_one(),
                None => return Err("the subscription ended".into()),
            },
        }
    }
}
