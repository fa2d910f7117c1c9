"""Tutorial 1: "Hello World!" -- one producer, one consumer, default exchange."""

import time

from amqp_helpers import GRACE, Consumer, connect, queue_message_count, unique, wait_until


def declare(queue):
    def setup(ch):
        ch.queue_declare(queue=queue)
        return queue
    return setup


def test_hello_world_consumer_first():
    queue = unique("hello")
    receiver = Consumer("receive", declare(queue)).start_and_wait()
    conn = connect()
    ch = conn.channel()
    try:
        ch.queue_declare(queue=queue)
        ch.basic_publish(exchange="", routing_key=queue, body=b"Hello World!")

        assert wait_until(lambda: receiver.count() >= 1), "message never arrived"
        time.sleep(GRACE)
        got = receiver.received()
        assert [m.body for m in got] == [b"Hello World!"]
        assert got[0].exchange == ""
        assert got[0].routing_key == queue
        assert got[0].redelivered is False
        receiver.stop()
        # auto-ack: nothing may be left (or requeued) after the consumer quit
        assert queue_message_count(ch, queue) == 0
    finally:
        receiver.stop()
        conn.close()


def test_hello_world_sender_first():
    """send.py run before receive.py: the message waits in the queue."""
    queue = unique("hello")
    conn = connect()
    ch = conn.channel()
    receiver = None
    try:
        ch.queue_declare(queue=queue)
        ch.basic_publish(exchange="", routing_key=queue, body=b"Hello World!")
        assert wait_until(lambda: queue_message_count(ch, queue) == 1, 5)

        receiver = Consumer("receive", declare(queue)).start_and_wait()
        assert wait_until(lambda: receiver.count() >= 1), "queued message never delivered"
        time.sleep(GRACE)
        assert receiver.bodies() == [b"Hello World!"]
        receiver.stop()
        assert queue_message_count(ch, queue) == 0
    finally:
        if receiver is not None:
            receiver.stop()
        conn.close()
