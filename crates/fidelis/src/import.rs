//! `fidelis import`: historical orders from CSV, through the same use case as the API (so they
//! are validated, earn, and are recorded once per order id: an import can be re-run safely).
//!
//! The file has a header row and one row per order line; consecutive rows with the same
//! `order_id` form one order:
//!
//! ```text
//! order_id,external_id,occurred_at,channel,store_id,currency,total,sku,category,quantity,unit_price
//! A-1001,cust-42,2026-03-01T10:15:00Z,pos,paris-01,EUR,59.90,shoe-42,shoes,1,49.90
//! A-1001,cust-42,2026-03-01T10:15:00Z,pos,paris-01,EUR,59.90,sock-7,clothing,2,5.00
//! A-1002,cust-7,2026-03-02T17:40:00Z,web,,EUR,12.00,,,,
//! ```
//!
//! `sku`, `category`, `quantity` and `unit_price` may be empty (an order known by its total
//! only). Fields are separated by commas; a field containing a comma is quoted ("...").

use anyhow::{Context, bail};
use chrono::Utc;
use fidelis_app::{App, Principal, Scope, SystemClock};
use fidelis_core::event::{Channel, LineInput, MemberRef, PurchaseInput};
use std::io::BufRead;
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinSet;

const COLUMNS: [&str; 11] = [
    "order_id",
    "external_id",
    "occurred_at",
    "channel",
    "store_id",
    "currency",
    "total",
    "sku",
    "category",
    "quantity",
    "unit_price",
];
/// One order's outcome: its line in the file, and whether it was a resend (or why it failed).
type Recorded = (usize, Result<bool, fidelis_app::AppError>);

/// Orders in flight at once: enough to fill the writer's group commits.
const IN_FLIGHT: usize = 2048;

/// Splits one CSV line into fields (RFC 4180 quoting, no line breaks inside fields).
fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::with_capacity(COLUMNS.len());
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(ch) = chars.next() {
        match (ch, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn order_from(rows: &[Vec<String>], line_no: usize) -> anyhow::Result<PurchaseInput> {
    let first = &rows[0];
    let channel = match first[3].as_str() {
        "pos" => Channel::Pos,
        "web" => Channel::Web,
        "app" => Channel::App,
        other => bail!("line {line_no}: channel `{other}` is not pos, web or app"),
    };
    let mut lines = Vec::new();
    for r in rows {
        if r[7].is_empty() {
            continue;
        }
        let quantity: i64 = r[9]
            .parse()
            .with_context(|| format!("line {line_no}: quantity `{}` is not an integer", r[9]))?;
        lines.push(LineInput {
            sku: r[7].clone(),
            category: (!r[8].is_empty()).then(|| r[8].clone()),
            quantity,
            unit_price: r[10].clone(),
        });
    }
    Ok(PurchaseInput {
        member: MemberRef {
            id: None,
            external_id: Some(first[1].clone()),
        },
        order_id: first[0].clone(),
        occurred_at: (!first[2].is_empty()).then(|| first[2].clone()),
        channel,
        store_id: (!first[4].is_empty()).then(|| first[4].clone()),
        currency: first[5].clone(),
        total: first[6].clone(),
        lines,
    })
}

pub async fn run(url: &str, tenant: &str, path: &str) -> anyhow::Result<()> {
    let store = crate::db::open(url, Utc::now().timestamp_micros())?;
    let app = App::new(store.clone(), Arc::new(SystemClock));
    if !store
        .tenant_ids()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .iter()
        .any(|t| t == tenant)
    {
        bail!("tenant `{tenant}` does not exist (create it with `fidelis keys create`)");
    }
    let who = Principal {
        tenant: tenant.to_string(),
        key_id: "import".into(),
        scope: Scope::Admin,
    };
    let reader: Box<dyn BufRead> = if path == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {path}"))?,
        ))
    };
    let mut lines = reader.lines();
    let header = fields(&lines.next().context("the file is empty")??);
    if header.iter().map(|h| h.trim()).ne(COLUMNS.iter().copied()) {
        bail!("the header must be exactly: {}", COLUMNS.join(","));
    }
    let started = Instant::now();
    let (mut ok, mut duplicate, mut refused) = (0u64, 0u64, 0u64);
    let mut set: JoinSet<Recorded> = JoinSet::new();
    let mut pending: Vec<Vec<String>> = Vec::new();
    let mut pending_line = 0;
    let mut tally = |r: Option<Result<Recorded, tokio::task::JoinError>>| match r {
        Some(Ok((_, Ok(false)))) => ok += 1,
        Some(Ok((_, Ok(true)))) => duplicate += 1,
        Some(Ok((line, Err(e)))) => {
            refused += 1;
            eprintln!("line {line}: refused: {e}");
        }
        Some(Err(e)) => {
            refused += 1;
            eprintln!("an import task failed: {e}");
        }
        None => {}
    };
    let mut line_no = 1;
    let submit = |rows: Vec<Vec<String>>, at: usize, set: &mut JoinSet<_>| -> anyhow::Result<()> {
        let input = order_from(&rows, at)?;
        let (app, who) = (app.clone(), who.clone());
        set.spawn(async move {
            (
                at,
                app.purchase(&who, input, None)
                    .await
                    .map(|(o, _)| o.duplicate),
            )
        });
        Ok(())
    };
    for line in lines {
        let line = line?;
        line_no += 1;
        if line.trim().is_empty() {
            continue;
        }
        let row = fields(&line);
        if row.len() != COLUMNS.len() {
            bail!(
                "line {line_no}: {} fields, expected {}",
                row.len(),
                COLUMNS.len()
            );
        }
        if pending.first().is_some_and(|p| p[0] != row[0]) {
            while set.len() >= IN_FLIGHT {
                tally(set.join_next().await);
            }
            submit(std::mem::take(&mut pending), pending_line, &mut set)?;
        }
        if pending.is_empty() {
            pending_line = line_no;
        }
        pending.push(row);
    }
    if !pending.is_empty() {
        submit(pending, pending_line, &mut set)?;
    }
    while !set.is_empty() {
        tally(set.join_next().await);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "imported {ok} orders ({duplicate} already recorded, {refused} refused) in {secs:.1} s: {:.0} orders/s",
        (ok + duplicate) as f64 / secs.max(1e-9)
    );
    if refused > 0 {
        bail!("{refused} orders were refused (see above)");
    }
    Ok(())
}

/// Writes a simulated history as import CSV (for trying and measuring the import).
pub fn write_sample(
    sim: &fidelis_sim::Simulation,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    writeln!(out, "{}", COLUMNS.join(","))?;
    for e in &sim.events {
        if let fidelis_sim::SimEvent::Purchase { input, .. } = e {
            let ext = input.member.external_id.clone().unwrap_or_default();
            let at = input.occurred_at.clone().unwrap_or_default();
            let store = input.store_id.clone().unwrap_or_default();
            for l in &input.lines {
                writeln!(
                    out,
                    "{},{ext},{at},{},{store},{},{},{},{},{},{}",
                    input.order_id,
                    input.channel.as_str(),
                    input.currency,
                    input.total,
                    l.sku,
                    l.category.clone().unwrap_or_default(),
                    l.quantity,
                    l.unit_price
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_keep_their_commas_and_quotes() {
        assert_eq!(
            fields(r#"a,"b,c","say ""hi""",,e"#),
            vec!["a", "b,c", r#"say "hi""#, "", "e"]
        );
    }

    #[test]
    fn rows_of_one_order_become_its_lines() {
        let rows: Vec<Vec<String>> = [
            "A-1,c-1,2026-03-01T10:15:00Z,pos,paris,EUR,59.90,shoe,shoes,1,49.90",
            "A-1,c-1,2026-03-01T10:15:00Z,pos,paris,EUR,59.90,sock,,2,5.00",
        ]
        .iter()
        .map(|l| fields(l))
        .collect();
        let o = order_from(&rows, 2).expect("valid");
        assert_eq!(o.lines.len(), 2);
        assert_eq!(o.lines[1].category, None);
        assert_eq!(o.total, "59.90");
        let bad = vec![fields("A-2,c-1,,kiosk,,EUR,1.00,,,,")];
        assert!(order_from(&bad, 3).is_err());
    }
}
