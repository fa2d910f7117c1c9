"""Shared helpers for the pika interop tests.

Every consumer runs in its own thread with its own BlockingConnection (pika
connections are not thread safe), like the separate processes of the
RabbitMQ tutorials. Every wait is bounded so a broken broker makes a test fail
instead of hang.
"""

import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass

import pika

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")

# How long to keep listening after the expected messages arrived, to catch
# duplicates or misrouted extras.
GRACE = float(os.environ.get("INTEROP_GRACE", "0.4"))
# Upper bound for any single wait for messages / confirms.
WAIT = float(os.environ.get("INTEROP_WAIT", "10"))


def params():
    p = pika.URLParameters(AMQP_URL)
    p.socket_timeout = 5
    p.stack_timeout = 10
    p.blocked_connection_timeout = 15
    p.connection_attempts = 3
    p.retry_delay = 0.5
    return p


# Connections opened by the test thread itself; conftest.py closes any that a
# failing test left open. (Consumer threads close their own connections.)
MAIN_CONNECTIONS = []


def connect():
    conn = pika.BlockingConnection(params())
    if threading.current_thread() is threading.main_thread():
        MAIN_CONNECTIONS.append(conn)
    return conn


def close_main_connections():
    while MAIN_CONNECTIONS:
        conn = MAIN_CONNECTIONS.pop()
        try:
            if conn.is_open:
                conn.close()
        except Exception:
            pass


# Queues / exchanges created by the current test; conftest.py deletes them
# after each test (also when it failed half way).
CREATED = []


def unique(name, kind="queue"):
    """Name unique per test run, so reruns and parallel runs do not interfere.
    The queue/exchange is deleted after the test."""
    full = f"interop-py-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    CREATED.append((kind, full))
    return full


def delete_created():
    if not CREATED:
        return
    items = list(CREATED)
    CREATED.clear()
    try:
        conn = connect()
    except Exception:
        return
    try:
        for kind, name in items:
            try:
                ch = conn.channel()
                if kind == "queue":
                    ch.queue_delete(queue=name)
                else:
                    ch.exchange_delete(exchange=name)
                ch.close()
            except Exception:
                pass
    finally:
        if conn.is_open:
            conn.close()


def wait_until(predicate, timeout=WAIT, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@dataclass
class Received:
    body: bytes
    routing_key: str
    exchange: str
    redelivered: bool
    properties: pika.BasicProperties


class Consumer(threading.Thread):
    """A consumer with its own connection, running in a background thread.

    setup(channel) declares whatever it needs and returns the queue name to
    consume from. work(body) is called for each delivery before it is acked
    (manual ack mode) -- used to simulate slow tasks.
    """

    def __init__(self, name, setup, *, auto_ack=True, prefetch=None, work=None):
        super().__init__(daemon=True, name=name)
        self._setup = setup
        self.auto_ack = auto_ack
        self.prefetch = prefetch
        self._work = work
        self.messages = []
        self.acked = 0
        self.queue = None
        self.error = None
        self.ready = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def run(self):
        conn = None
        try:
            conn = connect()
            ch = conn.channel()
            if self.prefetch is not None:
                ch.basic_qos(prefetch_count=self.prefetch)
            self.queue = self._setup(ch)
            ch.basic_consume(self.queue, self._on_message, auto_ack=self.auto_ack)
            self.ready.set()
            while not self._stopping.is_set():
                conn.process_data_events(time_limit=0.05)
        except BaseException as e:  # reported to the test thread
            self.error = e
            self.ready.set()
        finally:
            if conn is not None and conn.is_open:
                try:
                    conn.close()
                except Exception:
                    pass

    def _on_message(self, ch, method, properties, body):
        with self._lock:
            self.messages.append(
                Received(body, method.routing_key, method.exchange,
                         method.redelivered, properties))
        if self._work is not None:
            self._work(body)
        if not self.auto_ack:
            ch.basic_ack(delivery_tag=method.delivery_tag)
            with self._lock:
                self.acked += 1

    def start_and_wait(self, timeout=WAIT):
        self.start()
        assert self.ready.wait(timeout), f"consumer {self.name} did not get ready"
        if self.error is not None:
            raise AssertionError(f"consumer {self.name} failed: {self.error!r}") from self.error
        return self

    def stop(self, timeout=WAIT):
        self._stopping.set()
        self.join(timeout)
        assert not self.is_alive(), f"consumer {self.name} did not stop"
        if self.error is not None:
            raise AssertionError(f"consumer {self.name} failed: {self.error!r}") from self.error

    def count(self):
        with self._lock:
            return len(self.messages)

    def bodies(self):
        with self._lock:
            return [m.body for m in self.messages]

    def received(self):
        with self._lock:
            return list(self.messages)


def stop_all(*consumers):
    errors = []
    for c in consumers:
        try:
            c.stop()
        except AssertionError as e:
            errors.append(e)
    if errors:
        raise errors[0]


def queue_message_count(channel, queue):
    return channel.queue_declare(queue=queue, passive=True).method.message_count


class Child:
    """A helper Python process (same interpreter, same AMQP_URL) whose stdout
    lines can be read with a timeout."""

    def __init__(self, code, *args):
        import queue
        env = dict(os.environ, AMQP_URL=AMQP_URL,
                   PYTHONPATH=os.path.dirname(os.path.abspath(__file__)))
        self.proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines = queue.Queue()
        self.output = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def readline(self, timeout=WAIT):
        import queue
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"child printed nothing for {timeout}s; output: {self.output}")
        assert line is not None, f"child exited early; output: {''.join(self.output)}"
        return line

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(WAIT)


def queue_state(conn, queue):
    """Passive declare on a throw-away channel of conn.

    Returns "ok", "missing" (404 NOT_FOUND) or "locked" (405 RESOURCE_LOCKED:
    exclusive queue owned by another connection).
    """
    import pika.exceptions
    ch = conn.channel()
    try:
        ch.queue_declare(queue=queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker as e:
        if e.reply_code == 404:
            return "missing"
        if e.reply_code == 405:
            return "locked"
        raise
    ch.close()
    return "ok"


def check_routing(exchange_type, name, bindings, published, expected):
    """Tutorials 4/5: one subscriber per entry of `bindings` (name -> binding
    keys, each on an exclusive server-named queue); publish one message per
    routing key in `published` and assert that each subscriber received
    exactly the messages of `expected[name]` (routing keys), in order, once."""
    import time
    exchange = unique(name, kind="exchange")
    conn = connect()
    ch = conn.channel()
    ch.exchange_declare(exchange=exchange, exchange_type=exchange_type)

    def subscriber(keys):
        def setup(sch):
            sch.exchange_declare(exchange=exchange, exchange_type=exchange_type)
            queue = sch.queue_declare(queue="", exclusive=True).method.queue
            for key in keys:
                sch.queue_bind(exchange=exchange, queue=queue, routing_key=key)
            return queue
        return setup

    subs = {n: Consumer(n, subscriber(keys)).start_and_wait() for n, keys in bindings.items()}
    try:
        bodies = {}
        for i, key in enumerate(published):
            body = f"{key} #{i}".encode()
            bodies.setdefault(key, []).append(body)
            ch.basic_publish(exchange=exchange, routing_key=key, body=body)

        def want(n):
            out, seen = [], {}
            for key in published:
                if key in expected[n]:
                    k = seen.get(key, 0)
                    seen[key] = k + 1
                    out.append(bodies[key][k])
            return out

        wanted = {n: want(n) for n in bindings}
        assert wait_until(lambda: all(subs[n].count() >= len(wanted[n]) for n in subs)), \
            {n: (subs[n].bodies(), wanted[n]) for n in subs}
        time.sleep(GRACE)
        for n, s in subs.items():
            got = s.received()
            assert [m.body for m in got] == wanted[n], \
                f"subscriber {n} (bindings {bindings[n]}) got {[m.body for m in got]}, " \
                f"expected {wanted[n]}"
            for m in got:
                assert m.exchange == exchange
                assert m.body.decode().startswith(m.routing_key + " #")
    finally:
        stop_all(*subs.values())
        conn.close()
