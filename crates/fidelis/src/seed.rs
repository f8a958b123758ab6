//! Feeds a simulated history through the same use cases as live API calls, with the clock
//! moved day by day so pending points mature and points expire as they would have. Within a
//! day, events run concurrently (so writes share group commits): enrolments, then purchases,
//! then refunds.

use chrono::{DateTime, Duration, Utc};
use fidelis_app::{App, ConsentInput, ManualClock, MemberInput, Principal};
use fidelis_sim::{SimEvent, Simulation};
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinSet;

#[derive(Debug, Default)]
pub struct FeedReport {
    pub members: usize,
    pub purchases: usize,
    pub refunds: usize,
    pub failed: usize,
    pub points_matured: i64,
    pub points_expired: i64,
    pub purchase_secs: f64,
}

/// How many events of one day are in flight at once.
const IN_FLIGHT: usize = 256;

pub async fn feed(
    app: &App,
    clock: &Arc<ManualClock>,
    who: &Principal,
    sim: &Simulation,
) -> anyhow::Result<FeedReport> {
    let mut report = FeedReport::default();
    let mut day_start = sim.start;
    let mut i = 0;
    let events = &sim.events;
    while i < events.len() {
        let day_end = day_start + Duration::days(1);
        let mut j = i;
        while j < events.len() && events[j].at() < day_end {
            j += 1;
        }
        clock.set(day_end.min(sim.end));
        for rank in 0..3 {
            let batch: Vec<&SimEvent> = events[i..j].iter().filter(|e| kind(e) == rank).collect();
            let started = Instant::now();
            run_batch(app, who, sim, &batch, &mut report).await?;
            if rank == 1 {
                report.purchase_secs += started.elapsed().as_secs_f64();
            }
        }
        let jobs = app
            .run_jobs()
            .await
            .map_err(|e| anyhow::anyhow!("jobs: {e}"))?;
        report.points_matured += jobs.matured_points;
        report.points_expired += jobs.expired_points;
        i = j;
        day_start = day_end;
    }
    Ok(report)
}

fn kind(e: &SimEvent) -> u8 {
    match e {
        SimEvent::Enrol { .. } => 0,
        SimEvent::Purchase { .. } => 1,
        SimEvent::Refund { .. } => 2,
    }
}

fn member_input(sim: &Simulation, shopper: usize, at: DateTime<Utc>) -> MemberInput {
    let s = &sim.shoppers[shopper];
    let mut attributes = serde_json::Map::new();
    attributes.insert(
        "home_store".into(),
        sim.stores
            .get(s.home_store)
            .map(|st| st.id.clone())
            .unwrap_or_default()
            .into(),
    );
    MemberInput {
        external_id: Some(s.external_id.clone()),
        email: Some(s.email.clone()),
        phone: Some(s.phone.clone()),
        name: Some(s.name.clone()),
        birth_date: s.birth_date.map(|d| d.format("%Y-%m-%d").to_string()),
        attributes: Some(attributes),
        consents: Some(vec![ConsentInput {
            purpose: "marketing_email".into(),
            granted: !shopper.is_multiple_of(3),
            at: Some(fidelis_core::time::format(at)),
            source: "pos".into(),
        }]),
    }
}

async fn run_batch(
    app: &App,
    who: &Principal,
    sim: &Simulation,
    batch: &[&SimEvent],
    report: &mut FeedReport,
) -> anyhow::Result<()> {
    let mut set = JoinSet::new();
    for e in batch {
        while set.len() >= IN_FLIGHT {
            tally(set.join_next().await, report);
        }
        let (app, who) = (app.clone(), who.clone());
        match e {
            SimEvent::Enrol { at, shopper } => {
                let input = member_input(sim, *shopper, *at);
                set.spawn(
                    async move { (0u8, app.create_member(&who, input, None).await.map(|_| ())) },
                );
            }
            SimEvent::Purchase { input, .. } => {
                let input = input.clone();
                set.spawn(async move { (1u8, app.purchase(&who, input, None).await.map(|_| ())) });
            }
            SimEvent::Refund { input, .. } => {
                let input = input.clone();
                set.spawn(async move { (2u8, app.refund(&who, input, None).await.map(|_| ())) });
            }
        }
    }
    while !set.is_empty() {
        tally(set.join_next().await, report);
    }
    Ok(())
}

/// One fed event's outcome: its kind (0 member, 1 purchase, 2 refund) and how it went.
type Fed = (u8, Result<(), fidelis_app::AppError>);

fn tally(done: Option<Result<Fed, tokio::task::JoinError>>, report: &mut FeedReport) {
    match done {
        Some(Ok((k, Ok(())))) => match k {
            0 => report.members += 1,
            1 => report.purchases += 1,
            _ => report.refunds += 1,
        },
        Some(Ok((_, Err(e)))) => {
            report.failed += 1;
            tracing::warn!(error = %e, "a simulated event was refused");
        }
        Some(Err(e)) => {
            report.failed += 1;
            tracing::warn!(error = %e, "a simulated event's task failed");
        }
        None => {}
    }
}
