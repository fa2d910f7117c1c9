//! warren-perf: a load generator for AMQP 0-9-1 brokers. See `warren-perf --help`.

mod cli;
mod stats;
mod rpc;
mod worker;

use clap::Parser;
use cli::{Cli, Config, ExchangeType};
use lapin::options::{
    BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use stats::{new_histogram, now_ns, read_proc_cpu, read_proc_mem, Counters, Latency, Registry, Summary, Totals};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use worker::{ConsumerSpec, ProducerSpec};

type AnyError = Box<dyn std::error::Error + Send + Sync>;

// lapin allocates several times per message, often freeing on another thread (the
// connection's I/O thread); mimalloc handles that much better than glibc malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cfg = Cli::parse().validate();
    let threads = cfg.cli.threads.map_or_else(
        || std::thread::available_parallelism().map_or(2, |n| n.get()),
        |t| t as usize,
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("warren-perf: cannot start runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(run(cfg)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("warren-perf: {e}");
            1
        }
    };
    // Don't wait for lapin's I/O threads to wind down.
    std::process::exit(code);
}

fn conn_props(name: String) -> ConnectionProperties {
    ConnectionProperties::default().with_connection_name(LongString::from(name))
}

async fn connect(uri: &str, name: String, timeout: Duration) -> Result<Connection, AnyError> {
    match tokio::time::timeout(timeout, Connection::connect(uri, conn_props(name.clone()))).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("connecting {name} to {}: {e}", redact(uri)).into()),
        Err(_) => Err(format!(
            "connecting {name} to {}: no handshake after {timeout:?} (is the broker out of file descriptors or at its connection limit?)",
            redact(uri)
        )
        .into()),
    }
}

/// The URI without its password, for messages.
fn redact(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &uri[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &uri[..s + 3], &uri[at..]),
                None => uri.to_string(),
            }
        }
        _ => uri.to_string(),
    }
}

/// Open `n` connections (named `prefix-i`) with at most 32 handshakes in flight.
async fn open_connections(
    uri: &str,
    prefix: &str,
    n: usize,
    timeout: Duration,
) -> Result<Vec<Connection>, AnyError> {
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let (uri, name, sem) = (uri.to_string(), format!("{prefix}-{i}"), sem.clone());
        handles.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            connect(&uri, name, timeout).await
        }));
    }
    let mut conns = Vec::with_capacity(n);
    for h in handles {
        conns.push(h.await.map_err(|e| format!("connect task: {e}"))??);
    }
    Ok(conns)
}

fn headers_for(key: &str) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        ShortString::from("rk"),
        AMQPValue::LongString(LongString::from(key)),
    );
    t
}

async fn declare_topology(cfg: &Config, ch: &Channel) -> Result<(), AnyError> {
    let cli = &cfg.cli;
    if !cfg.exchange.is_empty() {
        let passive = cfg.exchange.starts_with("amq.");
        ch.exchange_declare(
            ShortString::from(cfg.exchange.as_str()),
            cfg.exchange_type.lapin(),
            ExchangeDeclareOptions {
                passive,
                durable: cli.durable,
                auto_delete: cli.auto_delete,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("declaring exchange {:?}: {e}", cfg.exchange))?;
    }
    for q in &cfg.queues {
        ch.queue_declare(
            ShortString::from(q.as_str()),
            QueueDeclareOptions {
                durable: cli.durable,
                auto_delete: cli.auto_delete,
                ..Default::default()
            },
            cfg.queue_args.clone(),
        )
        .await
        .map_err(|e| format!("declaring queue {q:?}: {e}"))?;
    }
    if let Some(q) = &cli.consume_queue {
        ch.queue_declare(
            ShortString::from(q.as_str()),
            QueueDeclareOptions {
                durable: cli.durable,
                auto_delete: cli.auto_delete,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("declaring queue {q:?}: {e}"))?;
    }
    let mut n = 0usize;
    for (q, keys) in cfg.queues.iter().zip(&cfg.bindings) {
        for key in keys {
            let (rk, args) = if cfg.exchange_type == ExchangeType::Headers {
                let mut args = headers_for(key);
                args.insert(
                    ShortString::from("x-match"),
                    AMQPValue::LongString(LongString::from("all")),
                );
                (ShortString::from(""), args)
            } else {
                (ShortString::from(key.as_str()), FieldTable::default())
            };
            ch.queue_bind(
                ShortString::from(q.as_str()),
                ShortString::from(cfg.exchange.as_str()),
                rk,
                QueueBindOptions::default(),
                args,
            )
            .await
            .map_err(|e| {
                format!(
                    "binding queue {q:?} to {:?} with {key:?}: {e}",
                    cfg.exchange
                )
            })?;
            n += 1;
        }
    }
    if n > 0 {
        eprintln!(
            "warren-perf: declared {} queue(s) with {n} binding(s)",
            cfg.queues.len()
        );
    }
    Ok(())
}

struct Errors {
    count: std::sync::atomic::AtomicU64,
}

/// A running producer or consumer.
struct Worker(JoinHandle<()>);

impl Worker {
    fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    /// Wait for the worker to finish, at most `limit`.
    async fn wait(self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.0).await;
    }
}

fn spawn_worker(
    what: String,
    fut: impl std::future::Future<Output = lapin::Result<()>> + Send + 'static,
    errors: Arc<Errors>,
    fail: Arc<AtomicBool>,
) -> Worker {
    Worker(tokio::spawn(async move {
        if let Err(e) = fut.await {
            eprintln!("warren-perf: {what}: {e}");
            errors.count.fetch_add(1, Relaxed);
            fail.store(true, Relaxed);
        }
    }))
}

async fn run(cfg: Config) -> Result<i32, AnyError> {
    let cli = cfg.cli.clone();
    now_ns(); // fix the time origin
    let uri = cli.uri.as_str();
    let producers = cli.producers as usize;
    let consumers = cli.consumers as usize;
    let workers = producers + consumers;
    let connect_timeout = Duration::from_secs_f64(cli.connect_timeout);
    let mem = |_: ()| cli.broker_pid.and_then(read_proc_mem);
    if cli.idle_connections > 0 && cli.broker_pid.is_some() {
        // Let the broker's memory settle (e.g. after a previous run) before the baseline.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let mem_start = mem(());

    // Topology, on a short-lived connection.
    if workers > 0 && !cli.predeclared {
        let conn = connect(uri, "warren-perf-setup".into(), connect_timeout).await?;
        let ch = conn.create_channel().await?;
        declare_topology(&cfg, &ch).await?;
        let _ = ch.close(200, ShortString::from("setup done")).await;
        let _ = conn.close(200, ShortString::from("setup done")).await;
    }

    // Idle connections, each with one channel.
    let mut idle: Vec<Connection> = Vec::new();
    let mut idle_channels: Vec<Channel> = Vec::new();
    let mut mem_idle = None;
    if cli.idle_connections > 0 {
        let n = cli.idle_connections as usize;
        let t = std::time::Instant::now();
        let conns = open_connections(uri, "warren-perf-idle", n, connect_timeout).await?;
        for c in &conns {
            idle_channels.push(c.create_channel().await?);
        }
        eprintln!(
            "warren-perf: opened {n} idle connections with one channel each in {:.2}s",
            t.elapsed().as_secs_f64()
        );
        // Let the broker settle before measuring.
        tokio::time::sleep(Duration::from_secs(2)).await;
        mem_idle = mem(());
        idle = conns;
    }

    // Worker connections and channels.
    let n_conns = match (cli.connections, cli.channels_per_connection) {
        (Some(c), _) => c as usize,
        (None, Some(k)) => workers.div_ceil(k as usize),
        (None, None) => workers,
    };
    let conn_of = |i: usize| match (cli.connections, cli.channels_per_connection) {
        (Some(c), _) => i % c as usize,
        (None, Some(k)) => i / k as usize,
        (None, None) => i,
    };
    let conns = open_connections(uri, "warren-perf", n_conns, connect_timeout).await?;
    let mut channels = Vec::with_capacity(workers);
    for i in 0..workers {
        channels.push(conns[conn_of(i)].create_channel().await?);
    }
    let consumer_channels = channels.split_off(producers);
    let producer_channels = channels;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_producers = Arc::new(AtomicBool::new(false));
    let fail = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Errors {
        count: Default::default(),
    });
    let mut reg = Registry::default();

    let mut stuck_conn = None;
    // Consumers subscribe before anything is published.
    let mut consumer_specs = Vec::with_capacity(consumers);
    for (j, ch) in consumer_channels.into_iter().enumerate() {
        let queue = cli.consume_queue.as_ref().unwrap_or(&cfg.queues[j % cfg.queues.len()]);
        if !cli.auto_ack {
            if let Some(p) = cli.prefetch.filter(|p| *p > 0) {
                ch.basic_qos(p, BasicQosOptions::default()).await?;
            }
        }
        let consumer = ch
            .basic_consume(
                ShortString::from(queue.as_str()),
                ShortString::from(format!("warren-perf-{j}")),
                BasicConsumeOptions {
                    no_ack: cli.auto_ack || cli.rpc,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("consuming from {queue:?}: {e}"))?;
        let counters = Arc::new(Counters::default());
        let latency = Arc::new(Latency::new());
        reg.consumers.push(counters.clone());
        reg.latencies.push(latency.clone());
        consumer_specs.push(ConsumerSpec {
            channel: ch,
            consumer,
            auto_ack: cli.auto_ack,
            multi_ack_every: cli.multi_ack_every,
            limit: cli.cmessages,
            counters,
            latency,
            stop_rx: stop_rx.clone(),
        });
    }

    // Consumers that fill their prefetch of 1 and never ack (kept until the run ends).
    let mut stuck = Vec::new();
    if cli.stuck_consumers > 0 {
        let conn = connect(uri, "warren-perf-stuck".into(), connect_timeout).await?;
        for k in 0..cli.stuck_consumers {
            let ch = conn.create_channel().await?;
            ch.basic_qos(1, BasicQosOptions::default()).await?;
            let queue = cli.consume_queue.as_ref().unwrap_or(&cfg.queues[k as usize % cfg.queues.len()]);
            let consumer = ch
                .basic_consume(ShortString::from(queue.as_str()), ShortString::from(format!("warren-perf-stuck-{k}")), BasicConsumeOptions::default(), FieldTable::default())
                .await?;
            stuck.push((ch, consumer));
        }
        stuck_conn = Some(conn);
    }

    let base_props = if cli.persistent {
        BasicProperties::default().with_delivery_mode(2)
    } else {
        BasicProperties::default()
    };
    let mut producer_specs = Vec::with_capacity(producers);
    for (i, ch) in producer_channels.into_iter().enumerate() {
        if cli.confirm.is_some() {
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
        }
        let keys: Vec<String> = if cfg.routing_keys.is_empty() {
            vec![cfg.queues[i % cfg.queues.len()].clone()]
        } else {
            cfg.routing_keys.clone()
        };
        let keys = keys
            .iter()
            .map(|k| {
                let props =
                    if cfg.exchange_type == ExchangeType::Headers && !cfg.exchange.is_empty() {
                        base_props.clone().with_headers(headers_for(k))
                    } else {
                        base_props.clone()
                    };
                (ShortString::from(k.as_str()), props)
            })
            // With --priorities, every key once per priority: random key order then
            // means a random priority per message.
            .flat_map(|(k, props): (ShortString, BasicProperties)| {
                let n = cli.priorities;
                (0..=n).map(move |pr| {
                    let props = if n > 0 { props.clone().with_priority(pr) } else { props.clone() };
                    (k.clone(), props)
                })
            })
            .collect();
        let counters = Arc::new(Counters::default());
        reg.producers.push(counters.clone());
        producer_specs.push(ProducerSpec {
            index: i as u32,
            channel: ch,
            exchange: ShortString::from(cfg.exchange.as_str()),
            keys,
            key_order: cli.routing_key_order,
            size: cli.size as usize,
            rate: cli.rate,
            limit: cli.pmessages,
            confirm: cli.confirm,
            write_window: u64::from(cli.write_window),
            drain_timeout: Duration::from_secs_f64(cli.drain_timeout),
            counters,
            stop: stop_producers.clone(),
            stop_rx: stop_rx.clone(),
        });
    }

    // Go.
    let ctrl_c = Arc::new(AtomicBool::new(false));
    {
        let ctrl_c = ctrl_c.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                ctrl_c.store(true, Relaxed);
            }
        });
    }
    let cpu_start = (read_proc_cpu(None), cli.broker_pid.and_then(|p| read_proc_cpu(Some(p))));
    let start_ns = now_ns();
    let start = tokio::time::Instant::now();
    let mut handles = Vec::new();
    for (j, spec) in consumer_specs.into_iter().enumerate() {
        let run: std::pin::Pin<Box<dyn std::future::Future<Output = lapin::Result<()>> + Send>> =
            if cli.rpc { Box::pin(rpc::run_server(spec)) } else { Box::pin(worker::run_consumer(spec)) };
        handles.push(spawn_worker(format!("consumer {j}"), run, errors.clone(), fail.clone()));
    }
    let mut producer_handles = Vec::new();
    for (i, spec) in producer_specs.into_iter().enumerate() {
        let run: std::pin::Pin<Box<dyn std::future::Future<Output = lapin::Result<()>> + Send>> = if cli.rpc {
            let latency = Arc::new(Latency::new());
            reg.latencies.push(latency.clone());
            Box::pin(rpc::run_client(rpc::ClientSpec {
                channel: spec.channel,
                queue: spec.keys[0].0.clone(),
                size: spec.size,
                limit: spec.limit,
                counters: spec.counters,
                latency,
                stop: spec.stop,
                stop_rx: spec.stop_rx,
            }))
        } else {
            Box::pin(worker::run_producer(spec))
        };
        producer_handles.push(spawn_worker(format!("producer {i}"), run, errors.clone(), fail.clone()));
    }

    let confirms = cli.confirm.is_some();
    let time_limit = cli.time.map(Duration::from_secs_f64);
    let drain = Duration::from_secs_f64(cli.drain_timeout);
    let mut total_hist = new_histogram();
    let mut interval_hist = new_histogram();
    let mut prev = Totals::default();
    let mut prev_report = start;
    let mut next_report = start + Duration::from_secs(1);
    let mut last_received = 0u64;
    let mut last_progress = start;
    let mut peak_rss = mem_start.map(|m| m.rss_kb);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u64;
    let stop_reason;
    loop {
        tick.tick().await;
        ticks += 1;
        let now = tokio::time::Instant::now();
        if ticks >= 5 {
            ticks = 0;
            if let Some(m) = mem(()) {
                peak_rss = Some(peak_rss.unwrap_or(0).max(m.rss_kb));
            }
        }
        let t = reg.totals();
        if now >= next_report {
            reg.drain_latencies(&mut interval_hist);
            let dt = (now - prev_report).as_secs_f64();
            if !cli.quiet {
                let d = Totals {
                    sent: t.sent - prev.sent,
                    confirmed: t.confirmed - prev.confirmed,
                    nacked: t.nacked - prev.nacked,
                    received: t.received - prev.received,
                };
                println!(
                    "{}",
                    stats::interval_line(
                        (now - start).as_secs_f64(),
                        dt,
                        d,
                        &interval_hist,
                        confirms
                    )
                );
            }
            let _ = total_hist.add(&interval_hist);
            interval_hist.reset();
            prev = t;
            prev_report = now;
            while next_report <= now {
                next_report += Duration::from_secs(1);
            }
        }
        if t.received != last_received {
            last_received = t.received;
            last_progress = now;
        }
        if fail.load(Relaxed) {
            stop_reason = "error";
            break;
        }
        if ctrl_c.load(Relaxed) {
            stop_reason = "interrupted";
            break;
        }
        if time_limit.is_some_and(|l| now - start >= l) {
            stop_reason = "time limit";
            break;
        }
        let producers_done = producer_handles.iter().all(Worker::is_finished);
        let consumers_done = handles.iter().all(Worker::is_finished);
        if consumers > 0 && cli.cmessages.is_some() && consumers_done {
            stop_reason = "consumers received --cmessages";
            break;
        }
        if workers == 0 || !producers_done {
            continue;
        }
        if consumers == 0 {
            stop_reason = "producers done";
            break;
        }
        if cli.cmessages.is_some() {
            continue;
        }
        if let Some(f) = cfg.fanout_factor.filter(|_| producers > 0) {
            if t.received >= t.sent * f {
                stop_reason = "all messages received";
                break;
            }
        }
        if (producers > 0 || t.received > 0) && now - last_progress >= drain {
            stop_reason = "no more deliveries (drain timeout)";
            break;
        }
    }
    let stop_ns = now_ns();
    let cpu_stop = (read_proc_cpu(None), cli.broker_pid.and_then(|p| read_proc_cpu(Some(p))));
    let stopped_early = matches!(stop_reason, "time limit" | "interrupted" | "error");
    stop_producers.store(true, Relaxed);
    let _ = stop_tx.send(true);
    for h in producer_handles {
        h.wait(drain + Duration::from_secs(5)).await;
    }
    for h in handles {
        h.wait(Duration::from_secs(5)).await;
    }
    eprintln!("warren-perf: stopped: {stop_reason}");

    // Final figures.
    reg.drain_latencies(&mut total_hist);
    let t = reg.totals();
    let mem_end = mem(());
    if let Some(m) = mem_end {
        peak_rss = Some(peak_rss.unwrap_or(0).max(m.rss_kb));
    }
    let secs = |end: u64| end.saturating_sub(start_ns) as f64 / 1e9;
    let max_of =
        |v: &[Arc<Counters>], f: fn(&Counters) -> u64| v.iter().map(|c| f(c)).max().unwrap_or(0);
    // A producer that finished on its own (--pmessages) is timed to its last publish; one
    // that was stopped ran until the stop. Consumers are timed to their last delivery when
    // the run ended because everything was received (not the idle wait), else to the stop.
    let send_end = reg
        .producers
        .iter()
        .map(|c| {
            let done = c.done_ns.load(Relaxed);
            if done != 0 && done <= stop_ns {
                c.last_ns.load(Relaxed)
            } else {
                stop_ns
            }
        })
        .max()
        .unwrap_or(0);
    let confirm_end = max_of(&reg.producers, |c| c.last_confirm_ns.load(Relaxed)).max(
        if stopped_early { stop_ns.min(send_end) } else { 0 },
    );
    let recv_end = if stopped_early && consumers > 0 {
        stop_ns
    } else {
        max_of(&reg.consumers, |c| c.last_ns.load(Relaxed))
    };
    let rate = |n: u64, s: f64| {
        if s > 0.0 {
            (n as f64 / s * 10.0).round() / 10.0
        } else {
            0.0
        }
    };
    let n_idle = idle.len();
    let mut s = Summary {
        tool: "warren-perf",
        version: env!("CARGO_PKG_VERSION"),
        producers: cli.producers,
        consumers: cli.consumers,
        queues: cfg.queues.len(),
        size: cli.size,
        confirm: cli.confirm,
        rate_limit: cli.rate,
        auto_ack: cli.auto_ack,
        prefetch: cli.prefetch,
        persistent: cli.persistent,
        exchange: cfg.exchange.clone(),
        exchange_type: if cfg.exchange.is_empty() {
            "default".into()
        } else {
            format!("{:?}", cfg.exchange_type).to_lowercase()
        },
        connections: n_conns,
        idle_connections: n_idle,
        duration_s: secs(stop_ns),
        send_duration_s: secs(send_end),
        receive_duration_s: secs(recv_end),
        sent: t.sent,
        confirmed: t.confirmed,
        nacked: t.nacked,
        received: t.received,
        send_rate: rate(t.sent, secs(send_end)),
        confirm_rate: rate(t.confirmed + t.nacked, secs(confirm_end)),
        receive_rate: rate(t.received, secs(recv_end)),
        broker_pid: cli.broker_pid,
        broker_rss_start_kb: mem_start.map(|m| m.rss_kb),
        broker_rss_idle_kb: mem_idle.map(|m| m.rss_kb),
        broker_rss_end_kb: mem_end.map(|m| m.rss_kb),
        broker_rss_peak_kb: peak_rss,
        broker_hwm_kb: mem_end.map(|m| m.hwm_kb),
        errors: errors.count.load(Relaxed),
        ..Default::default()
    };
    if n_idle > 0 {
        // With no producers/consumers, the end-of-run figure is the most settled one.
        let after = if workers == 0 {
            mem_end.or(mem_idle)
        } else {
            mem_idle
        };
        if let (Some(a), Some(b)) = (mem_start, after) {
            s.broker_rss_idle_kb = Some(b.rss_kb);
            s.broker_rss_per_idle_connection_kb =
                Some(((b.rss_kb as f64 - a.rss_kb as f64) / n_idle as f64 * 100.0).round() / 100.0);
        }
    }
    if let (Some(a), Some(b)) = (cpu_start.0, cpu_stop.0) {
        s.tool_cpu_s = Some(((b - a) * 100.0).round() / 100.0);
    }
    if let (Some(a), Some(b)) = (cpu_start.1, cpu_stop.1) {
        let cpu = b - a;
        s.broker_cpu_s = Some((cpu * 100.0).round() / 100.0);
        let msgs = t.sent + t.received;
        if msgs > 0 {
            s.broker_cpu_us_per_msg = Some((cpu * 1e6 / msgs as f64 * 100.0).round() / 100.0);
        }
    }
    s.set_latency(&total_hist);
    print!("{}", s.human());
    if cli.json {
        println!("{}", serde_json::to_string(&s)?);
    }

    // Close everything (bounded), concurrently.
    let mut closing = Vec::new();
    drop(idle_channels);
    drop(stuck);
    for c in conns.into_iter().chain(idle).chain(stuck_conn) {
        closing.push(tokio::spawn(async move {
            let _ = tokio::time::timeout(
                Duration::from_secs(3),
                c.close(200, ShortString::from("bye")),
            )
            .await;
        }));
    }
    for h in closing {
        let _ = h.await;
    }
    Ok(if s.errors > 0 { 1 } else { 0 })
}
