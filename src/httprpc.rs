//! JSON-RPC over HTTP to Bitcoin Core: one pooled client whose connections stay open
//! (a new TCP connection per call cost more than the call itself), single calls and
//! batches (many calls in one round trip), large answers parsed off the async
//! threads, and credentials read again whenever the node may have written a new
//! cookie. It only moves requests and answers; `bitcoind.rs` knows what they mean.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::bitcoind::NodeError;
use crate::config::{RpcAuth, cookie_unreadable};

/// Answers at least this large are parsed on a blocking thread.
const PARSE_OFF_THREAD: usize = 64 * 1024;

/// Idle connections kept open to the node: the follower's parallel calls and the
/// API's rescans together rarely need more.
const KEEP_ALIVE: usize = 16;

/// The node's error object for one call.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RpcFailure {
    pub(crate) code: i64,
    pub(crate) message: String,
}

/// One call's answer: its result, or the node's error for it.
pub(crate) type Answer<T> = Result<T, RpcFailure>;

#[derive(Deserialize)]
struct Response<T> {
    #[serde(default = "none")]
    result: Option<T>,
    #[serde(default)]
    error: Option<RpcFailure>,
    #[serde(default)]
    id: Value,
}

fn none<T>() -> Option<T> {
    None
}

impl<T> Response<T> {
    fn answer(self, method: &str) -> Answer<T> {
        match (self.error, self.result) {
            (Some(e), _) => Err(e),
            (None, Some(r)) => Ok(r),
            (None, None) => Err(RpcFailure {
                code: 0,
                message: format!("{method}: an answer with neither result nor error"),
            }),
        }
    }
}

/// A JSON-RPC endpoint of one node.
pub(crate) struct HttpRpc {
    url: String,
    http: Result<reqwest::Client, String>,
    auth: RpcAuth,
    /// The user and password in use; read again from the cookie after a refusal or
    /// a lost connection (the node writes a new cookie each time it starts).
    creds: Mutex<Option<(String, String)>>,
    next_id: AtomicU64,
}

impl HttpRpc {
    /// An endpoint at `url`; nothing is sent yet.
    pub(crate) fn new(url: &str, auth: &RpcAuth) -> HttpRpc {
        let builder = || {
            reqwest::Client::builder()
                .pool_max_idle_per_host(KEEP_ALIVE)
                .tcp_nodelay(true)
        };
        // Without the system's CA certificates (no ca-certificates package) an
        // http:// node, the usual one, still needs none.
        let http = builder()
            .build()
            .or_else(|_| builder().tls_certs_only(Vec::new()).build())
            .map_err(|e| format!("cannot build the HTTP client: {e}"));
        HttpRpc {
            url: url.to_string(),
            http,
            auth: auth.clone(),
            creds: Mutex::new(None),
            next_id: AtomicU64::new(1),
        }
    }

    /// Calls `method` with `params`.
    pub(crate) async fn call<T: DeserializeOwned + Send + 'static>(
        &self,
        method: &str,
        params: Value,
    ) -> Result<Answer<T>, NodeError> {
        self.call_then(method, params, Ok).await
    }

    /// Calls `method` with `params`, and turns its result into a `U` with `then` on
    /// the same thread that parsed it (a blocking one, for a large answer).
    pub(crate) async fn call_then<T, U>(
        &self,
        method: &str,
        params: Value,
        then: impl FnOnce(T) -> Result<U, NodeError> + Send + 'static,
    ) -> Result<Answer<U>, NodeError>
    where
        T: DeserializeOwned + Send + 'static,
        U: Send + 'static,
    {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let bytes = self.post(method, body.to_string()).await?;
        let method_name = method.to_string();
        parse(bytes, move |b| {
            let response: Response<T> =
                serde_json::from_slice(&b).map_err(|e| not_json(&method_name, &b, e))?;
            match response.answer(&method_name) {
                Ok(t) => then(t).map(Ok),
                Err(f) => Ok(Err(f)),
            }
        })
        .await
    }

    /// Calls `method` once per entry of `params`, all in one request; the answers
    /// come back in the same order.
    pub(crate) async fn batch<T: DeserializeOwned + Send + 'static>(
        &self,
        method: &str,
        params: Vec<Value>,
    ) -> Result<Vec<Answer<T>>, NodeError> {
        if params.is_empty() {
            return Ok(Vec::new());
        }
        let first = self
            .next_id
            .fetch_add(params.len() as u64, Ordering::Relaxed);
        let n = params.len();
        let body: Vec<Value> = params
            .into_iter()
            .enumerate()
            .map(|(i, p)| json!({"jsonrpc": "2.0", "id": first + i as u64, "method": method, "params": p}))
            .collect();
        let bytes = self.post(method, Value::Array(body).to_string()).await?;
        let method_name = method.to_string();
        parse(bytes, move |b| {
            let responses: Vec<Response<T>> =
                serde_json::from_slice(&b).map_err(|e| not_json(&method_name, &b, e))?;
            // Matched by id: the specification lets a server answer in any order.
            let mut answers: Vec<Option<Answer<T>>> = (0..n).map(|_| None).collect();
            for r in responses {
                let slot = r.id.as_u64().and_then(|id| id.checked_sub(first));
                if let Some(slot) = slot.and_then(|s| answers.get_mut(s as usize)) {
                    *slot = Some(r.answer(&method_name));
                }
            }
            answers
                .into_iter()
                .map(|a| {
                    a.ok_or_else(|| {
                        NodeError::Transient(format!("{method_name}: a batch answer is missing"))
                    })
                })
                .collect()
        })
        .await
    }

    async fn post(&self, method: &str, body: String) -> Result<bytes::Bytes, NodeError> {
        let http = self
            .http
            .as_ref()
            .map_err(|e| NodeError::Persistent(e.clone()))?;
        let mut request = http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some((user, password)) = self.creds()? {
            request = request.basic_auth(user, Some(password));
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                self.forget();
                return Err(NodeError::Transient(format!(
                    "node unreachable: {}",
                    cause(&e)
                )));
            }
        };
        match response.status().as_u16() {
            401 => {
                self.forget();
                return Err(NodeError::Credentials(
                    "the node refused them (HTTP 401): check rpc_user and rpc_password, or \
                     that rpc_cookie_file is the running node's"
                        .into(),
                ));
            }
            403 => {
                return Err(NodeError::Persistent(format!(
                    "the node refused {method} (HTTP 403): allow it in the node's rpcwhitelist"
                )));
            }
            _ => {}
        }
        // Errors come with a JSON body too (HTTP 500 or 404 before JSON-RPC 2.0); a
        // failure without one (a proxy's 502, a node's 503 while it starts) is named by
        // its status.
        let status = response.status();
        let body = response.bytes().await.map_err(|e| {
            self.forget();
            NodeError::Transient(format!("node unreachable: {}", cause(&e)))
        })?;
        let json = body.iter().find(|b| !b.is_ascii_whitespace());
        if !status.is_success() && !matches!(json, Some(b'{' | b'[')) {
            let start = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Err(NodeError::Transient(format!(
                "{method}: the node answered HTTP {}: {start}",
                status.as_u16()
            )));
        }
        Ok(body)
    }

    fn creds(&self) -> Result<Option<(String, String)>, NodeError> {
        let mut slot = self.creds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = slot.as_ref() {
            return Ok(Some(c.clone()));
        }
        let creds = match &self.auth {
            RpcAuth::None => return Ok(None),
            RpcAuth::UserPass(u, p) => (u.clone(), p.clone()),
            RpcAuth::Cookie(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        NodeError::Transient(format!(
                            "node unreachable: no cookie file at {} (the node writes it when it starts)",
                            path.display()
                        ))
                    } else {
                        NodeError::Credentials(cookie_unreadable(path, &e))
                    }
                })?;
                let Some((user, password)) = text.trim_end().split_once(':') else {
                    return Err(NodeError::Credentials(
                        "the cookie file is not user:password".into(),
                    ));
                };
                (user.to_string(), password.to_string())
            }
        };
        *slot = Some(creds.clone());
        Ok(Some(creds))
    }

    fn forget(&self) {
        *self.creds.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Parses `bytes` with `f`, on a blocking thread when they are many.
async fn parse<T: Send + 'static>(
    bytes: bytes::Bytes,
    f: impl FnOnce(bytes::Bytes) -> Result<T, NodeError> + Send + 'static,
) -> Result<T, NodeError> {
    if bytes.len() < PARSE_OFF_THREAD {
        return f(bytes);
    }
    crate::bitcoind::off_thread(move || f(bytes)).await
}

fn not_json(method: &str, body: &[u8], e: serde_json::Error) -> NodeError {
    let start = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    NodeError::Transient(format!(
        "{method}: the node's answer is not JSON-RPC ({e}): {start}"
    ))
}

/// A transport error with its deepest cause: "Connection refused (os error 111)"
/// says more than "error sending request".
fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut deepest = None;
    let mut next = e.source();
    while let Some(s) = next {
        deepest = Some(s);
        next = s.source();
    }
    match deepest {
        Some(d) => format!("{e}: {d}"),
        None => e.to_string(),
    }
}
