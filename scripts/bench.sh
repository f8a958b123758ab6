#!/usr/bin/env bash
# Runs the benchmarks whose figures docs/PERFORMANCE.md quotes. Needs PostgreSQL at
# $FIDELIS_BENCH_PG (default postgres://postgres@127.0.0.1:5432/test) for the PostgreSQL rows.
# Takes about fifteen minutes; run it on a quiet machine (nothing else compiling).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p fidelis
bin=target/release/fidelis
pg=${FIDELIS_BENCH_PG:-postgres://postgres@127.0.0.1:5432/test}
out=${1:-target/bench}
mkdir -p "$out"
echo "== machine"; nproc; free -g | head -2; uptime
echo "== SQLite over HTTP, 64 connections, full speed"
$bin bench --members 10000 --connections 64 --duration-secs 20 --json "$out/sqlite-http.json"
echo "== The ceiling: GET /healthz only, the same server and 64 connections (HTTP's own price)"
$bin bench --members 10000 --connections 64 --duration-secs 10 --ceiling --json "$out/ceiling.json"
echo "== The storage floor: the disk and SQLite alone, the narrowest purchase (what no change above the storage can beat)"
$bin bench --storage-floor --members 10000 --duration-secs 20 --json "$out/storage-floor.json"
echo "== SQLite in-process, 64 tasks"
$bin bench --members 10000 --connections 64 --duration-secs 20 --inprocess --json "$out/sqlite-inprocess.json"
echo "== SQLite in-process, 1,024 tasks (large batches)"
$bin bench --members 10000 --connections 1024 --duration-secs 20 --inprocess --json "$out/sqlite-inprocess-1024.json"
echo "== SQLite in-process, 1,024 tasks, members with 40 past purchases and 5 % of purchases returned (redemptions and refunds read the first and last lots, not all)"
$bin bench --members 10000 --connections 1024 --duration-secs 20 --inprocess --history 40 --refund-share 0.05 --json "$out/sqlite-inprocess-history.json"
echo "== SQLite in-process, 256 tasks, 2,000 members with 100 past purchases each and a reward worth about ten purchases (500 points) redeemed"
$bin bench --members 2000 --connections 256 --duration-secs 20 --inprocess --history 100 --reward-points 500 --json "$out/sqlite-inprocess-reward-500.json"
echo "== SQLite over HTTP, 64 connections, a spend ladder (Silver, Gold ×1.5, Platinum ×2) on members with 10 past purchases each"
$bin bench --members 10000 --connections 64 --duration-secs 20 --tiers --history 10 --json "$out/sqlite-http-tiers.json"
echo "== PostgreSQL over HTTP, 64 connections"
$bin bench --database-url "$pg" --members 10000 --connections 64 --duration-secs 20 --json "$out/pg-http.json"
echo "== PostgreSQL over HTTP, 64 connections, 5 % of purchases are returns (refunds by line)"
$bin bench --database-url "$pg" --members 10000 --connections 64 --duration-secs 20 --refund-share 0.05 --json "$out/pg-http-refunds.json"
echo "== PostgreSQL over HTTP, 64 connections, 2,000 members with 40 past purchases each, 5 % of purchases are returns (the first and last lots read, not all)"
$bin bench --database-url "$pg" --members 2000 --connections 64 --duration-secs 20 --history 40 --refund-share 0.05 --json "$out/pg-http-history.json"
echo "== Latency at a set rate: balance reads at 5,000/s (all reads)"
$bin bench --members 10000 --connections 32 --duration-secs 20 --read-share 1 --rate 5000 --json "$out/sqlite-reads-5000.json"
echo "== Balance reads at 5,000/s, points expiring 36 months after earning, 40 past purchases a member"
$bin bench --members 10000 --connections 32 --duration-secs 20 --read-share 1 --rate 5000 --history 40 --expiry-months 36 --json "$out/sqlite-reads-5000-expiry.json"
echo "== SQLite over HTTP, 256 connections, full speed"
$bin bench --members 10000 --connections 256 --duration-secs 20 --json "$out/sqlite-http-256.json"
# Paced connections are spread over the period and a late request counts from when it was due.
for rate in 5000 7500 12500; do
  echo "== Latency at a set rate: $rate operations/s (75 % purchases, 5 % redemptions), 256 connections"
  $bin bench --members 10000 --connections 256 --duration-secs 20 --rate $rate --json "$out/sqlite-mixed-$rate.json"
done
echo "== The p99 target's load: 10,000 purchases/s, in-process, 45 s (the WAL's restart pauses grow with the database)"
$bin bench --members 10000 --connections 256 --duration-secs 45 --rate 10000 --read-share 0 --redeem-share 0 --inprocess --json "$out/sqlite-paced-10000-45s.json"
echo "== Batch endpoint, 100 purchases per request"
$bin bench --members 10000 --connections 16 --duration-secs 20 --read-share 0 --batch-size 100 --json "$out/sqlite-batch-100.json"
echo "== Import of a simulated history"
rm -f "$out"/import.db*
$bin import --database-url x --tenant x --file "$out/orders.csv" --sample-members 2000
$bin keys create --database-url "sqlite://$out/import.db" --tenant shop --scope admin > /dev/null
$bin import --database-url "sqlite://$out/import.db" --tenant shop --file "$out/orders.csv"
echo "== Scale: 10k, 100k, 1M members"
for n in 10000 100000 1000000; do
  $bin bench --members $n --connections 64 --duration-secs 20 --json "$out/scale-$n.json"
done
