//! `fidelis`: the one binary. Sub-commands serve the API, run the demo, migrate, create keys,
//! run jobs once, verify a ledger, and simulate a retailer.

mod admin;
mod bench;
mod db;
mod floor_pg;
mod import;
mod seed;
mod serve;

use anyhow::{Context, bail};
use chrono::Utc;
use clap::{Args, Parser, Subcommand};
use fidelis_app::{App, ManualClock, Scope, SystemClock};
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "fidelis",
    version,
    about = "Fidelis, an open-source loyalty platform for retailers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct DbArg {
    /// sqlite://path or postgres://user@host/db
    #[arg(long, env = "FIDELIS_DATABASE_URL")]
    database_url: String,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (and run background jobs) on a database, migrating it first.
    Serve {
        #[arg(long, env = "FIDELIS_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
        #[command(flatten)]
        db: DbArg,
        /// Seconds between runs of the maturation and expiry jobs (0: never).
        #[arg(long, env = "FIDELIS_JOBS_INTERVAL_SECS", default_value_t = 60)]
        jobs_interval_secs: u64,
    },
    /// Start a demo on an embedded SQLite file: a tenant, keys, and a simulated retailer.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        #[arg(long, default_value = "sqlite://fidelis-demo.db")]
        database_url: String,
        #[arg(long, default_value_t = 2000)]
        members: usize,
        #[arg(long, default_value_t = 13)]
        months: u32,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Seed only, then exit (no server).
        #[arg(long)]
        no_serve: bool,
    },
    /// Apply the schema's migrations and exit.
    Migrate {
        #[command(flatten)]
        db: DbArg,
    },
    /// Console users.
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Background jobs.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Check the ledger's invariants on a live database; exits 1 when one fails.
    Verify {
        #[command(flatten)]
        db: DbArg,
    },
    /// Measure: load members, start a server, drive it over HTTP (or in-process) and print
    /// throughput and latency per operation.
    Bench {
        /// sqlite://file or postgres://... (default: a fresh SQLite file in the temp folder;
        /// on PostgreSQL a fresh schema, dropped at the end)
        #[arg(long)]
        database_url: Option<String>,
        #[arg(long, default_value_t = 10_000)]
        members: usize,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value_t = 15)]
        duration_secs: u64,
        /// Share of balance reads among operations (0 to 1).
        #[arg(long, default_value_t = 0.2)]
        read_share: f64,
        /// Share of redemptions of a reward among operations (0 to 1; the rest are purchases).
        /// Default 0.05, or what --read-share leaves if less.
        #[arg(long)]
        redeem_share: Option<f64>,
        /// Points the redeemed reward costs (more than members earn measures refusals).
        #[arg(long, default_value_t = bench::REWARD_COST)]
        reward_points: i64,
        /// Share of purchases that resend the connection's previous order with another total
        /// (a till resending a changed basket), each answered 409 and counted as `resend`
        /// (0 to 1; not with --batch-size).
        #[arg(long, default_value_t = 0.0)]
        resend_share: f64,
        /// Share of purchases that are instead the return of one item of the connection's
        /// previous order (a refund by line, clawing its points back), counted as `refund`
        /// (0 to 1; not with --batch-size).
        #[arg(long, default_value_t = 0.0)]
        refund_share: f64,
        /// Every purchase and redemption sends an `Idempotency-Key` (not with --batch-size or
        /// --ceiling).
        #[arg(long)]
        idempotency_keys: bool,
        /// An active rule gives every purchase 5 bonus points, capped per member and day (a
        /// capped campaign; no member reaches the cap in a run).
        #[arg(long)]
        capped_rule: bool,
        /// The programme has a tier ladder on spend over 12 rolling months (Silver, Gold ×1.5,
        /// Platinum ×2): every purchase measures the member's spend and may move the tier.
        #[arg(long)]
        tiers: bool,
        /// Purchases carry a fixed two-line basket, as every figure before 2026-11-25 was
        /// measured, instead of the simulator's baskets (its lines, prices, channels, stores).
        #[arg(long)]
        simple_baskets: bool,
        /// Past purchases per member, dated over the last 24 months and posted before the run
        /// (a programme with years of history; with --tiers, half of them are in the window).
        #[arg(long, default_value_t = 0)]
        history: usize,
        /// Points expire this many months after they were earned (0: never): balance reads
        /// list the member's expiry dates, redemptions take the soonest-expiring points first.
        #[arg(long, default_value_t = 0)]
        expiry_months: u32,
        /// Aim for this many operations per second in all (0: as fast as possible).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Drive the use cases in this process, without HTTP.
        #[arg(long)]
        inprocess: bool,
        /// Send purchases N at a time through `POST /api/v1/events/batch` (HTTP only; 0: one
        /// request per purchase).
        #[arg(long, default_value_t = 0)]
        batch_size: usize,
        /// Write the JSON report here ("-": standard output).
        #[arg(long)]
        json: Option<String>,
        /// Every operation a `GET /healthz` through the same server and connections: what
        /// HTTP on loopback and the load generator alone reach on this machine (HTTP only).
        #[arg(long)]
        ceiling: bool,
        /// Instead of Fidelis, measure what this machine's disk and database allow: on SQLite,
        /// fdatasync, the disk's write rates, and a purchase written as one narrow row, 1, 16
        /// and 300 per durable commit (the files go in --database-url's folder); with a
        /// postgres:// URL, the same purchases on PostgreSQL, in a schema dropped at the end.
        #[arg(long)]
        storage_floor: bool,
    },
    /// Import historical orders from CSV (one row per order line; see docs/PERFORMANCE.md).
    Import {
        #[command(flatten)]
        db: DbArg,
        #[arg(long)]
        tenant: String,
        /// The CSV file ("-": standard input).
        #[arg(long)]
        file: String,
        /// Instead of importing, write a simulated history of N members as import CSV to --file.
        #[arg(long)]
        sample_members: Option<usize>,
    },
    /// Make a simulated retailer's history; print it as NDJSON or feed it into a tenant.
    Simulate {
        #[arg(long, default_value_t = 2000)]
        members: usize,
        #[arg(long, default_value_t = 13)]
        months: u32,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Write the events as NDJSON here ("-" for standard output).
        #[arg(long)]
        out: Option<String>,
        /// Feed the events into this database...
        #[arg(long)]
        database_url: Option<String>,
        /// ...for this tenant (created if needed).
        #[arg(long, default_value = "demo")]
        tenant: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key (and the tenant, if needed); the key is printed on the last line.
    Create {
        #[command(flatten)]
        db: DbArg,
        #[arg(long)]
        tenant: String,
        #[arg(long, value_parser = ["admin", "pos", "ecommerce", "analytics"])]
        scope: String,
        #[arg(long)]
        label: Option<String>,
    },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Run maturation and expiry once, as of --now (RFC 3339; default: the real time).
    RunOnce {
        #[command(flatten)]
        db: DbArg,
        #[arg(long)]
        now: Option<String>,
    },
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FIDELIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("FIDELIS_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// mimalloc instead of the system allocator: the server allocates and frees per request on
/// one thread and per batch on another; measured over HTTP it took 7-13 % off the server's
/// CPU per purchase and added 8-12 % to the rate (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logs();
    let now = || Utc::now().timestamp_micros();
    match Cli::parse().command {
        Command::Serve {
            listen,
            db,
            jobs_interval_secs,
        } => {
            let store = db::open(&db.database_url, now())?;
            let app = App::new(store, Arc::new(SystemClock));
            serve::run(app, &listen, jobs_interval_secs, None).await
        }
        Command::Demo {
            listen,
            database_url,
            members,
            months,
            seed,
            no_serve,
        } => serve::demo(&listen, &database_url, members, months, seed, no_serve).await,
        Command::Migrate { db } => {
            db::open(&db.database_url, now())?;
            println!("migrated {}", db::redact(&db.database_url));
            Ok(())
        }
        Command::Admin { command } => admin::run(command).await,
        Command::Keys {
            command:
                KeysCommand::Create {
                    db,
                    tenant,
                    scope,
                    label,
                },
        } => {
            let store = db::open(&db.database_url, now())?;
            let app = App::new(store, Arc::new(SystemClock));
            let scope = Scope::parse(&scope).context("unknown scope")?;
            let (record, secret) = app
                .bootstrap_key(&tenant, scope, label.as_deref())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!(
                "created {} key {} for tenant {} (shown once; only its hash is stored)",
                record.scope, record.id, record.tenant_id
            );
            println!("{secret}");
            Ok(())
        }
        Command::Jobs {
            command: JobsCommand::RunOnce { db, now: at },
        } => {
            let at = match at {
                Some(t) => fidelis_core::time::parse(&t)
                    .context("--now must be an RFC 3339 time such as 2026-11-22T10:00:00Z")?,
                None => Utc::now(),
            };
            let store = db::open(&db.database_url, now())?;
            let app = App::new(store, Arc::new(ManualClock::new(at)));
            let report = app.run_jobs().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Verify { db } => {
            let store = db::open(&db.database_url, now())?;
            let report = store.verify().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !report.ok() {
                bail!("the ledger breaks its invariants (see above)");
            }
            eprintln!(
                "ledger ok: {} transactions, {} entries, {} members, {} lots",
                report.transactions, report.entries, report.members, report.lots
            );
            Ok(())
        }
        Command::Bench {
            database_url,
            members,
            connections,
            duration_secs,
            read_share,
            redeem_share,
            reward_points,
            resend_share,
            refund_share,
            idempotency_keys,
            capped_rule,
            tiers,
            simple_baskets,
            history,
            expiry_months,
            rate,
            inprocess,
            batch_size,
            json,
            ceiling,
            storage_floor,
        } => {
            if storage_floor && (inprocess || ceiling || batch_size > 0 || rate > 0) {
                bail!(
                    "--storage-floor measures the disk and the database alone; it cannot go with --inprocess, --ceiling, --batch-size or --rate"
                );
            }
            if storage_floor {
                return bench::storage_floor(
                    database_url.as_deref(),
                    members,
                    duration_secs,
                    &json,
                );
            }
            if !(0.0..=1.0).contains(&resend_share) {
                bail!("--resend-share must be between 0 and 1");
            }
            if !(0.0..=1.0).contains(&refund_share) {
                bail!("--refund-share must be between 0 and 1");
            }
            if refund_share > 0.0 && (batch_size > 0 || ceiling) {
                bail!(
                    "--refund-share refunds single purchases; it cannot go with --batch-size or --ceiling"
                );
            }
            if idempotency_keys && (batch_size > 0 || ceiling) {
                bail!(
                    "--idempotency-keys keys single requests; it cannot go with --batch-size or --ceiling"
                );
            }
            if resend_share > 0.0 && (batch_size > 0 || ceiling) {
                bail!(
                    "--resend-share resends single purchases; it cannot go with --batch-size or --ceiling"
                );
            }
            if reward_points < 1 {
                bail!("--reward-points must be at least 1");
            }
            if !(0.0..=1.0).contains(&read_share) {
                bail!("--read-share must be between 0 and 1");
            }
            let redeem_share = redeem_share.unwrap_or((1.0 - read_share).min(0.05));
            if !(0.0..=1.0).contains(&redeem_share) || read_share + redeem_share > 1.0 {
                bail!("--redeem-share must be between 0 and 1, and with --read-share at most 1");
            }
            if batch_size > fidelis_http::MAX_BATCH_EVENTS {
                bail!(
                    "--batch-size is at most {} (the batch endpoint's limit)",
                    fidelis_http::MAX_BATCH_EVENTS
                );
            }
            if ceiling && (inprocess || batch_size > 0) {
                bail!(
                    "--ceiling measures HTTP alone; it cannot go with --inprocess or --batch-size"
                );
            }
            if batch_size > 0 && inprocess {
                bail!("--batch-size drives the HTTP batch endpoint; it cannot go with --inprocess");
            }
            bench::run(bench::BenchOptions {
                database_url,
                members,
                connections: connections.max(1),
                duration_secs,
                read_share,
                redeem_share,
                reward_points,
                resend_share,
                refund_share,
                idempotency_keys,
                capped_rule,
                tiers,
                simple_baskets,
                history,
                expiry_months,
                rate,
                inprocess,
                batch_size,
                json_out: json,
                ceiling,
            })
            .await
        }
        Command::Import {
            db,
            tenant,
            file,
            sample_members,
        } => match sample_members {
            Some(n) => {
                let cfg = fidelis_sim::SimConfig {
                    members: n,
                    ..fidelis_sim::SimConfig::demo(Utc::now())
                };
                let sim = fidelis_sim::simulate(&cfg).map_err(anyhow::Error::msg)?;
                let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
                import::write_sample(&sim, &mut out)?;
                eprintln!("wrote {} orders to {file}", sim.purchase_count());
                Ok(())
            }
            None => import::run(&db.database_url, &tenant, &file).await,
        },
        Command::Simulate {
            members,
            months,
            seed,
            out,
            database_url,
            tenant,
        } => {
            serve::simulate(
                members,
                months,
                seed,
                out.as_deref(),
                database_url.as_deref(),
                &tenant,
            )
            .await
        }
    }
}
