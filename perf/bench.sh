#!/usr/bin/env bash
# Benchmark scenarios for Warren, optionally side by side with another AMQP 0-9-1 broker
# (RabbitMQ, LavinMQ, ...), using warren-perf. Prints a markdown table on stdout.
#
# Usage:
#   perf/bench.sh [--warren URI] [--warren-pid PID]
#                 [--other URI] [--other-pid PID] [--other-name NAME]
#                 [--no-warren] [--scenarios LIST] [--bin PATH] [--out DIR]
#
#   --warren URI        Warren's AMQP URI (default amqp://guest:guest@127.0.0.1:5672/%2f)
#   --warren-pid PID    Warren's pid, to read its VmRSS/VmHWM from /proc (scenarios 7, 8)
#   --other URI         the broker to compare with (optional)
#   --other-pid PID     its pid (for RabbitMQ: the beam.smp listening on its port, e.g.
#                       ss -ltnp 'sport = :5672' | grep -o 'pid=[0-9]*')
#   --other-name NAME   its name in the table (default: other)
#   --no-warren         only run against --other (e.g. to record a reference)
#   --scenarios LIST    comma separated scenario numbers, run in that order (default
#                       7,8,1,2,3,4,5,6,9,10,11,12,13: the memory scenarios first, as brokers seldom give
#                       memory back to the OS and earlier backlogs would hide their growth)
#   --bin PATH          warren-perf binary (default: $WARREN_PERF, else
#                       ${CARGO_TARGET_DIR:-target}/release/warren-perf, built if missing)
#   --out DIR           where each run's full output goes (default: a new /tmp/warren-bench.* dir)
#
# Brokers are run alternately: each scenario runs on one broker then the other (the first one
# alternates between scenarios), so slow drift of the machine affects both alike.
#
# Environment:
#   BENCH_SECONDS       duration of each timed run (default 10)
#   BENCH_LATENCY_RATE  msgs/s of the latency scenario (default 10000)
#   BENCH_IDLE_CONNS    idle connections of scenario 7 (default 1000)
#   BENCH_BACKLOG       messages of the backlog scenario (default 1000000)
#   BENCH_BACKLOG_CONFIRM  confirm window while filling the backlog (default 1000; 0 = none)
#   BENCH_PAUSE         seconds to let a broker settle between runs (default 2)
#   BENCH_EXTRA         extra warren-perf options for every run (e.g. "--threads 2")
#
# Scenarios:
#   1  1 producer -> 1 queue -> 1 consumer, 16 B bodies, auto-ack, no confirms: max rate
#   2  same with 1 KiB bodies
#   3  confirms (window 1000) and manual acks (prefetch 100), 16 B bodies
#   4  1 producer -> fanout exchange -> 10 queues, one consumer each
#   5  topic exchange, 4 queues x 250 bindings (1000), random keys each matching 4: publish rate
#   6  latency at a fixed rate (BENCH_LATENCY_RATE msgs/s), 1 KiB: p50/p99/p99.9
#   7  BENCH_IDLE_CONNS idle connections with one channel each: broker RSS per connection
#      (needs the broker's pid; capped at the broker's open-files limit minus 200)
#   8  backlog: BENCH_BACKLOG 16 B messages published with no consumer, then drained:
#      both rates and the broker's peak RSS
#   9  persistent 1 KiB messages to a durable queue, confirms (window 1000) and manual acks
#      (prefetch 100): the durability issue's rate (run it with --scenarios 9, or add it)
#  10  priority queue (x-max-priority 10), random priorities 0-10, 16 B, auto-ack
#  11  dead-lettering: 16 B messages to a queue with x-message-ttl 0 and a dead-letter
#      exchange, consumed (auto-ack) from the dead-letter queue
#  12  scenario 1 beside 999 consumers that sit full (prefetch 1, never ack): the cost of
#      blocked consumers to dispatch (compare its delivered rate with scenario 1's)
#  13  RPC over direct reply-to, one client, one request in flight: requests/s and
#      round-trip latency
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

warren_uri="amqp://guest:guest@127.0.0.1:5672/%2f"
warren_pid=""
other_uri=""
other_pid=""
other_name="other"
use_warren=1
scenarios="7,8,1,2,3,4,5,6,9,10,11,12,13"
bin=""
out=""

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "bench.sh: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --warren) warren_uri=${2:?}; shift 2 ;;
    --warren-pid) warren_pid=${2:?}; shift 2 ;;
    --other) other_uri=${2:?}; shift 2 ;;
    --other-pid) other_pid=${2:?}; shift 2 ;;
    --other-name) other_name=${2:?}; shift 2 ;;
    --no-warren) use_warren=0; shift ;;
    --scenarios) scenarios=${2:?}; shift 2 ;;
    --bin) bin=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

[[ $use_warren == 1 || -n $other_uri ]] || die "--no-warren needs --other"
for p in "$warren_pid" "$other_pid"; do
  [[ -z $p || -r /proc/$p/status ]] || die "no such process: $p"
done

SECS=${BENCH_SECONDS:-10}
LAT_RATE=${BENCH_LATENCY_RATE:-10000}
IDLE=${BENCH_IDLE_CONNS:-1000}
BACKLOG=${BENCH_BACKLOG:-1000000}
BACKLOG_CONFIRM=${BENCH_BACKLOG_CONFIRM:-1000}
PAUSE=${BENCH_PAUSE:-2}
read -r -a EXTRA <<< "${BENCH_EXTRA:-}"

[[ -z $bin ]] && bin=${WARREN_PERF:-}
if [[ -z $bin ]]; then
  bin="${CARGO_TARGET_DIR:-$root/target}/release/warren-perf"
  if [[ ! -x $bin ]]; then
    echo "bench.sh: building warren-perf ..." >&2
    (cd "$root" && cargo build -q -p warren-perf --release) >&2
  fi
fi
[[ -x $bin ]] || die "no warren-perf binary at $bin"
[[ -n $out ]] || out=$(mktemp -d /tmp/warren-bench.XXXXXX)
mkdir -p "$out"
# Many idle connections need file descriptors (and lapin runs one thread per connection).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Brokers: parallel arrays.
names=(); uris=(); pids=(); tags=()
if [[ $use_warren == 1 ]]; then names+=("Warren"); uris+=("$warren_uri"); pids+=("$warren_pid"); tags+=(warren); fi
if [[ -n $other_uri ]]; then names+=("$other_name"); uris+=("$other_uri"); pids+=("$other_pid"); tags+=(other); fi
nb=${#names[@]}

# Results: res[<scenario>|<metric>|<broker index>] = value; rows keep the order of metrics.
declare -A res=()
rows=()
declare -A better=()
notes=()

# jget FILE KEY: a flat numeric (or null) field of the JSON line in FILE.
jget() {
  local v
  v=$({ grep '^{' "$1" | tail -1 | grep -o "\"$2\":[^,}]*" | head -1 | cut -d: -f2-; } 2>/dev/null || true)
  [[ -n $v && $v != null ]] && echo "$v" || echo ""
}

record() { # record SCENARIO_LABEL METRIC BETTER BROKER_INDEX VALUE
  local key="$1|$2"
  if [[ -z ${better[$key]+x} ]]; then rows+=("$key"); better[$key]=$3; fi
  res["$key|$4"]=$5
}

# cpu_rows LABEL BROKER_INDEX FILE: broker CPU per message, and a note when warren-perf
# itself used a core or more (then the client, not the broker, may be the limit).
cpu_rows() {
  record "$1" "broker CPU us per msg (in+out)" lower "$2" "$(jget "$3" broker_cpu_us_per_msg)"
  local t d
  t=$(jget "$3" tool_cpu_s); d=$(jget "$3" duration_s)
  if [[ -n $t && -n $d ]] && awk -v t="$t" -v d="$d" 'BEGIN{exit !(d > 0 && t / d >= 1.0)}'; then
    notes+=("scenario ${1%%.*} on ${names[$2]}: warren-perf used $(awk -v t="$t" -v d="$d" 'BEGIN{printf "%.1f", t/d}') CPUs (broker $(jget "$3" broker_cpu_s) s CPU in ${d%.*} s): client-bound on this machine?")
  fi
}

# perfrun BROKER_INDEX NAME ARGS...: run warren-perf, keep its output in $out, echo the file.
perfrun() {
  local b=$1 name=$2; shift 2
  local f="$out/${tags[$b]}-$name.txt"
  local pidopt=()
  [[ -n ${pids[$b]} ]] && pidopt=(--broker-pid "${pids[$b]}")
  {
    echo "# ${names[$b]}: warren-perf --uri <uri> $* ${EXTRA[*]} ${pidopt[*]} --json"
    "$bin" --uri "${uris[$b]}" "$@" "${EXTRA[@]}" "${pidopt[@]}" --json 2>&1 || echo "# exit status $?"
  } > "$f"
  echo "$f"
}

fmt_rate() { [[ -n $1 ]] && printf "%.0f" "$1" || echo ""; }
us1() { [[ -n $1 ]] && printf "%.1f" "$1" || echo ""; }
mib() { [[ -n $1 ]] && awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}' || echo ""; }

scenario() { # scenario N BROKER_INDEX
  local n=$1 b=$2 f f2 L
  case $n in
    1) L="1. 1 pub -> 1 queue -> 1 cons, 16 B, auto-ack"
       f=$(perfrun "$b" s1 --time "$SECS" --size 16 --auto-ack --queue bench-s1)
       record "$L" "published msg/s" higher "$b" "$(fmt_rate "$(jget "$f" send_rate)")"
       record "$L" "delivered msg/s" higher "$b" "$(fmt_rate "$(jget "$f" receive_rate)")"
       cpu_rows "$L" "$b" "$f" ;;
    2) L="2. same, 1 KiB bodies"
       f=$(perfrun "$b" s2 --time "$SECS" --size 1024 --auto-ack --queue bench-s2)
       record "$L" "published msg/s" higher "$b" "$(fmt_rate "$(jget "$f" send_rate)")"
       record "$L" "delivered msg/s" higher "$b" "$(fmt_rate "$(jget "$f" receive_rate)")"
       cpu_rows "$L" "$b" "$f" ;;
    3) L="3. confirms (window 1000) + manual acks (prefetch 100), 16 B"
       f=$(perfrun "$b" s3 --time "$SECS" --size 16 --confirm 1000 --prefetch 100 --queue bench-s3)
       record "$L" "confirmed msg/s" higher "$b" "$(fmt_rate "$(jget "$f" confirm_rate)")"
       record "$L" "delivered msg/s" higher "$b" "$(fmt_rate "$(jget "$f" receive_rate)")"
       cpu_rows "$L" "$b" "$f" ;;
    4) L="4. 1 pub -> fanout -> 10 queues x 1 cons, 16 B"
       f=$(perfrun "$b" s4 --time "$SECS" --size 16 --auto-ack --exchange bench-fanout \
             --exchange-type fanout --queues 10 --queue-pattern 'bench-s4-%d' --consumers 10)
       record "$L" "published msg/s" higher "$b" "$(fmt_rate "$(jget "$f" send_rate)")"
       record "$L" "delivered msg/s (all queues)" higher "$b" "$(fmt_rate "$(jget "$f" receive_rate)")"
       cpu_rows "$L" "$b" "$f" ;;
    5) L="5. topic, 1000 bindings (4 queues x 250), keys match 4"
       f=$(perfrun "$b" s5 --time "$SECS" --size 16 --auto-ack --exchange bench-topic \
             --exchange-type topic --queues 4 --queue-pattern 'bench-s5-%d' --consumers 4 \
             --bindings 250 --binding-pattern 'bench.%d.#' \
             --routing-key-pattern 'bench.%d.x.y' --routing-key-count 250)
       record "$L" "published msg/s" higher "$b" "$(fmt_rate "$(jget "$f" send_rate)")"
       record "$L" "delivered msg/s (all queues)" higher "$b" "$(fmt_rate "$(jget "$f" receive_rate)")"
       cpu_rows "$L" "$b" "$f" ;;
    6) L="6. latency at $LAT_RATE msg/s, 1 KiB"
       f=$(perfrun "$b" s6 --time "$SECS" --size 1024 --auto-ack --rate "$LAT_RATE" --queue bench-s6)
       record "$L" "p50 us" lower "$b" "$(us1 "$(jget "$f" latency_p50_us)")"
       record "$L" "p99 us" lower "$b" "$(us1 "$(jget "$f" latency_p99_us)")"
       record "$L" "p99.9 us" lower "$b" "$(us1 "$(jget "$f" latency_p999_us)")" ;;
    7) L="7. $IDLE idle connections (1 channel each)"
       local hold=$SECS n=$IDLE lim=""; (( hold < 5 )) && hold=5
       # Don't push a broker past its file descriptor limit (RabbitMQ stops when it runs out).
       [[ -n ${pids[$b]} ]] && lim=$(awk '/^Max open files/ {print $4}' "/proc/${pids[$b]}/limits" 2>/dev/null || true)
       if [[ $lim =~ ^[0-9]+$ ]] && (( n > lim - 200 )); then
         n=$(( lim - 200 ))
         notes+=("scenario 7 on ${names[$b]}: $n connections instead of $IDLE (its open files limit is $lim)")
       fi
       f=$(perfrun "$b" s7 --producers 0 --consumers 0 --idle-connections "$n" --time "$hold" --quiet)
       record "$L" "broker RSS KiB / connection" lower "$b" "$(jget "$f" broker_rss_per_idle_connection_kb)"
       record "$L" "broker RSS MiB with connections" lower "$b" "$(mib "$(jget "$f" broker_rss_idle_kb)")" ;;
    8) L="8. backlog of $BACKLOG x 16 B, no consumer, then drained"
       local q="bench-backlog-$$"
       local copt=(); [[ $BACKLOG_CONFIRM != 0 ]] && copt=(--confirm "$BACKLOG_CONFIRM")
       f=$(perfrun "$b" s8-fill --consumers 0 --size 16 --pmessages "$BACKLOG" "${copt[@]}" --queue "$q" --drain-timeout 30)
       sleep "$PAUSE"
       f2=$(perfrun "$b" s8-drain --producers 0 --cmessages "$BACKLOG" --auto-ack --queue "$q" --drain-timeout 10)
       record "$L" "publish msg/s" higher "$b" "$(fmt_rate "$(jget "$f" send_rate)")"
       record "$L" "drain msg/s" higher "$b" "$(fmt_rate "$(jget "$f2" receive_rate)")"
       local p1 p2 s0 pk
       p1=$(jget "$f" broker_rss_peak_kb); p2=$(jget "$f2" broker_rss_peak_kb); s0=$(jget "$f" broker_rss_start_kb)
       if [[ -n $p1 && -n $p2 ]]; then
         pk=$(( p1 > p2 ? p1 : p2 ))
         record "$L" "broker peak RSS MiB (sampled)" lower "$b" "$(mib "$pk")"
         record "$L" "broker RSS growth MiB (peak - start)" lower "$b" "$(mib $(( pk - s0 )))"
       else
         record "$L" "broker peak RSS MiB (sampled)" lower "$b" ""
         record "$L" "broker RSS growth MiB (peak - start)" lower "$b" ""
       fi ;;
    9) L="9. persistent 1 KiB, durable queue, confirms (window 1000) + manual acks (prefetch 100)"
       f=$(perfrun "$b" s9 --time "$SECS" --size 1024 --persistent --durable --confirm 1000 --prefetch 100 --queue bench-s9)
       record "$L" "confirmed msg/s" higher "$b" "$(fmt_rate "$(jget "$f" confirm_rate)")"
       record "$L" "delivered msg/s" higher "$b" "$(fmt_rate "$(jget "$f" receive_rate)")"
       cpu_rows "$L" "$b" "$f" ;;
    10) L="10. priority queue (x-max-priority 10), random priorities, 16 B, auto-ack"
       f=$(perfrun "$b" s10 --time "$SECS" --size 16 --auto-ack --queue bench-s10 \
             --queue-args x-max-priority=10 --priorities 10)
       record "$L" "published msg/s" higher "$b" "$(fmt_rate "$(jget "$f" send_rate)")"
       record "$L" "delivered msg/s" higher "$b" "$(fmt_rate "$(jget "$f" receive_rate)")"
       cpu_rows "$L" "$b" "$f" ;;
    11) L="11. dead-lettering: TTL-0 queue -> DLX -> queue, 16 B, auto-ack"
       f=$(perfrun "$b" s11 --time "$SECS" --size 16 --auto-ack --queue bench-s11 \
             --queue-args x-message-ttl=0,x-dead-letter-exchange=,x-dead-letter-routing-key=bench-s11-dlq \
             --consume-queue bench-s11-dlq)
       record "$L" "published msg/s" higher "$b" "$(fmt_rate "$(jget "$f" send_rate)")"
       record "$L" "dead-lettered and delivered msg/s" higher "$b" "$(fmt_rate "$(jget "$f" receive_rate)")"
       cpu_rows "$L" "$b" "$f" ;;
    12) L="12. scenario 1 beside 999 full consumers (prefetch 1, never ack)"
       f=$(perfrun "$b" s12 --time "$SECS" --size 16 --auto-ack --queue bench-s12 --stuck-consumers 999)
       record "$L" "published msg/s" higher "$b" "$(fmt_rate "$(jget "$f" send_rate)")"
       record "$L" "delivered msg/s" higher "$b" "$(fmt_rate "$(jget "$f" receive_rate)")"
       cpu_rows "$L" "$b" "$f" ;;
    13) L="13. RPC over direct reply-to, 1 client, 16 B"
       f=$(perfrun "$b" s13 --time "$SECS" --size 16 --rpc --queue bench-s13)
       record "$L" "requests/s" higher "$b" "$(fmt_rate "$(jget "$f" send_rate)")"
       record "$L" "round trip p50 us" lower "$b" "$(us1 "$(jget "$f" latency_p50_us)")"
       record "$L" "round trip p99 us" lower "$b" "$(us1 "$(jget "$f" latency_p99_us)")" ;;
    *) die "unknown scenario $n" ;;
  esac
}

IFS=, read -r -a list <<< "$scenarios"
echo "bench.sh: ${names[*]}; BENCH_SECONDS=$SECS; outputs in $out" >&2
k=0
for n in "${list[@]}"; do
  for ((i = 0; i < nb; i++)); do
    b=$(( (i + k) % nb ))
    echo "bench.sh: scenario $n on ${names[$b]} ..." >&2
    scenario "$n" "$b"
    sleep "$PAUSE"
  done
  k=$((k + 1))
done

# Table.
ratio() { # ratio A B
  [[ -n $1 && -n $2 ]] && awk -v a="$1" -v b="$2" 'BEGIN{ if (b+0 == 0) print ""; else printf "%.2f", a/b }' || echo ""
}
echo
echo "warren-perf $("$bin" --version | awk '{print $2}'), BENCH_SECONDS=$SECS, $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%MZ)"
echo
if [[ $nb == 2 ]]; then
  echo "| Scenario | Metric | ${names[0]} | ${names[1]} | ${names[0]}/${names[1]} | better |"
  echo "|---|---|---:|---:|---:|---|"
else
  echo "| Scenario | Metric | ${names[0]} | better |"
  echo "|---|---|---:|---|"
fi
prev=""
for key in "${rows[@]}"; do
  s=${key%%|*}; m=${key#*|}
  label=$s; [[ $s == "$prev" ]] && label=""; prev=$s
  v0=${res["$key|0"]:-}
  if [[ $nb == 2 ]]; then
    v1=${res["$key|1"]:-}
    echo "| $label | $m | ${v0:-n/a} | ${v1:-n/a} | $(r=$(ratio "$v0" "$v1"); echo "${r:-n/a}") | ${better[$key]} |"
  else
    echo "| $label | $m | ${v0:-n/a} | ${better[$key]} |"
  fi
done
if [[ ${#notes[@]} -gt 0 ]]; then
  echo
  for n in "${notes[@]}"; do echo "- $n"; done
fi
echo
echo "Raw outputs: $out"
