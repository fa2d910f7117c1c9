"""Celery's transport: kombu (over py-amqp, a second Python AMQP client) against the
broker -- SimpleQueue, a topic exchange with Producer/Consumer, acks and requeues, and
publisher confirms (`confirm_publish`)."""

import kombu
import pytest

from amqp_helpers import AMQP_URL, unique

TIMEOUT = 10


def test_simple_queue_round_trip_keeps_payload_headers_and_order():
    name = unique("kombu-simple")
    with kombu.Connection(AMQP_URL) as conn:
        q = conn.SimpleQueue(name)
        for i in range(5):
            q.put({"n": i, "text": "héllo"}, headers={"task": f"t{i}"}, serializer="json")
        got = []
        for _ in range(5):
            m = q.get(block=True, timeout=TIMEOUT)
            got.append((m.payload, m.headers.get("task"), m.delivery_info["redelivered"]))
            m.ack()
        assert got == [({"n": i, "text": "héllo"}, f"t{i}", False) for i in range(5)]
        with pytest.raises(q.Empty):
            q.get(block=True, timeout=0.3)
        q.close()


def test_topic_exchange_producer_consumer_with_ack_and_requeue():
    xname = unique("kombu-topic", kind="exchange")
    qname = unique("kombu-tasks")
    exchange = kombu.Exchange(xname, type="topic", durable=True)
    queue = kombu.Queue(qname, exchange, routing_key="tasks.#", durable=True)
    with kombu.Connection(AMQP_URL) as conn:
        producer = conn.Producer(serializer="json")
        for key, n in [("tasks.a", 1), ("other.b", 2), ("tasks.c.d", 3)]:
            producer.publish({"n": n}, exchange=exchange, routing_key=key, declare=[queue], delivery_mode=2)
        seen = []

        def on_message(body, message):
            seen.append((body["n"], message.delivery_info["redelivered"]))
            # The first delivery of n=1 goes back to the queue once.
            if body["n"] == 1 and not message.delivery_info["redelivered"]:
                message.requeue()
            else:
                message.ack()

        with conn.Consumer(queue, callbacks=[on_message], prefetch_count=1):
            while len(seen) < 3:
                conn.drain_events(timeout=TIMEOUT)
        assert seen == [(1, False), (1, True), (3, False)]
        with conn.channel() as ch:
            _, count, _ = ch.queue_declare(qname, passive=True)
            assert count == 0


def test_confirm_publish_acks_every_message():
    name = unique("kombu-confirm")
    with kombu.Connection(AMQP_URL, transport_options={"confirm_publish": True}) as conn:
        queue = kombu.Queue(name)
        producer = conn.Producer()
        for i in range(50):
            # With confirm_publish, publish returns only after the broker's ack.
            producer.publish({"i": i}, routing_key=name, declare=[queue], serializer="json")
        with conn.channel() as ch:
            _, count, _ = ch.queue_declare(name, passive=True)
            assert count == 50
