//! Users, vhosts and permissions over TCP with lapin: RabbitMQ's access-control table
//! walked operation by operation with and without each permission, topic permissions,
//! user_id and impersonators, user and vhost limits, and vhost and user deletion.

mod common;

use std::time::Duration;

use common::*;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use warren::access::{Permission, TopicPermission, UserLimits, VhostInfo, VhostLimits};

const VHOST: &str = "orders";

fn perm(configure: &str, write: &str, read: &str) -> Permission {
    Permission { configure: configure.into(), write: write.into(), read: read.into() }
}

fn uri(b: &TestBroker, user: &str, vhost: &str) -> String {
    let vhost = vhost.replace('/', "%2f");
    format!("amqp://{user}:{user}-secret@{}/{vhost}", b.addr)
}

async fn connect_as(b: &TestBroker, user: &str, vhost: &str) -> lapin::Result<Connection> {
    Connection::connect(&uri(b, user, vhost), ConnectionProperties::default()).await
}

async fn channel_as(b: &TestBroker, user: &str) -> (Connection, Channel) {
    let conn = connect_as(b, user, VHOST).await.unwrap_or_else(|e| panic!("{user} connects: {e:?}"));
    let ch = conn.create_channel().await.expect("channel");
    (conn, ch)
}

/// A broker with vhost `orders`, an `admin` with every permission there, and the users
/// of the table: `full`, and `noconf`, `nowrite`, `noread`, each lacking one permission.
async fn setup() -> TestBroker {
    let b = start().await;
    let broker = &b.broker;
    broker.add_vhost(VhostInfo { name: VHOST.into(), ..VhostInfo::default() }).expect("vhost");
    for (user, p) in [
        ("admin", perm(".*", ".*", ".*")),
        ("full", perm(".*", ".*", ".*")),
        ("noconf", perm("", ".*", ".*")),
        ("nowrite", perm(".*", "", ".*")),
        ("noread", perm(".*", ".*", "")),
    ] {
        broker.access.add_user(user, &format!("{user}-secret"), &[]).expect("user");
        broker.access.set_permissions(user, VHOST, p).expect("permissions");
    }
    b
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Nothing,
    Configure,
    Write,
    Read,
    /// Write on the destination, then read on the source (bindings).
    WriteThenRead,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    DeclareExchange,
    DeclareExchangePassive,
    DeleteExchange,
    DeclareQueue,
    DeclareQueuePassive,
    DeclareServerNamed,
    DeleteQueue,
    Purge,
    QueueBind,
    QueueUnbind,
    ExchangeBind,
    Publish,
    PublishDefault,
    Get,
    Consume,
}

const TABLE: &[(Op, Need)] = &[
    (Op::DeclareExchange, Need::Configure),
    (Op::DeclareExchangePassive, Need::Nothing),
    (Op::DeleteExchange, Need::Configure),
    (Op::DeclareQueue, Need::Configure),
    (Op::DeclareQueuePassive, Need::Nothing),
    (Op::DeclareServerNamed, Need::Configure),
    (Op::DeleteQueue, Need::Configure),
    (Op::Purge, Need::Read),
    (Op::QueueBind, Need::WriteThenRead),
    (Op::QueueUnbind, Need::WriteThenRead),
    (Op::ExchangeBind, Need::WriteThenRead),
    (Op::Publish, Need::Write),
    (Op::PublishDefault, Need::Write),
    (Op::Get, Need::Read),
    (Op::Consume, Need::Read),
];

/// Runs `op` as `user` on a fresh connection: `None` when it succeeded, else the reply
/// code and text of the close it caused.
async fn run(b: &TestBroker, user: &str, op: Op, i: usize) -> Option<(u16, String)> {
    let (conn, ch) = channel_as(b, user).await;
    let mut events = Box::pin(conn.events_listener());
    let opts = FieldTable::default();
    let result: lapin::Result<()> = match op {
        Op::DeclareExchange => ch.exchange_declare(format!("app.new.{user}.{i}").into(), lapin::ExchangeKind::Direct, ExchangeDeclareOptions::default(), opts).await,
        Op::DeclareExchangePassive => {
            ch.exchange_declare("app.src".into(), lapin::ExchangeKind::Direct, ExchangeDeclareOptions { passive: true, ..Default::default() }, opts).await
        }
        Op::DeleteExchange => ch.exchange_delete(format!("app.del.{user}").into(), ExchangeDeleteOptions::default()).await,
        Op::DeclareQueue => ch.queue_declare(format!("app.nq.{user}").into(), QueueDeclareOptions::default(), opts).await.map(drop),
        Op::DeclareQueuePassive => ch.queue_declare("app.q".into(), QueueDeclareOptions { passive: true, ..Default::default() }, opts).await.map(drop),
        Op::DeclareServerNamed => ch.queue_declare("".into(), QueueDeclareOptions { exclusive: true, ..Default::default() }, opts).await.map(drop),
        Op::DeleteQueue => ch.queue_delete(format!("app.dq.{user}").into(), QueueDeleteOptions::default()).await.map(drop),
        Op::Purge => ch.queue_purge("app.q".into(), QueuePurgeOptions::default()).await.map(drop),
        Op::QueueBind => ch.queue_bind("app.q".into(), "app.src".into(), format!("k.{user}").into(), QueueBindOptions::default(), opts).await,
        Op::QueueUnbind => ch.queue_unbind("app.q".into(), "app.src".into(), "bound".into(), opts).await,
        Op::ExchangeBind => ch.exchange_bind("app.dst".into(), "app.src".into(), format!("k.{user}").into(), ExchangeBindOptions::default(), opts).await,
        Op::Publish | Op::PublishDefault => {
            let exchange = if matches!(op, Op::Publish) { "app.src" } else { "" };
            let sent = ch.basic_publish(exchange.into(), "app.q".into(), BasicPublishOptions::default(), b"x", BasicProperties::default()).await.map(drop);
            // A round trip: the publish's refusal (a channel close) has arrived by then.
            sent.and(ch.basic_qos(0, BasicQosOptions::default()).await)
        }
        Op::Get => ch.basic_get("app.q".into(), BasicGetOptions { no_ack: true }).await.map(drop),
        Op::Consume => ch.basic_consume("app.q".into(), "".into(), BasicConsumeOptions { no_ack: true, ..Default::default() }, opts).await.map(drop),
    };
    let outcome = match result {
        Ok(()) => None,
        Err(e) if reply_code(&e).is_some() => Some((reply_code(&e).unwrap_or_default(), reply_text(&e))),
        Err(_) => {
            // The channel was closed under the operation: the close is in the events.
            let wait = async {
                while let Some(event) = events.next().await {
                    if let lapin::Event::Error(e) = event {
                        return Some((reply_code(&e).unwrap_or_default(), reply_text(&e)));
                    }
                }
                None
            };
            tokio::time::timeout(Duration::from_secs(5), wait).await.ok().flatten()
        }
    };
    let _ = conn.close(200, "done".into()).await;
    outcome
}

#[tokio::test]
async fn every_operation_needs_exactly_the_permission_rabbitmq_checks() {
    let b = setup().await;
    let (_admin, ch) = channel_as(&b, "admin").await;
    for x in ["app.src", "app.dst"] {
        ch.exchange_declare(x.into(), lapin::ExchangeKind::Direct, ExchangeDeclareOptions::default(), FieldTable::default()).await.expect("exchange");
    }
    ch.queue_declare("app.q".into(), QueueDeclareOptions::default(), FieldTable::default()).await.expect("queue");
    ch.queue_bind("app.q".into(), "app.src".into(), "bound".into(), QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
    for user in ["full", "noconf", "nowrite", "noread"] {
        ch.exchange_declare(format!("app.del.{user}").into(), lapin::ExchangeKind::Direct, ExchangeDeclareOptions::default(), FieldTable::default())
            .await
            .expect("exchange to delete");
        ch.queue_declare(format!("app.dq.{user}").into(), QueueDeclareOptions::default(), FieldTable::default()).await.expect("queue to delete");
    }
    for (i, &(op, need)) in TABLE.iter().enumerate() {
        for user in ["full", "noconf", "nowrite", "noread"] {
            // Unbinding removes the binding the next user would unbind: put it back.
            ch.queue_bind("app.q".into(), "app.src".into(), "bound".into(), QueueBindOptions::default(), FieldTable::default()).await.expect("rebind");
            let lacks = |what: &str| user == format!("no{what}");
            let refused: Option<&str> = match need {
                Need::Nothing => None,
                Need::Configure => lacks("conf").then_some("configure"),
                Need::Write => lacks("write").then_some("write"),
                Need::Read => lacks("read").then_some("read"),
                Need::WriteThenRead => {
                    if lacks("write") {
                        Some("write")
                    } else {
                        lacks("read").then_some("read")
                    }
                }
            };
            let outcome = run(&b, user, op, i).await;
            match (refused, outcome) {
                (None, None) => {}
                (Some(p), Some((403, text))) => {
                    assert!(text.starts_with(&format!("ACCESS_REFUSED - {p} access to ")), "{op:?} as {user}: {text}");
                    assert!(text.ends_with(&format!("in vhost '{VHOST}' refused for user '{user}'")), "{op:?} as {user}: {text}");
                    match op {
                        Op::PublishDefault => assert!(text.contains("exchange 'amq.default'"), "{text}"),
                        Op::DeclareServerNamed => assert!(text.contains("queue 'amq.gen-"), "{text}"),
                        Op::QueueBind | Op::QueueUnbind if p == "write" => assert!(text.contains("queue 'app.q'"), "{text}"),
                        Op::QueueBind | Op::QueueUnbind | Op::ExchangeBind if p == "read" => assert!(text.contains("exchange 'app.src'"), "{text}"),
                        Op::ExchangeBind if p == "write" => assert!(text.contains("exchange 'app.dst'"), "{text}"),
                        _ => {}
                    }
                }
                (want, got) => panic!("{op:?} as {user}: expected {want:?} refused, got {got:?}"),
            }
        }
    }
    // The refusals were channel errors: the broker and the admin's connection are fine.
    assert!(ch.queue_declare("app.q".into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await.is_ok());
    b.stop().await;
}

#[tokio::test]
async fn alternate_and_dead_letter_exchanges_need_write_on_them_when_created() {
    let b = setup().await;
    b.broker.access.add_user("app", "app-secret", &[]).expect("user");
    b.broker.access.set_permissions("app", VHOST, perm(".*", "^app\\.", ".*")).expect("permissions");
    let (_conn, ch) = channel_as(&b, "app").await;
    let ae = table(&[("alternate-exchange", AMQPValue::LongString("other.ae".into()))]);
    let r = ch.exchange_declare("app.with-ae".into(), lapin::ExchangeKind::Direct, ExchangeDeclareOptions::default(), ae).await;
    assert_code(r.clone(), 403, "AE without write on it");
    assert!(reply_text(&r.expect_err("refused")).contains("write access to exchange 'other.ae'"));
    let (_conn, ch) = channel_as(&b, "app").await;
    let dlx = table(&[("x-dead-letter-exchange", AMQPValue::LongString("other.dlx".into()))]);
    let r = ch.queue_declare("app.with-dlx".into(), QueueDeclareOptions::default(), dlx).await;
    assert_code(r.clone(), 403, "DLX without write on it");
    assert!(reply_text(&r.expect_err("refused")).contains("write access to exchange 'other.dlx'"));
    b.stop().await;
}

#[tokio::test]
async fn vhost_access_logins_and_unknown_vhosts_are_refused_as_rabbitmq() {
    let b = setup().await;
    b.broker.access.add_user("stranger", "stranger-secret", &[]).expect("user");
    let e = connect_as(&b, "stranger", VHOST).await.expect_err("no permissions in orders");
    assert_eq!(reply_code(&e), Some(530), "{e:?}");
    assert_eq!(reply_text(&e), "NOT_ALLOWED - access to vhost 'orders' refused for user 'stranger'");
    let e = connect_as(&b, "full", "nosuch").await.expect_err("no such vhost");
    assert_eq!(reply_text(&e), "NOT_ALLOWED - vhost nosuch not found");
    let e = Connection::connect(&format!("amqp://full:wrong@{}/{VHOST}", b.addr), ConnectionProperties::default()).await.expect_err("wrong password");
    assert_eq!(reply_code(&e), Some(403), "{e:?}");
    assert_eq!(reply_text(&e), "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.");
    let e = Connection::connect(&format!("amqp://nobody:x@{}/{VHOST}", b.addr), ConnectionProperties::default()).await.expect_err("unknown user");
    assert_eq!(reply_code(&e), Some(403), "an unknown user is refused like a wrong password: {e:?}");
    // Empty patterns still open the vhost (having permissions at all is what counts).
    b.broker.access.set_permissions("stranger", VHOST, perm("", "", "")).expect("permissions");
    connect_as(&b, "stranger", VHOST).await.expect("an entry with empty patterns opens the vhost");
    b.stop().await;
}

#[tokio::test]
async fn topic_permissions_check_routing_keys_on_publish_and_binding_keys_on_bind() {
    let b = setup().await;
    let access = &b.broker.access;
    access.add_user("app", "app-secret", &[]).expect("user");
    access.set_permissions("app", VHOST, perm(".*", ".*", ".*")).expect("permissions");
    access
        .set_topic_permission("app", VHOST, TopicPermission { exchange: "app.topic".into(), write: "^orders\\.{username}\\.".into(), read: "^orders\\.".into() })
        .expect("topic permission");
    let (_admin, admin) = channel_as(&b, "admin").await;
    for (x, kind) in [("app.topic", lapin::ExchangeKind::Topic), ("app.other", lapin::ExchangeKind::Topic)] {
        admin.exchange_declare(x.into(), kind, ExchangeDeclareOptions::default(), FieldTable::default()).await.expect("exchange");
    }
    let (conn, ch) = channel_as(&b, "app").await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    // {username} expanded: orders.app.* may be published, orders.bob.* may not.
    let confirm = ch.basic_publish("app.topic".into(), "orders.app.new".into(), BasicPublishOptions::default(), b"ok", BasicProperties::default()).await;
    assert!(confirm.expect("publish").await.expect("confirm").is_ack());
    // An exchange without topic permissions is open.
    let confirm = ch.basic_publish("app.other".into(), "any.key".into(), BasicPublishOptions::default(), b"ok", BasicProperties::default()).await;
    assert!(confirm.expect("publish").await.expect("confirm").is_ack());
    let mut events = Box::pin(conn.events_listener());
    let _ = ch.basic_publish("app.topic".into(), "orders.bob.new".into(), BasicPublishOptions::default(), b"no", BasicProperties::default()).await;
    let text = within("topic refusal", async {
        loop {
            if let Some(lapin::Event::Error(e)) = events.next().await {
                assert_eq!(reply_code(&e), Some(403));
                return reply_text(&e);
            }
        }
    })
    .await;
    assert_eq!(text, "ACCESS_REFUSED - write access to topic 'orders.bob.new' in exchange 'app.topic' in vhost 'orders' refused for user 'app'");
    // Binding keys are checked against the read pattern.
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_declare("app.tq".into(), QueueDeclareOptions::default(), FieldTable::default()).await.expect("queue");
    ch.queue_bind("app.tq".into(), "app.topic".into(), "orders.#".into(), QueueBindOptions::default(), FieldTable::default()).await.expect("allowed key");
    let r = ch.queue_bind("app.tq".into(), "app.topic".into(), "foo.#".into(), QueueBindOptions::default(), FieldTable::default()).await;
    assert_eq!(reply_text(&r.expect_err("refused")), "ACCESS_REFUSED - read access to topic 'foo.#' in exchange 'app.topic' in vhost 'orders' refused for user 'app'");
    b.stop().await;
}

#[tokio::test]
async fn user_id_must_name_the_user_unless_an_impersonator_publishes() {
    let b = setup().await;
    b.broker.access.add_user("robot", "robot-secret", &["impersonator"]).expect("user");
    b.broker.access.set_permissions("robot", VHOST, perm(".*", ".*", ".*")).expect("permissions");
    let props = |who: &str| BasicProperties::default().with_user_id(ShortString::from(who.to_owned()));
    for (user, claimed, ok) in [("full", "full", true), ("full", "someone", false), ("robot", "someone", true)] {
        let (conn, ch) = channel_as(&b, user).await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
        let mut events = Box::pin(conn.events_listener());
        let sent = ch.basic_publish("".into(), "nowhere".into(), BasicPublishOptions::default(), b"x", props(claimed)).await.expect("publish");
        if ok {
            assert!(within("confirm", sent).await.expect("confirm").is_ack(), "{user} as {claimed}");
        } else {
            let text = within("refusal", async {
                loop {
                    if let Some(lapin::Event::Error(e)) = events.next().await {
                        return reply_text(&e);
                    }
                }
            })
            .await;
            assert_eq!(text, "PRECONDITION_FAILED - user_id property set to 'someone' but authenticated user was 'full'");
        }
    }
    b.stop().await;
}

#[tokio::test]
async fn user_and_vhost_limits_refuse_with_rabbitmqs_codes() {
    let b = setup().await;
    let access = &b.broker.access;
    let user = access.user("full").expect("full");
    access
        .put_user(warren::access::User { limits: UserLimits { max_connections: Some(2), max_channels: Some(3) }, ..(*user).clone() })
        .expect("limits");
    let c1 = connect_as(&b, "full", VHOST).await.expect("first");
    let c2 = connect_as(&b, "full", VHOST).await.expect("second");
    let e = connect_as(&b, "full", VHOST).await.expect_err("third connection");
    assert_eq!(reply_text(&e), "NOT_ALLOWED - connection refused for user 'full': user connection limit (2) is reached");
    // Channels count over all the user's connections.
    let _a = c1.create_channel().await.expect("1");
    let _b = c1.create_channel().await.expect("2");
    let _c = c2.create_channel().await.expect("3");
    let e = c2.create_channel().await.expect_err("4th channel");
    assert_eq!(reply_code(&e), Some(530), "{e:?}");
    assert_eq!(reply_text(&e), "NOT_ALLOWED - number of channels opened for user 'full' has reached the maximum allowed user limit of (3)");
    assert!(c1.status().connected(), "the other connection stays");
    drop((c1, c2));

    b.broker.add_vhost(VhostInfo { name: "audit".into(), limits: VhostLimits { max_connections: Some(1), max_queues: Some(2) }, ..VhostInfo::default() }).expect("vhost");
    access.set_permissions("admin", "audit", perm(".*", ".*", ".*")).expect("permissions");
    let conn = connect_as(&b, "admin", "audit").await.expect("first");
    let e = connect_as(&b, "admin", "audit").await.expect_err("second to audit");
    assert_eq!(reply_text(&e), "NOT_ALLOWED - access to vhost 'audit' refused for user 'admin': connection limit (1) is reached");
    let ch = conn.create_channel().await.expect("channel");
    for q in ["aq1", "aq2"] {
        ch.queue_declare(q.into(), QueueDeclareOptions::default(), FieldTable::default()).await.expect("under the limit");
    }
    ch.queue_declare("aq1".into(), QueueDeclareOptions::default(), FieldTable::default()).await.expect("a redeclare is not counted");
    let r = ch.queue_declare("aq3".into(), QueueDeclareOptions::default(), FieldTable::default()).await;
    assert_eq!(reply_text(&r.expect_err("third queue")), "PRECONDITION_FAILED - cannot declare queue 'aq3': queue limit in vhost 'audit' (2) is reached");
    conn.close(200, "bye".into()).await.expect("close");
    // The slot is given back when the connection ends.
    within("slot back", async {
        loop {
            if connect_as(&b, "admin", "audit").await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    b.stop().await;
}

#[tokio::test]
async fn deleting_a_vhost_cancels_its_consumers_closes_its_connections_and_drops_its_data() {
    let b = setup().await;
    let (conn, ch) = channel_as(&b, "full").await;
    ch.queue_declare("app.durable".into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default()).await.expect("queue");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let sent = ch.basic_publish("".into(), "app.durable".into(), BasicPublishOptions::default(), b"kept?", BasicProperties::default().with_delivery_mode(2)).await;
    assert!(sent.expect("publish").await.expect("confirm").is_ack());
    let _consumer = ch.basic_consume("app.durable".into(), "c".into(), BasicConsumeOptions::default(), FieldTable::default()).await.expect("consume");
    let mut events = Box::pin(conn.events_listener());
    b.broker.delete_vhost(VHOST).expect("delete vhost");
    let text = within("connection close", async {
        loop {
            match events.next().await {
                Some(lapin::Event::Error(e)) if reply_code(&e) == Some(320) => return reply_text(&e),
                Some(_) => {}
                None => panic!("no close"),
            }
        }
    })
    .await;
    assert_eq!(text, "CONNECTION_FORCED - vhost 'orders' is deleted");
    let e = connect_as(&b, "full", VHOST).await.expect_err("gone");
    assert_eq!(reply_text(&e), "NOT_ALLOWED - vhost orders not found");
    // Made again, it is empty, and nobody has permissions in it.
    b.broker.add_vhost(VhostInfo { name: VHOST.into(), ..VhostInfo::default() }).expect("again");
    assert!(b.broker.access.permission("full", VHOST).is_none());
    b.broker.access.set_permissions("full", VHOST, perm(".*", ".*", ".*")).expect("permissions");
    let (_conn, ch) = channel_as(&b, "full").await;
    let r = ch.queue_declare("app.durable".into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await;
    assert_code(r, 404, "the queue went with the vhost");
    b.stop().await;
}

#[tokio::test]
async fn deleting_a_user_closes_its_connections() {
    let b = setup().await;
    let conn = connect_as(&b, "full", VHOST).await.expect("connect");
    let mut events = Box::pin(conn.events_listener());
    b.broker.delete_user("full").expect("delete user");
    let text = within("close", async {
        loop {
            if let Some(lapin::Event::Error(e)) = events.next().await {
                return reply_text(&e);
            }
        }
    })
    .await;
    assert_eq!(text, "CONNECTION_FORCED - user 'full' is deleted");
    assert!(connect_as(&b, "full", VHOST).await.is_err(), "the user is gone");
    b.stop().await;
}

// Multi-threaded: the stopped broker's store is released by its tasks while the next
// one waits for the directory's lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_vhosts_and_permissions_survive_a_restart() {
    let dir = fresh_data_dir();
    let b = start_with(|c| c.data_dir = dir.clone()).await;
    b.broker.add_vhost(VhostInfo { name: VHOST.into(), ..VhostInfo::default() }).expect("vhost");
    b.broker.access.add_user("app", "app-secret", &["monitoring"]).expect("user");
    b.broker.access.set_permissions("app", VHOST, perm("^app\\.", "^app\\.", "^app\\.")).expect("permissions");
    b.stop().await;
    // The default password changed since: the stored user, not the setting, counts.
    let b = start_with(|c| {
        c.data_dir = dir.clone();
        c.default_pass = "changed".into();
    })
    .await;
    let (_conn, ch) = channel_as(&b, "app").await;
    ch.queue_declare("app.q".into(), QueueDeclareOptions::default(), FieldTable::default()).await.expect("allowed");
    let r = ch.queue_declare("other".into(), QueueDeclareOptions::default(), FieldTable::default()).await;
    assert_code(r, 403, "the stored pattern still applies");
    b.broker.access.user("app").map(|u| assert_eq!(u.tags, ["monitoring"])).expect("app");
    Connection::connect(&b.uri(), ConnectionProperties::default()).await.expect("guest keeps its first-boot password");
    b.stop().await;
}
