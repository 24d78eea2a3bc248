//! The webhook sender: delivers the outbox's due deliveries, signed, a bounded number
//! at a time, one at a time per URL and invoice so that an invoice's events arrive in
//! `seq` order; records every attempt; retries with exponential backoff and jitter
//! until `retry_for` has passed, then gives up (`failed`).
//!
//! It only reads the outbox and writes what came of each attempt: a SIGKILL at any
//! point leaves the delivery pending, and it is sent again with the same event id.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::WebhookSettings;
use crate::store::{Attempt, Due, Store, now};

/// At most this much of an answer is kept with its attempt.
const KEEP_ANSWER: usize = 1024;
/// The sender looks at the outbox at least this often (retry times are whole seconds).
const IDLE: Duration = Duration::from_secs(1);

/// `Settled-Signature` for `body` at unix time `t`: `t=<t>,v1=<hex HMAC-SHA256 of "t.body">`.
pub(crate) fn signature(secret: &[u8], t: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(format!("{t}.{body}").as_bytes());
    let sig = alloy::primitives::hex::encode(mac.finalize().into_bytes());
    format!("t={t},v1={sig}")
}

/// The delay before retry number `attempts` (1 for the first retry): `first` doubling
/// up to `max`, with ±20% jitter so that many deliveries do not retry in step.
pub(crate) fn backoff(attempts: u32, first: Duration, max: Duration) -> Duration {
    let exp = first.saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1).min(30)));
    let base = exp.min(max);
    let jitter = rand::rng().random_range(0.8..1.2);
    base.mul_f64(jitter)
}

/// Delivers until `shutdown` is cancelled.
pub(crate) async fn run(store: Arc<Store>, cfg: WebhookSettings, shutdown: CancellationToken) {
    let (client, tls_note) = match http_client(&cfg) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(
                "webhooks: cannot build the HTTP client: {e}; nothing will be delivered"
            );
            return;
        }
    };
    let cfg = Arc::new(cfg);
    let mut in_flight: JoinSet<(Due, Attempt)> = JoinSet::new();
    let mut busy: HashSet<(String, String)> = HashSet::new();
    loop {
        let free = cfg.max_in_flight.saturating_sub(in_flight.len());
        if free > 0 {
            let claimed = busy.clone();
            let due = store
                .blocking(move |s| s.due_deliveries(now(), free, &claimed))
                .await;
            match due {
                Ok(due) => {
                    for d in due {
                        busy.insert(d.lane());
                        let note = tls_note.clone();
                        in_flight.spawn(attempt(client.clone(), cfg.clone(), note, d));
                    }
                }
                Err(e) => tracing::error!("webhooks: reading the outbox: {e}"),
            }
        }
        // Whatever could be sent now was just claimed; a finished attempt or a new event
        // wakes the loop at once, and retries fall due in whole seconds.
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(done) = in_flight.join_next() => {
                if let Ok((d, a)) = done {
                    busy.remove(&d.lane());
                    settle(&store, &cfg, d, a).await;
                }
            }
            _ = store.outbox_ready.notified() => {}
            _ = tokio::time::sleep(IDLE) => {}
        }
    }
    // What is still in flight stays pending in the outbox and is sent again at start.
    in_flight.abort_all();
}

/// Records what an attempt came to, and when to try again.
async fn settle(store: &Arc<Store>, cfg: &WebhookSettings, d: Due, a: Attempt) {
    let retry_at = if a.delivered() {
        None
    } else {
        let first = d.first_attempt_at.unwrap_or(a.at);
        let delay = backoff(d.attempts + 1, cfg.first_retry, cfg.max_retry);
        // Attempt times are whole seconds: a retry is at least the next second.
        let next = a.at + delay.as_secs().max(1) as i64;
        let give_up = first.saturating_add(cfg.retry_for.as_secs() as i64);
        (a.at < give_up).then_some(next)
    };
    if !a.delivered() {
        metrics::counter!("settled_webhook_attempts_failed_total").increment(1);
    }
    match (a.delivered(), retry_at) {
        (true, _) => tracing::debug!(url = %d.url, event = %d.event_id, "webhook delivered"),
        (false, Some(at)) => {
            tracing::info!(url = %d.url, event = %d.event_id, "webhook not delivered ({}); retrying at {at}", a.outcome())
        }
        (false, None) => {
            tracing::warn!(url = %d.url, event = %d.event_id, "webhook delivery failed for good after retrying for {:?} ({})", cfg.retry_for, a.outcome())
        }
    }
    if let Err(e) = store
        .blocking(move |s| s.record_attempt(&d, &a, retry_at))
        .await
    {
        // Not recorded: the delivery stays pending and is attempted again, after a
        // pause. The store is refusing writes (a full disk, say): trying again at once
        // would send the receiver the same event as fast as it answers.
        tracing::error!("webhooks: recording an attempt: {e}; sending again in {IDLE:?}");
        tokio::time::sleep(IDLE).await;
    }
}

/// The sender's HTTP client. Where the system's CA certificates cannot be loaded (no
/// `ca-certificates` package), it still delivers over http rather than nothing at
/// all, and returns what every https attempt will say about it.
fn http_client(
    cfg: &WebhookSettings,
) -> Result<(reqwest::Client, Option<Arc<str>>), reqwest::Error> {
    let builder = || {
        reqwest::Client::builder()
            .timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("settled/", env!("CARGO_PKG_VERSION")))
    };
    match builder().build() {
        Ok(c) => Ok((c, None)),
        Err(e) => {
            let note = format!(
                "this system's CA certificates cannot be loaded ({}): install them \
                 (Debian: ca-certificates) and restart settled",
                deepest(&e)
            );
            tracing::error!("webhooks: {note}; until then https deliveries fail, http ones go on");
            let client = builder().tls_certs_only(Vec::new()).build()?;
            Ok((client, Some(note.into())))
        }
    }
}

/// One POST of the event.
async fn attempt(
    client: reqwest::Client,
    cfg: Arc<WebhookSettings>,
    tls_note: Option<Arc<str>>,
    d: Due,
) -> (Due, Attempt) {
    let at = now();
    let sent = client
        .post(&d.url)
        .header("Content-Type", "application/json")
        .header("Settled-Event-Id", &d.event_id)
        .header("Settled-Signature", signature(&cfg.secret, at, &d.body))
        .body(d.body.clone())
        .send()
        .await;
    let attempt = match sent {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let mut kept = Vec::new();
            while kept.len() < KEEP_ANSWER {
                match resp.chunk().await {
                    Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
                    _ => break,
                }
            }
            kept.truncate(KEEP_ANSWER);
            Attempt {
                at,
                http_status: Some(status),
                error: None,
                body: Some(String::from_utf8_lossy(&kept).into_owned()),
            }
        }
        Err(e) => Attempt {
            at,
            http_status: None,
            error: Some(describe(&e, cfg.timeout, tls_note.as_deref())),
            body: None,
        },
    };
    if attempt.delivered() {
        crate::fault::point("webhook_mid_delivery");
    }
    (d, attempt)
}

/// The cause of a failed request, in the operator's words: a timeout, a refused
/// connection, a name that does not resolve, a TLS failure (with `tls_note` when the
/// client has no CA certificates), then the lowest-level message reqwest carries (its
/// own top line only names the URL).
fn describe(e: &reqwest::Error, timeout: Duration, tls_note: Option<&str>) -> String {
    if e.is_timeout() {
        return format!(
            "timed out: no answer within {} s (webhook.timeout)",
            timeout.as_secs()
        );
    }
    let detail = deepest(e);
    if !e.is_connect() {
        return detail;
    }
    match (connect_cause(&causes(e)), tls_note) {
        (TLS_FAILED, Some(note)) => format!("{TLS_FAILED}: {detail}; {note}"),
        (cause, _) => format!("{cause}: {detail}"),
    }
}

/// The errors under `e`, outermost first.
fn causes<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Vec<&'a (dyn std::error::Error + 'static)> {
    std::iter::successors(e.source(), |c| c.source()).collect()
}

/// The lowest-level message under `e`, or its own.
fn deepest(e: &(dyn std::error::Error + 'static)) -> String {
    causes(e)
        .last()
        .map_or_else(|| e.to_string(), |c| c.to_string())
}

const TLS_FAILED: &str = "TLS failed";

/// Which step of connecting failed, from the chain of causes.
fn connect_cause(causes: &[&(dyn std::error::Error + 'static)]) -> &'static str {
    use std::io::ErrorKind as K;
    for c in causes {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            match io.kind() {
                K::ConnectionRefused => return "connection refused",
                K::TimedOut => return "connect timed out",
                K::HostUnreachable | K::NetworkUnreachable => return "host unreachable",
                _ => {}
            }
        }
        let text = c.to_string().to_ascii_lowercase();
        if text.contains("dns error") || text.contains("failed to lookup address") {
            return "DNS: the host name does not resolve";
        }
        if text.contains("certificate") || text.contains("tls") || text.contains("handshake") {
            return TLS_FAILED;
        }
    }
    "could not connect"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a message and a cause, as hyper's connector makes them.
    #[derive(Debug)]
    struct Wrapped(&'static str, std::io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.1)
        }
    }

    #[test]
    fn a_connect_failure_is_told_by_its_cause() {
        use std::io::{Error, ErrorKind};
        let cause = |e: &Wrapped| connect_cause(&[e, &e.1]);
        let dns = Wrapped(
            "dns error",
            Error::other("failed to lookup address information"),
        );
        assert_eq!(cause(&dns), "DNS: the host name does not resolve");
        let refused = Wrapped(
            "tcp connect error",
            Error::from(ErrorKind::ConnectionRefused),
        );
        assert_eq!(cause(&refused), "connection refused");
        let other = Wrapped("tcp connect error", Error::other("something else"));
        assert_eq!(cause(&other), "could not connect");
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_t_dot_body() {
        // HMAC-SHA256("secret", "1700000000.{}"), computed independently (Python hmac).
        assert_eq!(
            signature(b"secret", 1_700_000_000, "{}"),
            "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
    }

    #[test]
    fn backoff_doubles_from_the_first_delay_up_to_the_cap_with_jitter() {
        let (first, max) = (Duration::from_secs(5), Duration::from_secs(3600));
        for (n, base) in [
            (1, 5.0),
            (2, 10.0),
            (3, 20.0),
            (10, 2560.0),
            (11, 3600.0),
            (40, 3600.0),
        ] {
            let d = backoff(n, first, max).as_secs_f64();
            assert!(d >= base * 0.8 && d <= base * 1.2, "retry {n}: {d}");
        }
    }
}
