"""Warren's fault injection as real clients see it, one fresh broker per test.

Each test starts its own `warren --ephemeral --port 0 --exit-on-stdin-close`
through the pytest fixture in ../fixtures/warren_pytest.py (the file users
copy), injects one fault through /api/warren/... and checks what pika or
aio-pika does about it. Needs WARREN_BIN (run.sh sets it when it starts
warren); against another broker the module is skipped.
"""

import asyncio
import os
import sys
import time

import pika
import pika.exceptions
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
from warren_pytest import start_warren, warren  # noqa: E402,F401  (warren: the fixture)

pytestmark = [
    pytest.mark.skipif(not os.environ.get("WARREN_BIN"),
                       reason="fault injection needs a Warren of its own: set WARREN_BIN "
                              "(run.sh does when it starts warren; not for an external broker)"),
    pytest.mark.timeout(40),
]

WAIT = 10  # seconds for anything that should happen promptly


def params(broker, name, **kw):
    """pika parameters for `broker`, the connection called `name` (connection_name)."""
    p = pika.URLParameters(broker.amqp_url)
    p.client_properties = {"connection_name": name}
    p.socket_timeout = 5
    p.stack_timeout = 10
    p.connection_attempts = 1
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def wait_until(pred, what, conn=None, timeout=WAIT):
    """Polls `pred` until true (pumping `conn`'s I/O meanwhile); fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        if conn is not None:
            conn.process_data_events(time_limit=0.05)
        else:
            time.sleep(0.02)


def ready_count(ch, queue):
    return ch.queue_declare(queue, passive=True).method.message_count


# ---------------------------------------------------------------- memory alarm

def test_memory_alarm_blocks_and_unblocks_a_publisher(warren):
    events = []
    conn = pika.BlockingConnection(params(warren, "alarm-publisher", blocked_connection_timeout=30))
    conn.add_on_connection_blocked_callback(lambda _c, frame: events.append(("blocked", frame.method.reason)))
    conn.add_on_connection_unblocked_callback(lambda _c, _frame: events.append(("unblocked",)))
    ch = conn.channel()
    ch.queue_declare("alarm-q")
    probe_conn = pika.BlockingConnection(params(warren, "alarm-probe"))
    probe = probe_conn.channel()

    assert warren.memory_alarm(True) is None  # 204
    ch.basic_publish("", "alarm-q", b"held back")
    wait_until(lambda: events, "connection.blocked", conn)
    assert events == [("blocked", "low on memory")]
    # the publish waits: the broker reads nothing more from the publisher
    for _ in range(5):
        conn.process_data_events(time_limit=0.05)
        assert ready_count(probe, "alarm-q") == 0

    assert warren.memory_alarm(False) is None
    wait_until(lambda: len(events) == 2, "connection.unblocked", conn)
    assert events[1] == ("unblocked",)
    wait_until(lambda: ready_count(probe, "alarm-q") == 1, "the held publish to arrive", conn)
    assert probe.basic_get("alarm-q", auto_ack=True)[2] == b"held back"
    probe_conn.close()
    conn.close()


# ---------------------------------------------------------------- close

@pytest.mark.parametrize("code, reason, expected_text", [
    (320, "maintenance window", "CONNECTION_FORCED - maintenance window"),
    (541, "simulated internal error", "INTERNAL_ERROR - simulated internal error"),
])
def test_close_with_a_chosen_code_and_reason(warren, code, reason, expected_text):
    conn = pika.BlockingConnection(params(warren, "doomed"))
    conn.channel()
    assert warren.close_connection("doomed", code, reason) == {"connections": 1}
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as err:
        wait_until(lambda: False, "connection.close", conn)
    assert (err.value.reply_code, err.value.reply_text) == (code, expected_text)
    assert conn.is_closed


def test_faults_on_unknown_names_are_404(warren):
    import urllib.error
    for call in (lambda: warren.reset_connection("nobody"),
                 lambda: warren.nack_publishes("no-such-queue", 1),
                 lambda: warren.cancel_consumers("no-such-queue")):
        with pytest.raises(urllib.error.HTTPError) as err:
            call()
        assert err.value.code == 404


# ---------------------------------------------------------------- aio-pika robust reconnects

def publish(broker, queue, body, attempts_until):
    """Publishes `body` to `queue` with a fresh pika connection, confirmed and
    mandatory (UnroutableError if the queue is not there)."""
    while True:
        try:
            conn = pika.BlockingConnection(params(broker, "publisher"))
            break
        except pika.exceptions.AMQPConnectionError:
            if time.monotonic() > attempts_until:
                raise
            time.sleep(0.05)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("", queue, body, mandatory=True)
    finally:
        conn.close()


async def robust_consumer_through(broker, fault):
    """A robust aio-pika consumer on an exclusive queue, through `fault()`:
    returns (what fault() returned, seconds until reconnected, bodies received)."""
    import aio_pika

    got = asyncio.Queue()
    reconnected = asyncio.Event()
    conn = await aio_pika.connect_robust(broker.amqp_url, reconnect_interval=0.1, timeout=5,
                                         client_properties={"connection_name": "robust"})

    async def on_reconnect(*_):
        reconnected.set()

    conn.reconnect_callbacks.add(on_reconnect)
    try:
        ch = await conn.channel()
        # exclusive: it goes away with the connection, so the robust channel
        # must declare it again (and consume from it again) after reconnecting
        q = await ch.declare_queue("robust-q", exclusive=True)

        async def on_message(message):
            got.put_nowait(message.body)

        await q.consume(on_message, no_ack=True)
        deadline = time.monotonic() + WAIT
        await asyncio.to_thread(publish, broker, "robust-q", b"before", deadline)
        assert await asyncio.wait_for(got.get(), WAIT) == b"before"

        t0 = time.monotonic()
        answer = await asyncio.to_thread(fault)
        await asyncio.wait_for(reconnected.wait(), 15)
        took = time.monotonic() - t0
        # the callback runs after the channels were restored: queue and consumer are back
        await asyncio.to_thread(publish, broker, "robust-q", b"after", time.monotonic() + WAIT)
        assert await asyncio.wait_for(got.get(), WAIT) == b"after"
        assert got.empty()
        return answer, took
    finally:
        await asyncio.wait_for(conn.close(), WAIT)


def test_aio_pika_robust_connection_survives_a_reset(warren):
    answer, _ = asyncio.run(robust_consumer_through(warren, lambda: warren.reset_connection("robust")))
    assert answer == {"connections": 1}


def test_aio_pika_robust_connection_survives_a_restart(warren):
    answer, took = asyncio.run(robust_consumer_through(warren, lambda: warren.restart(seconds=1)))
    assert answer == {"closed": 1}
    # new connections are refused for the simulated second of downtime
    assert took >= 0.9, f"reconnected after {took:.2f} s, within the 1 s of downtime"


# ---------------------------------------------------------------- freeze

def test_heartbeat_detects_a_frozen_connection(warren):
    conn = pika.BlockingConnection(params(warren, "frozen", heartbeat=1))
    conn.channel()
    assert warren.freeze_connection("frozen", 30) == {"connections": 1}
    t0 = time.monotonic()
    # pika checks every timeout + 5 s and gives up after 2 silent intervals
    with pytest.raises((pika.exceptions.AMQPHeartbeatTimeout, pika.exceptions.StreamLostError)):
        wait_until(lambda: False, "pika's heartbeat timeout", conn, timeout=25)
    assert time.monotonic() - t0 < 25
    assert conn.is_closed


# ---------------------------------------------------------------- nack-publishes

def test_confirm_publisher_gets_nacks(warren):
    conn = pika.BlockingConnection(params(warren, "confirming"))
    ch = conn.channel()
    ch.queue_declare("nacked-q")
    ch.confirm_delivery()
    assert warren.nack_publishes("nacked-q", 2) is None  # 204
    for body in (b"one", b"two"):
        with pytest.raises(pika.exceptions.NackError):  # (pika lists only returned messages)
            ch.basic_publish("", "nacked-q", body)
    ch.basic_publish("", "nacked-q", b"three")  # acked again
    # an unroutable mandatory publish is still returned, as without the fault
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish("", "no-such-queue", b"lost", mandatory=True)
    assert ready_count(ch, "nacked-q") == 1  # the nacked ones were not enqueued
    assert ch.basic_get("nacked-q", auto_ack=True)[2] == b"three"
    conn.close()


# ---------------------------------------------------------------- cancel-consumers

def test_consumer_gets_basic_cancel(warren):
    cancelled = []
    conn = pika.BlockingConnection(params(warren, "consumer"))
    ch = conn.channel()
    ch.queue_declare("cancel-q")
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    tag = ch.basic_consume("cancel-q", lambda *_: None)
    assert warren.cancel_consumers("cancel-q") == {"cancelled": 1}
    wait_until(lambda: cancelled, "basic.cancel", conn)
    assert cancelled == [tag]
    assert ch.is_open and ch.consumer_tags == []
    # the queue is still there, now without consumers
    assert ch.queue_declare("cancel-q", passive=True).method.consumer_count == 0
    conn.close()


# ---------------------------------------------------------------- delay

def test_delay_slows_every_round_trip(warren):
    conn = pika.BlockingConnection(params(warren, "slow"))
    ch = conn.channel()
    ch.queue_declare("delay-q")

    def round_trip():
        t0 = time.monotonic()
        ready_count(ch, "delay-q")
        return time.monotonic() - t0

    before = min(round_trip() for _ in range(3))
    assert warren.delay_connection("slow", 300) == {"connections": 1}
    delayed = [round_trip() for _ in range(3)]
    assert min(delayed) >= 0.3, f"round trips {delayed} with a 300 ms delay (before: {before:.3f} s)"
    assert warren.delay_connection("slow", 0) == {"connections": 1}
    ready_count(ch, "delay-q")  # a reply written before the clear may still be delayed
    after = min(round_trip() for _ in range(3))
    assert after < min(delayed), f"still slow after clearing: {after:.3f} s"
    conn.close()


# ---------------------------------------------------------------- cheap brokers

def test_a_broker_starts_and_stops_quickly():
    t0 = time.monotonic()
    for _ in range(5):
        with start_warren() as broker:
            pika.BlockingConnection(params(broker, "quick")).close()
    assert time.monotonic() - t0 < 10
