//! Idempotency: a write with an `Idempotency-Key` stores its result with the key, in the same
//! transaction as its effect. The same key with the same request replays that result; with
//! another request it is a conflict. The key row is inserted first, so a concurrent duplicate
//! (another writer, another node) waits on the unique index and then replays. A request
//! refused without writing anything gives its key back (the row is deleted), so the
//! transaction is as the request found it and the writer need not undo it (see
//! `Conn::may_have_written`); refusals are not stored, and a retry with the key runs again.

use crate::conn::Conn;
use crate::error::{Result, StoreError};
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdemKey {
    pub key: String,
    /// A hash of what the request asked (method, path, body), so reuse with another request
    /// is caught.
    pub request_hash: String,
}

/// Runs `f` under `idem` (if any): returns `(result, replayed)`.
pub(crate) fn run<T, F>(
    c: &mut dyn Conn,
    tenant: &str,
    idem: Option<&IdemKey>,
    now: i64,
    f: F,
) -> Result<(T, bool)>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce(&mut dyn Conn) -> Result<T>,
{
    let Some(idem) = idem else {
        return Ok((f(c)?, false));
    };
    let mark = c.may_have_written();
    let inserted = c.execute(
        "INSERT INTO idempotency (tenant_id, key, request_hash, response, created_at) VALUES ($1, $2, $3, NULL, $4) ON CONFLICT DO NOTHING",
        &[tenant.into(), (&idem.key).into(), (&idem.request_hash).into(), now.into()],
    )?;
    if inserted == 0 {
        let row = c
            .query_one(
                "SELECT request_hash, response FROM idempotency WHERE tenant_id = $1 AND key = $2",
                &[tenant.into(), (&idem.key).into()],
            )?
            .ok_or_else(|| StoreError::Busy("idempotency key vanished; retry".into()))?;
        if row.text(0) != idem.request_hash {
            return Err(StoreError::Conflict(format!(
                "the Idempotency-Key `{}` was already used with a different request",
                idem.key
            )));
        }
        let Some(stored) = row.opt_text(1) else {
            return Err(StoreError::Conflict(
                "a request with this Idempotency-Key is still in progress".into(),
            ));
        };
        let value = serde_json::from_str(&stored).map_err(|e| {
            StoreError::Conflict(format!(
                "the stored answer for this key cannot be replayed: {e}"
            ))
        })?;
        return Ok((value, true));
    }
    let claimed = c.may_have_written();
    let value = match f(c) {
        Ok(v) => v,
        Err(e) => {
            // Refused without writing anything (an order resent with another basket under a
            // new key): the key is given back, so the transaction is as the request found it
            // and the writer need not undo it. A refusal is never stored with its key (it was
            // rolled back before), so a retry with the key runs again either way.
            if let (Some(mark), Some(now)) = (mark, claimed)
                && c.may_have_written() == Some(now)
            {
                let released = c.execute(
                    "DELETE FROM idempotency WHERE tenant_id = $1 AND key = $2",
                    &[tenant.into(), (&idem.key).into()],
                );
                // If the key cannot be given back, the writer undoes the request as before.
                if released.is_ok() {
                    c.writes_undone_since(mark);
                }
            }
            return Err(e);
        }
    };
    let json = serde_json::to_string(&value)
        .map_err(|e| StoreError::Unprocessable(format!("result not serialisable: {e}")))?;
    c.defer(
        "UPDATE idempotency SET response = $3 WHERE tenant_id = $1 AND key = $2",
        &[tenant.into(), (&idem.key).into(), json.as_str().into()],
    )?;
    Ok((value, false))
}
