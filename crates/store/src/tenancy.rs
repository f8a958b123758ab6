//! Tenants, their API keys and their programme settings.
//!
//! API keys are 200 random bits shown once; only their SHA-256 is stored, with a short prefix
//! kept in clear so operators can tell keys apart. A plain hash (not a slow password hash) is
//! right here: the secret is random, so there is nothing to guess, and the lookup happens on
//! every request.

use crate::conn::{Conn, DbErrorKind, Row};
use crate::error::{Result, StoreError};
use crate::ledger::ts;
use crate::model::ApiKeyRecord;
use fidelis_core::ProgramSettings;
use sha2::{Digest, Sha256};

pub fn hash_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Creates the tenant and its default programme if missing; true when created.
pub(crate) fn ensure_tenant(
    c: &mut dyn Conn,
    id: &str,
    name: &str,
    settings: &ProgramSettings,
    now: i64,
) -> Result<bool> {
    let n = c.execute(
        "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        &[id.into(), name.into(), now.into()],
    )?;
    if n > 0 {
        let json = serde_json::to_string(settings)
            .map_err(|e| StoreError::Unprocessable(e.to_string()))?;
        c.execute(
            "INSERT INTO programs (tenant_id, settings, version, updated_at, tier_facts) VALUES ($1, $2, 1, $3, $4)",
            &[id.into(), json.as_str().into(), now.into(), i64::from(crate::tiers::needs_member_events(settings)).into()],
        )?;
    }
    Ok(n > 0)
}

pub(crate) fn tenant_ids(c: &mut dyn Conn) -> Result<Vec<String>> {
    Ok(c.query("SELECT id FROM tenants ORDER BY id", &[])?
        .iter()
        .map(|r| r.text(0))
        .collect())
}

fn key_record(r: &Row) -> ApiKeyRecord {
    ApiKeyRecord {
        id: r.text(0),
        tenant_id: r.text(1),
        prefix: r.text(2),
        scope: r.text(3),
        label: r.opt_text(4),
        created_at: ts(r.int(5)),
        revoked: r.opt_int(6).is_some(),
    }
}

const KEY_COLUMNS: &str = "id, tenant_id, prefix, scope, label, created_at, revoked_at";

/// Creates a key; returns its record and the secret, which is never stored nor shown again.
pub(crate) fn create_key(
    c: &mut dyn Conn,
    tenant: &str,
    scope: &str,
    label: Option<&str>,
    now: i64,
) -> Result<(ApiKeyRecord, String)> {
    if c.query_one("SELECT 1 FROM tenants WHERE id = $1", &[tenant.into()])?
        .is_none()
    {
        return Err(StoreError::NotFound(format!("tenant `{tenant}`")));
    }
    let secret = crate::random_id("fk_", 40);
    let prefix: String = secret.chars().take(10).collect();
    let id = crate::random_id("key_", 16);
    c.execute(
        "INSERT INTO api_keys (id, tenant_id, prefix, hash, scope, label, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[id.as_str().into(), tenant.into(), prefix.as_str().into(), hash_key(&secret).as_str().into(), scope.into(), label.into(), now.into()],
    )?;
    let row = c
        .query_one(
            &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"),
            &[id.as_str().into()],
        )?
        .ok_or_else(|| StoreError::NotFound("new key".into()))?;
    Ok((key_record(&row), secret))
}

/// The live (not revoked) key whose secret hashes to `hash`.
pub(crate) fn find_key(c: &mut dyn Conn, hash: &str) -> Result<Option<ApiKeyRecord>> {
    Ok(c.query_one(
        &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE hash = $1 AND revoked_at IS NULL"),
        &[hash.into()],
    )?
    .map(|r| key_record(&r)))
}

pub(crate) fn list_keys(c: &mut dyn Conn, tenant: &str) -> Result<Vec<ApiKeyRecord>> {
    Ok(c.query(
        &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id"),
        &[tenant.into()],
    )?
    .iter()
    .map(key_record)
    .collect())
}

pub(crate) fn revoke_key(c: &mut dyn Conn, tenant: &str, id: &str, now: i64) -> Result<()> {
    let n = c.execute(
        "UPDATE api_keys SET revoked_at = $3 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
        &[tenant.into(), id.into(), now.into()],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("API key `{id}`")));
    }
    Ok(())
}

pub(crate) fn get_program(c: &mut dyn Conn, tenant: &str) -> Result<(ProgramSettings, i64)> {
    let row = c
        .query_one(
            "SELECT settings, version FROM programs WHERE tenant_id = $1",
            &[tenant.into()],
        )?
        .ok_or_else(|| StoreError::NotFound(format!("programme of tenant `{tenant}`")))?;
    let settings: ProgramSettings = serde_json::from_str(&row.text(0)).map_err(|e| {
        StoreError::Unprocessable(format!("stored programme settings unreadable: {e}"))
    })?;
    Ok((settings, row.int(1)))
}

pub(crate) fn put_program(
    c: &mut dyn Conn,
    tenant: &str,
    settings: &ProgramSettings,
    actor: &str,
    now: i64,
) -> Result<i64> {
    let (current, _) = get_program(c, tenant)?;
    if current.currency != settings.currency
        && c.query_one(
            "SELECT 1 FROM events WHERE tenant_id = $1 LIMIT 1",
            &[tenant.into()],
        )?
        .is_some()
    {
        return Err(StoreError::Unprocessable(format!(
            "currency: the programme's currency ({}) cannot change once events are recorded: stored amounts are in it",
            current.currency
        )));
    }
    let json =
        serde_json::to_string(settings).map_err(|e| StoreError::Unprocessable(e.to_string()))?;
    let row = c
        .query_one(
            "UPDATE programs SET settings = $2, version = version + 1, updated_at = $3 WHERE tenant_id = $1 RETURNING version",
            &[tenant.into(), json.as_str().into(), now.into()],
        )?
        .ok_or_else(|| StoreError::NotFound(format!("programme of tenant `{tenant}`")))?;
    crate::tiers::set_tier_facts(c, tenant, settings)?;
    c.execute(
        "INSERT INTO audit_log (tenant_id, actor, action, subject, detail, created_at) VALUES ($1, $2, 'program.update', NULL, $3, $4)",
        &[tenant.into(), actor.into(), json.as_str().into(), now.into()],
    )?;
    Ok(row.int(0))
}

/// Maps a unique-constraint refusal to a conflict naming what was taken.
pub(crate) fn unique_to_conflict(e: crate::conn::DbError, what: &str) -> StoreError {
    if e.kind == DbErrorKind::Unique {
        StoreError::Conflict(format!("{what} is already taken by another member"))
    } else {
        e.into()
    }
}
