#!/usr/bin/env bash
# Broker CPU per message at a fixed publish rate, which is steadier than at full speed on a
# small machine (the load tool then shares the cores with the broker less unevenly).
#
# Usage: perf/fixed-rate-cpu.sh NAME URI PID [extra warren-perf options]
#   NAME   a label for the output line
#   URI    the broker's AMQP URI
#   PID    the broker's pid (its CPU ticks are read from /proc)
# Environment: RATE (msgs/s, default 60000), SECONDS_RUN (default 10), WARREN_PERF (the
# warren-perf binary, default target/release/warren-perf), FANOUT=N (publish to a fanout
# exchange bound to N queues with a consumer each; the figure is then per delivery).
set -euo pipefail
name=$1 uri=$2 pid=$3
shift 3
perf_bin=${WARREN_PERF:-target/release/warren-perf}
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
t0=$(ticks)
if [[ -n ${FANOUT:-} ]]; then
  target=(--exchange "fixed-rate-fanout" --exchange-type fanout --queues "$FANOUT" --queue-pattern "fixed-rate-$$-%d" --consumers "$FANOUT")
  unit=delivery
else
  target=(--queue "fixed-rate-$$")
  unit=message
fi
received=$("$perf_bin" --uri "$uri" --time "${SECONDS_RUN:-10}" --size 16 --auto-ack "${target[@]}" \
  --rate "${RATE:-60000}" "$@" 2>&1 | awk '/received +[0-9]+ msgs/ {print $2}')
t1=$(ticks)
awk -v n="$name" -v t="$((t1 - t0))" -v hz="$hz" -v r="$received" -v u="$unit" \
  'BEGIN { printf "%s: %d msgs, broker CPU %.3f us per %s\n", n, r, t / hz * 1e6 / r, u }'
