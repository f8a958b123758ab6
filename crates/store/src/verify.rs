//! The ledger's invariants, checked on a live database: every journal transaction sums to zero,
//! cached balances equal their entries, and open lots equal the balances they back.

use crate::conn::Conn;
use crate::error::Result;
use fidelis_core::ledger::SoonestExpiring;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Problems listed in a report at most (the counts are always complete).
const SAMPLES: i64 = 20;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub transactions: i64,
    pub entries: i64,
    pub members: i64,
    pub lots: i64,
    pub unbalanced_transactions: Vec<i64>,
    pub balance_mismatches: Vec<String>,
    pub lot_mismatches: Vec<String>,
    /// Store-credit transactions whose entries do not sum to zero.
    #[serde(default)]
    pub unbalanced_credit_transactions: Vec<i64>,
    /// Cached store-credit balances that differ from their entries.
    #[serde(default)]
    pub credit_mismatches: Vec<String>,
    /// Member rows whose soonest expiry dates differ from their lots'.
    #[serde(default)]
    pub expiring_mismatches: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.unbalanced_transactions.is_empty()
            && self.balance_mismatches.is_empty()
            && self.lot_mismatches.is_empty()
            && self.unbalanced_credit_transactions.is_empty()
            && self.credit_mismatches.is_empty()
            && self.expiring_mismatches.is_empty()
    }
}

/// Checks every tenant (`tenant` empty) or one.
pub(crate) fn verify(c: &mut dyn Conn, tenant: &str) -> Result<VerifyReport> {
    let count = |c: &mut dyn Conn, sql: &str| -> Result<i64> {
        Ok(c.query_one(sql, &[tenant.into()])?.map_or(0, |r| r.int(0)))
    };
    let mut report = VerifyReport {
        transactions: count(
            c,
            "SELECT COUNT(*) FROM txns WHERE ($1 = '' OR tenant_id = $1)",
        )?,
        entries: count(
            c,
            "SELECT COUNT(*) FROM entries WHERE ($1 = '' OR tenant_id = $1)",
        )?,
        members: count(
            c,
            "SELECT COUNT(*) FROM members WHERE ($1 = '' OR tenant_id = $1)",
        )?,
        lots: count(
            c,
            "SELECT COUNT(*) FROM lots WHERE ($1 = '' OR tenant_id = $1)",
        )?,
        ..Default::default()
    };
    report.unbalanced_transactions = c
        .query("SELECT txn_id FROM entries WHERE ($2 = '' OR tenant_id = $2) GROUP BY txn_id HAVING SUM(amount) <> 0 ORDER BY txn_id LIMIT $1", &[SAMPLES.into(), tenant.into()])?
        .iter()
        .map(|r| r.int(0))
        .collect();
    report.balance_mismatches = c
        .query(
            "SELECT m.tenant_id, m.id, m.available, m.pending, CAST(COALESCE(e.available, 0) AS BIGINT), CAST(COALESCE(e.pending, 0) AS BIGINT)
             FROM members m LEFT JOIN (
                SELECT tenant_id, member_id,
                       SUM(CASE WHEN account = 'available' THEN amount ELSE 0 END) AS available,
                       SUM(CASE WHEN account = 'pending' THEN amount ELSE 0 END) AS pending
                FROM entries GROUP BY tenant_id, member_id) e
             ON e.tenant_id = m.tenant_id AND e.member_id = m.id
             WHERE ($2 = '' OR m.tenant_id = $2) AND (m.available <> COALESCE(e.available, 0) OR m.pending <> COALESCE(e.pending, 0))
             ORDER BY m.tenant_id, m.id LIMIT $1",
            &[SAMPLES.into(), tenant.into()],
        )?
        .iter()
        .map(|r| format!("{}/{}: cached available {} pending {}, entries say {} and {}", r.text(0), r.text(1), r.int(2), r.int(3), r.int(4), r.int(5)))
        .collect();
    // Pending lots back the pending balance; available lots back the available balance, which
    // may be negative (a debt) only when no available lot is left.
    report.lot_mismatches = c
        .query(
            "SELECT m.tenant_id, m.id, m.available, m.pending, CAST(COALESCE(l.available, 0) AS BIGINT), CAST(COALESCE(l.pending, 0) AS BIGINT)
             FROM members m LEFT JOIN (
                SELECT tenant_id, member_id,
                       SUM(CASE WHEN state = 'available' THEN remaining ELSE 0 END) AS available,
                       SUM(CASE WHEN state = 'pending' THEN remaining ELSE 0 END) AS pending
                FROM lots WHERE remaining > 0 GROUP BY tenant_id, member_id) l
             ON l.tenant_id = m.tenant_id AND l.member_id = m.id
             WHERE ($2 = '' OR m.tenant_id = $2) AND (m.pending <> COALESCE(l.pending, 0)
                OR (m.available >= 0 AND m.available <> COALESCE(l.available, 0))
                OR (m.available < 0 AND COALESCE(l.available, 0) <> 0))
             ORDER BY m.tenant_id, m.id LIMIT $1",
            &[SAMPLES.into(), tenant.into()],
        )?
        .iter()
        .map(|r| format!("{}/{}: available {} pending {}, lots hold {} and {}", r.text(0), r.text(1), r.int(2), r.int(3), r.int(4), r.int(5)))
        .collect();
    // A lot with points left is found through its member's transactions from the member
    // row's mark (`ledger::open_lots_of`); one the mark has passed would be invisible.
    report.lot_mismatches.extend(
        c.query(
            "SELECT l.tenant_id, l.member_id, l.id FROM lots l JOIN members m ON m.tenant_id = l.tenant_id AND m.id = l.member_id
             WHERE ($2 = '' OR l.tenant_id = $2) AND l.remaining > 0
               AND (m.open_lots_from IS NULL OR l.txn_id < m.open_lots_from
                    OR NOT EXISTS (SELECT 1 FROM txns t WHERE t.id = l.txn_id AND t.tenant_id = l.tenant_id AND t.member_id = l.member_id))
             ORDER BY l.id LIMIT $1",
            &[SAMPLES.into(), tenant.into()],
        )?
        .iter()
        .map(|r| format!("{}/{}: lot {} has points left but is not reachable from the member's open-lots mark", r.text(0), r.text(1), r.int(2))),
    );
    (
        report.unbalanced_credit_transactions,
        report.credit_mismatches,
    ) = crate::credit::verify(c, tenant, SAMPLES)?;
    report.expiring_mismatches = expiring_mismatches(c, tenant)?;
    Ok(report)
}

/// Members compared at once by [`expiring_mismatches`].
const EXPIRING_PAGE: i64 = 500;

/// The soonest expiry dates each member row keeps (`ledger::BalanceRow`), against the lots:
/// members a page at a time (in id order, per tenant), their lots found through their
/// transactions (not from the open-lots mark, which is checked above), so the check holds one
/// page in memory however large the tenant.
fn expiring_mismatches(c: &mut dyn Conn, tenant: &str) -> Result<Vec<String>> {
    let tenants: Vec<String> = c
        .query(
            "SELECT id FROM tenants WHERE ($1 = '' OR id = $1) ORDER BY id",
            &[tenant.into()],
        )?
        .iter()
        .map(|r| r.text(0))
        .collect();
    let mut found = Vec::new();
    for t in &tenants {
        let mut after = String::new();
        loop {
            let page = c.query(
                "SELECT id, expiring FROM members WHERE tenant_id = $1 AND id > $2 AND (open_lots_from IS NOT NULL OR expiring <> '[]') ORDER BY id LIMIT $3",
                &[t.as_str().into(), after.as_str().into(), EXPIRING_PAGE.into()],
            )?;
            let Some(last) = page.last() else { break };
            after = last.text(0);
            let ids: Vec<String> = page.iter().map(|r| r.text(0)).collect();
            let keys: Vec<Option<&str>> = ids.iter().map(|id| Some(id.as_str())).collect();
            let (condition, params) = crate::together::one_of(c, t, "t.member_id", &keys);
            let mut from_lots: BTreeMap<String, SoonestExpiring> = BTreeMap::new();
            for r in c.query(
                &format!(
                    "SELECT t.member_id, l.expires_at, CAST(SUM(l.remaining) AS BIGINT) FROM txns t JOIN lots l ON l.txn_id = t.id
                     WHERE t.tenant_id = $1 AND {condition} AND l.member_id = t.member_id AND l.remaining > 0
                       AND l.state = 'available' AND l.expires_at IS NOT NULL
                     GROUP BY t.member_id, l.expires_at"
                ),
                &params,
            )? {
                from_lots.entry(r.text(0)).or_default().add(r.int(1), r.int(2));
            }
            for r in &page {
                let (id, row) = (r.text(0), r.text(1));
                let lots = from_lots.remove(&id).unwrap_or_default();
                if SoonestExpiring::parse(&row).as_ref() != Some(&lots)
                    && found.len() < SAMPLES as usize
                {
                    found.push(format!(
                        "{t}/{id}: row lists expiry dates {row}, lots say {}",
                        lots.to_text()
                    ));
                }
            }
        }
    }
    Ok(found)
}
