//! Request counters and latency per route and status, plus the store's group-commit figures,
//! rendered as Prometheus text.

use crate::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use fidelis_store::runtime::StoreMetrics;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// (method, route, status) → (count, total seconds).
type RequestCounts = BTreeMap<(String, String, u16), (u64, f64)>;

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<RequestCounts>,
}

pub async fn track(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let resp = next.run(req).await;
    let secs = started.elapsed().as_secs_f64();
    let status = resp.status().as_u16();
    if status >= 500 {
        tracing::warn!(%method, %route, status, secs, "request failed");
    } else {
        tracing::debug!(%method, %route, status, secs, "request");
    }
    if let Ok(mut m) = s.metrics.requests.lock() {
        let e = m.entry((method, route, status)).or_insert((0, 0.0));
        e.0 += 1;
        e.1 += secs;
    }
    resp
}

impl Metrics {
    pub fn render(&self, store: &StoreMetrics) -> String {
        let mut out = String::new();
        out.push_str("# HELP fidelis_http_requests_total HTTP requests by route and status.\n# TYPE fidelis_http_requests_total counter\n");
        let snapshot = self.requests.lock().map(|m| m.clone()).unwrap_or_default();
        for ((method, route, status), (n, _)) in &snapshot {
            let _ = writeln!(
                out,
                "fidelis_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP fidelis_http_request_seconds_sum Time spent answering, by route and status.\n# TYPE fidelis_http_request_seconds_sum counter\n");
        for ((method, route, status), (_, secs)) in &snapshot {
            let _ = writeln!(
                out,
                "fidelis_http_request_seconds_sum{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {secs:.6}"
            );
        }
        let counters = [
            (
                "fidelis_store_batches_total",
                "Group-commit transactions.",
                &store.batches,
            ),
            (
                "fidelis_store_jobs_total",
                "Writes run inside group commits.",
                &store.jobs,
            ),
            (
                "fidelis_store_jobs_failed_total",
                "Writes rolled back to their savepoint.",
                &store.jobs_failed,
            ),
            (
                "fidelis_store_batch_replays_total",
                "Batches run again with a savepoint per write because one write failed.",
                &store.replays,
            ),
            (
                "fidelis_store_posted_together_total",
                "Purchases posted with multi-row statements together with their batch.",
                &store.posted_together,
            ),
            (
                "fidelis_store_syncs_total",
                "Syncs of the SQLite write-ahead log before committed writes are answered.",
                &store.syncs,
            ),
            (
                "fidelis_store_sync_micros_total",
                "Time spent in those syncs.",
                &store.sync_micros_total,
            ),
            (
                "fidelis_store_reads_held_total",
                "Reads held until what they saw was durable (SQLite commits are shown before their WAL sync).",
                &store.reads_held,
            ),
            (
                "fidelis_store_read_hold_micros_total",
                "Time those reads were held.",
                &store.read_hold_micros_total,
            ),
            (
                "fidelis_store_wal_restarts_total",
                "Times a writer stopped running batches to start the SQLite write-ahead log over (it stays as it is when a reader still reads older frames; tried again after the next commit).",
                &store.wal_restarts,
            ),
            (
                "fidelis_store_wal_restart_micros_total",
                "Time writers were held starting the write-ahead log over.",
                &store.wal_restart_micros_total,
            ),
            (
                "fidelis_store_commits_failed_total",
                "Group commits that failed (no job acknowledged).",
                &store.commits_failed,
            ),
            (
                "fidelis_store_busy_refusals_total",
                "Requests refused because a queue was full.",
                &store.busy_refusals,
            ),
            (
                "fidelis_store_commit_micros_total",
                "Time spent in COMMIT.",
                &store.commit_micros_total,
            ),
            (
                "fidelis_store_run_micros_total",
                "Time writers spent running batches' statements, before COMMIT.",
                &store.run_micros_total,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP fidelis_store_max_batch Largest group commit seen.\n# TYPE fidelis_store_max_batch gauge\nfidelis_store_max_batch {}",
            store.max_batch_seen.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP fidelis_store_wal_restart_micros_max Longest time a writer was held starting the write-ahead log over.\n# TYPE fidelis_store_wal_restart_micros_max gauge\nfidelis_store_wal_restart_micros_max {}",
            store.wal_restart_micros_max.load(Ordering::Relaxed)
        );
        out
    }
}
