//! The disk alarm, RabbitMQ's `disk_free_limit` for Warren: the free space of the
//! filesystem that holds the data directory, checked every [`CHECK_INTERVAL`], against a
//! limit (50 MB by default, as RabbitMQ). Below it the alarm is on and publishing
//! connections are blocked exactly as under the memory alarm (`connection.blocked` with
//! "low on disk"), so persistent messages stop arriving before the disk fills.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;
use tokio::sync::watch;
use tracing::{info, warn};

/// How often free space is measured (RabbitMQ measures between every 0.1 and 10 s).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Free disk space against a limit, and the alarm it raises.
#[derive(Debug)]
pub struct DiskMonitor {
    dir: PathBuf,
    limit: AtomicU64,
    alarm: watch::Sender<bool>,
    /// Mirrors the alarm for Prometheus.
    alarm_gauge: IntGauge,
    /// The limit, for Prometheus.
    limit_gauge: IntGauge,
}

impl DiskMonitor {
    /// A monitor of the filesystem holding `dir`, alarmed below `limit` free octets.
    pub fn new(dir: PathBuf, limit: u64, alarm_gauge: IntGauge, limit_gauge: IntGauge) -> Self {
        limit_gauge.set(i64::try_from(limit).unwrap_or(i64::MAX));
        DiskMonitor { dir, limit: AtomicU64::new(limit), alarm: watch::Sender::new(false), alarm_gauge, limit_gauge }
    }

    /// Changes the limit (and checks at once).
    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
        self.limit_gauge.set(i64::try_from(limit).unwrap_or(i64::MAX));
        self.check();
    }

    /// Measures free space and sets the alarm from it. A filesystem that cannot be
    /// measured leaves the alarm as it is (and says so).
    pub fn check(&self) {
        if self.limit.load(Ordering::Relaxed) == 0 && !*self.alarm.borrow() {
            // No limit (an ephemeral broker): nothing to measure.
            return;
        }
        let free = match fs2::available_space(&self.dir) {
            Ok(free) => free,
            Err(e) => {
                warn!(dir = %self.dir.display(), error = %e, "cannot measure free disk space");
                return;
            }
        };
        let limit = self.limit.load(Ordering::Relaxed);
        self.alarm.send_if_modified(|on| {
            let now = free < limit;
            if now == *on {
                return false;
            }
            if now {
                warn!(free_bytes = free, limit_bytes = limit, "disk alarm set: free disk space is below the limit; blocking publishers");
            } else {
                info!(free_bytes = free, limit_bytes = limit, "disk alarm cleared: unblocking publishers");
            }
            *on = now;
            self.alarm_gauge.set(i64::from(now));
            true
        });
    }

    /// Follows the alarm: `true` while publishers must be blocked.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.alarm.subscribe()
    }

    /// Whether the alarm is on.
    pub fn alarm(&self) -> bool {
        *self.alarm.borrow()
    }

    /// Free octets on the data directory's filesystem now (0 if it cannot be measured).
    pub fn free(&self) -> u64 {
        fs2::available_space(&self.dir).unwrap_or(0)
    }

    /// Checks now and then every [`CHECK_INTERVAL`] until the monitor is dropped.
    pub fn start(self: &Arc<Self>) {
        self.check();
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECK_INTERVAL);
            loop {
                tick.tick().await;
                let Some(monitor) = me.upgrade() else { return };
                monitor.check();
            }
        });
    }
}
