//! Invoices: creating one (its address, its idempotency), reading and listing them,
//! and the backend's decisions on them.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};

use super::{
    Action, Created, ListFilter, NewInvoice, NewOption, Owner, Shared, Store, StoreError,
    StoreResult, Target, Write, cursor_of, load_invoice, load_payments, now, page,
};
use crate::amount::U256;
use crate::events::{self, EventKind};
use crate::invoice::{Decision, Invoice, InvoiceAddress, Mode, PayOption, PaymentState, Status};

impl Store {
    /// Creates an invoice with the next address of `derive` on each chain of its
    /// options, or returns the one an earlier call with the same `idempotency_key` and
    /// params created. The keys are derived here (call it on a blocking thread); the
    /// write is awaited.
    pub(crate) fn create_invoice(
        &self,
        new: NewInvoice,
        keys: &[(String, String)],
        derive: impl Fn(&str, u32) -> Result<(String, Vec<u8>), String>,
    ) -> StoreResult<Write<Created>> {
        // A retry is answered with what the first call made, and takes no new index.
        if let Some(key) = &new.idempotency_key
            && let Some(earlier) = earlier_invoice(&*self.read()?, self, key, &new.request)?
        {
            return Ok(Write::Now(Ok((earlier, Vec::new()))));
        }
        let addresses = self.derive_addresses(keys, &derive)?;
        Ok(self.submit(move |db, tx| {
            if let Some(key) = &new.idempotency_key
                && let Some(earlier) = earlier_invoice(tx, db, key, &new.request)?
            {
                return Ok((earlier, Vec::new()));
            }
            let now = now();
            // Time-ordered (UUIDv7): at a million invoices a random id would touch a
            // random page of the primary key on every create.
            let id = uuid::Uuid::now_v7().to_string();
            let expires_at = new
                .expires_in
                .map(|s| now.saturating_add(i64::try_from(s).unwrap_or(i64::MAX)));
            // What the lifecycle says of an invoice nothing paid yet: the clock moves
            // it only at expiry.
            let wake_at = expires_at.map(|e| e.saturating_add(1));
            tx.prepare_cached(
                "INSERT INTO invoices (id, mode, price_amount, price_currency, status, order_id,
                    client_id, email, title, description, callback_url, metadata, idempotency_key,
                    request, created_at, expires_at, updated_at, wake_at)
                 VALUES (?1, ?2, ?3, ?4, 'PENDING', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,
                    ?15, ?14, ?16)",
            )?
            .execute(params![
                id,
                new.mode.as_str(),
                new.price.as_ref().map(|p| &p.amount),
                new.price.as_ref().map(|p| &p.currency),
                new.order_id,
                new.client_id,
                new.email,
                new.title,
                new.description,
                new.callback_url,
                new.metadata.to_string(),
                new.idempotency_key,
                new.request,
                now,
                expires_at,
                addresses.is_empty().then_some(wake_at).flatten(),
            ])?;
            for o in &new.options {
                insert_option(tx, &id, o, now)?;
            }
            let mut watch = Vec::new();
            let mut derived = Vec::new();
            for a in addresses {
                insert_address(tx, &id, &a, wake_at)?;
                derived.push(InvoiceAddress {
                    chain: a.chain.clone(),
                    address: a.address,
                    derivation_index: a.index,
                });
                watch.push((a.chain, a.script, id.clone()));
            }
            // What was just written, as the store would read it back: a new invoice has
            // no payments, so its object needs only its chains' cursors.
            let inv = Invoice {
                id: id.clone(),
                options: new
                    .options
                    .into_iter()
                    .map(|o| PayOption {
                        chain: o.chain,
                        asset: o.asset,
                        decimals: o.decimals,
                        amount_due: o.amount_due,
                        tolerance: o.tolerance,
                        confirmations: o.confirmations,
                        added_at: now,
                    })
                    .collect(),
                addresses: derived,
                price: new.price,
                mode: new.mode,
                status: Status::Pending,
                reason: None,
                decision: None,
                order_id: new.order_id,
                client_id: new.client_id,
                email: new.email,
                title: new.title,
                description: new.description,
                callback_url: new.callback_url,
                metadata: new.metadata,
                created_at: now,
                expires_at,
                updated_at: now,
                completed_at: None,
                closed_at: None,
            };
            let view = db.new_invoice_view(tx, &inv, now)?;
            events::insert(
                tx,
                db.outbox.as_ref(),
                EventKind::InvoiceCreated,
                &id,
                now,
                json!({ "invoice": view }),
            )?;
            Ok((view, watch))
        }))
    }

    /// `invoice.add_option`: a new option, or a new quote of one nobody paid yet, with
    /// the chain's address derived on its first option there.
    pub(crate) fn add_option(
        &self,
        id: &str,
        option: NewOption,
        expires_in: Option<u64>,
        key: (String, String),
        derive: impl Fn(&str, u32) -> Result<(String, Vec<u8>), String>,
    ) -> StoreResult<Write<Created>> {
        let inv = load_invoice(&*self.read()?, id)?.ok_or(StoreError::NotFound)?;
        // Derived out of the writer, as for a create; an index taken for an add that is
        // then refused is left unused.
        let address = match inv.address_on(&option.chain) {
            Some(_) => None,
            None => self.derive_addresses(&[key], &derive)?.pop(),
        };
        let id = id.to_string();
        Ok(self.submit(move |db, tx| {
            let id = id.as_str();
            let inv = load_invoice(tx, id)?.ok_or(StoreError::NotFound)?;
            let now = now();
            let open = matches!(inv.status, Status::Pending | Status::Partial)
                && inv.expires_at.is_none_or(|e| now <= e)
                && inv.decision.is_none();
            if !open {
                return Err(StoreError::NotAllowed(format!(
                    "options are added only while the invoice is PENDING or PARTIAL and not \
                     expired; this one is {}",
                    inv.status
                )));
            }
            if inv.mode == Mode::Open {
                return Err(StoreError::NotAllowed(
                    "an open-mode invoice has exactly one option, its amount set by the first \
                     payment"
                        .into(),
                ));
            }
            if inv.options.len() >= MAX_OPTIONS
                && !inv
                    .options
                    .iter()
                    .any(|o| o.chain == option.chain && o.asset == option.asset)
            {
                return Err(StoreError::NotAllowed(format!(
                    "the invoice has {MAX_OPTIONS} options, the most it may have"
                )));
            }
            let paid: bool = tx
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM payments
                     WHERE invoice_id = ?1 AND chain = ?2 AND asset = ?3)",
                )?
                .query_row(params![id, option.chain, option.asset], |r| r.get(0))?;
            if paid {
                return Err(StoreError::NotAllowed(format!(
                    "{} on {} has received a payment: its amount is fixed",
                    option.asset, option.chain
                )));
            }
            insert_option(tx, id, &option, now)?;
            // The invoice's own deadline is for address-less invoices; it has one now.
            let expires_at =
                expires_in.map(|e| now.saturating_add(i64::try_from(e).unwrap_or(i64::MAX)));
            tx.prepare_cached(
                "UPDATE invoices SET expires_at = COALESCE(?3, expires_at), updated_at = ?2,
                    wake_at = NULL WHERE id = ?1",
            )?
            .execute(params![id, now, expires_at])?;
            let mut watch = Vec::new();
            // The address joins the watch set and is judged on its chain's next poll.
            if let Some(a) = address.filter(|a| inv.address_on(&a.chain).is_none()) {
                insert_address(tx, id, &a, Some(now))?;
                watch.push((a.chain, a.script, id.to_string()));
            }
            let view = db.settle(tx, id, &[], None)?;
            let data = json!({
                "invoice": view,
                "option": view["options"]
                    .as_array()
                    .and_then(|os| os.iter().find(|o| {
                        o["chain"] == json!(option.chain) && o["asset"] == json!(option.asset)
                    }))
                    .cloned(),
            });
            events::insert(
                tx,
                db.outbox.as_ref(),
                EventKind::OptionAdded,
                id,
                now,
                data,
            )?;
            Ok((view, watch))
        }))
    }

    /// The next address on each of `keys`' chains (chain, key id), derived on the
    /// caller's thread so that the writer does none of the key arithmetic. No index is
    /// handed out twice; one whose create is then refused is left unused, never reused.
    pub(super) fn derive_addresses(
        &self,
        keys: &[(String, String)],
        derive: &impl Fn(&str, u32) -> Result<(String, Vec<u8>), String>,
    ) -> StoreResult<Vec<NewAddress>> {
        keys.iter()
            .map(|(chain, key_id)| {
                let index = self.next_index(chain, key_id)?;
                let (address, script) = derive(chain, index).map_err(|e| anyhow::anyhow!(e))?;
                Ok(NewAddress {
                    chain: chain.clone(),
                    key_id: key_id.clone(),
                    index,
                    address,
                    script,
                })
            })
            .collect()
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

    /// The invoice's chains, each with its script there and the height the chain was
    /// at when the address was derived (for rescans); `NotFound` if there is no invoice.
    pub(crate) fn invoice_targets(&self, id: &str) -> StoreResult<Vec<Target>> {
        let conn = self.read()?;
        let exists: bool = conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM invoices WHERE id = ?1)")?
            .query_row([id], |r| r.get(0))?;
        if !exists {
            return Err(StoreError::NotFound);
        }
        let mut st = conn.prepare_cached(
            "SELECT chain, script, created_height FROM invoice_addresses
             WHERE invoice_id = ?1 ORDER BY rowid",
        )?;
        let rows = st.query_map([id], |r| {
            Ok(Target {
                chain: r.get(0)?,
                script: r.get(1)?,
                created_height: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The sum of the transfers to `owner` in `asset` confirmed at or below `height`.
    pub(crate) fn confirmed_total(
        &self,
        owner: &Owner,
        asset: &str,
        height: u64,
    ) -> StoreResult<U256> {
        let id = match owner {
            Owner::Invoice(id) => id,
            Owner::Deposit(id) => {
                let conn = self.read()?;
                return Ok(super::deposits::confirmed_deposits(
                    &conn, id, asset, height,
                )?);
            }
        };
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
                    (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR EXISTS (SELECT 1 FROM
                        invoice_options o WHERE o.invoice_id = invoices.id AND o.chain = ?2)) AND
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
            let (ids, next) = page(rows, f.limit);
            let views = ids
                .iter()
                .map(|id| self.invoice_view(conn, id))
                .collect::<StoreResult<Vec<_>>>()?;
            Ok((views, next))
        })
    }

    /// `invoice.void`, `invoice.mark_completed`, `invoice.mark_refunded`.
    pub(crate) fn decide(&self, id: &str, action: Action) -> Write<Value> {
        let id = id.to_string();
        self.submit(move |db, tx| {
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
    pub(crate) fn extend(&self, id: &str, expires_in: u64) -> Write<Value> {
        let id = id.to_string();
        self.submit(move |db, tx| {
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

/// An address derived for an invoice or a deposit address, not yet stored.
pub(super) struct NewAddress {
    pub(super) chain: String,
    pub(super) key_id: String,
    pub(super) index: u32,
    pub(super) address: String,
    pub(super) script: Vec<u8>,
}

/// The most options an invoice may have.
pub(crate) const MAX_OPTIONS: usize = 16;

/// Stores an option, or a new quote of one (same chain and asset): its amount and
/// `added_at` replaced, its place kept.
fn insert_option(tx: &Connection, id: &str, o: &NewOption, now: i64) -> StoreResult<()> {
    tx.prepare_cached(
        "INSERT INTO invoice_options (invoice_id, chain, asset, decimals, amount_due, tolerance,
            confirmations, added_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (invoice_id, chain, asset) DO UPDATE SET amount_due = excluded.amount_due,
            tolerance = excluded.tolerance, confirmations = excluded.confirmations,
            added_at = excluded.added_at",
    )?
    .execute(params![
        id,
        o.chain,
        o.asset,
        o.decimals,
        o.amount_due.map(|u| u.to_string()),
        o.tolerance.to_string(),
        o.confirmations,
        now,
    ])?;
    Ok(())
}

/// Moves the key's next index past `a`'s, for good: invoices and deposit addresses
/// draw from the one counter, so no index is handed out twice.
pub(super) fn take_index(tx: &Connection, a: &NewAddress) -> StoreResult<()> {
    tx.prepare_cached(
        "INSERT INTO derivation (chain, key_id, next_index) VALUES (?1, ?2, ?3)
         ON CONFLICT(chain, key_id) DO UPDATE SET next_index = MAX(next_index, excluded.next_index)",
    )?
    .execute(params![a.chain, a.key_id, a.index + 1])?;
    Ok(())
}

/// Stores an invoice's address on a chain, and moves the key's next index past it.
fn insert_address(
    tx: &Connection,
    id: &str,
    a: &NewAddress,
    wake_at: Option<i64>,
) -> StoreResult<()> {
    take_index(tx, a)?;
    let created_height = cursor_of(tx, &a.chain)?.map(|c| c.height);
    tx.prepare_cached(
        "INSERT INTO invoice_addresses (invoice_id, chain, address, script, derivation_index,
            created_height, watched, wake_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7)",
    )?
    .execute(params![
        id,
        a.chain,
        a.address,
        a.script,
        a.index,
        created_height,
        wake_at
    ])?;
    Ok(())
}
