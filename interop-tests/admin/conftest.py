"""Helpers for the rabbitmqadmin interop tests.

`admin(...)` runs the real rabbitmqadmin (RabbitMQ's own CLI for the
management HTTP API) against MGMT_URL and returns its exit code, stdout and
stderr; `table(out)` parses its default table output into dicts. pika (on
AMQP_URL) checks that what rabbitmqadmin did is visible to AMQP clients.
"""

import json
import os
import subprocess
import time
import urllib.parse
import uuid
from dataclasses import dataclass

import pika
import pytest

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
MGMT_URL = os.environ.get("MGMT_URL", "http://127.0.0.1:15672/")
RABBITMQADMIN = os.environ.get("RABBITMQADMIN", "rabbitmqadmin")
# per rabbitmqadmin call
CALL_TIMEOUT = float(os.environ.get("ADMIN_CALL_TIMEOUT", "20"))
# RabbitMQ's management stats (message counts, channel counts) lag behind by
# up to its collect_statistics_interval (5 s); lists are polled this long.
WAIT = float(os.environ.get("INTEROP_WAIT", "10")) * 1.5

_mgmt = urllib.parse.urlsplit(MGMT_URL)
MGMT_HOST = _mgmt.hostname or "127.0.0.1"
MGMT_PORT = _mgmt.port or 15672
_amqp = urllib.parse.urlsplit(AMQP_URL)
AMQP_HOST = _amqp.hostname or "127.0.0.1"
AMQP_PORT = _amqp.port or 5672


@dataclass
class Result:
    rc: int
    out: str
    err: str
    args: tuple

    def __str__(self):
        return f"rabbitmqadmin {' '.join(self.args)} -> rc={self.rc}\nstdout:\n{self.out}\nstderr:\n{self.err}"


def admin(*args, vhost=None, user="guest", password="guest", check=True):
    """Run rabbitmqadmin against the broker under test. With check=True a
    non-zero exit fails the test (with the output in the message)."""
    cmd = [RABBITMQADMIN, "-H", MGMT_HOST, "-P", str(MGMT_PORT), "-u", user, "-p", password]
    if vhost is not None:
        cmd += ["-V", vhost]
    cmd += list(args)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=CALL_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"rabbitmqadmin {' '.join(args)} did not finish within {CALL_TIMEOUT} s")
    r = Result(p.returncode, p.stdout, p.stderr, tuple(args))
    if check:
        assert r.rc == 0, str(r)
        assert "Traceback" not in r.err, str(r)
    return r


def table(out):
    """Rows of rabbitmqadmin's default table output as dicts (header line =
    keys). 'No items' gives []."""
    if out.strip() == "No items":
        return []
    lines = [l for l in out.splitlines() if l.startswith("|")]
    assert lines, f"no table in output:\n{out}"
    split = lambda l: [c.strip() for c in l.strip()[1:-1].split("|")]
    head = split(lines[0])
    return [dict(zip(head, split(l))) for l in lines[1:]]


def wait_for(fn, what, timeout=WAIT):
    """Poll fn() until it returns something truthy; fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.25)


def unique(kind):
    return f"interop-admin-{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def params(user=None, password=None, vhost=None, name=None):
    p = pika.URLParameters(AMQP_URL)
    if user is not None:
        p.credentials = pika.PlainCredentials(user, password)
    if vhost is not None:
        p.virtual_host = vhost
    if name is not None:
        p.client_properties = {"connection_name": name}
    p.socket_timeout = 5
    p.stack_timeout = 10
    p.blocked_connection_timeout = 15
    p.connection_attempts = 3
    p.retry_delay = 0.5
    return p


OPEN = []


def connect(**kw):
    conn = pika.BlockingConnection(params(**kw))
    OPEN.append(conn)
    return conn


def local_port(conn):
    """The client-side TCP port of a pika BlockingConnection: the management
    API names connections "<client ip>:<port> -> <server ip>:<port>"."""
    return conn._impl._transport._sock.getsockname()[1]


def queue_count(name, vhost=None):
    """Ready messages of a queue, by an AMQP passive declare (exact, unlike
    the management stats); None if the queue does not exist."""
    conn = pika.BlockingConnection(params(vhost=vhost))
    try:
        ch = conn.channel()
        try:
            return ch.queue_declare(name, passive=True).method.message_count
        except pika.exceptions.ChannelClosedByBroker as e:
            assert e.reply_code == 404, e
            return None
    finally:
        if conn.is_open:
            conn.close()


def exchange_exists(name, vhost=None):
    conn = pika.BlockingConnection(params(vhost=vhost))
    try:
        ch = conn.channel()
        try:
            ch.exchange_declare(name, passive=True)
            return True
        except pika.exceptions.ChannelClosedByBroker as e:
            assert e.reply_code == 404, e
            return False
    finally:
        if conn.is_open:
            conn.close()


CREATED = []  # (kind, name, vhost) deleted after each test


def new(kind, vhost=None):
    name = unique(kind)
    CREATED.append((kind, name, vhost))
    return name


@pytest.fixture(autouse=True)
def _cleanup():
    yield
    while OPEN:
        c = OPEN.pop()
        try:
            if c.is_open:
                c.close()
        except Exception:
            pass
    while CREATED:
        kind, name, vhost = CREATED.pop()
        args = {"queue": ["delete", "queue", f"name={name}"],
                "exchange": ["delete", "exchange", f"name={name}"],
                "vhost": ["delete", "vhost", f"name={name}"],
                "user": ["delete", "user", f"name={name}"]}[kind]
        admin(*args, vhost=vhost, check=False)


@pytest.fixture
def tmp_vhost():
    """A fresh vhost (declared with rabbitmqadmin) where guest has all
    permissions; deleted afterwards."""
    vh = new("vhost")
    assert admin("declare", "vhost", f"name={vh}").out.strip() == "vhost declared"
    admin("declare", "permission", f"vhost={vh}", "user=guest", "configure=.*", "write=.*", "read=.*")
    return vh


def load_json(path):
    with open(path) as f:
        return json.load(f)
