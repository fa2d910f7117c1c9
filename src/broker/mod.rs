//! The broker's model: virtual hosts with their exchanges, queues and bindings, the
//! messages they hold, and the consumers they deliver to. Connections (in
//! [`crate::connection`]) drive it; it never touches a socket itself, only the outbound
//! frame buffers of the channels it delivers to.

pub mod consumer;
pub mod dead_letter;
pub mod durability;
pub mod exchange;
pub mod headers;
pub mod memory;
pub mod message;
pub mod queue;
pub mod reply_to;
pub mod topic;
pub mod vhost;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::Config;
use durability::{FlushRequest, Flusher};
use memory::MemoryMonitor;
use warren_storage::{Store, StoreError};
use crate::metrics::Metrics;
use vhost::VHost;

/// A server-generated name: `prefix` and 22 URL-safe base64 characters of randomness, like
/// RabbitMQ's `amq.gen-…` queue names and `amq.ctag-…` consumer tags.
pub fn unique_name(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let state = std::collections::hash_map::RandomState::new();
    let mut bits: u128 = 0;
    for salt in 0..2u64 {
        let mut h = state.build_hasher();
        h.write_u64(n);
        h.write_u64(salt);
        bits = (bits << 64) | u128::from(h.finish());
    }
    let mut name = String::with_capacity(prefix.len() + 22);
    name.push_str(prefix);
    for i in 0..22 {
        name.push(ALPHABET[((bits >> (i * 6)) & 63) as usize] as char);
    }
    name
}

/// How often delivery marks of unacknowledged stored messages are written.
const MARK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// The state of one broker: vhosts, users, limits and metrics.
#[derive(Debug)]
pub struct Broker {
    /// The configuration it runs with.
    pub config: Config,
    /// Its metrics.
    pub metrics: Metrics,
    /// Message memory and the alarm that blocks publishers.
    pub memory: Arc<MemoryMonitor>,
    vhosts: HashMap<String, Arc<VHost>>,
    next_connection_id: AtomicU64,
    store: Store,
    flusher: Flusher,
}

impl Broker {
    /// Opens the store in the data directory and builds the default vhost `/` from what
    /// it recovers.
    pub fn open(config: Config, metrics: Metrics) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| StoreError::Corrupt(format!("cannot create data directory {}: {e}", config.data_dir.display())))?;
        let store = Store::open_with_cache(&config.data_dir, config.store_cache_mb.saturating_mul(1 << 20))?;
        let recovered = store.recover()?;
        let mib = |n: u64| usize::try_from(n.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        let queue_memory_limit = mib(config.queue_memory_mb);
        let watermark = if config.memory_high_watermark_mb == 0 { memory::default_high_watermark() } else { mib(config.memory_high_watermark_mb) };
        metrics.memory_limit.set(i64::try_from(watermark).unwrap_or(i64::MAX));
        let memory = Arc::new(MemoryMonitor::new(watermark, metrics.memory_alarm.clone()));
        let mut vhosts = HashMap::new();
        let name = config.default_vhost.clone();
        vhosts.insert(name.clone(), VHost::open(&name, store.clone(), recovered, queue_memory_limit, config.consumer_timeout, Arc::clone(&memory)));
        Ok(Broker { config, metrics, memory, vhosts, next_connection_id: AtomicU64::new(1), flusher: Flusher::start(store.clone()), store })
    }

    /// Queues replies to be sent once everything stored so far is on disk (group commit:
    /// one flush serves every request waiting when it starts).
    pub fn after_flush(&self, request: FlushRequest) {
        self.flusher.submit(request);
    }

    /// Writes pending delivery marks and flushes the store (at shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.write_marks();
        self.store.flush_blocking()
    }

    /// Writes the delivery marks of deliveries still unacknowledged (see
    /// [`queue::Queue::write_marks`]).
    pub fn write_marks(&self) {
        for vhost in self.vhosts.values() {
            vhost.write_marks();
        }
    }

    /// Writes delivery marks every [`MARK_INTERVAL`] until the broker is dropped: a crash
    /// loses at most that much of the redelivered flags (never a message).
    pub fn start_mark_writer(self: &Arc<Self>) {
        let broker = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(MARK_INTERVAL);
            loop {
                tick.tick().await;
                let Some(b) = broker.upgrade() else { return };
                // sled work belongs on a blocking thread, not an async worker: with two
                // cores, one blocked worker is half the broker.
                if tokio::task::spawn_blocking(move || b.write_marks()).await.is_err() {
                    return;
                }
            }
        });
    }

    /// The vhost called `name`.
    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.get(name).cloned()
    }

    /// A fresh connection id (used for exclusive queue ownership).
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Checks a username and password; the guest user only from loopback, as RabbitMQ.
    pub fn authenticate(&self, username: &str, password: &str, loopback: bool) -> Result<(), &'static str> {
        if !self.user_exists(username) || password != self.config.default_pass {
            return Err("invalid credentials");
        }
        self.check_loopback(username, loopback)
    }

    /// Checks a login whose identity was established outside AMQP (SASL EXTERNAL with a
    /// verified TLS client certificate): the user must exist, no password is checked, and
    /// the loopback rule applies as for a password login.
    pub fn authenticate_external(&self, username: &str, loopback: bool) -> Result<(), &'static str> {
        if !self.user_exists(username) {
            return Err("invalid credentials");
        }
        self.check_loopback(username, loopback)
    }

    /// Whether `username` is a known user (today only the configured default user).
    pub fn user_exists(&self, username: &str) -> bool {
        username == self.config.default_user
    }

    /// RabbitMQ's `loopback_users`: `guest` only from a loopback address unless allowed.
    fn check_loopback(&self, username: &str, loopback: bool) -> Result<(), &'static str> {
        if username == "guest" && !loopback && !self.config.allow_remote_guest {
            return Err("user 'guest' can only connect via localhost");
        }
        Ok(())
    }
}
