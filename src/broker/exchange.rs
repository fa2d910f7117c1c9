//! Exchanges and their bindings: the four exchange types and how each routes a message.
//!
//! Every exchange keeps its bindings twice: a list (the bindings themselves, for unbind,
//! deletion and `if-unused`) and an index shaped for its type (a map by routing key for
//! direct, a list for fanout, a trie for topic, parsed matchers for headers), so routing
//! never scans bindings that cannot match.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use amq_protocol::types::{AMQPValue, FieldTable};
use warren_protocol::AmqpError;

use crate::broker::headers::HeadersBinding;
use crate::broker::queue::Queue;
use crate::broker::topic::TopicTrie;

/// The exchange types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Routes on routing key equality.
    Direct,
    /// Routes to every binding.
    Fanout,
    /// Routes on `*` / `#` patterns.
    Topic,
    /// Routes on message headers.
    Headers,
}

impl ExchangeKind {
    /// Parses a declare's type; RabbitMQ's `x-` plugin types are not available.
    pub fn parse(kind: &str) -> Option<Self> {
        match kind {
            "direct" => Some(ExchangeKind::Direct),
            "fanout" => Some(ExchangeKind::Fanout),
            "topic" => Some(ExchangeKind::Topic),
            "headers" => Some(ExchangeKind::Headers),
            _ => None,
        }
    }

    /// The type's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
        }
    }
}

/// Where a binding leads.
#[derive(Debug, Clone)]
pub enum Destination {
    /// A queue.
    Queue(Arc<Queue>),
    /// Another exchange (exchange-to-exchange binding).
    Exchange(Arc<Exchange>),
}

impl PartialEq for Destination {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Destination::Queue(a), Destination::Queue(b)) => Arc::ptr_eq(a, b),
            (Destination::Exchange(a), Destination::Exchange(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Destination {}

impl Hash for Destination {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Destination::Queue(q) => (0u8, Arc::as_ptr(q) as usize).hash(state),
            Destination::Exchange(x) => (1u8, Arc::as_ptr(x) as usize).hash(state),
        }
    }
}

/// One binding from an exchange.
#[derive(Debug, Clone)]
pub struct Binding {
    /// Where it leads.
    pub destination: Destination,
    /// Its routing key (pattern for topic).
    pub routing_key: String,
    /// Its arguments (matched against headers for headers exchanges).
    pub arguments: FieldTable,
}

impl Binding {
    fn same(&self, destination: &Destination, routing_key: &str, arguments: &FieldTable) -> bool {
        self.destination == *destination && self.routing_key == routing_key && self.arguments == *arguments
    }
}

#[derive(Debug)]
enum Index {
    Direct(HashMap<String, Vec<Destination>>),
    Fanout(Vec<Destination>),
    Topic(TopicTrie<Destination>),
    Headers(Vec<(HeadersBinding, Destination)>),
}

#[derive(Debug)]
struct Bindings {
    list: Vec<Binding>,
    index: Index,
}

/// An exchange of a virtual host.
#[derive(Debug)]
pub struct Exchange {
    /// Its name ("" for the default exchange).
    pub name: String,
    /// Its type.
    pub kind: ExchangeKind,
    /// Declared durable.
    pub durable: bool,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Internal: clients cannot publish to it.
    pub internal: bool,
    /// The declare arguments.
    pub arguments: FieldTable,
    /// The `alternate-exchange` argument: where a message goes that this exchange routes
    /// nowhere.
    pub alternate: Option<String>,
    /// The `alternate-exchange` of the policy that applies, if any (the argument wins).
    policy_alternate: RwLock<Option<String>>,
    bindings: RwLock<Bindings>,
}

impl Exchange {
    /// A new exchange with no bindings.
    pub fn new(name: String, kind: ExchangeKind, durable: bool, auto_delete: bool, internal: bool, arguments: FieldTable) -> Self {
        let index = match kind {
            ExchangeKind::Direct => Index::Direct(HashMap::new()),
            ExchangeKind::Fanout => Index::Fanout(Vec::new()),
            ExchangeKind::Topic => Index::Topic(TopicTrie::new()),
            ExchangeKind::Headers => Index::Headers(Vec::new()),
        };
        let alternate = match arguments.inner().get("alternate-exchange") {
            Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_owned()),
            _ => None,
        };
        Exchange {
            name,
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
            alternate,
            policy_alternate: RwLock::new(None),
            bindings: RwLock::new(Bindings { list: Vec::new(), index }),
        }
    }

    /// Where unroutable messages go: the `alternate-exchange` argument, else the policy's,
    /// as RabbitMQ resolves it.
    pub fn alternate_name(&self) -> Option<String> {
        self.alternate.clone().or_else(|| self.policy_alternate.read().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// Sets the policy's alternate exchange (`None`: no policy applies, or it has none).
    pub fn set_policy_alternate(&self, alternate: Option<String>) {
        *self.policy_alternate.write().unwrap_or_else(|p| p.into_inner()) = alternate;
    }

    fn read(&self) -> RwLockReadGuard<'_, Bindings> {
        self.bindings.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Bindings> {
        self.bindings.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a binding (a no-op if the same binding exists). 406 for headers bindings with an
    /// invalid `x-match`.
    pub fn bind(&self, destination: Destination, routing_key: &str, arguments: &FieldTable) -> Result<(), AmqpError> {
        let mut b = self.write();
        if b.list.iter().any(|x| x.same(&destination, routing_key, arguments)) {
            return Ok(());
        }
        match &mut b.index {
            Index::Direct(map) => {
                let dests = map.entry(routing_key.to_owned()).or_default();
                if !dests.contains(&destination) {
                    dests.push(destination.clone());
                }
            }
            Index::Fanout(dests) => {
                if !dests.contains(&destination) {
                    dests.push(destination.clone());
                }
            }
            Index::Topic(trie) => {
                trie.bind(routing_key, destination.clone());
            }
            Index::Headers(matchers) => {
                let matcher = HeadersBinding::new(arguments).map_err(AmqpError::precondition_failed)?;
                matchers.push((matcher, destination.clone()));
            }
        }
        b.list.push(Binding { destination, routing_key: routing_key.to_owned(), arguments: arguments.clone() });
        Ok(())
    }

    /// True when exactly this binding exists.
    pub fn has_binding(&self, destination: &Destination, routing_key: &str, arguments: &FieldTable) -> bool {
        self.read().list.iter().any(|x| x.same(destination, routing_key, arguments))
    }

    /// Removes a binding; false if it did not exist.
    pub fn unbind(&self, destination: &Destination, routing_key: &str, arguments: &FieldTable) -> bool {
        let mut b = self.write();
        let Some(pos) = b.list.iter().position(|x| x.same(destination, routing_key, arguments)) else {
            return false;
        };
        b.list.remove(pos);
        Self::unindex(&mut b, destination, routing_key, pos);
        true
    }

    /// Drops the index entry of a removed binding unless another binding still needs it.
    /// `pos` is where the binding was in the list (headers matchers are kept in list order).
    fn unindex(b: &mut Bindings, destination: &Destination, routing_key: &str, pos: usize) {
        let still_needed = b.list.iter().any(|x| x.destination == *destination && (keyed_by_destination(&b.index) || x.routing_key == routing_key));
        match &mut b.index {
            Index::Direct(map) => {
                if !still_needed {
                    if let Some(dests) = map.get_mut(routing_key) {
                        dests.retain(|d| d != destination);
                        if dests.is_empty() {
                            map.remove(routing_key);
                        }
                    }
                }
            }
            Index::Fanout(dests) => {
                if !still_needed {
                    dests.retain(|d| d != destination);
                }
            }
            Index::Topic(trie) => {
                if !still_needed {
                    trie.unbind(routing_key, destination);
                }
            }
            Index::Headers(matchers) => {
                if pos < matchers.len() {
                    matchers.remove(pos);
                }
            }
        }
    }

    /// Removes every binding to `destination`; true if any was removed.
    pub fn unbind_destination(&self, destination: &Destination) -> bool {
        let mut b = self.write();
        let mut removed = false;
        while let Some(pos) = b.list.iter().position(|x| x.destination == *destination) {
            let binding = b.list.remove(pos);
            Self::unindex(&mut b, destination, &binding.routing_key, pos);
            removed = true;
        }
        removed
    }

    /// True when the exchange has bindings to anything.
    pub fn has_bindings(&self) -> bool {
        !self.read().list.is_empty()
    }

    /// A copy of the bindings.
    /// Where its bindings lead (a destination once per binding).
    pub fn destinations(&self) -> Vec<Destination> {
        self.read().list.iter().map(|b| b.destination.clone()).collect()
    }

    /// Its bindings.
    pub fn bindings(&self) -> Vec<Binding> {
        self.read().list.clone()
    }

    /// Pushes the destinations a message with `routing_key` (and `headers`, parsed only for
    /// a headers exchange) goes to.
    pub fn route(&self, routing_key: &str, headers: &mut dyn FnMut() -> Option<FieldTable>, out: &mut Vec<Destination>) {
        let b = self.read();
        match &b.index {
            Index::Direct(map) => {
                if let Some(dests) = map.get(routing_key) {
                    out.extend(dests.iter().cloned());
                }
            }
            Index::Fanout(dests) => out.extend(dests.iter().cloned()),
            Index::Topic(trie) => trie.route(routing_key, out),
            Index::Headers(matchers) => {
                if matchers.is_empty() {
                    return;
                }
                let table = headers();
                for (m, d) in matchers {
                    if m.matches(table.as_ref()) && !out.contains(d) {
                        out.push(d.clone());
                    }
                }
            }
        }
    }
}

/// Fanout and headers indexes are keyed by destination alone.
fn keyed_by_destination(index: &Index) -> bool {
    matches!(index, Index::Fanout(_))
}
