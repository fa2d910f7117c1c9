#!/usr/bin/env bash
# Start-up time and memory of an ephemeral broker, the fixture use case: from exec to the
# ready line on stdout (every listener bound), and its resident memory then, over N runs
# (median and worst). With --rabbitmq, the same for a RabbitMQ node started natively
# (Debian's installed node restarted on 127.0.0.1:5680, until its AMQP port accepts).
#
#   perf/startup.sh [--runs N] [--warren target/release/warren] [--rabbitmq]
set -euo pipefail
RUNS=20
WARREN=target/release/warren
RABBIT=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --warren) WARREN=$2; shift 2 ;;
    --rabbitmq) RABBIT=1; shift ;;
    *) echo "usage: $0 [--runs N] [--warren PATH] [--rabbitmq]" >&2; exit 2 ;;
  esac
done
python3 - "$WARREN" "$RUNS" "$RABBIT" <<'PY'
import os, socket, statistics, subprocess, sys, tempfile, time, shutil

warren, runs, rabbit = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

def report(name, times, rss):
    times.sort()
    print(f"{name}: start {statistics.median(times)*1000:.1f} ms median, {times[-1]*1000:.1f} ms worst over {len(times)} runs; "
          f"RSS at ready {statistics.median(rss)/1024:.1f} MiB median")

times, rss = [], []
for _ in range(runs):
    t0 = time.perf_counter()
    p = subprocess.Popen([warren, "--ephemeral", "--port", "0", "--exit-on-stdin-close", "--log-level", "error"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    times.append(time.perf_counter() - t0)
    assert line.startswith("{"), line
    rss.append(rss_kib(p.pid))
    p.stdin.close()
    p.wait(timeout=10)
report(f"warren --ephemeral ({warren})", times, rss)

# A vhost per test: create and delete through the management API (one HTTP request each).
import base64, json, urllib.request
p = subprocess.Popen([warren, "--ephemeral", "--port", "0", "--exit-on-stdin-close", "--log-level", "error"],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
mgmt = json.loads(p.stdout.readline())["management_url"]
auth = "Basic " + base64.b64encode(b"guest:guest").decode()
def call(method, path):
    req = urllib.request.Request(mgmt + path.lstrip("/"), method=method, headers={"authorization": auth, "content-type": "application/json"}, data=b"{}" if method == "PUT" else None)
    t0 = time.perf_counter()
    urllib.request.urlopen(req).read()
    return time.perf_counter() - t0
creates, deletes = [], []
for i in range(max(runs * 5, 50)):
    creates.append(call("PUT", f"/api/vhosts/test-{i}"))
    deletes.append(call("DELETE", f"/api/vhosts/test-{i}"))
p.stdin.close(); p.wait(timeout=10)
creates.sort(); deletes.sort()
print(f"vhost per test: create {statistics.median(creates)*1000:.2f} ms median ({creates[int(len(creates)*0.95)]*1000:.2f} ms p95), "
      f"delete {statistics.median(deletes)*1000:.2f} ms median ({deletes[int(len(deletes)*0.95)]*1000:.2f} ms p95), "
      f"HTTP round trip included, {len(creates)} each")

if rabbit:
    # The installed node (Debian's rabbitmq-server, its plugins as configured), stopped and
    # started again on 127.0.0.1:5680 until its AMQP port accepts; RSS of its beam.smp then.
    times, rss = [], []
    for _ in range(3):
        subprocess.run(["rabbitmqctl", "-q", "stop"], capture_output=True)
        time.sleep(3)
        env = dict(os.environ, RABBITMQ_NODE_PORT="5680", RABBITMQ_NODE_IP_ADDRESS="127.0.0.1")
        t0 = time.perf_counter()
        subprocess.run(["rabbitmq-server", "-detached"], env=env, capture_output=True)
        while True:
            try:
                socket.create_connection(("127.0.0.1", 5680), timeout=0.1).close()
                break
            except OSError:
                if time.perf_counter() - t0 > 120:
                    raise SystemExit("rabbitmq did not start in 120 s")
                time.sleep(0.02)
        times.append(time.perf_counter() - t0)
        beam = subprocess.run(["pgrep", "-x", "beam.smp"], capture_output=True, text=True).stdout.split()
        rss.append(sum(rss_kib(int(b)) for b in beam))
    report("RabbitMQ 3.10 (Debian, rabbitmq-server -detached)", times, rss)
PY
