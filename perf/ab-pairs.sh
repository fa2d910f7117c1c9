#!/usr/bin/env bash
# Paired full-speed runs of two brokers, alternated, with medians: steadier than one
# perf/bench.sh run on a small machine, where single runs of one build differ by 15%.
#
# Usage: perf/ab-pairs.sh PAIRS URI_A PID_A URI_B PID_B [SCENARIO...]
#   PAIRS      how many runs on each broker (the first alternates between pairs)
#   URI_*      the brokers' AMQP URIs; PID_* their pids (CPU per message from /proc)
#   SCENARIO   1 (1 pub -> 1 queue -> 1 cons) and/or 4 (fanout to 10 queues), 16 B bodies,
#              auto-ack, as perf/bench.sh's scenarios of those numbers; default: 1 4
# Environment: SECONDS_RUN (each run, default 10), WARREN_PERF (default
# target/release/warren-perf).
# Prints each run, then per scenario and broker the medians of published msg/s,
# delivered msg/s and broker CPU µs per message.
set -euo pipefail
pairs=$1 uri_a=$2 pid_a=$3 uri_b=$4 pid_b=$5
shift 5
scenarios=("$@")
[[ ${#scenarios[@]} -eq 0 ]] && scenarios=(1 4)
perf_bin=${WARREN_PERF:-target/release/warren-perf}
out=$(mktemp)
trap 'rm -f "$out"' EXIT

run() { # NAME URI PID SCENARIO
  local q="ab-$$-$RANDOM" args
  case $4 in
    1) args=(--queue "$q") ;;
    4) args=(--exchange "ab-fanout-$q" --exchange-type fanout --queues 10 --queue-pattern "$q-%d" --consumers 10) ;;
    *) echo "ab-pairs.sh: no scenario $4 (1 or 4)" >&2; exit 2 ;;
  esac
  "$perf_bin" --uri "$2" --broker-pid "$3" --time "${SECONDS_RUN:-10}" --size 16 --auto-ack --json "${args[@]}" 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    if line.startswith("{"):
        d = json.loads(line)
        print(sys.argv[1], sys.argv[2], round(d["send_rate"]), round(d["receive_rate"]), d["broker_cpu_us_per_msg"])
' "s$4" "$1" | tee -a "$out"
  sleep 2
}

for i in $(seq "$pairs"); do
  for s in "${scenarios[@]}"; do
    if (( i % 2 )); then run A "$uri_a" "$pid_a" "$s"; run B "$uri_b" "$pid_b" "$s"
    else run B "$uri_b" "$pid_b" "$s"; run A "$uri_a" "$pid_a" "$s"; fi
  done
done

python3 - "$out" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    s, b, sent, recv, cpu = line.split()
    rows.setdefault((s, b), []).append((float(sent), float(recv), float(cpu)))
print("\n| scenario | broker | runs | published msg/s | delivered msg/s | broker CPU us/msg |")
print("|---|---|---:|---:|---:|---:|")
for (s, b), r in sorted(rows.items()):
    med = [statistics.median(x[i] for x in r) for i in range(3)]
    print(f"| {s} | {b} | {len(r)} | {med[0]:.0f} | {med[1]:.0f} | {med[2]:.2f} |")
PY
