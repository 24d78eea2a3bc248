//! Invoices: creating one (its address, its idempotency), reading and listing them,
//! and the backend's decisions on them.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};

use super::{
    Action, Created, ListFilter, NewInvoice, Shared, Store, StoreError, StoreResult, cursor_of,
    load_invoice, load_payments, now,
};
use crate::amount::U256;
use crate::events::{self, EventKind};
use crate::invoice::{Decision, PaymentState, Status};

impl Store {
    /// Creates an invoice with the next address of `derive`, or returns the one an
    /// earlier call with the same `idempotency_key` and params created.
    pub(crate) fn create_invoice(
        &self,
        new: NewInvoice,
        key_id: &str,
        derive: impl FnOnce(u32) -> Result<(String, Vec<u8>), String>,
    ) -> StoreResult<Created> {
        // A retry is answered with what the first call made, and takes no new index.
        if let Some(key) = &new.idempotency_key
            && let Some(earlier) = earlier_invoice(&*self.read()?, self, key, &new.request)?
        {
            return Ok((earlier, None));
        }
        // The index is handed out here and the address derived on the caller's thread,
        // so that the writer does none of the key arithmetic. No index is handed out
        // twice; one whose create is then refused is left unused, never reused.
        let index = self.next_index(&new.chain, key_id)?;
        let (address, script) = derive(index).map_err(|e| anyhow::anyhow!(e))?;
        let key_id = key_id.to_string();
        self.write(move |db, tx| {
            if let Some(key) = &new.idempotency_key
                && let Some(earlier) = earlier_invoice(tx, db, key, &new.request)?
            {
                return Ok((earlier, None));
            }
            tx.prepare_cached(
                "INSERT INTO derivation (chain, key_id, next_index) VALUES (?1, ?2, ?3)
                 ON CONFLICT(chain, key_id) DO UPDATE SET next_index = MAX(next_index, excluded.next_index)",
            )?
            .execute(params![new.chain, key_id, index + 1])?;
            let now = now();
            // Time-ordered (UUIDv7): at a million invoices a random id would touch a
            // random page of the primary key on every create.
            let id = uuid::Uuid::now_v7().to_string();
            let created_height = cursor_of(tx, &new.chain)?.map(|c| c.height);
            let expires_at = new
                .expires_in
                .map(|s| now.saturating_add(i64::try_from(s).unwrap_or(i64::MAX)));
            tx.prepare_cached("INSERT INTO invoices (id, chain, asset, decimals, mode, address, script, derivation_index,
                    amount_due, tolerance, confirmations, status, reason, decision, order_id, client_id,
                    email, title, description, callback_url, metadata, idempotency_key, request,
                    created_height, created_at, expires_at, updated_at, completed_at, closed_at, wake_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'PENDING', NULL, NULL, ?12, ?13,
                    ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?22, NULL, NULL, ?24)")?.execute(params![
                    id,
                    new.chain,
                    new.asset,
                    new.decimals,
                    new.mode.as_str(),
                    address,
                    script,
                    index,
                    new.amount_due.map(|u| u.to_string()),
                    new.tolerance.to_string(),
                    new.confirmations,
                    new.order_id,
                    new.client_id,
                    new.email,
                    new.title,
                    new.description,
                    new.callback_url,
                    new.metadata.to_string(),
                    new.idempotency_key,
                    new.request,
                    created_height,
                    now,
                    expires_at,
                    // What the lifecycle says of an invoice nothing paid yet: the clock
                    // moves it only at expiry.
                    expires_at.map(|e| e.saturating_add(1)),
                ],
            )?;
            let view = db.invoice_view(tx, &id)?;
            events::insert(
                tx,
                db.outbox.as_ref(),
                EventKind::InvoiceCreated,
                &id,
                now,
                json!({ "invoice": view }),
            )?;
            Ok((view, Some((script, id))))
        })
    }

    /// The next derivation index of `key_id` on `chain`, taken: read from the database
    /// the first time, counted here after.
    fn next_index(&self, chain: &str, key_id: &str) -> StoreResult<u32> {
        let mut next = self.next_index.lock().unwrap_or_else(|e| e.into_inner());
        let key = (chain.to_string(), key_id.to_string());
        let slot = match next.get_mut(&key) {
            Some(slot) => slot,
            None => {
                let stored: Option<u32> = self
                    .read()?
                    .prepare_cached(
                        "SELECT next_index FROM derivation WHERE chain = ?1 AND key_id = ?2",
                    )?
                    .query_row(params![chain, key_id], |r| r.get(0))
                    .optional()?;
                next.entry(key).or_insert(stored.unwrap_or(0))
            }
        };
        let index = *slot;
        *slot = index
            .checked_add(1)
            .ok_or_else(|| anyhow::anyhow!("the key's derivation indexes are used up"))?;
        Ok(index)
    }

    /// The invoice object, or `NotFound`.
    pub(crate) fn get_invoice(&self, id: &str) -> StoreResult<Value> {
        self.read()?.snapshot(|conn| self.invoice_view(conn, id))
    }

    /// The invoice's chain and script (for rescans).
    pub(crate) fn invoice_target(&self, id: &str) -> StoreResult<(String, Vec<u8>, Option<u64>)> {
        self.read()?
            .query_row(
                "SELECT chain, script, created_height FROM invoices WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?
            .ok_or(StoreError::NotFound)
    }

    /// The sum of the invoice's payments in `asset` confirmed at or below `height`.
    pub(crate) fn confirmed_total(&self, id: &str, asset: &str, height: u64) -> StoreResult<U256> {
        let pays = load_payments(&*self.read()?, id)?;
        Ok(crate::amount::sum(
            pays.iter()
                .filter(|p| {
                    p.asset == asset
                        && p.state == PaymentState::Confirmed
                        && p.block_height.is_some_and(|h| h <= height)
                })
                .map(|p| p.amount),
        ))
    }

    /// `invoice.list`: newest first, `limit` a page, with the cursor of the next page.
    pub(crate) fn list_invoices(&self, f: &ListFilter) -> StoreResult<(Vec<Value>, Option<i64>)> {
        self.read()?.snapshot(|conn| {
            let mut st = conn.prepare_cached(
                "SELECT rowid, id FROM invoices WHERE
                    (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR chain = ?2) AND
                    (?3 IS NULL OR order_id = ?3) AND (?4 IS NULL OR created_at > ?4) AND
                    (?5 IS NULL OR created_at < ?5) AND (?6 IS NULL OR rowid < ?6)
                 ORDER BY rowid DESC LIMIT ?7",
            )?;
            let rows: Vec<(i64, String)> = st
                .query_map(
                    params![
                        f.status.map(Status::as_str),
                        f.chain,
                        f.order_id,
                        f.created_after,
                        f.created_before,
                        f.cursor,
                        i64::from(f.limit) + 1
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?
                .collect::<Result<_, _>>()?;
            let more = rows.len() > f.limit as usize;
            let page = &rows[..rows.len().min(f.limit as usize)];
            let views = page
                .iter()
                .map(|(_, id)| self.invoice_view(conn, id))
                .collect::<StoreResult<Vec<_>>>()?;
            let next = if more {
                page.last().map(|(r, _)| *r)
            } else {
                None
            };
            Ok((views, next))
        })
    }

    /// `invoice.void`, `invoice.mark_completed`, `invoice.mark_refunded`.
    pub(crate) fn decide(&self, id: &str, action: Action) -> StoreResult<Value> {
        let id = id.to_string();
        self.write(move |db, tx| {
            let id = id.as_str();
            let inv = load_invoice(tx, id)?.ok_or(StoreError::NotFound)?;
            let allowed = match action {
                // Voiding is for invoices nobody paid in full; a paid one is refunded.
                Action::Void => matches!(
                    inv.status,
                    Status::Pending
                        | Status::Partial
                        | Status::Expired
                        | Status::ExpiredLatePayment
                ),
                Action::MarkCompleted => matches!(
                    inv.status,
                    Status::Pending
                        | Status::Partial
                        | Status::WaitingForConfirmations
                        | Status::Expired
                        | Status::ExpiredLatePayment
                ),
                Action::MarkRefunded => {
                    inv.status != Status::Voided && inv.status != Status::Refunded
                }
            };
            if !allowed {
                return Err(StoreError::NotAllowed(format!(
                    "not allowed while the invoice is {}",
                    inv.status
                )));
            }
            let decision = match action {
                Action::Void => Decision::Voided,
                Action::MarkCompleted => Decision::MarkedCompleted,
                Action::MarkRefunded => Decision::Refunded,
            };
            tx.prepare_cached("UPDATE invoices SET decision = ?2 WHERE id = ?1")?
                .execute(params![id, decision.as_str()])?;
            let view = db.settle(tx, id, &[], None)?;
            Ok(view)
        })
    }

    /// `invoice.extend`: a new `expires_at`, only before the invoice expired.
    pub(crate) fn extend(&self, id: &str, expires_in: u64) -> StoreResult<Value> {
        let id = id.to_string();
        self.write(move |db, tx| {
            let id = id.as_str();
            let inv = load_invoice(tx, id)?.ok_or(StoreError::NotFound)?;
            if !matches!(
                inv.status,
                Status::Pending | Status::Partial | Status::WaitingForConfirmations
            ) {
                return Err(StoreError::NotAllowed(format!(
                    "only an invoice that has not expired or been decided can be extended; this one is {}",
                    inv.status
                )));
            }
            let now = now();
            let expires_at = now.saturating_add(i64::try_from(expires_in).unwrap_or(i64::MAX));
            tx.prepare_cached("UPDATE invoices SET expires_at = ?2, updated_at = ?3 WHERE id = ?1")?.execute(params![id, expires_at, now],
            )?;
            let view = db.settle(tx, id, &[], None)?;
            Ok(view)
        })
    }
}

/// The invoice an earlier create with idempotency `key` made, if any; a conflict if
/// it was made from other params.
fn earlier_invoice(
    conn: &Connection,
    db: &Shared,
    key: &str,
    request: &str,
) -> StoreResult<Option<Value>> {
    let earlier: Option<(String, String)> = conn
        .prepare_cached("SELECT id, request FROM invoices WHERE idempotency_key = ?1")?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match earlier {
        None => Ok(None),
        Some((_, r)) if r != request => Err(StoreError::IdempotencyConflict),
        Some((id, _)) => Ok(Some(db.invoice_view(conn, &id)?)),
    }
}
