"""Tutorial 7: publisher confirms -- publishing messages individually (wait for
each confirm), in batches (wait per batch) and with asynchronous confirm
handling. Every publish must be acked exactly once, and every confirmed
message must really be in the queue."""

import time

import pika
import pika.exceptions
from pika.adapters.select_connection import SelectConnection

from amqp_helpers import WAIT, connect, params, queue_message_count, unique

PERSISTENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)


def drain(queue, expected_count):
    """Consume everything in the queue (manual ack) and return the bodies."""
    conn = connect()
    ch = conn.channel()
    try:
        assert queue_message_count(ch, queue) == expected_count
        bodies = []
        if expected_count:
            for method, props, body in ch.consume(queue, inactivity_timeout=WAIT):
                assert method is not None, f"queue ran dry after {len(bodies)} messages"
                bodies.append(body)
                ch.basic_ack(method.delivery_tag)
                if len(bodies) == expected_count:
                    break
            ch.cancel()
        assert queue_message_count(ch, queue) == 0
        return bodies
    finally:
        conn.close()


def test_publish_messages_individually():
    queue = unique("confirms_individual")
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(queue=queue, durable=True)
    ch.confirm_delivery()
    bodies = [f"individual {i}".encode() for i in range(200)]
    try:
        for body in bodies:
            # BlockingChannel in confirm mode waits for the broker's basic.ack and
            # raises NackError / UnroutableError otherwise
            ch.basic_publish(exchange="", routing_key=queue, body=body,
                             properties=PERSISTENT, mandatory=True)
    finally:
        conn.close()
    assert drain(queue, len(bodies)) == bodies


def test_unroutable_mandatory_publish_is_returned_then_confirmed():
    exchange = unique("confirms_unroutable", kind="exchange")
    conn = connect()
    ch = conn.channel()
    try:
        ch.exchange_declare(exchange=exchange, exchange_type="direct")
        ch.confirm_delivery()
        try:
            ch.basic_publish(exchange=exchange, routing_key="nobody", body=b"x",
                             mandatory=True)
            raise AssertionError("unroutable mandatory message was not returned")
        except pika.exceptions.UnroutableError as e:
            assert [m.body for m in e.messages] == [b"x"]
        # without mandatory an unroutable message is simply acked
        ch.basic_publish(exchange=exchange, routing_key="nobody", body=b"y")
    finally:
        conn.close()


class AsyncConfirmPublisher:
    """SelectConnection publisher tracking confirms by delivery tag.

    batch_size=None: publish everything at once, handle acks asynchronously.
    batch_size=k:    publish k messages, wait until all are confirmed, repeat.
    """

    def __init__(self, queue, bodies, batch_size=None, timeout=WAIT):
        self.queue = queue
        self.bodies = bodies
        self.batch_size = batch_size
        self.timeout = timeout
        self.next_index = 0
        self.seq = 0
        self.outstanding = {}       # delivery tag -> body
        self.acked = []
        self.nacked = []
        self.errors = []
        self.multiple_acks = 0
        self.max_outstanding = 0
        self.done = False
        self.connection = None
        self.channel = None

    # ---- driving
    def run(self):
        self.connection = SelectConnection(
            params(), on_open_callback=self.on_open,
            on_open_error_callback=lambda c, e: self.fail(f"open failed: {e!r}"),
            on_close_callback=lambda c, e: c.ioloop.stop())
        self.connection.ioloop.call_later(self.timeout, lambda: self.fail("timed out"))
        self.connection.ioloop.start()

    def fail(self, msg):
        self.errors.append(msg)
        self.finish()

    def finish(self):
        if self.connection.is_open:
            self.connection.close()
        else:
            self.connection.ioloop.stop()

    # ---- callbacks
    def on_open(self, conn):
        conn.channel(on_open_callback=self.on_channel)

    def on_channel(self, ch):
        self.channel = ch
        ch.add_on_close_callback(
            lambda c, reason: None if self.done else self.fail(f"channel closed: {reason!r}"))
        ch.confirm_delivery(ack_nack_callback=self.on_confirm,
                            callback=lambda _f: ch.queue_declare(
                                self.queue, durable=True, callback=self.on_declared))

    def on_declared(self, _frame):
        self.publish_some()

    def publish_some(self):
        n = len(self.bodies) - self.next_index
        if self.batch_size is not None:
            n = min(n, self.batch_size)
        for _ in range(n):
            body = self.bodies[self.next_index]
            self.next_index += 1
            self.seq += 1
            self.outstanding[self.seq] = body
            self.channel.basic_publish("", self.queue, body, PERSISTENT)
        self.max_outstanding = max(self.max_outstanding, len(self.outstanding))

    def on_confirm(self, frame):
        method = frame.method
        tag = method.delivery_tag
        if method.multiple:
            self.multiple_acks += 1
            tags = sorted(t for t in self.outstanding if t <= tag)
        else:
            tags = [tag] if tag in self.outstanding else []
        if not tags:
            self.errors.append(f"confirm for unknown/already confirmed tag {tag} "
                               f"(multiple={method.multiple})")
        target = self.acked if isinstance(method, pika.spec.Basic.Ack) else self.nacked
        for t in tags:
            target.append(self.outstanding.pop(t))
        if self.outstanding:
            return
        if self.next_index < len(self.bodies):
            self.publish_some()
        else:
            self.done = True
            # linger briefly so duplicate/extra confirms would be noticed
            self.connection.ioloop.call_later(0.3, self.finish)


def run_async(name, n, batch_size):
    queue = unique(name)
    bodies = [f"{name} {i}".encode() for i in range(n)]
    pub = AsyncConfirmPublisher(queue, bodies, batch_size=batch_size)
    started = time.monotonic()
    pub.run()
    elapsed = time.monotonic() - started
    assert pub.errors == [], pub.errors
    assert pub.nacked == [], f"{len(pub.nacked)} messages nacked"
    assert pub.outstanding == {}, f"{len(pub.outstanding)} never confirmed"
    assert sorted(pub.acked) == sorted(bodies), "confirms missing or duplicated"
    assert drain(queue, n) == bodies
    return pub, elapsed


def test_publish_messages_in_batches():
    pub, _ = run_async("confirms_batch", 1000, batch_size=100)
    assert pub.max_outstanding <= 100


def test_handle_publisher_confirms_asynchronously():
    pub, _ = run_async("confirms_async", 2000, batch_size=None)
    assert pub.max_outstanding == 2000
