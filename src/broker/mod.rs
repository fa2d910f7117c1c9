//! The broker's model: virtual hosts with their exchanges, queues and bindings, the
//! messages they hold, and the consumers they deliver to. Connections (in
//! [`crate::connection`]) drive it; it never touches a socket itself, only the outbound
//! frame buffers of the channels it delivers to.

pub mod connections;
pub mod consumer;
pub mod dead_letter;
pub mod disk;
pub mod durability;
pub mod exchange;
pub mod headers;
pub mod memory;
pub mod message;
pub mod policy;
pub mod queue;
pub mod reply_to;
pub mod topic;
pub mod vhost;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::access::{Access, AccessError, Permission, User, VhostInfo};
use crate::config::Config;
use durability::{FlushRequest, Flusher};
use memory::MemoryMonitor;
use warren_storage::{Database, StoreError};
use crate::metrics::Metrics;
use policy::{Policy, PolicyDef};
use vhost::{QueueDefaults, VHost};

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

/// The store's record kind of policies.
const POLICY: &str = "policy";

/// How often delivery marks of unacknowledged stored messages are written.
const MARK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// The state of one broker: vhosts, users, limits, alarms and metrics.
#[derive(Debug)]
pub struct Broker {
    /// The configuration it runs with.
    pub config: Config,
    /// The ports it listens on, as bound (a port of 0 in the configuration is the free one
    /// the server got); set once by the server.
    pub listeners: std::sync::OnceLock<Vec<Listener>>,
    /// Its metrics.
    pub metrics: Metrics,
    /// Message memory and the alarm that blocks publishers.
    pub memory: Arc<MemoryMonitor>,
    /// Free disk space and the alarm that blocks publishers.
    pub disk: Arc<disk::DiskMonitor>,
    /// Users, vhost records and permissions.
    pub access: Access,
    /// The open client connections.
    pub connections: Arc<connections::Connections>,
    /// When it opened.
    pub started: std::time::Instant,
    /// Until then (Unix ms), new connections are refused: a simulated restart.
    refusing_until: AtomicU64,
    vhosts: RwLock<HashMap<String, Arc<VHost>>>,
    next_connection_id: AtomicU64,
    db: Database,
    flusher: Flusher,
    /// Octets of ready persistent messages each durable queue keeps in memory.
    queue_memory_limit: usize,
}

/// Why the broker could not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The access records could not be loaded or the defaults written.
    #[error("{0}")]
    Access(#[from] AccessError),
}

/// A port the broker listens on, as the management API lists it.
#[derive(Debug, Clone, Copy)]
pub struct Listener {
    /// RabbitMQ's name for it: `amqp`, `amqp/ssl`, `http` or `http/prometheus`.
    pub protocol: &'static str,
    /// The address bound.
    pub addr: std::net::SocketAddr,
}

impl Broker {
    /// Opens the store in the data directory (migrating an older format, whose data
    /// belongs to the default vhost), loads users and permissions, and opens every vhost
    /// with what it recovers. On a first boot (nothing recorded yet) the default user,
    /// with the `administrator` tag and full permissions, and the default vhost are created,
    /// as RabbitMQ does, unless `definitions` is set: then the file provides them.
    pub fn open(config: Config, metrics: Metrics) -> Result<Self, OpenError> {
        let cache = config.store_cache_mb.saturating_mul(1 << 20);
        let db = if config.ephemeral {
            Database::open_temporary(cache)?
        } else {
            std::fs::create_dir_all(&config.data_dir).map_err(|e| StoreError::Corrupt(format!("cannot create data directory {}: {e}", config.data_dir.display())))?;
            Database::open_with_cache(&config.data_dir, cache, &config.default_vhost)?
        };
        if db.recovered_from_crash() {
            tracing::warn!(data_dir = %config.data_dir.display(), "the previous run did not shut down cleanly: every recovered message comes back flagged redelivered");
        }
        let access = Access::load(db.clone())?;
        let mib = |n: u64| usize::try_from(n.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        let watermark = if config.memory_high_watermark_mb == 0 { memory::default_high_watermark() } else { mib(config.memory_high_watermark_mb) };
        // Physical memory unknown (not Linux): the resident-memory check stays off.
        let process_limit = memory::physical_memory().map_or(0, |total| (total as f64 * config.vm_memory_high_watermark) as u64);
        metrics.memory_limit.set(i64::try_from(process_limit).unwrap_or(i64::MAX));
        let memory = Arc::new(MemoryMonitor::new(watermark, metrics.memory_alarm.clone()).with_process_limit(process_limit, metrics.resident_memory.clone()));
        // An ephemeral broker writes no data directory: no disk to run out of.
        let disk_limit = if config.ephemeral { 0 } else { config.disk_free_limit_mb.saturating_mul(1_000_000) };
        let disk = Arc::new(disk::DiskMonitor::new(config.data_dir.clone(), disk_limit, metrics.disk_alarm.clone(), metrics.disk_limit.clone()));
        let broker = Broker {
            listeners: std::sync::OnceLock::new(),
            queue_memory_limit: mib(config.queue_memory_mb),
            flusher: Flusher::start(db.clone()),
            config,
            metrics,
            memory,
            disk,
            access,
            connections: Arc::default(),
            started: std::time::Instant::now(),
            refusing_until: AtomicU64::new(0),
            vhosts: RwLock::default(),
            next_connection_id: AtomicU64::new(1),
            db,
        };
        if broker.access.is_empty() && (broker.config.definitions.is_none() || !broker.db.stored_vhosts().is_empty()) {
            broker.create_defaults()?;
        }
        // Vhosts with records, and any whose data outlived its record (a crash mid-delete
        // finishes here).
        for info in broker.access.vhosts() {
            broker.open_vhost(&info)?;
        }
        for name in broker.db.stored_vhosts() {
            if broker.vhost(&name).is_none() {
                tracing::warn!(vhost = %name, "dropping the data of a deleted vhost");
                broker.db.delete_vhost(&name)?;
            }
        }
        Ok(broker)
    }

    /// The default user (tag `administrator`, everything on the default vhost) and vhost.
    fn create_defaults(&self) -> Result<(), AccessError> {
        let (user, vhost) = (&self.config.default_user, &self.config.default_vhost);
        self.access.add_user(user, &self.config.default_pass, &["administrator"])?;
        self.access.put_vhost(VhostInfo { name: vhost.clone(), description: "Default virtual host".to_owned(), ..VhostInfo::default() })?;
        let all = ".*".to_owned();
        self.access.set_permissions(user, vhost, Permission { configure: all.clone(), write: all.clone(), read: all })
    }

    fn open_vhost(&self, info: &VhostInfo) -> Result<Arc<VHost>, AccessError> {
        let store = self.db.vhost(&info.name)?;
        let recovered = store.recover()?;
        let mut policies = Vec::new();
        for (key, raw) in self.db.records(POLICY)? {
            if key.split('\0').next() != Some(info.name.as_str()) {
                continue;
            }
            let def: PolicyDef = serde_json::from_slice(&raw).map_err(|e| StoreError::Corrupt(format!("policy record '{key}': {e}")))?;
            match Policy::new(def) {
                Ok(p) => policies.push(p),
                Err(e) => tracing::warn!(vhost = %info.name, error = %e, "skipping a stored policy that is no longer valid"),
            }
        }
        let vhost = VHost::open(
            &info.name,
            store,
            recovered,
            self.queue_memory_limit,
            QueueDefaults { consumer_timeout: self.config.consumer_timeout, compat: self.config.compat },
            Arc::clone(&self.memory),
            policies,
        );
        vhost.set_limits(info.limits);
        self.vhosts.write().unwrap_or_else(|p| p.into_inner()).insert(info.name.clone(), Arc::clone(&vhost));
        Ok(vhost)
    }

    /// Creates a vhost, or updates the description, tags and limits of one that exists.
    pub fn add_vhost(&self, info: VhostInfo) -> Result<Arc<VHost>, AccessError> {
        if info.name.is_empty() {
            return Err(AccessError::Invalid("a vhost name cannot be empty".to_owned()));
        }
        self.access.put_vhost(info.clone())?;
        if let Some(vhost) = self.vhost(&info.name) {
            vhost.set_limits(info.limits);
            return Ok(vhost);
        }
        self.open_vhost(&info)
    }

    /// Sets a policy (validated as `rabbitmqctl set_policy` validates it; its vhost must
    /// exist). It applies at once to the vhost's exchanges and to queues declared from now.
    pub fn set_policy(&self, def: PolicyDef) -> Result<(), AccessError> {
        let vhost = self.vhost(&def.vhost).ok_or_else(|| AccessError::NoVhost(def.vhost.clone()))?;
        let policy = Policy::new(def)?;
        let raw = serde_json::to_vec(&policy.def).unwrap_or_default();
        self.db.put_record(POLICY, &format!("{}\0{}", policy.def.vhost, policy.def.name), &raw)?;
        vhost.put_policy(policy);
        Ok(())
    }

    /// Removes a policy; one that does not exist is an error, as in RabbitMQ.
    pub fn clear_policy(&self, vhost: &str, name: &str) -> Result<(), AccessError> {
        let v = self.vhost(vhost).ok_or_else(|| AccessError::NoVhost(vhost.to_owned()))?;
        self.db.delete_record(POLICY, &format!("{vhost}\0{name}"))?;
        if !v.remove_policy(name) {
            return Err(AccessError::Invalid(format!("policy '{name}' in vhost '{vhost}' does not exist")));
        }
        Ok(())
    }

    /// Deletes a vhost: its connections are closed (320), its queues' consumers cancelled,
    /// and its entities, messages, policies and permissions removed.
    pub fn delete_vhost(&self, name: &str) -> Result<(), AccessError> {
        let vhost = self.vhosts.write().unwrap_or_else(|p| p.into_inner()).remove(name);
        let Some(vhost) = vhost else { return Err(AccessError::NoVhost(name.to_owned())) };
        vhost.shut();
        for p in vhost.policies() {
            self.db.delete_record(POLICY, &format!("{name}\0{}", p.def.name))?;
        }
        self.access.delete_vhost(name)?;
        self.db.delete_vhost(name)?;
        tracing::info!(vhost = %name, "vhost deleted");
        Ok(())
    }

    /// Empties a vhost for the next test: its queues (with their messages), exchanges but
    /// the predeclared ones, bindings and policies go; the vhost, its permissions, limits
    /// and connections stay. Returns (queues, exchanges, policies) deleted.
    pub fn reset_vhost(&self, name: &str) -> Result<(usize, usize, usize), AccessError> {
        let vhost = self.vhost(name).ok_or_else(|| AccessError::NoVhost(name.to_owned()))?;
        let (queues, exchanges) = vhost.reset();
        let policies = vhost.policies();
        for p in &policies {
            self.clear_policy(name, &p.def.name)?;
        }
        tracing::info!(vhost = %name, queues, exchanges, policies = policies.len(), "vhost reset");
        Ok((queues, exchanges, policies.len()))
    }

    /// Deletes a user: its permissions go, and its open connections are closed (320).
    pub fn delete_user(&self, name: &str) -> Result<(), AccessError> {
        self.access.delete_user(name)?.close_connections();
        tracing::info!(user = %name, "user deleted");
        Ok(())
    }

    /// The names of the vhosts.
    pub fn vhost_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.vhosts.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        names.sort();
        names
    }

    /// Queues replies to be sent once everything stored so far is on disk (group commit:
    /// one flush serves every request waiting when it starts).
    pub fn after_flush(&self, request: FlushRequest) {
        self.flusher.submit(request);
    }

    /// Writes pending delivery marks and flushes the store (at shutdown). `clean` when
    /// every connection has closed: the store then notes that its marks are complete, and
    /// the next start trusts them instead of flagging every message redelivered.
    pub fn close_store(&self, clean: bool) -> Result<(), StoreError> {
        self.write_marks();
        if clean {
            self.db.close_cleanly()
        } else {
            self.db.flush_blocking()
        }
    }

    /// Writes the delivery marks of deliveries still unacknowledged (see
    /// [`queue::Queue::write_marks`]).
    pub fn write_marks(&self) {
        let vhosts: Vec<Arc<VHost>> = self.vhosts.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        for vhost in vhosts {
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

    /// Simulates a restart for testing clients: every connection is closed with 320, as
    /// a RabbitMQ shutdown closes them, and new ones are refused for `down`.
    pub fn simulate_restart(&self, down: std::time::Duration) -> usize {
        let until = message::now_ms().saturating_add(u64::try_from(down.as_millis()).unwrap_or(u64::MAX));
        self.refusing_until.store(until, Ordering::Relaxed);
        let open = self.connections.list();
        for c in &open {
            c.send(connections::Command::Close {
                code: warren_protocol::ReplyCode::ConnectionForced,
                text: "broker forced connection closure with reason 'shutdown'".to_owned(),
            });
        }
        tracing::warn!(connections = open.len(), down_ms = down.as_millis() as u64, "simulated restart: connections closed, new ones refused for a while");
        open.len()
    }

    /// Whether new connections are refused now (a simulated restart).
    pub fn refusing_connections(&self) -> bool {
        let until = self.refusing_until.load(Ordering::Relaxed);
        until != 0 && message::now_ms() < until
    }

    /// The vhost called `name`.
    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// A fresh connection id (used for exclusive queue ownership).
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Checks a username and password; the guest user only from loopback, as RabbitMQ.
    /// Refusals say why for the log (never the password).
    pub fn authenticate(&self, username: &str, password: &str, loopback: bool) -> Result<Arc<User>, &'static str> {
        if password.is_empty() {
            return Err("attempted to log in with a blank password, which is prohibited");
        }
        let user = self.access.authenticate(username, password).ok_or("invalid credentials")?;
        self.check_loopback(username, loopback)?;
        Ok(user)
    }

    /// Checks a login whose identity was established outside AMQP (SASL EXTERNAL with a
    /// verified TLS client certificate): the user must exist, no password is checked, and
    /// the loopback rule applies as for a password login.
    pub fn authenticate_external(&self, username: &str, loopback: bool) -> Result<Arc<User>, &'static str> {
        let user = self.access.user(username).ok_or("invalid credentials")?;
        self.check_loopback(username, loopback)?;
        Ok(user)
    }

    /// RabbitMQ's `loopback_users`: `guest` only from a loopback address unless allowed.
    fn check_loopback(&self, username: &str, loopback: bool) -> Result<(), &'static str> {
        if username == "guest" && !loopback && !self.config.allow_remote_guest {
            return Err("user 'guest' can only connect via localhost");
        }
        Ok(())
    }
}
