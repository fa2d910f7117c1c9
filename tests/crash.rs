//! kill -9 in the middle of confirmed publishing and acking: every confirmed, unacked
//! message must be there after a restart, exactly once and in order per publisher, and no
//! acked message may come back. Runs the real `warren` binary.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

const PUBLISHERS: u8 = 3;

fn spawn_broker(port: u16, dir: &std::path::Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--metrics-port", "0", "--management-port", "0", "--log-level", "warn"])
        .args(extra)
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn warren")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

async fn connect(port: u16) -> Connection {
    let uri = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    for _ in 0..100 {
        if let Ok(c) = Connection::connect(&uri, ConnectionProperties::default()).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("broker did not come up on {port}");
}

/// Body: publisher id, then a big-endian sequence number.
fn body(publisher: u8, seq: u32) -> Vec<u8> {
    let mut b = vec![publisher];
    b.extend_from_slice(&seq.to_be_bytes());
    b
}

/// One run: kill after `kill_after`, with `extra` broker flags.
async fn run_once(kill_after: Duration, extra: &[&str]) {
    let dir = fresh_data_dir();
    let port = free_port();
    let mut child = spawn_broker(port, &dir, extra);
    let conn = connect(port).await;
    let setup = conn.create_channel().await.expect("channel");
    setup.queue_declare("crash".into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default()).await.expect("declare");

    // Confirmed sequence numbers per publisher, and acked ones.
    let confirmed: Arc<Mutex<HashMap<u8, Vec<u32>>>> = Arc::default();
    let acked: Arc<Mutex<Vec<(u8, u32)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    for p in 0..PUBLISHERS {
        let conn = connect(port).await;
        let (confirmed, stop) = (Arc::clone(&confirmed), Arc::clone(&stop));
        tokio::spawn(async move {
            let Ok(ch) = conn.create_channel().await else { return };
            if ch.confirm_select(ConfirmSelectOptions::default()).await.is_err() {
                return;
            }
            let mut seq = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let props = BasicProperties::default().with_delivery_mode(2);
                let Ok(confirm) = ch.basic_publish("".into(), "crash".into(), BasicPublishOptions::default(), &body(p, seq), props).await else { return };
                match confirm.await {
                    Ok(c) if c.is_ack() => confirmed.lock().expect("lock").entry(p).or_default().push(seq),
                    _ => return,
                }
                seq += 1;
            }
        });
    }
    {
        let conn = connect(port).await;
        let acked = Arc::clone(&acked);
        tokio::spawn(async move {
            let Ok(ch) = conn.create_channel().await else { return };
            let _ = ch.basic_qos(50, BasicQosOptions::default()).await;
            let Ok(mut consumer) = ch.basic_consume("crash".into(), "acker".into(), BasicConsumeOptions::default(), FieldTable::default()).await else { return };
            while let Some(Ok(d)) = consumer.next().await {
                let (p, seq) = (d.data[0], u32::from_be_bytes([d.data[1], d.data[2], d.data[3], d.data[4]]));
                // Only count an ack the broker has surely processed: wait for the ack to be
                // written, then record it. A record made here may not have reached the broker
                // before the kill; such a message may legitimately come back, so acked ones
                // are checked only for those acked well before the kill (see below).
                if d.ack(BasicAckOptions::default()).await.is_err() {
                    return;
                }
                acked.lock().expect("lock").push((p, seq));
            }
        });
    }
    tokio::time::sleep(kill_after).await;
    // Acks recorded before this point reached the broker and, a second later, its disk
    // (sled flushes at least every 500 ms; acks are not flushed synchronously, as in
    // RabbitMQ, so only older ones are held to "never comes back").
    let settled_acks: Vec<(u8, u32)> = acked.lock().expect("lock").clone();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    stop.store(true, Ordering::Relaxed);
    let confirmed = confirmed.lock().expect("lock").clone();
    let acked_all: Vec<(u8, u32)> = acked.lock().expect("lock").clone();

    let mut child = spawn_broker(port, &dir, extra);
    let conn = connect(port).await;
    let ch = conn.create_channel().await.expect("channel");
    let mut recovered: HashMap<u8, Vec<u32>> = HashMap::new();
    while let Some(m) = within("get", ch.basic_get("crash".into(), BasicGetOptions { no_ack: true })).await.expect("get") {
        let d = &m.delivery.data;
        recovered.entry(d[0]).or_default().push(u32::from_be_bytes([d[1], d[2], d[3], d[4]]));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);

    let total_confirmed: usize = confirmed.values().map(Vec::len).sum();
    assert!(total_confirmed > 0, "the run confirmed nothing before the kill");
    for (p, seqs) in &recovered {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "publisher {p}: out of order or duplicated: {seqs:?}");
    }
    for (p, seqs) in &confirmed {
        let back = recovered.get(p).cloned().unwrap_or_default();
        for seq in seqs {
            let was_acked = acked_all.contains(&(*p, *seq));
            if !was_acked {
                assert!(back.contains(seq), "publisher {p}: confirmed, unacked message {seq} was lost");
            }
        }
    }
    for (p, seq) in settled_acks {
        assert!(!recovered.get(&p).is_some_and(|v| v.contains(&seq)), "publisher {p}: acked message {seq} came back");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_messages_survive_sigkill_at_several_moments() {
    // The middle run keeps no message content in memory: every delivery reads the store.
    for (ms, extra) in [(150u64, &[][..]), (400, &["--queue-memory-mb", "0"][..]), (900, &[][..])] {
        run_once(Duration::from_millis(ms), extra).await;
    }
}

/// Publishes three persistent messages to durable queue "marks", takes the first with
/// basic.get and leaves it unacknowledged, then stops the broker with `signal` once the
/// delivery mark has had time to be written; returns the redelivered flags the restarted
/// broker gives the three, in queue order.
async fn flags_after_stop(signal: &str) -> Vec<bool> {
    let dir = fresh_data_dir();
    let port = free_port();
    let mut child = spawn_broker(port, &dir, &[]);
    let conn = connect(port).await;
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    ch.queue_declare("marks".into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default()).await.expect("declare");
    for i in 0..3u8 {
        let props = BasicProperties::default().with_delivery_mode(2);
        ch.basic_publish("".into(), "marks".into(), BasicPublishOptions::default(), &[i], props).await.expect("publish");
    }
    assert!(within("confirms", ch.wait_for_confirms()).await.expect("confirms").is_empty());
    let got = within("get", ch.basic_get("marks".into(), BasicGetOptions { no_ack: false })).await.expect("get").expect("message");
    assert_eq!(got.delivery.data, [0]);
    // Longer than the mark interval plus sled's own periodic flush.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = Command::new("kill").args([signal, &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let _ = within("the broker to stop", async { while child.try_wait().ok().flatten().is_none() { tokio::time::sleep(Duration::from_millis(20)).await } }).await;

    let mut child = spawn_broker(port, &dir, &[]);
    let conn = connect(port).await;
    let ch = conn.create_channel().await.expect("channel");
    let mut flags = Vec::new();
    for i in 0..3u8 {
        let m = within("get", ch.basic_get("marks".into(), BasicGetOptions { no_ack: true })).await.expect("get").expect("message");
        assert_eq!(m.delivery.data, [i], "queue order");
        flags.push(m.delivery.redelivered);
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    flags
}

/// After a clean stop (SIGTERM) the flags are exact: the message delivered and left
/// unacknowledged comes back redelivered, the two never delivered come back unflagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_clean_stop_only_delivered_messages_come_back_redelivered() {
    assert_eq!(flags_after_stop("-TERM").await, [true, false, false]);
}

/// After kill -9 every recovered message comes back redelivered, as RabbitMQ's do
/// (measured on 3.10: three messages, one delivered, all three flagged after kill -9):
/// the marks of the last deliveries before a crash may not have reached the disk, so
/// any message may have been delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigkill_every_recovered_message_comes_back_redelivered() {
    assert_eq!(flags_after_stop("-KILL").await, [true, true, true]);
}

/// kill -9 with the queue extensions in use: a persistent message dead-lettered into a
/// durable queue is there after the restart; priorities keep their order; a per-message TTL
/// and an x-expires countdown run on from their absolute deadlines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_extensions_survive_sigkill() {
    use lapin::types::{AMQPValue, LongString};
    let s = |v: &str| AMQPValue::LongString(LongString::from(v));
    let dir = fresh_data_dir();
    let port = free_port();
    let mut child = spawn_broker(port, &dir, &[]);
    let conn = connect(port).await;
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    let persistent = || BasicProperties::default().with_delivery_mode(2);
    let to_dlq = table(&[("x-dead-letter-exchange", s("")), ("x-dead-letter-routing-key", s("dlq"))]);
    ch.queue_declare("dlq".into(), durable, FieldTable::default()).await.expect("dlq");
    ch.queue_declare("rejects".into(), durable, to_dlq.clone()).await.expect("rejects");
    ch.queue_declare("ttl".into(), durable, to_dlq).await.expect("ttl");
    ch.queue_declare("prio".into(), durable, table(&[("x-max-priority", AMQPValue::LongInt(9))])).await.expect("prio");
    ch.queue_declare("expiring".into(), durable, table(&[("x-expires", AMQPValue::LongInt(5000))])).await.expect("expiring");
    let declared = tokio::time::Instant::now();
    ch.basic_publish("".into(), "rejects".into(), BasicPublishOptions::default(), b"dead", persistent()).await.expect("publish");
    ch.basic_publish("".into(), "ttl".into(), BasicPublishOptions::default(), b"timed", persistent().with_expiration("5000".into())).await.expect("publish");
    for (b, p) in [(1u8, 2u8), (2, 7), (3, 5), (4, 7)] {
        ch.basic_publish("".into(), "prio".into(), BasicPublishOptions::default(), &[b], persistent().with_priority(p)).await.expect("publish");
    }
    assert!(within("confirms", ch.wait_for_confirms()).await.expect("confirms").is_empty());
    let got = within("get", ch.basic_get("rejects".into(), BasicGetOptions { no_ack: false })).await.expect("get").expect("message");
    got.delivery.reject(BasicRejectOptions { requeue: false }).await.expect("reject");
    // Longer than sled's periodic flush (the dead-lettered copy is not confirmed to anyone)
    // and the 100 ms tick that records the queue's last use.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();

    let mut child = spawn_broker(port, &dir, &[]);
    let conn = connect(port).await;
    let ch = conn.create_channel().await.expect("channel");
    let m = within("get", ch.basic_get("dlq".into(), BasicGetOptions { no_ack: true })).await.expect("get").expect("the dead-lettered message");
    assert_eq!(m.delivery.data, b"dead");
    let mut order = Vec::new();
    while let Some(m) = within("get", ch.basic_get("prio".into(), BasicGetOptions { no_ack: true })).await.expect("get") {
        order.push(m.delivery.data[0]);
    }
    assert_eq!(order, vec![2, 4, 3, 1], "highest priority first, FIFO within one");
    // The TTL runs out 5 s after the publish, not 5 s after the restart.
    let deadline = declared + Duration::from_millis(5000);
    loop {
        if let Some(m) = ch.basic_get("dlq".into(), BasicGetOptions { no_ack: true }).await.expect("get") {
            assert_eq!(m.delivery.data, b"timed");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline + Duration::from_millis(1500), "the expired message never reached the dead-letter queue");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep_until(deadline + Duration::from_millis(700)).await;
    let err = ch.queue_declare("expiring".into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await.expect_err("expired");
    assert_eq!(reply_code(&err), Some(404), "x-expires counted on from before the restart");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
