//! A webhook receiver on loopback: a small HTTP/1.1 server that records every request
//! and answers as the test tells it (a status, after a delay, or never).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::http::read_message;
use super::{listen, wait_for};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: String,
    /// The status it was answered with; `None` if never.
    pub status: Option<u16>,
}

impl Request {
    /// The `Settled-Event-Id` header.
    pub fn event_id(&self) -> &str {
        &self.headers["settled-event-id"]
    }

    /// The body as JSON.
    pub fn event(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }

    /// Checks `Settled-Signature` against `secret` as a receiver would, and returns
    /// its timestamp.
    pub fn verify(&self, secret: &[u8]) -> i64 {
        let header = &self.headers["settled-signature"];
        let (t, v1) = header
            .strip_prefix("t=")
            .and_then(|r| r.split_once(",v1="))
            .unwrap_or_else(|| panic!("malformed signature {header}"));
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(format!("{t}.{}", self.body).as_bytes());
        let want = alloy::primitives::hex::encode(mac.finalize().into_bytes());
        assert_eq!(v1, want, "signature of {}", self.body);
        t.parse().unwrap()
    }
}

/// How to answer a request: `Some((status, delay))`, or `None` to never answer.
pub type Answer = Option<(u16, Duration)>;

type Script = Box<dyn Fn(usize, &Request) -> Answer + Send + Sync>;

/// A running receiver.
pub struct Receiver {
    pub port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    script: Arc<Mutex<Script>>,
    body: Arc<Mutex<Option<String>>>,
    tasks: JoinSet<()>,
}

impl Receiver {
    /// A receiver on a free port answering 200 at once.
    pub async fn start() -> Receiver {
        let (listener, port) = listen().await;
        Receiver::on(listener, port)
    }

    /// A receiver on `port`.
    pub async fn start_on(port: u16) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        Receiver::on(listener, port)
    }

    /// A receiver taking the connections of `listener`, bound to `port`.
    fn on(listener: TcpListener, port: u16) -> Receiver {
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let script: Arc<Mutex<Script>> =
            Arc::new(Mutex::new(Box::new(|_, _| Some((200, Duration::ZERO)))));
        let body: Arc<Mutex<Option<String>>> = Arc::default();
        let mut tasks = JoinSet::new();
        let (reqs, scr, b) = (requests.clone(), script.clone(), body.clone());
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                conns.spawn(serve(stream, reqs.clone(), scr.clone(), b.clone()));
            }
        });
        Receiver {
            port,
            requests,
            script,
            body,
            tasks,
        }
    }

    /// The URL to configure.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Answers from now on by `f(n, request)`, `n` counting every request from 0.
    pub fn answer(&self, f: impl Fn(usize, &Request) -> Answer + Send + Sync + 'static) {
        *self.script.lock().unwrap() = Box::new(f);
    }

    /// Answers with `text` as the body (default: "answer <status>").
    pub fn answer_body(&self, text: &str) {
        *self.body.lock().unwrap() = Some(text.to_string());
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// The requests answered with a 2xx status: delivered.
    pub fn accepted(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.status.is_some_and(|s| (200..300).contains(&s)))
            .collect()
    }

    /// Waits until `pred` holds for the requests so far.
    pub async fn wait(&self, what: &str, pred: impl Fn(&[Request]) -> bool) -> Vec<Request> {
        wait_for(what, || {
            let r = self.requests();
            let ok = pred(&r);
            async move { ok.then_some(r) }
        })
        .await
    }

    /// Stops listening and drops every connection.
    pub fn stop(&mut self) {
        self.tasks.abort_all();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(
    stream: tokio::net::TcpStream,
    requests: Arc<Mutex<Vec<Request>>>,
    script: Arc<Mutex<Script>>,
    body_text: Arc<Mutex<Option<String>>>,
) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    while let Some(m) = read_message(&mut r).await {
        let mut req = Request {
            headers: m.headers(),
            body: String::from_utf8_lossy(&m.body).into_owned(),
            status: None,
        };
        let answer = {
            let mut all = requests.lock().unwrap();
            let answer = (script.lock().unwrap())(all.len(), &req);
            req.status = answer.map(|(status, _)| status);
            all.push(req);
            answer
        };
        let Some((status, delay)) = answer else {
            // Never answers: holds the connection until the test drops it.
            std::future::pending::<()>().await;
            return;
        };
        tokio::time::sleep(delay).await;
        let text = body_text
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| format!("answer {status}"));
        // A redirect names a place to go, which settled must not follow.
        let reply = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\
             Location: http://127.0.0.1:9/elsewhere\r\n\r\n{text}",
            text.len()
        );
        if w.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}
