//! The admin socket: JSON-RPC 2.0 over a Unix stream socket, one JSON object per line.
//!
//! Each connection is its own task, so a slow, malformed or oversized client never
//! disturbs another. Requests on one connection are answered in order.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use futures_util::StreamExt;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, FramedRead};
use tokio_util::sync::CancellationToken;

use crate::api::{self, Api, Params, RpcError};

/// The longest request line accepted.
pub(crate) const MAX_LINE: usize = 1024 * 1024;

/// Binds the socket at `path`, replacing a file left by an earlier run, mode 0660.
pub(crate) async fn bind(path: &Path, gid: Option<u32>) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!("daemon.admin_socket: cannot create {}: {e}", dir.display())
        })?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            anyhow::bail!(
                "daemon.admin_socket: another process is listening on {}",
                path.display()
            );
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("daemon.admin_socket: cannot bind {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(|e| {
            anyhow::anyhow!(
                "daemon.admin_socket_group: cannot give {} to group {gid}: {e} \
                 (the daemon's user must be a member of that group)",
                path.display()
            )
        })?;
    }
    Ok(listener)
}

/// Serves connections until `shutdown` is cancelled.
pub(crate) async fn run(listener: UnixListener, api: Arc<Api>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    if admitted(&stream, api.settings.admin_allowed_uids.as_deref()) {
                        tokio::spawn(serve(stream, api.clone(), shutdown.clone()));
                    }
                }
                Err(e) => {
                    tracing::warn!("admin socket accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Logs who connected (the kernel's SO_PEERCRED, which a client cannot forge) and
/// says whether that uid may use the socket.
fn admitted(stream: &UnixStream, allowed: Option<&[u32]>) -> bool {
    let cred = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("admin connection refused: cannot read its peer credentials: {e}");
            return false;
        }
    };
    let (uid, gid, pid) = (cred.uid(), cred.gid(), cred.pid().unwrap_or(0));
    if allowed.is_some_and(|uids| !uids.contains(&uid)) {
        tracing::warn!(
            uid,
            gid,
            pid,
            "admin connection refused: uid {uid} is not in daemon.admin_allowed_uids"
        );
        return false;
    }
    tracing::info!(uid, gid, pid, "admin connection");
    true
}

async fn serve(stream: UnixStream, api: Arc<Api>, shutdown: CancellationToken) {
    let (read, mut write) = stream.into_split();
    let (out_tx, mut out_rx) = mpsc::channel::<String>(256);
    let conn_done = shutdown.child_token();
    let writer = {
        let done = conn_done.clone();
        tokio::spawn(async move {
            while let Some(mut line) = out_rx.recv().await {
                line.push('\n');
                if write.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
            }
            done.cancel();
        })
    };
    // Lines as bytes: a line that is not UTF-8 gets its parse error like any other
    // bad line, instead of ending the connection unanswered.
    let codec = AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), MAX_LINE);
    let mut lines = FramedRead::new(read, codec);
    loop {
        let next = tokio::select! {
            _ = conn_done.cancelled() => break,
            n = lines.next() => n,
        };
        let line = match next {
            None => break,
            Some(Ok(line)) => line,
            Some(Err(AnyDelimiterCodecError::MaxChunkLengthExceeded)) => {
                let e = RpcError::new(
                    api::PARSE_ERROR,
                    format!("request line longer than {MAX_LINE} bytes"),
                );
                let _ = out_tx.send(response(Value::Null, Err(e))).await;
                break;
            }
            Some(Err(AnyDelimiterCodecError::Io(_))) => break,
        };
        let line = match std::str::from_utf8(&line) {
            Ok(text) => text.strip_suffix('\r').unwrap_or(text),
            Err(e) => {
                let e = RpcError::new(api::PARSE_ERROR, format!("not UTF-8: {e}"));
                if out_tx.send(response(Value::Null, Err(e))).await.is_err() {
                    break;
                }
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        if let Some(reply) = handle_line(line, &api, &out_tx, &conn_done).await
            && out_tx.send(reply).await.is_err()
        {
            break;
        }
    }
    drop(out_tx);
    // Subscriptions hold senders too: stop them so the writer can finish.
    conn_done.cancel();
    let _ = writer.await;
}

/// Answers one line: a request, or a batch of them.
async fn handle_line(
    line: &str,
    api: &Arc<Api>,
    out: &mpsc::Sender<String>,
    conn: &CancellationToken,
) -> Option<String> {
    let parsed: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            return Some(response(
                Value::Null,
                Err(RpcError::new(api::PARSE_ERROR, format!("not JSON: {e}"))),
            ));
        }
    };
    match parsed {
        Value::Array(items) if items.is_empty() => Some(response(
            Value::Null,
            Err(RpcError::new(api::INVALID_REQUEST, "empty batch")),
        )),
        Value::Array(items) => {
            // The items run side by side (their writes share a commit); the answers keep
            // the batch's order.
            let replies: Vec<String> = futures_util::future::join_all(
                items
                    .into_iter()
                    .map(|item| handle_request(item, api, out, conn)),
            )
            .await
            .into_iter()
            .flatten()
            .collect();
            (!replies.is_empty()).then(|| format!("[{}]", replies.join(",")))
        }
        other => handle_request(other, api, out, conn).await,
    }
}

/// One request; `None` for a notification (no `id`), which gets no answer.
async fn handle_request(
    req: Value,
    api: &Arc<Api>,
    out: &mpsc::Sender<String>,
    conn: &CancellationToken,
) -> Option<String> {
    let Value::Object(mut obj) = req else {
        return Some(response(
            Value::Null,
            Err(RpcError::new(
                api::INVALID_REQUEST,
                "a request must be an object",
            )),
        ));
    };
    let id = obj.remove("id");
    let valid_id = matches!(
        id,
        None | Some(Value::Null | Value::String(_) | Value::Number(_))
    );
    let method = match obj.remove("method") {
        Some(Value::String(m)) if valid_id && obj.get("jsonrpc") == Some(&json!("2.0")) => m,
        _ => {
            return Some(response(
                id.filter(|_| valid_id).unwrap_or(Value::Null),
                Err(RpcError::new(
                    api::INVALID_REQUEST,
                    "not a JSON-RPC 2.0 request",
                )),
            ));
        }
    };
    let params = obj.remove("params");
    if method == "events.subscribe" {
        let sub = match Subscription::new(params, api).await {
            Ok(sub) => sub,
            Err(e) => return id.map(|id| response(id, Err(e))),
        };
        // The answer goes out before the first event: the connection's queue is FIFO.
        if let Some(id) = id {
            let _ = out
                .send(response(id, api::raw(Ok(json!({ "subscribed": true })))))
                .await;
        }
        tokio::spawn(sub.forward(out.clone(), conn.clone()));
        return None;
    }
    let result = api.call(&method, params).await;
    Some(response(id?, result))
}

/// A response line. Its keys keep the order they always had (a `json!` object's,
/// sorted), so that no client sees its answers change.
fn response(id: Value, result: Result<Box<RawValue>, RpcError>) -> String {
    #[derive(serde::Serialize)]
    struct Response {
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<Value>,
        id: Value,
        jsonrpc: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        result: Option<Box<RawValue>>,
    }
    let (result, error) = match result {
        Ok(r) => (Some(r), None),
        Err(e) => (None, Some(e.to_json())),
    };
    let line = Response {
        error,
        id,
        jsonrpc: "2.0",
        result,
    };
    // A Value and a RawValue always serialize.
    serde_json::to_string(&line).unwrap_or_default()
}

/// `events.subscribe`: the backlog after `after_seq`, then live events, read from the
/// database each time it is woken, so nothing between the two is skipped.
struct Subscription {
    store: Arc<crate::store::Store>,
    wake: tokio::sync::broadcast::Receiver<i64>,
    last: i64,
}

impl Subscription {
    async fn new(params: Option<Value>, api: &Api) -> Result<Subscription, RpcError> {
        let p = Params::new(params, &["after_seq"])?;
        // Subscribe to wake-ups before reading where to start, so no commit falls between.
        let wake = api.store.subscribe();
        let last = match p.uint("after_seq")? {
            Some(s) => {
                i64::try_from(s).map_err(|_| RpcError::field("after_seq", "is too large"))?
            }
            None => api.store.blocking(|s| s.last_seq()).await?,
        };
        Ok(Subscription {
            store: api.store.clone(),
            wake,
            last,
        })
    }

    async fn forward(mut self, out: mpsc::Sender<String>, done: CancellationToken) {
        loop {
            let last = self.last;
            let page = self
                .store
                .blocking(move |s| s.events_after(last, 1000, None));
            let page = match page.await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!("events.subscribe: {e}");
                    return;
                }
            };
            if page.is_empty() {
                tokio::select! {
                    _ = done.cancelled() => return,
                    r = self.wake.recv() => {
                        if let Err(tokio::sync::broadcast::error::RecvError::Closed) = r {
                            return;
                        }
                    }
                }
                continue;
            }
            for ev in page {
                self.last = ev["seq"].as_i64().unwrap_or(self.last);
                let note = json!({ "jsonrpc": "2.0", "method": "event", "params": ev });
                if out.send(note.to_string()).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response line serialized from its parts is the line a `json!` object of them
    /// always made: same keys, same order, same bytes.
    #[test]
    fn a_response_line_is_the_one_a_json_object_made() {
        let result = json!({"status": "PENDING", "amount": "0.01", "id": "x"});
        let ok = response(json!(7), api::raw(Ok(result.clone())));
        let old = json!({"jsonrpc": "2.0", "id": 7, "result": result}).to_string();
        assert_eq!(ok, old);
        let e = RpcError::field("amount", "is required");
        let err = response(json!("a"), Err(e.clone()));
        let old = json!({"jsonrpc": "2.0", "id": "a", "error": e.to_json()}).to_string();
        assert_eq!(err, old);
    }
}
