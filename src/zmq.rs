//! Push from Bitcoin Core (`zmq_sequence`, the node's `-zmqpubsequence`): blocks
//! connected and disconnected, transactions added to and removed from the mempool,
//! read by a task of its own and handed to the follower as they come. ZMQ drops
//! messages when a side is busy and says nothing while disconnected, so whatever may
//! have been missed (a gap in the message numbers, a lost or new connection) is
//! reported as [`Notice::Lost`]: the follower then reads the whole mempool again.
//! Polling stays: push only makes things faster.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitcoin::Txid;
use bitcoin::hashes::Hash;
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use zeromq::{Socket, SocketEvent, SocketOptions, SocketRecv, SubSocket, ZmqMessage};

/// What the node pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notice {
    /// A block was connected: the follower looks at the tip.
    BlockConnected,
    /// A transaction entered the mempool.
    Added(Txid),
    /// A transaction left the mempool, not by being mined.
    Removed(Txid),
    /// Something may have been missed (a block disconnected, a gap, a reconnection):
    /// the mempool must be read whole.
    Lost,
}

/// More notices than this waiting means the follower fell behind: they are dropped
/// and it reads the mempool whole instead.
const QUEUE: usize = 100_000;

/// The notices of one chain, filled by [`run`] and drained by the follower.
#[derive(Default)]
pub(crate) struct Inbox {
    queue: Mutex<VecDeque<Notice>>,
    /// Woken on every notice.
    pub(crate) ready: Notify,
    /// Subscribed and connected: while not, nothing is pushed and the follower reads
    /// the mempool whole at every poll.
    connected: AtomicBool,
}

impl Inbox {
    fn push(&self, n: Notice) {
        {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() >= QUEUE {
                q.clear();
                q.push_back(Notice::Lost);
            } else {
                q.push_back(n);
            }
        }
        self.ready.notify_one();
    }

    /// Whether notices can come at all now.
    pub(crate) fn connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::SeqCst);
    }

    /// Takes every notice waiting.
    pub(crate) fn drain(&self) -> Vec<Notice> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.drain(..).collect()
    }
}

/// Reads `url` until `shutdown`, reconnecting as often as it takes.
pub(crate) async fn run(
    chain: String,
    url: String,
    inbox: Arc<Inbox>,
    shutdown: CancellationToken,
) {
    crate::rpc::keep_connected(
        &chain,
        &format!("zmq_sequence {url}"),
        &shutdown,
        || async {
            let r = follow(&url, &inbox, &shutdown).await;
            inbox.set_connected(false);
            if r.is_err() {
                inbox.push(Notice::Lost);
            }
            r
        },
    )
    .await
}

/// One connection: `Ok` at shutdown, an error when it failed.
async fn follow(url: &str, inbox: &Inbox, shutdown: &CancellationToken) -> Result<(), String> {
    let mut options = SocketOptions::default();
    options.connect_timeout(Duration::from_secs(10));
    let mut socket = SubSocket::with_options(options);
    let mut events = socket.monitor();
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        r = socket.connect(url) => r.map_err(|e| format!("cannot connect: {e}"))?,
    }
    socket
        .subscribe("sequence")
        .await
        .map_err(|e| format!("cannot subscribe: {e}"))?;
    tracing::info!("zmq_sequence {url}: connected");
    // Whatever happened before the subscription took is found by reading it all.
    inbox.set_connected(true);
    inbox.push(Notice::Lost);
    let mut last: Option<u32> = None;
    let mut first_connect = true;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            event = events.next() => match event {
                Some(SocketEvent::Disconnected(_)) => {
                    tracing::warn!("zmq_sequence {url}: disconnected; polling carries on");
                    inbox.set_connected(false);
                    inbox.push(Notice::Lost);
                    last = None;
                }
                // The first is the connection made above.
                Some(SocketEvent::Connected(..)) if std::mem::take(&mut first_connect) => {}
                Some(SocketEvent::Connected(..)) => {
                    tracing::info!("zmq_sequence {url}: connected again");
                    inbox.set_connected(true);
                    inbox.push(Notice::Lost);
                    last = None;
                }
                Some(_) => {}
                None => return Err("the socket closed".into()),
            },
            msg = socket.recv() => {
                let msg = msg.map_err(|e| format!("receiving: {e}"))?;
                let Some((notice, number)) = parse(&msg) else {
                    tracing::warn!("zmq_sequence {url}: a message not of the sequence topic's shape");
                    continue;
                };
                #[cfg(debug_assertions)]
                if dropped_for_tests() {
                    continue;
                }
                if last.is_some_and(|l| number != l.wrapping_add(1)) {
                    tracing::info!("zmq_sequence {url}: messages were lost (after {last:?} came {number}); reading the mempool whole");
                    inbox.push(Notice::Lost);
                }
                last = Some(number);
                inbox.push(notice);
            }
        }
    }
}

/// A `sequence` message: topic, body (a hash in display order, a label, and for the
/// mempool a sequence number), and the message's own number.
fn parse(msg: &ZmqMessage) -> Option<(Notice, u32)> {
    if msg.len() != 3 || msg.get(0)?.as_ref() != b"sequence" {
        return None;
    }
    let body = msg.get(1)?;
    let number = u32::from_le_bytes(msg.get(2)?.as_ref().try_into().ok()?);
    if body.len() < 33 {
        return None;
    }
    let mut hash: [u8; 32] = body[..32].try_into().ok()?;
    hash.reverse();
    let txid = Txid::from_byte_array(hash);
    let notice = match body[32] {
        b'C' => Notice::BlockConnected,
        b'D' => Notice::Lost,
        b'A' => Notice::Added(txid),
        b'R' => Notice::Removed(txid),
        _ => return None,
    };
    Some((notice, number))
}

/// Test builds only: while the file named by `SETTLED_TEST_ZMQ_DROP` exists, every
/// message is dropped as a busy ZMQ would, and said so in the log.
#[cfg(debug_assertions)]
fn dropped_for_tests() -> bool {
    let Some(path) = std::env::var_os("SETTLED_TEST_ZMQ_DROP") else {
        return false;
    };
    let drop = std::path::Path::new(&path).exists();
    if drop {
        tracing::info!("test: a zmq message dropped");
    }
    drop
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(label: u8, number: u32) -> ZmqMessage {
        let mut body: Vec<u8> = (0u8..32).collect();
        body.push(label);
        if label == b'A' || label == b'R' {
            body.extend(7u64.to_le_bytes());
        }
        let frames = vec![
            bytes::Bytes::from_static(b"sequence"),
            bytes::Bytes::from(body),
            bytes::Bytes::from(number.to_le_bytes().to_vec()),
        ];
        ZmqMessage::try_from(frames).unwrap()
    }

    #[test]
    fn sequence_messages_are_read_with_the_hash_in_display_order() {
        let (n, number) = parse(&msg(b'A', 41)).unwrap();
        assert_eq!(number, 41);
        let display: String = (0u8..32).map(|b| format!("{b:02x}")).collect();
        assert_eq!(n, Notice::Added(display.parse().unwrap()));
        assert_eq!(parse(&msg(b'C', 1)).unwrap().0, Notice::BlockConnected);
        assert_eq!(parse(&msg(b'D', 1)).unwrap().0, Notice::Lost);
        assert!(matches!(
            parse(&msg(b'R', 1)).unwrap().0,
            Notice::Removed(_)
        ));
        assert_eq!(parse(&msg(b'X', 1)), None);
    }
}
