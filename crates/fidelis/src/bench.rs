//! `fidelis bench`: loads a database with simulated members, starts `fidelis serve` as a child
//! process, and drives it over HTTP on loopback from this process with N keep-alive
//! connections (or, `--mode inprocess`, drives the use cases directly to isolate the engine's
//! cost). The operations are purchases, balance reads and redemptions of a reward (a
//! connection redeems for a member it has just bought for, so the points are there), and with
//! `--resend-share` orders resent with another total, as tills do, each refused 409, and with
//! `--refund-share` one item of the previous order returned (a refund by line);
//! `--idempotency-keys` keys every request and `--capped-rule` adds a capped campaign. Prints
//! throughput and p50/p99/p99.9 latency per operation, as a table and as JSON.
//! `--ceiling` sends only `GET /healthz` through the same server and connections: what HTTP
//! on loopback and the load generator cost alone, the part of an operation's price that no
//! change to the engine can remove. `--storage-floor` runs no engine at all: it measures what
//! the disk and the database allow for the narrowest purchase a ledger could write
//! (`fidelis_store_sqlite::floor`, or `crate::floor_pg` with a PostgreSQL URL), the part no
//! change above the storage can remove.
//! Measures; asserts nothing.

use crate::db;
use anyhow::{Context, bail};
use chrono::Utc;
use fidelis_app::{App, MemberInput, Principal, Scope, SystemClock};
use fidelis_core::ProgramSettings;
use fidelis_core::event::{Channel, LineInput, MemberRef, PurchaseInput};
use fidelis_core::program::ExpiryPolicy;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub database_url: Option<String>,
    pub members: usize,
    pub connections: usize,
    pub duration_secs: u64,
    /// Share of operations that are balance reads.
    pub read_share: f64,
    /// Share of operations that are redemptions of the bench's reward (the rest, after reads
    /// and redemptions, are purchases).
    pub redeem_share: f64,
    /// Points the bench's reward costs.
    pub reward_points: i64,
    /// Share of purchases that resend the connection's previous order with another total, as
    /// a till resending a changed basket: each is answered 409 (and counted as a `resend`).
    pub resend_share: f64,
    /// Share of purchases that are instead the return of one item of the connection's
    /// previous order (a refund by line), counted as `refund`.
    pub refund_share: f64,
    /// Every purchase and redemption sends an `Idempotency-Key`, as careful integrations do.
    pub idempotency_keys: bool,
    /// An active rule gives every purchase 5 bonus points, capped per member and day (a
    /// retailer's capped campaign): capped awards are settled under their counters' locks.
    pub capped_rule: bool,
    /// The programme has a tier ladder on spend over 12 rolling months: every purchase
    /// measures the member's spend in the window and may move the member up.
    pub tiers: bool,
    /// Purchases carry the fixed two-line baskets of the figures before 2026-11-25 instead of
    /// the simulator's (see [`Baskets`]).
    pub simple_baskets: bool,
    /// Past purchases per member, dated over the last 24 months, posted before the run.
    pub history: usize,
    /// Points expire this many months after they were earned (0: they never expire), so a
    /// balance read lists the dates the member's points expire on, and a redemption takes the
    /// soonest-expiring points first.
    pub expiry_months: u32,
    /// Total operations per second to aim for (0: as fast as possible).
    pub rate: u64,
    pub inprocess: bool,
    /// Purchases per request to the batch endpoint (0: one request each).
    pub batch_size: usize,
    pub json_out: Option<String>,
    /// Every operation a `GET /healthz` (HTTP only): the ceiling of HTTP on loopback and of
    /// the load generator on this machine, with no engine behind it.
    pub ceiling: bool,
}

/// Latencies of one operation kind, in microseconds.
#[derive(Default)]
struct Samples {
    ok: Vec<u32>,
    failed: u64,
    /// Events recorded (more than requests when purchases go in batches).
    events: u64,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[idx.min(sorted.len() - 1)]) / 1000.0
}

fn tenant_settings(expiry_months: u32) -> ProgramSettings {
    // Points available at once (the benchmark measures the write path, not jobs), expiring
    // only with `--expiry-months`.
    ProgramSettings {
        pending_days: 0,
        expiry: match expiry_months {
            0 => ExpiryPolicy::None,
            months => ExpiryPolicy::AfterEarning { months },
        },
        ..ProgramSettings::default()
    }
}

const TENANT: &str = "bench";

/// Points the bench's reward costs by default. The smallest simple basket earns more (7.50 at
/// one point per unit); of the simulator's baskets, only those that earned this much lead to a
/// redemption (see `remember`), so a member redeemed for after a purchase never runs short. A
/// dearer reward (`--reward-points`) measures refused redemptions (they count as failed).
pub const REWARD_COST: i64 = 5;

/// What `load` made: member ids, the API key, the reward to redeem, members loaded per second.
struct Loaded {
    members: Vec<String>,
    key: String,
    reward: String,
    rate: f64,
}

/// Creates the tenant, a key, the reward and `n` members through the use cases.
async fn load(url: &str, o: &BenchOptions, baskets: &Baskets) -> anyhow::Result<Loaded> {
    let (n, reward_points, expiry_months) = (o.members, o.reward_points, o.expiry_months);
    let (capped_rule, tiers, history) = (o.capped_rule, o.tiers, o.history);
    let store = db::open(url, Utc::now().timestamp_micros())?;
    let app = App::new(store.clone(), Arc::new(SystemClock));
    store
        .ensure_tenant(
            TENANT,
            TENANT,
            &tenant_settings(expiry_months),
            Utc::now().timestamp_micros(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (_, key) = app
        .bootstrap_key(TENANT, Scope::Admin, Some("bench"))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let who = Principal {
        tenant: TENANT.into(),
        key_id: "bench".into(),
        scope: Scope::Admin,
    };
    let reward: fidelis_core::rewards::RewardInput = serde_json::from_value(json!({
        "kind": "fixed_discount",
        "title": "1.00 off",
        "points_cost": reward_points,
        "value": "1.00",
    }))?;
    let (reward, _) = app
        .create_reward(&who, reward, None)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if capped_rule {
        // A cap no member reaches in a run: what is measured is the settling, not refusals.
        let rule = serde_json::from_value(json!({
            "name": "Bonus, capped per day",
            "trigger": "purchase",
            "condition": "true",
            "effects": [{"type": "points", "points": 5}],
            "caps": {"per_member_day": 100_000},
        }))?;
        let (rule, _) = app
            .create_rule(&who, rule, None)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        app.set_rule_status(
            &who,
            &rule.id,
            fidelis_core::rules::define::Status::Active,
            None,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    if tiers {
        // Thresholds a member crosses after several purchases (orders are 7.50 to 228 EUR, 80 on
        // average), so some move during a run, most do not.
        let ladder = serde_json::from_value(json!({
            "metric": "spend",
            "window": { "kind": "rolling", "months": 12 },
            "review": { "kind": "anniversary", "months": 12 },
            "tiers": [
                { "name": "Silver", "threshold": "0" },
                { "name": "Gold", "threshold": "500.00", "earn_multiplier": "1.5" },
                { "name": "Platinum", "threshold": "2000.00", "earn_multiplier": "2" }
            ]
        }))?;
        app.put_tiers(&who, Some(ladder), None)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let started = Instant::now();
    let mut ids = Vec::with_capacity(n);
    let mut set = JoinSet::new();
    for i in 0..n {
        while set.len() >= 512 {
            if let Some(r) = set.join_next().await {
                ids.push(r??);
            }
        }
        let (app, who) = (app.clone(), who.clone());
        set.spawn(async move {
            let input = MemberInput {
                external_id: Some(format!("cust-{i:08}")),
                email: Some(format!("shopper{i}@example.com")),
                ..Default::default()
            };
            app.create_member(&who, input, None)
                .await
                .map(|(m, _)| m.id)
                .map_err(|e| anyhow::anyhow!("{e}"))
        });
    }
    while let Some(r) = set.join_next().await {
        ids.push(r??);
    }
    let rate = n as f64 / started.elapsed().as_secs_f64().max(1e-9);
    if history > 0 {
        post_history(&app, &who, &ids, history, baskets).await?;
    }
    Ok(Loaded {
        members: ids,
        key,
        reward: reward.id,
        rate,
    })
}

/// With `--tiers`: members per tier at the end, and the moves recorded during the run.
struct TierSummary {
    members: Vec<(String, Value)>,
    moves: i64,
}

async fn tier_summary(store: &fidelis_store::Store, since: i64) -> anyhow::Result<TierSummary> {
    store
        .read(move |c| {
            let members = c
                .query(
                    "SELECT COALESCE(tier, 'none'), COUNT(*) FROM members WHERE tenant_id = $1 GROUP BY 1 ORDER BY 1",
                    &[TENANT.into()],
                )?
                .iter()
                .map(|r| (r.text(0), Value::from(r.int(1))))
                .collect();
            let moves = c
                .query_one(
                    "SELECT COUNT(*) FROM tier_history WHERE tenant_id = $1 AND recorded_at >= $2",
                    &[TENANT.into(), since.into()],
                )?
                .map_or(0, |r| r.int(0));
            Ok(TierSummary { members, moves })
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// `per_member` past purchases for each member, dated evenly over the last 24 months (oldest
/// first, each member's offset a little), posted through the use case as a till would have.
async fn post_history(
    app: &App,
    who: &Principal,
    members: &[String],
    per_member: usize,
    baskets: &Baskets,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let now = Utc::now();
    let span = chrono::Duration::days(730);
    let mut set = JoinSet::new();
    let mut seq = 0u64;
    for k in 0..per_member {
        for (i, m) in members.iter().enumerate() {
            while set.len() >= 1024 {
                if let Some(r) = set.join_next().await {
                    r??;
                }
            }
            seq += 1;
            let back = span * (per_member - k) as i32 / per_member as i32
                - chrono::Duration::minutes((i % 1000) as i64);
            let mut input = baskets.purchase(m, &format!("past-{k}-{i}"), seq);
            input.occurred_at = Some((now - back).to_rfc3339());
            let (app, who) = (app.clone(), who.clone());
            set.spawn(async move {
                app.purchase(&who, input, None)
                    .await
                    .map(|_| ())
                    .map_err(|e| anyhow::anyhow!("{e}"))
            });
        }
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let n = members.len() * per_member;
    eprintln!(
        "posted {n} past purchases ({per_member} per member) at {:.0}/s",
        n as f64 / started.elapsed().as_secs_f64().max(1e-9)
    );
    Ok(())
}

/// The baskets the bench's purchases carry. By default the simulator's: the purchases of a
/// simulated retailer's 13 months (2,000 shoppers, about 28,000 orders, `fidelis_sim`), so
/// their lines, quantities, prices, totals, channels and stores are distributed as the
/// simulator's shoppers buy; the n-th purchase of a run takes the n-th basket, round the
/// pool. `Simple` is the fixed two-line basket (an item of 5 to 75 EUR, one to three of it,
/// and a 2.50 bag) that every figure before 2026-11-25 was measured with.
enum Baskets {
    Simple,
    Simulated(Vec<Basket>),
}

/// A purchase of the simulation, without its member, order id and date.
struct Basket {
    channel: Channel,
    store_id: Option<String>,
    currency: String,
    total: String,
    lines: Vec<LineInput>,
}

/// Shoppers of the simulation the baskets come from.
const BASKET_SHOPPERS: usize = 2_000;

impl Baskets {
    fn new(simple: bool) -> anyhow::Result<Baskets> {
        if simple {
            return Ok(Baskets::Simple);
        }
        let cfg = fidelis_sim::SimConfig {
            members: BASKET_SHOPPERS,
            ..fidelis_sim::SimConfig::demo(Utc::now())
        };
        let sim = fidelis_sim::simulate(&cfg).map_err(anyhow::Error::msg)?;
        let pool: Vec<Basket> = sim
            .events
            .into_iter()
            .filter_map(|e| match e {
                fidelis_sim::SimEvent::Purchase { input, .. } if !input.lines.is_empty() => {
                    Some(Basket {
                        channel: input.channel,
                        store_id: input.store_id,
                        currency: input.currency,
                        total: input.total,
                        lines: input.lines,
                    })
                }
                _ => None,
            })
            .collect();
        if pool.is_empty() {
            bail!("the simulation made no purchases to take baskets from");
        }
        Ok(Baskets::Simulated(pool))
    }

    /// The `seq`-th purchase of a run, for `member`, under `order`.
    fn purchase(&self, member: &str, order: &str, seq: u64) -> PurchaseInput {
        let member = MemberRef {
            id: Some(member.to_string()),
            external_id: None,
        };
        let pool = match self {
            Baskets::Simple => return simple_purchase(member, order, seq),
            Baskets::Simulated(pool) => pool,
        };
        let b = &pool[(seq % pool.len() as u64) as usize];
        PurchaseInput {
            member,
            order_id: order.to_string(),
            occurred_at: None,
            channel: b.channel,
            store_id: b.store_id.clone(),
            currency: b.currency.clone(),
            total: b.total.clone(),
            lines: b.lines.clone(),
        }
    }

    /// The `seq`-th purchase resent with one more of its last line (and the total to match),
    /// as a till resending a changed basket under the same order id.
    fn resend(&self, member: &str, order: &str, seq: u64) -> PurchaseInput {
        let mut input = self.purchase(member, order, seq);
        let exponent = exponent_of(&input);
        if let Some(last) = input.lines.last_mut() {
            last.quantity += 1;
            let total = fidelis_core::money::parse_minor(&input.total, exponent).unwrap_or(0);
            let unit = fidelis_core::money::parse_minor(&last.unit_price, exponent).unwrap_or(0);
            input.total = fidelis_core::money::format_minor(total + unit, exponent);
        }
        input
    }

    /// The first line's SKU of the `seq`-th purchase (what a return of one item names).
    fn first_sku(&self, seq: u64) -> String {
        match self {
            Baskets::Simulated(pool) => pool[(seq % pool.len() as u64) as usize].lines[0]
                .sku
                .clone(),
            Baskets::Simple => self.purchase("", "", seq).lines[0].sku.clone(),
        }
    }
}

/// The decimals of a purchase's currency (2 when it is not one Fidelis knows).
fn exponent_of(input: &PurchaseInput) -> u8 {
    fidelis_core::money::Currency::parse(&input.currency).map_or(2, |c| c.exponent())
}

/// The fixed basket of [`Baskets::Simple`].
fn simple_purchase(member: MemberRef, order: &str, seq: u64) -> PurchaseInput {
    let price = 500 + (seq % 97) * 73;
    let qty = 1 + (seq % 3) as i64;
    let lines = vec![
        LineInput {
            sku: format!("sku-{}", seq % 120),
            category: Some(["shoes", "beauty", "home", "grocery"][(seq % 4) as usize].into()),
            quantity: qty,
            unit_price: fidelis_core::money::format_minor(price as i64, 2),
        },
        LineInput {
            sku: "bag-1".into(),
            category: Some("accessories".into()),
            quantity: 1,
            unit_price: "2.50".into(),
        },
    ];
    let total = price as i64 * qty + 250;
    PurchaseInput {
        member,
        order_id: order.to_string(),
        occurred_at: None,
        channel: if seq.is_multiple_of(4) {
            Channel::Web
        } else {
            Channel::Pos
        },
        store_id: Some(format!("store-{:02}", seq % 8)),
        currency: "EUR".into(),
        total: fidelis_core::money::format_minor(total, 2),
        lines,
    }
}

/// A minimal HTTP/1.1 keep-alive client: enough for Fidelis's own JSON answers, which always
/// carry a Content-Length, with no allocation beyond the buffers. A request goes out in one
/// write, head and body together, as HTTP clients send small requests: two writes on a
/// no-delay socket are two segments, and the server then reads the head and waits again for
/// the body.
struct Http {
    stream: BufReader<TcpStream>,
    request: Vec<u8>,
    head: String,
    body: Vec<u8>,
}

impl Http {
    /// POSTs `body` as JSON: true when the answer is 201 Created.
    async fn post_created(
        &mut self,
        path: &str,
        api_key: &str,
        idem: Option<&str>,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<bool> {
        let body = serde_json::to_vec(body)?;
        Ok(self.call("POST", path, api_key, idem, Some(&body)).await? == 201)
    }

    async fn connect(addr: &str) -> anyhow::Result<Http> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Http {
            stream: BufReader::new(s),
            request: Vec::with_capacity(4096),
            head: String::with_capacity(512),
            body: Vec::with_capacity(4096),
        })
    }

    async fn call(
        &mut self,
        method: &str,
        path: &str,
        key: &str,
        idem: Option<&str>,
        body: Option<&[u8]>,
    ) -> anyhow::Result<u16> {
        use std::io::Write as _;
        self.request.clear();
        let len = body.map_or(0, <[u8]>::len);
        let _ = write!(
            self.request,
            "{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n"
        );
        if let Some(k) = idem {
            let _ = write!(self.request, "Idempotency-Key: {k}\r\n");
        }
        self.request.extend_from_slice(b"\r\n");
        if let Some(b) = body {
            self.request.extend_from_slice(b);
        }
        self.stream.get_mut().write_all(&self.request).await?;
        self.head.clear();
        self.stream.read_line(&mut self.head).await?;
        let status: u16 = self
            .head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("bad status line")?;
        let mut content_length = 0usize;
        loop {
            self.head.clear();
            if self.stream.read_line(&mut self.head).await? == 0 {
                bail!("connection closed");
            }
            let line = self.head.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                content_length = v.trim().parse().unwrap_or(0);
            }
        }
        self.body.resize(content_length, 0);
        self.stream.read_exact(&mut self.body).await?;
        Ok(status)
    }
}

/// One connection's samples, or all of them: purchases, balance reads, redemptions, resends
/// and refunds, in that order.
type Tally = [Samples; 5];

struct Shared {
    members: Vec<String>,
    key: String,
    deadline: Instant,
    read_share: f64,
    redeem_share: f64,
    reward: String,
    resend_share: f64,
    refund_share: f64,
    idempotency_keys: bool,
    /// Microseconds between two operations of one connection when paced.
    pace_us: u64,
    connections: usize,
    seq: AtomicU64,
    batch_size: usize,
    ceiling: bool,
    baskets: Baskets,
}

enum Driver {
    Http(String),
    InProcess(App),
}

async fn connection(
    driver: Arc<Driver>,
    shared: Arc<Shared>,
    conn_no: usize,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    let [purchases, reads, redemptions, resends, refunds] = &mut tally;
    // The order this connection sent last (member, order id, sequence), for resends.
    let mut last_order: Option<(String, String, u64)> = None;
    // Members this connection bought for and has not redeemed for since, oldest first: one
    // redemption per purchase at most, each costing less than any purchase earns.
    let mut buyers: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut http = match &*driver {
        Driver::Http(addr) => Some(Http::connect(addr).await?),
        Driver::InProcess(_) => None,
    };
    let who = Principal {
        tenant: TENANT.into(),
        key_id: "bench".into(),
        scope: Scope::Admin,
    };
    // Paced connections start spread over one period, so their requests arrive evenly rather
    // than all at once every period.
    let mut next = Instant::now()
        + Duration::from_micros(shared.pace_us * conn_no as u64 / shared.connections as u64);
    let mut rng_state = (conn_no as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut rand = move || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    while Instant::now() < shared.deadline {
        // Paced, a connection late because its previous answer was slow counts its request
        // from when it was due, so that wait is in the latency too (no coordinated omission).
        let mut due = None;
        if shared.pace_us > 0 {
            next += Duration::from_micros(shared.pace_us);
            match next.checked_duration_since(Instant::now()) {
                Some(wait) => tokio::time::sleep(wait).await,
                None => due = Some(next),
            }
        }
        let member = &shared.members[(rand() % shared.members.len() as u64) as usize];
        let draw = (rand() % 10_000) as f64 / 10_000.0;
        let is_read = shared.ceiling || draw < shared.read_share;
        // A redemption is due but nobody has bought yet on this connection: a purchase.
        let redeem_for = (!is_read && draw < shared.read_share + shared.redeem_share)
            .then(|| buyers.pop_front())
            .flatten();
        // A purchase may instead resend the previous order with another total (single
        // purchases only; the batch endpoint's events are counted as recorded or not).
        let resend_draw = (rand() % 10_000) as f64 / 10_000.0;
        let resend = (!is_read
            && redeem_for.is_none()
            && shared.batch_size == 0
            && resend_draw < shared.resend_share)
            .then(|| last_order.clone())
            .flatten();
        // Or return one item of it (once: the order is then forgotten).
        let refund_of = (!is_read
            && redeem_for.is_none()
            && resend.is_none()
            && shared.batch_size == 0
            && (1.0 - resend_draw) < shared.refund_share)
            .then(|| last_order.take())
            .flatten();
        if let Some((m, _, _)) = &refund_of {
            // Its points are partly taken back: no redemption counts on them.
            if buyers.back() == Some(m) {
                buyers.pop_back();
            }
        }
        let started = due.unwrap_or_else(Instant::now);
        let ok = if is_read {
            match (&mut http, &*driver) {
                (Some(h), _) => {
                    let path = if shared.ceiling {
                        "/healthz".to_string()
                    } else {
                        format!("/api/v1/members/{member}/balance")
                    };
                    h.call("GET", &path, &shared.key, None, None).await? == 200
                }
                (None, Driver::InProcess(app)) => app.balance(&who, member).await.is_ok(),
                _ => false,
            }
        } else if let Some(m) = &redeem_for {
            let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
            let idem = shared.idem_key(format!("r{conn_no}-{seq}"));
            match (&mut http, &*driver) {
                (Some(h), _) => {
                    let path = format!("/api/v1/members/{m}/redemptions");
                    let body = json!({ "reward_id": shared.reward });
                    h.post_created(&path, &shared.key, idem.as_deref(), &body)
                        .await?
                }
                (None, Driver::InProcess(app)) => {
                    let input = fidelis_app::rewards::RedemptionInput {
                        reward_id: shared.reward.clone(),
                    };
                    app.redeem_reward(&who, m, input, in_process_key(idem))
                        .await
                        .is_ok()
                }
                _ => false,
            }
        } else if let Some((_, order, seq)) = &refund_of {
            let input = fidelis_core::event::RefundInput {
                order_id: order.clone(),
                refund_id: None,
                amount: None,
                lines: Some(vec![fidelis_core::event::RefundLineInput {
                    sku: shared.baskets.first_sku(*seq),
                    quantity: 1,
                }]),
                occurred_at: None,
            };
            let idem = shared.idem_key(format!("{order}-refund"));
            match (&mut http, &*driver) {
                (Some(h), _) => {
                    h.post_created(
                        "/api/v1/events/refund",
                        &shared.key,
                        idem.as_deref(),
                        &input,
                    )
                    .await?
                }
                (None, Driver::InProcess(app)) => {
                    app.refund(&who, input, in_process_key(idem)).await.is_ok()
                }
                _ => false,
            }
        } else if let Some((m, order, seq)) = &resend {
            let input = shared.baskets.resend(m, order, *seq);
            // Another request, so another key (when keys are sent).
            let idem = shared.idem_key(format!("{order}-again"));
            purchase(&mut http, &driver, &who, &shared.key, input, idem).await? == 409
        } else if shared.batch_size > 0 {
            let n = shared.batch_size;
            let events: Vec<serde_json::Value> = (0..n)
                .map(|_| {
                    let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
                    let m = &shared.members[(rand() % shared.members.len() as u64) as usize];
                    let input = shared
                        .baskets
                        .purchase(m, &format!("b{conn_no}-{seq}"), seq);
                    remember(&mut buyers, m, &input);
                    let mut e = serde_json::to_value(input).unwrap_or_default();
                    if let Some(o) = e.as_object_mut() {
                        o.insert("type".into(), "purchase".into());
                    }
                    e
                })
                .collect();
            let body = serde_json::to_vec(&json!({ "events": events }))?;
            match &mut http {
                Some(h) => {
                    let status = h
                        .call(
                            "POST",
                            "/api/v1/events/batch",
                            &shared.key,
                            None,
                            Some(&body),
                        )
                        .await?;
                    let failed = serde_json::from_slice::<serde_json::Value>(&h.body)
                        .ok()
                        .and_then(|v| v["failed"].as_u64())
                        .unwrap_or(n as u64);
                    purchases.events += (n as u64).saturating_sub(failed);
                    status == 200 && failed == 0
                }
                None => false,
            }
        } else {
            let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
            let order = format!("b{conn_no}-{seq}");
            let input = shared.baskets.purchase(member, &order, seq);
            remember(&mut buyers, member, &input);
            let idem = shared.idem_key(order.clone());
            last_order = Some((member.clone(), order, seq));
            purchase(&mut http, &driver, &who, &shared.key, input, idem).await? == 201
        };
        let us = started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
        let s = if is_read {
            &mut *reads
        } else if resend.is_some() {
            &mut *resends
        } else if refund_of.is_some() {
            &mut *refunds
        } else if redeem_for.is_some() {
            &mut *redemptions
        } else {
            &mut *purchases
        };
        if ok {
            s.ok.push(us);
        } else {
            s.failed += 1;
        }
    }
    Ok(tally)
}

/// Posts one purchase over HTTP or in-process; answers the HTTP status (in-process: 201
/// recorded, 409 refused as a conflict, 0 anything else).
async fn purchase(
    http: &mut Option<Http>,
    driver: &Driver,
    who: &Principal,
    api_key: &str,
    input: PurchaseInput,
    idem: Option<String>,
) -> anyhow::Result<u16> {
    Ok(match (http, driver) {
        (Some(h), _) => {
            let body = serde_json::to_vec(&input)?;
            let path = "/api/v1/events/purchase";
            h.call("POST", path, api_key, idem.as_deref(), Some(&body))
                .await?
        }
        (None, Driver::InProcess(app)) => {
            match app.purchase(who, input, in_process_key(idem)).await {
                Ok(_) => 201,
                Err(fidelis_app::AppError::Conflict(_)) => 409,
                Err(_) => 0,
            }
        }
        _ => 0,
    })
}

impl Shared {
    /// The `Idempotency-Key` a request sends, if keys are sent.
    fn idem_key(&self, key: String) -> Option<String> {
        self.idempotency_keys.then_some(key)
    }
}

/// A key as the HTTP layer would pass it to the use cases (each bench request has a key of
/// its own, so the key stands for the request's hash too).
fn in_process_key(key: Option<String>) -> Option<fidelis_store::IdemKey> {
    key.map(|k| fidelis_store::IdemKey {
        request_hash: k.clone(),
        key: k,
    })
}

/// Notes a member a connection bought `input` for, to redeem for later, if that purchase
/// earned at least [`REWARD_COST`] points (one a currency unit: a shopper whose basket earned
/// less does not try the reward). A purchase that failed leaves a redemption that fails,
/// counted as such. The queue is bounded; the oldest are forgotten.
fn remember(buyers: &mut std::collections::VecDeque<String>, member: &str, input: &PurchaseInput) {
    let exponent = exponent_of(input);
    let minor = fidelis_core::money::parse_minor(&input.total, exponent).unwrap_or(0);
    if minor / 10_i64.pow(u32::from(exponent)) < REWARD_COST {
        return;
    }
    if buyers.len() >= 64 {
        buyers.pop_front();
    }
    buyers.push_back(member.to_string());
}

/// The store's group-commit counters at the end of a run.
struct WritePath {
    batches: f64,
    jobs: f64,
    together: f64,
    replays: f64,
    commit_micros: f64,
    run_micros: f64,
    max_batch: f64,
    syncs: f64,
    sync_micros: f64,
    /// Reads held until what they saw was durable (SQLite), and how long in all.
    reads_held: f64,
    hold_micros: f64,
    /// Times the writer stopped to start the SQLite WAL over, and how long in all and at most.
    wal_restarts: f64,
    restart_micros: f64,
    restart_micros_max: f64,
}

/// Reads the write path's counters: from the store in-process, else from the server's
/// `/metrics` (the server was started for this run, so its counters are the run's).
async fn write_path(driver: &Driver, key: &str) -> Option<WritePath> {
    let value = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let text = match driver {
        Driver::InProcess(app) => {
            let m = app.store.metrics();
            let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
            return Some(WritePath {
                batches: get(&m.batches),
                jobs: get(&m.jobs),
                together: get(&m.posted_together),
                replays: get(&m.replays),
                commit_micros: get(&m.commit_micros_total),
                run_micros: get(&m.run_micros_total),
                max_batch: get(&m.max_batch_seen),
                syncs: get(&m.syncs),
                sync_micros: get(&m.sync_micros_total),
                reads_held: get(&m.reads_held),
                hold_micros: get(&m.read_hold_micros_total),
                wal_restarts: get(&m.wal_restarts),
                restart_micros: get(&m.wal_restart_micros_total),
                restart_micros_max: get(&m.wal_restart_micros_max),
            });
        }
        Driver::Http(addr) => {
            let mut h = Http::connect(addr).await.ok()?;
            (h.call("GET", "/metrics", key, None, None).await.ok()? == 200)
                .then(|| String::from_utf8_lossy(&h.body).into_owned())?
        }
    };
    Some(WritePath {
        batches: value(&text, "fidelis_store_batches_total"),
        jobs: value(&text, "fidelis_store_jobs_total"),
        together: value(&text, "fidelis_store_posted_together_total"),
        replays: value(&text, "fidelis_store_batch_replays_total"),
        commit_micros: value(&text, "fidelis_store_commit_micros_total"),
        run_micros: value(&text, "fidelis_store_run_micros_total"),
        max_batch: value(&text, "fidelis_store_max_batch"),
        syncs: value(&text, "fidelis_store_syncs_total"),
        sync_micros: value(&text, "fidelis_store_sync_micros_total"),
        reads_held: value(&text, "fidelis_store_reads_held_total"),
        hold_micros: value(&text, "fidelis_store_read_hold_micros_total"),
        wal_restarts: value(&text, "fidelis_store_wal_restarts_total"),
        restart_micros: value(&text, "fidelis_store_wal_restart_micros_total"),
        restart_micros_max: value(&text, "fidelis_store_wal_restart_micros_max"),
    })
}

/// CPU time a process has used, in clock ticks (user + system; Linux's `/proc`).
pub(crate) fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are the state, then 10 more
    // before utime and stime.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    Some(f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?)
}

/// The engine's threads by the part of it they run, from their names (`/proc` keeps the first
/// 15 bytes: `fidelis-writer-0` is `fidelis-writer-`).
fn thread_part(comm: &str) -> &'static str {
    const PARTS: [(&str, &str); 8] = [
        ("fidelis-writer", "writer"),
        ("fidelis-reader", "readers"),
        ("fidelis-checkpo", "checkpointer"),
        ("fidelis-sync", "syncer"),
        ("fidelis-grouped", "grouped reads"),
        ("fidelis-analyze", "statistics"),
        ("tokio-rt-worker", "tokio workers"),
        ("tokio-runtime-w", "tokio workers"),
    ];
    PARTS
        .iter()
        .find(|(prefix, _)| comm.starts_with(prefix))
        .map_or("other", |(_, part)| part)
}

/// A process's threads so far, summed by [`thread_part`]: CPU time in clock ticks, and bytes
/// written towards the disk (`write_bytes`: files' pages the thread dirtied, not sockets)
/// (Linux's `/proc`; empty elsewhere). A thread that ended before the reading is not in it.
fn thread_ticks(pid: &str) -> BTreeMap<&'static str, [u64; 2]> {
    let mut parts = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return parts;
    };
    for task in dir.flatten() {
        let path = task.path();
        let (Ok(comm), Some(ticks)) = (
            std::fs::read_to_string(path.join("comm")),
            cpu_ticks(&format!(
                "{pid}/task/{}",
                task.file_name().to_string_lossy()
            )),
        ) else {
            continue;
        };
        let written = std::fs::read_to_string(path.join("io"))
            .ok()
            .and_then(|io| {
                io.lines()
                    .find_map(|l| l.strip_prefix("write_bytes:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
            .unwrap_or(0);
        let part = parts.entry(thread_part(comm.trim())).or_insert([0, 0]);
        part[0] += ticks;
        part[1] += written;
    }
    parts
}

/// CPU time of every PostgreSQL process this user can see (zero when it runs elsewhere).
fn postgres_ticks() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .filter_map(|pid| cpu_ticks(&pid))
        .sum()
}

/// The machine's CPU time so far, in ticks: (all, busy, stolen by the hypervisor).
fn machine_ticks() -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let all: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    let steal = *v.get(7)?;
    Some((all, all - idle - steal, steal))
}

/// The time some task of the machine has waited on storage so far, in microseconds (the
/// `some` line's `total` in `/proc/pressure/io`; Linux 4.20 and later).
fn io_stalled_micros() -> Option<u64> {
    parse_io_stalled(&std::fs::read_to_string("/proc/pressure/io").ok()?)
}

/// [`io_stalled_micros`] from the file's text.
fn parse_io_stalled(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("some "))?
        .split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?
        .parse()
        .ok()
}

/// Where the CPU went during a run: a figure that a busy or shared machine disturbs less than
/// throughput, for comparing two builds.
#[derive(Clone, Default)]
struct CpuUse {
    server: u64,
    database: u64,
    driver: u64,
    machine: (u64, u64, u64),
    /// Microseconds some task waited on storage ([`io_stalled_micros`]), and of the clock: over
    /// a run, the share of its time the disk held someone up. A slow or shared disk moves
    /// every durable figure; this says when it did.
    io: Option<(u64, u64)>,
    /// The engine's process (the server, or this one in-process) by thread, see [`thread_part`].
    engine_threads: BTreeMap<&'static str, [u64; 2]>,
}

impl CpuUse {
    fn now(server_pid: Option<u32>, on_postgres: bool) -> CpuUse {
        CpuUse {
            server: server_pid
                .and_then(|p| cpu_ticks(&p.to_string()))
                .unwrap_or(0),
            database: if on_postgres { postgres_ticks() } else { 0 },
            driver: cpu_ticks("self").unwrap_or(0),
            machine: machine_ticks().unwrap_or_default(),
            io: io_stalled_micros().map(|stalled| (stalled, clock_micros())),
            engine_threads: thread_ticks(
                &server_pid.map_or_else(|| "self".to_string(), |p| p.to_string()),
            ),
        }
    }

    fn since(self, start: &CpuUse) -> CpuUse {
        CpuUse {
            engine_threads: self
                .engine_threads
                .iter()
                .map(|(part, [t, w])| {
                    let [t0, w0] = start.engine_threads.get(part).copied().unwrap_or([0, 0]);
                    (*part, [t.saturating_sub(t0), w.saturating_sub(w0)])
                })
                .collect(),
            server: self.server.saturating_sub(start.server),
            database: self.database.saturating_sub(start.database),
            driver: self.driver.saturating_sub(start.driver),
            machine: (
                self.machine.0.saturating_sub(start.machine.0),
                self.machine.1.saturating_sub(start.machine.1),
                self.machine.2.saturating_sub(start.machine.2),
            ),
            io: self
                .io
                .zip(start.io)
                .map(|((s, c), (s0, c0))| (s.saturating_sub(s0), c.saturating_sub(c0))),
        }
    }

    /// The share of the run's time some task waited on storage, in percent (Linux only).
    fn io_pressure_percent(&self) -> Option<f64> {
        self.io
            .filter(|(_, clock)| *clock > 0)
            .map(|(stalled, clock)| 100.0 * stalled as f64 / clock as f64)
    }
}

/// A monotonic clock in microseconds, for [`CpuUse::io`].
fn clock_micros() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_micros() as u64
}

/// Clock ticks per second in `/proc` (USER_HZ, 100 on Linux whatever the kernel's HZ).
pub(crate) const TICKS_PER_SECOND: f64 = 100.0;

fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

struct Child(tokio::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        // The server is ours; if it already exited there is nothing to kill.
        let _ = self.0.start_kill();
    }
}

/// Drops the bench's PostgreSQL schema when the run ends, however it ends (after the server,
/// declared later, is stopped): a run leaves nothing behind in the database.
struct DropSchema {
    base: String,
    schema: String,
}

impl Drop for DropSchema {
    fn drop(&mut self) {
        let (base, schema) = (self.base.clone(), self.schema.clone());
        // The PostgreSQL client must not run on the async runtime's threads.
        let dropped = std::thread::spawn(move || -> anyhow::Result<()> {
            let mut c = db::backend(&base)?.connect(false)?;
            c.batch(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))?;
            Ok(())
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the bench schema {}", self.schema);
        }
    }
}

pub async fn run(o: BenchOptions) -> anyhow::Result<()> {
    let mut _schema = None;
    let (url, kind) = match &o.database_url {
        Some(u) if u.starts_with("postgres") => {
            let sep = if u.contains('?') { '&' } else { '?' };
            let schema = fidelis_store::random_id("bench_", 10);
            let url = format!("{u}{sep}schema={schema}");
            _schema = Some(DropSchema {
                base: u.clone(),
                schema,
            });
            (url, "postgres")
        }
        Some(u) => (u.clone(), "sqlite"),
        None => {
            let path = std::env::temp_dir().join("fidelis-bench.db");
            for suffix in ["", "-wal", "-shm"] {
                // A fresh file each run; absent files are fine.
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            (format!("sqlite://{}", path.display()), "sqlite")
        }
    };
    let baskets = Baskets::new(o.simple_baskets)?;
    eprintln!("loading {} members into {kind}...", o.members);
    let Loaded {
        members,
        key,
        reward,
        rate: load_rate,
    } = load(&url, &o, &baskets).await?;
    eprintln!("loaded {} members at {load_rate:.0}/s", members.len());

    let mut child = None;
    let mut startup_ms = 0.0;
    let driver = if o.inprocess {
        let store = db::open(&url, Utc::now().timestamp_micros())?;
        Arc::new(Driver::InProcess(App::new(store, Arc::new(SystemClock))))
    } else {
        let exe = std::env::current_exe()?;
        let started = Instant::now();
        let mut c = tokio::process::Command::new(exe)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                &url,
                "--jobs-interval-secs",
                "0",
            ])
            .env("FIDELIS_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = c.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next_line()
                .await?
                .context("server exited before listening")?;
            if let Some(a) = line.strip_prefix("listening on http://") {
                break a.to_string();
            }
        };
        startup_ms = started.elapsed().as_secs_f64() * 1000.0;
        child = Some(Child(c));
        Arc::new(Driver::Http(addr))
    };

    let run_started_us = Utc::now().timestamp_micros();
    // 0: as fast as possible.
    let per_conn_pace = (1_000_000 * o.connections as u64)
        .checked_div(o.rate)
        .unwrap_or(0);
    let shared = Arc::new(Shared {
        members,
        key,
        deadline: Instant::now() + Duration::from_secs(o.duration_secs),
        read_share: o.read_share,
        redeem_share: o.redeem_share,
        reward,
        resend_share: o.resend_share,
        refund_share: o.refund_share,
        idempotency_keys: o.idempotency_keys,
        pace_us: per_conn_pace,
        connections: o.connections.max(1),
        seq: AtomicU64::new(0),
        batch_size: o.batch_size,
        ceiling: o.ceiling,
        baskets,
    });
    let server_pid = child.as_ref().and_then(|c: &Child| c.0.id());
    let on_postgres = kind == "postgres";
    let cpu_start = CpuUse::now(server_pid, on_postgres);
    let started = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..o.connections {
        set.spawn(connection(driver.clone(), shared.clone(), i));
    }
    let mut tally = Tally::default();
    while let Some(r) = set.join_next().await {
        for (all, one) in tally.iter_mut().zip(r??) {
            all.ok.extend(one.ok);
            all.failed += one.failed;
            all.events += one.events;
        }
    }
    let [purchases, reads, redemptions, resends, refunds] = &mut tally;
    let secs = started.elapsed().as_secs_f64();
    let cpu = CpuUse::now(server_pid, on_postgres).since(&cpu_start);
    let server_rss = child.as_ref().and_then(|c| c.0.id()).and_then(rss_mb);
    let write_path = write_path(&driver, &shared.key).await;
    drop(child);

    let mut rows = Vec::new();
    println!(
        "\nfidelis bench — {kind}, {} mode, {} members, {} connections, {secs:.1} s{}",
        if o.inprocess { "in-process" } else { "HTTP" },
        shared.members.len(),
        o.connections,
        if o.rate > 0 {
            format!(", paced at {} ops/s", o.rate)
        } else {
            String::new()
        }
    );
    println!(
        "{:<10} {:>10} {:>12} {:>9} {:>9} {:>9} {:>9}",
        "operation", "ok", "per second", "p50 ms", "p99 ms", "p99.9 ms", "failed"
    );
    let purchase_name = if o.batch_size > 0 {
        "batch"
    } else {
        "purchase"
    };
    let ops = if o.ceiling {
        vec![("healthz", &mut *reads)]
    } else {
        let mut ops = vec![
            (purchase_name, &mut *purchases),
            ("balance", &mut *reads),
            ("redemption", &mut *redemptions),
        ];
        if o.resend_share > 0.0 {
            ops.push(("resend", &mut *resends));
        }
        if o.refund_share > 0.0 {
            ops.push(("refund", &mut *refunds));
        }
        ops
    };
    for (name, s) in ops {
        s.ok.sort_unstable();
        let row = json!({
            "operation": name,
            "ok": s.ok.len(),
            "failed": s.failed,
            "per_second": s.ok.len() as f64 / secs,
            "p50_ms": percentile(&s.ok, 0.50),
            "p99_ms": percentile(&s.ok, 0.99),
            "p999_ms": percentile(&s.ok, 0.999),
        });
        println!(
            "{:<10} {:>10} {:>12.0} {:>9.2} {:>9.2} {:>9.2} {:>9}",
            name,
            s.ok.len(),
            s.ok.len() as f64 / secs,
            percentile(&s.ok, 0.5),
            percentile(&s.ok, 0.99),
            percentile(&s.ok, 0.999),
            s.failed
        );
        rows.push(row);
    }
    let batched_events_per_second = (o.batch_size > 0).then(|| purchases.events as f64 / secs);
    if let Some(eps) = batched_events_per_second {
        println!(
            "purchases through the batch endpoint, {} per request: {} recorded, {eps:.0} per second",
            o.batch_size, purchases.events
        );
    }
    let store = db::open(&url, Utc::now().timestamp_micros())?;
    let ledger = store
        .verify_tenant(TENANT)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "ledger: {} entries, {} transactions, verified {}",
        ledger.entries,
        ledger.transactions,
        if ledger.ok() { "ok" } else { "BROKEN" }
    );
    let tiers = if o.tiers {
        let t = tier_summary(&store, run_started_us).await?;
        println!(
            "tiers at the end: {}; {} moves during the run",
            t.members
                .iter()
                .map(|(tier, n)| format!("{tier} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            t.moves
        );
        Some(t)
    } else {
        None
    };
    if let Some(w) = write_path.as_ref().filter(|_| !o.ceiling) {
        println!(
            "write path: {:.0} group commits, {:.1} writes per commit (largest {:.0}), {:.0} % of writes were purchases posted together, {:.0} batches replayed one by one, COMMIT {:.2} ms mean, writer busy {:.1} µs per write{}",
            w.batches,
            w.jobs / w.batches.max(1.0),
            w.max_batch,
            100.0 * w.together / w.jobs.max(1.0),
            w.replays,
            w.commit_micros / w.batches.max(1.0) / 1000.0,
            (w.run_micros + w.commit_micros) / w.jobs.max(1.0),
            if w.syncs > 0.0 {
                format!(
                    ", {:.0} WAL syncs of {:.2} ms mean",
                    w.syncs,
                    w.sync_micros / w.syncs / 1000.0
                )
            } else {
                String::new()
            }
        );
        if w.syncs > 0.0 {
            // Every read the server held counts, balance reads and the others (settings, keys).
            println!(
                "reads held until what they saw was durable: {:.0}{}, {:.2} ms mean",
                w.reads_held,
                if reads.ok.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({:.0} per 100 balance reads)",
                        100.0 * w.reads_held / reads.ok.len() as f64
                    )
                },
                w.hold_micros / w.reads_held.max(1.0) / 1000.0
            );
        }
        if w.wal_restarts > 0.0 {
            // The writer runs no batch while it starts the WAL over: what arrives meanwhile
            // waits, which is where a paced run's p99 comes from (docs/PERFORMANCE.md).
            println!(
                "writer held {:.0} times to start the WAL over, {:.1} ms mean, {:.1} ms at most",
                w.wal_restarts,
                w.restart_micros / w.wal_restarts / 1000.0,
                w.restart_micros_max / 1000.0
            );
        }
    }
    let operations = (purchases.ok.len()
        + reads.ok.len()
        + redemptions.ok.len()
        + resends.ok.len()
        + refunds.ok.len())
    .max(1) as f64;
    let micros_per_op = |ticks: u64| ticks as f64 / TICKS_PER_SECOND * 1e6 / operations;
    let (all, busy, steal) = cpu.machine;
    let share = |t: u64| 100.0 * t as f64 / all.max(1) as f64;
    let mut parts = vec![if o.inprocess {
        format!("engine and driver {:.0} µs", micros_per_op(cpu.driver))
    } else {
        format!(
            "server {:.0} µs, load generator {:.0} µs",
            micros_per_op(cpu.server),
            micros_per_op(cpu.driver)
        )
    }];
    if cpu.database > 0 {
        parts.push(format!("PostgreSQL {:.0} µs", micros_per_op(cpu.database)));
    }
    let io_pressure = cpu.io_pressure_percent();
    println!(
        "CPU per operation: {}; machine {:.0} % busy, {:.0} % stolen by the hypervisor{}",
        parts.join(", "),
        share(busy),
        share(steal),
        io_pressure.map_or(String::new(), |p| format!(
            ", some task waiting on storage {p:.0} % of the time"
        ))
    );
    // In-process, the tokio workers run both the use cases and the load generator.
    let mut by_thread: Vec<(&str, f64)> = cpu
        .engine_threads
        .iter()
        .filter(|(_, [t, _])| *t > 0)
        .map(|(part, [t, _])| (*part, micros_per_op(*t)))
        .collect();
    by_thread.sort_by(|a, b| b.1.total_cmp(&a.1));
    // Kilobytes each thread wrote towards the disk per operation: the writer's are its WAL
    // frames, the checkpointer's its copies into the database file.
    let mut written: Vec<(&str, f64)> = cpu
        .engine_threads
        .iter()
        .map(|(part, [_, w])| (*part, *w as f64 / 1024.0 / operations))
        .filter(|(_, kb)| *kb >= 0.05)
        .collect();
    written.sort_by(|a, b| b.1.total_cmp(&a.1));
    let listed = |parts: &[(&str, f64)], unit: &str| {
        parts
            .iter()
            .map(|(part, x)| format!("{part} {x:.1} {unit}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !by_thread.is_empty() {
        println!(
            "{} CPU per operation by thread: {}",
            if o.inprocess {
                "engine and driver"
            } else {
                "server"
            },
            listed(&by_thread, "µs")
        );
    }
    if !written.is_empty() {
        println!(
            "written towards the disk per operation by thread: {}",
            listed(&written, "KB")
        );
    }
    let as_json = |parts: &[(&str, f64)]| {
        parts
            .iter()
            .map(|(part, x)| (part.to_string(), json!(x)))
            .collect::<serde_json::Map<String, Value>>()
    };
    if let Some(mb) = server_rss {
        println!(
            "server memory (RSS) at the end: {mb:.0} MB; start-up to listening: {startup_ms:.0} ms"
        );
    }
    let report = json!({
        "database": kind,
        "mode": if o.inprocess { "inprocess" } else { "http" },
        "ceiling": o.ceiling,
        "idempotency_keys": o.idempotency_keys,
        "capped_rule": o.capped_rule,
        "tiers": o.tiers,
        "baskets": if o.simple_baskets { "simple" } else { "simulated" },
        "history": o.history,
        "expiry_months": o.expiry_months,
        "resend_share": o.resend_share,
        "refund_share": o.refund_share,
        "members": shared.members.len(),
        "connections": o.connections,
        "seconds": secs,
        "rate_target": o.rate,
        "member_load_per_second": load_rate,
        "operations": rows,
        "tier_members": tiers.as_ref().map(|t| t.members.iter().cloned().collect::<serde_json::Map<String, Value>>()),
        "tier_moves": tiers.as_ref().map(|t| t.moves),
        "ledger_entries": ledger.entries,
        "ledger_ok": ledger.ok(),
        "batch_size": o.batch_size,
        "batched_events_per_second": batched_events_per_second,
        "write_path": write_path.as_ref().map(|w| json!({
            "group_commits": w.batches,
            "writes": w.jobs,
            "largest_batch": w.max_batch,
            "posted_together": w.together,
            "batches_replayed": w.replays,
            "commit_ms_total": w.commit_micros / 1000.0,
            "run_ms_total": w.run_micros / 1000.0,
            "wal_syncs": w.syncs,
            "wal_sync_ms_total": w.sync_micros / 1000.0,
            "reads_held": w.reads_held,
            "read_hold_ms_total": w.hold_micros / 1000.0,
            "wal_restarts": w.wal_restarts,
            "wal_restart_ms_total": w.restart_micros / 1000.0,
            "wal_restart_ms_max": w.restart_micros_max / 1000.0,
        })),
        "cpu_us_per_operation": json!({
            "server": (!o.inprocess).then(|| micros_per_op(cpu.server)),
            "engine_and_driver": o.inprocess.then(|| micros_per_op(cpu.driver)),
            "load_generator": (!o.inprocess).then(|| micros_per_op(cpu.driver)),
            "postgresql": (cpu.database > 0).then(|| micros_per_op(cpu.database)),
            "by_thread": as_json(&by_thread),
        }),
        "kb_written_per_operation_by_thread": as_json(&written),
        "machine_busy_percent": share(busy),
        "machine_steal_percent": share(steal),
        "io_pressure_percent": io_pressure,
        "server_rss_mb": server_rss,
        "startup_ms": startup_ms,
    });
    emit(&report, &o.json_out)
}

/// The JSON report: to `--json`'s file, pretty on standard output for "-", else one line.
fn emit(report: &Value, json_out: &Option<String>) -> anyhow::Result<()> {
    match json_out {
        Some(path) if path == "-" => println!("{}", serde_json::to_string_pretty(report)?),
        Some(path) => std::fs::write(path, serde_json::to_string_pretty(report)?)?,
        None => println!("{}", serde_json::to_string(report)?),
    }
    Ok(())
}

/// The folder of a SQLite URL's file, where the storage floor writes its files.
fn floor_folder(url: &str) -> std::path::PathBuf {
    let file = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    match std::path::Path::new(file).parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    }
}

/// `--storage-floor` on PostgreSQL (`crate::floor_pg`), in a schema of its own, dropped at
/// the end; each step gets a third of the duration.
fn storage_floor_pg(
    url: &str,
    members: usize,
    duration_secs: u64,
    json_out: &Option<String>,
) -> anyhow::Result<()> {
    let sep = if url.contains('?') { '&' } else { '?' };
    let schema = fidelis_store::random_id("floor_", 10);
    let scratch = format!("{url}{sep}schema={schema}");
    let backend = db::backend(&scratch)?;
    let _drop = DropSchema {
        base: url.to_string(),
        schema,
    };
    let step = Duration::from_secs_f64((duration_secs as f64 / 3.0).max(1.0));
    eprintln!(
        "measuring the storage floor on PostgreSQL ({members} members, {:.1} s a step)...",
        step.as_secs_f64()
    );
    // The PostgreSQL client must not run on the async runtime's threads.
    let (steps, purchases) = std::thread::spawn(move || {
        let mut c = backend.connect(false)?;
        crate::floor_pg::measure(c.as_mut(), members, &FLOOR_PER_COMMIT, step)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the storage floor's thread panicked"))??;
    println!("\nfidelis bench --storage-floor — PostgreSQL, no ledger logic");
    println!(
        "a purchase as one row (order key, one row with a member index, member update), N in one statement and commit:"
    );
    println!(
        "{:>10} {:>12} {:>16} {:>12}",
        "per commit", "purchases/s", "PostgreSQL µs/op", "commit ms"
    );
    for st in &steps {
        println!(
            "{:>10} {:>12.0} {:>16} {:>12.2}",
            st.per_commit,
            st.per_second,
            st.postgres_cpu_us
                .map_or("-".to_string(), |c| format!("{c:.1}")),
            st.commit_ms_mean
        );
    }
    println!("{purchases} purchases written");
    let report = json!({
        "storage_floor": true,
        "database": "postgres",
        "members": members,
        "steps": steps.iter().map(|st| json!({
            "per_commit": st.per_commit,
            "purchases": st.purchases,
            "commits": st.commits,
            "seconds": st.seconds,
            "per_second": st.per_second,
            "postgresql_cpu_us_per_purchase": st.postgres_cpu_us,
            "commit_ms_mean": st.commit_ms_mean,
        })).collect::<Vec<_>>(),
        "purchases": purchases,
    });
    emit(&report, json_out)
}

/// Purchases per commit in `--storage-floor`'s steps: one (each purchase its own durable
/// commit), a group commit's size over HTTP with 64 connections, and an in-process one's with
/// 1,024 tasks.
pub const FLOOR_PER_COMMIT: [usize; 3] = [1, 16, 300];

/// `--storage-floor`: what this machine's disk and SQLite allow for the narrowest purchase a
/// ledger could write (`fidelis_store_sqlite::floor`), in the folder of `--database-url`'s
/// file (or the temporary folder). The sync, the write rates and each step get a fifth of the
/// duration each.
pub fn storage_floor(
    database_url: Option<&str>,
    members: usize,
    duration_secs: u64,
    json_out: &Option<String>,
) -> anyhow::Result<()> {
    let dir = match database_url {
        Some(u) if u.starts_with("postgres") => {
            return storage_floor_pg(u, members, duration_secs, json_out);
        }
        Some(u) => floor_folder(u),
        None => std::env::temp_dir(),
    };
    let step = Duration::from_secs_f64((duration_secs as f64 / 5.0).max(1.0));
    eprintln!(
        "measuring the storage floor in {} ({members} members, {:.1} s a step)...",
        dir.display(),
        step.as_secs_f64()
    );
    let floor = fidelis_store_sqlite::floor::measure(&fidelis_store_sqlite::floor::FloorOptions {
        dir: dir.clone(),
        members,
        per_commit: FLOOR_PER_COMMIT.to_vec(),
        step,
    })
    .map_err(anyhow::Error::msg)?;
    let s = &floor.sync;
    println!(
        "\nfidelis bench --storage-floor — SQLite on {}, no ledger logic",
        dir.display()
    );
    println!(
        "fdatasync after a 4 KiB overwrite: {:.0} µs mean, p50 {:.0}, p99 {:.0} ({:.0} a second)",
        s.mean_us,
        s.p50_us,
        s.p99_us,
        1e6 / s.mean_us
    );
    let w = &floor.writes;
    println!(
        "writes: appended and synced every MiB {:.0} MB/s; 4 KiB pages at random places, synced every 256, {:.0} a second ({:.0} MB/s)",
        w.sequential_mb_s,
        w.random_pages_s,
        w.random_pages_s * 4096.0 / (1 << 20) as f64
    );
    println!(
        "a purchase as one row (order key, one row with a member index, member update), durable commits:"
    );
    println!(
        "{:>10} {:>12} {:>14} {:>14} {:>12} {:>9}",
        "per commit", "purchases/s", "writer µs/op", "copier µs/op", "COMMIT ms", "restarts"
    );
    let cpu = |c: Option<f64>| c.map_or("-".to_string(), |c| format!("{c:.1}"));
    for st in &floor.steps {
        println!(
            "{:>10} {:>12.0} {:>14} {:>14} {:>12.2} {:>9}",
            st.per_commit,
            st.per_second,
            cpu(st.writer_cpu_us),
            cpu(st.copier_cpu_us),
            st.commit_ms_mean,
            st.wal_restarts
        );
    }
    println!(
        "{} purchases written, database {:.0} MB",
        floor.purchases, floor.database_mb
    );
    let report = json!({
        "storage_floor": true,
        "folder": dir.display().to_string(),
        "members": members,
        "fdatasync_us": {"mean": s.mean_us, "p50": s.p50_us, "p99": s.p99_us, "syncs": s.syncs},
        "sequential_write_mb_per_second": w.sequential_mb_s,
        "random_page_writes_per_second": w.random_pages_s,
        "steps": floor.steps.iter().map(|st| json!({
            "per_commit": st.per_commit,
            "purchases": st.purchases,
            "commits": st.commits,
            "seconds": st.seconds,
            "per_second": st.per_second,
            "writer_cpu_us_per_purchase": st.writer_cpu_us,
            "copier_cpu_us_per_purchase": st.copier_cpu_us,
            "commit_ms_mean": st.commit_ms_mean,
            "wal_restarts": st.wal_restarts,
        })).collect::<Vec<_>>(),
        "purchases": floor.purchases,
        "database_mb": floor.database_mb,
    });
    emit(&report, json_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_storage_floor_writes_beside_the_database_file() {
        use std::path::PathBuf;
        assert_eq!(
            floor_folder("sqlite:///dev/shm/b.db"),
            PathBuf::from("/dev/shm")
        );
        assert_eq!(floor_folder("sqlite://data/b.db"), PathBuf::from("data"));
        assert_eq!(floor_folder("sqlite://b.db"), PathBuf::from("."));
        assert_eq!(floor_folder("sqlite:b.db"), PathBuf::from("."));
    }

    /// The simulator's baskets are whole purchases (lines that add up to the total), of more
    /// than one shape; a resend adds one of the last line and its price to the total.
    #[test]
    fn purchases_carry_the_simulators_baskets() {
        use fidelis_core::money::parse_minor;
        let baskets = Baskets::new(false).expect("a simulation");
        let Baskets::Simulated(pool) = &baskets else {
            panic!("the simulator's baskets by default");
        };
        assert!(pool.len() > 10_000, "{} baskets", pool.len());
        let sum = |p: &PurchaseInput| -> i64 {
            p.lines
                .iter()
                .map(|l| parse_minor(&l.unit_price, 2).expect("a price") * l.quantity)
                .sum()
        };
        let mut shapes = std::collections::BTreeSet::new();
        for seq in 0..500 {
            let p = baskets.purchase("mem_1", "o-1", seq);
            assert_eq!(p.member.id.as_deref(), Some("mem_1"));
            assert_eq!(p.order_id, "o-1");
            assert_eq!(sum(&p), parse_minor(&p.total, 2).expect("a total"), "{p:?}");
            shapes.insert((p.lines.len(), p.channel as u8));
            let again = baskets.resend("mem_1", "o-1", seq);
            let last = |p: &PurchaseInput| p.lines.last().map(|l| l.quantity).unwrap_or(0);
            assert_eq!(last(&again), last(&p) + 1);
            assert_eq!(sum(&again), parse_minor(&again.total, 2).expect("a total"));
        }
        assert!(
            shapes.len() > 3,
            "baskets of several sizes and channels: {shapes:?}"
        );
        let simple = Baskets::new(true).expect("simple baskets");
        let p = simple.purchase("mem_1", "o-1", 7);
        assert_eq!(p.lines.len(), 2);
        assert_eq!(sum(&p), parse_minor(&p.total, 2).expect("a total"));
    }

    /// A member is kept for a later redemption only after a basket that earned the reward's
    /// points; a return names the basket's first line.
    #[test]
    fn only_baskets_that_earned_the_reward_lead_to_a_redemption() {
        let baskets = Baskets::new(true).expect("simple baskets");
        let mut buyers = std::collections::VecDeque::new();
        let mut small = baskets.purchase("mem_small", "o-1", 1);
        small.total = "4.99".into();
        remember(&mut buyers, "mem_small", &small);
        assert!(buyers.is_empty());
        let mut enough = baskets.purchase("mem_enough", "o-2", 2);
        enough.total = "5.00".into();
        remember(&mut buyers, "mem_enough", &enough);
        assert_eq!(buyers, ["mem_enough"]);
        let sim = Baskets::new(false).expect("a simulation");
        for seq in [0, 7, 12_345] {
            assert_eq!(sim.first_sku(seq), sim.purchase("m", "o", seq).lines[0].sku);
            assert_eq!(
                baskets.first_sku(seq),
                baskets.purchase("m", "o", seq).lines[0].sku
            );
        }
    }

    /// The storage pressure figure reads the `some` line's total, whatever the order of its
    /// fields, and nothing from a file it does not understand.
    #[test]
    fn storage_pressure_is_read_from_the_some_line() {
        let text = "some avg10=0.10 avg60=1.32 avg300=0.67 total=2918489\nfull avg10=0.08 avg60=1.23 avg300=0.63 total=2677942\n";
        assert_eq!(parse_io_stalled(text), Some(2_918_489));
        assert_eq!(parse_io_stalled("some total=7 avg10=1.00"), Some(7));
        assert_eq!(parse_io_stalled("full avg10=0.08 total=5"), None);
        assert_eq!(parse_io_stalled("some avg10=0.10 total=x"), None);
        assert_eq!(parse_io_stalled(""), None);
        let run = CpuUse {
            io: Some((500_000, 2_000_000)),
            ..CpuUse::default()
        };
        assert_eq!(run.io_pressure_percent(), Some(25.0));
        let start = CpuUse {
            io: Some((100_000, 1_000_000)),
            ..CpuUse::default()
        };
        let end = CpuUse {
            io: Some((400_000, 3_000_000)),
            ..CpuUse::default()
        };
        assert_eq!(end.since(&start).io_pressure_percent(), Some(15.0));
        assert_eq!(CpuUse::default().io_pressure_percent(), None);
    }

    #[test]
    fn threads_are_named_by_the_part_of_the_engine_they_run() {
        assert_eq!(thread_part("fidelis-writer-"), "writer");
        assert_eq!(thread_part("fidelis-reader-"), "readers");
        assert_eq!(thread_part("fidelis-checkpo"), "checkpointer");
        assert_eq!(thread_part("fidelis-sync-0"), "syncer");
        assert_eq!(thread_part("tokio-rt-worker"), "tokio workers");
        assert_eq!(thread_part("main"), "other");
    }

    /// A thread named as the writer that spins for 300 ms and writes 1 MiB shows up under
    /// "writer" with at most that much CPU time, and some (tests running beside it may take a
    /// share of the cores), and with the bytes it wrote (on Linux, where `/proc` gives them).
    #[test]
    fn a_busy_thread_counts_under_its_part() {
        if !std::path::Path::new("/proc/self/task").exists() {
            return;
        }
        let before = thread_ticks("self")
            .get("writer")
            .copied()
            .unwrap_or([0, 0]);
        let file = std::env::temp_dir().join(format!("fidelis-bench-io-{}", std::process::id()));
        let file_in_thread = file.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let (spun_tx, spun_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::Builder::new()
            .name("fidelis-writer-9".into())
            .spawn(move || {
                let end = Instant::now() + Duration::from_millis(300);
                let mut x = 0u64;
                while Instant::now() < end {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                // And writes 1 MiB to a file, as the writer writes its WAL.
                std::fs::write(&file_in_thread, vec![7u8; 1 << 20]).expect("write");
                spun_tx.send(()).expect("spun");
                // Alive until read: a thread that ended is no longer in /proc.
                let _ = done_rx.recv();
            })
            .expect("thread");
        spun_rx.recv().expect("spun");
        let after = thread_ticks("self")
            .get("writer")
            .copied()
            .unwrap_or([0, 0]);
        done_tx.send(()).expect("done");
        t.join().expect("join");
        let _ = std::fs::remove_file(&file);
        let ms = (after[0] - before[0]) as f64 / TICKS_PER_SECOND * 1000.0;
        assert!((10.0..=1000.0).contains(&ms), "{ms} ms counted");
        // Written towards the disk: the file's pages it dirtied (none on a memory file system,
        // told by the mount holding the temporary folder: the longest mount point above it).
        let written = after[1] - before[1];
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let on_memory = mounts
            .lines()
            .filter_map(|l| {
                let point = l.split_whitespace().nth(4)?;
                file.starts_with(point)
                    .then_some((point.len(), l.contains(" - tmpfs ")))
            })
            .max()
            .is_some_and(|(_, tmpfs)| tmpfs);
        assert!(on_memory || written >= 512 << 10, "{written} bytes counted");
    }
}
