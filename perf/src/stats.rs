//! Counters, latency histograms, per-second report and final summary.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// (monotonic origin, wall-clock nanoseconds since the Unix epoch at that origin)
static ORIGIN: OnceLock<(Instant, u64)> = OnceLock::new();

/// Current time in nanoseconds since the Unix epoch, advanced by the monotonic clock from
/// one wall-clock reading at start: monotonic within the process (clock steps don't affect
/// it) and comparable across processes on the same host (e.g. filling a backlog with one
/// run and draining it with another measures the time messages spent queued).
#[inline]
pub fn now_ns() -> u64 {
    let (mono, epoch) = ORIGIN.get_or_init(|| {
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        (Instant::now(), epoch)
    });
    epoch + mono.elapsed().as_nanos() as u64
}

/// Highest latency tracked: one hour.
const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds")
}

/// Per-worker counters: each is written by one task only (plain stores) and read by the
/// reporter. Aligned to keep workers off each other's cache lines.
#[repr(align(128))]
#[derive(Default, Debug)]
pub struct Counters {
    pub sent: AtomicU64,
    pub confirmed: AtomicU64,
    pub nacked: AtomicU64,
    pub received: AtomicU64,
    /// now_ns() of the last publish (producers) or delivery (consumers).
    pub last_ns: AtomicU64,
    /// now_ns() of the last confirm (producers).
    pub last_confirm_ns: AtomicU64,
    /// now_ns() when the worker finished, 0 while running.
    pub done_ns: AtomicU64,
}

/// Per-consumer latency histogram of the current reporting interval.
pub struct Latency {
    pub interval: Mutex<Histogram<u64>>,
}

impl Latency {
    pub fn new() -> Self {
        Self {
            interval: Mutex::new(new_histogram()),
        }
    }

    /// Record a latency; values above one hour (a body that doesn't carry our timestamp)
    /// are ignored.
    #[inline]
    pub fn record(&self, ns: u64) {
        if ns > MAX_LATENCY_NS {
            return;
        }
        if let Ok(mut h) = self.interval.lock() {
            h.saturating_record(ns.max(1));
        }
    }
}

#[derive(Default)]
pub struct Registry {
    pub producers: Vec<Arc<Counters>>,
    pub consumers: Vec<Arc<Counters>>,
    pub latencies: Vec<Arc<Latency>>,
}

#[derive(Default, Clone, Copy, Debug)]
pub struct Totals {
    pub sent: u64,
    pub confirmed: u64,
    pub nacked: u64,
    pub received: u64,
}

impl Registry {
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for c in &self.producers {
            t.sent += c.sent.load(Relaxed);
            t.confirmed += c.confirmed.load(Relaxed);
            t.nacked += c.nacked.load(Relaxed);
        }
        for c in &self.consumers {
            t.received += c.received.load(Relaxed);
        }
        t
    }

    /// Move every consumer's interval histogram into `into` (and reset them).
    pub fn drain_latencies(&self, into: &mut Histogram<u64>) {
        for l in &self.latencies {
            if let Ok(mut h) = l.interval.lock() {
                if !h.is_empty() {
                    let _ = into.add(&*h);
                    h.reset();
                }
            }
        }
    }
}

pub fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn fmt_us(ns: u64) -> String {
    let v = us(ns);
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The per-second line.
pub fn interval_line(
    elapsed_s: f64,
    dt: f64,
    d: Totals,
    lat: &Histogram<u64>,
    confirms: bool,
) -> String {
    let rate = |n: u64| (n as f64 / dt).round() as u64;
    let mut s = format!("time {elapsed_s:7.1}s | sent {:>8} msg/s", rate(d.sent));
    if confirms {
        s.push_str(&format!(" | confirmed {:>8} msg/s", rate(d.confirmed)));
        if d.nacked > 0 {
            s.push_str(&format!(" (nacked {})", d.nacked));
        }
    }
    s.push_str(&format!(" | received {:>8} msg/s", rate(d.received)));
    if lat.is_empty() {
        s.push_str(" | latency p50      - us");
    } else {
        s.push_str(&format!(
            " | latency p50 {:>6} us, p99 {:>6} us",
            fmt_us(lat.value_at_quantile(0.5)),
            fmt_us(lat.value_at_quantile(0.99))
        ));
    }
    s
}

/// Broker memory figures from /proc/PID/status, in KiB.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcMem {
    pub rss_kb: u64,
    pub hwm_kb: u64,
}

pub fn read_proc_mem(pid: u32) -> Option<ProcMem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut m = ProcMem::default();
    let field = |line: &str| -> Option<u64> { line.split_whitespace().nth(1)?.parse().ok() };
    for line in status.lines() {
        if line.starts_with("VmRSS:") {
            m.rss_kb = field(line)?;
        } else if line.starts_with("VmHWM:") {
            m.hwm_kb = field(line)?;
        }
    }
    Some(m)
}

/// CPU time (user + system) consumed so far by a process, in seconds (`/proc/PID/stat`;
/// Linux reports it in USER_HZ = 100 ticks per second).
pub fn read_proc_cpu(pid: Option<u32>) -> Option<f64> {
    let path = pid.map_or_else(|| "/proc/self/stat".to_string(), |p| format!("/proc/{p}/stat"));
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// The final JSON line. Keys are stable; absent figures are null.
#[derive(Serialize, Debug, Default)]
pub struct Summary {
    pub tool: &'static str,
    pub version: &'static str,
    pub producers: u32,
    pub consumers: u32,
    pub queues: usize,
    pub size: u32,
    pub confirm: Option<u32>,
    pub rate_limit: f64,
    pub auto_ack: bool,
    pub prefetch: Option<u16>,
    pub persistent: bool,
    pub exchange: String,
    pub exchange_type: String,
    pub connections: usize,
    pub idle_connections: usize,
    /// Wall time of the measured run (start of publishing/consuming to stop).
    pub duration_s: f64,
    /// Time from start until the last producer finished (including its last confirms).
    pub send_duration_s: f64,
    /// Time from start until the last delivery.
    pub receive_duration_s: f64,
    pub sent: u64,
    pub confirmed: u64,
    pub nacked: u64,
    pub received: u64,
    pub send_rate: f64,
    pub confirm_rate: f64,
    pub receive_rate: f64,
    pub latency_count: u64,
    pub latency_min_us: Option<f64>,
    pub latency_mean_us: Option<f64>,
    pub latency_p50_us: Option<f64>,
    pub latency_p95_us: Option<f64>,
    pub latency_p99_us: Option<f64>,
    pub latency_p999_us: Option<f64>,
    pub latency_max_us: Option<f64>,
    pub broker_pid: Option<u32>,
    /// Broker VmRSS before any connection of this run was opened.
    pub broker_rss_start_kb: Option<u64>,
    /// Broker VmRSS once the idle connections are open (after a short settle).
    pub broker_rss_idle_kb: Option<u64>,
    /// (broker_rss_idle_kb - broker_rss_start_kb) / idle_connections.
    pub broker_rss_per_idle_connection_kb: Option<f64>,
    /// Broker VmRSS at the end of the run (connections still open).
    pub broker_rss_end_kb: Option<u64>,
    /// Highest broker VmRSS sampled (every 250 ms) during the run.
    pub broker_rss_peak_kb: Option<u64>,
    /// Broker VmHWM (peak RSS since the broker started, or since it was last reset).
    pub broker_hwm_kb: Option<u64>,
    /// Broker CPU time (user + system) during the measured run.
    pub broker_cpu_s: Option<f64>,
    /// broker_cpu_s in microseconds / (sent + received).
    pub broker_cpu_us_per_msg: Option<f64>,
    /// warren-perf's own CPU time during the measured run (if it nears duration_s x CPUs,
    /// the client is the bottleneck).
    pub tool_cpu_s: Option<f64>,
    pub errors: u64,
}

impl Summary {
    pub fn set_latency(&mut self, h: &Histogram<u64>) {
        self.latency_count = h.len();
        if h.is_empty() {
            return;
        }
        self.latency_min_us = Some(us(h.min()));
        self.latency_mean_us = Some((h.mean() / 10.0).round() / 100.0);
        self.latency_p50_us = Some(us(h.value_at_quantile(0.5)));
        self.latency_p95_us = Some(us(h.value_at_quantile(0.95)));
        self.latency_p99_us = Some(us(h.value_at_quantile(0.99)));
        self.latency_p999_us = Some(us(h.value_at_quantile(0.999)));
        self.latency_max_us = Some(us(h.max()));
    }

    pub fn human(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!("summary: {:.2}s\n", self.duration_s));
        s.push_str(&format!(
            "  sent      {:>12} msgs  {:>10.0} msg/s\n",
            self.sent, self.send_rate
        ));
        if self.confirm.is_some() {
            s.push_str(&format!(
                "  confirmed {:>12} msgs  {:>10.0} msg/s  (nacked {})\n",
                self.confirmed, self.confirm_rate, self.nacked
            ));
        }
        s.push_str(&format!(
            "  received  {:>12} msgs  {:>10.0} msg/s\n",
            self.received, self.receive_rate
        ));
        match (
            self.latency_min_us,
            self.latency_p50_us,
            self.latency_p95_us,
            self.latency_p99_us,
            self.latency_p999_us,
            self.latency_max_us,
        ) {
            (Some(min), Some(p50), Some(p95), Some(p99), Some(p999), Some(max)) => {
                s.push_str(&format!(
                    "  latency (us): min {min:.1}  p50 {p50:.1}  p95 {p95:.1}  p99 {p99:.1}  p99.9 {p999:.1}  max {max:.1}\n"
                ));
            }
            _ => s.push_str("  latency: no messages received\n"),
        }
        if let Some(pid) = self.broker_pid {
            let kb =
                |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| format!("{} MiB", v / 1024));
            s.push_str(&format!(
                "  broker pid {pid}: RSS start {}, end {}, peak sampled {}, VmHWM {}\n",
                kb(self.broker_rss_start_kb),
                kb(self.broker_rss_end_kb),
                kb(self.broker_rss_peak_kb),
                kb(self.broker_hwm_kb)
            ));
            if let Some(per) = self.broker_rss_per_idle_connection_kb {
                s.push_str(&format!(
                    "  {} idle connections: RSS {} -> {} KiB, {:.1} KiB per connection\n",
                    self.idle_connections,
                    self.broker_rss_start_kb.unwrap_or(0),
                    self.broker_rss_idle_kb.unwrap_or(0),
                    per
                ));
            }
        }
        if let Some(t) = self.tool_cpu_s {
            s.push_str(&format!("  warren-perf CPU {t:.2}s"));
            if let Some(b) = self.broker_cpu_s {
                s.push_str(&format!(", broker CPU {b:.2}s"));
                if let Some(per) = self.broker_cpu_us_per_msg {
                    s.push_str(&format!(" ({per:.2} us per message in+out)"));
                }
            }
            s.push('\n');
        }
        if self.errors > 0 {
            s.push_str(&format!("  errors: {}\n", self.errors));
        }
        s
    }
}
