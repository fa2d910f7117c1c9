#!/usr/bin/env bash
# Runs the interop tests against an AMQP 0-9-1 broker with RabbitMQ's
# management HTTP API: the RabbitMQ tutorials 1-7 and RabbitMQ's extensions
# with Python pika (suite python) and Node amqplib (node), RabbitMQ's own CLI
# rabbitmqadmin against the management API (admin), and headless-Chromium
# tests of Warren's management web UI (ui).
#
#   AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ MGMT_URL=http://127.0.0.1:15672/ \
#     interop-tests/run.sh                                             # existing broker
#   WARREN_BIN=target/release/warren interop-tests/run.sh              # start warren here
#   interop-tests/run.sh python admin  # only some suites (python | node | admin | ui)
#
# Env: AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/), MGMT_URL (default
#      http://127.0.0.1:15672/; both are set by run.sh when it starts warren),
#      WARREN_BIN (exported to the suites: the python and node fault-injection
#      tests start brokers of their own with it and are skipped without it),
#      WARREN_ARGS (extra args for warren), PYTHON (default python3),
#      RABBITMQADMIN (default: rabbitmqadmin on PATH, installed with apt-get
#      when missing), INTEROP_SUITE_TIMEOUT (seconds per suite, default 600).
set -euo pipefail

ORIG_PWD=$PWD
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

PY=${PYTHON:-python3}
SUITE_TIMEOUT=${INTEROP_SUITE_TIMEOUT:-600}
SUITES=("$@")
[[ ${#SUITES[@]} -gt 0 ]] || SUITES=(python node admin ui)
for s in "${SUITES[@]}"; do
  case $s in
    python | node | admin | ui) ;;
    *) echo "unknown suite '$s' (python | node | admin | ui)" >&2; exit 2 ;;
  esac
done

say() { printf '==> %s\n' "$*"; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/warren-interop.XXXXXX")
WARREN_PID=
WARREN_LOG="$WORK/warren.log"
PRC_TO_REMOVE=  # a policy-rc.d this script created (removed also when interrupted)

cleanup() {
  local rc=$?
  if [[ -n $WARREN_PID ]] && kill -0 "$WARREN_PID" 2>/dev/null; then
    kill -TERM -- "-$WARREN_PID" 2>/dev/null || kill -TERM "$WARREN_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$WARREN_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$WARREN_PID" 2>/dev/null || kill -KILL "$WARREN_PID" 2>/dev/null || true
    wait "$WARREN_PID" 2>/dev/null || true
  fi
  if [[ -n $WARREN_PID && $rc -ne 0 && -s $WARREN_LOG ]]; then
    echo "---- last 60 lines of the warren log ----"
    tail -n 60 "$WARREN_LOG" || true
  fi
  [[ -z $PRC_TO_REMOVE ]] || $PRC_TO_REMOVE
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- deps
command -v "$PY" >/dev/null || die "$PY not found (need Python 3.11+ with pip)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 9))' || die "$PY is too old"

setup_python() {
  local venv="$HERE/.venv" req="$HERE/python/requirements.txt"
  local stamp="$venv/.requirements.sha256" want
  want=$(sha256sum "$req" | cut -d' ' -f1)
  if [[ -x $venv/bin/python && -f $stamp && $(cat "$stamp") == "$want" ]]; then
    return
  fi
  if ! [[ -x $venv/bin/python ]] || ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    rm -rf "$venv"
    if ! "$PY" -m venv "$venv" >/dev/null 2>&1; then
      # Debian ships venv/ensurepip in a separate package.
      rm -rf "$venv"
      if command -v apt-get >/dev/null && [[ $(id -u) -eq 0 ]]; then
        local ver
        ver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
        say "installing python${ver}-venv with apt-get"
        apt-get install -y -q "python${ver}-venv" >/dev/null 2>&1 \
          || { apt-get update -q >/dev/null && apt-get install -y -q "python${ver}-venv" >/dev/null; } \
          || apt-get install -y -q python3-venv >/dev/null
      fi
      "$PY" -m venv "$venv" || die "cannot create a venv with $PY (install python3-venv)"
    fi
  fi
  say "installing python requirements into $venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
  echo "$want" >"$stamp"
}

setup_node() {
  command -v node >/dev/null || die "node not found (need Node 20+ with npm)"
  command -v npm >/dev/null || die "npm not found"
  local stamp="$HERE/node/node_modules/.interop-deps.sha256" want
  want=$(cat "$HERE/node/package.json" "$HERE/node/package-lock.json" 2>/dev/null | sha256sum | cut -d' ' -f1)
  if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
    return
  fi
  say "installing node dependencies"
  if [[ -f $HERE/node/package-lock.json ]]; then
    (cd "$HERE/node" && npm ci --no-audit --no-fund --loglevel=error)
  else
    (cd "$HERE/node" && npm install --no-audit --no-fund --loglevel=error)
  fi
  echo "$want" >"$stamp"
}

# rabbitmqadmin: Debian's rabbitmq-server package ships /usr/bin/rabbitmqadmin.
# Installed with apt-get when missing, with a temporary policy-rc.d that keeps
# the package from starting a RabbitMQ service (it would hold 5672 and 15672).
setup_admin() {
  setup_python
  if [[ -n ${RABBITMQADMIN:-} ]]; then
    command -v "$RABBITMQADMIN" >/dev/null || die "RABBITMQADMIN=$RABBITMQADMIN is not an executable"
    return
  fi
  command -v rabbitmqadmin >/dev/null && return
  command -v apt-get >/dev/null \
    || die "rabbitmqadmin not found, and no apt-get to install it with: install RabbitMQ's rabbitmqadmin (Debian: package rabbitmq-server) or set RABBITMQADMIN"
  local sudo=
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null && sudo -n true 2>/dev/null \
      || die "rabbitmqadmin not found; installing it (apt-get install rabbitmq-server) needs root or password-less sudo"
    sudo="sudo -n"
  fi
  local prc=/usr/sbin/policy-rc.d own_prc=
  if ! $sudo test -e "$prc"; then
    printf '#!/bin/sh\n# interop-tests/run.sh: no service starts during its apt-get install\nexit 101\n' \
      | $sudo tee "$prc" >/dev/null
    $sudo chmod 755 "$prc"
    own_prc=1
    PRC_TO_REMOVE="$sudo rm -f $prc"
  fi
  say "installing rabbitmqadmin with apt-get (Debian's rabbitmq-server package; its service is not started)"
  local ok=1
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends rabbitmq-server \
      >"$WORK/apt.log" 2>&1 \
    || { $sudo apt-get update -q >>"$WORK/apt.log" 2>&1 \
         && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
              rabbitmq-server >>"$WORK/apt.log" 2>&1; } \
    || ok=
  [[ -z $own_prc ]] || { $sudo rm -f "$prc"; PRC_TO_REMOVE=; }
  if [[ -z $ok ]]; then
    tail -n 30 "$WORK/apt.log" >&2
    die "apt-get install rabbitmq-server failed (needed for rabbitmqadmin)"
  fi
  command -v rabbitmqadmin >/dev/null || die "rabbitmqadmin still not on PATH after apt-get install rabbitmq-server"
}

# the ui suite's own script installs what it needs (npm packages, chromium)
setup_ui() {
  command -v node >/dev/null || die "node not found (need Node 20+ with npm)"
  "$HERE/ui/run.sh" setup || die "setting up the ui suite (interop-tests/ui/run.sh setup) failed"
}

for s in "${SUITES[@]}"; do
  case $s in
    python) setup_python ;;
    node) setup_node ;;
    admin) setup_admin ;;
    ui) setup_ui ;;
  esac
done

# ---------------------------------------------------------------- broker
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

if [[ -n ${WARREN_BIN:-} ]]; then
  [[ $WARREN_BIN == */* && $WARREN_BIN != /* ]] && WARREN_BIN="$ORIG_PWD/$WARREN_BIN"
  [[ -x $WARREN_BIN ]] || WARREN_BIN=$(command -v "$WARREN_BIN" || true)
  [[ -n $WARREN_BIN && -x $WARREN_BIN ]] || die "WARREN_BIN is not an executable"
  # test_12_tls.py, test_13_faults.py and node/tests/faults.test.js start
  # warrens of their own (fixtures/warren_pytest.py, fixtures/warren_node.mjs)
  export WARREN_BIN
  free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
  PORT=$(free_port)
  mkdir -p "$WORK/data"
  read -r -a EXTRA_ARGS <<<"${WARREN_ARGS:-}"
  EXTRA_ARGS=(--bind 127.0.0.1 "${EXTRA_ARGS[@]}")
  HELP=$("$WARREN_BIN" --help 2>/dev/null || true)
  # no fixed metrics port that a second broker on this machine could hold
  if grep -q -- '--metrics-port' <<<"$HELP"; then
    EXTRA_ARGS=(--metrics-port 0 "${EXTRA_ARGS[@]}")
  fi
  # the management API (admin and ui suites) on a free port too
  MGMT_PORT=
  if grep -q -- '--management-port' <<<"$HELP"; then
    MGMT_PORT=$(free_port)
    while [[ $MGMT_PORT == "$PORT" ]]; do MGMT_PORT=$(free_port); done
    EXTRA_ARGS=(--management-port "$MGMT_PORT" "${EXTRA_ARGS[@]}")
  fi
  say "starting $WARREN_BIN --port $PORT --data-dir $WORK/data ${EXTRA_ARGS[*]}"
  # own process group (setsid execs in place here), so a wrapper script and
  # its children are stopped together
  setsid "$WARREN_BIN" --port "$PORT" --data-dir "$WORK/data" "${EXTRA_ARGS[@]}" >"$WARREN_LOG" 2>&1 &
  WARREN_PID=$!
  for i in $(seq 100); do
    kill -0 "$WARREN_PID" 2>/dev/null || die "warren exited during startup"
    port_open 127.0.0.1 "$PORT" && break
    [[ $i -eq 100 ]] && die "warren did not accept connections on port $PORT within 10 s"
    sleep 0.1
  done
  AMQP_URL="amqp://guest:guest@127.0.0.1:$PORT/"
  MGMT_URL=
  if [[ -n $MGMT_PORT ]]; then
    for i in $(seq 100); do
      port_open 127.0.0.1 "$MGMT_PORT" && break
      [[ $i -eq 100 ]] && die "warren did not accept connections on its management port $MGMT_PORT within 10 s"
      sleep 0.1
    done
    MGMT_URL="http://127.0.0.1:$MGMT_PORT/"
  fi
else
  AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}
  read -r HOST PORT < <("$PY" -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(p.hostname or "127.0.0.1", p.port or 5672)' "$AMQP_URL")
  port_open "$HOST" "$PORT" || die "no broker accepting connections at $HOST:$PORT (AMQP_URL=$AMQP_URL); set AMQP_URL or WARREN_BIN"
  MGMT_URL=${MGMT_URL:-http://127.0.0.1:15672/}
fi
export AMQP_URL MGMT_URL
say "broker: $AMQP_URL  management: ${MGMT_URL:-none}"
for s in "${SUITES[@]}"; do
  if [[ $s == admin || $s == ui ]]; then
    [[ -n $MGMT_URL ]] || die "suite $s needs the management API, and $WARREN_BIN has no --management-port"
    read -r MHOST MPORT < <("$PY" -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(p.hostname or "127.0.0.1", p.port or 80)' "$MGMT_URL")
    port_open "$MHOST" "$MPORT" || die "no management API at $MGMT_URL (set MGMT_URL)"
    break
  fi
done

# ---------------------------------------------------------------- suites
declare -A PASSED FAILED RC
TOTAL_PASSED=0
TOTAL_FAILED=0

run_python() {
  say "python (pika) tests"
  set +e
  (cd "$HERE/python" && timeout -k 10 "$SUITE_TIMEOUT" "$HERE/.venv/bin/python" -m pytest -v \
     -p no:cacheprovider --junitxml="$WORK/python.xml" .)
  RC[python]=$?
  set -e
  read -r PASSED[python] FAILED[python] < <(junit_counts "$WORK/python.xml")
}

# "passed failed" of a pytest junit xml
junit_counts() {
  "$PY" - "$1" <<'EOF'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print(0, 0); sys.exit()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
t = sum(int(s.get("tests", 0)) for s in suites)
f = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
k = sum(int(s.get("skipped", 0)) for s in suites)
print(t - f - k, f)
EOF
}

run_node() {
  say "node (amqplib) tests"
  set +e
  (cd "$HERE/node" && timeout -k 10 "$SUITE_TIMEOUT" node --test \
     --test-reporter=spec --test-reporter-destination=stdout \
     --test-reporter=tap --test-reporter-destination="$WORK/node.tap" \
     tests/*.test.js)
  RC[node]=$?
  set -e
  local pass fail cancelled
  pass=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$WORK/node.tap" 2>/dev/null | tail -n1)
  fail=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$WORK/node.tap" 2>/dev/null | tail -n1)
  cancelled=$(sed -n 's/^# cancelled \([0-9]*\)$/\1/p' "$WORK/node.tap" 2>/dev/null | tail -n1)
  PASSED[node]=${pass:-0}
  FAILED[node]=$(( ${fail:-0} + ${cancelled:-0} ))
}

run_admin() {
  say "admin (rabbitmqadmin) tests  (MGMT_URL=$MGMT_URL)"
  set +e
  (cd "$HERE/admin" && timeout -k 10 "$SUITE_TIMEOUT" "$HERE/.venv/bin/python" -m pytest -v \
     -p no:cacheprovider --junitxml="$WORK/admin.xml" .)
  RC[admin]=$?
  set -e
  read -r PASSED[admin] FAILED[admin] < <(junit_counts "$WORK/admin.xml")
}

run_ui() {
  say "ui (headless chromium) tests  (UI_URL=$MGMT_URL)"
  mkdir -p "$HERE/ui/screenshots"
  set +e
  UI_URL=$MGMT_URL SCREENSHOT_DIR="$HERE/ui/screenshots" \
    timeout -k 10 "$SUITE_TIMEOUT" "$HERE/ui/run.sh" 2>&1 | tee "$WORK/ui.log"
  RC[ui]=${PIPESTATUS[0]}
  set -e
  # each test file ends with a line "N passed, M failed"
  read -r PASSED[ui] FAILED[ui] < <(awk '/^[0-9]+ passed, [0-9]+ failed$/ { p += $1; f += $3 } END { print p + 0, f + 0 }' "$WORK/ui.log")
}

declare -A SECS
for s in "${SUITES[@]}"; do
  t0=$SECONDS
  "run_$s"
  SECS[$s]=$(( SECONDS - t0 ))
  # a runner that crashed or timed out without reporting failures still fails
  if [[ ${RC[$s]} -ne 0 && ${FAILED[$s]} -eq 0 ]]; then FAILED[$s]=1; fi
  if [[ ${RC[$s]} -eq 0 && ${PASSED[$s]} -eq 0 ]]; then FAILED[$s]=1; fi
  TOTAL_PASSED=$(( TOTAL_PASSED + PASSED[$s] ))
  TOTAL_FAILED=$(( TOTAL_FAILED + FAILED[$s] ))
done

echo
say "summary (broker $AMQP_URL, management ${MGMT_URL:-none})"
for s in "${SUITES[@]}"; do
  status=OK
  [[ ${FAILED[$s]} -eq 0 ]] || status=FAILED
  [[ ${RC[$s]} -eq 124 || ${RC[$s]} -eq 137 ]] && status="FAILED (suite timed out)"
  printf '  %-7s %3d passed, %3d failed  %4ds   %s\n' "$s" "${PASSED[$s]}" "${FAILED[$s]}" "${SECS[$s]}" "$status"
done
echo "interop: $TOTAL_PASSED passed, $TOTAL_FAILED failed"
[[ $TOTAL_FAILED -eq 0 ]]
