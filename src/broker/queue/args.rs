//! A queue's declare arguments: which RabbitMQ knows, how each is validated (406 with
//! RabbitMQ's text on a bad value), which ones decide redeclare equivalence, and what the
//! valid ones ask of the queue ([`QueueArgs`]).
//!
//! Called by [`crate::broker::vhost::VHost::declare_queue`] before anything is created, so a
//! refused declare leaves no trace. An argument RabbitMQ knows but Warren does not act on is
//! refused with 406 naming it; arguments RabbitMQ itself accepts and ignores (`x-queue-mode`,
//! placement hints that mean nothing on one node) are accepted; unknown names are ignored,
//! as RabbitMQ ignores them. Under the RabbitMQ 4 profile ([`Compat`]) a declaration is
//! also refused `x-queue-mode` and a transient non-exclusive queue.

use amq_protocol::types::{AMQPValue, FieldTable};
use warren_protocol::{AmqpError, ReplyCode};

use crate::config::Compat;

/// RabbitMQ 4.3's reply text when a declaration needs the `transient_nonexcl_queues`
/// deprecated feature, denied by default there (`rabbit_deprecated_features`'
/// `when_denied` text for a `denied_by_default` feature). The reply text is cut to 255
/// octets, as every reply text is.
const TRANSIENT_NONEXCL_DENIED: &str = "Feature `transient_nonexcl_queues` is deprecated.\nBy default, this feature is not permitted anymore.\nThe feature will be removed from a future major RabbitMQ version, regardless of the configuration; actual version to be determined.\nTo continue using this feature when it is not permitted by default, set the following parameter in your configuration:\n    \"deprecated_features.permit.transient_nonexcl_queues = true\"";

/// RabbitMQ 4.0's delivery limit of a quorum queue whose arguments and policy set none.
pub const DEFAULT_DELIVERY_LIMIT: u64 = 20;

/// The queue kinds (`x-queue-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    /// The default: messages persisted when marked persistent in a durable queue.
    Classic,
    /// A single-node quorum queue: durable, every message persisted, delivery limits.
    Quorum,
}

/// What distinguishes the kinds. Dispatch, consumers and acknowledgements are shared; a
/// kind only answers these questions (the seam where streams and replicated queues join).
impl QueueType {
    /// The name RabbitMQ uses.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }

    /// RabbitMQ's module name, as its errors print the queue type.
    pub fn module(self) -> &'static str {
        match self {
            QueueType::Classic => "rabbit_classic_queue",
            QueueType::Quorum => "rabbit_quorum_queue",
        }
    }

    /// Every message is stored, whatever its delivery mode (otherwise only persistent ones
    /// in a durable queue).
    pub fn stores_every_message(self) -> bool {
        self == QueueType::Quorum
    }

    /// Redeliveries carry `x-delivery-count` (and `x-delivery-limit` applies).
    pub fn counts_deliveries(self) -> bool {
        self == QueueType::Quorum
    }

    /// A consumer may use a channel-wide prefetch (basic.qos global).
    pub fn allows_global_qos(self) -> bool {
        self == QueueType::Classic
    }

    /// The consume arguments RabbitMQ 3.13 knows for this kind (others of another kind are
    /// refused).
    pub fn knows_consume_arg(self, key: &str) -> bool {
        match self {
            QueueType::Classic => matches!(key, "x-cancel-on-ha-failover" | "x-priority" | "x-credit"),
            QueueType::Quorum => matches!(key, "x-priority" | "x-credit"),
        }
    }
}

/// What `x-overflow` does at a length limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Drop (and dead-letter) the oldest messages.
    DropHead,
    /// Refuse new messages (nacked under confirms).
    RejectPublish,
    /// Refuse new messages and dead-letter them.
    RejectPublishDlx,
}

/// Where a queue dead-letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterTarget {
    /// x-dead-letter-exchange ("" is the default exchange).
    pub exchange: String,
    /// x-dead-letter-routing-key; None keeps the message's own routing keys.
    pub routing_key: Option<String>,
}

/// The validated arguments of a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueArgs {
    /// x-queue-type.
    pub kind: QueueType,
    /// x-max-length: most ready messages.
    pub max_length: Option<u64>,
    /// x-max-length-bytes: most body octets of ready messages.
    pub max_length_bytes: Option<u64>,
    /// x-overflow.
    pub overflow: Overflow,
    /// x-message-ttl in milliseconds.
    pub message_ttl: Option<u64>,
    /// x-expires in milliseconds.
    pub expires: Option<u64>,
    /// x-dead-letter-exchange and -routing-key.
    pub dead_letter: Option<DeadLetterTarget>,
    /// x-max-priority (1-255); None for a queue without priorities.
    pub max_priority: Option<u8>,
    /// x-delivery-limit (quorum): returns after which a message is dead-lettered.
    pub delivery_limit: Option<u64>,
    /// x-single-active-consumer.
    pub single_active: bool,
    /// x-consumer-timeout in milliseconds (0: none).
    pub consumer_timeout: Option<u64>,
}

impl QueueArgs {
    /// A classic queue without arguments or policy, as most queues are.
    pub const PLAIN: QueueArgs = QueueArgs {
        kind: QueueType::Classic,
        max_length: None,
        max_length_bytes: None,
        overflow: Overflow::DropHead,
        message_ttl: None,
        expires: None,
        dead_letter: None,
        max_priority: None,
        delivery_limit: None,
        single_active: false,
        consumer_timeout: None,
    };
}

/// RabbitMQ's bound on TTLs and expiry, in milliseconds (ten years).
const MAX_EXPIRY: i64 = 315_360_000_000;

/// What the declare looks like besides its arguments (quorum queues constrain it).
#[derive(Debug, Clone, Copy)]
pub struct DeclareFlags {
    /// durable.
    pub durable: bool,
    /// exclusive.
    pub exclusive: bool,
    /// auto-delete.
    pub auto_delete: bool,
    /// The server named the queue.
    pub server_named: bool,
}

/// The arguments RabbitMQ 3.13 validates, in its order, with the queue types that take
/// them (an argument of another type's list is refused).
const KNOWN: &[(&str, &[QueueType])] = &[
    ("x-expires", &[QueueType::Classic, QueueType::Quorum]),
    ("x-message-ttl", &[QueueType::Classic, QueueType::Quorum]),
    ("x-dead-letter-exchange", &[QueueType::Classic, QueueType::Quorum]),
    ("x-dead-letter-routing-key", &[QueueType::Classic, QueueType::Quorum]),
    ("x-max-length", &[QueueType::Classic, QueueType::Quorum]),
    ("x-max-length-bytes", &[QueueType::Classic, QueueType::Quorum]),
    ("x-max-in-memory-length", &[QueueType::Quorum]),
    ("x-max-in-memory-bytes", &[QueueType::Quorum]),
    ("x-max-priority", &[QueueType::Classic]),
    ("x-overflow", &[QueueType::Classic, QueueType::Quorum]),
    ("x-queue-mode", &[QueueType::Classic]),
    ("x-queue-version", &[QueueType::Classic]),
    ("x-single-active-consumer", &[QueueType::Classic, QueueType::Quorum]),
    ("x-quorum-initial-group-size", &[QueueType::Quorum]),
    ("x-delivery-limit", &[QueueType::Quorum]),
    ("x-dead-letter-strategy", &[QueueType::Quorum]),
    ("x-queue-leader-locator", &[QueueType::Quorum]),
    ("x-queue-master-locator", &[QueueType::Classic]),
    // Stream queues only, which Warren refuses as a type.
    ("x-max-age", &[]),
    ("x-stream-max-segment-size-bytes", &[]),
    ("x-initial-cluster-size", &[]),
];

impl QueueArgs {
    /// Validates the arguments of queue `queue` in `vhost` as RabbitMQ 3.13 does: the type
    /// first, then each known argument, then the properties a quorum queue cannot have.
    /// Errors are 406 with RabbitMQ's texts. Existing queues (recovered, or given a new
    /// policy) are parsed with this; a declaration uses [`Self::parse_declared`].
    pub fn parse(args: &FieldTable, queue: &str, vhost: &str, flags: DeclareFlags) -> Result<QueueArgs, AmqpError> {
        let out = Self::parse_arguments(args, queue, vhost)?;
        out.check_properties(queue, vhost, flags)?;
        Ok(out)
    }

    /// [`Self::parse`] for a queue being declared under the `compat` profile. Under
    /// RabbitMQ 4 it also refuses, after the arguments and before the quorum properties (as
    /// RabbitMQ 4.3 checks its deprecated features), `x-queue-mode` (406) and a queue
    /// neither durable nor exclusive (541 INTERNAL_ERROR on the connection, with RabbitMQ's
    /// text for the denied `transient_nonexcl_queues` feature).
    pub fn parse_declared(args: &FieldTable, queue: &str, vhost: &str, flags: DeclareFlags, compat: Compat) -> Result<QueueArgs, AmqpError> {
        let out = Self::parse_arguments(args, queue, vhost)?;
        if compat == Compat::RabbitMq4 {
            if args.inner().contains_key("x-queue-mode") {
                return Err(AmqpError::precondition_failed(format!(
                    "invalid arg 'x-queue-mode' for queue '{queue}' in vhost '{vhost}': \"queue modes were removed in RabbitMQ 4: every classic queue is lazy\""
                )));
            }
            if !flags.durable && !flags.exclusive {
                return Err(AmqpError::connection(ReplyCode::InternalError, TRANSIENT_NONEXCL_DENIED));
            }
        }
        out.check_properties(queue, vhost, flags)?;
        Ok(out)
    }

    /// The type and each known argument.
    fn parse_arguments(args: &FieldTable, queue: &str, vhost: &str) -> Result<QueueArgs, AmqpError> {
        let rs = format!("queue '{queue}' in vhost '{vhost}'");
        let invalid = |key: &str, why: String| AmqpError::precondition_failed(format!("invalid arg '{key}' for {rs}: {why}"));
        let table = args.inner();
        let kind = match table.get("x-queue-type") {
            None => QueueType::Classic,
            Some(v) => match as_text(v) {
                Some(b"classic") => QueueType::Classic,
                Some(b"quorum") => QueueType::Quorum,
                Some(b"stream") => return Err(invalid("x-queue-type", "stream queues are not implemented by Warren".to_owned())),
                Some(other) => return Err(invalid("x-queue-type", format!("\"unsupported queue type '{}'\"", String::from_utf8_lossy(other)))),
                None => return Err(invalid("x-queue-type", unacceptable(v))),
            },
        };
        if let Some(v) = table.get("x-dead-letter-exchange").filter(|v| as_text(v).is_none()) {
            return Err(AmqpError::precondition_failed(format!("invalid type '{}' for arg 'x-dead-letter-exchange' in {rs}", type_name(v))));
        }
        let mut out = QueueArgs { kind, ..QueueArgs::PLAIN };
        let mut dlrk = None;
        for (key, types) in KNOWN {
            let key = *key;
            let Some(value) = table.get(key) else { continue };
            if !types.contains(&kind) {
                return Err(AmqpError::precondition_failed(format!("invalid arg '{key}' for {rs} of queue type {}", kind.module())));
            }
            let int = || as_int(value).ok_or_else(|| invalid(key, format!("\"expected integer, got {}\"", type_name(value))));
            let non_neg = || match int()? {
                n if n < 0 => Err(invalid(key, format!("{{value_negative,{n}}}"))),
                n => Ok(n as u64),
            };
            let expiry = || match non_neg()? {
                n if n as i64 > MAX_EXPIRY => Err(invalid(key, format!("{{value_too_large,{n}}}"))),
                n => Ok(n),
            };
            let text = || as_text(value).ok_or_else(|| invalid(key, unacceptable(value)));
            let not_implemented = || AmqpError::precondition_failed(format!("invalid arg '{key}' for {rs}: not implemented by Warren"));
            match key {
                "x-expires" => {
                    if int()? == 0 {
                        return Err(invalid(key, "{value_zero,0}".to_owned()));
                    }
                    out.expires = Some(expiry()?);
                }
                "x-message-ttl" => out.message_ttl = Some(expiry()?),
                "x-dead-letter-exchange" => {
                    out.dead_letter = Some(DeadLetterTarget { exchange: String::from_utf8_lossy(text()?).into_owned(), routing_key: None });
                }
                "x-dead-letter-routing-key" => dlrk = Some(String::from_utf8_lossy(text()?).into_owned()),
                "x-max-length" => out.max_length = Some(non_neg()?),
                "x-max-length-bytes" => out.max_length_bytes = Some(non_neg()?),
                // Memory hints RabbitMQ 3.13 accepts and ignores.
                "x-max-in-memory-length" | "x-max-in-memory-bytes" => {
                    non_neg()?;
                }
                "x-max-priority" => match non_neg()? {
                    n if n > 255 => return Err(invalid(key, format!("{{max_value_exceeded,{n}}}"))),
                    // 0 acts as 1, as in RabbitMQ.
                    n => out.max_priority = Some((n as u8).max(1)),
                },
                "x-overflow" => {
                    out.overflow = match text()? {
                        b"drop-head" => Overflow::DropHead,
                        b"reject-publish" => Overflow::RejectPublish,
                        // Quorum queues take it but act as drop-head (RabbitMQ logs a warning).
                        b"reject-publish-dlx" if kind == QueueType::Quorum => {
                            tracing::warn!(queue, vhost, "x-overflow reject-publish-dlx is not supported by quorum queues; using drop-head");
                            Overflow::DropHead
                        }
                        b"reject-publish-dlx" => Overflow::RejectPublishDlx,
                        _ => return Err(invalid(key, "invalid_overflow".to_owned())),
                    }
                }
                "x-queue-mode" => match text()? {
                    b"default" | b"lazy" => {}
                    other => return Err(invalid(key, format!("\"unsupported queue mode '{}'\"", String::from_utf8_lossy(other)))),
                },
                "x-queue-version" => match int()? {
                    1 | 2 => {}
                    n => return Err(invalid(key, format!("\"unsupported queue version '{n}'\""))),
                },
                "x-quorum-initial-group-size" => match int()? {
                    0 => return Err(invalid(key, "{value_zero,0}".to_owned())),
                    n if n < 0 => return Err(invalid(key, format!("{{value_negative,{n}}}"))),
                    _ => {}
                },
                "x-delivery-limit" => out.delivery_limit = Some(non_neg()?),
                "x-dead-letter-strategy" => match text()? {
                    b"at-most-once" => {}
                    b"at-least-once" => return Err(not_implemented()),
                    _ => return Err(invalid(key, "invalid_dlx_strategy".to_owned())),
                },
                "x-queue-leader-locator" => match text()? {
                    b"client-local" | b"balanced" | b"random" | b"least-leaders" => {}
                    _ => return Err(invalid(key, "invalid_queue_locator_arg".to_owned())),
                },
                // A placement hint; one node has one place.
                "x-queue-master-locator" => {}
                "x-single-active-consumer" => match value {
                    AMQPValue::Boolean(b) => out.single_active = *b,
                    _ => return Err(invalid(key, unacceptable(value))),
                },
                _ => {}
            }
        }
        // RabbitMQ reads it without a validator; a value Warren cannot use is refused.
        if let Some(v) = table.get("x-consumer-timeout") {
            match as_int(v) {
                Some(n) if n >= 0 => out.consumer_timeout = Some(n as u64),
                Some(n) => return Err(invalid("x-consumer-timeout", format!("{{value_negative,{n}}}"))),
                None => return Err(invalid("x-consumer-timeout", format!("\"expected integer, got {}\"", type_name(v)))),
            }
        }
        if let Some(rk) = dlrk {
            match out.dead_letter.as_mut() {
                Some(target) => target.routing_key = Some(rk),
                None => return Err(invalid("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined".to_owned())),
            }
        }
        Ok(out)
    }

    /// The properties a quorum queue cannot have.
    fn check_properties(&self, queue: &str, vhost: &str, flags: DeclareFlags) -> Result<(), AmqpError> {
        if self.kind == QueueType::Quorum {
            let refuse = |what: &str| AmqpError::precondition_failed(format!("invalid property '{what}' for queue '{queue}' in vhost '{vhost}'"));
            if flags.server_named {
                return Err(AmqpError::precondition_failed("Cannot declare a server-named queue for type rabbit_quorum_queue"));
            }
            if flags.auto_delete {
                return Err(refuse("auto-delete"));
            }
            if flags.exclusive {
                return Err(refuse("exclusive-owner"));
            }
            if !flags.durable {
                return Err(refuse("non-durable"));
            }
        }
        Ok(())
    }

    /// Priority bands the queue's ready list needs.
    pub fn bands(&self) -> usize {
        self.max_priority.map_or(1, |m| usize::from(m) + 1)
    }

    /// The arguments that decide redeclare equivalence for this queue's type (RabbitMQ
    /// compares exactly the existing type's list).
    pub fn equivalence_keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        KNOWN.iter().filter(|(_, types)| types.contains(&self.kind)).map(|(k, _)| *k).chain(std::iter::once("x-queue-type"))
    }
}

/// RabbitMQ's name for a field value's type (`rabbit_binary_parser`), as its error texts
/// and Erlang terms print it.
pub(crate) fn type_name(v: &AMQPValue) -> &'static str {
    match v {
        AMQPValue::Boolean(_) => "bool",
        AMQPValue::ShortShortInt(_) => "byte",
        AMQPValue::ShortShortUInt(_) => "unsignedbyte",
        AMQPValue::ShortInt(_) => "short",
        AMQPValue::ShortUInt(_) => "unsignedshort",
        AMQPValue::LongInt(_) => "signedint",
        AMQPValue::LongUInt(_) => "unsignedint",
        AMQPValue::LongLongInt(_) => "long",
        AMQPValue::Float(_) => "float",
        AMQPValue::Double(_) => "double",
        AMQPValue::DecimalValue(_) => "decimal",
        // RabbitMQ holds every string as a longstr.
        AMQPValue::ShortString(_) | AMQPValue::LongString(_) => "longstr",
        AMQPValue::FieldArray(_) => "array",
        AMQPValue::Timestamp(_) => "timestamp",
        AMQPValue::FieldTable(_) => "table",
        AMQPValue::ByteArray(_) => "binary",
        AMQPValue::Void => "void",
    }
}

/// RabbitMQ's `{unacceptable_type,…}` for a value of the wrong type.
fn unacceptable(v: &AMQPValue) -> String {
    format!("{{unacceptable_type,{}}}", type_name(v))
}

/// A string argument's octets, short or long.
pub(crate) fn as_text(v: &AMQPValue) -> Option<&[u8]> {
    match v {
        AMQPValue::LongString(s) => Some(s.as_bytes()),
        AMQPValue::ShortString(s) => Some(s.as_str().as_bytes()),
        _ => None,
    }
}

/// An integer argument's value, whatever its AMQP width.
pub(crate) fn as_int(v: &AMQPValue) -> Option<i64> {
    match v {
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        _ => None,
    }
}
