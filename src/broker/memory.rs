//! The memory alarm, RabbitMQ's `vm_memory_high_watermark` for Warren: the octets of ready
//! messages that queues hold in memory, summed over every queue, against a high watermark.
//!
//! While the sum is at or above the watermark the alarm is on, and connections that publish
//! are blocked: their sockets are not read, and clients that announced the
//! `connection.blocked` capability get `connection.blocked` (and `connection.unblocked`
//! once consumers or purges bring the sum back under). Connections that only consume keep
//! running, so the backlog can drain.

use std::sync::atomic::{AtomicUsize, Ordering};

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
}

impl MemoryMonitor {
    /// A monitor whose alarm goes on at `high_watermark` octets, reported in
    /// `alarm_gauge`.
    pub fn new(high_watermark: usize, alarm_gauge: IntGauge) -> Self {
        MemoryMonitor { used: AtomicUsize::new(0), high_watermark, alarm: watch::Sender::new(false), alarm_gauge }
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
            let now = used >= self.high_watermark;
            if now == *on {
                return false;
            }
            if now {
                warn!(used_bytes = used, high_watermark_bytes = self.high_watermark, "memory alarm set: blocking publishers");
            } else {
                info!(used_bytes = used, high_watermark_bytes = self.high_watermark, "memory alarm cleared: unblocking publishers");
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

/// The default watermark: 40% of physical memory, as RabbitMQ's default
/// `vm_memory_high_watermark` of 0.4 (1 GiB when /proc/meminfo cannot be read).
pub fn default_high_watermark() -> usize {
    let total_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        text.lines().find_map(|l| l.strip_prefix("MemTotal:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
    });
    match total_kib {
        Some(kib) => kib.saturating_mul(1024) / 10 * 4,
        None => 1 << 30,
    }
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
