//! The schema, written once for both databases: `{ID}` becomes each one's auto-increment key.
//! Migrations are numbered and applied in order at start; applied ones are recorded.

use crate::conn::{Conn, DbError, Dialect};

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "spine", SPINE),
    (2, "rules", crate::rules::MIGRATION),
    (3, "member_value", crate::member_value::MEMBER_VALUE),
    (4, "web", crate::web::WEB),
    (5, "lean_awards", LEAN_AWARDS),
    (6, "lean_hot_path", LEAN_HOT_PATH),
    (7, "byte_order_keys", BYTE_ORDER_KEYS),
    (8, "tier_bounds", crate::tiers::TIER_BOUNDS),
    (9, "event_kind_in_byte_order", EVENT_KIND_IN_BYTE_ORDER),
    (10, "expiring_on_member_row", EXPIRING_ON_MEMBER_ROW),
    (11, "expiring_listed", EXPIRING_LISTED),
    (
        12,
        "never_expiring_lots_unindexed",
        NEVER_EXPIRING_LOTS_UNINDEXED,
    ),
    (
        13,
        "entries_found_by_transaction",
        ENTRIES_FOUND_BY_TRANSACTION,
    ),
    (
        14,
        "member_events_indexed_for_tiers",
        crate::tiers::MEMBER_EVENTS_FOR_TIERS,
    ),
    (15, "phone_in_byte_order", PHONE_IN_BYTE_ORDER),
    (16, "members_by_phone", MEMBERS_BY_PHONE),
];

/// The phone becomes a key (below), so it compares byte by byte on PostgreSQL as every key
/// does (see [`BYTE_ORDER_KEYS`]); equality, the look-up's only use of it, is unchanged.
const PHONE_IN_BYTE_ORDER: &str = r#"-- PostgreSQL only
ALTER TABLE members ALTER COLUMN phone TYPE TEXT COLLATE "C";
"#;

/// A till looks a member up by phone number; without an index that read every member of the
/// tenant. Phones are not unique (a household may share one). Enrolments and changes of phone
/// pay for the entry; a purchase's update of the member row does not touch it.
const MEMBERS_BY_PHONE: &str =
    "CREATE INDEX members_by_phone ON members (tenant_id, phone) WHERE phone IS NOT NULL;";

/// Every purchase's lot was an entry of the expiry index, including lots that never expire
/// (a programme without expiry, or points earned before it had one), which the expiry job,
/// looking for `expires_at <= now`, can never select. They are left out: one B-tree insert
/// less per purchase in such a programme, and one delete less when the lot is spent. Both
/// databases prove from the job's `expires_at <= $2` that the index applies.
const NEVER_EXPIRING_LOTS_UNINDEXED: &str = r#"
DROP INDEX lots_expiring;
CREATE INDEX lots_expiring ON lots (tenant_id, expires_at) WHERE state = 'available' AND remaining > 0 AND expires_at IS NOT NULL;
"#;

/// A ledger entry is only ever read with its transaction (`entries_by_txn`), by sums over a
/// tenant or member, or by the verifier; nothing looks one up by its id. On PostgreSQL the
/// primary key on `id` was a second index per entry (two entries per purchase, so two
/// B-tree inserts of the dozen and a half a purchase made); the id stays, taken from its
/// sequence, unique by construction. On SQLite the id is the row's own key and costs nothing.
const ENTRIES_FOUND_BY_TRANSACTION: &str = r#"-- PostgreSQL only
ALTER TABLE entries DROP CONSTRAINT entries_pkey;
"#;

/// A balance read listed the member's soonest expiry dates by reading every lot with points
/// left (through the member's transactions): with years of points that expire after earning,
/// 40 past purchases a member put the read's p99 at 33 ms. The member row now keeps the first
/// dates (`fidelis_core::ledger::SoonestExpiring`, `[[expires_at, points], ...]`), written with
/// the balances; the next migration lists them for the members there are.
const EXPIRING_ON_MEMBER_ROW: &str = r#"
ALTER TABLE members ADD COLUMN expiring TEXT NOT NULL DEFAULT '[]';
"#;

/// The lots' soonest expiry dates per member, found as `ledger::open_lots_of` finds them (from the
/// member's open-lots mark, through the member's transactions: there is no index of lots by
/// member). `{JSON_PAIRS}` is each database's JSON array of `[g.e, g.p]` in date order.
const EXPIRING_LISTED: &str = r#"
UPDATE members SET expiring = (
  SELECT COALESCE({JSON_PAIRS}, '[]') FROM (
    SELECT l.expires_at AS e, SUM(l.remaining) AS p FROM txns t JOIN lots l ON l.txn_id = t.id
    WHERE t.tenant_id = members.tenant_id AND t.member_id = members.id AND t.id >= members.open_lots_from
      AND l.member_id = members.id AND l.remaining > 0 AND l.state = 'available' AND l.expires_at IS NOT NULL
    GROUP BY l.expires_at ORDER BY l.expires_at LIMIT 12) g)
WHERE open_lots_from IS NOT NULL;
"#;

/// `events.kind` became part of an index's key (`events_by_member`, for the tier measure):
/// keys compare byte by byte on PostgreSQL (see [`BYTE_ORDER_KEYS`]). Changing the collation
/// rewrites no rows; the index is built again.
const EVENT_KIND_IN_BYTE_ORDER: &str = r#"-- PostgreSQL only
ALTER TABLE events ALTER COLUMN kind TYPE TEXT COLLATE "C";
"#;

/// A migration whose text starts so runs on PostgreSQL only (SQLite records it as applied).
const POSTGRES_ONLY: &str = "-- PostgreSQL only";

/// Keys compare byte by byte on PostgreSQL, as SQLite's always have. A text column otherwise
/// takes the database's collation, so every B-tree step on a tenant, member or order id goes
/// through the locale's comparison, and an index on it is only as good as the operating
/// system's collation tables (an upgrade of glibc that changes them leaves such indexes out
/// of order; byte order never changes). On an ICU `en-US` column, 300,000 inserts into a table
/// with two indexes over ids took 6.3 s against 4.0 s in byte order; on the benchmark the
/// writer's PostgreSQL time moved by a few per cent, and on a `C.UTF-8` database by nothing.
/// Every text column that is part of an index's key changes (ids, emails, codes); free text,
/// such as names, keeps the database's collation for `LOWER` and sorting. Equality is
/// unchanged (a deterministic collation's equality is byte equality); order changes (`ORDER
/// BY` and ranges on ids now sort the same on both databases). Each table is altered once,
/// which rebuilds its indexes. A later migration's indexed text column is declared `{KEY}`
/// (`TEXT COLLATE "C"` on PostgreSQL); `postgresql_keys_compare_byte_by_byte` checks it.
const BYTE_ORDER_KEYS: &str = r#"-- PostgreSQL only
DO $$
DECLARE t record;
BEGIN
  FOR t IN
    SELECT c.relname AS tbl,
           string_agg(format('ALTER COLUMN %I TYPE text COLLATE "C"', a.attname), ', ') AS alters
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema()
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    WHERE c.relkind = 'r'
      AND a.atttypid = 'text'::regtype
      AND a.attcollation <> 'pg_catalog."C"'::regcollation
      AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND a.attnum = ANY (i.indkey))
    GROUP BY c.relname
  LOOP
    EXECUTE format('ALTER TABLE %I %s', t.tbl, t.alters);
  END LOOP;
END $$;
"#;

/// Every purchase inserted into six B-trees keyed by something random (its member or its
/// order id); each is a page written to the log per purchase, which was most of a commit.
/// Two go: awards are found from their order through the order's event (`awards_by_event`),
/// and a member's open lots through the member's transactions from a mark on the member row
/// (`open_lots_from`: no lot with points left has an older transaction; NULL when none has
/// points left). Lots by transaction are appended in id order, so that index costs little.
const LEAN_HOT_PATH: &str = r#"
ALTER TABLE members ADD COLUMN open_lots_from BIGINT;
UPDATE members SET open_lots_from = o.first_txn
  FROM (SELECT tenant_id, member_id, MIN(txn_id) AS first_txn FROM lots WHERE remaining > 0 GROUP BY tenant_id, member_id) AS o
  WHERE members.tenant_id = o.tenant_id AND members.id = o.member_id;
CREATE INDEX lots_by_txn ON lots (txn_id);
DROP INDEX lots_open_by_member;
DROP INDEX awards_by_order;
"#;

/// Every purchase writes an award row; base awards have no campaign and no rule version, so
/// indexing them by those only costs two B-tree inserts per purchase.
const LEAN_AWARDS: &str = r#"
DROP INDEX awards_by_campaign;
DROP INDEX awards_by_source;
CREATE INDEX awards_by_campaign ON awards (tenant_id, campaign_id) WHERE campaign_id IS NOT NULL;
CREATE INDEX awards_by_rule ON awards (tenant_id, source, rule_version) WHERE rule_version IS NOT NULL;
"#;

const SPINE: &str = r#"
CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    prefix TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    scope TEXT NOT NULL,
    label TEXT,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE TABLE programs (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants(id),
    settings TEXT NOT NULL,
    version BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE members (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    external_id TEXT,
    email TEXT,
    phone TEXT,
    name TEXT,
    birth_date TEXT,
    attributes TEXT NOT NULL,
    consents TEXT NOT NULL,
    available BIGINT NOT NULL DEFAULT 0,
    pending BIGINT NOT NULL DEFAULT 0,
    lifetime_earned BIGINT NOT NULL DEFAULT 0,
    order_count BIGINT NOT NULL DEFAULT 0,
    lifetime_spend_minor BIGINT NOT NULL DEFAULT 0,
    last_activity_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX members_by_external_id ON members (tenant_id, external_id) WHERE external_id IS NOT NULL;
CREATE UNIQUE INDEX members_by_email ON members (tenant_id, email) WHERE email IS NOT NULL;
CREATE TABLE events (
    id {ID},
    tenant_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    type TEXT NOT NULL,
    order_id TEXT,
    occurred_at BIGINT NOT NULL,
    recorded_at BIGINT NOT NULL,
    channel TEXT,
    store_id TEXT,
    amount_minor BIGINT,
    currency TEXT,
    payload TEXT NOT NULL
);
CREATE INDEX events_by_member ON events (tenant_id, member_id, occurred_at);
CREATE INDEX events_by_time ON events (tenant_id, occurred_at);
CREATE TABLE orders (
    tenant_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    event_id BIGINT,
    total_minor BIGINT NOT NULL,
    lines TEXT NOT NULL,
    awarded BIGINT NOT NULL,
    refunded_minor BIGINT NOT NULL,
    clawed_back BIGINT NOT NULL,
    refunded_lines TEXT NOT NULL,
    result TEXT,
    PRIMARY KEY (tenant_id, order_id)
);
CREATE TABLE refunds (
    tenant_id TEXT NOT NULL,
    refund_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    result TEXT,
    PRIMARY KEY (tenant_id, refund_id)
);
CREATE TABLE txns (
    id {ID},
    tenant_id TEXT NOT NULL,
    member_id TEXT,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    event_id BIGINT,
    order_id TEXT,
    actor TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX txns_by_member ON txns (tenant_id, member_id, id);
CREATE TABLE entries (
    id {ID},
    tenant_id TEXT NOT NULL,
    txn_id BIGINT NOT NULL,
    member_id TEXT,
    account TEXT NOT NULL,
    lot_id BIGINT,
    amount BIGINT NOT NULL
);
CREATE INDEX entries_by_txn ON entries (txn_id);
CREATE TABLE lots (
    id {ID},
    tenant_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    txn_id BIGINT NOT NULL,
    order_id TEXT,
    state TEXT NOT NULL,
    amount BIGINT NOT NULL,
    remaining BIGINT NOT NULL,
    earned_at BIGINT NOT NULL,
    matures_at BIGINT,
    expires_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX lots_open_by_member ON lots (tenant_id, member_id) WHERE remaining > 0;
CREATE INDEX lots_maturing ON lots (tenant_id, matures_at) WHERE state = 'pending';
CREATE INDEX lots_expiring ON lots (tenant_id, expires_at) WHERE state = 'available' AND remaining > 0;
CREATE TABLE idempotency (
    tenant_id TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    response TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE TABLE audit_log (
    id {ID},
    tenant_id TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT,
    detail TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
"#;

fn render(sql: &str, dialect: Dialect) -> String {
    let (id, key, pairs) = match dialect {
        Dialect::Sqlite => (
            "INTEGER PRIMARY KEY",
            "TEXT",
            "json_group_array(json_array(g.e, g.p) ORDER BY g.e)",
        ),
        Dialect::Postgres => (
            "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
            "TEXT COLLATE \"C\"",
            "json_agg(json_build_array(g.e, g.p) ORDER BY g.e)::text",
        ),
    };
    sql.replace("{ID}", id)
        .replace("{KEY}", key)
        .replace("{JSON_PAIRS}", pairs)
}

/// Applies every migration not yet applied; returns how many ran.
pub fn migrate(c: &mut dyn Conn, now_micros: i64) -> Result<usize, DbError> {
    c.batch(
        "CREATE TABLE IF NOT EXISTS fidelis_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )?;
    let mut ran = 0;
    // On SQLite the write lock is taken at BEGIN, waiting its turn (busy timeout): a deferred
    // BEGIN reads first and then fails at once, without waiting, if another connection wrote
    // in between (a store still closing on the same file, another process starting).
    let begin = match c.dialect() {
        Dialect::Sqlite => "BEGIN IMMEDIATE",
        Dialect::Postgres => "BEGIN",
    };
    for (version, name, sql) in MIGRATIONS {
        c.batch(begin)?;
        if c.dialect() == Dialect::Postgres {
            // Nodes starting together take turns; the lock ends with the transaction.
            c.batch("SELECT pg_advisory_xact_lock(7243011)")?;
        }
        let done = c.query_one(
            "SELECT version FROM fidelis_migrations WHERE version = $1",
            &[(*version).into()],
        )?;
        if done.is_some() {
            c.batch("COMMIT")?;
            continue;
        }
        let skip = c.dialect() == Dialect::Sqlite && sql.starts_with(POSTGRES_ONLY);
        let run = if skip {
            Ok(())
        } else {
            c.batch(&render(sql, c.dialect()))
        };
        let applied = run.and_then(|()| {
            c.execute(
                "INSERT INTO fidelis_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                &[(*version).into(), (*name).into(), now_micros.into()],
            )
        });
        match applied {
            Ok(_) => c.batch("COMMIT")?,
            Err(e) => {
                // The rollback's own failure adds nothing to the migration's error.
                let _ = c.batch("ROLLBACK");
                return Err(e);
            }
        }
        ran += 1;
    }
    Ok(ran)
}
