"""Tutorial 2: work queues -- durable queue, persistent messages, two workers,
prefetch 1 (fair dispatch), manual acks, redelivery when a worker dies."""

import time

import pika

from amqp_helpers import (GRACE, Child, Consumer, connect, queue_message_count, stop_all,
                          unique, wait_until)


def task_queue(queue):
    def setup(ch):
        ch.queue_declare(queue=queue, durable=True)
        return queue
    return setup


def worker_sleep(per_dot):
    def work(body):
        time.sleep(body.count(b".") * per_dot)
    return work


def publish_tasks(ch, queue, bodies):
    for body in bodies:
        ch.basic_publish(
            exchange="", routing_key=queue, body=body,
            properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent))


def test_work_queue_spreads_tasks_over_two_workers():
    queue = unique("task_queue")
    workers = [Consumer(f"worker{i}", task_queue(queue), auto_ack=False, prefetch=1,
                        work=worker_sleep(0.02)).start_and_wait() for i in (1, 2)]
    conn = connect()
    ch = conn.channel()
    try:
        ch.queue_declare(queue=queue, durable=True)
        tasks = [f"task {i} ..".encode() for i in range(20)]
        publish_tasks(ch, queue, tasks)

        assert wait_until(lambda: sum(w.acked for w in workers) >= len(tasks)), \
            f"only {sum(w.acked for w in workers)} of {len(tasks)} tasks done"
        time.sleep(GRACE)

        got = [w.received() for w in workers]
        all_bodies = [m.body for msgs in got for m in msgs]
        # every task done exactly once
        assert sorted(all_bodies) == sorted(tasks), "tasks lost or duplicated"
        # both workers did work, and each saw its tasks in publish order
        for i, msgs in enumerate(got):
            assert len(msgs) >= 3, f"worker{i + 1} got only {len(msgs)} of {len(tasks)} tasks"
            bodies = [m.body for m in msgs]
            assert bodies == sorted(bodies, key=tasks.index), f"worker{i + 1} out of order"
            for m in msgs:
                assert m.redelivered is False
                assert m.properties.delivery_mode == 2, "persistent flag lost"
        stop_all(*workers)
        assert queue_message_count(ch, queue) == 0
    finally:
        stop_all(*workers)
        conn.close()


def test_fair_dispatch_with_prefetch_one():
    """A worker busy on a long task must not be handed more tasks while the
    other worker is idle (basic.qos prefetch_count=1)."""
    queue = unique("task_queue")
    heavy = b"heavy " + b"." * 60   # 60 * 25ms = 1.5 s of "work"
    lights = [f"light {i} .".encode() for i in range(12)]
    workers = [Consumer(f"worker{i}", task_queue(queue), auto_ack=False, prefetch=1,
                        work=worker_sleep(0.025)).start_and_wait() for i in (1, 2)]
    conn = connect()
    ch = conn.channel()
    try:
        ch.queue_declare(queue=queue, durable=True)
        publish_tasks(ch, queue, [heavy] + lights)

        total = 1 + len(lights)
        assert wait_until(lambda: sum(w.acked for w in workers) >= total), "tasks not all done"
        time.sleep(GRACE)

        got = [w.bodies() for w in workers]
        assert sorted(got[0] + got[1]) == sorted([heavy] + lights)
        busy = 0 if heavy in got[0] else 1
        idle = 1 - busy
        # Without prefetch=1 round-robin would push ~half of the light tasks to
        # the busy worker; with it the idle worker takes (nearly) all of them.
        assert len(got[busy]) <= 2, \
            f"busy worker got {len(got[busy]) - 1} light tasks while busy: {got[busy]}"
        assert len(got[idle]) >= len(lights) - 1
    finally:
        stop_all(*workers)
        conn.close()


DYING_WORKER = r"""
import sys, pika
from amqp_helpers import connect
conn = connect()
ch = conn.channel()
ch.basic_qos(prefetch_count=1)
def on_message(ch, method, properties, body):
    print("got", body.decode(), flush=True)   # ...and never ack
ch.basic_consume(sys.argv[1], on_message, auto_ack=False)
print("ready", flush=True)
ch.start_consuming()
"""


def test_unacked_task_redelivered_when_worker_dies():
    queue = unique("task_queue")
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(queue=queue, durable=True)
    child = Child(DYING_WORKER, queue)
    worker = None
    try:
        assert child.readline() == "ready"
        publish_tasks(ch, queue, [b"task A", b"task B"])
        assert child.readline() == "got task A"
        # prefetch 1 and no ack: task B must still be ready in the queue
        assert wait_until(lambda: queue_message_count(ch, queue) == 1, 5)
        child.kill()                 # the worker dies without acking

        worker = Consumer("worker2", task_queue(queue), auto_ack=False,
                          prefetch=1).start_and_wait()
        assert wait_until(lambda: worker.acked >= 2), f"got {worker.bodies()}"
        time.sleep(GRACE)
        got = {m.body: m.redelivered for m in worker.received()}
        assert sorted(worker.bodies()) == [b"task A", b"task B"]
        assert got == {b"task A": True, b"task B": False}
    finally:
        child.kill()
        if worker is not None:
            worker.stop()
        conn.close()
