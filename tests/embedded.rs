//! Brokers for tests: `warren --ephemeral --port 0` as a fixture in another language
//! would start it (one JSON line with the URLs, nothing left behind, gone with stdin),
//! and the in-process `EmbeddedBroker` restarted on its data for reconnection tests.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use warren::embedded::{EmbeddedBroker, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ephemeral_broker_announces_its_urls_writes_nothing_and_ends_with_stdin() {
    let cwd = fresh_data_dir();
    std::fs::create_dir_all(&cwd).expect("cwd");
    let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["--ephemeral", "--port", "0", "--exit-on-stdin-close", "--log-level", "warn"])
        .current_dir(&cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn warren");
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("ready line");
        line
    })
    .await
    .expect("join");
    let ready: serde_json::Value = serde_json::from_str(&line).expect("the ready line is JSON");
    let amqp = ready["amqp_url"].as_str().expect("amqp_url").to_owned();
    let management = ready["management_url"].as_str().expect("management_url").to_owned();
    assert_eq!(ready["pid"].as_u64(), Some(u64::from(child.id())));

    // A durable queue with a persistent message: kept, in memory.
    let conn = Connection::connect(&amqp, ConnectionProperties::default()).await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_declare("kept".into(), QueueDeclareOptions { durable: true, ..Default::default() }, Default::default()).await.expect("declare");
    ch.basic_publish("".into(), "kept".into(), Default::default(), b"m", BasicProperties::default().with_delivery_mode(2)).await.expect("publish");
    let got = ch.basic_get("kept".into(), BasicGetOptions { no_ack: true }).await.expect("get").expect("the message");
    assert_eq!(got.delivery.data, b"m");
    let overview = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        agent.get(&format!("{management}api/overview")).header("authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=").call().map(|r| r.status().as_u16())
    })
    .await
    .expect("join");
    assert_eq!(overview.ok(), Some(200), "the management URL answers");
    let _ = conn.close(200, "bye".into()).await;

    // Closing stdin stops it; it leaves no data directory and no store behind.
    drop(child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "warren did not exit after stdin closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
    assert_eq!(std::fs::read_dir(&cwd).expect("cwd").count(), 0, "an ephemeral broker wrote to its working directory");
    if let Ok(shm) = std::fs::read_dir("/dev/shm") {
        let prefix = format!("warren-{}-", child.id());
        assert!(!shm.flatten().any(|e| e.file_name().to_string_lossy().starts_with(&prefix)), "the temporary store was left in /dev/shm");
    }
    let _ = std::fs::remove_dir_all(&cwd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_broker_restarts_on_its_data_and_ports_so_clients_reconnect() {
    let dir = fresh_data_dir();
    let broker = EmbeddedBroker::start(Store::Dir(dir.clone())).await.expect("start");
    let url = broker.amqp_url();
    assert!(broker.management_url().is_some());
    let conn = Connection::connect(&url, ConnectionProperties::default()).await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(Default::default()).await.expect("confirms");
    ch.queue_declare("orders".into(), QueueDeclareOptions { durable: true, ..Default::default() }, Default::default()).await.expect("declare");
    ch.basic_publish("".into(), "orders".into(), Default::default(), b"order-1", BasicProperties::default().with_delivery_mode(2))
        .await
        .expect("publish")
        .await
        .expect("confirm");

    // The restart closes the client with 320, as a RabbitMQ restart does.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let code = close_code(&conn, async {
        let _ = tx.send(within("restart", broker.restart()).await.expect("restart"));
    })
    .await;
    assert_eq!(code, 320);
    let broker = rx.await.expect("restarted");
    assert_eq!(broker.amqp_url(), url, "same URL after the restart");
    let conn = Connection::connect(&url, ConnectionProperties::default()).await.expect("reconnect");
    let ch = conn.create_channel().await.expect("channel");
    let got = ch.basic_get("orders".into(), BasicGetOptions { no_ack: true }).await.expect("get").expect("the confirmed message survived");
    assert_eq!(got.delivery.data, b"order-1");
    let _ = conn.close(200, "bye".into()).await;
    broker.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
