"""Tutorial 6: RPC -- server consumes rpc_queue (prefetch 1, manual ack) and
replies to properties.reply_to with the request's correlation_id; the client
waits on an exclusive, server-named callback queue."""

import threading
import time
import uuid

import pika
import pika.exceptions

from amqp_helpers import WAIT, connect, queue_state, unique, wait_until


def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


class RpcServer(threading.Thread):
    def __init__(self, queue):
        super().__init__(daemon=True, name="rpc_server")
        self.queue = queue
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.handled = 0
        self.error = None

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
        n = int(body)
        ch.basic_publish(exchange="", routing_key=props.reply_to,
                         properties=pika.BasicProperties(correlation_id=props.correlation_id),
                         body=str(fib(n)).encode())
        ch.basic_ack(delivery_tag=method.delivery_tag)
        self.handled += 1

    def stop(self):
        self.stopping.set()
        self.join(WAIT)
        assert not self.is_alive()
        assert self.error is None, repr(self.error)


class FibonacciRpcClient:
    def __init__(self, rpc_queue):
        self.rpc_queue = rpc_queue
        self.connection = connect()
        self.channel = self.connection.channel()
        result = self.channel.queue_declare(queue="", exclusive=True)
        self.callback_queue = result.method.queue
        assert self.callback_queue, "server did not name the callback queue"
        self.channel.basic_consume(queue=self.callback_queue,
                                   on_message_callback=self.on_response, auto_ack=True)
        self.responses = {}     # correlation_id -> body
        self.stray = []

    def on_response(self, ch, method, props, body):
        if props.correlation_id in self.responses and self.responses[props.correlation_id] is None:
            self.responses[props.correlation_id] = body
        else:
            self.stray.append((props.correlation_id, body))

    def send(self, n):
        corr_id = str(uuid.uuid4())
        self.responses[corr_id] = None
        self.channel.basic_publish(
            exchange="", routing_key=self.rpc_queue,
            properties=pika.BasicProperties(reply_to=self.callback_queue,
                                            correlation_id=corr_id),
            body=str(n).encode())
        return corr_id

    def wait(self, corr_ids, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while any(self.responses[c] is None for c in corr_ids):
            left = deadline - time.monotonic()
            assert left > 0, "RPC response timed out"
            self.connection.process_data_events(time_limit=min(left, 0.1))
        return [int(self.responses[c]) for c in corr_ids]

    def call(self, n):
        return self.wait([self.send(n)])[0]

    def close(self):
        if self.connection.is_open:
            self.connection.close()


def test_rpc_fibonacci_sequential_calls():
    rpc_queue = unique("rpc_queue")
    server = RpcServer(rpc_queue)
    server.start()
    assert server.ready.wait(WAIT) and server.error is None, repr(server.error)
    client = FibonacciRpcClient(rpc_queue)
    try:
        for n in range(0, 31, 3):
            assert client.call(n) == fib(n), n
        assert client.call(30) == 832040
        time.sleep(0.2)
        client.connection.process_data_events(time_limit=0.1)
        assert client.stray == [], f"unexpected replies: {client.stray}"
        assert server.handled == 12
    finally:
        client.close()
        server.stop()


def test_rpc_concurrent_clients_get_their_own_answers():
    rpc_queue = unique("rpc_queue")
    server = RpcServer(rpc_queue)
    server.start()
    assert server.ready.wait(WAIT) and server.error is None, repr(server.error)
    clients = [FibonacciRpcClient(rpc_queue) for _ in range(2)]
    try:
        assert clients[0].callback_queue != clients[1].callback_queue
        # many outstanding requests per client, interleaved between clients;
        # replies are matched by correlation_id
        pending = [[], []]
        for n in range(20):
            for i, c in enumerate(clients):
                k = n + 20 * i
                pending[i].append((k, c.send(k)))
        for i, c in enumerate(clients):
            ns = [k for k, _ in pending[i]]
            assert c.wait([cid for _, cid in pending[i]]) == [fib(k) for k in ns]
        time.sleep(0.2)
        for c in clients:
            c.connection.process_data_events(time_limit=0.1)
            assert c.stray == [], f"duplicate or foreign replies: {c.stray}"
        assert server.handled == 40
    finally:
        for c in clients:
            c.close()
        server.stop()


def test_rpc_callback_queue_is_exclusive():
    rpc_queue = unique("rpc_queue")
    client = FibonacciRpcClient(rpc_queue)
    other = connect()
    try:
        callback_queue = client.callback_queue
        # another connection may not consume from the exclusive callback queue
        ch = other.channel()
        try:
            ch.basic_consume(queue=callback_queue, on_message_callback=lambda *a: None)
            raise AssertionError("consumed from another connection's exclusive queue")
        except pika.exceptions.ChannelClosedByBroker as e:
            assert e.reply_code == 405, e
        client.close()
        # ...and it disappears with its connection
        assert wait_until(lambda: queue_state(other, callback_queue) == "missing", 5)
    finally:
        client.close()
        other.close()
