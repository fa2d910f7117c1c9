"""Tutorial 3: publish/subscribe -- fanout exchange, each subscriber with an
exclusive server-named queue; every subscriber gets every message once."""

import time

from amqp_helpers import (GRACE, Consumer, connect, queue_state, stop_all, unique,
                          wait_until)


def subscriber(exchange):
    def setup(ch):
        ch.exchange_declare(exchange=exchange, exchange_type="fanout")
        result = ch.queue_declare(queue="", exclusive=True)
        queue = result.method.queue
        assert queue, "server did not generate a queue name"
        ch.queue_bind(exchange=exchange, queue=queue)
        return queue
    return setup


def test_fanout_delivers_every_message_to_every_subscriber():
    exchange = unique("logs", kind="exchange")
    conn = connect()
    ch = conn.channel()
    ch.exchange_declare(exchange=exchange, exchange_type="fanout")
    # With no queue bound yet the message is simply dropped.
    ch.basic_publish(exchange=exchange, routing_key="", body=b"lost: nobody listening")

    subs = [Consumer(f"receive_logs{i}", subscriber(exchange)).start_and_wait()
            for i in (1, 2, 3)]
    try:
        names = [s.queue for s in subs]
        assert len(set(names)) == 3, f"server-named queues not distinct: {names}"

        # fanout ignores the routing key
        logs = [f"log line {i}".encode() for i in range(25)]
        for i, body in enumerate(logs):
            ch.basic_publish(exchange=exchange, routing_key=f"ignored.{i % 4}", body=body)

        assert wait_until(lambda: all(s.count() >= len(logs) for s in subs)), \
            f"counts {[s.count() for s in subs]}, expected {len(logs)} each"
        time.sleep(GRACE)
        for s in subs:
            got = s.received()
            assert [m.body for m in got] == logs, f"{s.name} got wrong/duplicate/unordered logs"
            assert all(m.exchange == exchange for m in got)
            assert [m.routing_key for m in got] == [f"ignored.{i % 4}" for i in range(len(logs))]

        # A subscriber that goes away stops receiving; the others keep going.
        subs[2].stop()
        ch.basic_publish(exchange=exchange, routing_key="", body=b"after one left")
        assert wait_until(lambda: all(s.count() >= len(logs) + 1 for s in subs[:2]))
        time.sleep(GRACE)
        for s in subs[:2]:
            assert s.bodies() == logs + [b"after one left"]
        assert subs[2].bodies() == logs
    finally:
        stop_all(*subs)
        conn.close()


def test_exclusive_queue_deleted_when_subscriber_disconnects():
    exchange = unique("logs", kind="exchange")
    sub = Consumer("receive_logs", subscriber(exchange)).start_and_wait()
    queue = sub.queue
    conn = connect()
    try:
        # exclusive: other connections may not even passively declare it
        assert queue_state(conn, queue) == "locked"
        sub.stop()   # closes its connection -> exclusive queue must go away
        assert wait_until(lambda: queue_state(conn, queue) == "missing", 5), \
            f"exclusive queue {queue} survived its connection"
    finally:
        sub.stop()
        conn.close()
