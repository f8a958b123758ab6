//! Serving: bind, serve until Ctrl-C or SIGTERM, run jobs in the background. Also the demo
//! (seed a simulated retailer, then serve) and `simulate`.

use crate::{db, seed};
use anyhow::Context;
use chrono::Utc;
use fidelis_app::{App, ManualClock, Principal, Scope, SystemClock};
use fidelis_core::ProgramSettings;
use fidelis_core::program::{ExpiryPolicy, RefundPolicy, Rounding};
use fidelis_sim::{SimConfig, simulate as run_sim};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub async fn run(
    app: App,
    listen: &str,
    jobs_interval_secs: u64,
    banner: Option<String>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    if jobs_interval_secs > 0 {
        let app = app.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(jobs_interval_secs));
            loop {
                tick.tick().await;
                match app.run_jobs().await {
                    Ok(r) if r.members_touched > 0 => tracing::info!(?r, "jobs ran"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "jobs failed; will retry"),
                }
            }
        });
    }
    if let Some(b) = banner {
        println!("{b}");
    }
    // Tests and scripts read this line to learn the port when listening on :0.
    println!("listening on http://{addr}");
    std::io::stdout().flush()?;
    tracing::info!(%addr, "serving");
    axum::serve(listener, fidelis_http::router(app))
        .with_graceful_shutdown(shutdown())
        .await?;
    Ok(())
}

async fn shutdown() {
    let ctrl_c = async {
        // If the handler cannot be installed we simply never shut down gracefully on Ctrl-C.
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// The demo programme: one point per euro, 14 days of return window, 12 months of validity.
fn demo_settings() -> ProgramSettings {
    ProgramSettings {
        points_name: "points".into(),
        earn_rate: "1".into(),
        rounding: Rounding::Floor,
        pending_days: 14,
        expiry: ExpiryPolicy::AfterEarning { months: 12 },
        refund_policy: RefundPolicy::AllowNegative,
        auto_enroll: true,
        ..ProgramSettings::default()
    }
}

/// Seeds `tenant` with a simulated history; returns a one-line summary.
async fn seed_tenant(
    store: fidelis_store::Store,
    tenant: &str,
    members: usize,
    months: u32,
    seed_value: u64,
) -> anyhow::Result<String> {
    let end = Utc::now();
    let cfg = SimConfig {
        seed: seed_value,
        members,
        months,
        ..SimConfig::demo(end)
    };
    let started = Instant::now();
    let sim = run_sim(&cfg).map_err(anyhow::Error::msg)?;
    let clock = Arc::new(ManualClock::new(sim.start));
    let app = App::new(store.clone(), clock.clone());
    store
        .ensure_tenant(
            tenant,
            tenant,
            &demo_settings(),
            sim.start.timestamp_micros(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let who = Principal {
        tenant: tenant.to_string(),
        key_id: "simulator".into(),
        scope: Scope::Admin,
    };
    eprintln!(
        "simulating {} shoppers over {} months (seed {seed_value}): {} purchases, {} refunds; feeding them through the API's use cases...",
        members,
        months,
        sim.purchase_count(),
        sim.refund_count()
    );
    let r = seed::feed(&app, &clock, &who, &sim).await?;
    let secs = started.elapsed().as_secs_f64();
    Ok(format!(
        "seeded {} members, {} purchases, {} refunds ({} refused) in {secs:.1}s; purchases ran at {:.0}/s; {} points matured, {} expired",
        r.members,
        r.purchases,
        r.refunds,
        r.failed,
        r.purchases as f64 / r.purchase_secs.max(1e-9),
        r.points_matured,
        r.points_expired
    ))
}

pub async fn demo(
    listen: &str,
    url: &str,
    members: usize,
    months: u32,
    seed_value: u64,
    no_serve: bool,
) -> anyhow::Result<()> {
    let store = db::open(url, Utc::now().timestamp_micros())?;
    let tenant = "demo";
    let fresh = store
        .tenant_ids()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .iter()
        .all(|t| t != tenant);
    let summary = if fresh {
        seed_tenant(store.clone(), tenant, members, months, seed_value).await?
    } else {
        format!("reusing the demo data already in {url} (delete the file for a fresh one)")
    };
    let app = App::new(store, Arc::new(SystemClock));
    let jobs = app.run_jobs().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    tracing::info!(?jobs, "caught up jobs to now");
    let (admin, admin_key) = app
        .bootstrap_key(tenant, Scope::Admin, Some("demo admin"))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (_, pos_key) = app
        .bootstrap_key(tenant, Scope::Pos, Some("demo till"))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // The console's owner: a fresh password on every start, printed below.
    let (owner, owner_password) = app
        .create_admin_user(
            tenant,
            "owner@demo.example",
            fidelis_app::console::Role::Owner,
            None,
            true,
            "demo",
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let console = format!(
        "  admin console:  http://{listen}/admin  ({} / {})\n  member portal:  http://{listen}/m/{tenant}\n",
        owner.email,
        owner_password.unwrap_or_default()
    );
    let banner = format!(
        "\nFidelis demo — tenant `{tenant}`\n{summary}\n\n{console}\n  admin API key ({}): {admin_key}\n  till (pos) API key:   {pos_key}\n\n  API docs:  http://{listen}/api/docs\n  try:       curl -s http://{listen}/api/v1/members?limit=3 -H 'Authorization: Bearer {admin_key}'\n",
        admin.id
    );
    if no_serve {
        println!("{banner}");
        return Ok(());
    }
    run(app, listen, 60, Some(banner)).await
}

pub async fn simulate(
    members: usize,
    months: u32,
    seed_value: u64,
    out: Option<&str>,
    url: Option<&str>,
    tenant: &str,
) -> anyhow::Result<()> {
    if let Some(path) = out {
        let cfg = SimConfig {
            seed: seed_value,
            members,
            months,
            ..SimConfig::demo(Utc::now())
        };
        let sim = run_sim(&cfg).map_err(anyhow::Error::msg)?;
        let mut w: Box<dyn Write> = if path == "-" {
            Box::new(std::io::stdout().lock())
        } else {
            Box::new(std::fs::File::create(path)?)
        };
        let mut w = std::io::BufWriter::new(&mut w);
        for e in &sim.events {
            serde_json::to_writer(&mut w, e)?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
        eprintln!(
            "{} events ({} purchases, {} refunds) for {} shoppers",
            sim.events.len(),
            sim.purchase_count(),
            sim.refund_count(),
            sim.shoppers.len()
        );
    }
    if let Some(url) = url {
        let store = db::open(url, Utc::now().timestamp_micros())?;
        println!(
            "{}",
            seed_tenant(store, tenant, members, months, seed_value).await?
        );
    }
    if out.is_none() && url.is_none() {
        anyhow::bail!("say where the history goes: --out FILE (or -) and/or --database-url URL");
    }
    Ok(())
}
