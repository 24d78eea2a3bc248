//! A small HTTP proxy between settled and a node, on loopback, that passes requests
//! through or breaks them as the test says: a connection reset in the middle of an
//! answer, a 500 or 503, an answer cut short or not JSON, an answer that never comes,
//! or a switch to another node.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::http::read_message;
use super::listen;

/// What the proxy does with each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Passes it to the node and the answer back.
    Pass,
    /// Sends half of the node's answer, then resets the connection.
    Reset,
    /// Answers this HTTP status itself (500, 503).
    Status(u16),
    /// Sends the node's answer cut in half, with its full length announced, and
    /// closes.
    Truncate,
    /// Answers 200 with a body that is not JSON.
    Garbage,
    /// Never answers.
    Stall,
}

/// A running proxy.
pub struct Proxy {
    pub port: u16,
    fault: Arc<Mutex<Fault>>,
    target: Arc<Mutex<u16>>,
    /// Requests broken so far.
    broken: Arc<AtomicUsize>,
    _tasks: JoinSet<()>,
}

impl Proxy {
    /// A proxy to the node listening on `target` (its RPC port).
    pub async fn start(target: u16) -> Proxy {
        let (listener, port) = listen().await;
        let fault = Arc::new(Mutex::new(Fault::Pass));
        let target = Arc::new(Mutex::new(target));
        let broken = Arc::new(AtomicUsize::new(0));
        let mut tasks = JoinSet::new();
        let (f, t, b) = (fault.clone(), target.clone(), broken.clone());
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                conns.spawn(serve(stream, f.clone(), t.clone(), b.clone()));
            }
        });
        Proxy {
            port,
            fault,
            target,
            broken,
            _tasks: tasks,
        }
    }

    /// The URL settled is given as `rpc_url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Breaks requests from now on as `fault` says.
    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    /// Sends requests to the node on `port` from now on.
    pub fn point_at(&self, port: u16) {
        *self.target.lock().unwrap() = port;
    }

    /// How many requests were broken so far.
    pub fn broken(&self) -> usize {
        self.broken.load(Ordering::Relaxed)
    }
}

async fn serve(
    stream: TcpStream,
    fault: Arc<Mutex<Fault>>,
    target: Arc<Mutex<u16>>,
    broken: Arc<AtomicUsize>,
) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    // One connection to the node per client connection, opened when first needed
    // and again after the target changes.
    let mut upstream: Option<(u16, BufReader<TcpStream>)> = None;
    while let Some(req) = read_message(&mut r).await {
        let f = *fault.lock().unwrap();
        if f != Fault::Pass {
            broken.fetch_add(1, Ordering::Relaxed);
        }
        let reply = |status: u16, body: &str| {
            format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        match f {
            Fault::Status(s) => {
                if w.write_all(reply(s, "service unavailable").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            Fault::Garbage => {
                if w.write_all(reply(200, "{\"result\": <html>oops").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            Fault::Stall => {
                std::future::pending::<()>().await;
            }
            _ => {}
        }
        let port = *target.lock().unwrap();
        if upstream.as_ref().is_none_or(|(p, _)| *p != port) {
            let Ok(s) = TcpStream::connect(("127.0.0.1", port)).await else {
                return;
            };
            upstream = Some((port, BufReader::new(s)));
        }
        let (_, up) = upstream.as_mut().unwrap();
        if up.get_mut().write_all(&req.bytes()).await.is_err() {
            return;
        }
        let Some(answer) = read_message(up).await else {
            return;
        };
        let bytes = answer.bytes();
        match f {
            Fault::Reset | Fault::Truncate => {
                let _ = w.write_all(&bytes[..bytes.len() / 2]).await;
                if f == Fault::Reset {
                    // SO_LINGER 0: the close sends a reset, not a FIN.
                    let s = r.into_inner().reunite(w).unwrap();
                    let _ = s.set_zero_linger();
                }
                return;
            }
            _ => {
                if w.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        }
    }
}
