//! Events: written in the same transaction as the change they describe, read back in
//! `seq` order by `events.list`, `events.subscribe` and the webhook sender.

use rusqlite::{Connection, Row, params};

use crate::store::{Outbox, Owner};
use serde_json::{Value, json};

/// The event types of `lifecycle.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    InvoiceCreated,
    OptionAdded,
    StatusChanged,
    Reverted,
    PaymentDetected,
    PaymentConfirmed,
    PaymentDropped,
    DepositAddressCreated,
    DepositAddressClosed,
    DepositDetected,
    DepositConfirmed,
    DepositDropped,
    DepositReverted,
}

impl EventKind {
    /// The stable `type` string.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventKind::InvoiceCreated => "invoice.created",
            EventKind::OptionAdded => "invoice.option_added",
            EventKind::StatusChanged => "invoice.status_changed",
            EventKind::Reverted => "invoice.reverted",
            EventKind::PaymentDetected => "payment.detected",
            EventKind::PaymentConfirmed => "payment.confirmed",
            EventKind::PaymentDropped => "payment.dropped",
            EventKind::DepositAddressCreated => "deposit_address.created",
            EventKind::DepositAddressClosed => "deposit_address.closed",
            EventKind::DepositDetected => "deposit.detected",
            EventKind::DepositConfirmed => "deposit.confirmed",
            EventKind::DepositDropped => "deposit.dropped",
            EventKind::DepositReverted => "deposit.reverted",
        }
    }
}

/// Appends an event of the invoice `invoice_id` (its `seq` is the next in the whole
/// database) and, with webhooks on, its delivery in the same transaction.
pub(crate) fn insert(
    conn: &Connection,
    outbox: Option<&Outbox>,
    kind: EventKind,
    invoice_id: &str,
    at: i64,
    data: Value,
) -> rusqlite::Result<i64> {
    append(
        conn,
        outbox,
        kind,
        &Owner::Invoice(invoice_id.into()),
        at,
        data,
    )
}

/// Appends an event of what `owner` names (an invoice or a deposit address), and its
/// delivery, as [`insert`] does.
pub(crate) fn append(
    conn: &Connection,
    outbox: Option<&Outbox>,
    kind: EventKind,
    owner: &Owner,
    at: i64,
    data: Value,
) -> rusqlite::Result<i64> {
    // Time-ordered (UUIDv7): new ids land at the end of the id index, not at random.
    let id = format!("evt_{}", uuid::Uuid::now_v7().simple());
    let (invoice, deposit_address) = owner.columns();
    conn.prepare_cached(
        "INSERT INTO events (id, type, invoice_id, deposit_address_id, created_at, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        id,
        kind.as_str(),
        invoice,
        deposit_address,
        at,
        data.to_string()
    ])?;
    let seq = conn.last_insert_rowid();
    crate::fault::point("event_before_outbox");
    crate::store::enqueue(conn, outbox, seq, owner, at)?;
    Ok(seq)
}

/// The query of [`list`].
pub(crate) const AFTER: &str =
    "SELECT seq, id, type, invoice_id, deposit_address_id, created_at, data
     FROM events WHERE seq > ?1 AND (?2 IS NULL OR invoice_id = ?2)
         AND (?4 IS NULL OR deposit_address_id = ?4)
     ORDER BY seq LIMIT ?3";

/// Events after `after_seq`, oldest first, at most `limit`, optionally of one invoice
/// or one deposit address.
pub(crate) fn list(
    conn: &Connection,
    after_seq: i64,
    limit: u32,
    of: Option<&Owner>,
) -> rusqlite::Result<Vec<Value>> {
    let (invoice, deposit_address) = of.map_or((None, None), Owner::columns);
    let mut st = conn.prepare_cached(AFTER)?;
    let rows = st.query_map(params![after_seq, invoice, limit, deposit_address], |r| {
        event_json(r, 0)
    })?;
    rows.collect()
}

/// The event object of a row holding `seq, id, type, invoice_id, deposit_address_id,
/// created_at, data` from column `at` on: what
/// `events.list`, `events.subscribe` and webhooks carry.
pub(crate) fn event_json(r: &Row<'_>, at: usize) -> rusqlite::Result<Value> {
    let data: String = r.get(at + 6)?;
    Ok(json!({
        "seq": r.get::<_, i64>(at)?,
        "id": r.get::<_, String>(at + 1)?,
        "type": r.get::<_, String>(at + 2)?,
        "invoice_id": r.get::<_, Option<String>>(at + 3)?,
        "deposit_address_id": r.get::<_, Option<String>>(at + 4)?,
        "created_at": r.get::<_, i64>(at + 5)?,
        "data": serde_json::from_str::<Value>(&data).unwrap_or(Value::Null),
    }))
}
