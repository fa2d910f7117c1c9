//! Exchanges over the wire: the default exchange, the predeclared `amq.*` exchanges,
//! declare/delete rules and their reply codes, the four routing algorithms,
//! exchange-to-exchange bindings, internal and auto-delete exchanges, and mandatory returns.

mod common;

use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};

// ---------------------------------------------------------------------------------------
// Helpers local to this file.


fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

async fn declare_exchange(ch: &Channel, name: &str, kind: ExchangeKind) {
    ch.exchange_declare(name.into(), kind, ExchangeDeclareOptions::default(), FieldTable::default())
        .await
        .unwrap_or_else(|e| panic!("exchange.declare {name}: {e:?}"));
}

async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) {
    bind_args(ch, queue, exchange, key, FieldTable::default()).await;
}

async fn bind_args(ch: &Channel, queue: &str, exchange: &str, key: &str, args: FieldTable) {
    ch.queue_bind(queue.into(), exchange.into(), key.into(), QueueBindOptions::default(), args)
        .await
        .unwrap_or_else(|e| panic!("queue.bind {queue} to {exchange} with {key:?}: {e:?}"));
}

async fn exchange_exists(ch_conn: &Connection, name: &str) -> bool {
    let ch = ch_conn.create_channel().await.expect("channel");
    let r = ch.exchange_declare(name.into(), ExchangeKind::Direct, ExchangeDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await;
    match r {
        Ok(()) => {
            let _ = ch.close(200, "bye".into()).await;
            true
        }
        Err(e) => {
            assert_eq!(reply_code(&e), Some(404), "passive exchange.declare {name}: {e:?}");
            false
        }
    }
}

/// Every message body in `queue`, in order, taken with basic.get.
async fn drain(ch: &Channel, queue: &str) -> Vec<String> {
    within("drain", async {
        let mut out = Vec::new();
        while let Some(b) = get_body(ch, queue).await {
            out.push(String::from_utf8(b).expect("utf8 body"));
        }
        out
    })
    .await
}

/// Publishes each key as both routing key and body.
async fn publish_keys(ch: &Channel, exchange: &str, keys: &[&str]) {
    for k in keys {
        publish(ch, exchange, k, k.as_bytes()).await;
    }
}

async fn publish_with_headers(ch: &Channel, exchange: &str, body: &str, headers: Option<FieldTable>) {
    let props = match headers {
        Some(h) => BasicProperties::default().with_headers(h),
        None => BasicProperties::default(),
    };
    ch.basic_publish(exchange.into(), "".into(), BasicPublishOptions::default(), body.as_bytes(), props).await.expect("basic.publish");
}

// ---------------------------------------------------------------------------------------
// The default exchange.

#[tokio::test]
async fn default_exchange_routes_by_queue_name() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "q1").await;
    declare(&ch, "q2").await;
    publish(&ch, "", "q1", b"for q1").await;
    publish(&ch, "", "q2", b"for q2").await;
    publish(&ch, "", "no-such-queue", b"dropped").await;
    assert_eq!(drain(&ch, "q1").await, ["for q1"]);
    assert_eq!(drain(&ch, "q2").await, ["for q2"]);
    // The unroutable publish did not break the channel.
    declare(&ch, "q3").await;
}

#[tokio::test]
async fn default_exchange_cannot_be_declared_deleted_or_bound() {
    let broker = start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "q").await;
    // Each refusal closes its channel, so every attempt gets a fresh one.
    let fresh = || async { conn.create_channel().await.expect("channel") };

    let r = fresh().await.exchange_declare("".into(), ExchangeKind::Direct, ExchangeDeclareOptions::default(), FieldTable::default()).await;
    assert_code(r, 403, "exchange.declare of the default exchange");
    let r = fresh()
        .await
        .exchange_declare("".into(), ExchangeKind::Direct, ExchangeDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await;
    assert_code(r, 403, "passive exchange.declare of the default exchange");
    let r = fresh().await.exchange_delete("".into(), ExchangeDeleteOptions::default()).await;
    assert_code(r, 403, "exchange.delete of the default exchange");
    let r = fresh().await.queue_bind("q".into(), "".into(), "q".into(), QueueBindOptions::default(), FieldTable::default()).await;
    assert_code(r, 403, "queue.bind to the default exchange");
    let r = fresh().await.queue_unbind("q".into(), "".into(), "q".into(), FieldTable::default()).await;
    assert_code(r, 403, "queue.unbind from the default exchange");
    let r = fresh().await.exchange_bind("".into(), "amq.direct".into(), "k".into(), ExchangeBindOptions::default(), FieldTable::default()).await;
    assert_code(r, 403, "exchange.bind with the default exchange as destination");
    let r = fresh().await.exchange_bind("amq.direct".into(), "".into(), "k".into(), ExchangeBindOptions::default(), FieldTable::default()).await;
    assert_code(r, 403, "exchange.bind with the default exchange as source");
    let r = fresh().await.exchange_unbind("".into(), "amq.direct".into(), "k".into(), ExchangeUnbindOptions::default(), FieldTable::default()).await;
    assert_code(r, 403, "exchange.unbind with the default exchange as destination");
    let r = fresh().await.exchange_unbind("amq.direct".into(), "".into(), "k".into(), ExchangeUnbindOptions::default(), FieldTable::default()).await;
    assert_code(r, 403, "exchange.unbind with the default exchange as source");

    // Channel errors only: the connection and the first channel still work.
    publish(&ch, "", "q", b"still routed").await;
    assert_eq!(drain(&ch, "q").await, ["still routed"]);
}

// ---------------------------------------------------------------------------------------
// Predeclared and reserved names.

#[tokio::test]
async fn amq_exchanges_are_predeclared() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    for (name, kind) in [
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
        ("amq.match", ExchangeKind::Headers),
    ] {
        ch.exchange_declare(name.into(), kind, ExchangeDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
            .await
            .unwrap_or_else(|e| panic!("passive declare of {name}: {e:?}"));
    }
    // They route like their types.
    declare(&ch, "q").await;
    bind(&ch, "q", "amq.direct", "k").await;
    bind(&ch, "q", "amq.fanout", "").await;
    bind(&ch, "q", "amq.topic", "t.*").await;
    publish(&ch, "amq.direct", "k", b"direct").await;
    publish(&ch, "amq.direct", "other", b"not routed").await;
    publish(&ch, "amq.fanout", "whatever", b"fanout").await;
    publish(&ch, "amq.topic", "t.x", b"topic").await;
    assert_eq!(drain(&ch, "q").await, ["direct", "fanout", "topic"]);
    assert!(exchange_exists(&conn, "amq.headers").await);
}

#[tokio::test]
async fn declaring_a_new_amq_exchange_is_refused() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    let r = ch.exchange_declare("amq.foo".into(), ExchangeKind::Direct, ExchangeDeclareOptions::default(), FieldTable::default()).await;
    assert_code(r, 403, "exchange.declare amq.foo");
    assert!(!exchange_exists(&conn, "amq.foo").await);
    // Deleting a predeclared exchange is refused too.
    let ch = conn.create_channel().await.unwrap();
    assert_code(ch.exchange_delete("amq.direct".into(), ExchangeDeleteOptions::default()).await, 403, "exchange.delete amq.direct");
    assert!(exchange_exists(&conn, "amq.direct").await);
}

/// RabbitMQ checks the `amq.` prefix only when the exchange does not exist: redeclaring a
/// predeclared exchange with its own attributes succeeds (clients commonly do this).
#[tokio::test]
async fn redeclaring_a_predeclared_exchange_with_its_attributes_is_ok() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    ch.exchange_declare("amq.topic".into(), ExchangeKind::Topic, ExchangeDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
        .await
        .expect("redeclare amq.topic as topic, durable");
}

/// Redeclaring a predeclared exchange with other attributes is 406 (an equivalence
/// failure), as for any existing exchange, not 403.
#[tokio::test]
async fn redeclaring_a_predeclared_exchange_with_other_attributes_is_406() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    let r = ch
        .exchange_declare("amq.direct".into(), ExchangeKind::Fanout, ExchangeDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
        .await;
    assert_code(r, 406, "redeclare amq.direct as fanout");
}

// ---------------------------------------------------------------------------------------
// Declare and delete.

#[tokio::test]
async fn redeclare_with_other_attributes_is_406() {
    let broker = start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_exchange(&ch, "x", ExchangeKind::Direct).await;
    // The same declaration again is fine.
    declare_exchange(&ch, "x", ExchangeKind::Direct).await;

    let base = ExchangeDeclareOptions::default();
    for (what, kind, opts) in [
        ("type", ExchangeKind::Fanout, base),
        ("durable", ExchangeKind::Direct, ExchangeDeclareOptions { durable: true, ..base }),
        ("auto_delete", ExchangeKind::Direct, ExchangeDeclareOptions { auto_delete: true, ..base }),
        ("internal", ExchangeKind::Direct, ExchangeDeclareOptions { internal: true, ..base }),
    ] {
        let ch = conn.create_channel().await.unwrap();
        let r = ch.exchange_declare("x".into(), kind, opts, FieldTable::default()).await;
        assert_code(r, 406, &format!("redeclare with another {what}"));
    }
    // The original is untouched.
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "q").await;
    bind(&ch, "q", "x", "k").await;
    publish(&ch, "x", "k", b"m").await;
    assert_eq!(drain(&ch, "q").await, ["m"]);
}

#[tokio::test]
async fn unknown_exchange_type_is_a_503_connection_error() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    let r = ch.exchange_declare("x".into(), ExchangeKind::Custom("no-such-type".into()), ExchangeDeclareOptions::default(), FieldTable::default()).await;
    assert_code(r, 503, "exchange.declare with an unknown type");
    // COMMAND_INVALID closes the whole connection.
    within("connection closed", async {
        while conn.status().connected() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(conn.create_channel().await.is_err(), "the connection should be closed");
    // Nothing was created.
    let (c2, _) = broker.channel().await;
    assert!(!exchange_exists(&c2, "x").await);
}

#[tokio::test]
async fn passive_declare_of_a_missing_exchange_is_404() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    let r = ch.exchange_declare("missing".into(), ExchangeKind::Direct, ExchangeDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await;
    assert_code(r, 404, "passive exchange.declare of a missing exchange");
    // A channel error: the connection is fine, and passive declare did not create it.
    assert!(!exchange_exists(&conn, "missing").await);
}

#[tokio::test]
async fn publish_to_a_missing_exchange_is_404() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    let code = close_code(&conn, async {
        publish(&ch, "missing", "k", b"m").await;
    })
    .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn delete_is_idempotent() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare_exchange(&ch, "x", ExchangeKind::Fanout).await;
    ch.exchange_delete("x".into(), ExchangeDeleteOptions::default()).await.expect("first delete");
    assert!(!exchange_exists(&conn, "x").await);
    ch.exchange_delete("x".into(), ExchangeDeleteOptions::default()).await.expect("second delete");
    ch.exchange_delete("never-existed".into(), ExchangeDeleteOptions::default()).await.expect("delete of a missing exchange");
    ch.exchange_delete("never-existed".into(), ExchangeDeleteOptions { if_unused: true, ..Default::default() }).await.expect("if-unused delete of a missing exchange");
}

#[tokio::test]
async fn delete_if_unused_with_bindings_is_406() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare_exchange(&ch, "x", ExchangeKind::Direct).await;
    declare(&ch, "q").await;
    bind(&ch, "q", "x", "k").await;
    let r = ch.exchange_delete("x".into(), ExchangeDeleteOptions { if_unused: true, ..Default::default() }).await;
    assert_code(r, 406, "if-unused delete of a bound exchange");
    assert!(exchange_exists(&conn, "x").await);

    // Without bindings as a source it goes, even when it is another exchange's destination.
    let ch = conn.create_channel().await.unwrap();
    ch.queue_unbind("q".into(), "x".into(), "k".into(), FieldTable::default()).await.expect("unbind");
    ch.exchange_bind("x".into(), "amq.fanout".into(), "".into(), ExchangeBindOptions::default(), FieldTable::default()).await.expect("exchange.bind");
    ch.exchange_delete("x".into(), ExchangeDeleteOptions { if_unused: true, ..Default::default() }).await.expect("if-unused delete of an unused exchange");
    assert!(!exchange_exists(&conn, "x").await);
    // Its binding as a destination went with it: a new "x" is not bound to amq.fanout.
    declare_exchange(&ch, "x", ExchangeKind::Direct).await;
    bind(&ch, "q", "x", "").await;
    publish(&ch, "amq.fanout", "", b"m").await;
    assert_eq!(drain(&ch, "q").await, Vec::<String>::new());
}

#[tokio::test]
async fn deleting_an_exchange_removes_its_bindings() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare_exchange(&ch, "x", ExchangeKind::Fanout).await;
    declare(&ch, "q").await;
    bind(&ch, "q", "x", "").await;
    ch.exchange_delete("x".into(), ExchangeDeleteOptions::default()).await.expect("delete");
    // A new exchange of the same name starts without bindings.
    declare_exchange(&ch, "x", ExchangeKind::Fanout).await;
    publish(&ch, "x", "", b"m").await;
    assert_eq!(drain(&ch, "q").await, Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------
// Routing.

#[tokio::test]
async fn direct_routing() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare_exchange(&ch, "d", ExchangeKind::Direct).await;
    for q in ["q1", "q2", "q12"] {
        declare(&ch, q).await;
    }
    bind(&ch, "q1", "d", "k1").await;
    bind(&ch, "q2", "d", "k2").await;
    bind(&ch, "q12", "d", "k1").await;
    bind(&ch, "q12", "d", "k2").await;
    // The same binding twice is one binding.
    bind(&ch, "q1", "d", "k1").await;
    publish_keys(&ch, "d", &["k1", "k2", "k3", "K1", ""]).await;
    assert_eq!(drain(&ch, "q1").await, ["k1"]);
    assert_eq!(drain(&ch, "q2").await, ["k2"]);
    assert_eq!(drain(&ch, "q12").await, ["k1", "k2"]);

    // Unbinding one key leaves the other.
    ch.queue_unbind("q12".into(), "d".into(), "k1".into(), FieldTable::default()).await.expect("unbind");
    publish_keys(&ch, "d", &["k1", "k2"]).await;
    assert_eq!(drain(&ch, "q1").await, ["k1"]);
    assert_eq!(drain(&ch, "q12").await, ["k2"]);
}

#[tokio::test]
async fn fanout_routes_to_every_bound_queue_once() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare_exchange(&ch, "f", ExchangeKind::Fanout).await;
    for q in ["a", "b", "c", "unbound"] {
        declare(&ch, q).await;
    }
    bind(&ch, "a", "f", "").await;
    bind(&ch, "b", "f", "ignored").await;
    bind(&ch, "c", "f", "x").await;
    // Two bindings of one queue still deliver one copy.
    bind(&ch, "c", "f", "y").await;
    publish_keys(&ch, "f", &["one", "two"]).await;
    for q in ["a", "b", "c"] {
        assert_eq!(drain(&ch, q).await, ["one", "two"], "queue {q}");
    }
    assert_eq!(drain(&ch, "unbound").await, Vec::<String>::new());
}

#[tokio::test]
async fn topic_routing_with_wildcards() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare_exchange(&ch, "t", ExchangeKind::Topic).await;
    let patterns = ["#", "a.#", "*.b", "a.*.c", "#.c", "a.#.c", "*", "a", "", "a.*", "*.*"];
    for (i, p) in patterns.iter().enumerate() {
        let q = format!("q{i}");
        declare(&ch, &q).await;
        bind(&ch, &q, "t", p).await;
    }
    let keys = ["a", "a.b", "x.b", "a.x.c", "a.c", "a.x.y.c", "c", "b", "", "a..c", ".b", "a.", "a.b.c.d"];
    publish_keys(&ch, "t", &keys).await;

    let expected: [(&str, &[&str]); 11] = [
        ("#", &["a", "a.b", "x.b", "a.x.c", "a.c", "a.x.y.c", "c", "b", "", "a..c", ".b", "a.", "a.b.c.d"]),
        // `#` matches zero words too: "a.#" matches "a".
        ("a.#", &["a", "a.b", "a.x.c", "a.c", "a.x.y.c", "a..c", "a.", "a.b.c.d"]),
        // An empty word is a word: ".b" is ["", "b"].
        ("*.b", &["a.b", "x.b", ".b"]),
        ("a.*.c", &["a.x.c", "a..c"]),
        ("#.c", &["a.x.c", "a.c", "a.x.y.c", "c", "a..c"]),
        ("a.#.c", &["a.x.c", "a.c", "a.x.y.c", "a..c"]),
        // `*` needs exactly one word: not "" (zero words).
        ("*", &["a", "c", "b"]),
        ("a", &["a"]),
        ("", &[""]),
        ("a.*", &["a.b", "a.c", "a."]),
        ("*.*", &["a.b", "x.b", "a.c", ".b", "a."]),
    ];
    for (i, (pattern, want)) in expected.iter().enumerate() {
        assert_eq!(patterns[i], *pattern);
        let got = drain(&ch, &format!("q{i}")).await;
        assert_eq!(got, *want, "pattern {pattern:?}");
    }
}

#[tokio::test]
async fn topic_unbind_stops_routing() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    bind(&ch, "q", "amq.topic", "a.*").await;
    bind(&ch, "q", "amq.topic", "#.z").await;
    publish_keys(&ch, "amq.topic", &["a.z"]).await;
    // Matching two patterns still delivers once.
    assert_eq!(drain(&ch, "q").await, ["a.z"]);
    ch.queue_unbind("q".into(), "amq.topic".into(), "a.*".into(), FieldTable::default()).await.expect("unbind");
    publish_keys(&ch, "amq.topic", &["a.b", "a.z", "y.z"]).await;
    assert_eq!(drain(&ch, "q").await, ["a.z", "y.z"]);
}

#[tokio::test]
async fn headers_exchange_matching() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare_exchange(&ch, "h", ExchangeKind::Headers).await;
    let one = AMQPValue::LongInt(1);
    let bindings = [
        ("all", table(&[("x-match", text("all")), ("a", one.clone()), ("b", text("x"))])),
        ("any", table(&[("x-match", text("any")), ("a", one.clone()), ("b", text("x"))])),
        // No x-match means all.
        ("default", table(&[("a", one.clone())])),
        // all / any ignore other x- keys in the binding.
        ("all-ignores-x", table(&[("x-match", text("all")), ("a", one.clone()), ("x-k", text("v"))])),
        ("all-with-x", table(&[("x-match", text("all-with-x")), ("a", one.clone()), ("x-k", text("v"))])),
        ("any-with-x", table(&[("x-match", text("any-with-x")), ("x-k", text("v"))])),
        // A void binding value only asks for the header to be present.
        ("present", table(&[("c", AMQPValue::Void)])),
    ];
    for (q, args) in &bindings {
        declare(&ch, q).await;
        bind_args(&ch, q, "h", "", args.clone()).await;
    }
    let messages = [
        ("m1", Some(table(&[("a", one.clone()), ("b", text("x"))]))),
        ("m2", Some(table(&[("a", one.clone())]))),
        ("m3", Some(table(&[("a", one.clone()), ("x-k", text("v"))]))),
        ("m4", Some(table(&[("b", text("y"))]))),
        ("m5", None),
        // Integer types compare by value.
        ("m6", Some(table(&[("a", AMQPValue::LongLongInt(1)), ("b", text("x"))]))),
        ("m7", Some(table(&[("x-k", text("v")), ("c", AMQPValue::Boolean(false))]))),
        ("m8", Some(table(&[("a", text("1")), ("b", text("x"))]))),
    ];
    for (body, headers) in &messages {
        publish_with_headers(&ch, "h", body, headers.clone()).await;
    }
    let expected: [(&str, &[&str]); 7] = [
        ("all", &["m1", "m6"]),
        ("any", &["m1", "m2", "m3", "m6", "m8"]),
        ("default", &["m1", "m2", "m3", "m6"]),
        ("all-ignores-x", &["m1", "m2", "m3", "m6"]),
        ("all-with-x", &["m3"]),
        ("any-with-x", &["m3", "m7"]),
        ("present", &["m7"]),
    ];
    for (q, want) in expected {
        assert_eq!(drain(&ch, q).await, want, "binding {q}");
    }
}

#[tokio::test]
async fn headers_binding_with_an_invalid_x_match_is_406() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare_exchange(&ch, "h", ExchangeKind::Headers).await;
    declare(&ch, "q").await;
    let r = ch.queue_bind("q".into(), "h".into(), "".into(), QueueBindOptions::default(), table(&[("x-match", text("some"))])).await;
    assert_code(r, 406, "x-match = some");
}

// ---------------------------------------------------------------------------------------
// Exchange-to-exchange bindings.

#[tokio::test]
async fn exchange_to_exchange_binding_routes_and_unbind_stops_it() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare_exchange(&ch, "src", ExchangeKind::Direct).await;
    declare_exchange(&ch, "dst", ExchangeKind::Topic).await;
    declare(&ch, "q").await;
    bind(&ch, "q", "dst", "k.*").await;
    ch.exchange_bind("dst".into(), "src".into(), "k.1".into(), ExchangeBindOptions::default(), FieldTable::default()).await.expect("exchange.bind");
    // The source's binding key filters, then the destination routes with the same key.
    publish_keys(&ch, "src", &["k.1", "k.2", "x"]).await;
    assert_eq!(drain(&ch, "q").await, ["k.1"]);
    // Publishing to the destination directly still works.
    publish_keys(&ch, "dst", &["k.2"]).await;
    assert_eq!(drain(&ch, "q").await, ["k.2"]);

    ch.exchange_unbind("dst".into(), "src".into(), "k.1".into(), ExchangeUnbindOptions::default(), FieldTable::default()).await.expect("exchange.unbind");
    publish_keys(&ch, "src", &["k.1"]).await;
    assert_eq!(drain(&ch, "q").await, Vec::<String>::new());
    // Unbinding again (a missing binding) is fine.
    ch.exchange_unbind("dst".into(), "src".into(), "k.1".into(), ExchangeUnbindOptions::default(), FieldTable::default()).await.expect("exchange.unbind again");
}

#[tokio::test]
async fn exchange_bind_with_a_missing_exchange_is_404() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    let r = ch.exchange_bind("missing".into(), "amq.fanout".into(), "".into(), ExchangeBindOptions::default(), FieldTable::default()).await;
    assert_code(r, 404, "missing destination");
    let ch = conn.create_channel().await.unwrap();
    let r = ch.exchange_bind("amq.fanout".into(), "missing".into(), "".into(), ExchangeBindOptions::default(), FieldTable::default()).await;
    assert_code(r, 404, "missing source");
    let ch = conn.create_channel().await.unwrap();
    let r = ch.queue_bind("missing-q".into(), "amq.fanout".into(), "".into(), QueueBindOptions::default(), FieldTable::default()).await;
    assert_code(r, 404, "queue.bind of a missing queue");
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "q").await;
    let r = ch.queue_bind("q".into(), "missing".into(), "".into(), QueueBindOptions::default(), FieldTable::default()).await;
    assert_code(r, 404, "queue.bind to a missing exchange");
}

/// As RabbitMQ's `rabbit_binding:remove`: unbinding from or to an exchange that does not
/// exist answers unbind-ok, where binding is 404.
#[tokio::test]
async fn exchange_unbind_with_a_missing_exchange_is_ok() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    let unbind = |d: &'static str, s: &'static str| ch.exchange_unbind(d.into(), s.into(), "k".into(), ExchangeUnbindOptions::default(), FieldTable::default());
    unbind("missing", "amq.fanout").await.expect("missing destination");
    unbind("amq.fanout", "missing").await.expect("missing source");
    unbind("missing", "missing-too").await.expect("both missing");
    // The channel is still open.
    declare_exchange(&ch, "x", ExchangeKind::Direct).await;
}

#[tokio::test]
async fn exchange_cycle_delivers_once() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    for x in ["e1", "e2", "e3"] {
        declare_exchange(&ch, x, ExchangeKind::Fanout).await;
    }
    let eb = |d: &'static str, s: &'static str| {
        let ch = ch.clone();
        async move { ch.exchange_bind(d.into(), s.into(), "".into(), ExchangeBindOptions::default(), FieldTable::default()).await.expect("exchange.bind") }
    };
    eb("e2", "e1").await;
    eb("e3", "e2").await;
    eb("e1", "e3").await;
    declare(&ch, "q").await;
    // The queue is reachable from two exchanges of the cycle.
    bind(&ch, "q", "e3", "").await;
    bind(&ch, "q", "e1", "").await;
    for x in ["e1", "e2", "e3"] {
        publish(&ch, x, "k", x.as_bytes()).await;
    }
    assert_eq!(drain(&ch, "q").await, ["e1", "e2", "e3"]);
}

// ---------------------------------------------------------------------------------------
// Internal and auto-delete exchanges.

#[tokio::test]
async fn publishing_to_an_internal_exchange_is_403() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    ch.exchange_declare("int".into(), ExchangeKind::Fanout, ExchangeDeclareOptions { internal: true, ..Default::default() }, FieldTable::default())
        .await
        .expect("declare internal");
    declare(&ch, "q").await;
    bind(&ch, "q", "int", "").await;
    // It is reachable through an exchange-to-exchange binding.
    declare_exchange(&ch, "front", ExchangeKind::Fanout).await;
    ch.exchange_bind("int".into(), "front".into(), "".into(), ExchangeBindOptions::default(), FieldTable::default()).await.expect("exchange.bind");
    publish(&ch, "front", "", b"via front").await;
    assert_eq!(drain(&ch, "q").await, ["via front"]);

    let code = close_code(&conn, async {
        publish(&ch, "int", "", b"direct").await;
    })
    .await;
    assert_eq!(code, 403);
    let ch = conn.create_channel().await.unwrap();
    assert_eq!(drain(&ch, "q").await, Vec::<String>::new());
}

#[tokio::test]
async fn auto_delete_exchange_goes_with_its_last_binding() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    ch.exchange_declare("ad".into(), ExchangeKind::Direct, ExchangeDeclareOptions { auto_delete: true, ..Default::default() }, FieldTable::default())
        .await
        .expect("declare");
    // Never bound: it stays.
    assert!(exchange_exists(&conn, "ad").await);
    declare(&ch, "q").await;
    bind(&ch, "q", "ad", "a").await;
    bind(&ch, "q", "ad", "b").await;
    ch.queue_unbind("q".into(), "ad".into(), "a".into(), FieldTable::default()).await.expect("unbind a");
    assert!(exchange_exists(&conn, "ad").await, "one binding is left");
    ch.queue_unbind("q".into(), "ad".into(), "b".into(), FieldTable::default()).await.expect("unbind b");
    assert!(!exchange_exists(&conn, "ad").await, "the last binding was removed");

    // Deleting the bound queue removes the binding, and so the exchange.
    ch.exchange_declare("ad2".into(), ExchangeKind::Fanout, ExchangeDeclareOptions { auto_delete: true, ..Default::default() }, FieldTable::default())
        .await
        .expect("declare");
    declare(&ch, "q2").await;
    bind(&ch, "q2", "ad2", "").await;
    ch.queue_delete("q2".into(), QueueDeleteOptions::default()).await.expect("queue.delete");
    assert!(!exchange_exists(&conn, "ad2").await, "the bound queue was deleted");

    // So does removing an exchange-to-exchange binding where it is the source.
    ch.exchange_declare("ad3".into(), ExchangeKind::Fanout, ExchangeDeclareOptions { auto_delete: true, ..Default::default() }, FieldTable::default())
        .await
        .expect("declare");
    ch.exchange_bind("amq.fanout".into(), "ad3".into(), "".into(), ExchangeBindOptions::default(), FieldTable::default()).await.expect("exchange.bind");
    ch.exchange_unbind("amq.fanout".into(), "ad3".into(), "".into(), ExchangeUnbindOptions::default(), FieldTable::default()).await.expect("exchange.unbind");
    assert!(!exchange_exists(&conn, "ad3").await, "its exchange binding was removed");

    // Deletions cascade: ad4 -> ad5 -> q5; deleting q5 empties ad5, whose deletion
    // removes the binding from ad4, which goes too.
    for x in ["ad4", "ad5"] {
        ch.exchange_declare(x.into(), ExchangeKind::Fanout, ExchangeDeclareOptions { auto_delete: true, ..Default::default() }, FieldTable::default())
            .await
            .expect("declare");
    }
    ch.exchange_bind("ad5".into(), "ad4".into(), "".into(), ExchangeBindOptions::default(), FieldTable::default()).await.expect("exchange.bind");
    declare(&ch, "q5").await;
    bind(&ch, "q5", "ad5", "").await;
    ch.queue_delete("q5".into(), QueueDeleteOptions::default()).await.expect("queue.delete");
    assert!(!exchange_exists(&conn, "ad5").await, "ad5 lost its only binding");
    assert!(!exchange_exists(&conn, "ad4").await, "ad4 lost its only binding when ad5 went");
}

// ---------------------------------------------------------------------------------------
// Mandatory publishing.

#[tokio::test]
async fn mandatory_unroutable_publish_is_returned_with_312() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    declare(&ch, "q").await;
    bind(&ch, "q", "amq.direct", "routed").await;
    let props = BasicProperties::default().with_content_type("text/plain".into()).with_priority(3);

    let confirm = ch
        .basic_publish("amq.direct".into(), "nowhere".into(), BasicPublishOptions { mandatory: true, ..Default::default() }, b"lost", props.clone())
        .await
        .expect("publish");
    let confirm = within("confirm", confirm).await.expect("confirmation");
    assert!(confirm.is_ack());
    let returned = confirm.take_message().expect("a basic.return for the unroutable mandatory message");
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.reply_text.as_str(), "NO_ROUTE");
    assert_eq!(returned.delivery.exchange.as_str(), "amq.direct");
    assert_eq!(returned.delivery.routing_key.as_str(), "nowhere");
    assert_eq!(returned.delivery.data, b"lost");
    assert_eq!(returned.delivery.properties, props);

    // Routable mandatory messages and unroutable non-mandatory ones are not returned.
    let c1 = ch
        .basic_publish("amq.direct".into(), "routed".into(), BasicPublishOptions { mandatory: true, ..Default::default() }, b"ok", BasicProperties::default())
        .await
        .expect("publish");
    let c2 = ch.basic_publish("amq.direct".into(), "nowhere".into(), BasicPublishOptions::default(), b"dropped", BasicProperties::default()).await.expect("publish");
    assert!(within("confirm", c1).await.expect("confirm").take_message().is_none());
    assert!(within("confirm", c2).await.expect("confirm").take_message().is_none());
    // The default exchange returns a message for a missing queue too.
    let c3 = ch
        .basic_publish("".into(), "no-such-queue".into(), BasicPublishOptions { mandatory: true, ..Default::default() }, b"x", BasicProperties::default())
        .await
        .expect("publish");
    let returned = within("confirm", c3).await.expect("confirm").take_message().expect("returned");
    assert_eq!((returned.reply_code, returned.delivery.routing_key.as_str()), (312, "no-such-queue"));
    assert_eq!(drain(&ch, "q").await, ["ok"]);
}

// ---------------------------------------------------------------------------------------
// Alternate exchanges.

/// A message its exchange routes nowhere goes to the `alternate-exchange` (and on through
/// that one's alternate); a mandatory message an alternate routes is not returned; a cycle
/// of alternates ends; an exchange that routes the message ignores its alternate.
#[tokio::test]
async fn alternate_exchanges_take_what_their_exchange_cannot_route() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    let ae = |name: &str| table(&[("alternate-exchange", AMQPValue::LongString(name.into()))]);
    let opts = ExchangeDeclareOptions::default();
    ch.exchange_declare("main".into(), ExchangeKind::Direct, opts, ae("first")).await.expect("main");
    ch.exchange_declare("first".into(), ExchangeKind::Direct, opts, ae("second")).await.expect("first");
    ch.exchange_declare("second".into(), ExchangeKind::Fanout, opts, ae("main")).await.expect("second");
    for q in ["routed", "unrouted"] {
        declare(&ch, q).await;
    }
    ch.queue_bind("routed".into(), "main".into(), "known".into(), QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm");
    let mandatory = BasicPublishOptions { mandatory: true, ..Default::default() };
    // No binding anywhere yet for the unknown key: around the cycle, then returned.
    let c = ch.basic_publish("main".into(), "other".into(), mandatory, b"lost", BasicProperties::default()).await.expect("publish").await.expect("confirm");
    assert!(c.take_message().is_some(), "unroutable through every alternate: returned");
    ch.queue_bind("unrouted".into(), "second".into(), "".into(), QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
    let c = ch.basic_publish("main".into(), "other".into(), mandatory, b"caught", BasicProperties::default()).await.expect("publish").await.expect("confirm");
    assert!(c.take_message().is_none(), "routed by an alternate: not returned");
    publish(&ch, "main", "known", b"direct").await;
    assert_eq!(get_body(&ch, "unrouted").await.as_deref(), Some(&b"caught"[..]));
    assert_eq!(get_body(&ch, "routed").await.as_deref(), Some(&b"direct"[..]));
    assert_eq!(get_body(&ch, "unrouted").await, None, "a routed message does not also go to the alternate");
    // A non-string alternate-exchange is 406.
    let err = ch.exchange_declare("bad".into(), ExchangeKind::Direct, opts, table(&[("alternate-exchange", AMQPValue::LongInt(1))])).await.expect_err("406");
    assert_eq!(reply_code(&err), Some(406));
}

// ---------------------------------------------------------------------------------------
// Sender-selected distribution.

/// `CC` and `BCC` (arrays of strings) add routing keys on the same exchange; each queue
/// gets the message once; `BCC` is gone from what consumers see, `CC` stays.
#[tokio::test]
async fn cc_and_bcc_headers_add_routing_keys_and_bcc_is_removed() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    for (q, key) in [("qa", "a"), ("qb", "b"), ("qc", "c")] {
        declare(&ch, q).await;
        ch.queue_bind(q.into(), "amq.direct".into(), key.into(), QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
    }
    let array = |keys: &[&str]| AMQPValue::FieldArray(keys.iter().map(|k| text(k)).collect::<Vec<_>>().into());
    let headers = table(&[("CC", array(&["b", "a"])), ("BCC", array(&["c"])), ("other", text("kept"))]);
    ch.basic_publish("amq.direct".into(), "a".into(), BasicPublishOptions::default(), b"m", BasicProperties::default().with_headers(headers))
        .await
        .expect("publish");
    for q in ["qa", "qb", "qc"] {
        let m = within("get", ch.basic_get(q.into(), BasicGetOptions { no_ack: true })).await.expect("get").unwrap_or_else(|| panic!("{q} got nothing"));
        let h = m.delivery.properties.headers().clone().expect("headers");
        assert!(h.inner().contains_key("CC"), "{q}: CC stays");
        assert!(!h.inner().contains_key("BCC"), "{q}: BCC removed");
        assert_eq!(h.inner().get("other"), Some(&text("kept")));
    }
    for q in ["qa", "qb", "qc"] {
        assert_eq!(get_body(&ch, q).await, None, "{q}: exactly once");
    }
}

/// A channel remembers the exchange and the default-exchange queue it published to last;
/// deleting and declaring again (from another channel) must never leave it publishing to
/// the old ones: a queue recreated under the same name gets the next message, an exchange
/// recreated with another type routes by its new type, and a deleted one is 404.
#[tokio::test]
async fn publishing_follows_deletes_and_redeclares_of_the_same_names() {
    let broker = start().await;
    let (conn, publisher) = broker.channel().await;
    let admin = conn.create_channel().await.expect("channel");
    declare(&admin, "same").await;
    publish(&publisher, "", "same", b"1").await;
    admin.queue_delete("same".into(), QueueDeleteOptions::default()).await.expect("delete");
    declare(&admin, "same").await;
    publish(&publisher, "", "same", b"2").await;
    assert_eq!(within("get", get_body(&admin, "same")).await, Some(b"2".to_vec()), "the new queue got the message");

    let fanout = ExchangeDeclareOptions::default();
    admin.exchange_declare("x.same".into(), ExchangeKind::Fanout, fanout, FieldTable::default()).await.expect("fanout");
    admin.queue_bind("same".into(), "x.same".into(), "k".into(), QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
    publish(&publisher, "x.same", "other-key", b"3").await;
    assert_eq!(within("get", get_body(&admin, "same")).await, Some(b"3".to_vec()), "fanout ignores the key");
    admin.exchange_delete("x.same".into(), ExchangeDeleteOptions::default()).await.expect("delete");
    admin.exchange_declare("x.same".into(), ExchangeKind::Direct, fanout, FieldTable::default()).await.expect("direct");
    admin.queue_bind("same".into(), "x.same".into(), "k".into(), QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
    publish(&publisher, "x.same", "other-key", b"4").await;
    publish(&publisher, "x.same", "k", b"5").await;
    assert_eq!(within("get", get_body(&admin, "same")).await, Some(b"5".to_vec()), "the direct exchange routes by key");
    admin.exchange_delete("x.same".into(), ExchangeDeleteOptions::default()).await.expect("delete");
    let code = close_code(&conn, async {
        publish(&publisher, "x.same", "k", b"6").await;
    })
    .await;
    assert_eq!(code, 404, "the deleted exchange is gone for the channel that used it");
}
