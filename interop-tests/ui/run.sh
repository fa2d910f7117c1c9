#!/usr/bin/env bash
# Headless-browser tests of Warren's management web UI (src/management/ui/).
#
#   UI_URL=http://127.0.0.1:15672/ AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ interop-tests/ui/run.sh
#   DEV_UPSTREAM=http://127.0.0.1:15672 AMQP_URL=... interop-tests/ui/run.sh   # UI from this checkout via devserver.py
#   interop-tests/ui/run.sh main      # only ui_test.mjs  (pages: only ui_pages_test.mjs; default: both)
#   interop-tests/ui/run.sh setup     # only install what is missing (interop-tests/run.sh does this first)
#
# Installs what is missing: npm packages (npm ci in this directory) and Debian's
# chromium (apt-get) when no chromium is on PATH and CHROMIUM is not set.
# Env: UI_URL (default http://127.0.0.1:15672/), AMQP_URL (default
# amqp://guest:guest@127.0.0.1:5672/), UI_USER / UI_PASSWORD (guest/guest),
# SCREENSHOT_DIR (default interop-tests/ui/screenshots), CHROMIUM, UI_POLL_MS,
# UI_TIMEOUT_MS, DEV_UPSTREAM (serve the UI files from this checkout with
# devserver.py, proxying /api/ to that URL, and test through it).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
say() { printf '==> %s\n' "$*"; }
die() { printf 'ui/run.sh: %s\n' "$*" >&2; exit 1; }

TESTS=()
SETUP_ONLY=
case "${1:-all}" in
  setup) SETUP_ONLY=1 ;;
  all) TESTS=(ui_test.mjs ui_pages_test.mjs) ;;
  main) TESTS=(ui_test.mjs) ;;
  pages) TESTS=(ui_pages_test.mjs) ;;
  *) die "unknown argument '$1' (all | main | pages | setup)" ;;
esac

command -v node >/dev/null || die "node is not installed (apt-get install nodejs npm)"
if [[ ! -f node_modules/playwright-core/package.json || ! -f node_modules/amqplib/package.json \
      || package-lock.json -nt node_modules/.package-lock.json ]]; then
  say "installing npm packages"
  if [[ -f package-lock.json ]]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
fi

if [[ -z ${CHROMIUM:-} ]] && ! command -v chromium >/dev/null; then
  say "installing Debian's chromium"
  SUDO=; [[ $(id -u) -eq 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  command -v chromium >/dev/null || die "chromium still not on PATH after apt-get install"
fi

[[ -z $SETUP_ONLY ]] || exit 0

DEV_PID=
cleanup() { if [[ -n $DEV_PID ]]; then kill "$DEV_PID" 2>/dev/null || true; wait "$DEV_PID" 2>/dev/null || true; fi; }
trap cleanup EXIT
if [[ -n ${DEV_UPSTREAM:-} ]]; then
  DEV_OUT=$(mktemp "${TMPDIR:-/tmp}/warren-ui-dev.XXXXXX")
  python3 devserver.py --port 0 --quiet --upstream "$DEV_UPSTREAM" >"$DEV_OUT" 2>&1 &
  DEV_PID=$!
  for _ in $(seq 50); do [[ -s $DEV_OUT ]] && break; sleep 0.1; done
  UI_URL=$(head -n1 "$DEV_OUT")
  [[ $UI_URL == http://* ]] || die "devserver did not start: $(cat "$DEV_OUT")"
  export UI_URL
  say "devserver at $UI_URL (API proxied to $DEV_UPSTREAM)"
fi

export UI_URL=${UI_URL:-http://127.0.0.1:15672/}
export AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}
rc=0
for t in "${TESTS[@]}"; do
  say "node $t  (UI_URL=$UI_URL)"
  timeout "${UI_TEST_TIMEOUT:-300}" node "$t" || rc=1
done
exit $rc
