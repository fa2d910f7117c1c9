"""RabbitMQ's queue extensions, as RabbitMQ 3.13 implements them for AMQP 0-9-1
clients: dead-lettering (x-dead-letter-exchange / x-dead-letter-routing-key) on
reject, on expiry and on overflow, with the `x-death` history and the
x-first-death-* / x-last-death-* headers; queue TTL (x-message-ttl) and
per-message TTL (`expiration`); length limits (x-max-length, x-max-length-bytes,
x-overflow); priority queues (x-max-priority); and argument validation (406).

The same file runs against a real RabbitMQ; the x-last-death-* headers only
exist since 3.13, so those checks are skipped on an older RabbitMQ.
"""

import datetime
import re
import time

import pika
import pika.exceptions
import pytest

from amqp_helpers import (GRACE, WAIT, Consumer, connect, queue_message_count, queue_state,
                          unique, wait_until)

# Keys of one x-death entry (RabbitMQ 3.13 and earlier alike); original-expiration
# only when the message had an `expiration` property.
X_DEATH_KEYS = {"count", "reason", "queue", "time", "exchange", "routing-keys"}


# ---------------------------------------------------------------- helpers
def server_version(conn):
    """(product, version tuple) from connection.start's server-properties."""
    props = conn._impl.server_properties or {}

    def text(v):
        return v.decode() if isinstance(v, bytes) else (v or "")

    product = text(props.get("product"))
    version = tuple(int(p) for p in re.findall(r"\d+", text(props.get("version")))[:3])
    return product, version


def has_last_death_headers(conn):
    """x-last-death-{reason,queue,exchange} were added in RabbitMQ 3.13."""
    product, version = server_version(conn)
    return not (product == "RabbitMQ" and version < (3, 13))


def declare_dlx(ch, name="dlx", exchange_type="fanout", binding_key=""):
    """A dead-letter exchange with one queue bound to it; returns (exchange, queue)."""
    dlx = unique(name, kind="exchange")
    dlq = unique(name + "-q")
    ch.exchange_declare(exchange=dlx, exchange_type=exchange_type)
    ch.queue_declare(queue=dlq)
    ch.queue_bind(queue=dlq, exchange=dlx, routing_key=binding_key)
    return dlx, dlq


def collect(ch, queue, n, timeout=min(WAIT, 5)):
    """Consume (manual ack) until n messages arrived or timeout; returns a list
    of (method, properties, body, monotonic arrival time). Afterwards, checks
    that nothing else shows up in the queue."""
    got = []
    deadline = time.monotonic() + timeout
    for method, props, body in ch.consume(queue, inactivity_timeout=0.02):
        if method is not None:
            got.append((method, props, body, time.monotonic()))
            ch.basic_ack(method.delivery_tag)
            if len(got) >= n:
                break
        if time.monotonic() > deadline:
            break
    ch.cancel()
    assert len(got) == n, f"{len(got)} of {n} messages arrived in {queue}: " \
                          f"{[g[2] for g in got]}"
    time.sleep(GRACE)
    assert queue_message_count(ch, queue) == 0, f"extra messages in {queue}"
    return got


def get(ch, queue, timeout=min(WAIT, 5)):
    """basic_get (manual ack) with polling; returns (method, properties, body)."""
    deadline = time.monotonic() + timeout
    while True:
        method, props, body = ch.basic_get(queue, auto_ack=False)
        if method is not None:
            return method, props, body
        assert time.monotonic() < deadline, f"nothing arrived in {queue} within {timeout}s"
        time.sleep(0.01)


def get_all(ch, queue):
    """Drain a queue with basic_get (auto ack); returns the bodies."""
    bodies = []
    while True:
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return bodies
        bodies.append(body)


def assert_death(entry, *, queue, reason, exchange, routing_keys, count=1,
                 original_expiration=None):
    want_keys = set(X_DEATH_KEYS)
    if original_expiration is not None:
        want_keys.add("original-expiration")
    assert set(entry) == want_keys, f"x-death entry keys {sorted(entry)}"
    assert entry["queue"] == queue
    assert entry["reason"] == reason
    assert entry["exchange"] == exchange
    assert entry["routing-keys"] == routing_keys
    assert entry["count"] == count
    assert isinstance(entry["time"], datetime.datetime), entry["time"]
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - entry["time"]).total_seconds()) < 30, entry["time"]
    if original_expiration is not None:
        assert entry["original-expiration"] == original_expiration


def assert_first_last(conn, headers, *, first, last):
    """first/last: (reason, queue, exchange)."""
    for prefix, (reason, queue, exchange) in (("x-first-death", first), ("x-last-death", last)):
        if prefix == "x-last-death" and not has_last_death_headers(conn):
            assert f"{prefix}-reason" not in headers
            continue
        assert headers.get(f"{prefix}-reason") == reason, headers
        assert headers.get(f"{prefix}-queue") == queue, headers
        assert headers.get(f"{prefix}-exchange") == exchange, headers


# ---------------------------------------------------------------- 1. reject
def test_reject_dead_letters_with_x_death_and_dead_letter_routing_key():
    conn = connect()
    ch = conn.channel()
    dlx, dlq = declare_dlx(ch, "dlx-reject", exchange_type="direct", binding_key="dead")
    orders = unique("orders", kind="exchange")
    src = unique("orders-q")
    ch.exchange_declare(exchange=orders, exchange_type="direct")
    ch.queue_declare(queue=src, arguments={"x-dead-letter-exchange": dlx,
                                           "x-dead-letter-routing-key": "dead"})
    ch.queue_bind(queue=src, exchange=orders, routing_key="order.created")
    props = pika.BasicProperties(content_type="text/plain", message_id="m-1",
                                 delivery_mode=pika.DeliveryMode.Persistent,
                                 headers={"app": "shop", "n": 7})
    ch.basic_publish(exchange=orders, routing_key="order.created", body=b"order 1",
                     properties=props)

    # requeue=True does not dead-letter: the message comes back, redelivered
    method, _, _ = get(ch, src)
    ch.basic_reject(method.delivery_tag, requeue=True)
    method, _, body = get(ch, src)
    assert method.redelivered is True and body == b"order 1"
    ch.basic_reject(method.delivery_tag, requeue=False)

    [(dmethod, dprops, dbody, _)] = collect(ch, dlq, 1)
    assert dbody == b"order 1"
    assert dmethod.exchange == dlx
    assert dmethod.routing_key == "dead"
    assert dmethod.redelivered is False
    # the message itself is unchanged apart from the death headers
    assert dprops.content_type == "text/plain"
    assert dprops.message_id == "m-1"
    assert dprops.delivery_mode == 2
    h = dprops.headers
    assert h["app"] == "shop" and h["n"] == 7
    assert isinstance(h["x-death"], list) and len(h["x-death"]) == 1, h
    assert_death(h["x-death"][0], queue=src, reason="rejected", exchange=orders,
                 routing_keys=["order.created"])
    assert_first_last(conn, h, first=("rejected", src, orders), last=("rejected", src, orders))
    assert queue_message_count(ch, src) == 0


def test_nack_without_requeue_keeps_the_routing_key_when_no_dead_letter_routing_key():
    conn = connect()
    ch = conn.channel()
    dlx, dlq = declare_dlx(ch, "dlx-nack", exchange_type="direct", binding_key="task.a")
    # a second queue on the DLX under another key must get nothing
    other = unique("dlx-nack-other")
    ch.queue_declare(queue=other)
    ch.queue_bind(queue=other, exchange=dlx, routing_key="dead")
    src = unique("nack-src")
    ch.queue_declare(queue=src, arguments={"x-dead-letter-exchange": dlx})
    ch.queue_bind(queue=src, exchange="amq.direct", routing_key="task.a")
    for i in range(3):
        ch.basic_publish(exchange="amq.direct", routing_key="task.a", body=f"t{i}".encode())
    assert wait_until(lambda: queue_message_count(ch, src) == 3, 5)

    tags = [get(ch, src)[0].delivery_tag for _ in range(3)]
    ch.basic_nack(tags[-1], multiple=True, requeue=False)

    got = collect(ch, dlq, 3)
    assert [g[2] for g in got] == [b"t0", b"t1", b"t2"]
    for method, props, _, _ in got:
        assert method.exchange == dlx
        assert method.routing_key == "task.a"
        assert len(props.headers["x-death"]) == 1
        assert_death(props.headers["x-death"][0], queue=src, reason="rejected",
                     exchange="amq.direct", routing_keys=["task.a"])
        assert_first_last(conn, props.headers, first=("rejected", src, "amq.direct"),
                          last=("rejected", src, "amq.direct"))
    assert queue_message_count(ch, other) == 0
    assert queue_message_count(ch, src) == 0


def test_rejected_message_loses_its_expiration_and_records_it():
    """Any dead-lettering (not only expiry) removes the `expiration` property and
    records it as original-expiration, so the copy does not expire again."""
    conn = connect()
    ch = conn.channel()
    dlx, dlq = declare_dlx(ch, "dlx-reject-exp")
    src = unique("reject-exp")
    ch.queue_declare(queue=src, arguments={"x-dead-letter-exchange": dlx})
    ch.basic_publish(exchange="", routing_key=src, body=b"short-lived",
                     properties=pika.BasicProperties(expiration="60000", priority=3))
    method, props, _ = get(ch, src)
    assert props.expiration == "60000"
    ch.basic_reject(method.delivery_tag, requeue=False)
    [(_, dprops, _, _)] = collect(ch, dlq, 1)
    assert dprops.expiration is None
    assert dprops.priority == 3
    [death] = dprops.headers["x-death"]
    assert_death(death, queue=src, reason="rejected", exchange="", routing_keys=[src],
                 original_expiration="60000")


def test_retry_loop_counts_deaths_per_queue_and_reason():
    """The usual retry pattern: work queue -> (reject) -> retry queue with a TTL ->
    (expired) -> back to the work queue. A cycle with a rejection in it is allowed;
    x-death holds one entry per (queue, reason), most recent first, with counts."""
    conn = connect()
    ch = conn.channel()
    retry_x = unique("retry-x", kind="exchange")
    work_x = unique("work-x", kind="exchange")
    work = unique("work")
    retry = unique("retry")
    ch.exchange_declare(exchange=retry_x, exchange_type="fanout")
    ch.exchange_declare(exchange=work_x, exchange_type="fanout")
    ch.queue_declare(queue=work, arguments={"x-dead-letter-exchange": retry_x})
    ch.queue_declare(queue=retry, arguments={"x-dead-letter-exchange": work_x,
                                             "x-message-ttl": 50})
    ch.queue_bind(queue=work, exchange=work_x)
    ch.queue_bind(queue=retry, exchange=retry_x)
    ch.basic_publish(exchange="", routing_key=work, body=b"job")

    method, props, _ = get(ch, work)
    assert props.headers is None or "x-death" not in props.headers
    ch.basic_reject(method.delivery_tag, requeue=False)

    # back from the retry queue (expired there without anyone touching it)
    method, props, body = get(ch, work)
    assert body == b"job"
    assert method.exchange == work_x and method.routing_key == work
    deaths = props.headers["x-death"]
    assert [(d["queue"], d["reason"]) for d in deaths] == [(retry, "expired"), (work, "rejected")]
    assert_death(deaths[0], queue=retry, reason="expired", exchange=retry_x, routing_keys=[work])
    assert_death(deaths[1], queue=work, reason="rejected", exchange="", routing_keys=[work])
    assert_first_last(conn, props.headers, first=("rejected", work, ""),
                      last=("expired", retry, retry_x))
    ch.basic_reject(method.delivery_tag, requeue=False)

    method, props, body = get(ch, work)
    deaths = props.headers["x-death"]
    assert [(d["queue"], d["reason"], d["count"]) for d in deaths] == \
        [(retry, "expired", 2), (work, "rejected", 2)]
    assert_death(deaths[0], queue=retry, reason="expired", exchange=retry_x,
                 routing_keys=[work], count=2)
    assert_death(deaths[1], queue=work, reason="rejected", exchange="",
                 routing_keys=[work], count=2)
    assert_first_last(conn, props.headers, first=("rejected", work, ""),
                      last=("expired", retry, retry_x))
    ch.basic_ack(method.delivery_tag)
    assert queue_message_count(ch, retry) == 0


def test_fully_automatic_dead_letter_cycle_is_dropped():
    """A message that expires and would be dead-lettered back into the queue it
    expired from (no rejection in the cycle) is not: it goes only to the other
    queues bound to the dead-letter exchange."""
    conn = connect()
    ch = conn.channel()
    dlx = unique("cycle-x", kind="exchange")
    ch.exchange_declare(exchange=dlx, exchange_type="fanout")
    src = unique("cycle-src")
    side = unique("cycle-side")
    ch.queue_declare(queue=src, arguments={"x-dead-letter-exchange": dlx,
                                           "x-message-ttl": 50})
    ch.queue_declare(queue=side)
    ch.queue_bind(queue=src, exchange=dlx)
    ch.queue_bind(queue=side, exchange=dlx)
    ch.basic_publish(exchange="", routing_key=src, body=b"round and round")

    [(_, props, body, _)] = collect(ch, side, 1)
    assert body == b"round and round"
    assert len(props.headers["x-death"]) == 1
    assert_death(props.headers["x-death"][0], queue=src, reason="expired", exchange="",
                 routing_keys=[src])
    time.sleep(0.2)
    assert queue_message_count(ch, src) == 0


def test_dead_letter_via_default_exchange_with_dead_letter_routing_key():
    conn = connect()
    ch = conn.channel()
    dlq = unique("dlq-default-x")
    src = unique("src-default-x")
    ch.queue_declare(queue=dlq)
    ch.queue_declare(queue=src, arguments={"x-dead-letter-exchange": "",
                                           "x-dead-letter-routing-key": dlq})
    ch.basic_publish(exchange="", routing_key=src, body=b"to the default exchange")
    method, _, _ = get(ch, src)
    ch.basic_reject(method.delivery_tag, requeue=False)
    [(dmethod, props, body, _)] = collect(ch, dlq, 1)
    assert body == b"to the default exchange"
    assert dmethod.exchange == "" and dmethod.routing_key == dlq
    [death] = props.headers["x-death"]
    assert_death(death, queue=src, reason="rejected", exchange="", routing_keys=[src])


def test_dead_letter_history_has_cc_keys_but_not_bcc():
    """Sender-selected distribution: CC/BCC headers add routing keys; x-death's
    routing-keys include the CC keys but not the BCC ones, and the BCC header never
    reaches a consumer. Dead-lettering routes with all keys (here only the CC key k3
    is bound on the dead-letter exchange)."""
    conn = connect()
    ch = conn.channel()
    dlx, dlq = declare_dlx(ch, "dlx-cc", exchange_type="direct", binding_key="k3")
    src = unique("cc-src")
    ch.queue_declare(queue=src, arguments={"x-dead-letter-exchange": dlx})
    ch.queue_bind(queue=src, exchange="amq.direct", routing_key="k1")
    ch.basic_publish(exchange="amq.direct", routing_key="k1", body=b"cc",
                     properties=pika.BasicProperties(headers={"CC": ["k2", "k3"],
                                                              "BCC": ["k4"]}))
    method, props, _ = get(ch, src)
    assert props.headers.get("CC") == ["k2", "k3"]
    assert "BCC" not in props.headers, f"BCC header delivered: {props.headers}"
    ch.basic_reject(method.delivery_tag, requeue=False)

    [(dmethod, dprops, body, _)] = collect(ch, dlq, 1)
    assert body == b"cc"
    assert dmethod.exchange == dlx and dmethod.routing_key == "k1"
    [death] = dprops.headers["x-death"]
    assert_death(death, queue=src, reason="rejected", exchange="amq.direct",
                 routing_keys=["k1", "k2", "k3"])
    assert dprops.headers.get("CC") == ["k2", "k3"]
    assert "BCC" not in dprops.headers, f"BCC header delivered: {dprops.headers}"


def test_dead_letter_exchange_that_does_not_exist_drops_the_message():
    conn = connect()
    ch = conn.channel()
    src = unique("missing-dlx-src")
    missing = unique("no-such-dlx", kind="exchange")
    ch.queue_declare(queue=src, arguments={"x-dead-letter-exchange": missing})
    ch.basic_publish(exchange="", routing_key=src, body=b"nowhere to go")
    method, _, _ = get(ch, src)
    ch.basic_reject(method.delivery_tag, requeue=False)
    time.sleep(GRACE)
    assert queue_message_count(ch, src) == 0
    assert ch.is_open and conn.is_open


# ---------------------------------------------------------------- 2. expiry
def publish_and_collect_expired(ch, queue_args, expiration, *, body=b"ttl"):
    """Publish one message to a fresh queue with queue_args plus a DLX, consume only
    from the dead-letter queue; returns (properties, seconds until dead-lettered,
    source queue)."""
    dlx, dlq = declare_dlx(ch, "dlx-ttl")
    src = unique("ttl-src")
    ch.queue_declare(queue=src, arguments={"x-dead-letter-exchange": dlx, **queue_args})
    props = pika.BasicProperties(expiration=expiration, headers={"k": "v"})
    started = time.monotonic()
    ch.basic_publish(exchange="", routing_key=src, body=body, properties=props)
    [(method, dprops, dbody, arrived)] = collect(ch, dlq, 1)
    assert dbody == body
    assert method.exchange == dlx and method.routing_key == src
    assert dprops.headers["k"] == "v"
    return dprops, arrived - started, src


def test_queue_ttl_dead_letters_expired_message_without_consumer_on_source():
    conn = connect()
    ch = conn.channel()
    props, elapsed, src = publish_and_collect_expired(ch, {"x-message-ttl": 200}, None)
    assert 0.18 <= elapsed < 3, f"dead-lettered after {elapsed:.3f}s, queue TTL is 0.2s"
    assert props.expiration is None
    [death] = props.headers["x-death"]
    assert_death(death, queue=src, reason="expired", exchange="", routing_keys=[src])
    assert_first_last(conn, props.headers, first=("expired", src, ""), last=("expired", src, ""))
    assert queue_message_count(ch, src) == 0


def test_queue_ttl_shorter_than_message_expiration_wins():
    conn = connect()
    ch = conn.channel()
    props, elapsed, src = publish_and_collect_expired(ch, {"x-message-ttl": 150}, "60000")
    assert 0.13 <= elapsed < 3, f"dead-lettered after {elapsed:.3f}s, queue TTL is 0.15s"
    assert props.expiration is None, "expiration must be removed when dead-lettering"
    [death] = props.headers["x-death"]
    assert_death(death, queue=src, reason="expired", exchange="", routing_keys=[src],
                 original_expiration="60000")


def test_message_expiration_shorter_than_queue_ttl_wins():
    conn = connect()
    ch = conn.channel()
    props, elapsed, src = publish_and_collect_expired(ch, {"x-message-ttl": 60000}, "150")
    assert 0.13 <= elapsed < 3, f"dead-lettered after {elapsed:.3f}s, expiration is 0.15s"
    assert props.expiration is None
    [death] = props.headers["x-death"]
    assert_death(death, queue=src, reason="expired", exchange="", routing_keys=[src],
                 original_expiration="150")
    assert_first_last(conn, props.headers, first=("expired", src, ""), last=("expired", src, ""))


def test_message_expiration_without_queue_ttl():
    conn = connect()
    ch = conn.channel()
    props, elapsed, src = publish_and_collect_expired(ch, {}, "100")
    assert 0.08 <= elapsed < 3, f"dead-lettered after {elapsed:.3f}s, expiration is 0.1s"
    assert props.expiration is None
    [death] = props.headers["x-death"]
    assert_death(death, queue=src, reason="expired", exchange="", routing_keys=[src],
                 original_expiration="100")


def test_a_short_ttl_behind_a_long_one():
    """RabbitMQ expires (and dead-letters) messages only at the head of the queue: a
    short-lived message behind a longer-lived one waits for it. Warren expires each message
    at its own time (a documented difference): the short one leaves first."""
    conn = connect()
    ch = conn.channel()
    product, _ = server_version(conn)
    dlx, dlq = declare_dlx(ch, "dlx-head")
    src = unique("ttl-head")
    ch.queue_declare(queue=src, arguments={"x-dead-letter-exchange": dlx})
    started = time.monotonic()
    ch.basic_publish(exchange="", routing_key=src, body=b"long",
                     properties=pika.BasicProperties(expiration="400"))
    ch.basic_publish(exchange="", routing_key=src, body=b"short",
                     properties=pika.BasicProperties(expiration="50"))
    got = collect(ch, dlq, 2)
    by_body = {g[2]: g for g in got}
    if product == "RabbitMQ":
        assert [g[2] for g in got] == [b"long", b"short"]
        assert got[1][3] - started >= 0.35, "a message behind the head expired before the head"
    else:
        assert [g[2] for g in got] == [b"short", b"long"]
        assert by_body[b"short"][3] - started < 0.35, "the short TTL waited for the long one"
    assert by_body[b"long"][1].headers["x-death"][0]["original-expiration"] == "400"
    assert by_body[b"short"][1].headers["x-death"][0]["original-expiration"] == "50"
    assert all(g[1].headers["x-death"][0]["reason"] == "expired" for g in got)


def test_expired_message_is_never_delivered_and_unexpired_one_is():
    conn = connect()
    ch = conn.channel()
    src = unique("ttl-get")
    ch.queue_declare(queue=src)
    ch.basic_publish(exchange="", routing_key=src, body=b"old",
                     properties=pika.BasicProperties(expiration="100"))
    time.sleep(0.3)
    ch.basic_publish(exchange="", routing_key=src, body=b"new",
                     properties=pika.BasicProperties(expiration="60000"))
    method, props, body = get(ch, src)
    assert body == b"new"
    # a delivered message keeps its expiration property
    assert props.expiration == "60000"
    ch.basic_ack(method.delivery_tag)
    assert ch.basic_get(src, auto_ack=True)[0] is None


def test_queue_ttl_zero_expires_unless_a_consumer_takes_it_at_once():
    conn = connect()
    ch = conn.channel()
    dlx, dlq = declare_dlx(ch, "dlx-ttl0")
    src = unique("ttl0")
    ch.queue_declare(queue=src, arguments={"x-message-ttl": 0, "x-dead-letter-exchange": dlx})
    ch.basic_publish(exchange="", routing_key=src, body=b"nobody waiting")
    [(_, props, body, _)] = collect(ch, dlq, 1)
    assert body == b"nobody waiting"
    assert props.headers["x-death"][0]["reason"] == "expired"

    def setup(cch):
        return src

    consumer = Consumer("ttl0-consumer", setup).start_and_wait()
    try:
        ch.basic_publish(exchange="", routing_key=src, body=b"taken at once")
        assert wait_until(lambda: consumer.count() >= 1), "waiting consumer got nothing"
        time.sleep(GRACE)
        assert consumer.bodies() == [b"taken at once"]
    finally:
        consumer.stop()
    assert queue_message_count(ch, dlq) == 0


def test_queue_expires_when_unused():
    """x-expires: the queue is deleted (with its messages) once unused for that long;
    a (passive) declare or a basic.get counts as use and restarts the clock."""
    conn = connect()
    ch = conn.channel()
    queue = unique("x-expires")
    ch.queue_declare(queue=queue, arguments={"x-expires": 400})
    ch.basic_publish(exchange="", routing_key=queue, body=b"goes with the queue")
    for i in range(8):
        time.sleep(0.1)
        if i % 2:
            assert queue_message_count(ch, queue) == 1, "queue expired although in use"
        else:
            method, _, _ = ch.basic_get(queue, auto_ack=False)
            assert method is not None, "queue expired although in use"
            ch.basic_nack(method.delivery_tag, requeue=True)
    time.sleep(0.7)
    assert queue_state(conn, queue) == "missing", "queue still there after 0.7 s unused"


# ---------------------------------------------------------------- 3. length limits
def test_max_length_dead_letters_the_head_with_reason_maxlen():
    conn = connect()
    ch = conn.channel()
    dlx, dlq = declare_dlx(ch, "dlx-maxlen")
    src = unique("maxlen")
    ch.queue_declare(queue=src, arguments={"x-max-length": 2, "x-dead-letter-exchange": dlx})
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish(exchange="", routing_key=src, body=f"m{i}".encode())
    assert queue_message_count(ch, src) == 2

    got = collect(ch, dlq, 3)
    assert [g[2] for g in got] == [b"m0", b"m1", b"m2"]
    for _, props, _, _ in got:
        [death] = props.headers["x-death"]
        assert_death(death, queue=src, reason="maxlen", exchange="", routing_keys=[src])
        assert_first_last(conn, props.headers, first=("maxlen", src, ""), last=("maxlen", src, ""))
    assert get_all(ch, src) == [b"m3", b"m4"]


def test_max_length_counts_ready_messages_and_applies_on_requeue():
    """Unacked messages do not count against x-max-length; when one is requeued into
    a full queue, the head (here the requeued message itself) is dead-lettered."""
    conn = connect()
    ch = conn.channel()
    dlx, dlq = declare_dlx(ch, "dlx-maxlen-requeue")
    src = unique("maxlen-requeue")
    ch.queue_declare(queue=src, arguments={"x-max-length": 2, "x-dead-letter-exchange": dlx})
    ch.confirm_delivery()
    ch.basic_publish(exchange="", routing_key=src, body=b"a")
    ch.basic_publish(exchange="", routing_key=src, body=b"b")
    method, _, body = get(ch, src)
    assert body == b"a"
    ch.basic_publish(exchange="", routing_key=src, body=b"c")
    assert queue_message_count(ch, src) == 2
    time.sleep(GRACE)
    assert queue_message_count(ch, dlq) == 0, "an unacked message counted against the limit"

    ch.basic_nack(method.delivery_tag, requeue=True)
    [(_, props, body, _)] = collect(ch, dlq, 1)
    assert body == b"a"
    [death] = props.headers["x-death"]
    assert_death(death, queue=src, reason="maxlen", exchange="", routing_keys=[src])
    assert get_all(ch, src) == [b"b", b"c"]


def test_max_length_bytes_counts_body_bytes():
    conn = connect()
    ch = conn.channel()
    dlx, dlq = declare_dlx(ch, "dlx-maxbytes")
    src = unique("maxbytes")
    ch.queue_declare(queue=src, arguments={"x-max-length-bytes": 10,
                                           "x-dead-letter-exchange": dlx})
    ch.confirm_delivery()
    for body in (b"aaaa", b"bbbb", b"cccc", b"dddd"):
        ch.basic_publish(exchange="", routing_key=src, body=body,
                         properties=pika.BasicProperties(headers={"pad": "x" * 100}))
    got = collect(ch, dlq, 2)
    assert [g[2] for g in got] == [b"aaaa", b"bbbb"]
    assert all(g[1].headers["x-death"][0]["reason"] == "maxlen" for g in got)
    assert get_all(ch, src) == [b"cccc", b"dddd"]


def test_overflow_reject_publish_nacks_the_publish_over_the_limit():
    conn = connect()
    ch = conn.channel()
    dlx, dlq = declare_dlx(ch, "dlx-rejpub")
    src = unique("reject-publish")
    ch.queue_declare(queue=src, arguments={"x-max-length": 2, "x-overflow": "reject-publish",
                                           "x-dead-letter-exchange": dlx})
    ch.confirm_delivery()
    ch.basic_publish(exchange="", routing_key=src, body=b"m0")
    ch.basic_publish(exchange="", routing_key=src, body=b"m1")
    for body in (b"m2", b"m3"):
        with pytest.raises(pika.exceptions.NackError):
            ch.basic_publish(exchange="", routing_key=src, body=body)
    assert queue_message_count(ch, src) == 2
    # room again after one is consumed
    method, _, body = get(ch, src)
    assert body == b"m0"
    ch.basic_ack(method.delivery_tag)
    ch.basic_publish(exchange="", routing_key=src, body=b"m4")
    assert get_all(ch, src) == [b"m1", b"m4"]
    # reject-publish does not dead-letter
    time.sleep(GRACE)
    assert queue_message_count(ch, dlq) == 0


def test_overflow_reject_publish_dlx_nacks_and_dead_letters():
    conn = connect()
    ch = conn.channel()
    dlx, dlq = declare_dlx(ch, "dlx-rejpubdlx")
    src = unique("reject-publish-dlx")
    ch.queue_declare(queue=src, arguments={"x-max-length": 1,
                                           "x-overflow": "reject-publish-dlx",
                                           "x-dead-letter-exchange": dlx})
    ch.confirm_delivery()
    ch.basic_publish(exchange="", routing_key=src, body=b"kept")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish(exchange="", routing_key=src, body=b"refused")
    [(_, props, body, _)] = collect(ch, dlq, 1)
    assert body == b"refused"
    [death] = props.headers["x-death"]
    assert_death(death, queue=src, reason="maxlen", exchange="", routing_keys=[src])
    assert get_all(ch, src) == [b"kept"]


# ---------------------------------------------------------------- 4. bad expiration
@pytest.mark.parametrize("expiration", ["abc", "-1"])
def test_invalid_message_expiration_closes_the_channel_406(expiration):
    conn = connect()
    ch = conn.channel()
    src = unique("bad-expiration")
    ch.queue_declare(queue=src)
    ch.basic_publish(exchange="", routing_key=src, body=b"x",
                     properties=pika.BasicProperties(expiration=expiration))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(queue=src, passive=True)
    assert e.value.reply_code == 406, e.value
    assert "expiration" in e.value.reply_text, e.value
    # only the channel is closed; nothing was enqueued
    assert conn.is_open
    assert queue_message_count(conn.channel(), src) == 0


def test_invalid_message_expiration_in_confirm_mode_closes_the_channel_406():
    conn = connect()
    ch = conn.channel()
    src = unique("bad-expiration-confirm")
    ch.queue_declare(queue=src)
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.basic_publish(exchange="", routing_key=src, body=b"x",
                         properties=pika.BasicProperties(expiration="abc"))
    assert e.value.reply_code == 406, e.value
    assert queue_message_count(conn.channel(), src) == 0


# ---------------------------------------------------------------- 5. priorities
# (priority, body); None = no priority property (counts as 0); 15 > x-max-priority
# counts as 10
PRIORITIZED = [(None, b"n-a"), (1, b"p1-a"), (10, b"p10-a"), (5, b"p5-a"), (0, b"p0-b"),
               (5, b"p5-b"), (15, b"p15"), (10, b"p10-b"), (1, b"p1-b"), (None, b"n-c")]
BY_PRIORITY = [b"p10-a", b"p15", b"p10-b", b"p5-a", b"p5-b", b"p1-a", b"p1-b",
               b"n-a", b"p0-b", b"n-c"]


def priority_queue(ch, max_priority=10):
    queue = unique("prio")
    ch.queue_declare(queue=queue, arguments={"x-max-priority": max_priority})
    return queue


def publish_prioritized(ch, queue, items):
    for prio, body in items:
        ch.basic_publish(exchange="", routing_key=queue, body=body,
                         properties=pika.BasicProperties(priority=prio))


def test_priority_queue_basic_get_highest_first_fifo_within_priority():
    conn = connect()
    ch = conn.channel()
    queue = priority_queue(ch)
    ch.confirm_delivery()
    publish_prioritized(ch, queue, PRIORITIZED)
    assert queue_message_count(ch, queue) == len(PRIORITIZED)
    got = []
    while True:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            break
        got.append((props.priority, body))
    assert [b for _, b in got] == BY_PRIORITY
    # the priority property arrives as published (not capped)
    assert dict((b, p) for p, b in got) == dict((b, p) for p, b in PRIORITIZED)


def test_priority_queue_consumer_with_prefetch_gets_highest_first():
    conn = connect()
    ch = conn.channel()
    queue = priority_queue(ch)
    ch.confirm_delivery()
    publish_prioritized(ch, queue, PRIORITIZED)

    def setup(cch):
        cch.queue_declare(queue=queue, arguments={"x-max-priority": 10})
        return queue

    consumer = Consumer("prio-consumer", setup, auto_ack=False, prefetch=3).start_and_wait()
    try:
        assert wait_until(lambda: consumer.acked >= len(PRIORITIZED)), consumer.bodies()
        time.sleep(GRACE)
        assert consumer.bodies() == BY_PRIORITY
    finally:
        consumer.stop()
    assert queue_message_count(ch, queue) == 0


def test_priority_queue_message_published_while_consumer_busy_jumps_ahead():
    """prefetch 1: while the consumer holds one unacked message, the queue fills up;
    after the ack the highest-priority waiting message comes next."""
    conn = connect()
    ch = conn.channel()
    queue = priority_queue(ch)
    pub = conn.channel()
    pub.confirm_delivery()
    ch.basic_qos(prefetch_count=1)
    pub.basic_publish(exchange="", routing_key=queue, body=b"first",
                      properties=pika.BasicProperties(priority=0))
    later = [(1, b"p1"), (9, b"p9-a"), (0, b"p0"), (9, b"p9-b"), (5, b"p5")]
    got = []
    for method, _props, body in ch.consume(queue, inactivity_timeout=WAIT):
        assert method is not None, f"consumer starved after {got}"
        got.append(body)
        if body == b"first":
            publish_prioritized(pub, queue, later)
            assert queue_message_count(pub, queue) == len(later)
        ch.basic_ack(method.delivery_tag)
        if len(got) == 1 + len(later):
            break
    ch.cancel()
    assert got == [b"first", b"p9-a", b"p9-b", b"p5", b"p1", b"p0"]


def test_queue_without_max_priority_ignores_priorities():
    conn = connect()
    ch = conn.channel()
    queue = unique("no-prio")
    ch.queue_declare(queue=queue)
    ch.confirm_delivery()
    publish_prioritized(ch, queue, PRIORITIZED)
    assert get_all(ch, queue) == [b for _, b in PRIORITIZED]


# ---------------------------------------------------------------- 6. bad arguments
@pytest.mark.parametrize("arguments", [
    {"x-max-length": -1},
    {"x-max-length-bytes": -1},
    {"x-message-ttl": -1},
    {"x-message-ttl": "abc"},
    {"x-expires": 0},
    {"x-max-priority": 256},
    {"x-overflow": "drop-tail"},
    {"x-queue-type": "fancy"},
    {"x-dead-letter-routing-key": "dead"},   # without x-dead-letter-exchange
], ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()))
def test_invalid_queue_argument_closes_the_channel_406(arguments):
    conn = connect()
    ch = conn.channel()
    queue = unique("bad-args")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(queue=queue, arguments=arguments)
    assert e.value.reply_code == 406, e.value
    [name] = arguments
    assert name in e.value.reply_text, e.value
    assert conn.is_open
    assert queue_state(conn, queue) == "missing"


def test_redeclare_with_different_max_length_is_406_and_keeps_the_queue():
    conn = connect()
    ch = conn.channel()
    queue = unique("inequivalent")
    ch.queue_declare(queue=queue, arguments={"x-max-length": 5})
    ch.queue_declare(queue=queue, arguments={"x-max-length": 5})   # same: fine
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(queue=queue, arguments={"x-max-length": 6})
    assert e.value.reply_code == 406, e.value
    assert "x-max-length" in e.value.reply_text, e.value
    assert queue_state(conn, queue) == "ok"
