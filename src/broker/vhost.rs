//! A virtual host: its exchanges and queues, the topology operations on them (declare,
//! delete, bind, unbind with RabbitMQ's rules and reply codes) and routing.
//!
//! Topology changes are serialised by one lock per vhost, as RabbitMQ serialises them per
//! entity; routing only takes read locks, so publishers never wait on each other. Dead
//! letters that queues give up are routed here too ([`VHost::dead_letter`]), iteratively.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};

use amq_protocol::frame::WriteContext;
use amq_protocol::types::generation::gen_field_table;
use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::{AMQPValue, FieldTable};
use tracing::warn;
use warren_protocol::{AmqpError, ReplyCode};
use warren_storage::{BindingRecord, ExchangeRecord, QueueRecord, Recovered, Store, StoreError};

use crate::access::{limit, VhostLimits};
use crate::broker::consumer::Consumer;
use crate::broker::dead_letter::{self, DeadLetter};
use crate::broker::exchange::{Destination, Exchange, ExchangeKind};
use crate::broker::memory::MemoryMonitor;
use crate::broker::policy::{self, Policy};
use crate::broker::queue::args::{as_int, as_text, type_name, DeclareFlags, QueueArgs, QueueType, DEFAULT_DELIVERY_LIMIT};
use crate::broker::message::Message;
use crate::broker::queue::{Enqueued, Queue, QueueSetup};
use crate::broker::reply_to::ReplyRegistry;
use crate::config::Compat;

/// What `exchange.declare` asks for.
#[derive(Debug, Clone)]
pub struct ExchangeSpec {
    /// The name.
    pub name: String,
    /// The type as sent.
    pub kind: String,
    /// Durable flag.
    pub durable: bool,
    /// Auto-delete flag.
    pub auto_delete: bool,
    /// Internal flag.
    pub internal: bool,
    /// Arguments.
    pub arguments: FieldTable,
}

/// What `queue.declare` asks for.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    /// The name (already generated when the client sent "").
    pub name: String,
    /// The server generated the name (so its `amq.gen-` prefix is allowed).
    pub server_named: bool,
    /// Durable flag.
    pub durable: bool,
    /// The declaring connection when exclusive.
    pub exclusive_owner: Option<u64>,
    /// Auto-delete flag.
    pub auto_delete: bool,
    /// Arguments.
    pub arguments: FieldTable,
}

/// The consumers of a deleted queue. Dropping this sends each of them basic.cancel (RabbitMQ's
/// consumer cancel notification), so the vhost hands it out instead of cancelling under its
/// topology lock, and `queue.delete` can answer delete-ok first, as RabbitMQ does.
#[derive(Debug, Default)]
#[must_use = "dropping it cancels the consumers at once"]
pub struct OrphanedConsumers(Vec<Arc<Consumer>>);

impl Drop for OrphanedConsumers {
    fn drop(&mut self) {
        for consumer in self.0.drain(..) {
            cancel_consumer(&consumer);
        }
    }
}

/// What deleting a queue removed.
#[derive(Debug, Default)]
pub struct DeletedQueue {
    /// Its ready messages (delete-ok's message count).
    pub message_count: u32,
    /// Its consumers, cancelled when this is dropped.
    pub consumers: OrphanedConsumers,
}

/// A virtual host.
#[derive(Debug)]
pub struct VHost {
    /// Its name.
    pub name: String,
    /// This vhost, handed to its queues (they dead-letter into it).
    me: Weak<VHost>,
    exchanges: RwLock<HashMap<String, Arc<Exchange>>>,
    queues: RwLock<HashMap<String, Arc<Queue>>>,
    /// Bumped after every change to `exchanges` or `queues`: a channel's [`NameCache`]
    /// filled at another generation is stale.
    generation: AtomicU64,
    /// Serialises topology changes.
    topology: Mutex<()>,
    /// Durable topology and persistent messages.
    store: Store,
    /// Octets of ready persistent messages each durable queue keeps in memory.
    queue_memory_limit: usize,
    /// The broker's message memory, which every queue reports to.
    memory: Arc<MemoryMonitor>,
    /// Direct reply-to consumers of this vhost's channels.
    pub reply_to: ReplyRegistry,
    /// What the broker's configuration gives its queues.
    defaults: QueueDefaults,
    /// Connections open to this vhost (its max-connections limit counts them).
    pub connections: AtomicU64,
    /// The vhost's limits.
    limits: Mutex<VhostLimits>,
    /// Set when the vhost is deleted; its connections close.
    deleted: tokio::sync::watch::Sender<bool>,
    /// Its policies, by name.
    policies: RwLock<Vec<Arc<Policy>>>,
}

/// What one channel published to last: an exchange by name and, through the default
/// exchange, a queue by routing key. Valid while the vhost's maps are at the generation it
/// was filled at, so a stream of publishes to one place skips the locked map lookups.
#[derive(Debug, Default)]
pub struct NameCache {
    generation: u64,
    exchange: Option<Arc<Exchange>>,
    queue: Option<Arc<Queue>>,
}

/// What the broker's configuration gives every queue of a vhost.
#[derive(Debug, Clone, Copy)]
pub struct QueueDefaults {
    /// The consumer timeout in milliseconds, for queues without their own.
    pub consumer_timeout: u64,
    /// The compatibility profile: which declarations are refused, and whether quorum
    /// queues have a default delivery limit.
    pub compat: Compat,
}

fn store_failed(e: StoreError) -> AmqpError {
    AmqpError::connection(ReplyCode::InternalError, format!("store failed: {e}"))
}

/// AMQP-encodes a field table for the store.
fn encode_table(t: &FieldTable) -> Vec<u8> {
    gen_field_table(t)(WriteContext::from(Vec::new())).map(|c| c.write).unwrap_or_default()
}

/// Decodes a stored field table; a damaged one is reported by the caller.
fn decode_table(raw: &[u8]) -> Option<FieldTable> {
    if raw.is_empty() {
        return Some(FieldTable::default());
    }
    warren_protocol::table::skip_table(raw).ok()?;
    parse_field_table(raw).ok().map(|(_, t)| t)
}

fn binding_record(source: &Exchange, destination: &Destination, routing_key: &str, arguments: &FieldTable) -> Option<BindingRecord> {
    let (name, durable, is_exchange) = match destination {
        Destination::Queue(q) => (q.name.clone(), q.durable(), false),
        Destination::Exchange(x) => (x.name.clone(), x.durable, true),
    };
    (source.durable && durable).then(|| BindingRecord {
        source: source.name.clone(),
        destination: name,
        destination_is_exchange: is_exchange,
        routing_key: routing_key.to_owned(),
        arguments: encode_table(arguments),
    })
}

fn reserved(name: &str) -> bool {
    name.starts_with("amq.")
}

fn flag(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

impl VHost {
    /// A vhost with the default exchange and the predeclared `amq.*` exchanges, and the
    /// durable entities and messages recovered from `store`.
    /// Each durable queue keeps up to `queue_memory_limit` octets of ready messages in
    /// memory and pages the rest out to the store. `policies` apply from the start.
    pub fn open(name: &str, store: Store, recovered: Recovered, queue_memory_limit: usize, defaults: QueueDefaults, memory: Arc<MemoryMonitor>, policies: Vec<Policy>) -> Arc<Self> {
        let vhost = Arc::new_cyclic(|me| Self::new(name, me.clone(), store, queue_memory_limit, defaults, memory));
        {
            let mut list = vhost.policies.write().unwrap_or_else(|p| p.into_inner());
            list.extend(policies.into_iter().map(Arc::new));
            list.sort_by(|a, b| a.def.name.cmp(&b.def.name));
        }
        vhost.restore(recovered);
        vhost.apply_policies();
        vhost
    }

    fn restore(&self, mut recovered: Recovered) {
        let mut exchanges = self.exchanges.write().unwrap_or_else(|p| p.into_inner());
        for x in recovered.exchanges {
            let (Some(kind), Some(arguments)) = (ExchangeKind::parse(&x.kind), decode_table(&x.arguments)) else {
                warn!(exchange = %x.name, "skipping a damaged exchange record");
                continue;
            };
            exchanges.insert(x.name.clone(), Arc::new(Exchange::new(x.name, kind, true, x.auto_delete, x.internal, arguments)));
        }
        drop(exchanges);
        let mut queues = self.queues.write().unwrap_or_else(|p| p.into_inner());
        for (q, messages) in recovered.queues {
            let Some(arguments) = decode_table(&q.arguments) else {
                warn!(queue = %q.name, "skipping a damaged queue record");
                continue;
            };
            let flags = DeclareFlags { durable: true, exclusive: false, auto_delete: q.auto_delete, server_named: false };
            let args = match QueueArgs::parse(&arguments, &q.name, &self.name, flags) {
                Ok(args) => self.with_policy(&q.name, args, &arguments),
                Err(e) => {
                    warn!(queue = %q.name, error = %e, "skipping a queue whose stored arguments are invalid");
                    continue;
                }
            };
            let store = match self.store.queue_store(&q.name) {
                Ok(store) => store,
                Err(e) => {
                    warn!(queue = %q.name, error = %e, "skipping a queue whose messages cannot be opened");
                    continue;
                }
            };
            let queue = Queue::create(QueueSetup {
                name: q.name.clone(),
                vhost: self.me.clone(),
                vhost_name: self.name.clone(),
                exclusive_owner: None,
                auto_delete: q.auto_delete,
                arguments,
                args,
                store: Some((store, self.queue_memory_limit)),
                memory: Arc::clone(&self.memory),
                consumer_timeout: self.defaults.consumer_timeout,
            });
            queue.restore(messages, recovered.last_used.remove(&q.name));
            queues.insert(q.name, queue);
        }
        drop(queues);
        for b in recovered.bindings {
            let source = self.exchange(&b.source);
            let destination = if b.destination_is_exchange {
                self.exchange(&b.destination).map(Destination::Exchange)
            } else {
                self.queue(&b.destination).map(Destination::Queue)
            };
            match (source, destination, decode_table(&b.arguments)) {
                (Some(s), Some(d), Some(args)) => {
                    if let Err(e) = s.bind(d, &b.routing_key, &args) {
                        warn!(source = %b.source, destination = %b.destination, error = %e, "skipping an invalid binding record");
                    }
                }
                _ => warn!(source = %b.source, destination = %b.destination, "skipping a binding whose ends are gone"),
            }
        }
    }

    fn new(name: &str, me: Weak<VHost>, store: Store, queue_memory_limit: usize, defaults: QueueDefaults, memory: Arc<MemoryMonitor>) -> Self {
        let mut exchanges = HashMap::new();
        for (xname, kind) in [
            ("", ExchangeKind::Direct),
            ("amq.direct", ExchangeKind::Direct),
            ("amq.fanout", ExchangeKind::Fanout),
            ("amq.topic", ExchangeKind::Topic),
            ("amq.headers", ExchangeKind::Headers),
            ("amq.match", ExchangeKind::Headers),
        ] {
            exchanges.insert(xname.to_owned(), Arc::new(Exchange::new(xname.to_owned(), kind, true, false, false, FieldTable::default())));
        }
        VHost {
            name: name.to_owned(),
            me,
            exchanges: RwLock::new(exchanges),
            queues: RwLock::new(HashMap::new()),
            topology: Mutex::new(()),
            store,
            queue_memory_limit,
            memory,
            reply_to: ReplyRegistry::default(),
            defaults,
            connections: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            limits: Mutex::default(),
            deleted: tokio::sync::watch::Sender::new(false),
            policies: RwLock::default(),
        }
    }

    /// The policies, in name order.
    pub fn policies(&self) -> Vec<Arc<Policy>> {
        self.policies.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Adds or replaces a policy and applies the policies anew to every exchange and queue.
    pub fn put_policy(&self, p: Policy) {
        {
            let mut list = self.policies.write().unwrap_or_else(|p| p.into_inner());
            list.retain(|q| q.def.name != p.def.name);
            list.push(Arc::new(p));
            list.sort_by(|a, b| a.def.name.cmp(&b.def.name));
        }
        self.apply_policies();
    }

    /// Removes a policy (false when there is none of that name).
    pub fn remove_policy(&self, name: &str) -> bool {
        let removed = {
            let mut list = self.policies.write().unwrap_or_else(|p| p.into_inner());
            let before = list.len();
            list.retain(|q| q.def.name != name);
            list.len() != before
        };
        self.apply_policies();
        removed
    }

    /// Gives every exchange the alternate exchange of the policy that now applies to it,
    /// and every queue its arguments combined with its policy (or none).
    fn apply_policies(&self) {
        let policies = self.policies();
        let exchanges: Vec<Arc<Exchange>> = self.exchanges.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        for x in exchanges {
            x.set_policy_alternate(policy::choose(&policies, |p| p.matches_exchange(&x.name)).and_then(|p| p.settings.alternate_exchange.clone()));
        }
        let queues: Vec<Arc<Queue>> = self.queues.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        for q in queues {
            let flags = DeclareFlags { durable: q.durable(), exclusive: q.exclusive_owner.is_some(), auto_delete: q.auto_delete, server_named: q.name.starts_with("amq.gen-") };
            match QueueArgs::parse(&q.arguments, &q.name, &self.name, flags) {
                Ok(declared) => q.set_args(self.with_policy(&q.name, declared, &q.arguments)),
                Err(e) => warn!(queue = %q.name, error = %e, "cannot apply policies to a queue whose arguments no longer parse"),
            }
        }
    }

    /// A queue's effective arguments: the policy that applies, combined with `args`; under
    /// the RabbitMQ 4 profile a quorum queue that neither sets a delivery limit gets
    /// RabbitMQ 4.0's default (not an argument: redeclare equivalence does not see it).
    fn with_policy(&self, name: &str, args: QueueArgs, arguments: &FieldTable) -> QueueArgs {
        let policies = self.policies.read().unwrap_or_else(|p| p.into_inner());
        let mut out = match policy::choose(&policies, |p| p.matches_queue(name, args.kind)) {
            Some(p) => p.settings.apply(&args, arguments),
            None => args,
        };
        if self.defaults.compat == Compat::RabbitMq4 && out.kind == QueueType::Quorum && out.delivery_limit.is_none() {
            out.delivery_limit = Some(DEFAULT_DELIVERY_LIMIT);
        }
        out
    }

    /// Sets the vhost's limits (existing connections and queues stay, as in RabbitMQ).
    pub fn set_limits(&self, limits: VhostLimits) {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner()) = limits;
    }

    /// The vhost's limits.
    pub fn limits(&self) -> VhostLimits {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves when the vhost is deleted.
    pub fn deleted(&self) -> tokio::sync::watch::Receiver<bool> {
        self.deleted.subscribe()
    }

    /// Takes a connection slot: false when the vhost's max-connections is reached.
    pub fn take_connection(&self) -> bool {
        crate::access::take_slot(&self.connections, limit(self.limits().max_connections))
    }

    /// Gives a connection slot back.
    pub fn release_connection(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
    }

    /// Deletes everything the vhost holds, cancelling its consumers, and tells its
    /// connections to close (the broker deletes the vhost).
    pub fn shut(&self) {
        let queues: Vec<Arc<Queue>> = self.queues.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        for q in &queues {
            self.delete_queue_now(q);
        }
        self.exchanges.write().unwrap_or_else(|p| p.into_inner()).clear();
        self.names_changed();
        self.deleted.send_replace(true);
    }

    /// Adds this vhost's durable exchanges and queues, and the bindings between durable
    /// ends, to `defs` (what RabbitMQ exports: not the default, `amq.*` or internal
    /// exchanges, not exclusive queues).
    pub fn export(&self, defs: &mut crate::definitions::Definitions) {
        use crate::definitions::{json_table, BindingDef, ExchangeDef, QueueDef};
        for x in &self.exchanges() {
            if x.durable && !x.name.is_empty() && !reserved(&x.name) && !x.internal {
                defs.exchanges.push(ExchangeDef {
                    name: x.name.clone(),
                    vhost: self.name.clone(),
                    kind: x.kind.as_str().to_owned(),
                    durable: true,
                    auto_delete: x.auto_delete,
                    internal: false,
                    arguments: json_table(&x.arguments),
                });
            }
            if !x.durable || x.name.is_empty() {
                continue;
            }
            for b in x.bindings() {
                let (destination, destination_type, durable) = match &b.destination {
                    Destination::Queue(q) => (q.name.clone(), "queue", q.durable()),
                    Destination::Exchange(d) => (d.name.clone(), "exchange", d.durable),
                };
                if durable {
                    defs.bindings.push(BindingDef {
                        source: x.name.clone(),
                        vhost: self.name.clone(),
                        destination,
                        destination_type: destination_type.to_owned(),
                        routing_key: b.routing_key.clone(),
                        arguments: json_table(&b.arguments),
                    });
                }
            }
        }
        for q in self.queues().iter().filter(|q| q.durable()) {
            defs.queues.push(QueueDef {
                name: q.name.clone(),
                vhost: self.name.clone(),
                durable: true,
                auto_delete: q.auto_delete,
                kind: Some(q.args().kind.as_str().to_owned()),
                arguments: json_table(&q.arguments),
            });
        }
    }

    /// Its exchanges, by name.
    pub fn exchanges(&self) -> Vec<Arc<Exchange>> {
        let mut all: Vec<Arc<Exchange>> = self.exchanges.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Its queues, by name.
    pub fn queues(&self) -> Vec<Arc<Queue>> {
        let mut all: Vec<Arc<Queue>> = self.queues.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    fn serialise(&self) -> MutexGuard<'_, ()> {
        self.topology.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The exchange called `name`.
    pub fn exchange(&self, name: &str) -> Option<Arc<Exchange>> {
        self.exchanges.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// The queue called `name`.
    pub fn queue(&self, name: &str) -> Option<Arc<Queue>> {
        self.queues.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// The exchange called `name`, or 404.
    pub fn exchange_or_404(&self, name: &str) -> Result<Arc<Exchange>, AmqpError> {
        self.exchange(name).ok_or_else(|| AmqpError::not_found(format!("no exchange '{name}' in vhost '{}'", self.name)))
    }

    /// Notes a change to the exchange or queue maps (after making it).
    fn names_changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Empties `cache` if the maps changed since it was filled.
    fn refresh(&self, cache: &mut NameCache) {
        let generation = self.generation.load(Ordering::Acquire);
        if cache.generation != generation {
            *cache = NameCache { generation, ..NameCache::default() };
        }
    }

    /// [`Self::exchange_or_404`] through a channel's cache.
    pub fn exchange_cached(&self, cache: &mut NameCache, name: &str) -> Result<Arc<Exchange>, AmqpError> {
        self.refresh(cache);
        if let Some(x) = cache.exchange.as_ref().filter(|x| x.name == name) {
            return Ok(Arc::clone(x));
        }
        let x = self.exchange_or_404(name)?;
        cache.exchange = Some(Arc::clone(&x));
        Ok(x)
    }

    /// [`Self::queue`] through a channel's cache.
    fn queue_cached(&self, cache: &mut NameCache, name: &str) -> Option<Arc<Queue>> {
        self.refresh(cache);
        if let Some(q) = cache.queue.as_ref().filter(|q| q.name == name) {
            return Some(Arc::clone(q));
        }
        let q = self.queue(name)?;
        cache.queue = Some(Arc::clone(&q));
        Some(q)
    }

    /// The queue called `name`, or 404.
    pub fn queue_or_404(&self, name: &str) -> Result<Arc<Queue>, AmqpError> {
        self.queue(name).ok_or_else(|| AmqpError::not_found(format!("no queue '{name}' in vhost '{}'", self.name)))
    }

    /// `exchange.declare`.
    pub fn declare_exchange(&self, spec: ExchangeSpec, passive: bool) -> Result<Arc<Exchange>, AmqpError> {
        if spec.name.is_empty() {
            return Err(AmqpError::access_refused("operation not permitted on the default exchange"));
        }
        if passive {
            return self.exchange_or_404(&spec.name);
        }
        let Some(kind) = ExchangeKind::parse(&spec.kind) else {
            return Err(AmqpError::command_invalid(format!("unknown exchange type '{}'", spec.kind)));
        };
        validate_exchange_args(&spec.arguments, &spec.name, &self.name)?;
        let _topology = self.serialise();
        if let Some(existing) = self.exchange(&spec.name) {
            self.exchange_equivalent(&existing, &spec, kind)?;
            return Ok(existing);
        }
        Self::check_reserved_exchange(&spec.name)?;
        if spec.durable {
            self.store
                .put_exchange(&ExchangeRecord {
                    name: spec.name.clone(),
                    kind: kind.as_str().to_owned(),
                    auto_delete: spec.auto_delete,
                    internal: spec.internal,
                    arguments: encode_table(&spec.arguments),
                })
                .map_err(store_failed)?;
        }
        let exchange = Arc::new(Exchange::new(spec.name.clone(), kind, spec.durable, spec.auto_delete, spec.internal, spec.arguments));
        let policies = self.policies();
        exchange.set_policy_alternate(policy::choose(&policies, |p| p.matches_exchange(&exchange.name)).and_then(|p| p.settings.alternate_exchange.clone()));
        self.exchanges.write().unwrap_or_else(|p| p.into_inner()).insert(spec.name, Arc::clone(&exchange));
        self.names_changed();
        Ok(exchange)
    }

    /// 406 unless `existing` is what `spec` declares.
    fn exchange_equivalent(&self, existing: &Exchange, spec: &ExchangeSpec, kind: ExchangeKind) -> Result<(), AmqpError> {
        let mismatch = |arg: &str, received: &str, current: &str| {
            AmqpError::precondition_failed(format!(
                "inequivalent arg '{arg}' for exchange '{}' in vhost '{}': received '{received}' but current is '{current}'",
                spec.name, self.name
            ))
        };
        if existing.kind != kind {
            return Err(mismatch("type", kind.as_str(), existing.kind.as_str()));
        }
        if existing.durable != spec.durable {
            return Err(mismatch("durable", flag(spec.durable), flag(existing.durable)));
        }
        if existing.auto_delete != spec.auto_delete {
            return Err(mismatch("auto_delete", flag(spec.auto_delete), flag(existing.auto_delete)));
        }
        if existing.internal != spec.internal {
            return Err(mismatch("internal", flag(spec.internal), flag(existing.internal)));
        }
        let ae = |t: &FieldTable| t.inner().get("alternate-exchange").cloned();
        if ae(&existing.arguments) != ae(&spec.arguments) {
            return Err(AmqpError::precondition_failed(format!(
                "inequivalent arg 'alternate-exchange' for exchange '{}' in vhost '{}'",
                spec.name, self.name
            )));
        }
        Ok(())
    }

    /// As in RabbitMQ, the reserved prefix only stops creation: redeclaring a predeclared
    /// exchange is an ordinary equivalence check.
    fn check_reserved_exchange(name: &str) -> Result<(), AmqpError> {
        if reserved(name) {
            return Err(AmqpError::access_refused(format!("exchange name '{name}' contains reserved prefix 'amq.*'")));
        }
        Ok(())
    }

    /// What declaring `spec` in a vhost that does not exist yet would refuse (definitions
    /// are checked before anything is applied).
    pub fn check_new_exchange(spec: &ExchangeSpec, vhost: &str) -> Result<(), AmqpError> {
        if spec.name.is_empty() {
            return Err(AmqpError::access_refused("operation not permitted on the default exchange"));
        }
        if ExchangeKind::parse(&spec.kind).is_none() {
            return Err(AmqpError::command_invalid(format!("unknown exchange type '{}'", spec.kind)));
        }
        validate_exchange_args(&spec.arguments, &spec.name, vhost)?;
        Self::check_reserved_exchange(&spec.name)
    }

    /// What declaring `spec` here would refuse, without declaring it.
    pub fn check_exchange(&self, spec: &ExchangeSpec) -> Result<(), AmqpError> {
        Self::check_new_exchange(spec, &self.name).or_else(|e| if self.exchange(&spec.name).is_some() && reserved(&spec.name) { Ok(()) } else { Err(e) })?;
        match (self.exchange(&spec.name), ExchangeKind::parse(&spec.kind)) {
            (Some(existing), Some(kind)) => self.exchange_equivalent(&existing, spec, kind),
            _ => Ok(()),
        }
    }

    /// What declaring queue `spec` in a vhost that does not exist yet would refuse under
    /// the `compat` profile.
    pub fn check_new_queue(spec: &QueueSpec, vhost: &str, compat: Compat) -> Result<(), AmqpError> {
        if reserved(&spec.name) && !spec.server_named {
            return Err(AmqpError::access_refused(format!("queue name '{}' contains reserved prefix 'amq.*'", spec.name)));
        }
        let flags = DeclareFlags { durable: spec.durable, exclusive: spec.exclusive_owner.is_some(), auto_delete: spec.auto_delete, server_named: spec.server_named };
        QueueArgs::parse_declared(&spec.arguments, &spec.name, vhost, flags, compat).map(drop)
    }

    /// What declaring queue `spec` here would refuse, without declaring it.
    pub fn check_queue(&self, spec: &QueueSpec) -> Result<(), AmqpError> {
        match self.queue(&spec.name) {
            Some(existing) => self.queue_equivalent(&existing, spec),
            None => {
                Self::check_new_queue(spec, &self.name, self.defaults.compat)?;
                self.check_queue_limit(&spec.name)
            }
        }
    }

    /// 406 when the vhost's max-queues is reached (a new queue would pass it).
    fn check_queue_limit(&self, name: &str) -> Result<(), AmqpError> {
        if let Some(max) = limit(self.limits().max_queues) {
            if self.queues.read().unwrap_or_else(|p| p.into_inner()).len() as u64 >= max {
                return Err(AmqpError::precondition_failed(format!("cannot declare queue '{name}': queue limit in vhost '{}' ({max}) is reached", self.name)));
            }
        }
        Ok(())
    }

    /// 406 unless `existing` is what `spec` declares (durable, auto-delete, and the
    /// arguments of its type).
    fn queue_equivalent(&self, existing: &Queue, spec: &QueueSpec) -> Result<(), AmqpError> {
        let mismatch = |arg: &str, received: &str, current: &str| {
            AmqpError::precondition_failed(format!(
                "inequivalent arg '{arg}' for queue '{}' in vhost '{}': received {received} but current is {current}",
                spec.name, self.name
            ))
        };
        let quoted = |b: bool| format!("'{}'", flag(b));
        if existing.durable() != spec.durable {
            return Err(mismatch("durable", &quoted(spec.durable), &quoted(existing.durable())));
        }
        if existing.auto_delete != spec.auto_delete {
            return Err(mismatch("auto_delete", &quoted(spec.auto_delete), &quoted(existing.auto_delete)));
        }
        // Only the arguments of the existing queue's type count; values are not
        // validated again on a redeclare.
        for key in existing.args().equivalence_keys() {
            let received = spec.arguments.inner().get(key);
            let current = existing.arguments.inner().get(key);
            if !equivalent_arg(key, received, current) {
                return Err(mismatch(key, &show(received), &show(current)));
            }
        }
        Ok(())
    }

    /// `exchange.delete`: idempotent; 403 for the default and `amq.*` exchanges; 406 with
    /// if-unused when it has bindings.
    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<(), AmqpError> {
        if name.is_empty() {
            return Err(AmqpError::access_refused("operation not permitted on the default exchange"));
        }
        if reserved(name) {
            return Err(AmqpError::access_refused(format!("exchange name '{name}' contains reserved prefix 'amq.*'")));
        }
        let _topology = self.serialise();
        let Some(exchange) = self.exchange(name) else {
            return Ok(());
        };
        if if_unused && exchange.has_bindings() {
            return Err(AmqpError::precondition_failed(format!("exchange '{name}' in vhost '{}' in use", self.name)));
        }
        self.remove_exchange(&exchange);
        Ok(())
    }

    /// Removes an exchange and every binding to it, cascading to auto-delete exchanges that
    /// lose their last binding. Caller holds the topology lock.
    fn remove_exchange(&self, exchange: &Arc<Exchange>) {
        self.forget_exchange(exchange);
        self.unbind_everywhere(Destination::Exchange(Arc::clone(exchange)));
    }

    /// Takes an exchange out of the vhost and the store (its bindings are the caller's).
    fn forget_exchange(&self, exchange: &Exchange) {
        self.exchanges.write().unwrap_or_else(|p| p.into_inner()).remove(&exchange.name);
        self.names_changed();
        if exchange.durable {
            if let Err(e) = self.store.delete_exchange(&exchange.name) {
                warn!(exchange = %exchange.name, error = %e, "cannot delete an exchange from the store");
            }
        }
    }

    /// Removes bindings to `destination` from every exchange, then deletes auto-delete
    /// exchanges left without bindings, and so on down the chain. A client controls how
    /// long such a chain is, so this is a loop over a work list, not recursion, and it
    /// finds sources through an index built once instead of scanning every exchange per
    /// removed one. Caller holds the topology lock.
    // Destination hashes and compares by pointer identity, never by the mutable state
    // behind the pointer, so it is a sound map key.
    #[allow(clippy::mutable_key_type)]
    fn unbind_everywhere(&self, destination: Destination) {
        let exchanges: Vec<Arc<Exchange>> = self.exchanges.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        let mut sources: HashMap<Destination, Vec<Arc<Exchange>>> = HashMap::new();
        for x in &exchanges {
            for d in x.destinations() {
                let list = sources.entry(d).or_default();
                if !list.last().is_some_and(|last| Arc::ptr_eq(last, x)) {
                    list.push(Arc::clone(x));
                }
            }
        }
        let mut work = vec![destination];
        while let Some(gone) = work.pop() {
            for x in sources.remove(&gone).unwrap_or_default() {
                if x.unbind_destination(&gone) && x.auto_delete && !x.has_bindings() {
                    self.forget_exchange(&x);
                    work.push(Destination::Exchange(x));
                }
            }
        }
    }

    /// `queue.declare`. Returns the queue and whether it was created.
    pub fn declare_queue(&self, spec: QueueSpec, passive: bool, connection: u64) -> Result<Arc<Queue>, AmqpError> {
        if passive {
            let q = self.queue_or_404(&spec.name)?;
            q.check_access(connection)?;
            return Ok(q);
        }
        if reserved(&spec.name) && !spec.server_named {
            return Err(AmqpError::access_refused(format!("queue name '{}' contains reserved prefix 'amq.*'", spec.name)));
        }
        let flags = DeclareFlags { durable: spec.durable, exclusive: spec.exclusive_owner.is_some(), auto_delete: spec.auto_delete, server_named: spec.server_named };
        // RabbitMQ never makes an exclusive queue durable: it dies with its connection.
        let spec = QueueSpec { durable: spec.durable && spec.exclusive_owner.is_none(), ..spec };
        let _topology = self.serialise();
        if let Some(existing) = self.queue(&spec.name) {
            // RabbitMQ checks exclusivity strictly here: the exclusive flag must match the
            // queue's owner, or it is 405 like any access to another's exclusive queue.
            if existing.exclusive_owner != spec.exclusive_owner {
                return Err(existing.locked_error());
            }
            self.queue_equivalent(&existing, &spec)?;
            return Ok(existing);
        }
        // Validated only for a new queue, as RabbitMQ does.
        let args = QueueArgs::parse_declared(&spec.arguments, &spec.name, &self.name, flags, self.defaults.compat)?;
        self.check_queue_limit(&spec.name)?;
        let args = self.with_policy(&spec.name, args, &spec.arguments);
        let store = if spec.durable {
            // Messages a crash left from an earlier queue of this name are not the new one's.
            self.store.drop_messages(&spec.name).map_err(store_failed)?;
            let store = self.store.queue_store(&spec.name).map_err(store_failed)?;
            self.store
                .put_queue(&QueueRecord { name: spec.name.clone(), auto_delete: spec.auto_delete, arguments: encode_table(&spec.arguments) })
                .map_err(store_failed)?;
            Some((store, self.queue_memory_limit))
        } else {
            None
        };
        let queue = Queue::create(QueueSetup {
            name: spec.name.clone(),
            vhost: self.me.clone(),
            vhost_name: self.name.clone(),
            exclusive_owner: spec.exclusive_owner,
            auto_delete: spec.auto_delete,
            arguments: spec.arguments,
            args,
            store,
            memory: Arc::clone(&self.memory),
            consumer_timeout: self.defaults.consumer_timeout,
        });
        self.queues.write().unwrap_or_else(|p| p.into_inner()).insert(spec.name, Arc::clone(&queue));
        self.names_changed();
        // Every queue is bound to the default exchange by its name; routing through ""
        // looks the queue up directly instead of keeping that binding.
        Ok(queue)
    }

    /// `queue.delete`: idempotent; 406 with if-unused / if-empty. The caller drops the
    /// result, cancelling the queue's consumers, once it has replied.
    pub fn delete_queue(&self, name: &str, if_unused: bool, if_empty: bool, connection: u64) -> Result<DeletedQueue, AmqpError> {
        let _topology = self.serialise();
        let Some(queue) = self.queue(name) else {
            return Ok(DeletedQueue::default());
        };
        queue.check_access(connection)?;
        if if_unused && queue.consumer_count() > 0 {
            return Err(AmqpError::precondition_failed(format!("queue '{name}' in vhost '{}' in use", self.name)));
        }
        if if_empty && queue.message_count() > 0 {
            return Err(AmqpError::precondition_failed(format!("queue '{name}' in vhost '{}' is not empty", self.name)));
        }
        Ok(self.remove_queue(&queue))
    }

    /// Deletes a queue that lost its last consumer (auto-delete) or its owner (exclusive).
    pub fn delete_queue_now(&self, queue: &Arc<Queue>) {
        let deleted = {
            let _topology = self.serialise();
            let current = self.queue(&queue.name);
            if !current.is_some_and(|q| Arc::ptr_eq(&q, queue)) {
                return;
            }
            self.remove_queue(queue)
        };
        // Its consumers are cancelled after the topology lock is released.
        drop(deleted);
    }

    /// Removes a queue and its bindings; returns its consumers for the caller to cancel
    /// outside the topology lock, which the caller holds.
    fn remove_queue(&self, queue: &Arc<Queue>) -> DeletedQueue {
        self.queues.write().unwrap_or_else(|p| p.into_inner()).remove(&queue.name);
        self.names_changed();
        // Stop the queue first, so nothing reads or marks its messages while the store
        // drops them.
        let (count, consumers) = queue.mark_deleted();
        if queue.durable() {
            if let Err(e) = self.store.delete_queue(&queue.name) {
                warn!(queue = %queue.name, error = %e, "cannot delete a queue from the store");
            }
        }
        self.unbind_everywhere(Destination::Queue(Arc::clone(queue)));
        DeletedQueue { message_count: count, consumers: OrphanedConsumers(consumers) }
    }

    /// The ends of a queue binding: 403 for the default exchange, 404 for a missing end,
    /// 405 for another connection's exclusive queue.
    fn queue_binding_ends(&self, queue: &str, exchange: &str, connection: u64) -> Result<(Arc<Exchange>, Destination), AmqpError> {
        check_not_default_exchange(&[exchange])?;
        let q = self.queue_or_404(queue)?;
        q.check_access(connection)?;
        Ok((self.exchange_or_404(exchange)?, Destination::Queue(q)))
    }

    /// The ends of an exchange-to-exchange binding: 403 for the default exchange, 404 for a
    /// missing end.
    fn exchange_binding_ends(&self, destination: &str, source: &str) -> Result<(Arc<Exchange>, Destination), AmqpError> {
        check_not_default_exchange(&[destination, source])?;
        let d = self.exchange_or_404(destination)?;
        Ok((self.exchange_or_404(source)?, Destination::Exchange(d)))
    }

    /// `queue.bind`.
    pub fn bind_queue(&self, queue: &str, exchange: &str, routing_key: &str, arguments: &FieldTable, connection: u64) -> Result<(), AmqpError> {
        let _topology = self.serialise();
        let (source, destination) = self.queue_binding_ends(queue, exchange, connection)?;
        self.bind(&source, destination, routing_key, arguments)
    }

    /// Adds a binding, recording it when both ends are durable.
    fn bind(&self, source: &Arc<Exchange>, destination: Destination, routing_key: &str, arguments: &FieldTable) -> Result<(), AmqpError> {
        let record = binding_record(source, &destination, routing_key, arguments);
        source.bind(destination, routing_key, arguments)?;
        if let Some(record) = record {
            self.store.put_binding(&record).map_err(store_failed)?;
        }
        Ok(())
    }

    /// Removes a binding (and its record); deletes an auto-delete source left without
    /// bindings.
    fn unbind(&self, source: &Arc<Exchange>, destination: Destination, routing_key: &str, arguments: &FieldTable) -> Result<(), AmqpError> {
        let record = binding_record(source, &destination, routing_key, arguments);
        if source.unbind(&destination, routing_key, arguments) {
            if let Some(record) = record {
                self.store.delete_binding(&record).map_err(store_failed)?;
            }
            if source.auto_delete && !source.has_bindings() {
                self.remove_exchange(source);
            }
        }
        Ok(())
    }

    /// `queue.unbind`: idempotent, as RabbitMQ's `rabbit_binding:remove`: a binding that does
    /// not exist, or whose queue or exchange does not, is already gone. 403 for the default
    /// exchange; 405 for another connection's exclusive queue, which RabbitMQ checks only
    /// when there is a binding to remove.
    pub fn unbind_queue(&self, queue: &str, exchange: &str, routing_key: &str, arguments: &FieldTable, connection: u64) -> Result<(), AmqpError> {
        check_not_default_exchange(&[exchange])?;
        let _topology = self.serialise();
        let (Some(source), Some(q)) = (self.exchange(exchange), self.queue(queue)) else {
            return Ok(());
        };
        let destination = Destination::Queue(Arc::clone(&q));
        if !q.accessible_by(connection) && source.has_binding(&destination, routing_key, arguments) {
            return Err(q.locked_error());
        }
        self.unbind(&source, destination, routing_key, arguments)
    }

    /// `exchange.bind`.
    pub fn bind_exchange(&self, destination: &str, source: &str, routing_key: &str, arguments: &FieldTable) -> Result<(), AmqpError> {
        let _topology = self.serialise();
        let (source, destination) = self.exchange_binding_ends(destination, source)?;
        self.bind(&source, destination, routing_key, arguments)
    }

    /// `exchange.unbind`: idempotent like `queue.unbind`: a missing binding or a missing end
    /// is already gone. 403 when either end is the default exchange.
    pub fn unbind_exchange(&self, destination: &str, source: &str, routing_key: &str, arguments: &FieldTable) -> Result<(), AmqpError> {
        check_not_default_exchange(&[destination, source])?;
        let _topology = self.serialise();
        let (Some(source), Some(destination)) = (self.exchange(source), self.exchange(destination)) else {
            return Ok(());
        };
        self.unbind(&source, Destination::Exchange(destination), routing_key, arguments)
    }

    /// Publishes a message that no channel sent (the management API's publish, the
    /// aliveness test): routed as [`Self::route`] routes, enqueued, no confirm. True if a
    /// queue took it.
    pub fn publish(&self, exchange: &Arc<Exchange>, msg: Arc<Message>) -> bool {
        let (mut dests, mut queues) = (Vec::new(), Vec::new());
        let mut headers = || warren_protocol::properties::PropertiesView::parse(msg.properties()).ok().and_then(|v| v.headers_table());
        self.route(exchange, &msg.routing_key, &mut headers, &mut dests, &mut queues, None);
        let mut routed = false;
        for q in queues {
            routed |= matches!(q.enqueue(Arc::clone(&msg)), Enqueued::Transient | Enqueued::Stored | Enqueued::Rejected);
        }
        routed
    }

    /// The queues a message published to `exchange` reaches, each once, following
    /// exchange-to-exchange bindings (each exchange visited once) and, for an exchange that
    /// routes it nowhere, that exchange's alternate exchange (RabbitMQ's rule: an alternate
    /// chain ends at an exchange already visited or one that does not exist). `dests` is
    /// scratch space the caller keeps between messages, so routing allocates nothing once
    /// it has grown.
    pub fn route(&self, exchange: &Arc<Exchange>, routing_key: &str, headers: &mut dyn FnMut() -> Option<FieldTable>, dests: &mut Vec<Destination>, queues: &mut Vec<Arc<Queue>>, cache: Option<&mut NameCache>) {
        if exchange.name.is_empty() {
            let q = match cache {
                Some(cache) => self.queue_cached(cache, routing_key),
                None => self.queue(routing_key),
            };
            if let Some(q) = q {
                if !queues.iter().any(|x| Arc::ptr_eq(x, &q)) {
                    queues.push(q);
                }
            }
            return;
        }
        dests.clear();
        exchange.route(routing_key, headers, dests);
        if dests.is_empty() {
            match self.alternate_of(exchange) {
                Some(ae) => dests.push(Destination::Exchange(ae)),
                None => return,
            }
        }
        if dests.iter().all(|d| matches!(d, Destination::Queue(_))) {
            // The common case: no exchange-to-exchange bindings on the way.
            for d in dests.drain(..) {
                if let Destination::Queue(q) = d {
                    if !queues.iter().any(|x| Arc::ptr_eq(x, &q)) {
                        queues.push(q);
                    }
                }
            }
            return;
        }
        let mut visited: Vec<Arc<Exchange>> = vec![Arc::clone(exchange)];
        while let Some(d) = dests.pop() {
            match d {
                Destination::Queue(q) => {
                    if !queues.iter().any(|x| Arc::ptr_eq(x, &q)) {
                        queues.push(q);
                    }
                }
                Destination::Exchange(x) => {
                    if !visited.iter().any(|v| Arc::ptr_eq(v, &x)) {
                        let before = dests.len();
                        x.route(routing_key, headers, dests);
                        if dests.len() == before {
                            if let Some(ae) = self.alternate_of(&x) {
                                dests.push(Destination::Exchange(ae));
                            }
                        }
                        visited.push(x);
                    }
                }
            }
        }
    }

    /// The alternate exchange of `exchange`, if it names one that exists.
    fn alternate_of(&self, exchange: &Exchange) -> Option<Arc<Exchange>> {
        exchange.alternate_name().and_then(|name| self.exchange(&name))
    }

    /// Routes messages that queues gave up to their dead-letter exchanges. A queue that
    /// receives one may give up others (a length limit, a TTL of 0); those join the same
    /// loop instead of recursing, so a chain of queues of any length costs no stack.
    /// RabbitMQ's cycle rule drops a message that would die in the same queue again with
    /// no rejection in between; a dead-letter exchange that does not exist drops it.
    pub fn dead_letter(&self, letters: Vec<DeadLetter>) {
        thread_local! {
            /// Dead letters produced while this thread is already routing some.
            static PENDING: RefCell<Option<Vec<DeadLetter>>> = const { RefCell::new(None) };
        }
        let first = PENDING.with(|p| {
            let mut p = p.borrow_mut();
            match p.as_mut() {
                Some(pending) => {
                    pending.extend(letters);
                    None
                }
                None => {
                    *p = Some(Vec::new());
                    Some(letters)
                }
            }
        });
        let Some(mut work) = first else { return };
        /// Ends the loop's claim on this thread however it ends (a panic included).
        struct Claim;
        impl Drop for Claim {
            fn drop(&mut self) {
                PENDING.with(|p| *p.borrow_mut() = None);
            }
        }
        let _claim = Claim;
        let (mut dests, mut queues) = (Vec::new(), Vec::new());
        while !work.is_empty() {
            for letter in work.drain(..) {
                self.route_dead_letter(&letter, &mut dests, &mut queues);
            }
            work = PENDING.with(|p| p.borrow_mut().as_mut().map(std::mem::take).unwrap_or_default());
        }
    }

    fn route_dead_letter(&self, letter: &DeadLetter, dests: &mut Vec<Destination>, queues: &mut Vec<Arc<Queue>>) {
        let Some(exchange) = self.exchange(&letter.target.exchange) else {
            warn!(queue = %letter.queue, exchange = %letter.target.exchange, "dead-letter exchange does not exist; message dropped");
            return;
        };
        let out = dead_letter::rewrite(letter);
        let view = warren_protocol::properties::PropertiesView::parse(out.msg.properties()).unwrap_or_default();
        queues.clear();
        for key in &out.routing_keys {
            self.route(&exchange, key, &mut || view.headers_table(), dests, queues, None);
        }
        for q in queues.drain(..) {
            if dead_letter::is_cycle(&out.deaths, &q.name) {
                warn!(queue = %q.name, "dead-letter cycle; message dropped");
                continue;
            }
            q.enqueue(Arc::clone(&out.msg));
        }
    }

    /// Writes pending delivery marks of every durable queue (see [`Queue::write_marks`]).
    pub fn write_marks(&self) {
        let queues: Vec<Arc<Queue>> = self.queues.read().unwrap_or_else(|p| p.into_inner()).values().filter(|q| q.durable()).cloned().collect();
        for q in queues {
            q.write_marks();
        }
    }

    /// Deletes the exclusive queues of a closing connection.
    pub fn drop_exclusive_queues(&self, connection: u64) {
        let owned: Vec<Arc<Queue>> = self
            .queues
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|q| q.exclusive_owner == Some(connection))
            .cloned()
            .collect();
        for q in owned {
            self.delete_queue_now(&q);
        }
    }
}

/// 403 when an end of a binding is the default exchange, whose bindings are implicit.
fn check_not_default_exchange(names: &[&str]) -> Result<(), AmqpError> {
    if names.iter().any(|n| n.is_empty()) {
        return Err(AmqpError::access_refused("operation not permitted on the default exchange"));
    }
    Ok(())
}

/// Removes a consumer from its channel and tells the client with basic.cancel (RabbitMQ's
/// consumer cancel notification), as when its queue is deleted.
pub(crate) fn cancel_consumer(consumer: &Arc<Consumer>) {
    let mut state = consumer.channel.lock();
    if state.consumers.remove(&consumer.tag).is_some() && !state.closed && consumer.channel.cancel_notify {
        let tag = consumer.tag.clone();
        drop(state);
        consumer.channel.outbound.method(
            consumer.channel.id,
            &warren_protocol::AMQPClass::Basic(warren_protocol::spec::basic::AMQPMethod::Cancel(warren_protocol::spec::basic::Cancel {
                consumer_tag: tag.into(),
                nowait: true,
            })),
        );
    }
}

impl VHost {
    /// Deletes the vhost's queues with their messages and its exchanges but the
    /// predeclared ones, with their bindings (see [`crate::broker::Broker::reset_vhost`]).
    /// Returns (queues, exchanges) deleted.
    pub fn reset(&self) -> (usize, usize) {
        let queues = self.queues();
        for q in &queues {
            // The queue's consumers get basic.cancel as for any deleted queue.
            self.delete_queue_now(q);
        }
        let exchanges: Vec<Arc<Exchange>> = self.exchanges().into_iter().filter(|x| !x.name.is_empty() && !reserved(&x.name)).collect();
        for x in &exchanges {
            if let Err(e) = self.delete_exchange(&x.name, false) {
                warn!(vhost = %self.name, exchange = %x.name, error = %e, "reset: cannot delete an exchange");
            }
        }
        (queues.len(), exchanges.len())
    }

    /// Cancels every consumer of `queue` as RabbitMQ does when a queue goes away under them
    /// (basic.cancel to clients that take it), leaving the queue in place: an injected
    /// fault. An auto-delete queue is deleted with its last consumer. Returns how many.
    pub fn cancel_consumers(&self, queue: &Arc<Queue>) -> usize {
        let consumers = queue.consumers();
        for (c, _) in &consumers {
            if queue.remove_consumer(c) {
                self.delete_queue_now(queue);
            }
            cancel_consumer(c);
        }
        consumers.len()
    }
}

/// A queue argument as RabbitMQ's inequivalence text shows it.
fn show(v: Option<&AMQPValue>) -> String {
    let Some(v) = v else { return "none".to_owned() };
    let value = match (as_text(v), as_int(v)) {
        (Some(t), _) => String::from_utf8_lossy(t).into_owned(),
        (_, Some(n)) => n.to_string(),
        _ => match v {
            AMQPValue::Boolean(b) => b.to_string(),
            other => format!("{other:?}"),
        },
    };
    format!("the value '{value}' of type '{}'", type_name(v))
}

/// RabbitMQ compares queue arguments by value: integers of any width are equal when their
/// values are, a short string equals the same long string, and a missing `x-queue-type`
/// equals `classic`.
fn equivalent_arg(key: &str, a: Option<&AMQPValue>, b: Option<&AMQPValue>) -> bool {
    let classic = AMQPValue::LongString("classic".into());
    let (a, b) = if key == "x-queue-type" { (a.or(Some(&classic)), b.or(Some(&classic))) } else { (a, b) };
    match (a, b) {
        (Some(a), Some(b)) => match (as_int(a), as_int(b)) {
            (Some(x), Some(y)) => x == y,
            _ => match (as_text(a), as_text(b)) {
                (Some(x), Some(y)) => x == y,
                _ => a == b,
            },
        },
        (a, b) => a == b,
    }
}

/// RabbitMQ validates one exchange argument, `alternate-exchange`, and ignores the others.
fn validate_exchange_args(args: &FieldTable, exchange: &str, vhost: &str) -> Result<(), AmqpError> {
    match args.inner().get("alternate-exchange") {
        Some(v) if as_text(v).is_none() => Err(AmqpError::precondition_failed(format!(
            "invalid type '{}' for arg 'alternate-exchange' in exchange '{exchange}' in vhost '{vhost}'",
            type_name(v)
        ))),
        _ => Ok(()),
    }
}
