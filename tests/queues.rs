//! Queues over the wire: server-named queues, declare-ok counts, equivalence and argument
//! checks, exclusive and auto-delete queues, purge, delete and its conditions, and the
//! consumer cancel notification when a queue goes away.

mod common;

use std::time::Duration;

use common::raw::{self, Args, RawConn, Table};
use common::*;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection};

// ---------------------------------------------------------------------------------------
// Helpers local to this file.

async fn declare_with(ch: &Channel, name: &str, opts: QueueDeclareOptions, arguments: FieldTable) -> lapin::Result<lapin::Queue> {
    ch.queue_declare(name.into(), opts, arguments).await
}

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions { passive: true, ..Default::default() }
}

/// Passive declare on a fresh channel of `conn`: Ok((messages, consumers)) or the reply code.
async fn probe(conn: &Connection, name: &str) -> Result<(u32, u32), u16> {
    let ch = conn.create_channel().await.expect("channel");
    match declare_with(&ch, name, passive(), FieldTable::default()).await {
        Ok(q) => {
            let _ = ch.close(200, "bye".into()).await;
            Ok((q.message_count(), q.consumer_count()))
        }
        Err(e) => Err(reply_code(&e).unwrap_or_else(|| panic!("passive declare of {name}: {e:?}"))),
    }
}

/// Waits until `name` no longer exists (some deletions finish just after the reply that
/// caused them).
async fn wait_gone(conn: &Connection, name: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        match probe(conn, name).await {
            Err(404) => return,
            other => {
                assert!(tokio::time::Instant::now() < deadline, "queue {name} still there: {other:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Declare.

#[tokio::test]
async fn server_named_queues() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    let a = declare(&ch, "").await;
    let b = declare(&ch, "").await;
    let (a, b) = (a.name().as_str().to_owned(), b.name().as_str().to_owned());
    assert!(a.starts_with("amq.gen-") && a.len() > "amq.gen-".len(), "server-named queue {a:?}");
    assert!(b.starts_with("amq.gen-"), "server-named queue {b:?}");
    assert_ne!(a, b);
    // They are real queues, reachable through the default exchange.
    publish(&ch, "", &a, b"to a").await;
    assert_eq!(get_body(&ch, &a).await.as_deref(), Some(&b"to a"[..]));
    assert_eq!(probe(&conn, &b).await, Ok((0, 0)));
}

#[tokio::test]
async fn empty_queue_name_means_the_last_declared_queue() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    let q = declare(&ch, "").await;
    let name = q.name().as_str().to_owned();
    // queue.bind with an empty queue name and routing key binds that queue by its name.
    ch.queue_bind("".into(), "amq.direct".into(), "".into(), QueueBindOptions::default(), FieldTable::default()).await.expect("queue.bind");
    publish(&ch, "amq.direct", &name, b"bound by name").await;
    // basic.get and queue.purge with "" use it too.
    assert_eq!(get_body(&ch, "").await.as_deref(), Some(&b"bound by name"[..]));
    publish(&ch, "", &name, b"x").await;
    assert_eq!(ch.queue_purge("".into(), QueuePurgeOptions::default()).await.expect("purge"), 1);
}

/// Redeclares `name` (passively or not) until its declare-ok reports `want` (messages,
/// consumers): a broker may count a publish a moment after confirming the publisher's
/// next round trip (RabbitMQ does).
async fn declare_ok_until(ch: &Channel, name: &str, passive_declare: bool, want: (u32, u32)) {
    let opts = if passive_declare { passive() } else { QueueDeclareOptions::default() };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let q = declare_with(ch, name, opts, FieldTable::default()).await.expect("queue.declare");
        assert_eq!(q.name().as_str(), name);
        let got = (q.message_count(), q.consumer_count());
        if got == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "declare-ok of {name} reports (messages, consumers) = {got:?}, expected {want:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn declare_ok_reports_ready_messages_and_consumers() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    let q = declare(&ch, "q").await;
    assert_eq!((q.name().as_str(), q.message_count(), q.consumer_count()), ("q", 0, 0));
    for i in 0..3u8 {
        publish(&ch, "", "q", &[i]).await;
    }
    declare_ok_until(&ch, "q", false, (3, 0)).await;
    declare_ok_until(&ch, "q", true, (3, 0)).await;

    // A consumer with prefetch 1 holds one message unacked: it is not counted as ready.
    let cch = conn.create_channel().await.unwrap();
    cch.basic_qos(1, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = consume(&cch, "q", "c1").await;
    let first = within("delivery", consumer.next()).await.expect("stream").expect("delivery");
    declare_ok_until(&ch, "q", false, (2, 1)).await;
    declare_ok_until(&ch, "q", true, (2, 1)).await;

    let _c2 = consume(&cch, "q", "c2").await;
    // c2 got one message, c1 is still blocked by its prefetch.
    declare_ok_until(&ch, "q", false, (1, 2)).await;
    first.ack(BasicAckOptions::default()).await.expect("ack");
    // The ack lets c1 take the last one.
    declare_ok_until(&ch, "q", true, (0, 2)).await;
}

#[tokio::test]
async fn redeclare_with_other_durable_auto_delete_or_ttl_is_406() {
    let broker = start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let ttl = |n: i32| table(&[("x-message-ttl", AMQPValue::LongInt(n))]);
    declare_with(&ch, "q", QueueDeclareOptions::default(), ttl(1000)).await.expect("declare");
    // The same declaration again is fine.
    declare_with(&ch, "q", QueueDeclareOptions::default(), ttl(1000)).await.expect("same declaration");

    let cases: [(&str, QueueDeclareOptions, FieldTable); 4] = [
        ("durable", QueueDeclareOptions { durable: true, ..Default::default() }, ttl(1000)),
        ("auto_delete", QueueDeclareOptions { auto_delete: true, ..Default::default() }, ttl(1000)),
        ("another x-message-ttl", QueueDeclareOptions::default(), ttl(2000)),
        ("no x-message-ttl", QueueDeclareOptions::default(), FieldTable::default()),
    ];
    for (what, opts, a) in cases {
        let ch = conn.create_channel().await.unwrap();
        assert_code(declare_with(&ch, "q", opts, a).await, 406, &format!("redeclare with {what}"));
    }
    // Arguments outside the equivalence set do not matter.
    let ch = conn.create_channel().await.unwrap();
    let mut a = ttl(1000);
    a.insert("x-custom".into(), AMQPValue::Boolean(true));
    declare_with(&ch, "q", QueueDeclareOptions::default(), a).await.expect("redeclare with an extra, ignored argument");
}

/// RabbitMQ compares argument values by type class: an x-message-ttl of 1000 sent as a
/// long-long (as some clients encode integers) is the same as 1000 sent as a long.
#[tokio::test]
async fn redeclare_with_the_same_ttl_in_another_integer_type_is_ok() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare_with(&ch, "q", QueueDeclareOptions::default(), table(&[("x-message-ttl", AMQPValue::LongInt(1000))])).await.expect("declare");
    declare_with(&ch, "q", QueueDeclareOptions::default(), table(&[("x-message-ttl", AMQPValue::LongLongInt(1000))]))
        .await
        .expect("redeclare with x-message-ttl 1000 as a long-long");
}

/// RabbitMQ checks the exclusive flag with the owner (`check_exclusive_access(.., strict)`):
/// a mismatch is 405 RESOURCE_LOCKED, not 406.
#[tokio::test]
async fn redeclare_with_another_exclusive_flag_is_405() {
    let broker = start().await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "shared").await;
    let r = declare_with(&ch, "shared", QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default()).await;
    assert_code(r, 405, "exclusive redeclare of a shared queue");

    let ch = conn.create_channel().await.unwrap();
    declare_with(&ch, "mine", QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default()).await.expect("declare exclusive");
    let r = declare_with(&ch, "mine", QueueDeclareOptions::default(), FieldTable::default()).await;
    assert_code(r, 405, "non-exclusive redeclare of an exclusive queue by its owner");
}

/// RabbitMQ never makes an exclusive queue durable (`Durable = DurableDeclare andalso not
/// ExclusiveDeclare`), so its owner may redeclare it with either durable flag.
#[tokio::test]
async fn exclusive_queues_are_never_durable() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    let excl = |durable| QueueDeclareOptions { exclusive: true, durable, ..Default::default() };
    declare_with(&ch, "ed", excl(true), FieldTable::default()).await.expect("declare exclusive, durable");
    declare_with(&ch, "ed", excl(false), FieldTable::default()).await.expect("redeclare exclusive, not durable");
    declare_with(&ch, "ed", excl(true), FieldTable::default()).await.expect("redeclare exclusive, durable");
}

#[tokio::test]
async fn amq_prefixed_queue_names_are_403() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    assert_code(declare_with(&ch, "amq.q", QueueDeclareOptions::default(), FieldTable::default()).await, 403, "declare amq.q");
    assert_eq!(probe(&conn, "amq.q").await, Err(404));
}

#[tokio::test]
async fn passive_declare_of_a_missing_queue_is_404() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    assert_code(declare_with(&ch, "missing", passive(), FieldTable::default()).await, 404, "passive declare");
    // A channel error only, and nothing was created.
    assert_eq!(probe(&conn, "missing").await, Err(404));
}

#[tokio::test]
async fn invalid_queue_arguments_are_406() {
    let broker = start().await;
    let conn = broker.connect().await;
    let cases = [
        ("x-message-ttl", AMQPValue::LongInt(-1)),
        ("x-message-ttl", AMQPValue::LongString(LongString::from("1000"))),
        ("x-expires", AMQPValue::LongInt(0)),
        ("x-max-length", AMQPValue::LongInt(-1)),
        ("x-max-length", AMQPValue::LongString(LongString::from("ten"))),
    ];
    for (i, (key, value)) in cases.iter().enumerate() {
        let ch = conn.create_channel().await.unwrap();
        let name = format!("q{i}");
        let r = declare_with(&ch, &name, QueueDeclareOptions::default(), table(&[(key, value.clone())])).await;
        assert_code(r, 406, &format!("{key} = {value:?}"));
        assert_eq!(probe(&conn, &name).await, Err(404), "{key} = {value:?} must not create the queue");
    }
    // Valid values are accepted.
    let ch = conn.create_channel().await.unwrap();
    let ok = table(&[("x-message-ttl", AMQPValue::LongInt(0)), ("x-expires", AMQPValue::LongInt(60_000)), ("x-max-length", AMQPValue::LongInt(0))]);
    declare_with(&ch, "fine", QueueDeclareOptions::default(), ok).await.expect("valid arguments");
}

// ---------------------------------------------------------------------------------------
// Exclusive queues.

#[tokio::test]
async fn exclusive_queue_is_locked_to_its_connection() {
    let broker = start().await;
    let (owner, och) = broker.channel().await;
    declare_with(&och, "excl", QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default()).await.expect("declare");
    // Another channel of the owning connection may use it.
    let och2 = owner.create_channel().await.unwrap();
    declare_with(&och2, "excl", passive(), FieldTable::default()).await.expect("passive declare by the owner");
    let _owned = consume(&och2, "excl", "mine").await;

    let other = broker.connect().await;
    let fresh = || async { other.create_channel().await.expect("channel") };
    let r = declare_with(&fresh().await, "excl", QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default()).await;
    assert_code(r, 405, "exclusive declare from another connection");
    let r = declare_with(&fresh().await, "excl", QueueDeclareOptions::default(), FieldTable::default()).await;
    assert_code(r, 405, "declare from another connection");
    let r = declare_with(&fresh().await, "excl", passive(), FieldTable::default()).await;
    assert_code(r, 405, "passive declare from another connection");
    let r = fresh().await.basic_consume("excl".into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await;
    assert_code(r, 405, "basic.consume from another connection");
    let r = fresh().await.basic_get("excl".into(), BasicGetOptions::default()).await;
    assert_code(r, 405, "basic.get from another connection");
    let r = fresh().await.queue_purge("excl".into(), QueuePurgeOptions::default()).await;
    assert_code(r, 405, "queue.purge from another connection");
    let r = fresh().await.queue_delete("excl".into(), QueueDeleteOptions::default()).await;
    assert_code(r, 405, "queue.delete from another connection");
    let r = fresh().await.queue_bind("excl".into(), "amq.fanout".into(), "".into(), QueueBindOptions::default(), FieldTable::default()).await;
    assert_code(r, 405, "queue.bind from another connection");
    // The queue survived all that.
    assert_eq!(probe(&owner, "excl").await, Ok((0, 1)));
}

#[tokio::test]
async fn exclusive_queue_goes_when_its_connection_closes() {
    let broker = start().await;
    let (owner, och) = broker.channel().await;
    declare_with(&och, "excl", QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default()).await.expect("declare");
    publish(&och, "", "excl", b"m").await;
    let (other, _) = broker.channel().await;
    assert_eq!(probe(&other, "excl").await, Err(405));
    within("close", owner.close(200, "bye".into())).await.expect("connection.close");
    wait_gone(&other, "excl").await;
    // The name is free again.
    let ch = other.create_channel().await.unwrap();
    let q = declare(&ch, "excl").await;
    assert_eq!(q.message_count(), 0);
}

// ---------------------------------------------------------------------------------------
// Auto-delete queues.

#[tokio::test]
async fn auto_delete_queue_goes_when_its_last_consumer_cancels() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare_with(&ch, "ad", QueueDeclareOptions { auto_delete: true, ..Default::default() }, FieldTable::default()).await.expect("declare");
    // Never consumed: it stays, whatever else happens to it.
    publish(&ch, "", "ad", b"m").await;
    assert_eq!(get_body(&ch, "ad").await.as_deref(), Some(&b"m"[..]));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(probe(&conn, "ad").await, Ok((0, 0)));

    let cch = conn.create_channel().await.unwrap();
    let _c1 = consume(&cch, "ad", "c1").await;
    let _c2 = consume(&cch, "ad", "c2").await;
    cch.basic_cancel("c1".into(), BasicCancelOptions::default()).await.expect("cancel c1");
    assert_eq!(probe(&conn, "ad").await, Ok((0, 1)), "one consumer is left");
    cch.basic_cancel("c2".into(), BasicCancelOptions::default()).await.expect("cancel c2");
    wait_gone(&conn, "ad").await;
}

#[tokio::test]
async fn auto_delete_queue_goes_when_its_consumers_channel_closes() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare_with(&ch, "ad", QueueDeclareOptions { auto_delete: true, ..Default::default() }, FieldTable::default()).await.expect("declare");
    let cch = conn.create_channel().await.unwrap();
    let _c = consume(&cch, "ad", "c").await;
    cch.close(200, "bye".into()).await.expect("channel.close");
    wait_gone(&conn, "ad").await;
}

// ---------------------------------------------------------------------------------------
// Purge and delete.

#[tokio::test]
async fn purge_returns_the_ready_message_count() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    for i in 0..4u8 {
        publish(&ch, "", "q", &[i]).await;
    }
    // One message is delivered and unacked: purge leaves it alone.
    let gch = conn.create_channel().await.unwrap();
    let held = gch.basic_get("q".into(), BasicGetOptions { no_ack: false }).await.expect("get").expect("a message");
    assert_eq!(held.delivery.data, [0]);
    assert_eq!(ch.queue_purge("q".into(), QueuePurgeOptions::default()).await.expect("purge"), 3);
    assert_eq!(ch.queue_purge("q".into(), QueuePurgeOptions::default()).await.expect("purge"), 0);
    assert_eq!(get_body(&ch, "q").await, None);
    // Closing the channel returns the unacked one.
    gch.close(200, "bye".into()).await.expect("close");
    let q = declare(&ch, "q").await;
    assert_eq!(q.message_count(), 1);
    assert_eq!(get_body(&ch, "q").await.as_deref(), Some(&[0u8][..]));
}

#[tokio::test]
async fn purge_of_a_missing_queue_is_404() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    assert_code(ch.queue_purge("missing".into(), QueuePurgeOptions::default()).await, 404, "purge");
}

#[tokio::test]
async fn delete_returns_the_message_count() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    for i in 0..5u8 {
        publish(&ch, "", "q", &[i]).await;
    }
    assert_eq!(ch.queue_delete("q".into(), QueueDeleteOptions::default()).await.expect("delete"), 5);
    assert_eq!(probe(&conn, "q").await, Err(404));
    // The name can be reused for a new, empty queue.
    assert_eq!(declare(&ch, "q").await.message_count(), 0);
}

#[tokio::test]
async fn delete_if_unused_with_a_consumer_is_406() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    let cch = conn.create_channel().await.unwrap();
    let _c = consume(&cch, "q", "c").await;
    let r = ch.queue_delete("q".into(), QueueDeleteOptions { if_unused: true, ..Default::default() }).await;
    assert_code(r, 406, "if-unused delete of a consumed queue");
    assert_eq!(probe(&conn, "q").await, Ok((0, 1)));
    cch.basic_cancel("c".into(), BasicCancelOptions::default()).await.expect("cancel");
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete("q".into(), QueueDeleteOptions { if_unused: true, ..Default::default() }).await.expect("if-unused delete of an unused queue");
    assert_eq!(probe(&conn, "q").await, Err(404));
}

#[tokio::test]
async fn delete_if_empty_with_messages_is_406() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    publish(&ch, "", "q", b"m").await;
    let r = ch.queue_delete("q".into(), QueueDeleteOptions { if_empty: true, ..Default::default() }).await;
    assert_code(r, 406, "if-empty delete of a queue with a message");
    assert_eq!(probe(&conn, "q").await, Ok((1, 0)));
    let ch = conn.create_channel().await.unwrap();
    assert_eq!(get_body(&ch, "q").await.as_deref(), Some(&b"m"[..]));
    assert_eq!(ch.queue_delete("q".into(), QueueDeleteOptions { if_empty: true, ..Default::default() }).await.expect("if-empty delete of an empty queue"), 0);
    assert_eq!(probe(&conn, "q").await, Err(404));
}

#[tokio::test]
async fn delete_of_a_missing_queue_is_ok() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    assert_eq!(ch.queue_delete("missing".into(), QueueDeleteOptions::default()).await.expect("delete"), 0);
    let opts = QueueDeleteOptions { if_unused: true, if_empty: true, ..Default::default() };
    assert_eq!(ch.queue_delete("missing".into(), opts).await.expect("conditional delete"), 0);
    // The channel is still open.
    declare(&ch, "q").await;
}

#[tokio::test]
async fn unbind_of_a_missing_binding_is_ok() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    ch.queue_unbind("q".into(), "amq.direct".into(), "never-bound".into(), FieldTable::default()).await.expect("unbind");
    ch.queue_bind("q".into(), "amq.direct".into(), "k".into(), QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
    ch.queue_unbind("q".into(), "amq.direct".into(), "k".into(), FieldTable::default()).await.expect("unbind");
    ch.queue_unbind("q".into(), "amq.direct".into(), "k".into(), FieldTable::default()).await.expect("unbind again");
    publish(&ch, "amq.direct", "k", b"m").await;
    assert_eq!(get_body(&ch, "q").await, None);
}

/// RabbitMQ's `rabbit_binding:remove` treats a binding whose queue or exchange is missing as
/// already gone: unbind-ok, not 404.
#[tokio::test]
async fn unbind_with_a_missing_queue_or_exchange_is_ok() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    ch.queue_unbind("missing-q".into(), "amq.direct".into(), "k".into(), FieldTable::default()).await.expect("unbind of a missing queue");
    ch.queue_unbind("q".into(), "missing-x".into(), "k".into(), FieldTable::default()).await.expect("unbind from a missing exchange");
    ch.queue_unbind("missing-q".into(), "missing-x".into(), "k".into(), FieldTable::default()).await.expect("unbind with both ends missing");
    // The default exchange stays refused: its bindings are implicit.
    let r = ch.queue_unbind("missing-q".into(), "".into(), "k".into(), FieldTable::default()).await;
    assert_code(r, 403, "queue.unbind from the default exchange");
}

/// RabbitMQ checks exclusive access only on a binding it is about to remove: unbinding
/// another connection's exclusive queue is 405 when the binding exists, unbind-ok when not.
#[tokio::test]
async fn unbind_of_another_connections_exclusive_queue() {
    let broker = start().await;
    let (owner, och) = broker.channel().await;
    declare_with(&och, "excl", QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default()).await.expect("declare");
    och.queue_bind("excl".into(), "amq.direct".into(), "bound".into(), QueueBindOptions::default(), FieldTable::default()).await.expect("bind");

    let other = broker.connect().await;
    let ch = other.create_channel().await.expect("channel");
    ch.queue_unbind("excl".into(), "amq.direct".into(), "never-bound".into(), FieldTable::default()).await.expect("unbind of a missing binding");
    let r = ch.queue_unbind("excl".into(), "amq.direct".into(), "bound".into(), FieldTable::default()).await;
    assert_code(r, 405, "unbind of an existing binding from another connection");
    // The binding survived; its owner may remove it.
    publish(&och, "amq.direct", "bound", b"m").await;
    assert_eq!(probe(&owner, "excl").await, Ok((1, 0)));
    och.queue_unbind("excl".into(), "amq.direct".into(), "bound".into(), FieldTable::default()).await.expect("unbind by the owner");
}

/// A channel that deletes a queue its own consumer reads gets delete-ok first, then the
/// consumer's basic.cancel, as from RabbitMQ (whose channel handles the queue's cancel after
/// it has answered).
#[tokio::test]
async fn delete_ok_comes_before_the_cancel_of_the_channels_own_consumer() {
    let broker = start().await;
    within("raw", async {
        let mut c = RawConn::handshake(broker.addr).await;
        c.open_channel(1).await;
        c.send(&raw::queue_declare_frame(1, b"doomed", 0, &Table::new().encode())).await;
        c.expect_method(1, 50, 11).await;
        c.send(&raw::method_frame(1, 60, 20, Args::new().short(0).sstr("doomed").sstr("own").octet(0).empty_table())).await;
        c.expect_method(1, 60, 21).await;
        c.send(&raw::method_frame(1, 50, 40, Args::new().short(0).sstr("doomed").octet(0))).await;
        c.expect_method(1, 50, 41).await;
        let cancel = c.expect_method(1, 60, 30).await;
        assert_eq!(cancel.args()[..4], *b"\x03own", "{}", cancel.describe());
        // The channel is still open.
        c.send(&raw::queue_declare_frame(1, b"after", 0, &Table::new().encode())).await;
        c.expect_method(1, 50, 11).await;
    })
    .await;
}

#[tokio::test]
async fn deleting_a_queue_cancels_its_consumers() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    let cch = conn.create_channel().await.unwrap();
    let mut consumer = consume(&cch, "q", "c").await;
    publish(&ch, "", "q", b"before").await;
    let d = within("delivery", consumer.next()).await.expect("stream").expect("delivery");
    assert_eq!(d.data, b"before");

    // Deleted from another connection, so only the broker's basic.cancel can tell lapin.
    let (_other, och) = broker.channel().await;
    assert_eq!(och.queue_delete("q".into(), QueueDeleteOptions::default()).await.expect("delete"), 0);
    let end = tokio::time::timeout(Duration::from_secs(3), consumer.next()).await.expect("the consumer was not cancelled");
    assert!(end.is_none(), "expected the consumer stream to end, got {end:?}");
    // The consumer's channel stays open and usable.
    assert!(cch.status().connected());
    cch.basic_qos(10, BasicQosOptions::default()).await.expect("channel still open");
    // Acking a delivery of the deleted queue is still accepted.
    d.ack(BasicAckOptions::default()).await.expect("ack");
    cch.basic_qos(10, BasicQosOptions::default()).await.expect("channel still open after ack");
}

// ---------------------------------------------------------------------------------------
// Length limit and message TTL.

/// basic.get bodies until the queue is empty.
async fn bodies(ch: &Channel, queue: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(b) = get_body(ch, queue).await {
        out.push(b);
    }
    out
}

#[tokio::test]
async fn max_length_drops_the_oldest_messages() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare_with(&ch, "capped", QueueDeclareOptions::default(), table(&[("x-max-length", AMQPValue::LongInt(3))])).await.expect("declare");
    for i in 0..5u8 {
        publish(&ch, "", "capped", &[i]).await;
    }
    assert_eq!(declare_with(&ch, "capped", passive(), FieldTable::default()).await.expect("passive").message_count(), 3);
    assert_eq!(bodies(&ch, "capped").await, vec![vec![2], vec![3], vec![4]]);
}

#[tokio::test]
async fn max_length_with_reject_publish_nacks_what_does_not_fit() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    let args = table(&[("x-max-length", AMQPValue::LongInt(2)), ("x-overflow", AMQPValue::LongString(LongString::from("reject-publish")))]);
    declare_with(&ch, "full", QueueDeclareOptions::default(), args).await.expect("declare");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let mut acked = Vec::new();
    for i in 0..4u8 {
        let confirm = ch
            .basic_publish("".into(), "full".into(), BasicPublishOptions::default(), &[i], lapin::BasicProperties::default())
            .await
            .expect("publish");
        acked.push(within("confirm", confirm).await.expect("confirm").is_ack());
    }
    assert_eq!(acked, [true, true, false, false], "the third and fourth publishes are nacked");
    assert_eq!(bodies(&ch, "full").await, vec![vec![0], vec![1]]);
}

#[tokio::test]
async fn messages_expire_after_the_queue_ttl() {
    let broker = start().await;
    let (conn, ch) = broker.channel().await;
    declare_with(&ch, "ttl", QueueDeclareOptions::default(), table(&[("x-message-ttl", AMQPValue::LongInt(200))])).await.expect("declare");
    publish(&ch, "", "ttl", b"old").await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    publish(&ch, "", "ttl", b"fresh").await;
    assert_eq!(probe(&conn, "ttl").await, Ok((1, 0)), "the expired message is no longer counted");
    assert_eq!(bodies(&ch, "ttl").await, vec![b"fresh".to_vec()]);
    // A consumer present at publish time gets the message whatever the TTL.
    let cch = conn.create_channel().await.expect("channel");
    let mut c = consume(&cch, "ttl", "c").await;
    publish(&ch, "", "ttl", b"taken").await;
    assert_eq!(next(&mut c).await.data, b"taken");
}

/// Unbind resolves an empty queue name and an empty routing key as bind does: the
/// channel's last declared queue, with its name as the key.
#[tokio::test]
async fn unbind_with_empty_names_means_the_last_declared_queue() {
    let broker = start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "last").await;
    ch.queue_bind("".into(), "amq.direct".into(), "".into(), QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
    publish(&ch, "amq.direct", "last", b"1").await;
    assert_eq!(get_body(&ch, "last").await.as_deref(), Some(&b"1"[..]));
    ch.queue_unbind("".into(), "amq.direct".into(), "".into(), FieldTable::default()).await.expect("unbind");
    publish(&ch, "amq.direct", "last", b"2").await;
    assert_eq!(get_body(&ch, "last").await, None, "the binding keyed by the queue's name is gone");
}
