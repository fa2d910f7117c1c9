//! Definitions and storage formats: a file exported by RabbitMQ 3.10 loads at boot and
//! gives the same users, permissions, limits and topology; a bad file changes nothing and
//! stops the real binary with an error; a store written by the previous format
//! (`warren-store-2`, kept as a fixture) is migrated in place with its messages.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use warren::definitions::Definitions;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rabbitmq-definitions.json");

fn fixture() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(FIXTURE).expect("fixture")).expect("fixture is JSON")
}


async fn connect(b: &TestBroker, user: &str, password: &str, vhost: &str) -> lapin::Result<Connection> {
    Connection::connect(&format!("amqp://{user}:{password}@{}/{}", b.addr, vhost.replace('/', "%2f")), ConnectionProperties::default()).await
}

#[tokio::test]
async fn a_rabbitmq_export_loads_with_its_users_permissions_limits_and_topology() {
    let file = std::path::PathBuf::from(FIXTURE);
    let b = start_with(|c| c.definitions = Some(file.clone())).await;
    // Users log in with the passwords RabbitMQ hashed.
    let admin = connect(&b, "admin", "admin-secret", "orders").await.expect("admin");
    assert!(connect(&b, "admin", "wrong", "orders").await.is_err());
    let app = connect(&b, "app", "app-secret", "orders").await.expect("app");
    assert_eq!(b.broker.access.user("monitor").map(|u| u.tags.clone()), Some(vec!["monitoring".to_owned()]));
    assert!(b.broker.access.user("robot").is_some_and(|u| u.has_tag("impersonator")));
    // The topology is there, bound as exported.
    let ch = admin.create_channel().await.expect("channel");
    for q in ["app.work", "app.ttl.q1", "app.dead"] {
        ch.queue_declare(q.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await.unwrap_or_else(|e| panic!("{q}: {e:?}"));
    }
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let sent = ch.basic_publish("app.topic".into(), "orders.x".into(), BasicPublishOptions::default(), b"order", BasicProperties::default()).await;
    assert!(sent.expect("publish").await.expect("confirm").is_ack());
    let sent = ch.basic_publish("app.topic".into(), "e2e.dead".into(), BasicPublishOptions { mandatory: true, ..Default::default() }, b"e2e", BasicProperties::default()).await;
    sent.expect("publish").await.expect("confirm");
    assert_eq!(get_body(&ch, "app.work").await.as_deref(), Some(&b"order"[..]));
    // e2e.dead goes on to app.direct (e2e.*), where no binding takes it: app.dead
    // stays empty.
    assert_eq!(get_body(&ch, "app.dead").await, None);
    // Quorum type came from the export.
    let r = ch.queue_declare("app.work".into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default()).await;
    assert_code(r, 406, "app.work is a quorum queue: a classic redeclare is inequivalent");
    // app's permissions: configure only app.* and amq.gen-*.
    let ch = app.create_channel().await.expect("channel");
    ch.queue_declare("app.mine".into(), QueueDeclareOptions::default(), FieldTable::default()).await.expect("app.* allowed");
    let r = ch.queue_declare("other".into(), QueueDeclareOptions::default(), FieldTable::default()).await;
    assert_eq!(reply_text(&r.expect_err("refused")), "ACCESS_REFUSED - configure access to queue 'other' in vhost 'orders' refused for user 'app'");
    // The topic permission of app on app.topic ({username} expanded).
    let topics = b.broker.access.topic_permissions();
    assert!(topics.iter().any(|(u, v, t)| u == "app" && v == "orders" && t.exchange == "app.topic" && t.write == "^orders\\.{username}\\."), "{topics:?}");
    // audit's connection limit of 1.
    let first = connect(&b, "admin", "admin-secret", "audit").await.expect("first");
    let e = connect(&b, "admin", "admin-secret", "audit").await.expect_err("limit");
    assert_eq!(reply_code(&e), Some(530));
    drop(first);
    // The policies: app.ttl.* queues hold at most 100 (reject-publish); app.x.* exchanges
    // send what they cannot route to app.unrouted.
    let policies: Vec<String> = b.broker.export().policies.iter().map(|p| p.name.clone()).collect();
    assert_eq!(policies, ["ae-policy", "ttl-policy"]);
    let ch = admin.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let mut acks = 0;
    for _ in 0..101 {
        let sent = ch.basic_publish("".into(), "app.ttl.q1".into(), BasicPublishOptions::default(), b"m", BasicProperties::default()).await;
        acks += usize::from(sent.expect("publish").await.expect("confirm").is_ack());
    }
    assert_eq!(acks, 100, "the 101st is nacked by the policy's max-length with reject-publish");
    ch.queue_declare("app.catch".into(), QueueDeclareOptions::default(), FieldTable::default()).await.expect("queue");
    ch.queue_bind("app.catch".into(), "app.unrouted".into(), "".into(), QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
    publish(&ch, "app.x.main", "nowhere", b"caught").await;
    assert_eq!(get_body(&ch, "app.catch").await.as_deref(), Some(&b"caught"[..]));
    // The limited user's limits.
    assert_eq!(b.broker.access.user("limited").map(|u| (u.limits.max_connections, u.limits.max_channels)), Some((Some(2), Some(3))));
    // Importing the same file again changes nothing.
    let before = serde_json::to_value(b.broker.export()).expect("export");
    b.broker.import(&Definitions::read(&file).expect("read")).expect("import again");
    assert_eq!(serde_json::to_value(b.broker.export()).expect("export"), before);
    b.stop().await;
}

#[tokio::test]
async fn an_inconsistent_file_is_refused_whole_and_nothing_is_applied() {
    let b = start().await;
    // The export with one policy key Warren does not implement: nothing of it is applied.
    let mut defs = fixture();
    defs["policies"][0]["definition"]["ha-mode"] = serde_json::json!("all");
    let err = b.broker.import(&serde_json::from_value(defs).expect("parses")).expect_err("ha-mode refused");
    assert!(err.to_string().contains("'ha-mode' is not supported"), "{err}");
    assert!(b.broker.access.user("app").is_none() && b.broker.vhost("orders").is_none(), "nothing applied");
    // A permission for a user that does not exist: refused before the vhost is created.
    let bad = serde_json::json!({
        "vhosts": [{"name": "partial"}],
        "permissions": [{"user": "ghost", "vhost": "partial", "configure": ".*", "write": ".*", "read": ".*"}],
    });
    let err = b.broker.import(&serde_json::from_value(bad).expect("parses")).expect_err("ghost");
    assert!(err.to_string().contains("user 'ghost'") && err.to_string().contains("no such user"), "{err}");
    assert!(b.broker.vhost("partial").is_none());
    // Bad patterns, hashes and queue arguments name what is wrong.
    for (bad, says) in [
        (serde_json::json!({"users": [{"name": "u", "password_hash": "%%%", "tags": []}]}), "base64"),
        (serde_json::json!({"users": [{"name": "u", "password_hash": "", "hashing_algorithm": "rot13"}]}), "rot13"),
        (serde_json::json!({"permissions": [{"user": "guest", "vhost": "/", "configure": "(", "write": "", "read": ""}]}), "invalid configure pattern"),
        (serde_json::json!({"queues": [{"name": "q", "vhost": "/", "durable": true, "arguments": {"x-max-length": "ten"}}]}), "x-max-length"),
        (serde_json::json!({"bindings": [{"source": "nox", "vhost": "/", "destination": "q", "destination_type": "queue", "routing_key": ""}]}), "no such exchange"),
        (serde_json::json!({"parameters": [{"vhost": "/", "component": "federation-upstream", "name": "up", "value": {}}]}), "federation-upstream"),
        (serde_json::json!({"vhosts": [{"name": "q", "metadata": {"default_queue_type": "quorum"}}]}), "default_queue_type 'quorum'"),
    ] {
        let err = b.broker.import(&serde_json::from_value(bad.clone()).expect("parses")).expect_err("refused");
        assert!(err.to_string().contains(says), "{bad}: {err}");
    }
    // A user limit Warren does not know is refused when the file is read.
    let err = Definitions::parse(r#"{"users": [{"name": "u", "password_hash": "", "limits": {"max-queues": 1}}]}"#).expect_err("unknown user limit");
    assert!(err.to_string().contains("max-queues"), "{err}");
    assert_alive(&b).await;
    b.stop().await;
}

#[test]
fn the_binary_exits_with_an_error_on_a_bad_definitions_file() {
    let dir = fresh_data_dir();
    std::fs::create_dir_all(&dir).expect("dir");
    for (content, says) in [("{not json", "not valid"), ("{\"permissions\": [{\"user\": \"ghost\", \"vhost\": \"/\", \"configure\": \"\", \"write\": \"\", \"read\": \"\"}]}", "ghost")] {
        let file = dir.join("defs.json");
        std::fs::write(&file, content).expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(["--port", "0", "--metrics-port", "0", "--management-port", "0", "--bind", "127.0.0.1"])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--definitions")
            .arg(&file)
            .output()
            .expect("run warren");
        assert!(!out.status.success(), "a bad definitions file must stop the broker");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Copies a directory tree.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

// Multi-threaded: the stopped broker's store is released by its tasks while the next
// one waits for the directory's lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_written_by_the_previous_format_is_migrated_with_its_messages() {
    let dir = fresh_data_dir();
    copy_dir(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/store-2")), &dir);
    let b = start_with(|c| c.data_dir = dir.clone()).await;
    let (_conn, ch) = b.channel().await;
    // Five priority messages in fx.q1 (highest priority first), three in the quorum fx.q2,
    // the first of which had been delivered and comes back redelivered.
    let q1 = ch.queue_declare("fx.q1".into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await.expect("fx.q1");
    assert_eq!(q1.message_count(), 5);
    let q2 = ch.queue_declare("fx.q2".into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await.expect("fx.q2");
    assert_eq!(q2.message_count(), 3);
    let first = ch.basic_get("fx.q2".into(), BasicGetOptions { no_ack: true }).await.expect("get").expect("a message");
    assert_eq!((first.delivery.data.as_slice(), first.delivery.redelivered), (&b"f0"[..], true));
    let mut bodies = Vec::new();
    while let Some(body) = get_body(&ch, "fx.q1").await {
        bodies.push(String::from_utf8(body).expect("utf8"));
    }
    assert_eq!(bodies, ["m2", "m1", "m4", "m0", "m3"], "priority order (2, 1, 1, 0, 0), FIFO within one");
    // The exchanges, their arguments and the bindings came along: fx.fanout reaches fx.q2
    // and, through the e2e binding, fx.direct with key k1 reaches fx.q1.
    publish(&ch, "fx.fanout", "k1", b"after").await;
    assert_eq!(get_body(&ch, "fx.q1").await.as_deref(), Some(&b"after"[..]));
    let r = ch.exchange_declare("fx.fanout".into(), lapin::ExchangeKind::Fanout, ExchangeDeclareOptions { durable: true, ..Default::default() }, FieldTable::default()).await;
    assert_code(r, 406, "the alternate-exchange argument survived");
    b.stop().await;
    // A second start finds format 3 and the same data.
    let b = start_with(|c| c.data_dir = dir.clone()).await;
    let (_conn, ch) = b.channel().await;
    let q2 = ch.queue_declare("fx.q2".into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await.expect("fx.q2");
    assert_eq!(q2.message_count(), 3, "two left from the fixture and one published");
    b.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
