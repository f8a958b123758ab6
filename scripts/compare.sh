#!/usr/bin/env bash
# Compares two builds of fidelis on one benchmark, run in turn (A, B, A, B...) so that both see
# the same hours of a shared machine, whose speed swings by a third and more within minutes.
#
#   scripts/compare.sh OLD_BINARY NEW_BINARY [ROUNDS] [-- BENCH ARGUMENTS]
#
# e.g. (keep the build before a change, then build the change):
#   cp target/release/fidelis /tmp/fidelis-before
#   cargo build --release -p fidelis
#   scripts/compare.sh /tmp/fidelis-before target/release/fidelis 4 -- --members 10000 --connections 64 --duration-secs 10
#
# Prints each run's purchases/s, the writer's busy time per write and the CPU per operation
# (server or engine, load generator, PostgreSQL's processes), then each figure's median over
# the rounds and the median of the rounds' ratios (B / A): the ratio of two runs side by side
# moves much less than either run's rate. A bench SQLite database left by a run is removed before the next.
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
a=$1
b=$2
shift 2
rounds=3
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
  rounds=$1
  shift
fi
if [ $# -gt 0 ] && [ "$1" = "--" ]; then
  shift
fi
args=("$@")
if [ ${#args[@]} -eq 0 ]; then
  args=(--members 10000 --connections 64 --duration-secs 10)
fi
db=/tmp/fidelis-bench.db
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --database-url) db=${args[$((i + 1))]#sqlite://} ;;
    --database-url=*) db=${args[$i]#--database-url=} db=${db#sqlite://} ;;
  esac
done

# One run: "purchases/s writer-µs cpu-µs loadgen-µs postgresql-µs" (0 where the output has no
# such figure).
run() {
  case "$db" in postgres://*) ;; *) rm -f "$db" "$db-wal" "$db-shm" ;; esac
  "$1" bench "${args[@]}" 2>&1 | awk '
    /^purchase / { rate = $3 }
    /writer busy/ { for (i = 1; i < NF; i++) if ($i == "busy") busy = $(i + 1) }
    /^CPU per operation:/ {
      for (i = 1; i < NF; i++) {
        if ($i == "server" || ($i == "driver" && cpu == "")) cpu = $(i + 1)
        if ($i == "generator") gen = $(i + 1)
        if ($i == "PostgreSQL") pg = $(i + 1)
      }
    }
    END { printf "%s %s %s %s %s\n", rate + 0, busy + 0, cpu + 0, gen + 0, pg + 0 }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

results=$(mktemp)
trap 'rm -f "$results"' EXIT
printf '%-6s %-2s %12s %16s %10s %15s %16s\n' round "" purchases/s "writer µs/write" "CPU µs/op" "load gen µs/op" "PostgreSQL µs/op"
for ((r = 1; r <= rounds; r++)); do
  for side in A B; do
    bin=$a
    [ $side = B ] && bin=$b
    line=$(run "$bin")
    echo "$r $side $line" >> "$results"
    read -r rate busy cpu gen pg <<< "$line"
    printf '%-6s %-2s %12s %16s %10s %15s %16s\n' "$r" "$side" "$rate" "$busy" "$cpu" "$gen" "$pg"
  done
done
echo
printf '%-22s %12s %16s %10s %15s %16s\n' "" purchases/s "writer µs/write" "CPU µs/op" "load gen µs/op" "PostgreSQL µs/op"
for side in A B; do
  row=()
  for col in 3 4 5 6 7; do
    row+=("$(awk -v s=$side -v c=$col '$2 == s { print $c }' "$results" | median)")
  done
  printf '%-22s %12s %16s %10s %15s %16s\n' "median $side" "${row[@]}"
done
row=()
for col in 3 4 5 6 7; do
  row+=("$(awk -v c=$col '{ v[$1 " " $2] = $c } END { for (r = 1; (r " A") in v; r++) if (v[r " A"] > 0) printf "%.3f\n", v[r " B"] / v[r " A"] }' "$results" | median)")
done
printf '%-22s %12s %16s %10s %15s %16s\n' "median ratio B / A" "${row[@]}"
