//! Members: enrolment, look-up by id, external id, e-mail or phone, changes, and the
//! cursor-paginated list. Balances live on the member row but change only through postings.

use crate::conn::{Conn, DbErrorKind, Dialect, Row};
use crate::error::{Result, StoreError};
use crate::ledger::ts;
use crate::model::{Consent, Member, MemberFields, Page};
use crate::tenancy::unique_to_conflict;
use fidelis_core::event::MemberKey;

const COLUMNS: &str = "id, external_id, email, phone, name, birth_date, attributes, consents, order_count, lifetime_spend_minor, created_at, updated_at, last_activity_at";

/// Where a member's row id follows [`COLUMNS`] in a read that asks for it.
const ROW_ID: usize = 13;

fn member(r: &Row) -> Member {
    let attributes = serde_json::from_str(&r.text(6)).unwrap_or_default();
    let consents: Vec<Consent> = serde_json::from_str(&r.text(7)).unwrap_or_default();
    Member {
        id: r.text(0),
        external_id: r.opt_text(1),
        email: r.opt_text(2),
        phone: r.opt_text(3),
        name: r.opt_text(4),
        birth_date: r.opt_text(5),
        attributes,
        consents,
        order_count: r.int(8),
        lifetime_spend_minor: r.int(9),
        created_at: ts(r.int(10)),
        updated_at: ts(r.int(11)),
        last_activity_at: r.opt_int(12).map(ts),
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Unprocessable(e.to_string()))
}

fn classify(e: crate::conn::DbError, f: &MemberFields) -> StoreError {
    if e.kind != DbErrorKind::Unique {
        return e.into();
    }
    let what = if e.message.contains("email") || f.external_id.is_none() {
        "this email"
    } else if e.message.contains("external") || f.email.is_none() {
        "this external_id"
    } else {
        "this external_id or email"
    };
    unique_to_conflict(e, what)
}

pub(crate) fn create(c: &mut dyn Conn, tenant: &str, f: &MemberFields, now: i64) -> Result<Member> {
    let id = crate::random_id("mem_", 20);
    let attributes = json(&f.attributes.clone().unwrap_or_default())?;
    let consents = json(&f.consents.clone().unwrap_or_default())?;
    c.execute(
        "INSERT INTO members (tenant_id, id, external_id, email, phone, name, birth_date, attributes, consents, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        &[
            tenant.into(), id.as_str().into(), f.external_id.as_ref().into(), f.email.as_ref().into(), f.phone.as_ref().into(),
            f.name.as_ref().into(), f.birth_date.as_ref().into(), attributes.as_str().into(), consents.as_str().into(), now.into(),
        ],
    )
    .map_err(|e| classify(e, f))?;
    get(c, tenant, &id)
}

pub(crate) fn get(c: &mut dyn Conn, tenant: &str, id: &str) -> Result<Member> {
    get_with_row(c, tenant, id).map(|(m, _)| m)
}

/// A member, and the id of their row (SQLite's `rowid`, see the store's `fence`).
pub(crate) fn get_with_row(c: &mut dyn Conn, tenant: &str, id: &str) -> Result<(Member, i64)> {
    c.query_one(
        &format!(
            "SELECT {COLUMNS}, {} FROM members WHERE tenant_id = $1 AND id = $2",
            c.dialect().row_id()
        ),
        &[tenant.into(), id.into()],
    )?
    .map(|r| (member(&r), r.int(ROW_ID)))
    .ok_or_else(|| StoreError::NotFound(format!("member `{id}`")))
}

/// Which identifier a look-up uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupBy {
    ExternalId,
    Email,
    Phone,
}

/// The member a look-up finds, and the id of their row (see [`get_with_row`]).
pub(crate) fn find(
    c: &mut dyn Conn,
    tenant: &str,
    by: LookupBy,
    value: &str,
) -> Result<Option<(Member, i64)>> {
    Ok(
        c.query_one(&lookup_sql(c.dialect(), by), &[tenant.into(), value.into()])?
            .map(|r| (member(&r), r.int(ROW_ID))),
    )
}

/// The look-up of [`find`]: `$1` the tenant, `$2` the value. Each identifier has an index
/// (`members_by_external_id`, `members_by_email`, `members_by_phone`); a phone may be shared,
/// so the lowest id wins. Both databases, without statistics that say how few rows a phone
/// has, would rather walk the tenant's members in id order (the primary key) than sort the few
/// rows of one phone: ordering by `id || ''`, which no index holds, keeps the order from
/// choosing the index.
pub fn lookup_sql(dialect: Dialect, by: LookupBy) -> String {
    let column = match by {
        LookupBy::ExternalId => "external_id",
        LookupBy::Email => "email",
        LookupBy::Phone => "phone",
    };
    format!(
        "SELECT {COLUMNS}, {} FROM members WHERE tenant_id = $1 AND {column} = $2 ORDER BY id || '' LIMIT 1",
        dialect.row_id()
    )
}

pub(crate) fn patch(
    c: &mut dyn Conn,
    tenant: &str,
    id: &str,
    f: &MemberFields,
    now: i64,
) -> Result<Member> {
    let current = get(c, tenant, id)?;
    let attributes = match &f.attributes {
        // Attributes merge key by key; a null value removes the key.
        Some(changes) => {
            let mut merged = current.attributes.clone();
            for (k, v) in changes {
                if v.is_null() {
                    merged.remove(k);
                } else {
                    merged.insert(k.clone(), v.clone());
                }
            }
            merged
        }
        None => current.attributes.clone(),
    };
    let consents = match &f.consents {
        // A new answer for a purpose replaces the old one; other purposes stay.
        Some(new) => {
            let mut all: Vec<Consent> = current
                .consents
                .iter()
                .filter(|old| !new.iter().any(|n| n.purpose == old.purpose))
                .cloned()
                .collect();
            all.extend(new.iter().cloned());
            all
        }
        None => current.consents.clone(),
    };
    let pick = |new: &Option<String>, old: &Option<String>| new.clone().or_else(|| old.clone());
    let (external_id, email, phone, name, birth_date) = (
        pick(&f.external_id, &current.external_id),
        pick(&f.email, &current.email),
        pick(&f.phone, &current.phone),
        pick(&f.name, &current.name),
        pick(&f.birth_date, &current.birth_date),
    );
    c.execute(
        "UPDATE members SET external_id = $3, email = $4, phone = $5, name = $6, birth_date = $7, attributes = $8, consents = $9, updated_at = $10 WHERE tenant_id = $1 AND id = $2",
        &[
            tenant.into(), id.into(), external_id.as_ref().into(), email.as_ref().into(), phone.as_ref().into(), name.as_ref().into(),
            birth_date.as_ref().into(), json(&attributes)?.as_str().into(), json(&consents)?.as_str().into(), now.into(),
        ],
    )
    .map_err(|e| classify(e, f))?;
    get(c, tenant, id)
}

pub(crate) fn list(
    c: &mut dyn Conn,
    tenant: &str,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Page<Member>> {
    let limit = limit.clamp(1, crate::ledger::MAX_PAGE);
    let rows = c.query(
        &format!(
            "SELECT {COLUMNS} FROM members WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        ),
        &[
            tenant.into(),
            cursor.unwrap_or("").into(),
            (limit + 1).into(),
        ],
    )?;
    Page::from_rows(&rows, limit, |r| Ok(member(r)), |m| m.id.clone())
}

/// The member an event names; enrols an unknown external id when `auto_enroll` is on.
/// Returns the member id and whether it was enrolled now.
/// The refusal of an event that names a member not enrolled, or `None` when the event enrols
/// them (an external id, with auto-enrol on).
pub fn not_enrolled(key: &MemberKey, auto_enroll: bool) -> Option<StoreError> {
    match key {
        MemberKey::Id(id) => Some(StoreError::NotFound(format!("member `{id}`"))),
        MemberKey::ExternalId(ext) if !auto_enroll => Some(StoreError::NotFound(format!(
            "member with external_id `{ext}` (enrol them first, or turn on auto_enroll)"
        ))),
        MemberKey::ExternalId(_) => None,
    }
}

pub(crate) fn resolve(
    c: &mut dyn Conn,
    tenant: &str,
    key: &MemberKey,
    auto_enroll: bool,
    now: i64,
) -> Result<(String, bool)> {
    match key {
        MemberKey::Id(id) => match c.query_one(
            "SELECT id FROM members WHERE tenant_id = $1 AND id = $2",
            &[tenant.into(), id.into()],
        )? {
            Some(_) => Ok((id.clone(), false)),
            None => Err(not_enrolled(key, auto_enroll)
                .unwrap_or_else(|| StoreError::NotFound(format!("member `{id}`")))),
        },
        MemberKey::ExternalId(ext) => {
            if let Some(r) = c.query_one(
                "SELECT id FROM members WHERE tenant_id = $1 AND external_id = $2",
                &[tenant.into(), ext.into()],
            )? {
                return Ok((r.text(0), false));
            }
            if let Some(refusal) = not_enrolled(key, auto_enroll) {
                return Err(refusal);
            }
            let fields = MemberFields {
                external_id: Some(ext.clone()),
                ..Default::default()
            };
            let m = create(c, tenant, &fields, now)?;
            Ok((m.id, true))
        }
    }
}

/// What earning rules may know of the member an event names, if enrolled.
pub(crate) fn facts(
    c: &mut dyn Conn,
    tenant: &str,
    key: &MemberKey,
) -> Result<Option<fidelis_core::earn::MemberFacts>> {
    let (column, value) = match key {
        MemberKey::Id(id) => ("id", id),
        MemberKey::ExternalId(e) => ("external_id", e),
    };
    // The member and their active plan in one query: this read precedes every event.
    let row = c.query_one(
        &format!(
            "{} WHERE m.tenant_id = $1 AND m.{column} = $2",
            facts_query()
        ),
        &[tenant.into(), value.into()],
    )?;
    row.as_ref().map(facts_of).transpose()
}

/// The facts of the members whose `column` (`id` or `external_id`) is one of `keys`, keyed by
/// that column's value: one query for the facts of many events (see `runtime::facts_loop`).
pub(crate) fn facts_of_many(
    c: &mut dyn Conn,
    tenant: &str,
    column: &str,
    keys: &[Option<&str>],
) -> Result<std::collections::HashMap<String, fidelis_core::earn::MemberFacts>> {
    let (condition, params) = crate::together::one_of(c, tenant, &format!("m.{column}"), keys);
    let rows = c.query(
        &format!("{} WHERE m.tenant_id = $1 AND {condition}", facts_query()),
        &params,
    )?;
    let at = if column == "id" { 0 } else { 11 };
    rows.iter()
        .filter_map(|r| r.opt_text(at).map(|k| facts_of(r).map(|f| (k, f))))
        .collect()
}

fn facts_query() -> String {
    format!(
        "SELECT m.id, m.attributes, m.order_count, m.lifetime_spend_minor, m.created_at, m.birth_date, m.tier, {}, m.external_id FROM members m {}",
        crate::membership::ACTIVE_PLAN_COLUMNS,
        crate::membership::ACTIVE_PLAN_JOIN
    )
}

fn facts_of(r: &Row) -> Result<fidelis_core::earn::MemberFacts> {
    Ok(fidelis_core::earn::MemberFacts {
        id: Some(r.text(0)),
        tier: r.opt_text(6),
        attributes: serde_json::from_str(&r.text(1)).unwrap_or_default(),
        order_count: r.int(2),
        lifetime_spend_minor: r.int(3),
        enrolled_at: Some(fidelis_core::time::from_micros(r.int(4))),
        birth_date: r
            .opt_text(5)
            .and_then(|d| chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok()),
        plan: crate::membership::active_plan(r, 7)?,
    })
}

/// A member found (or enrolled) and locked for a purchase.
pub(crate) struct Locked {
    pub id: String,
    pub state: crate::ledger::MemberState,
    /// The member's soonest expiry dates, as stored (`ledger::expiring_plus`).
    pub expiring: String,
    /// The member's tier before the purchase (the one its multiplier earns at).
    pub tier: Option<String>,
    pub enrolled: bool,
}

/// Like [`resolve`], and locks the member's row, returning its balances, soonest expiry dates
/// and tier as well.
pub(crate) fn resolve_locked(
    c: &mut dyn Conn,
    tenant: &str,
    key: &MemberKey,
    auto_enroll: bool,
    now: i64,
) -> Result<Locked> {
    let lock = |c: &mut dyn Conn, column: &str, value: &str| {
        let sql = format!(
            "SELECT id, available, pending, expiring, tier FROM members WHERE tenant_id = $1 AND {column} = $2{}",
            c.dialect().for_update()
        );
        Ok::<_, StoreError>(
            c.query_one(&sql, &[tenant.into(), value.into()])?
                .map(|r| Locked {
                    id: r.text(0),
                    state: crate::ledger::MemberState {
                        available: r.int(1),
                        pending: r.int(2),
                    },
                    expiring: r.text(3),
                    tier: r.opt_text(4),
                    enrolled: false,
                }),
        )
    };
    let (column, value) = match key {
        MemberKey::Id(id) => ("id", id),
        MemberKey::ExternalId(e) => ("external_id", e),
    };
    if let Some(found) = lock(c, column, value)? {
        return Ok(found);
    }
    let (id, enrolled) = resolve(c, tenant, key, auto_enroll, now)?;
    let found =
        lock(c, "id", &id)?.ok_or_else(|| StoreError::NotFound(format!("member `{id}`")))?;
    Ok(Locked { enrolled, ..found })
}
