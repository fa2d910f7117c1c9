//! The soak (`make soak`, not part of `make test`): mixed load against the real binary for
//! SOAK_SECONDS (default 1800) — publishers with confirms, consumers that ack and sometimes
//! nack, clients killed at random, the broker killed with SIGKILL and restarted — then a
//! check that no confirmed message was lost, that every duplicate is flagged redelivered
//! (after a kill -9 every recovered message is), and that the broker's RSS and open files
//! stayed bounded. Prints its figures.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

const PUBLISHERS: u8 = 3;

/// Milliseconds since the soak started.
fn since(start: Instant) -> u32 {
    u32::try_from(start.elapsed().as_millis()).unwrap_or(u32::MAX)
}
const CONSUMERS: usize = 2;

struct Broker {
    port: u16,
    dir: std::path::PathBuf,
    child: Child,
}

impl Broker {
    fn spawn(port: u16, dir: &std::path::Path) -> Child {
        Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--metrics-port", "0", "--management-port", "0", "--log-level", "error", "--memory-high-watermark-mb", "256"])
            .arg("--data-dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn warren")
    }

    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(self.port, &self.dir);
    }

    fn proc_stat(&self) -> (u64, usize) {
        let pid = self.child.id();
        let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse::<u64>().ok()))
            .unwrap_or(0);
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
        (rss / 1024, fds)
    }
}

async fn connect(port: u16) -> Option<Connection> {
    let uri = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    for _ in 0..200 {
        if let Ok(c) = Connection::connect(&uri, ConnectionProperties::default()).await {
            return Some(c);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// What the clients saw.
#[derive(Default)]
struct Ledger {
    /// (publisher, seq) confirmed by the broker.
    confirmed: HashSet<(u8, u64)>,
    /// (publisher, seq) received by a consumer, with when it first was (ms since the start).
    received: HashMap<(u8, u64), u32>,
    /// Deliveries of something already received that were not flagged redelivered, with
    /// when each was first received and received again (ms since the start).
    unflagged_duplicates: Vec<(u32, u32)>,
    /// Deliveries of something already received, flagged redelivered.
    redeliveries: u64,
}

fn decode(body: &[u8]) -> Option<(u8, u64)> {
    (body.len() == 9).then(|| (body[0], u64::from_be_bytes(body[1..9].try_into().unwrap_or_default())))
}

async fn publisher(id: u8, port: u16, ledger: Arc<Mutex<Ledger>>, stop: Arc<AtomicBool>, kill: Arc<AtomicU64>) {
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(conn) = connect(port).await else { continue };
        let Ok(ch) = conn.create_channel().await else { continue };
        if ch.confirm_select(ConfirmSelectOptions::default()).await.is_err() {
            continue;
        }
        let generation = kill.load(Ordering::Relaxed);
        while !stop.load(Ordering::Relaxed) && kill.load(Ordering::Relaxed) == generation {
            seq += 1;
            let mut body = vec![id];
            body.extend_from_slice(&seq.to_be_bytes());
            let props = BasicProperties::default().with_delivery_mode(2);
            let Ok(pending) = ch.basic_publish("".into(), "soak".into(), BasicPublishOptions::default(), &body, props).await else { break };
            match tokio::time::timeout(Duration::from_secs(10), pending).await {
                Ok(Ok(c)) if c.is_ack() => {
                    ledger.lock().unwrap_or_else(|p| p.into_inner()).confirmed.insert((id, seq));
                }
                _ => break,
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.close(200, "reconnect".into())).await;
    }
}

async fn consumer(port: u16, ledger: Arc<Mutex<Ledger>>, stop: Arc<AtomicBool>, kill: Arc<AtomicU64>, start: Instant) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(conn) = connect(port).await else { continue };
        let Ok(ch) = conn.create_channel().await else { continue };
        let _ = ch.basic_qos(50, BasicQosOptions::default()).await;
        let Ok(mut c) = ch.basic_consume("soak".into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await else { continue };
        let generation = kill.load(Ordering::Relaxed);
        while !stop.load(Ordering::Relaxed) && kill.load(Ordering::Relaxed) == generation {
            let d = match tokio::time::timeout(Duration::from_millis(500), c.next()).await {
                Ok(Some(Ok(d))) => d,
                Ok(_) => break,
                Err(_) => continue,
            };
            n += 1;
            // One in twenty goes back to the queue.
            if n.is_multiple_of(20) {
                if d.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.is_err() {
                    break;
                }
                continue;
            }
            if let Some(key) = decode(&d.data) {
                let now = since(start);
                let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
                match l.received.get(&key).copied() {
                    None => {
                        l.received.insert(key, now);
                    }
                    Some(_) if d.redelivered => l.redeliveries += 1,
                    Some(first) => l.unflagged_duplicates.push((first, now)),
                }
            }
            if d.ack(BasicAckOptions::default()).await.is_err() {
                break;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.close(200, "reconnect".into())).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the soak runs for SOAK_SECONDS (30 minutes by default): make soak"]
async fn soak() {
    let seconds: u64 = std::env::var("SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1800);
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let dir = fresh_data_dir();
    let mut broker = Broker { port, dir: dir.clone(), child: Broker::spawn(port, &dir) };
    let setup = connect(port).await.expect("broker up");
    setup.create_channel().await.expect("channel").queue_declare("soak".into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default()).await.expect("declare");
    let _ = setup.close(200, "setup".into()).await;
    let (_, fds_start) = broker.proc_stat();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    // Publishers stop first; consumers go on until everything confirmed has arrived.
    let stop_publishing = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let kill = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for id in 0..PUBLISHERS {
        tasks.push(tokio::spawn(publisher(id, port, Arc::clone(&ledger), Arc::clone(&stop_publishing), Arc::clone(&kill))));
    }
    for _ in 0..CONSUMERS {
        tasks.push(tokio::spawn(consumer(port, Arc::clone(&ledger), Arc::clone(&stop), Arc::clone(&kill), start)));
    }
    let started = start;
    let (mut restarts, mut client_kills, mut peak_rss, mut peak_fds) = (0u32, 0u32, 0u64, 0usize);
    let mut rss_samples = Vec::new();
    let mut tick = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        tick += 1;
        let (rss, fds) = broker.proc_stat();
        peak_rss = peak_rss.max(rss);
        peak_fds = peak_fds.max(fds);
        rss_samples.push(rss);
        // Every 25 s the clients drop their connections; every 2 minutes the broker is
        // killed with SIGKILL and restarted on the same data.
        if tick.is_multiple_of(5) {
            kill.fetch_add(1, Ordering::Relaxed);
            client_kills += 1;
        }
        if tick.is_multiple_of(24) {
            broker.restart();
            restarts += 1;
        }
    }
    // Stop publishing, then let the consumers drain what is left.
    stop_publishing.store(true, Ordering::Relaxed);
    for t in tasks.drain(..PUBLISHERS as usize) {
        let _ = t.await;
    }
    let drain_start = Instant::now();
    loop {
        let (confirmed, missing) = {
            let l = ledger.lock().unwrap_or_else(|p| p.into_inner());
            (l.confirmed.len(), l.confirmed.iter().filter(|k| !l.received.contains_key(k)).count())
        };
        if missing == 0 || drain_start.elapsed() > Duration::from_secs(120) {
            eprintln!("drain: {confirmed} confirmed, {missing} not received yet");
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, Ordering::Relaxed);
    // A client stuck on a broker that went away mid-call must not hold the report up.
    for t in tasks {
        if tokio::time::timeout(Duration::from_secs(30), t).await.is_err() {
            eprintln!("a client task did not stop within 30 s; left behind");
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_end, fds_end) = broker.proc_stat();
    let l = ledger.lock().unwrap_or_else(|p| p.into_inner());
    let missing_count = l.confirmed.iter().filter(|k| !l.received.contains_key(k)).count();
    let missing: Vec<_> = l.confirmed.iter().filter(|k| !l.received.contains_key(k)).take(10).collect();
    let mut per_pub: HashMap<u8, usize> = HashMap::new();
    for (p, _) in &l.confirmed {
        *per_pub.entry(*p).or_default() += 1;
    }
    eprintln!(
        "soak: {seconds} s, {} confirmed, {} received, {} redeliveries, {} unflagged duplicates, {} missing, {restarts} broker kill -9 restarts, {client_kills} client disconnect rounds, peak RSS {peak_rss} MiB (end {rss_end} MiB), open files {fds_start} at start / peak {peak_fds} / end {fds_end}",
        l.confirmed.len(),
        l.received.len(),
        l.redeliveries,
        l.unflagged_duplicates.len(),
        missing_count,
    );
    let _ = broker.child.kill();
    let _ = broker.child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(missing.is_empty(), "confirmed but never received: {missing:?}");
    let first: Vec<_> = l.unflagged_duplicates.iter().take(10).collect();
    assert!(first.is_empty(), "duplicates not flagged redelivered (first received, received again, ms): {first:?}");
    assert!(fds_end <= fds_start + 16, "open files grew from {fds_start} to {fds_end}");
    assert!(peak_rss < 1024, "peak RSS {peak_rss} MiB");
}
