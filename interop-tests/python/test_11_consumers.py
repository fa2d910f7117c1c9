"""Consumer features of RabbitMQ 3.13 for AMQP 0-9-1 clients: consumer priorities
(basic.consume argument x-priority) and single active consumer (queue argument
x-single-active-consumer).

Consumer priorities: a message goes to the highest-priority consumer that has room
(not blocked by its prefetch); lower-priority consumers get messages only while all
higher ones are blocked. No x-priority means priority 0; negative priorities are
allowed.

Single active consumer: only one consumer of the queue receives messages -- the
first one registered -- even while it is blocked by its prefetch; when it goes away
(basic.cancel, channel closed) the next one in registration order takes over, and
gets the messages the previous one left unacked. queue.declare-ok counts all the
consumers, active or waiting.

Everything here runs in the test thread: the consumers are channels of one
connection, pumped with process_data_events; the publisher has its own connection
with publisher confirms, so every message is in the queue when basic_publish returns.
"""

import time

import pika
import pika.exceptions
import pytest

from amqp_helpers import GRACE, WAIT, connect, queue_message_count, unique


class Collector:
    """A consumer on its own channel of `conn`; deliveries are recorded, and acked
    only when the test says so (unless auto_ack)."""

    def __init__(self, conn, queue, *, auto_ack=False, prefetch=None, priority=None):
        self.conn = conn
        self.queue = queue
        self.ch = conn.channel()
        if prefetch is not None:
            self.ch.basic_qos(prefetch_count=prefetch)
        arguments = None if priority is None else {"x-priority": priority}
        self.messages = []      # (method, properties, body)
        self.tag = self.ch.basic_consume(queue, self._on_message, auto_ack=auto_ack,
                                         arguments=arguments)

    def _on_message(self, ch, method, properties, body):
        self.messages.append((method, properties, body))

    def bodies(self):
        return [m[2].decode() for m in self.messages]

    def ack_all(self):
        """Acks everything received so far, and waits until the broker has taken
        the ack (a passive declare on the same channel comes back after it), so a
        message published afterwards sees the freed room."""
        if self.messages:
            self.ch.basic_ack(self.messages[-1][0].delivery_tag, multiple=True)
        self.ch.queue_declare(queue=self.queue, passive=True)


def pump(conn, predicate, what, timeout=WAIT):
    """Dispatches deliveries on conn until predicate() holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {what}"
        conn.process_data_events(time_limit=min(left, 0.02))


def settle(conn):
    """Keeps dispatching a little, to catch deliveries that should not happen."""
    conn.process_data_events(time_limit=GRACE)


def publisher():
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    return ch


def publish(ch, queue, *bodies):
    for body in bodies:
        ch.basic_publish(exchange="", routing_key=queue, body=body.encode())


def consumer_count(ch, queue):
    return ch.queue_declare(queue=queue, passive=True).method.consumer_count


# ---------------------------------------------------------------- priorities
def test_higher_priority_consumer_gets_messages_while_it_has_room():
    pub = publisher()
    queue = unique("consumer-prio")
    pub.queue_declare(queue=queue)
    conn = connect()
    # the low-priority consumer registers first: registration order does not matter
    low = Collector(conn, queue, auto_ack=True, priority=1)
    high = Collector(conn, queue, prefetch=1, priority=10)

    msgs = [f"m{i}" for i in range(10)]
    publish(pub, queue, *msgs)
    pump(conn, lambda: len(high.messages) + len(low.messages) >= 10, "10 deliveries")
    settle(conn)
    # the first goes to the high-priority consumer; blocked by its prefetch, it
    # leaves the rest to the low-priority one
    assert high.bodies() == ["m0"]
    assert low.bodies() == msgs[1:]

    # room again: the next message goes to the high-priority consumer...
    high.ack_all()
    publish(pub, queue, "m10")
    pump(conn, lambda: len(high.messages) + len(low.messages) >= 11, "m10")
    assert high.bodies() == ["m0", "m10"]
    # ...and while it is full again, the following one to the low-priority one
    publish(pub, queue, "m11")
    pump(conn, lambda: len(low.messages) >= 10, "m11")
    high.ack_all()
    publish(pub, queue, "m12")
    pump(conn, lambda: len(high.messages) + len(low.messages) >= 13, "m12")
    settle(conn)
    assert high.bodies() == ["m0", "m10", "m12"]
    assert low.bodies() == msgs[1:] + ["m11"]
    for method, _, _ in high.messages + low.messages:
        assert method.redelivered is False
    high.ack_all()
    assert queue_message_count(pub, queue) == 0


def test_consumer_priority_levels_default_zero_and_negative():
    """Three levels: x-priority 3 (prefetch 1), no argument = 0 (prefetch 2) and
    x-priority -1 (auto-ack, never blocked)."""
    pub = publisher()
    queue = unique("consumer-prio-levels")
    pub.queue_declare(queue=queue)
    conn = connect()
    negative = Collector(conn, queue, auto_ack=True, priority=-1)
    default = Collector(conn, queue, prefetch=2)
    high = Collector(conn, queue, prefetch=1, priority=3)

    msgs = [f"m{i}" for i in range(10)]
    publish(pub, queue, *msgs)
    everyone = (high, default, negative)
    pump(conn, lambda: sum(len(c.messages) for c in everyone) >= 10, "10 deliveries")
    settle(conn)
    assert high.bodies() == ["m0"]
    assert default.bodies() == ["m1", "m2"]
    assert negative.bodies() == msgs[3:]

    # with everyone idle, the highest priority always wins
    high.ack_all()
    default.ack_all()
    for i in range(10, 13):
        publish(pub, queue, f"m{i}")
        pump(conn, lambda: sum(len(c.messages) for c in everyone) >= i + 1, f"m{i}")
        high.ack_all()
    settle(conn)
    assert high.bodies() == ["m0", "m10", "m11", "m12"]
    assert default.bodies() == ["m1", "m2"]
    assert negative.bodies() == msgs[3:]
    # the priorities are per consumer, not per queue: a cancelled high-priority
    # consumer's share goes to the next level
    high.ch.basic_cancel(high.tag)
    publish(pub, queue, "m13", "m14", "m15")
    pump(conn, lambda: len(default.messages) + len(negative.messages) >= 12, "m13-m15")
    settle(conn)
    assert default.bodies() == ["m1", "m2", "m13", "m14"]
    assert negative.bodies() == msgs[3:] + ["m15"]


@pytest.mark.parametrize("priority", ["high", True], ids=["longstr", "bool"])
def test_invalid_consumer_priority_closes_the_channel_406(priority):
    conn = connect()
    ch = conn.channel()
    queue = unique("consumer-prio-bad")
    ch.queue_declare(queue=queue)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.basic_consume(queue, lambda *a: None, arguments={"x-priority": priority})
    assert e.value.reply_code == 406, e.value
    assert "x-priority" in e.value.reply_text, e.value
    assert conn.is_open
    assert consumer_count(conn.channel(), queue) == 0


# ---------------------------------------------------------------- single active consumer
def test_single_active_consumer_only_the_first_receives_and_hands_over_in_order():
    pub = publisher()
    queue = unique("sac")
    pub.queue_declare(queue=queue, arguments={"x-single-active-consumer": True})
    conn = connect()
    first, second, third = (Collector(conn, queue, prefetch=1) for _ in range(3))
    everyone = (first, second, third)
    assert consumer_count(pub, queue) == 3

    publish(pub, queue, "m0", "m1", "m2")
    pump(conn, lambda: len(first.messages) >= 1, "m0")
    settle(conn)
    # the active consumer is blocked by its prefetch; the others still get nothing
    assert [c.bodies() for c in everyone] == [["m0"], [], []]
    assert queue_message_count(pub, queue) == 2
    for n in (2, 3):
        first.ack_all()
        pump(conn, lambda: len(first.messages) >= n, f"message {n}")
    first.ack_all()
    settle(conn)
    assert [c.bodies() for c in everyone] == [["m0", "m1", "m2"], [], []]

    # the active consumer cancels: the next one in registration order takes over
    first.ch.basic_cancel(first.tag)
    assert consumer_count(pub, queue) == 2
    publish(pub, queue, "m3", "m4")
    pump(conn, lambda: len(second.messages) >= 1, "m3")
    second.ack_all()
    pump(conn, lambda: len(second.messages) >= 2, "m4")
    settle(conn)
    assert [c.bodies() for c in everyone] == [["m0", "m1", "m2"], ["m3", "m4"], []]

    # the new active consumer's channel closes with an unacked message: the
    # last consumer takes over and gets it again, redelivered
    second.ack_all()
    publish(pub, queue, "m5")
    pump(conn, lambda: len(second.messages) >= 3, "m5")
    second.ch.close()
    pump(conn, lambda: len(third.messages) >= 1, "m5 redelivered")
    assert third.bodies() == ["m5"]
    assert third.messages[0][0].redelivered is True
    assert consumer_count(pub, queue) == 1
    third.ack_all()
    publish(pub, queue, "m6")
    pump(conn, lambda: len(third.messages) >= 2, "m6")
    settle(conn)
    assert third.bodies() == ["m5", "m6"]
    assert third.messages[1][0].redelivered is False
    assert [c.bodies() for c in (first, second)] == [["m0", "m1", "m2"], ["m3", "m4", "m5"]]
    third.ack_all()
    assert queue_message_count(pub, queue) == 0


def test_single_active_consumer_waiting_messages_go_to_the_first_consumer():
    """Messages published before anyone consumes all go to the first consumer,
    none to the ones registered after it, even on other connections."""
    pub = publisher()
    queue = unique("sac-backlog")
    pub.queue_declare(queue=queue, arguments={"x-single-active-consumer": True})
    msgs = [f"m{i}" for i in range(20)]
    publish(pub, queue, *msgs)
    conns = [connect() for _ in range(3)]
    consumers = [Collector(c, queue, auto_ack=True) for c in conns]
    assert consumer_count(pub, queue) == 3
    pump(conns[0], lambda: len(consumers[0].messages) >= 20, "the backlog")
    settle(conns[0])
    for c in conns[1:]:
        c.process_data_events(time_limit=0.05)
    assert consumers[0].bodies() == msgs
    assert [c.bodies() for c in consumers[1:]] == [[], []]
    # the active consumer's connection goes away: the second one takes over
    conns[0].close()
    publish(pub, queue, "after")
    pump(conns[1], lambda: len(consumers[1].messages) >= 1, "after")
    conns[2].process_data_events(time_limit=GRACE)
    assert consumers[1].bodies() == ["after"]
    assert consumers[2].bodies() == []
    assert consumer_count(pub, queue) == 2
