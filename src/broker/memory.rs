//! The memory alarm, RabbitMQ's `vm_memory_high_watermark` for Warren: the octets of
//! messages the broker holds for clients (ready, unacknowledged, in transactions, being
//! assembled, waiting to be written), summed over everything, against a high watermark;
//! and the process's resident memory, read once a second, against a process limit (a
//! fraction of physical memory, as RabbitMQ's relative watermark), which catches what the
//! count cannot (allocator overhead, fragmentation). Either one over sets the alarm.
//!
//! While the sum is at or above the watermark the alarm is on, and connections that publish
//! are blocked: their sockets are not read, and clients that announced the
//! `connection.blocked` capability get `connection.blocked` (and `connection.unblocked`
//! once consumers or purges bring the sum back under). Connections that only consume keep
//! running, so the backlog can drain.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;
use tokio::sync::watch;
use tracing::{info, warn};

/// Message memory accounting and the alarm it raises.
#[derive(Debug)]
pub struct MemoryMonitor {
    used: AtomicUsize,
    high_watermark: usize,
    alarm: watch::Sender<bool>,
    /// Mirrors the alarm for Prometheus.
    alarm_gauge: IntGauge,
    /// Resident memory at which the alarm goes on (0: not checked).
    process_limit: u64,
    /// The resident memory last read.
    rss: AtomicU64,
    /// The last reading was at or over `process_limit`.
    process_over: AtomicBool,
    /// Mirrors `rss` for Prometheus.
    rss_gauge: Option<IntGauge>,
    /// Raised on demand (an injected fault), whatever the counts.
    forced: AtomicBool,
}

/// How often resident memory is read.
const RSS_INTERVAL: Duration = Duration::from_secs(1);

impl MemoryMonitor {
    /// A monitor whose alarm goes on at `high_watermark` octets, reported in
    /// `alarm_gauge`.
    pub fn new(high_watermark: usize, alarm_gauge: IntGauge) -> Self {
        MemoryMonitor {
            used: AtomicUsize::new(0),
            high_watermark,
            alarm: watch::Sender::new(false),
            alarm_gauge,
            process_limit: 0,
            rss: AtomicU64::new(0),
            process_over: AtomicBool::new(false),
            rss_gauge: None,
            forced: AtomicBool::new(false),
        }
    }

    /// Raises (or clears) the alarm on demand, as if memory ran out: for testing how
    /// clients take connection.blocked.
    pub fn force(&self, on: bool) {
        self.forced.store(on, Ordering::Relaxed);
        self.update();
    }

    /// Whether the alarm is raised on demand.
    pub fn is_forced(&self) -> bool {
        self.forced.load(Ordering::Relaxed)
    }

    /// Also alarms when the process's resident memory reaches `limit` octets (0: never),
    /// reported in `rss_gauge`; [`Self::start`] reads it.
    pub fn with_process_limit(mut self, limit: u64, rss_gauge: IntGauge) -> Self {
        self.process_limit = limit;
        self.rss_gauge = Some(rss_gauge);
        self
    }

    /// The resident-memory limit (0: none).
    pub fn process_limit(&self) -> u64 {
        self.process_limit
    }

    /// Resident memory at the last reading.
    pub fn rss(&self) -> u64 {
        self.rss.load(Ordering::Relaxed)
    }

    /// Reads resident memory and sets the alarm from it and the count.
    pub fn check_process(&self) {
        let Some(rss) = resident_memory() else { return };
        self.rss.store(rss, Ordering::Relaxed);
        if let Some(g) = &self.rss_gauge {
            g.set(i64::try_from(rss).unwrap_or(i64::MAX));
        }
        let over = self.process_limit != 0 && rss >= self.process_limit;
        if self.process_over.swap(over, Ordering::Relaxed) != over {
            self.update();
        }
    }

    /// Reads resident memory now and then every second until the monitor is dropped.
    pub fn start(self: &Arc<Self>) {
        self.check_process();
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RSS_INTERVAL);
            loop {
                tick.tick().await;
                let Some(monitor) = me.upgrade() else { return };
                monitor.check_process();
            }
        });
    }

    /// Counts `n` more octets held.
    pub fn add(&self, n: usize) {
        let before = self.used.fetch_add(n, Ordering::Relaxed);
        if before < self.high_watermark && before + n >= self.high_watermark {
            self.update();
        }
    }

    /// Counts `n` octets released.
    pub fn sub(&self, n: usize) {
        let before = self.used.fetch_sub(n, Ordering::Relaxed);
        if before >= self.high_watermark && before - n < self.high_watermark {
            self.update();
        }
    }

    /// Sets the alarm from the current count. Reading the count inside the watch's lock
    /// makes the last update win with the latest count, whatever order crossings race in.
    fn update(&self) {
        self.alarm.send_if_modified(|on| {
            let used = self.used.load(Ordering::Relaxed);
            let process_over = self.process_over.load(Ordering::Relaxed);
            let now = used >= self.high_watermark || process_over || self.forced.load(Ordering::Relaxed);
            if now == *on {
                return false;
            }
            let rss = self.rss.load(Ordering::Relaxed);
            if now {
                warn!(used_bytes = used, high_watermark_bytes = self.high_watermark, rss_bytes = rss, process_limit_bytes = self.process_limit, "memory alarm set: blocking publishers");
            } else {
                info!(used_bytes = used, high_watermark_bytes = self.high_watermark, rss_bytes = rss, process_limit_bytes = self.process_limit, "memory alarm cleared: unblocking publishers");
            }
            *on = now;
            self.alarm_gauge.set(i64::from(now));
            true
        });
    }

    /// Octets of messages held in memory now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Follows the alarm: `true` while publishers must be blocked.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.alarm.subscribe()
    }

    /// The watermark, in octets.
    pub fn watermark(&self) -> usize {
        self.high_watermark
    }

    /// Whether the alarm is on.
    pub fn alarm(&self) -> bool {
        *self.alarm.borrow()
    }
}

/// The default watermark of held messages: 40% of physical memory (1 GiB when
/// /proc/meminfo cannot be read).
pub fn default_high_watermark() -> usize {
    match physical_memory() {
        Some(total) => usize::try_from(total / 10 * 4).unwrap_or(usize::MAX),
        None => 1 << 30,
    }
}

/// Physical memory in octets, from /proc/meminfo.
pub fn physical_memory() -> Option<u64> {
    kib_field(&std::fs::read_to_string("/proc/meminfo").ok()?, "MemTotal:")
}

/// The process's resident memory in octets, from /proc/self/status (None elsewhere).
fn resident_memory() -> Option<u64> {
    kib_field(&std::fs::read_to_string("/proc/self/status").ok()?, "VmRSS:")
}

/// A `Name:  123 kB` line of a /proc file, in octets.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let kib: u64 = text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    Some(kib.saturating_mul(1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alarm_follows_the_count_across_the_watermark() {
        let gauge = IntGauge::new("alarm", "alarm").expect("gauge");
        let m = MemoryMonitor::new(100, gauge.clone());
        let rx = m.subscribe();
        m.add(60);
        assert!(!*rx.borrow());
        m.add(40);
        assert!(*rx.borrow(), "at the watermark");
        assert_eq!(gauge.get(), 1);
        m.add(50);
        m.sub(50);
        assert!(*rx.borrow(), "still at the watermark");
        m.sub(1);
        assert!(!*rx.borrow(), "under again");
        assert_eq!(m.used(), 99);
    }

    #[test]
    fn resident_memory_over_the_process_limit_sets_the_alarm() {
        let gauge = IntGauge::new("alarm", "alarm").expect("gauge");
        let rss = IntGauge::new("rss", "rss").expect("gauge");
        let m = MemoryMonitor::new(usize::MAX, gauge.clone()).with_process_limit(1, rss.clone());
        let rx = m.subscribe();
        m.check_process();
        assert!(m.rss() > 0, "resident memory is read");
        assert_eq!(u64::try_from(rss.get()).ok(), Some(m.rss()));
        assert!(*rx.borrow(), "a 1-octet process limit is always reached");
        let roomy = MemoryMonitor::new(usize::MAX, gauge).with_process_limit(u64::MAX, rss);
        roomy.check_process();
        assert!(!*roomy.subscribe().borrow());
    }
}

/// Octets a client makes the broker hold outside the queues (bodies being assembled,
/// uncommitted transactions), counted toward the alarm while this lives.
#[derive(Debug)]
pub struct Held {
    memory: std::sync::Arc<MemoryMonitor>,
    octets: usize,
}

impl Held {
    /// Nothing held yet, counted in `memory`.
    pub fn new(memory: std::sync::Arc<MemoryMonitor>) -> Self {
        Held { memory, octets: 0 }
    }

    /// Counts `n` more octets.
    pub fn add(&mut self, n: usize) {
        self.octets += n;
        self.memory.add(n);
    }

    /// Octets held.
    pub fn octets(&self) -> usize {
        self.octets
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.memory.sub(self.octets);
    }
}
