//! RabbitMQ policies: named, prioritised rules that apply queue and exchange settings to
//! every entity of a vhost whose name matches a pattern. A policy is validated as
//! `rabbitmqctl set_policy` validates it; the one matching policy of highest priority
//! applies (policies are not merged), and is combined with the entity's own arguments as
//! RabbitMQ combines them (per key: the lower limit, or the argument, or the policy; see
//! [`Settings::apply`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::access::{AccessError, Pattern};
use crate::broker::queue::args::{DeadLetterTarget, Overflow, QueueArgs, QueueType};

/// RabbitMQ's bound on TTLs and expiry, in milliseconds (ten years).
const MAX_EXPIRY: u64 = 315_360_000_000;

/// What a policy applies to (`apply-to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyTo {
    /// Queues of every type.
    Queues,
    /// Exchanges.
    Exchanges,
    /// Both.
    #[default]
    All,
    /// Classic queues (RabbitMQ 3.13).
    ClassicQueues,
    /// Quorum queues (RabbitMQ 3.13).
    QuorumQueues,
    /// Streams (RabbitMQ 3.13; Warren has none, so such a policy matches nothing).
    Streams,
}

/// A policy as RabbitMQ's definitions and management API write it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyDef {
    /// Vhost.
    pub vhost: String,
    /// Name.
    pub name: String,
    /// Regular expression matched against entity names (anywhere, as `re:run`).
    pub pattern: String,
    /// What it applies to.
    #[serde(rename = "apply-to", default)]
    pub apply_to: ApplyTo,
    /// Among matching policies, the highest applies.
    #[serde(default)]
    pub priority: i64,
    /// The settings.
    pub definition: serde_json::Map<String, Value>,
}

/// The settings a policy definition gives, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// `message-ttl`.
    pub message_ttl: Option<u64>,
    /// `expires`.
    pub expires: Option<u64>,
    /// `max-length`.
    pub max_length: Option<u64>,
    /// `max-length-bytes`.
    pub max_length_bytes: Option<u64>,
    /// `overflow`.
    pub overflow: Option<Overflow>,
    /// `dead-letter-exchange`.
    pub dead_letter_exchange: Option<String>,
    /// `dead-letter-routing-key`.
    pub dead_letter_routing_key: Option<String>,
    /// `delivery-limit` (quorum queues).
    pub delivery_limit: Option<u64>,
    /// `consumer-timeout`.
    pub consumer_timeout: Option<u64>,
    /// `alternate-exchange` (exchanges).
    pub alternate_exchange: Option<String>,
}

/// Policy keys RabbitMQ knows that Warren does not act on: refused, never ignored.
const UNSUPPORTED: &[&str] = &[
    "ha-mode",
    "ha-params",
    "ha-sync-mode",
    "ha-promote-on-shutdown",
    "ha-promote-on-failure",
    "federation-upstream",
    "federation-upstream-set",
    "queue-master-locator",
    "queue-leader-locator",
    "queue-version",
    "max-in-memory-length",
    "max-in-memory-bytes",
    "max-age",
    "stream-max-segment-size-bytes",
    "dead-letter-strategy",
    "initial-cluster-size",
];

fn count(key: &str, v: &Value, what: &str) -> Result<u64, String> {
    v.as_u64().ok_or_else(|| format!("{v} is not a valid {what} (policy key '{key}')"))
}

impl Settings {
    /// Validates a definition with `rabbitmqctl set_policy`'s rules and words.
    pub fn parse(definition: &serde_json::Map<String, Value>) -> Result<Settings, String> {
        if definition.is_empty() {
            return Err("no policy provided".to_owned());
        }
        let mut s = Settings::default();
        let text = |key: &str, v: &Value, what: &str| v.as_str().map(str::to_owned).ok_or_else(|| format!("{v} is not a valid {what} (policy key '{key}')"));
        for (key, v) in definition {
            match key.as_str() {
                "message-ttl" => s.message_ttl = Some(count(key, v, "message TTL").and_then(|n| if n <= MAX_EXPIRY { Ok(n) } else { Err(format!("{n} is not a valid message TTL")) })?),
                "expires" => {
                    s.expires = Some(count(key, v, "queue expiry").and_then(|n| if (1..=MAX_EXPIRY).contains(&n) { Ok(n) } else { Err(format!("{n} is not a valid queue expiry")) })?);
                }
                "max-length" => s.max_length = Some(count(key, v, "maximum length")?),
                "max-length-bytes" => s.max_length_bytes = Some(count(key, v, "maximum length in bytes")?),
                "delivery-limit" => s.delivery_limit = Some(count(key, v, "delivery limit")?),
                "consumer-timeout" => s.consumer_timeout = Some(count(key, v, "consumer timeout")?),
                "overflow" => {
                    s.overflow = Some(match v.as_str() {
                        Some("drop-head") => Overflow::DropHead,
                        Some("reject-publish") => Overflow::RejectPublish,
                        Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
                        _ => return Err(format!("{v} is not a valid overflow value")),
                    });
                }
                "dead-letter-exchange" => s.dead_letter_exchange = Some(text(key, v, "dead letter exchange name")?),
                "dead-letter-routing-key" => s.dead_letter_routing_key = Some(text(key, v, "dead letter routing key")?),
                "alternate-exchange" => s.alternate_exchange = Some(text(key, v, "alternate exchange name")?),
                // RabbitMQ 3.13 ignores the queue mode (every classic queue is lazy).
                "queue-mode" => {
                    if !matches!(v.as_str(), Some("default" | "lazy")) {
                        return Err(format!("{v} is not a valid queue-mode value"));
                    }
                }
                k if UNSUPPORTED.contains(&k) => return Err(format!("policy key '{k}' is not supported by Warren")),
                k => return Err(format!("'{k}' is not a recognised policy setting")),
            }
        }
        Ok(s)
    }

    /// A queue's effective settings: its declared arguments (`args`, parsed from
    /// `arguments`) combined with these as RabbitMQ 3.13 combines them. Classic queues:
    /// TTL, expiry and lengths take the lower value, overflow and dead-lettering the
    /// argument. Quorum queues: the same, except that expiry and overflow take the policy
    /// and the delivery limit the lower value.
    pub fn apply(&self, args: &QueueArgs, arguments: &amq_protocol::types::FieldTable) -> QueueArgs {
        let quorum = args.kind == QueueType::Quorum;
        let min = |a: Option<u64>, p: Option<u64>| match (a, p) {
            (Some(a), Some(p)) => Some(a.min(p)),
            (a, p) => a.or(p),
        };
        let mut out = args.clone();
        out.message_ttl = min(args.message_ttl, self.message_ttl);
        out.expires = if quorum { self.expires.or(args.expires) } else { min(args.expires, self.expires) };
        out.max_length = min(args.max_length, self.max_length);
        out.max_length_bytes = min(args.max_length_bytes, self.max_length_bytes);
        let declared_overflow = arguments.inner().contains_key("x-overflow");
        out.overflow = match (quorum, declared_overflow, self.overflow) {
            (true, _, Some(p)) | (false, false, Some(p)) => p,
            _ => args.overflow,
        };
        let exchange = args.dead_letter.as_ref().map(|d| d.exchange.clone()).or_else(|| self.dead_letter_exchange.clone());
        let routing_key = args.dead_letter.as_ref().and_then(|d| d.routing_key.clone()).or_else(|| self.dead_letter_routing_key.clone());
        out.dead_letter = exchange.map(|exchange| DeadLetterTarget { exchange, routing_key });
        if quorum {
            out.delivery_limit = min(args.delivery_limit, self.delivery_limit);
        }
        out.consumer_timeout = min(args.consumer_timeout, self.consumer_timeout);
        out
    }
}

/// A validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// As given.
    pub def: PolicyDef,
    /// Its settings.
    pub settings: Settings,
    pattern: Pattern,
}

impl Policy {
    /// Validates `def`.
    pub fn new(def: PolicyDef) -> Result<Policy, AccessError> {
        let invalid = |why: String| AccessError::Invalid(format!("policy '{}' in vhost '{}': {why}", def.name, def.vhost));
        if def.name.is_empty() {
            return Err(AccessError::Invalid("a policy name cannot be empty".to_owned()));
        }
        let pattern = Pattern::compile("policy", &def.pattern).map_err(|e| invalid(format!("pattern should be regular expression but is invalid: {e}")))?;
        // As in RabbitMQ, keys for the other kind of entity are accepted and have no effect
        // there (a queue has no alternate exchange, an exchange no length limit).
        let settings = Settings::parse(&def.definition).map_err(invalid)?;
        Ok(Policy { def, settings, pattern })
    }

    /// Whether it applies to queue `name` of type `kind`.
    pub fn matches_queue(&self, name: &str, kind: QueueType) -> bool {
        let applies = match self.def.apply_to {
            ApplyTo::Queues | ApplyTo::All => true,
            ApplyTo::ClassicQueues => kind == QueueType::Classic,
            ApplyTo::QuorumQueues => kind == QueueType::Quorum,
            ApplyTo::Exchanges | ApplyTo::Streams => false,
        };
        applies && self.pattern.matches(name)
    }

    /// Whether it applies to exchange `name`.
    pub fn matches_exchange(&self, name: &str) -> bool {
        matches!(self.def.apply_to, ApplyTo::Exchanges | ApplyTo::All) && self.pattern.matches(name)
    }
}

/// The policy of highest priority among `policies` that `matches` (ties: the first in
/// name order, as RabbitMQ leaves them unordered).
pub fn choose(policies: &[std::sync::Arc<Policy>], matches: impl Fn(&Policy) -> bool) -> Option<&std::sync::Arc<Policy>> {
    policies.iter().filter(|p| matches(p)).fold(None, |best: Option<&std::sync::Arc<Policy>>, p| match best {
        Some(b) if b.def.priority >= p.def.priority => Some(b),
        _ => Some(p),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::queue::args::DeclareFlags;
    use amq_protocol::types::{AMQPValue, FieldTable};

    fn def(json: serde_json::Value) -> serde_json::Map<String, Value> {
        json.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn definitions_are_validated_with_rabbitmqs_words() {
        assert!(Settings::parse(&def(serde_json::json!({"message-ttl": 1000, "max-length": 5, "overflow": "reject-publish", "queue-mode": "lazy"}))).is_ok());
        for (bad, says) in [
            (serde_json::json!({}), "no policy provided"),
            (serde_json::json!({"message-ttl": "abc"}), "is not a valid message TTL"),
            (serde_json::json!({"max-length": -1}), "-1 is not a valid maximum length"),
            (serde_json::json!({"overflow": "bogus"}), "is not a valid overflow value"),
            (serde_json::json!({"alternate-exchange": 5}), "5 is not a valid alternate exchange name"),
            (serde_json::json!({"foo": 1}), "'foo' is not a recognised policy setting"),
            (serde_json::json!({"ha-mode": "all"}), "not supported by Warren"),
        ] {
            let err = Settings::parse(&def(bad.clone())).expect_err("refused");
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    fn queue(kind: &str, args: &[(&str, AMQPValue)]) -> (QueueArgs, FieldTable) {
        let mut t = FieldTable::default();
        t.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
        for (k, v) in args {
            t.insert((*k).into(), v.clone());
        }
        let flags = DeclareFlags { durable: true, exclusive: false, auto_delete: false, server_named: false };
        (QueueArgs::parse(&t, "q", "/", flags).expect("valid"), t)
    }

    #[test]
    fn arguments_and_policies_combine_as_in_rabbitmq() {
        let policy = Settings::parse(&def(serde_json::json!({
            "max-length": 3, "message-ttl": 500, "expires": 60000, "overflow": "reject-publish",
            "dead-letter-exchange": "pol-dlx", "dead-letter-routing-key": "pol-key", "delivery-limit": 4
        })))
        .expect("valid");
        let (args, t) = queue("classic", &[("x-max-length", AMQPValue::LongInt(5)), ("x-expires", AMQPValue::LongInt(1000)), ("x-overflow", AMQPValue::LongString("drop-head".into())), ("x-dead-letter-exchange", AMQPValue::LongString("arg-dlx".into()))]);
        let e = policy.apply(&args, &t);
        assert_eq!((e.max_length, e.message_ttl, e.expires, e.overflow), (Some(3), Some(500), Some(1000), Overflow::DropHead));
        assert_eq!(e.dead_letter, Some(DeadLetterTarget { exchange: "arg-dlx".into(), routing_key: Some("pol-key".into()) }));
        let (args, t) = queue("quorum", &[("x-max-length", AMQPValue::LongInt(2)), ("x-expires", AMQPValue::LongInt(1000)), ("x-overflow", AMQPValue::LongString("drop-head".into())), ("x-delivery-limit", AMQPValue::LongInt(9))]);
        let e = policy.apply(&args, &t);
        assert_eq!((e.max_length, e.expires, e.overflow, e.delivery_limit), (Some(2), Some(60000), Overflow::RejectPublish, Some(4)));
        assert_eq!(e.dead_letter.map(|d| d.exchange), Some("pol-dlx".into()));
    }

    #[test]
    fn the_highest_priority_matching_policy_applies_alone() {
        let make = |name: &str, pattern: &str, priority: i64, apply_to: ApplyTo| {
            std::sync::Arc::new(
                Policy::new(PolicyDef { vhost: "/".into(), name: name.into(), pattern: pattern.into(), apply_to, priority, definition: def(serde_json::json!({"max-length": priority})) })
                    .expect("valid"),
            )
        };
        let all = [make("lo", "^q", 1, ApplyTo::Queues), make("hi", "^q", 5, ApplyTo::Queues), make("quorum", "^q", 9, ApplyTo::QuorumQueues), make("x", "^q", 7, ApplyTo::Exchanges)];
        assert_eq!(choose(&all, |p| p.matches_queue("q1", QueueType::Classic)).map(|p| p.def.name.as_str()), Some("hi"));
        assert_eq!(choose(&all, |p| p.matches_queue("q1", QueueType::Quorum)).map(|p| p.def.name.as_str()), Some("quorum"));
        assert!(choose(&all, |p| p.matches_queue("other", QueueType::Classic)).is_none());
    }
}
