//! The webhook outbox: a delivery row per event and URL, written in the event's own
//! transaction; the sender claims due ones, and each attempt is recorded with what
//! came of it. Nothing of the queue lives only in memory.

use std::collections::HashSet;

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::{Value, json};

use super::{Owner, Store, StoreError, StoreResult, now};

/// Where events go when webhooks are configured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outbox {
    /// `webhook.url`: for events of invoices without a `callback_url`.
    pub(crate) default_url: Option<String>,
}

/// A delivery the sender is to attempt now.
#[derive(Debug, Clone)]
pub(crate) struct Due {
    pub(crate) id: i64,
    pub(crate) url: String,
    /// The invoice or deposit address the event is of: its lane.
    pub(crate) owner_id: String,
    pub(crate) event_id: String,
    /// The event object, serialized once: the same bytes on every attempt.
    pub(crate) body: String,
    pub(crate) attempts: u32,
    pub(crate) first_attempt_at: Option<i64>,
}

impl Due {
    /// Deliveries of one URL and invoice (or deposit address) go one at a time, in
    /// `seq` order.
    pub(crate) fn lane(&self) -> (String, String) {
        (self.url.clone(), self.owner_id.clone())
    }
}

/// What an attempt came to.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    pub(crate) at: i64,
    pub(crate) http_status: Option<u16>,
    pub(crate) error: Option<String>,
    /// At most 1 KiB of the answer.
    pub(crate) body: Option<String>,
}

impl Attempt {
    /// A 2xx answer.
    pub(crate) fn delivered(&self) -> bool {
        self.http_status.is_some_and(|s| (200..300).contains(&s))
    }

    /// What the attempt came to, for the log: `HTTP 500` or the error.
    pub(crate) fn outcome(&self) -> String {
        match (self.http_status, &self.error) {
            (Some(s), _) => format!("HTTP {s}"),
            (None, Some(e)) => e.clone(),
            (None, None) => "no answer".into(),
        }
    }
}

/// Queues `event_seq` for its invoice's (or deposit address's) `callback_url`, or else
/// the default URL.
pub(crate) fn enqueue(
    conn: &Connection,
    outbox: Option<&Outbox>,
    event_seq: i64,
    owner: &Owner,
    at: i64,
) -> rusqlite::Result<()> {
    let Some(outbox) = outbox else {
        return Ok(());
    };
    let sql = match owner {
        Owner::Invoice(_) => {
            "INSERT INTO deliveries (event_seq, owner_id, url, status, attempts, next_attempt_at, created_at)
             SELECT ?1, id, COALESCE(callback_url, ?2), 'pending', 0, ?3, ?3 FROM invoices
             WHERE id = ?4 AND COALESCE(callback_url, ?2) IS NOT NULL"
        }
        Owner::Deposit(_) => {
            "INSERT INTO deliveries (event_seq, owner_id, url, status, attempts, next_attempt_at, created_at)
             SELECT ?1, id, COALESCE(callback_url, ?2), 'pending', 0, ?3, ?3 FROM deposit_addresses
             WHERE id = ?4 AND COALESCE(callback_url, ?2) IS NOT NULL"
        }
    };
    conn.prepare_cached(sql)?
        .execute(params![event_seq, outbox.default_url, at, owner.id()])?;
    Ok(())
}

impl Store {
    /// Up to `limit` deliveries due at `now`, each the oldest pending of its lane, and
    /// none of a lane in `busy` (one in flight there already).
    pub(crate) fn due_deliveries(
        &self,
        now: i64,
        limit: usize,
        busy: &HashSet<(String, String)>,
    ) -> StoreResult<Vec<Due>> {
        let conn = self.read()?;
        let mut st = conn.prepare_cached(
            "SELECT d.id, d.url, d.attempts, d.first_attempt_at, d.owner_id,
                    e.seq, e.id, e.type, e.invoice_id, e.deposit_address_id, e.created_at, e.data
             FROM deliveries d JOIN events e ON e.seq = d.event_seq
             WHERE d.status = 'pending' AND d.next_attempt_at <= ?1 AND NOT EXISTS (
                 SELECT 1 FROM deliveries p WHERE p.status = 'pending' AND p.url = d.url
                 AND p.owner_id = d.owner_id AND p.event_seq < d.event_seq)
             ORDER BY d.event_seq LIMIT ?2",
        )?;
        let rows = st.query_map(params![now, (limit + busy.len()) as i64], |r| {
            Ok(Due {
                id: r.get(0)?,
                url: r.get(1)?,
                attempts: r.get(2)?,
                first_attempt_at: r.get(3)?,
                owner_id: r.get(4)?,
                event_id: r.get(6)?,
                body: crate::events::event_json(r, 5)?.to_string(),
            })
        })?;
        let mut out = Vec::new();
        for d in rows {
            let d = d?;
            if !busy.contains(&d.lane()) && out.len() < limit {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Records an attempt and what follows from it: delivered, retried at `retry_at`,
    /// or `failed` when `retry_at` is `None`.
    pub(crate) fn record_attempt(
        &self,
        delivery: &Due,
        attempt: &Attempt,
        retry_at: Option<i64>,
    ) -> StoreResult<()> {
        let (id, attempt, retry_at) = (delivery.id, attempt.clone(), retry_at);
        let delivered = attempt.delivered();
        self.write(move |_, tx| {
            tx.prepare_cached(
                "INSERT INTO delivery_attempts (delivery_id, at, http_status, error, body)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                id,
                attempt.at,
                attempt.http_status,
                attempt.error,
                attempt.body
            ])?;
            let status = match (delivered, retry_at) {
                (true, _) => "delivered",
                (false, Some(_)) => "pending",
                (false, None) => "failed",
            };
            // A redelivery may have reset the row meanwhile: only the attempt it made counts.
            tx.prepare_cached(
                "UPDATE deliveries SET status = ?2, attempts = attempts + 1,
                    first_attempt_at = COALESCE(first_attempt_at, ?3),
                    next_attempt_at = COALESCE(?4, next_attempt_at), updated_at = ?5
                 WHERE id = ?1 AND status = 'pending'",
            )?
            .execute(params![id, status, attempt.at, retry_at, now()])?;
            Ok(())
        })
    }

    /// `webhook.deliveries`: newest first.
    pub(crate) fn deliveries(&self, status: Option<&str>, limit: u32) -> StoreResult<Vec<Value>> {
        let conn = self.read()?;
        let mut st = conn.prepare_cached(
            "SELECT d.id, d.event_seq, e.id, d.url, d.status, d.next_attempt_at
             FROM deliveries d JOIN events e ON e.seq = d.event_seq
             WHERE ?1 IS NULL OR d.status = ?1 ORDER BY d.id DESC LIMIT ?2",
        )?;
        let rows: Vec<Value> = st
            .query_map(params![status, limit], delivery_json)?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|mut d| {
                d["attempts"] = attempts_of(&conn, d["id"].as_i64().unwrap_or(0))?;
                Ok(d)
            })
            .collect()
    }

    /// `webhook.redeliver`: queues the delivery (by its id, or its event's `seq`) to be
    /// sent again at once, with the same event id, whatever its status.
    pub(crate) fn redeliver(
        &self,
        delivery_id: Option<i64>,
        event_seq: Option<i64>,
    ) -> StoreResult<Value> {
        let d = self.write(move |_, conn| {
            let id: i64 = conn.prepare_cached("SELECT id FROM deliveries WHERE (?1 IS NOT NULL AND id = ?1) OR (?2 IS NOT NULL AND event_seq = ?2)
                     ORDER BY id DESC LIMIT 1")?.query_row(params![delivery_id, event_seq],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or(StoreError::NotFound)?;
            let now = now();
            conn.prepare_cached("UPDATE deliveries SET status = 'pending', next_attempt_at = ?2, first_attempt_at = NULL,
                    updated_at = ?2 WHERE id = ?1")?.execute(params![id, now],
            )?;
            let mut d = conn.prepare_cached("SELECT d.id, d.event_seq, e.id, d.url, d.status, d.next_attempt_at
                 FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE d.id = ?1")?.query_row([id],
                delivery_json,
            )?;
            d["attempts"] = attempts_of(conn, id)?;
            Ok(d)
        })?;
        self.outbox_ready.notify_one();
        Ok(d)
    }

    /// Deliveries not yet delivered nor given up.
    pub(crate) fn webhook_backlog(&self) -> StoreResult<i64> {
        self.deliveries_in("pending")
    }

    /// How many deliveries have `status` (`pending`, `delivered`, `failed`).
    pub(crate) fn deliveries_in(&self, status: &str) -> StoreResult<i64> {
        Ok(self.read()?.query_row(
            "SELECT COUNT(*) FROM deliveries WHERE status = ?1",
            [status],
            |r| r.get(0),
        )?)
    }
}

fn delivery_json(r: &Row<'_>) -> rusqlite::Result<Value> {
    Ok(json!({
        "id": r.get::<_, i64>(0)?,
        "event_seq": r.get::<_, i64>(1)?,
        "event_id": r.get::<_, String>(2)?,
        "url": r.get::<_, String>(3)?,
        "status": r.get::<_, String>(4)?,
        "next_attempt_at": r.get::<_, i64>(5)?,
    }))
}

fn attempts_of(conn: &Connection, delivery_id: i64) -> StoreResult<Value> {
    let mut st = conn.prepare_cached(
        "SELECT at, http_status, error, body FROM delivery_attempts WHERE delivery_id = ?1 ORDER BY rowid",
    )?;
    let rows: Vec<Value> = st
        .query_map([delivery_id], |r| {
            Ok(json!({
                "at": r.get::<_, i64>(0)?,
                "http_status": r.get::<_, Option<u16>>(1)?,
                "error": r.get::<_, Option<String>>(2)?,
                "body": r.get::<_, Option<String>>(3)?,
            }))
        })?
        .collect::<Result<_, _>>()?;
    Ok(Value::Array(rows))
}
