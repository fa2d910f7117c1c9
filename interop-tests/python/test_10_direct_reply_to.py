"""Direct reply-to (RabbitMQ's `amq.rabbitmq.reply-to`): RPC without a callback
queue. The client consumes the pseudo-queue `amq.rabbitmq.reply-to` in auto-ack
mode and publishes its requests with reply_to=amq.rabbitmq.reply-to; the broker
rewrites reply_to to the channel's own address `amq.rabbitmq.reply-to.<...>`, the
server publishes its reply to the default exchange with that routing key, and the
reply goes straight to the requesting channel's reply consumer.

Misuse is refused as RabbitMQ does: a reply consumer that would ack, a second
reply consumer on one channel, and a request with reply_to=amq.rabbitmq.reply-to
from a channel without a reply consumer each close the channel with 406.
"""

import threading
import time
import uuid

import pika
import pika.exceptions
import pytest

from amqp_helpers import GRACE, WAIT, Received, connect, queue_message_count, unique

REPLY_TO = "amq.rabbitmq.reply-to"
PREFIX = REPLY_TO + "."


class RpcServer(threading.Thread):
    """Consumes the request queue (prefetch 1, manual ack) and answers
    b"re: <body>" with the request's correlation_id to the default exchange,
    routing key = the request's (rewritten) reply_to. Records what it saw."""

    def __init__(self, queue):
        super().__init__(daemon=True, name="reply_to_server")
        self.queue = queue
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.requests = []      # (reply_to, correlation_id, body)
        self.error = None
        self._lock = threading.Lock()

    def run(self):
        try:
            conn = connect()
            ch = conn.channel()
            ch.queue_declare(queue=self.queue)
            ch.basic_qos(prefetch_count=1)
            ch.basic_consume(queue=self.queue, on_message_callback=self.on_request)
            self.ready.set()
            while not self.stopping.is_set():
                conn.process_data_events(time_limit=0.05)
            conn.close()
        except BaseException as e:
            self.error = e
            self.ready.set()

    def on_request(self, ch, method, props, body):
        with self._lock:
            self.requests.append((props.reply_to, props.correlation_id, body))
        ch.basic_publish(exchange="", routing_key=props.reply_to,
                         properties=pika.BasicProperties(correlation_id=props.correlation_id),
                         body=b"re: " + body)
        ch.basic_ack(delivery_tag=method.delivery_tag)

    def seen(self):
        with self._lock:
            return list(self.requests)

    def start_and_wait(self):
        self.start()
        assert self.ready.wait(WAIT) and self.error is None, repr(self.error)
        return self

    def stop(self):
        self.stopping.set()
        self.join(WAIT)
        assert not self.is_alive()
        assert self.error is None, repr(self.error)


class DirectReplyClient:
    """Requests with reply_to=amq.rabbitmq.reply-to; replies arrive on the
    channel's auto-ack consumer of amq.rabbitmq.reply-to."""

    def __init__(self, rpc_queue):
        self.rpc_queue = rpc_queue
        self.connection = connect()
        self.channel = self.connection.channel()
        self.consumer_tag = self.channel.basic_consume(
            queue=REPLY_TO, on_message_callback=self.on_reply, auto_ack=True)
        self.replies = {}       # correlation_id -> Received
        self.stray = []

    def on_reply(self, ch, method, props, body):
        received = Received(body, method.routing_key, method.exchange, method.redelivered, props)
        received.consumer_tag = method.consumer_tag
        if props.correlation_id in self.replies and self.replies[props.correlation_id] is None:
            self.replies[props.correlation_id] = received
        else:
            self.stray.append((props.correlation_id, body))

    def send(self, body):
        corr_id = str(uuid.uuid4())
        self.replies[corr_id] = None
        self.channel.basic_publish(
            exchange="", routing_key=self.rpc_queue,
            properties=pika.BasicProperties(reply_to=REPLY_TO, correlation_id=corr_id),
            body=body)
        return corr_id

    def wait(self, corr_ids, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while any(self.replies[c] is None for c in corr_ids):
            left = deadline - time.monotonic()
            assert left > 0, f"direct reply-to reply timed out; stray: {self.stray}"
            self.connection.process_data_events(time_limit=min(left, 0.05))
        return [self.replies[c] for c in corr_ids]

    def call(self, body):
        return self.wait([self.send(body)])[0]

    def drain(self):
        """Keep listening a little for duplicates / foreign replies."""
        self.connection.process_data_events(time_limit=GRACE)

    def close(self):
        if self.connection.is_open:
            self.connection.close()


def test_direct_reply_to_round_trips():
    rpc_queue = unique("reply-to-rpc")
    server = RpcServer(rpc_queue).start_and_wait()
    client = DirectReplyClient(rpc_queue)
    try:
        for i in range(10):
            body = f"request {i}".encode()
            reply = client.call(body)
            assert reply.body == b"re: " + body
            reply_to, corr_id, seen_body = server.seen()[-1]
            assert seen_body == body
            assert client.replies[corr_id] is reply
            # the reply comes from the default exchange, under the address the
            # server replied to, to the client's reply consumer
            assert reply.exchange == ""
            assert reply.routing_key == reply_to
            assert reply.redelivered is False
            assert reply.consumer_tag == client.consumer_tag
        client.drain()
        assert client.stray == [], f"unexpected replies: {client.stray}"
        seen = server.seen()
        assert len(seen) == 10
        addresses = {reply_to for reply_to, _, _ in seen}
        # the server never sees the pseudo-queue's name, but the requesting
        # channel's address -- one per channel
        assert len(addresses) == 1, addresses
        [address] = addresses
        assert address.startswith(PREFIX) and len(address) > len(PREFIX), address
        assert all(corr for _, corr, _ in seen), "correlation_id lost on the request"
        # replies never touch a queue; the request queue is drained
        assert queue_message_count(client.channel, rpc_queue) == 0
    finally:
        client.close()
        server.stop()


def test_direct_reply_to_two_clients_get_only_their_own_replies():
    rpc_queue = unique("reply-to-rpc")
    server = RpcServer(rpc_queue).start_and_wait()
    clients = [DirectReplyClient(rpc_queue) for _ in range(2)]
    try:
        # many outstanding requests per client, interleaved between clients
        pending = [[], []]
        for n in range(20):
            for i, c in enumerate(clients):
                body = f"client {i} request {n}".encode()
                pending[i].append((body, c.send(body)))
        for i, c in enumerate(clients):
            replies = c.wait([cid for _, cid in pending[i]])
            assert [r.body for r in replies] == [b"re: " + body for body, _ in pending[i]]
        for c in clients:
            c.drain()
            assert c.stray == [], f"duplicate or foreign replies: {c.stray}"
        seen = server.seen()
        assert len(seen) == 40
        by_client = {}
        for reply_to, _, body in seen:
            by_client.setdefault(body.split(b" ")[1], set()).add(reply_to)
        assert all(len(a) == 1 for a in by_client.values()), by_client
        assert by_client[b"0"] != by_client[b"1"], "both clients got the same reply address"
        for i, c in enumerate(clients):
            [address] = by_client[str(i).encode()]
            assert address.startswith(PREFIX), address
            assert {r.routing_key for r in c.replies.values()} == {address}
    finally:
        for c in clients:
            c.close()
        server.stop()


def test_direct_reply_to_address_can_be_checked_with_a_passive_declare():
    """RabbitMQ docs: a server may check that the requester is still there by
    declaring the reply address passively; while the reply consumer exists the
    address "exists with one consumer", afterwards the declare fails with 404."""
    rpc_queue = unique("reply-to-rpc")
    server = RpcServer(rpc_queue).start_and_wait()
    client = DirectReplyClient(rpc_queue)
    other = connect()
    try:
        client.call(b"hello")
        [(address, _, _)] = server.seen()
        ok = other.channel().queue_declare(queue=address, passive=True).method
        assert ok.queue == address
        assert (ok.message_count, ok.consumer_count) == (0, 1)
        client.close()
        deadline = time.monotonic() + 5
        while True:
            ch = other.channel()
            try:
                ch.queue_declare(queue=address, passive=True)
            except pika.exceptions.ChannelClosedByBroker as e:
                assert e.reply_code == 404, e
                break
            ch.close()
            assert time.monotonic() < deadline, "reply address outlived its connection"
            time.sleep(0.02)
    finally:
        client.close()
        other.close()
        server.stop()


def test_declaring_the_pseudo_queue_is_harmless():
    """Client libraries that declare every queue they consume (kombu's Consumer
    with its default auto_declare, for one) declare amq.rabbitmq.reply-to
    non-passively first; RabbitMQ treats every declare of it as passive and
    answers declare-ok."""
    rpc_queue = unique("reply-to-rpc")
    server = RpcServer(rpc_queue).start_and_wait()
    client = DirectReplyClient(rpc_queue)
    try:
        ok = connect().channel().queue_declare(queue=REPLY_TO).method
        assert ok.queue == REPLY_TO
        assert ok.message_count == 0
        client.channel.queue_declare(queue=REPLY_TO, durable=False, auto_delete=True)
        assert client.call(b"still works").body == b"re: still works"
    finally:
        client.close()
        server.stop()


def test_reply_consumer_must_be_auto_ack():
    conn = connect()
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.basic_consume(queue=REPLY_TO, on_message_callback=lambda *a: None, auto_ack=False)
    assert e.value.reply_code == 406, e.value
    assert "reply consumer cannot acknowledge" in e.value.reply_text, e.value
    # only the channel is closed
    assert conn.is_open
    # a second reply consumer on one channel is refused too
    ch = conn.channel()
    ch.basic_consume(queue=REPLY_TO, on_message_callback=lambda *a: None, auto_ack=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.basic_consume(queue=REPLY_TO, on_message_callback=lambda *a: None, auto_ack=True)
    assert e.value.reply_code == 406, e.value
    assert "reply consumer already set" in e.value.reply_text, e.value
    assert conn.is_open


def assert_request_refused(ch, queue):
    """Publishes a request with reply_to=amq.rabbitmq.reply-to on ch and expects
    the channel to be closed with 406 (seen on the next synchronous method)."""
    ch.basic_publish(exchange="", routing_key=queue, body=b"who do I answer?",
                     properties=pika.BasicProperties(reply_to=REPLY_TO, correlation_id="x"))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(queue=queue, passive=True)
    assert e.value.reply_code == 406, e.value
    assert "fast reply consumer does not exist" in e.value.reply_text, e.value


def test_request_without_reply_consumer_closes_the_channel_406():
    conn = connect()
    queue = unique("reply-to-orphan")
    conn.channel().queue_declare(queue=queue)

    # no reply consumer at all
    assert_request_refused(conn.channel(), queue)
    assert conn.is_open

    # a reply consumer on another channel of the same connection does not count
    consumer_ch = conn.channel()
    consumer_ch.basic_consume(queue=REPLY_TO, on_message_callback=lambda *a: None, auto_ack=True)
    assert_request_refused(conn.channel(), queue)

    # ...nor one that was cancelled
    ch = conn.channel()
    tag = ch.basic_consume(queue=REPLY_TO, on_message_callback=lambda *a: None, auto_ack=True)
    ch.basic_publish(exchange="", routing_key=queue, body=b"fine",
                     properties=pika.BasicProperties(reply_to=REPLY_TO))
    ch.basic_cancel(tag)
    assert_request_refused(ch, queue)

    assert conn.is_open
    # only the request sent while the reply consumer existed was enqueued
    ch = conn.channel()
    method, props, body = ch.basic_get(queue, auto_ack=True)
    assert body == b"fine"
    assert props.reply_to.startswith(PREFIX), props.reply_to
    assert queue_message_count(ch, queue) == 0
