//! Read models of the admin console: the dashboard's figures (members, activity, points issued,
//! redeemed and expired over a window, outstanding liability, a daily series) and the member
//! search. Computed by SQL over members, txns and entries; `txns_by_time` (migration 4) keeps
//! the windowed sums to the window's rows.

use crate::conn::Row;
use crate::error::Result;
use crate::ledger::ts;
use crate::runtime::Store;
use serde::{Deserialize, Serialize};

pub const DAY_MICROS: i64 = 86_400_000_000;
/// Longest window the dashboard sums over, in days.
pub const MAX_WINDOW_DAYS: i64 = 366;
/// Members a search page shows at most.
pub const MAX_SEARCH_PAGE: i64 = 100;

/// Points moved on one day (UTC), by programme account, as positive numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayFigures {
    /// Days since 1970-01-01.
    pub day: i64,
    pub issued: i64,
    pub redeemed: i64,
    pub expired: i64,
    pub adjusted: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DashboardFigures {
    pub members: i64,
    pub new_members: i64,
    /// Members with activity within the window, and within 90 days.
    pub active: i64,
    pub active_90: i64,
    /// Over the window: points issued (net of claw-backs), redeemed, expired, adjusted (net).
    pub issued: i64,
    pub redeemed: i64,
    pub expired: i64,
    pub adjusted: i64,
    /// What members hold now: the programme's outstanding liability in points.
    pub liability_available: i64,
    pub liability_pending: i64,
    /// One entry per day of the window, oldest first, days without movement included.
    pub daily: Vec<DayFigures>,
}

/// Which members a search lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemberFilter {
    #[default]
    All,
    /// Activity within the last 30 days.
    Active,
    /// No activity within the last 90 days.
    Dormant,
    /// A negative available balance (a refund took more than was left).
    InDebt,
}

/// One line of the member list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRow {
    pub id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub external_id: Option<String>,
    pub available: i64,
    pub pending: i64,
    pub order_count: i64,
    pub last_activity_at: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRows {
    pub items: Vec<MemberRow>,
    /// Cursor of the next page (`created_at:id` of this page's last row).
    pub next_cursor: Option<String>,
}

/// Escapes `%`, `_` and `\` so the search text matches literally inside `LIKE ... ESCAPE '\'`.
fn like_pattern(q: &str) -> String {
    let mut s = String::with_capacity(q.len() + 2);
    s.push('%');
    for ch in q.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            s.push('\\');
        }
        s.push(ch);
    }
    s.push('%');
    s
}

fn member_row(r: &Row) -> MemberRow {
    MemberRow {
        id: r.text(0),
        name: r.opt_text(1),
        email: r.opt_text(2),
        external_id: r.opt_text(3),
        available: r.int(4),
        pending: r.int(5),
        order_count: r.int(6),
        last_activity_at: r.opt_int(7).map(ts),
        created_at: ts(r.int(8)),
    }
}

impl Store {
    /// The dashboard's figures over the `days` before `now`.
    pub async fn dashboard(&self, tenant: &str, now: i64, days: i64) -> Result<DashboardFigures> {
        let tenant = tenant.to_string();
        let days = days.clamp(1, MAX_WINDOW_DAYS);
        self.read(move |c| {
            let today = now.div_euclid(DAY_MICROS);
            let first_day = today - days + 1;
            let since = first_day * DAY_MICROS;
            let since_90 = now - 90 * DAY_MICROS;
            let window = now - days * DAY_MICROS;
            let mut f = DashboardFigures::default();
            if let Some(r) = c.query_one(
                "SELECT COUNT(*), \
                 CAST(COALESCE(SUM(CASE WHEN created_at >= $2 THEN 1 ELSE 0 END), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(CASE WHEN last_activity_at >= $2 THEN 1 ELSE 0 END), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(CASE WHEN last_activity_at >= $3 THEN 1 ELSE 0 END), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(available), 0) AS BIGINT), CAST(COALESCE(SUM(pending), 0) AS BIGINT) \
                 FROM members WHERE tenant_id = $1",
                &[tenant.as_str().into(), window.into(), since_90.into()],
            )? {
                f.members = r.int(0);
                f.new_members = r.int(1);
                f.active = r.int(2);
                f.active_90 = r.int(3);
                f.liability_available = r.int(4);
                f.liability_pending = r.int(5);
            }
            let mut daily: Vec<DayFigures> = (first_day..=today)
                .map(|day| DayFigures { day, ..Default::default() })
                .collect();
            let rows = c.query(
                &format!(
                    "SELECT CAST(t.created_at / {DAY_MICROS} AS BIGINT), e.account, CAST(SUM(e.amount) AS BIGINT) \
                     FROM txns t JOIN entries e ON e.txn_id = t.id \
                     WHERE t.tenant_id = $1 AND t.created_at >= $2 \
                     AND e.account IN ('issued', 'redeemed', 'expired', 'adjusted') \
                     GROUP BY CAST(t.created_at / {DAY_MICROS} AS BIGINT), e.account"
                ),
                &[tenant.as_str().into(), since.into()],
            )?;
            for r in &rows {
                let Some(d) = usize::try_from(r.int(0) - first_day)
                    .ok()
                    .and_then(|i| daily.get_mut(i))
                else {
                    continue;
                };
                // Programme accounts carry the opposite sign of the member's side: issuing is
                // a debit of `issued`, a redemption or an expiry a credit of theirs.
                let amount = r.int(2);
                match r.text(1).as_str() {
                    "issued" => d.issued -= amount,
                    "redeemed" => d.redeemed += amount,
                    "expired" => d.expired += amount,
                    _ => d.adjusted -= amount,
                }
            }
            for d in &daily {
                f.issued += d.issued;
                f.redeemed += d.redeemed;
                f.expired += d.expired;
                f.adjusted += d.adjusted;
            }
            f.daily = std::mem::take(&mut daily);
            Ok(f)
        })
        .await
    }

    /// Members whose name, e-mail or external id contains `query` (all when empty), newest
    /// first, filtered; `cursor` continues a previous page.
    pub async fn search_members(
        &self,
        tenant: &str,
        query: &str,
        filter: MemberFilter,
        cursor: Option<&str>,
        limit: i64,
        now: i64,
    ) -> Result<MemberRows> {
        let tenant = tenant.to_string();
        let pattern = like_pattern(&query.trim().to_lowercase());
        let limit = limit.clamp(1, MAX_SEARCH_PAGE);
        // The cursor is `created_at:id` of the last row shown; anything else starts over.
        let (c_at, c_id) = cursor
            .and_then(|c| c.split_once(':'))
            .and_then(|(t, id)| t.parse::<i64>().ok().map(|t| (t, id.to_string())))
            .unwrap_or((i64::MAX, String::new()));
        self.read(move |c| {
            let (filter_sql, since) = match filter {
                MemberFilter::All => ("", None),
                MemberFilter::Active => (" AND last_activity_at >= $6", Some(30)),
                MemberFilter::Dormant => {
                    (" AND (last_activity_at IS NULL OR last_activity_at < $6)", Some(90))
                }
                MemberFilter::InDebt => (" AND available < 0", None),
            };
            let sql = format!(
                "SELECT id, name, email, external_id, available, pending, order_count, last_activity_at, created_at \
                 FROM members WHERE tenant_id = $1 \
                 AND (created_at < $3 OR (created_at = $3 AND id < $4)) \
                 AND ($2 = '%%' OR LOWER(COALESCE(name, '')) LIKE $2 ESCAPE '\\' OR COALESCE(email, '') LIKE $2 ESCAPE '\\' OR LOWER(COALESCE(external_id, '')) LIKE $2 ESCAPE '\\'){filter_sql} \
                 ORDER BY created_at DESC, id DESC LIMIT $5"
            );
            let mut params: Vec<crate::conn::Param<'_>> = vec![
                tenant.as_str().into(),
                pattern.as_str().into(),
                c_at.into(),
                c_id.as_str().into(),
                (limit + 1).into(),
            ];
            if let Some(days) = since {
                params.push((now - days * DAY_MICROS).into());
            }
            let rows = c.query(&sql, &params)?;
            let more = rows.len() as i64 > limit;
            let raw: Vec<&Row> = rows.iter().take(limit as usize).collect();
            let next_cursor = if more {
                raw.last().map(|r| format!("{}:{}", r.int(8), r.text(0)))
            } else {
                None
            };
            Ok(MemberRows {
                items: raw.into_iter().map(member_row).collect(),
                next_cursor,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn search_text_matches_literally() {
        assert_eq!(like_pattern("a%b_c\\"), "%a\\%b\\_c\\\\%");
        assert_eq!(like_pattern(""), "%%");
    }
}
