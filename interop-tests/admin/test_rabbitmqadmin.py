"""rabbitmqadmin (RabbitMQ's CLI for the management HTTP API) against the
broker: every command's output and exit code, and what pika sees of it."""

import json
import re
import subprocess
import time

import pika
import pytest

from conftest import (AMQP_HOST, CALL_TIMEOUT, MGMT_HOST, MGMT_PORT, RABBITMQADMIN, admin, connect, exchange_exists, load_json, local_port,
                      new, params, queue_count, table, unique, wait_for)


def row(rows, **match):
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            return r
    return None


# ---------------------------------------------------------------- show / list

def test_show_overview():
    r = admin("show", "overview")
    rows = table(r.out)
    assert len(rows) == 1, r
    o = rows[0]
    assert set(o) == {"rabbitmq_version", "cluster_name", "queue_totals.messages", "object_totals.queues"}, r
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", o["rabbitmq_version"]), r
    assert o["cluster_name"], r
    assert o["queue_totals.messages"].isdigit(), r
    assert o["object_totals.queues"].isdigit(), r


def test_list_users_vhosts_exchanges():
    users = table(admin("list", "users").out)
    guest = row(users, name="guest")
    assert guest is not None, users
    assert "administrator" in guest["tags"].split(), guest
    assert guest["hashing_algorithm"].startswith("rabbit_password_hashing_"), guest
    assert guest["password_hash"], guest

    vhosts = table(admin("list", "vhosts").out)
    assert row(vhosts, name="/") is not None, vhosts
    assert set(vhosts[0]) == {"name", "messages"}, vhosts

    ex = table(admin("list", "exchanges").out)
    assert set(ex[0]) == {"name", "type"}, ex
    for name, typ in [("", "direct"), ("amq.direct", "direct"), ("amq.fanout", "fanout"),
                      ("amq.topic", "topic"), ("amq.headers", "headers"), ("amq.match", "headers")]:
        assert row(ex, name=name, type=typ) is not None, (name, ex)


def test_declare_queue_and_list_queues():
    q = new("queue")
    r = admin("declare", "queue", f"name={q}", "durable=true")
    assert r.out.strip() == "queue declared", r
    # again: idempotent
    assert admin("declare", "queue", f"name={q}", "durable=true").rc == 0
    assert queue_count(q) == 0

    # pika sees a durable queue: a redeclare with durable=false is refused
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(q, durable=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(q, durable=False)
    assert e.value.reply_code == 406, e.value

    ch = conn.channel()
    ch.basic_publish("", q, b"one")
    ch.basic_publish("", q, b"two")
    # management stats may lag (RabbitMQ: up to 5 s)
    wait_for(lambda: row(table(admin("list", "queues").out), name=q, messages="2"),
             f"list queues to show {q} with 2 messages")
    rows = table(admin("list", "queues").out)
    assert set(rows[0]) == {"name", "messages"}, rows


def test_declare_queue_with_arguments():
    q = new("queue")
    r = admin("declare", "queue", f"name={q}", "durable=false", "auto_delete=false",
              'arguments={"x-max-length": 2, "x-overflow": "drop-head"}')
    assert r.out.strip() == "queue declared", r
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish("", q, f"m{i}".encode())
    assert queue_count(q) == 2
    # the arguments are the queue's: a redeclare without them is inequivalent
    ch.queue_declare(q, arguments={"x-max-length": 2, "x-overflow": "drop-head"})
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(q)
    assert e.value.reply_code == 406, e.value
    assert "x-max-length" in e.value.reply_text or "x-overflow" in e.value.reply_text, e.value
    # drop-head kept the newest two
    ch = conn.channel()
    bodies = [ch.basic_get(q, auto_ack=True)[2] for _ in range(2)]
    assert bodies == [b"m3", b"m4"]


def test_inequivalent_redeclare_fails():
    q = new("queue")
    admin("declare", "queue", f"name={q}", "durable=true")
    r = admin("declare", "queue", f"name={q}", "durable=false", check=False)
    assert r.rc == 1, r
    assert r.err.strip() == (f"*** inequivalent arg 'durable' for queue '{q}' in vhost '/': "
                             "received 'false' but current is 'true'"), r
    assert r.out == "", r


def test_exchange_binding_publish_get():
    x = new("exchange")
    q = new("queue")
    assert admin("declare", "exchange", f"name={x}", "type=topic").out.strip() == "exchange declared"
    assert exchange_exists(x)
    ex = table(admin("list", "exchanges").out)
    assert row(ex, name=x, type="topic") is not None, ex
    admin("declare", "queue", f"name={q}", "durable=false")
    r = admin("declare", "binding", f"source={x}", f"destination={q}", "routing_key=a.*")
    assert r.out.strip() == "binding declared", r

    b = table(admin("list", "bindings").out)
    assert set(b[0]) == {"source", "destination", "routing_key"}, b
    assert row(b, source=x, destination=q, routing_key="a.*") is not None, b
    assert row(b, source="", destination=q, routing_key=q) is not None, b  # default exchange

    r = admin("publish", f"exchange={x}", "routing_key=a.b", "payload=first",
              'properties={"content_type": "text/plain", "headers": {"k": "v"}}')
    assert r.out.strip() == "Message published", r
    r = admin("publish", f"exchange={x}", "routing_key=a.c", "payload=second")
    assert r.out.strip() == "Message published", r
    r = admin("publish", f"exchange={x}", "routing_key=b.a", "payload=lost")
    assert r.out.strip() == "Message published but NOT routed", r
    assert queue_count(q) == 2

    # default ackmode (ack_requeue_true): shown, and stays in the queue
    r = admin("get", f"queue={q}")
    rows = table(r.out)
    assert len(rows) == 1, r
    m = rows[0]
    assert m["payload"] == "first", r
    assert m["routing_key"] == "a.b" and m["exchange"] == x, r
    assert m["message_count"] == "1", r
    assert m["payload_bytes"] == "5" and m["payload_encoding"] == "string", r
    assert queue_count(q) == 2

    # ack_requeue_false: the same (now redelivered) message, removed
    r = admin("get", f"queue={q}", "ackmode=ack_requeue_false")
    m = table(r.out)[0]
    assert m["payload"] == "first" and m["redelivered"] == "True", r
    assert queue_count(q) == 1

    # get with count=2 on one message: one row
    r = admin("get", f"queue={q}", "count=2")
    rows = table(r.out)
    assert [m["payload"] for m in rows] == ["second"], r

    # pika gets the rest
    conn = connect()
    ch = conn.channel()
    method, props, body = ch.basic_get(q, auto_ack=True)
    assert body == b"second" and method.routing_key == "a.c" and method.exchange == x
    assert ch.basic_get(q, auto_ack=True) == (None, None, None)


def test_published_message_consumed_by_pika():
    q = new("queue")
    admin("declare", "queue", f"name={q}", "durable=false")
    conn = connect()
    ch = conn.channel()
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append((m, p, b)), auto_ack=True)
    props = {"content_type": "application/json", "correlation_id": "c-42", "delivery_mode": 2,
             "priority": 3, "message_id": "id-1", "headers": {"h1": "v1", "n": 7}}
    r = admin("publish", "exchange=amq.default", f"routing_key={q}", 'payload={"a": [1, 2]}',
              "properties=" + json.dumps(props))
    assert r.out.strip() == "Message published", r
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.2)
    assert len(got) == 1
    method, p, body = got[0]
    assert body == b'{"a": [1, 2]}'
    assert method.exchange == "" and method.routing_key == q and not method.redelivered
    assert p.content_type == "application/json"
    assert p.correlation_id == "c-42"
    assert p.delivery_mode == 2
    assert p.priority == 3
    assert p.message_id == "id-1"
    assert p.headers == {"h1": "v1", "n": 7}


def test_publish_from_stdin_base64():
    q = new("queue")
    admin("declare", "queue", f"name={q}", "durable=false")
    # rabbitmqadmin reads stdin as text (binary that is not UTF-8 crashes it)
    # and sends it base64-encoded
    payload = "multi\nline h\u00e9llo \u2603\n".encode()
    p = subprocess.run([RABBITMQADMIN, "-H", MGMT_HOST, "-P", str(MGMT_PORT), "-u", "guest", "-p", "guest",
                        "publish", "exchange=amq.default", f"routing_key={q}"],
                       input=payload, capture_output=True, timeout=CALL_TIMEOUT)
    assert p.returncode == 0 and p.stdout.strip() == b"Message published", p
    conn = connect()
    _, _, body = conn.channel().basic_get(q, auto_ack=True)
    assert body == payload


# ---------------------------------------------------------------- connections

def test_connections_channels_consumers_close():
    q = new("queue")
    admin("declare", "queue", f"name={q}", "durable=false")
    label = unique("conn")
    conn = connect(name=label)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=7)
    tag = ch.basic_consume(q, lambda *a: None, consumer_tag=f"ctag-{label}")
    port = local_port(conn)
    prefix = f"{AMQP_HOST}:{port} -> "

    def find_conn():
        rows = table(admin("list", "connections").out)
        return next((r for r in rows if r["name"].startswith(prefix) and r["channels"] == "1"), None)

    c = wait_for(find_conn, f"list connections to show a connection {prefix}... with 1 channel")
    assert c["user"] == "guest", c
    name = c["name"]
    rows = table(admin("list", "connections").out)
    assert set(rows[0]) == {"name", "user", "channels"}, rows

    chans = wait_for(lambda: row(table(admin("list", "channels").out), name=f"{name} (1)"),
                     "list channels to show the pika channel")
    assert chans["user"] == "guest", chans

    def find_consumer():
        rows = table(admin("list", "consumers").out)
        return row(rows, consumer_tag=tag)

    cons = wait_for(find_consumer, "list consumers to show the pika consumer")
    assert cons["ack_required"] == "True", cons
    assert cons["exclusive"] == "False", cons
    assert cons["prefetch_count"] == "7", cons
    assert cons["active"] == "True", cons

    r = admin("close", "connection", f"name={name}")
    assert r.out.strip() == "connection closed", r
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.2)
    assert e.value.reply_code == 320, e.value
    assert "Closed via management plugin" in e.value.reply_text, e.value
    wait_for(lambda: not any(r["name"] == name for r in table(admin("list", "connections").out)),
             "the closed connection to leave list connections")


# ---------------------------------------------------------------- definitions

def test_export_and_import(tmp_path, tmp_vhost):
    x = new("exchange")
    q = new("queue")
    admin("declare", "exchange", f"name={x}", "type=direct", "durable=true")
    admin("declare", "queue", f"name={q}", "durable=true", 'arguments={"x-max-length": 10}')
    admin("declare", "binding", f"source={x}", f"destination={q}", "routing_key=rk1")

    f = tmp_path / "all.json"
    r = admin("export", str(f))
    assert r.out.strip().startswith("Exported definitions for "), r
    d = load_json(f)
    qd = next((e for e in d["queues"] if e["name"] == q and e["vhost"] == "/"), None)
    assert qd is not None, d["queues"]
    assert qd["durable"] is True and qd["arguments"] == {"x-max-length": 10}, qd
    xd = next((e for e in d["exchanges"] if e["name"] == x and e["vhost"] == "/"), None)
    assert xd is not None and xd["type"] == "direct", d["exchanges"]
    bd = [e for e in d["bindings"] if e["source"] == x and e["destination"] == q]
    assert len(bd) == 1 and bd[0]["routing_key"] == "rk1" and bd[0]["destination_type"] == "queue", bd
    assert any(u["name"] == "guest" for u in d["users"]), d["users"]
    assert any(v["name"] == tmp_vhost for v in d["vhosts"]), d["vhosts"]

    # vhost-scoped export of the temporary vhost, modified, imported back
    vq = new("queue", vhost=tmp_vhost)
    admin("declare", "queue", f"name={vq}", "durable=true", vhost=tmp_vhost)
    vf = tmp_path / "vhost.json"
    admin("export", str(vf), vhost=tmp_vhost)
    vd = load_json(vf)
    base = next(e for e in vd["queues"] if e["name"] == vq)
    added = new("queue", vhost=tmp_vhost)
    vd["queues"].append(dict(base, name=added, arguments={"x-message-ttl": 60000}))
    vx = new("exchange", vhost=tmp_vhost)
    vd["exchanges"].append({"name": vx, "type": "fanout", "durable": True, "auto_delete": False,
                            "internal": False, "arguments": {}})
    vd["bindings"].append({"source": vx, "destination": added, "destination_type": "queue",
                           "routing_key": "", "arguments": {}})
    vf.write_text(json.dumps(vd))
    r = admin("import", str(vf), vhost=tmp_vhost)
    assert r.out.strip().startswith("Uploaded definitions from "), r

    rows = wait_for(lambda: row(table(admin("list", "queues", vhost=tmp_vhost).out), name=added),
                    "the imported queue in list queues")
    assert rows is not None
    # pika sees it, with its arguments and its binding
    conn = connect(vhost=tmp_vhost)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish(vx, "", b"via-import")
    assert queue_count(added, vhost=tmp_vhost) == 1
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(added, durable=True)  # without x-message-ttl
    assert e.value.reply_code == 406, e.value
    assert queue_count(vq, vhost=tmp_vhost) == 0  # the original is untouched


# ---------------------------------------------------------------- purge / delete

def test_purge_and_deletes():
    x = new("exchange")
    q = new("queue")
    admin("declare", "exchange", f"name={x}", "type=direct")
    admin("declare", "queue", f"name={q}", "durable=false")
    admin("declare", "binding", f"source={x}", f"destination={q}", "routing_key=rk")
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish(x, "rk", f"m{i}".encode())
    assert queue_count(q) == 3

    r = admin("purge", "queue", f"name={q}")
    assert r.out.strip() == "queue purged", r
    assert queue_count(q) == 0

    r = admin("delete", "binding", f"source={x}", "destination_type=queue", f"destination={q}",
              "properties_key=rk")
    assert r.out.strip() == "binding deleted", r
    assert row(table(admin("list", "bindings").out), source=x, destination=q) is None
    ch.basic_publish(x, "rk", b"unbound")
    assert queue_count(q) == 0

    r = admin("delete", "queue", f"name={q}")
    assert r.out.strip() == "queue deleted", r
    assert queue_count(q) is None
    assert row(table(admin("list", "queues").out), name=q) is None

    r = admin("delete", "exchange", f"name={x}")
    assert r.out.strip() == "exchange deleted", r
    assert not exchange_exists(x)
    assert row(table(admin("list", "exchanges").out), name=x) is None


# ---------------------------------------------------------------- access control

def test_vhost_user_permission_policy():
    vh = new("vhost")
    user = new("user")
    assert admin("declare", "vhost", f"name={vh}").out.strip() == "vhost declared"
    assert row(table(admin("list", "vhosts").out), name=vh) is not None
    assert admin("declare", "user", f"name={user}", "password=s3cret",
                 "tags=management,monitoring").out.strip() == "user declared"
    u = row(table(admin("list", "users").out), name=user)
    assert u is not None and sorted(u["tags"].split()) == ["management", "monitoring"], u
    r = admin("declare", "permission", f"vhost={vh}", f"user={user}",
              "configure=^p-.*", "write=.*", "read=.*")
    assert r.out.strip() == "permission declared", r
    perms = table(admin("list", "permissions").out)
    p = row(perms, vhost=vh, user=user)
    assert p is not None and p["configure"] == "^p-.*" and p["write"] == ".*", perms

    # the policy (declared before the queue) caps it at 1 message
    r = admin("declare", "policy", "name=cap", "pattern=^p-", 'definition={"max-length": 1}',
              "priority=2", "apply-to=queues", vhost=vh)
    assert r.out.strip() == "policy declared", r
    # (list policies is not vhost-scoped: GET /api/policies, -V is ignored)
    pol = row(table(admin("list", "policies").out), vhost=vh, name="cap")
    assert pol is not None and pol["vhost"] == vh and pol["pattern"] == "^p-", pol
    assert json.loads(pol["definition"]) == {"max-length": 1}, pol

    # the new user works over AMQP, with the configure permission it was given
    conn = connect(user=user, password="s3cret", vhost=vh)
    ch = conn.channel()
    ch.queue_declare("p-q")
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("", "p-q", f"m{i}".encode())
    assert queue_count("p-q", vhost=vh) == 1
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("other-q")
    assert e.value.reply_code == 403, e.value
    conn.close()

    assert admin("delete", "policy", "name=cap", vhost=vh).out.strip() == "policy deleted"
    assert row(table(admin("list", "policies").out), vhost=vh) is None

    assert admin("delete", "permission", f"vhost={vh}", f"user={user}").out.strip() == "permission deleted"
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(params(user=user, password="s3cret", vhost=vh)).close()

    assert admin("delete", "user", f"name={user}").out.strip() == "user deleted"
    assert row(table(admin("list", "users").out), name=user) is None
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(params(user=user, password="s3cret")).close()

    assert admin("delete", "vhost", f"name={vh}").out.strip() == "vhost deleted"
    assert row(table(admin("list", "vhosts").out), name=vh) is None


# ---------------------------------------------------------------- errors

def test_not_found():
    r = admin("get", "queue=nosuch-interop-admin", check=False)
    assert r.rc == 1, r
    assert r.err.strip() == "*** Not found: /api/queues/%2F/nosuch-interop-admin/get", r
    r = admin("list", "queues", vhost="nosuch-interop-admin-vhost", check=False)
    assert r.rc == 1, r
    assert r.err.strip() == "*** Not found: /api/queues/nosuch-interop-admin-vhost?columns=name,messages", r


def test_wrong_password():
    r = admin("list", "queues", password="not-the-password", check=False)
    assert r.rc == 1, r
    assert r.err.strip() == "*** Access refused: /api/queues?columns=name,messages", r
    assert r.out == "", r


def test_more_errors():
    x = new("exchange")
    q = new("queue")
    admin("declare", "exchange", f"name={x}", "type=topic")
    admin("declare", "queue", f"name={q}", "durable=false")

    def fails(expect, *args, **kw):
        r = admin(*args, check=False, **kw)
        assert r.rc == 1, r
        assert r.err.strip() == expect, r
        assert "Traceback" not in r.err, r

    fails(f"*** inequivalent arg 'type' for exchange '{x}' in vhost '/': received 'direct' but current is 'topic'",
          "declare", "exchange", f"name={x}", "type=direct")
    fails(f"*** Not found: /api/bindings/%2F/e/{x}/q/nosuch-q",
          "declare", "binding", f"source={x}", "destination=nosuch-q", "routing_key=a")
    fails(f"*** Not found: /api/bindings/%2F/e/nosuch-x/q/{q}",
          "declare", "binding", "source=nosuch-x", f"destination={q}", "routing_key=a")
    fails("*** 404 NOT_FOUND - no exchange 'nosuch-x' in vhost '/'",
          "publish", "exchange=nosuch-x", "routing_key=a", "payload=p")
    fails("*** Not found: /api/queues/%2F/nosuch-q", "delete", "queue", "name=nosuch-q")
    fails("*** Not found: /api/queues/%2F/nosuch-q/contents", "purge", "queue", "name=nosuch-q")
    fails("*** Not found: /api/exchanges/%2F/nosuch-x", "delete", "exchange", "name=nosuch-x")
    fails(f"*** Not found: /api/bindings/%2F/e/{x}/q/{q}/nosuch-key",
          "delete", "binding", f"source={x}", "destination_type=queue", f"destination={q}",
          "properties_key=nosuch-key")
    fails("*** Not found: /api/connections/nosuch-connection", "close", "connection", "name=nosuch-connection")
    # the amq. prefix is reserved
    fails("*** Access refused: /api/queues/%2F/amq.interop-admin", "declare", "queue", "name=amq.interop-admin")
    fails("*** Access refused: /api/exchanges/%2F/amq.direct", "delete", "exchange", "name=amq.direct")
    # a user without the management tags cannot use the API
    user = new("user")
    admin("declare", "user", f"name={user}", "password=pw", "tags=")
    fails("*** Access refused: /api/queues?columns=name,messages", "list", "queues", user=user, password="pw")
    assert queue_count(q) == 0
