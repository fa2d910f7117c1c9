//! RabbitMQ's queue extensions over the wire with lapin: argument validation and queue
//! types, dead-lettering (rejected, expired, maxlen, delivery_limit) with the headers
//! RabbitMQ 3.13 writes, per-message TTL, `x-expires`, `x-max-length-bytes`, priorities and
//! single-node quorum queues, and that all of it survives a restart.

mod common;

use std::time::Duration;

use common::*;
use lapin::message::Delivery;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};
use lapin::{BasicProperties, Channel};

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

fn int(n: i64) -> AMQPValue {
    AMQPValue::LongLongInt(n)
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..Default::default() }
}

async fn declare_args(ch: &Channel, name: &str, opts: QueueDeclareOptions, args: &[(&str, AMQPValue)]) -> lapin::Result<lapin::Queue> {
    ch.queue_declare(name.into(), opts, table(args)).await
}

async fn publish_props(ch: &Channel, exchange: &str, key: &str, body: &[u8], props: BasicProperties) {
    ch.basic_publish(exchange.into(), key.into(), BasicPublishOptions::default(), body, props).await.expect("basic.publish");
}

/// basic.get without ack, failing the test when the queue is empty.
async fn get(ch: &Channel, queue: &str) -> Delivery {
    within("basic.get", ch.basic_get(queue.into(), BasicGetOptions { no_ack: false }))
        .await
        .expect("basic.get")
        .unwrap_or_else(|| panic!("queue {queue} is empty"))
        .delivery
}

/// Polls `queue` with basic.get (no-ack) until a message arrives, for up to `WAIT`.
async fn get_eventually(ch: &Channel, queue: &str) -> Delivery {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(m) = ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.expect("basic.get") {
            return m.delivery;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing arrived in {queue}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn count(ch: &Channel, queue: &str) -> u32 {
    ch.queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .expect("passive declare")
        .message_count()
}

fn header<'a>(d: &'a Delivery, key: &str) -> Option<&'a AMQPValue> {
    d.properties.headers().as_ref().and_then(|h| h.inner().get(key))
}

fn text(v: Option<&AMQPValue>) -> String {
    match v {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        Some(AMQPValue::ShortString(s)) => s.to_string(),
        other => panic!("expected a string, got {other:?}"),
    }
}

/// The x-death entries of a delivery, most recent first.
fn deaths(d: &Delivery) -> Vec<FieldTable> {
    match header(d, "x-death") {
        Some(AMQPValue::FieldArray(a)) => a
            .as_slice()
            .iter()
            .map(|v| match v {
                AMQPValue::FieldTable(t) => t.clone(),
                other => panic!("x-death entry is not a table: {other:?}"),
            })
            .collect(),
        other => panic!("no x-death array: {other:?}"),
    }
}

fn field<'a>(t: &'a FieldTable, key: &str) -> Option<&'a AMQPValue> {
    t.inner().get(key)
}

fn death_count(t: &FieldTable) -> i64 {
    match field(t, "count") {
        Some(AMQPValue::LongLongInt(n)) => *n,
        other => panic!("count: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Arguments and queue types.

/// Every bad value RabbitMQ refuses is 406 on the channel, naming the argument, and the
/// connection keeps serving.
#[tokio::test]
async fn bad_argument_values_are_406_naming_the_argument() {
    let broker = start().await;
    let conn = broker.connect().await;
    /// The argument the error must name, the arguments, the declare flags.
    type Case = (&'static str, Vec<(&'static str, AMQPValue)>, QueueDeclareOptions);
    let cases: Vec<Case> = vec![
        ("x-message-ttl", vec![("x-message-ttl", int(-1))], Default::default()),
        ("x-message-ttl", vec![("x-message-ttl", s("1000"))], Default::default()),
        ("x-message-ttl", vec![("x-message-ttl", int(315_360_000_001))], Default::default()),
        ("x-expires", vec![("x-expires", int(0))], Default::default()),
        ("x-expires", vec![("x-expires", int(-5))], Default::default()),
        ("x-expires", vec![("x-expires", AMQPValue::Boolean(true))], Default::default()),
        ("x-max-length", vec![("x-max-length", int(-1))], Default::default()),
        ("x-max-length-bytes", vec![("x-max-length-bytes", int(-1))], Default::default()),
        ("x-max-length-bytes", vec![("x-max-length-bytes", AMQPValue::Double(1.5))], Default::default()),
        ("x-max-priority", vec![("x-max-priority", int(256))], Default::default()),
        ("x-max-priority", vec![("x-max-priority", int(-1))], Default::default()),
        ("x-max-priority", vec![("x-max-priority", s("high"))], Default::default()),
        ("x-overflow", vec![("x-overflow", s("drop-tail"))], Default::default()),
        ("x-overflow", vec![("x-overflow", int(1))], Default::default()),
        ("x-dead-letter-exchange", vec![("x-dead-letter-exchange", int(1))], Default::default()),
        ("x-dead-letter-routing-key", vec![("x-dead-letter-routing-key", s("k"))], Default::default()),
        ("x-dead-letter-routing-key", vec![("x-dead-letter-exchange", s("dlx")), ("x-dead-letter-routing-key", int(1))], Default::default()),
        ("x-queue-mode", vec![("x-queue-mode", s("eager"))], Default::default()),
        ("x-queue-version", vec![("x-queue-version", int(3))], Default::default()),
        ("x-queue-type", vec![("x-queue-type", s("fancy"))], Default::default()),
        ("x-queue-type", vec![("x-queue-type", int(1))], Default::default()),
        ("x-queue-type", vec![("x-queue-type", s("stream"))], durable()),
        ("x-delivery-limit", vec![("x-queue-type", s("quorum")), ("x-delivery-limit", int(-2))], durable()),
        // Known to RabbitMQ, not implemented by Warren: refused, never silently accepted.
        ("x-single-active-consumer", vec![("x-single-active-consumer", s("yes"))], Default::default()),
        ("x-consumer-timeout", vec![("x-consumer-timeout", s("soon"))], Default::default()),
        ("x-dead-letter-strategy", vec![("x-queue-type", s("quorum")), ("x-dead-letter-strategy", s("at-least-once"))], durable()),
        // Arguments of the other queue type.
        ("x-delivery-limit", vec![("x-delivery-limit", int(3))], Default::default()),
        ("x-max-priority", vec![("x-queue-type", s("quorum")), ("x-max-priority", int(5))], durable()),
        ("x-max-age", vec![("x-max-age", s("1D"))], Default::default()),
    ];
    for (i, (named, args, opts)) in cases.into_iter().enumerate() {
        let ch = conn.create_channel().await.expect("channel");
        let err = declare_args(&ch, &format!("bad{i}"), opts, &args).await.expect_err("refused");
        assert_eq!(reply_code(&err), Some(406), "{args:?}: {err:?}");
        assert!(reply_text(&err).contains(named), "{args:?}: text {:?} should name {named}", reply_text(&err));
    }
    // Still serving, on the same connection.
    let ch = conn.create_channel().await.expect("channel");
    declare(&ch, "fine").await;
    let text = reply_text(&declare_args(&ch, "bad", Default::default(), &[("x-max-length", int(-1))]).await.expect_err("refused"));
    assert_eq!(text, "PRECONDITION_FAILED - invalid arg 'x-max-length' for queue 'bad' in vhost '/': {value_negative,-1}");
}

/// Arguments RabbitMQ accepts and ignores, and names it does not know, are accepted.
#[tokio::test]
async fn ignored_and_unknown_arguments_are_accepted() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    let args = [
        ("x-queue-mode", s("lazy")),
        ("x-queue-master-locator", s("min-masters")),
        ("x-queue-version", int(2)),
        ("x-my-app-tag", s("anything")),
        ("x-max-priority", int(0)),
    ];
    declare_args(&ch, "lenient", Default::default(), &args).await.expect("accepted");
    let quorum = [("x-queue-type", s("quorum")), ("x-quorum-initial-group-size", int(3)), ("x-max-in-memory-length", int(10)), ("x-queue-leader-locator", s("balanced"))];
    declare_args(&ch, "lenient.q", durable(), &quorum).await.expect("accepted");
}

/// Consume arguments: the ones of another queue type and the ones Warren does not act on
/// are 406 naming them; RabbitMQ's mirroring-era flag is accepted.
#[tokio::test]
async fn consume_arguments_are_checked() {
    let broker = start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.expect("channel");
    declare(&ch, "cq").await;
    declare_args(&ch, "qq", durable(), &[("x-queue-type", s("quorum"))]).await.expect("quorum");
    for (queue, arg, value) in [
        ("cq", "x-priority", s("high")),
        ("cq", "x-credit", int(5)),
        ("cq", "x-stream-offset", s("first")),
        ("cq", "x-cancel-on-ha-failover", int(1)),
        ("qq", "x-cancel-on-ha-failover", AMQPValue::Boolean(true)),
    ] {
        let ch = conn.create_channel().await.expect("channel");
        let err = ch.basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), table(&[(arg, value)])).await.expect_err(arg);
        assert_eq!(reply_code(&err), Some(406), "{arg} on {queue}");
        assert!(reply_text(&err).contains(arg), "{}", reply_text(&err));
    }
    let ch = conn.create_channel().await.expect("channel");
    ch.basic_consume("cq".into(), "".into(), BasicConsumeOptions::default(), table(&[("x-cancel-on-ha-failover", AMQPValue::Boolean(true)), ("x-app", int(1))]))
        .await
        .expect("accepted");
}

#[tokio::test]
async fn quorum_queues_must_be_durable_shared_and_kept() {
    let broker = start().await;
    let conn = broker.connect().await;
    let q = || vec![("x-queue-type", s("quorum"))];
    let cases = [
        (QueueDeclareOptions::default(), "non-durable"),
        (QueueDeclareOptions { durable: true, auto_delete: true, ..Default::default() }, "auto-delete"),
        (QueueDeclareOptions { durable: true, exclusive: true, ..Default::default() }, "exclusive-owner"),
    ];
    for (opts, what) in cases {
        let ch = conn.create_channel().await.expect("channel");
        let err = declare_args(&ch, "qq", opts, &q()).await.expect_err(what);
        assert_eq!(reply_code(&err), Some(406), "{what}");
        assert!(reply_text(&err).contains(&format!("invalid property '{what}'")), "{}", reply_text(&err));
    }
    let ch = conn.create_channel().await.expect("channel");
    declare_args(&ch, "qq", durable(), &q()).await.expect("quorum queue");
    // The type is part of the equivalence; a missing type equals classic.
    let err = declare_args(&ch, "qq", durable(), &[]).await.expect_err("redeclared as classic");
    assert_eq!(reply_code(&err), Some(406));
    assert!(reply_text(&err).contains("inequivalent arg 'x-queue-type'"), "{}", reply_text(&err));
    let ch = conn.create_channel().await.expect("channel");
    declare_args(&ch, "cq", durable(), &[]).await.expect("classic");
    declare_args(&ch, "cq", durable(), &[("x-queue-type", s("classic"))]).await.expect("classic is the default type");
    // A quorum consumer refuses a channel-wide prefetch, as RabbitMQ 3.13 (a connection error).
    let ch = conn.create_channel().await.expect("channel");
    ch.basic_qos(10, BasicQosOptions { global: true }).await.expect("qos");
    let err = ch.basic_consume("qq".into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await.expect_err("global qos");
    assert_eq!(reply_code(&err), Some(540));
}

// ---------------------------------------------------------------------------------------
// Dead-lettering.

/// A queue `name` dead-lettering to exchange `dlx` (with `extra` arguments), and a queue
/// `name.dlq` bound to `dlx` with routing key `#` through a topic exchange.
async fn with_dlq(ch: &Channel, name: &str, extra: &[(&str, AMQPValue)]) -> String {
    let dlx = format!("{name}.dlx");
    let dlq = format!("{name}.dlq");
    ch.exchange_declare(dlx.as_str().into(), lapin::ExchangeKind::Topic, ExchangeDeclareOptions::default(), FieldTable::default()).await.expect("dlx");
    declare(ch, &dlq).await;
    ch.queue_bind(dlq.as_str().into(), dlx.as_str().into(), "#".into(), QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
    let mut args = vec![("x-dead-letter-exchange", s(&dlx))];
    args.extend(extra.iter().cloned());
    declare_args(ch, name, Default::default(), &args).await.expect("declare");
    dlq
}

#[tokio::test]
async fn rejected_messages_are_dead_lettered_with_rabbitmqs_headers() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    let dlq = with_dlq(&ch, "work", &[]).await;
    ch.exchange_declare("in".into(), lapin::ExchangeKind::Direct, ExchangeDeclareOptions::default(), FieldTable::default()).await.expect("in");
    ch.queue_bind("work".into(), "in".into(), "job".into(), QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
    let props = BasicProperties::default().with_delivery_mode(2).with_message_id("m1".into());
    publish_props(&ch, "in", "job", b"one", props).await;
    let d = get(&ch, "work").await;
    d.reject(BasicRejectOptions { requeue: false }).await.expect("reject");

    let dead = get_eventually(&ch, &dlq).await;
    assert_eq!(dead.data, b"one");
    assert_eq!(dead.exchange.as_str(), "work.dlx", "republished to the dead-letter exchange");
    assert_eq!(dead.routing_key.as_str(), "job", "with its own routing key");
    assert_eq!(dead.properties.message_id().as_ref().map(|m| m.as_str()), Some("m1"));
    assert_eq!(*dead.properties.delivery_mode(), Some(2), "delivery mode kept");
    let x = deaths(&dead);
    assert_eq!(x.len(), 1);
    assert_eq!(death_count(&x[0]), 1);
    assert_eq!(text(field(&x[0], "reason")), "rejected");
    assert_eq!(text(field(&x[0], "queue")), "work");
    assert_eq!(text(field(&x[0], "exchange")), "in");
    assert!(matches!(field(&x[0], "time"), Some(AMQPValue::Timestamp(t)) if *t > 1_600_000_000));
    assert_eq!(field(&x[0], "routing-keys"), Some(&AMQPValue::FieldArray(FieldArray::from(vec![s("job")]))));
    for (h, v) in [("x-first-death-reason", "rejected"), ("x-first-death-queue", "work"), ("x-first-death-exchange", "in"), ("x-last-death-reason", "rejected"), ("x-last-death-queue", "work"), ("x-last-death-exchange", "in")] {
        assert_eq!(text(header(&dead, h)), v, "{h}");
    }
    // nack with requeue=false from a consumer, multiple, dead-letters both.
    publish(&ch, "in", "job", b"two").await;
    publish(&ch, "in", "job", b"three").await;
    let _a = get(&ch, "work").await;
    let b = get(&ch, "work").await;
    b.nack(BasicNackOptions { multiple: true, requeue: false }).await.expect("nack");
    assert_eq!(get_eventually(&ch, &dlq).await.data, b"two");
    assert_eq!(get_eventually(&ch, &dlq).await.data, b"three");
    // requeue=true does not dead-letter.
    publish(&ch, "in", "job", b"four").await;
    get(&ch, "work").await.nack(BasicNackOptions { multiple: false, requeue: true }).await.expect("nack");
    assert_eq!(get(&ch, "work").await.data, b"four");
    assert_eq!(count(&ch, &dlq).await, 0);
}

#[tokio::test]
async fn dead_letter_routing_key_replaces_the_key_and_a_missing_exchange_drops() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "parking").await;
    declare_args(&ch, "src", Default::default(), &[("x-dead-letter-exchange", s("")), ("x-dead-letter-routing-key", s("parking"))]).await.expect("declare");
    let cc = table(&[("CC", AMQPValue::FieldArray(FieldArray::from(vec![s("elsewhere")])))]);
    publish_props(&ch, "", "src", b"m", BasicProperties::default().with_headers(cc)).await;
    get(&ch, "src").await.reject(BasicRejectOptions { requeue: false }).await.expect("reject");
    let dead = get_eventually(&ch, "parking").await;
    assert_eq!(dead.routing_key.as_str(), "parking");
    assert_eq!(text(header(&dead, "x-first-death-exchange")), "");
    assert_eq!(field(&deaths(&dead)[0], "routing-keys"), Some(&AMQPValue::FieldArray(FieldArray::from(vec![s("src"), s("elsewhere")]))), "routing-keys include CC");

    declare_args(&ch, "orphan", Default::default(), &[("x-dead-letter-exchange", s("no-such-exchange"))]).await.expect("declare");
    publish(&ch, "", "orphan", b"x").await;
    get(&ch, "orphan").await.reject(BasicRejectOptions { requeue: false }).await.expect("reject");
    // Dropped, and the broker keeps serving.
    assert_eq!(count(&ch, "orphan").await, 0);
}

/// A dead letter without a dead-letter routing key goes out with every key it was
/// published with, BCC included, while x-death's routing-keys leave BCC out.
#[tokio::test]
async fn dead_letters_route_with_bcc_keys_that_x_death_does_not_show() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    ch.exchange_declare("dl".into(), lapin::ExchangeKind::Direct, ExchangeDeclareOptions::default(), FieldTable::default()).await.expect("dl");
    declare(&ch, "hidden").await;
    ch.queue_bind("hidden".into(), "dl".into(), "secret".into(), QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
    declare_args(&ch, "src", Default::default(), &[("x-dead-letter-exchange", s("dl"))]).await.expect("declare");
    let bcc = table(&[("BCC", AMQPValue::FieldArray(FieldArray::from(vec![s("secret")])))]);
    publish_props(&ch, "", "src", b"m", BasicProperties::default().with_headers(bcc)).await;
    let d = get(&ch, "src").await;
    assert!(header(&d, "BCC").is_none(), "BCC removed at publish");
    d.reject(BasicRejectOptions { requeue: false }).await.expect("reject");
    let dead = get_eventually(&ch, "hidden").await;
    assert_eq!(field(&deaths(&dead)[0], "routing-keys"), Some(&AMQPValue::FieldArray(FieldArray::from(vec![s("src")]))));
}

#[tokio::test]
async fn expired_messages_are_dead_lettered_on_time_without_any_client_touching_the_queue() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    let dlq = with_dlq(&ch, "timed", &[("x-message-ttl", int(150))]).await;
    publish(&ch, "", "timed", b"queue-ttl").await;
    // A per-message TTL shorter than the queue's wins, even behind a longer one.
    publish_props(&ch, "", "timed", b"own-ttl", BasicProperties::default().with_expiration("30".into())).await;
    let mut c = consume(&ch, &dlq, "watch").await;
    let first = next(&mut c).await;
    assert_eq!(first.data, b"own-ttl", "the shorter TTL expires first, though second in line");
    assert_eq!(text(field(&deaths(&first)[0], "reason")), "expired");
    assert_eq!(text(field(&deaths(&first)[0], "original-expiration")), "30");
    assert!(first.properties.expiration().is_none(), "expiration removed");
    let second = next(&mut c).await;
    assert_eq!(second.data, b"queue-ttl");
    assert!(field(&deaths(&second)[0], "original-expiration").is_none());
}

#[tokio::test]
async fn per_message_ttl_values_are_checked_and_zero_means_now_or_never() {
    let broker = start().await;
    let conn = broker.connect().await;
    for bad in ["abc", "-1", "1.5", "", "315360000001"] {
        let ch = conn.create_channel().await.expect("channel");
        declare(&ch, "q").await;
        let code = close_code(&conn, publish_props(&ch, "", "q", b"x", BasicProperties::default().with_expiration(bad.into()))).await;
        assert_eq!(code, 406, "expiration {bad:?}");
    }
    let ch = conn.create_channel().await.expect("channel");
    let dlq = with_dlq(&ch, "zero", &[]).await;
    // No consumer: expires at once (dead-lettered).
    publish_props(&ch, "", "zero", b"nobody", BasicProperties::default().with_expiration("0".into())).await;
    assert_eq!(get_eventually(&ch, &dlq).await.data, b"nobody");
    // A consumer with room: delivered.
    let mut c = ch.basic_consume("zero".into(), "z".into(), BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default()).await.expect("consume");
    publish_props(&ch, "", "zero", b"taken", BasicProperties::default().with_expiration("0".into())).await;
    assert_eq!(next(&mut c).await.data, b"taken");
    // A requeued message keeps its deadline.
    declare_args(&ch, "keep", Default::default(), &[("x-message-ttl", int(300))]).await.expect("declare");
    publish(&ch, "", "keep", b"k").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    get(&ch, "keep").await.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.expect("nack");
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(count(&ch, "keep").await, 0, "expired at its original deadline");
}

#[tokio::test]
async fn length_limits_dead_letter_with_reason_maxlen() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm");
    let dlq = with_dlq(&ch, "capped", &[("x-max-length", int(2))]).await;
    for b in [b"1", b"2", b"3"] {
        publish(&ch, "", "capped", b).await;
    }
    let dead = get_eventually(&ch, &dlq).await;
    assert_eq!(dead.data, b"1", "drop-head dead-letters the oldest");
    assert_eq!(text(field(&deaths(&dead)[0], "reason")), "maxlen");
    // reject-publish-dlx: the new message is refused (nacked) and dead-lettered.
    let dlq2 = with_dlq(&ch, "strict", &[("x-max-length", int(1)), ("x-overflow", s("reject-publish-dlx"))]).await;
    let ok = ch.basic_publish("".into(), "strict".into(), BasicPublishOptions::default(), b"a", BasicProperties::default()).await.expect("publish").await.expect("confirm");
    assert!(ok.is_ack());
    let refused = ch.basic_publish("".into(), "strict".into(), BasicPublishOptions::default(), b"b", BasicProperties::default()).await.expect("publish").await.expect("confirm");
    assert!(refused.is_nack(), "over the limit: nacked");
    assert_eq!(get_eventually(&ch, &dlq2).await.data, b"b");
    assert_eq!(count(&ch, "strict").await, 1);
}

#[tokio::test]
async fn max_length_bytes_counts_body_octets() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm");
    declare_args(&ch, "bytes", Default::default(), &[("x-max-length-bytes", int(10))]).await.expect("declare");
    for b in [&b"aaaa"[..], b"bbbb", b"cccc"] {
        publish(&ch, "", "bytes", b).await;
    }
    assert_eq!(count(&ch, "bytes").await, 2, "12 octets > 10: the oldest goes");
    assert_eq!(get_body(&ch, "bytes").await.as_deref(), Some(&b"bbbb"[..]));
    let args = [("x-max-length-bytes", int(10)), ("x-max-length", int(5)), ("x-overflow", s("reject-publish"))];
    declare_args(&ch, "bytes2", Default::default(), &args).await.expect("declare");
    let acks: Vec<bool> = {
        let mut v = Vec::new();
        for b in [&b"123456"[..], b"1234", b"x"] {
            let c = ch.basic_publish("".into(), "bytes2".into(), BasicPublishOptions::default(), b, BasicProperties::default()).await.expect("publish").await.expect("confirm");
            v.push(c.is_ack());
        }
        v
    };
    assert_eq!(acks, vec![true, true, false], "the third would make 11 octets");
}

/// Two queues that dead-letter into each other, both at their length limit, under
/// publishers on two connections: every message ends somewhere or is dropped by the cycle
/// rule, and nothing deadlocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_dead_lettering_into_each_other_neither_deadlock_nor_loop() {
    let broker = start().await;
    let (_c0, ch) = broker.channel().await;
    for (me, other) in [("ping", "pong"), ("pong", "ping")] {
        let args = [("x-max-length", int(1)), ("x-dead-letter-exchange", s("")), ("x-dead-letter-routing-key", s(other))];
        declare_args(&ch, me, Default::default(), &args).await.expect("declare");
    }
    let mut tasks = Vec::new();
    for q in ["ping", "pong"] {
        let conn = broker.connect().await;
        tasks.push(tokio::spawn(async move {
            let ch = conn.create_channel().await.expect("channel");
            for i in 0..2000u32 {
                publish(&ch, "", q, &i.to_be_bytes()).await;
            }
            ch.queue_declare(q.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await.expect("sync");
        }));
    }
    for t in tasks {
        within("publishers", t).await.expect("publisher task");
    }
    assert_eq!(count(&ch, "ping").await, 1);
    assert_eq!(count(&ch, "pong").await, 1);
}

/// RabbitMQ's cycle rule: a message that would die again in a queue it died in, with no
/// rejection since, is dropped; a client rejection in the loop keeps it going, counting.
#[tokio::test]
async fn dead_letter_cycles_end_unless_a_client_rejects() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    // Expiring back into itself: dropped at once.
    declare_args(&ch, "self", Default::default(), &[("x-message-ttl", int(20)), ("x-dead-letter-exchange", s(""))]).await.expect("declare");
    publish(&ch, "", "self", b"loop").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(count(&ch, "self").await, 0);
    // Rejected in "a", expires in "b" back to "a": a client takes part, so it continues.
    declare_args(&ch, "a", Default::default(), &[("x-dead-letter-exchange", s("")), ("x-dead-letter-routing-key", s("b"))]).await.expect("a");
    declare_args(&ch, "b", Default::default(), &[("x-message-ttl", int(20)), ("x-dead-letter-exchange", s("")), ("x-dead-letter-routing-key", s("a"))]).await.expect("b");
    publish(&ch, "", "a", b"m").await;
    for round in 1..=3i64 {
        let d = get(&ch, "a").await;
        if round > 1 {
            let x = deaths(&d);
            assert_eq!(x.len(), 2, "one entry per queue and reason");
            assert_eq!(text(field(&x[0], "queue")), "b", "most recent first");
            assert_eq!(death_count(&x[0]), round - 1);
            assert_eq!(death_count(&x[1]), round - 1);
            assert_eq!(text(header(&d, "x-first-death-queue")), "a");
            assert_eq!(text(header(&d, "x-last-death-queue")), "b");
        }
        d.reject(BasicRejectOptions { requeue: false }).await.expect("reject");
        let deadline = tokio::time::Instant::now() + WAIT;
        while count(&ch, "a").await == 0 {
            assert!(tokio::time::Instant::now() < deadline, "round {round}: message did not come back");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// x-expires.

#[tokio::test]
async fn unused_queues_expire_and_use_postpones_it() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare_args(&ch, "brief", Default::default(), &[("x-expires", int(300))]).await.expect("declare");
    publish(&ch, "", "brief", b"x").await;
    // Used (basic.get, declare) every 150 ms: stays.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let _ = ch.basic_get("brief".into(), BasicGetOptions { no_ack: true }).await.expect("get");
    }
    // A consumer keeps it too.
    let c = consume(&ch, "brief", "keeper").await;
    tokio::time::sleep(Duration::from_millis(450)).await;
    count(&ch, "brief").await;
    ch.basic_cancel(c.tag(), BasicCancelOptions::default()).await.expect("cancel");
    // Then nothing for longer than x-expires: deleted, with nobody touching it.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let ch2 = broker.channel().await.1;
    let err = ch2.queue_declare("brief".into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await.expect_err("expired");
    assert_eq!(reply_code(&err), Some(404));
}

// ---------------------------------------------------------------------------------------
// Priorities.

#[tokio::test]
async fn priority_queues_deliver_highest_first_fifo_within_a_priority() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare_args(&ch, "prio", Default::default(), &[("x-max-priority", int(5))]).await.expect("declare");
    let sent: [(u8, Option<u8>); 7] = [(1, None), (2, Some(3)), (3, Some(9)), (4, Some(3)), (5, Some(5)), (6, Some(0)), (7, Some(1))];
    for (body, p) in sent {
        let props = p.map_or_else(BasicProperties::default, |p| BasicProperties::default().with_priority(p));
        publish_props(&ch, "", "prio", &[body], props).await;
    }
    // Priority 9 counts as the maximum, 5; body 3 was published before body 5.
    let first = get(&ch, "prio").await;
    assert_eq!(first.data, [3]);
    // A requeued message returns to its place in its priority.
    first.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.expect("nack");
    let mut order = Vec::new();
    while let Some(b) = get_body(&ch, "prio").await {
        order.push(b[0]);
    }
    assert_eq!(order, vec![3, 5, 2, 4, 7, 1, 6]);
    // Consumers get the same order.
    for (body, p) in sent {
        let props = p.map_or_else(BasicProperties::default, |p| BasicProperties::default().with_priority(p));
        publish_props(&ch, "", "prio", &[body], props).await;
    }
    let mut c = ch.basic_consume("prio".into(), "".into(), BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default()).await.expect("consume");
    let mut got = Vec::new();
    for _ in 0..7 {
        got.push(next(&mut c).await.data[0]);
    }
    assert_eq!(got, vec![3, 5, 2, 4, 7, 1, 6]);
}

// ---------------------------------------------------------------------------------------
// Quorum queues.

#[tokio::test]
async fn quorum_delivery_limit_counts_returns_then_dead_letters() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "poison").await;
    let args = [("x-queue-type", s("quorum")), ("x-delivery-limit", int(2)), ("x-dead-letter-exchange", s("")), ("x-dead-letter-routing-key", s("poison"))];
    declare_args(&ch, "jobs", durable(), &args).await.expect("declare");
    publish(&ch, "", "jobs", b"bad").await;
    for attempt in 0..3i64 {
        let d = get(&ch, "jobs").await;
        assert_eq!(d.redelivered, attempt > 0);
        match header(&d, "x-delivery-count") {
            None => assert_eq!(attempt, 0, "no count on the first delivery"),
            Some(AMQPValue::LongLongInt(n)) => assert_eq!(*n, attempt),
            Some(other) => panic!("x-delivery-count: {other:?}"),
        }
        d.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.expect("nack");
    }
    let dead = get_eventually(&ch, "poison").await;
    assert_eq!(dead.data, b"bad");
    assert_eq!(text(field(&deaths(&dead)[0], "reason")), "delivery_limit");
    assert_eq!(count(&ch, "jobs").await, 0);
}

/// Restart (graceful): a quorum queue keeps transient messages; TTL deadlines, priorities,
/// the x-expires countdown and dead-lettered persistent messages come back.
#[tokio::test]
async fn extensions_survive_a_restart() {
    let broker = start().await;
    let dir = broker.data_dir.clone();
    {
        let (conn, ch) = broker.channel().await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm");
        let persistent = || BasicProperties::default().with_delivery_mode(2);
        declare_args(&ch, "qq", durable(), &[("x-queue-type", s("quorum"))]).await.expect("quorum");
        publish(&ch, "", "qq", b"transient in quorum").await;
        declare_args(&ch, "dlq", durable(), &[]).await.expect("dlq");
        declare_args(&ch, "ttl", durable(), &[("x-dead-letter-exchange", s("")), ("x-dead-letter-routing-key", s("dlq"))]).await.expect("ttl");
        publish_props(&ch, "", "ttl", b"expires later", persistent().with_expiration("3000".into())).await;
        declare_args(&ch, "prio", durable(), &[("x-max-priority", int(3))]).await.expect("prio");
        for (b, p) in [(1u8, 1u8), (2, 3), (3, 2)] {
            publish_props(&ch, "", "prio", &[b], persistent().with_priority(p)).await;
        }
        declare_args(&ch, "rejects", durable(), &[("x-dead-letter-exchange", s("")), ("x-dead-letter-routing-key", s("dlq"))]).await.expect("rejects");
        publish_props(&ch, "", "rejects", b"dead", persistent()).await;
        assert!(within("confirms", ch.wait_for_confirms()).await.expect("confirms").is_empty());
        get(&ch, "rejects").await.reject(BasicRejectOptions { requeue: false }).await.expect("reject");
        declare_args(&ch, "expiring", durable(), &[("x-expires", int(4000))]).await.expect("expiring");
        // Let the rejection and the last-use record reach the store.
        count(&ch, "dlq").await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        std::mem::forget(conn);
    }
    broker.stop().await;
    let started = tokio::time::Instant::now();
    let broker = start_with(|c| c.data_dir = dir.clone()).await;
    let (_conn, ch) = broker.channel().await;
    assert_eq!(get_body(&ch, "qq").await.as_deref(), Some(&b"transient in quorum"[..]));
    let dead = get_eventually(&ch, "dlq").await;
    assert_eq!(dead.data, b"dead");
    assert_eq!(*dead.properties.delivery_mode(), Some(2));
    let mut order = Vec::new();
    while let Some(b) = get_body(&ch, "prio").await {
        order.push(b[0]);
    }
    assert_eq!(order, vec![2, 3, 1]);
    assert_eq!(count(&ch, "ttl").await, 1, "not expired yet");
    let expired = get_eventually(&ch, "dlq").await;
    assert_eq!(expired.data, b"expires later");
    assert!(started.elapsed() < Duration::from_millis(2800), "the deadline is absolute: it ran on during the restart");
    // The x-expires countdown went on from before the restart (4 s in all, 1 s of them
    // before it).
    tokio::time::sleep(Duration::from_millis(3500).saturating_sub(started.elapsed())).await;
    let err = ch.queue_declare("expiring".into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await.expect_err("expired");
    assert_eq!(reply_code(&err), Some(404));
}
