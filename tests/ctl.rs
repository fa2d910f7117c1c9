//! `warren ctl` against a running broker: rabbitmqctl's verbs and output shapes through
//! the management API, their effects as an AMQP client sees them, and exit codes.

mod common;

use std::process::Command;

use common::*;
use lapin::options::{BasicQosOptions, QueueDeclareOptions};
use lapin::{Connection, ConnectionProperties};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// What one `warren ctl` run printed and how it exited.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `warren ctl --url <broker> args...` off the async workers.
async fn ctl(port: u16, args: &[&str]) -> Run {
    let mut full = vec!["ctl".to_owned(), "--url".to_owned(), format!("http://127.0.0.1:{port}")];
    full.extend(args.iter().map(|a| (*a).to_owned()));
    let out = tokio::task::spawn_blocking(move || Command::new(env!("CARGO_BIN_EXE_warren")).args(&full).output().expect("run warren ctl")).await.expect("join");
    Run { code: out.status.code().unwrap_or(-1), stdout: String::from_utf8_lossy(&out.stdout).into_owned(), stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
}

/// Runs and expects success.
async fn ok(port: u16, args: &[&str]) -> String {
    let r = ctl(port, args).await;
    assert_eq!(r.code, 0, "warren ctl {args:?} failed: {}{}", r.stdout, r.stderr);
    r.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_vhosts_permissions_and_policies_are_managed_as_with_rabbitmqctl() {
    let port = free_port();
    let b = start_with(|c| c.management_port = port).await;
    ok(port, &["await_startup"]).await;
    let status = ok(port, &["status"]).await;
    assert!(status.contains("Product: Warren") && status.contains("Listener: amqp"), "{status}");

    ok(port, &["add_user", "carol", "carol-secret"]).await;
    let again = ctl(port, &["add_user", "carol", "x"]).await;
    assert_eq!(again.code, 70, "{}", again.stderr);
    assert!(again.stderr.contains("user_already_exists: carol"), "{}", again.stderr);
    ok(port, &["add_vhost", "team"]).await;
    ok(port, &["set_permissions", "-p", "team", "carol", "^carol-.*", ".*", ".*"]).await;
    ok(port, &["set_user_tags", "carol", "management", "monitoring"]).await;
    let users = ok(port, &["list_users", "-q"]).await;
    assert!(users.lines().any(|l| l == "carol\t[management, monitoring]"), "{users}");
    let perms = ok(port, &["list_permissions", "-p", "team", "--no-table-headers", "-q"]).await;
    assert!(perms.lines().any(|l| l == "carol\t^carol-.*\t.*\t.*"), "{perms}");
    let vhosts = ok(port, &["list_vhosts", "--formatter", "json"]).await;
    let vhosts: serde_json::Value = serde_json::from_str(&vhosts).expect("json");
    assert!(vhosts.as_array().expect("array").iter().any(|v| v["name"] == "team"), "{vhosts}");

    // The user logs in over AMQP with the password set through ctl, and its configure
    // pattern holds.
    let uri = format!("amqp://carol:carol-secret@{}/team", b.addr);
    let conn = Connection::connect(&uri, ConnectionProperties::default()).await.expect("carol logs in");
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_declare("carol-q".into(), QueueDeclareOptions::default(), Default::default()).await.expect("allowed queue");
    assert_code(ch.queue_declare("other".into(), QueueDeclareOptions::default(), Default::default()).await, 403, "configure outside the pattern");

    ok(port, &["change_password", "carol", "new-secret"]).await;
    assert!(Connection::connect(&uri, ConnectionProperties::default()).await.is_err(), "the old password still logs in");

    // A policy set through ctl applies to queues at once.
    ok(port, &["set_policy", "-p", "team", "cap", "^carol-", r#"{"max-length":2}"#, "--apply-to", "queues", "--priority", "1"]).await;
    let ch = conn.create_channel().await.expect("channel");
    for i in 0..5u8 {
        publish(&ch, "", "carol-q", &[i]).await;
    }
    let queues = ok(port, &["list_queues", "-p", "team", "-q", "name", "messages", "policy"]).await;
    assert!(queues.contains("carol-q\t2\tcap"), "{queues}");
    ok(port, &["clear_policy", "-p", "team", "cap"]).await;
    let bad = ctl(port, &["set_policy", "bad", "^x", "{not json"]).await;
    assert_eq!(bad.code, 65, "{}", bad.stderr);
    let refused = ctl(port, &["set_policy", "bad", "^x", r#"{"no-such-key":1}"#]).await;
    assert_eq!(refused.code, 70, "{}", refused.stderr);
    assert!(refused.stderr.contains("no-such-key"), "{}", refused.stderr);

    ok(port, &["clear_permissions", "-p", "team", "carol"]).await;
    ok(port, &["delete_user", "carol"]).await;
    ok(port, &["delete_vhost", "team"]).await;
    let missing = ctl(port, &["delete_vhost", "team"]).await;
    assert_eq!(missing.code, 70, "{}", missing.stderr);
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);
    let _ = conn.close(200, "bye".into()).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_purge_delete_close_and_definitions_act_on_what_clients_use() {
    let port = free_port();
    let b = start_with(|c| c.management_port = port).await;
    let props = ConnectionProperties::default().with_connection_name("ctl-test-client".into());
    let conn = Connection::connect(&b.uri(), props).await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_declare("work".into(), QueueDeclareOptions { durable: true, ..Default::default() }, Default::default()).await.expect("declare");
    ch.queue_bind("work".into(), "amq.topic".into(), "jobs.#".into(), Default::default(), Default::default()).await.expect("bind");
    for _ in 0..3 {
        publish(&ch, "amq.topic", "jobs.a", b"job").await;
    }
    let consumer_ch = conn.create_channel().await.expect("channel");
    consumer_ch.basic_qos(1, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = consume(&consumer_ch, "work", "worker-1").await;
    let _held = next(&mut consumer).await;

    let queues = ok(port, &["list_queues", "-q", "name", "messages", "messages_ready", "messages_unacknowledged", "consumers", "durable"]).await;
    assert!(queues.lines().any(|l| l == "work\t3\t2\t1\t1\ttrue"), "{queues}");
    let bindings = ok(port, &["list_bindings", "-q"]).await;
    assert!(bindings.lines().any(|l| l == "amq.topic\texchange\twork\tqueue\tjobs.#\t{}"), "{bindings}");
    let exchanges = ok(port, &["list_exchanges", "-q"]).await;
    assert!(exchanges.lines().any(|l| l == "amq.topic\ttopic"), "{exchanges}");
    let consumers = ok(port, &["list_consumers", "-q", "queue_name", "consumer_tag", "ack_required", "prefetch_count", "active"]).await;
    assert!(consumers.lines().any(|l| l == "work\tworker-1\ttrue\t1\ttrue"), "{consumers}");
    let connections = ok(port, &["list_connections", "--formatter", "json", "name", "user", "user_provided_name"]).await;
    let connections: serde_json::Value = serde_json::from_str(&connections).expect("json");
    let mine = connections.as_array().expect("array").iter().find(|c| c["user_provided_name"] == "ctl-test-client").cloned().expect("the client's connection is listed");
    let channels = ok(port, &["list_channels", "-q", "user", "consumer_count", "messages_unacknowledged"]).await;
    assert!(channels.lines().any(|l| l == "guest\t1\t1"), "{channels}");

    let defs_path = std::env::temp_dir().join(format!("warren-ctl-defs-{}.json", std::process::id()));
    let defs_arg = defs_path.to_string_lossy().into_owned();
    ok(port, &["export_definitions", &defs_arg]).await;

    ok(port, &["purge_queue", "work"]).await;
    let queues = ok(port, &["list_queues", "-q", "name", "messages_ready"]).await;
    assert!(queues.lines().any(|l| l == "work\t0"), "{queues}");
    let in_use = ctl(port, &["delete_queue", "work", "--if-unused"]).await;
    assert_eq!(in_use.code, 70, "{}", in_use.stderr);
    assert!(in_use.stderr.contains("in use"), "{}", in_use.stderr);

    // close_connection: the client sees 320 with the reason.
    let name = mine["name"].as_str().expect("name").to_owned();
    let code = close_code(&conn, async {
        ok(port, &["close_connection", &name, "maintenance window"]).await;
    })
    .await;
    assert_eq!(code, 320);

    // The exported definitions recreate the durable queue and its binding elsewhere.
    let port2 = free_port();
    let b2 = start_with(|c| c.management_port = port2).await;
    ok(port2, &["import_definitions", &defs_arg]).await;
    let queues = ok(port2, &["list_queues", "-q", "name", "durable"]).await;
    assert!(queues.lines().any(|l| l == "work\ttrue"), "{queues}");
    let bindings = ok(port2, &["list_bindings", "-q", "source_name", "destination_name", "routing_key"]).await;
    assert!(bindings.lines().any(|l| l == "amq.topic\twork\tjobs.#"), "{bindings}");
    let _ = std::fs::remove_file(&defs_path);

    // Failures: unreadable file 65, wrong password 70, nobody listening 69.
    let missing = ctl(port2, &["import_definitions", "/nonexistent/defs.json"]).await;
    assert_eq!(missing.code, 65, "{}", missing.stderr);
    let wrong = ctl(port2, &["--password", "wrong", "list_queues"]).await;
    assert_eq!(wrong.code, 70, "{}", wrong.stderr);
    let nobody = ctl(free_port(), &["status"]).await;
    assert_eq!(nobody.code, 69, "{}", nobody.stderr);
    assert!(nobody.stderr.contains("cannot reach the broker"), "{}", nobody.stderr);
    b2.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_verbs_reach_clients() {
    let port = free_port();
    let b = start_with(|c| c.management_port = port).await;
    ok(port, &["raise_memory_alarm"]).await;
    let status = ok(port, &["status"]).await;
    assert!(status.contains("Alarms: resource alarm in effect"), "{status}");
    ok(port, &["clear_memory_alarm"]).await;
    let status = ok(port, &["status"]).await;
    assert!(status.contains("Alarms: (none)"), "{status}");

    let conn = Connection::connect(&b.uri(), ConnectionProperties::default().with_connection_name("ctl-victim".into())).await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    declare(&ch, "faulty").await;
    ch.confirm_select(Default::default()).await.expect("confirms");
    ok(port, &["nack_publishes", "faulty", "1"]).await;
    let nacked = ch.basic_publish("".into(), "faulty".into(), Default::default(), b"x", Default::default()).await.expect("publish").await.expect("confirm");
    assert!(nacked.is_nack());
    ok(port, &["delay_connection", "ctl-victim", "0"]).await;
    let missing = ctl(port, &["reset_connection", "nobody"]).await;
    assert_eq!(missing.code, 70, "{}", missing.stderr);
    let code = close_code(&conn, async {
        ok(port, &["close_connection", "ctl-victim", "chaos test", "--code", "541"]).await;
    })
    .await;
    assert_eq!(code, 541);
    b.stop().await;
}
