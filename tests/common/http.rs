//! Reading one HTTP/1.1 message (a request or an answer) off a stream: what the
//! webhook receiver and the node-fault proxy both parse.

use std::collections::HashMap;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// One message: its start line and headers as sent, and its body.
pub struct Message {
    pub head: String,
    pub body: Vec<u8>,
}

impl Message {
    /// Its headers, names in lower case.
    pub fn headers(&self) -> HashMap<String, String> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect()
    }

    /// The head and the body, as they were sent.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = self.head.clone().into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// The next message, its body as long as `Content-Length` says; `None` at the end of
/// the stream or when it ends inside a message.
pub async fn read_message<R: AsyncBufRead + Unpin>(r: &mut R) -> Option<Message> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let end = line.trim_end().is_empty();
        head.push_str(&line);
        if end {
            break;
        }
    }
    let mut m = Message {
        head,
        body: Vec::new(),
    };
    let len = m
        .headers()
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    m.body = vec![0; len];
    r.read_exact(&mut m.body).await.ok()?;
    Some(m)
}
