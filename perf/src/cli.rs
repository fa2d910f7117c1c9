//! Command line options and their validation.

use clap::{ArgAction, CommandFactory, Parser, ValueEnum};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// Smallest body: 8 bytes of send timestamp + 4 bytes of producer id.
pub const MIN_SIZE: u32 = 12;

const LONG_ABOUT: &str = "\
Load generator for AMQP 0-9-1 brokers (Warren, RabbitMQ, LavinMQ, ...), in the spirit of \
RabbitMQ's PerfTest and lavinmqperf.

Producers publish messages whose body starts with the send time (u64 nanoseconds since the \
Unix epoch, little endian, followed by the u32 producer number; the rest is zeros); \
consumers read it back to compute end-to-end latency (also across processes on one host). Once a second a line shows the sent, confirmed and received \
rates and the latency median of that second; at the end a summary gives totals, average \
rates and latency percentiles (and, with --json, one JSON line with stable keys).

The run ends when --time elapses, or when producers have published --pmessages each and \
consumers have received what was expected (or nothing more arrived for --drain-timeout \
seconds), or on Ctrl-C.

Client capacity: lapin (the AMQP client used) runs one I/O thread per connection, and every \
producer and consumer gets its own connection by default; with 16-byte messages one \
connection handles roughly 150k deliveries/s or 300k+ publishes/s per core. To load a faster \
broker, add producers/consumers (on the same queues) rather than channels per connection.

Exit codes: 0 success, 1 runtime error (connection refused, channel closed, ...), \
2 invalid options.";

const AFTER_HELP: &str = "\
Examples:
  # max throughput, 1 producer -> 1 queue -> 1 consumer, 15 s
  warren-perf --time 15 --size 16 --auto-ack
  # confirms (1000 in flight) and manual acks (prefetch 100)
  warren-perf --time 15 --confirm 1000 --prefetch 100
  # fanout to 10 queues with one consumer each
  warren-perf --time 15 --exchange perf-fanout --exchange-type fanout --queues 10 --consumers 10 --auto-ack
  # topic: 4 queues x 250 bindings, random routing keys matching one binding per queue
  warren-perf --time 15 --exchange perf-topic --exchange-type topic --queues 4 --consumers 4 --auto-ack \\
      --bindings 250 --binding-pattern 'perf.%d.#' --routing-key-pattern 'perf.%d.x' --routing-key-count 250
  # fixed rate latency test
  warren-perf --time 30 --rate 10000 --size 1024 --auto-ack
  # 1000 idle connections held for 20 s, reporting the broker's RSS
  warren-perf --producers 0 --consumers 0 --idle-connections 1000 --time 20 --broker-pid 1234 --json
  # backlog: publish 1M messages without consumers, then drain them
  warren-perf --consumers 0 --pmessages 1000000 --confirm 1000 --queue backlog
  warren-perf --producers 0 --cmessages 1000000 --auto-ack --queue backlog";

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExchangeType {
    Direct,
    Fanout,
    Topic,
    Headers,
}

impl ExchangeType {
    pub fn lapin(self) -> lapin::ExchangeKind {
        match self {
            ExchangeType::Direct => lapin::ExchangeKind::Direct,
            ExchangeType::Fanout => lapin::ExchangeKind::Fanout,
            ExchangeType::Topic => lapin::ExchangeKind::Topic,
            ExchangeType::Headers => lapin::ExchangeKind::Headers,
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum KeyOrder {
    /// Pick a key uniformly at random for each message.
    Random,
    /// Cycle through the keys in order.
    RoundRobin,
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "warren-perf",
    version,
    about = "Load generator for AMQP 0-9-1 brokers (throughput, latency, connections, memory)",
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// AMQP URI of the broker (vhost "/" is written %2f).
    #[arg(
        long,
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        help_heading = "Connection"
    )]
    pub uri: String,

    /// Number of producers (each on its own channel).
    #[arg(short = 'x', long, default_value_t = 1, help_heading = "Workers")]
    pub producers: u32,

    /// Number of consumers (each on its own channel).
    #[arg(short = 'y', long, default_value_t = 1, help_heading = "Workers")]
    pub consumers: u32,

    /// Give up on a connection (TCP connect + AMQP handshake) after this many seconds.
    #[arg(
        long,
        default_value_t = 30.0,
        value_name = "SECONDS",
        help_heading = "Connection"
    )]
    pub connect_timeout: f64,

    /// Spread producers and consumers over exactly this many connections (round-robin).
    /// Default: one connection per producer/consumer.
    #[arg(long, conflicts_with = "channels_per_connection", value_parser = clap::value_parser!(u32).range(1..), help_heading = "Connection")]
    pub connections: Option<u32>,

    /// Put up to this many producer/consumer channels on each connection
    /// (producers first, then consumers). Default: 1.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Connection")]
    pub channels_per_connection: Option<u32>,

    /// Also open this many extra connections with one channel each and hold them idle
    /// for the whole run (to measure the broker's memory per connection).
    #[arg(long, default_value_t = 0, help_heading = "Connection")]
    pub idle_connections: u32,

    /// Message body size in bytes (at least 12: send timestamp + producer number).
    #[arg(short = 's', long, default_value_t = MIN_SIZE, value_parser = clap::value_parser!(u32).range(MIN_SIZE as i64..=(256 << 20)), help_heading = "Messages")]
    pub size: u32,

    /// Publish persistent messages (delivery-mode 2).
    #[arg(long, help_heading = "Messages")]
    pub persistent: bool,

    /// Publish rate per producer in msgs/s (fixed schedule); 0 = as fast as possible.
    #[arg(short = 'r', long, default_value_t = 0.0, help_heading = "Messages")]
    pub rate: f64,

    /// Publisher confirms with at most WINDOW unconfirmed messages per producer.
    #[arg(short = 'c', long, value_name = "WINDOW", value_parser = clap::value_parser!(u32).range(1..), help_heading = "Messages")]
    pub confirm: Option<u32>,

    /// Queue name (a single queue). Default: "warren-perf" (or the pattern "warren-perf-%d"
    /// when --queues > 1).
    #[arg(
        short = 'u',
        long,
        conflicts_with = "queue_pattern",
        help_heading = "Topology"
    )]
    pub queue: Option<String>,

    /// Queue name pattern; "%d" is replaced by 1..=--queues. Producer i publishes to
    /// queue i mod N and consumer j consumes from queue j mod N.
    #[arg(long, help_heading = "Topology")]
    pub queue_pattern: Option<String>,

    /// Number of queues (see --queue-pattern).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Topology")]
    pub queues: u32,

    /// Declare queues durable (and the exchange, if any).
    #[arg(long, help_heading = "Topology")]
    pub durable: bool,

    /// Declare queues auto-delete (deleted when their last consumer goes away), and the
    /// exchange too (deleted when its last binding goes).
    #[arg(long, default_value_t = true, action = ArgAction::Set, value_name = "BOOL", help_heading = "Topology")]
    pub auto_delete: bool,

    /// Extra queue.declare arguments, KEY=VALUE (integers are sent as numbers),
    /// e.g. x-queue-type=quorum,x-max-length=100000.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "KEY=VALUE",
        help_heading = "Topology"
    )]
    pub queue_args: Vec<String>,

    /// Publish with message priorities 0..=N, chosen at random per message (for a priority
    /// queue, e.g. with --queue-args x-max-priority=N).
    #[arg(long, default_value_t = 0, help_heading = "Messages")]
    pub priorities: u8,

    /// RPC over direct reply-to: consumers are servers that answer each request from the
    /// queue by publishing its body to its reply_to; producers are clients that send one
    /// request at a time with reply_to amq.rabbitmq.reply-to and time the round trip
    /// (latency figures are round trips; the send rate is requests per second).
    #[arg(long, help_heading = "Topology")]
    pub rpc: bool,

    /// Extra consumers (prefetch 1, manual ack) that take one message each and never ack:
    /// they sit full, blocked by their prefetch, beside the measured consumers.
    #[arg(long, default_value_t = 0, help_heading = "Consumers")]
    pub stuck_consumers: u32,

    /// Consumers consume from this queue (declared without --queue-args) instead of the
    /// queues producers publish to: e.g. a dead-letter queue fed by the others.
    #[arg(long, help_heading = "Topology")]
    pub consume_queue: Option<String>,

    /// Exchange to publish to. Default: the default exchange "" (routing key = queue name).
    #[arg(short = 'e', long, help_heading = "Topology")]
    pub exchange: Option<String>,

    /// Type of --exchange. Default: direct.
    #[arg(
        short = 't',
        long,
        value_enum,
        requires = "exchange",
        help_heading = "Topology"
    )]
    pub exchange_type: Option<ExchangeType>,

    /// Routing key for every message (default: the producer's queue name). Without
    /// --bindings, queues are bound with it.
    #[arg(short = 'k', long, conflicts_with_all = ["routing_keys", "routing_key_pattern"], help_heading = "Topology")]
    pub routing_key: Option<String>,

    /// Several routing keys (comma separated), chosen per message (see --routing-key-order).
    /// Without --bindings, every queue is bound with every key.
    #[arg(
        long,
        value_delimiter = ',',
        conflicts_with = "routing_key_pattern",
        help_heading = "Topology"
    )]
    pub routing_keys: Vec<String>,

    /// Routing key pattern; "%d" is replaced by 0..--routing-key-count to make the key set.
    #[arg(long, requires = "routing_key_count", help_heading = "Topology")]
    pub routing_key_pattern: Option<String>,

    /// Number of keys generated from --routing-key-pattern.
    #[arg(long, requires = "routing_key_pattern", value_parser = clap::value_parser!(u32).range(1..), help_heading = "Topology")]
    pub routing_key_count: Option<u32>,

    /// How producers choose among several routing keys.
    #[arg(long, value_enum, default_value = "random", help_heading = "Topology")]
    pub routing_key_order: KeyOrder,

    /// Bind each queue this many times, with keys from --binding-pattern.
    #[arg(
        long,
        default_value_t = 0,
        requires = "binding_pattern",
        help_heading = "Topology"
    )]
    pub bindings: u32,

    /// Binding key pattern: "%d" = binding number (0..--bindings), "%q" = queue number
    /// (1..=--queues). For headers exchanges the key is matched against header "rk".
    #[arg(long, requires = "bindings", help_heading = "Topology")]
    pub binding_pattern: Option<String>,

    /// Don't declare anything (exchange, queues, bindings must already exist).
    #[arg(long, help_heading = "Topology")]
    pub predeclared: bool,

    /// Consume with no-ack (automatic acknowledgement).
    #[arg(short = 'a', long, help_heading = "Consumers")]
    pub auto_ack: bool,

    /// Manual-ack consumers: basic.qos prefetch count (0 = unlimited). Default: 0.
    #[arg(
        short = 'q',
        long,
        conflicts_with = "auto_ack",
        help_heading = "Consumers"
    )]
    pub prefetch: Option<u16>,

    /// Manual-ack consumers: ack with multiple=true once every N messages
    /// (must be <= --prefetch). Default: ack each message.
    #[arg(long, conflicts_with = "auto_ack", value_parser = clap::value_parser!(u32).range(1..), help_heading = "Consumers")]
    pub multi_ack_every: Option<u32>,

    /// Run for this many seconds (default: until done or Ctrl-C).
    #[arg(short = 'z', long, value_name = "SECONDS", help_heading = "Duration")]
    pub time: Option<f64>,

    /// Messages to publish per producer.
    #[arg(short = 'C', long, help_heading = "Duration")]
    pub pmessages: Option<u64>,

    /// Messages to receive per consumer before it stops.
    #[arg(short = 'D', long, help_heading = "Duration")]
    pub cmessages: Option<u64>,

    /// When producers are done (or there are none), stop after this many seconds
    /// without any delivery; also the longest wait for outstanding confirms.
    #[arg(
        long,
        default_value_t = 2.0,
        value_name = "SECONDS",
        help_heading = "Duration"
    )]
    pub drain_timeout: f64,

    /// Print a final JSON line with the results (stable keys).
    #[arg(long, help_heading = "Output")]
    pub json: bool,

    /// Don't print the per-second lines.
    #[arg(long, help_heading = "Output")]
    pub quiet: bool,

    /// PID of the broker (same machine): its VmRSS/VmHWM from /proc are sampled and reported.
    #[arg(long, help_heading = "Output")]
    pub broker_pid: Option<u32>,

    /// Tokio worker threads. Default: number of CPUs.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Tuning")]
    pub threads: Option<u32>,

    /// Without confirms: max publishes a producer hands to the client library before
    /// waiting for them to be written to the socket.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(64..), help_heading = "Tuning")]
    pub write_window: u32,
}

/// Where a worker's messages go / come from.
#[derive(Debug, Clone)]
pub struct Config {
    pub cli: Cli,
    pub queues: Vec<String>,
    pub exchange: String,
    pub exchange_type: ExchangeType,
    /// Explicit routing keys (empty: each producer uses its queue name).
    pub routing_keys: Vec<String>,
    /// Bindings per queue index: keys.
    pub bindings: Vec<Vec<String>>,
    pub queue_args: FieldTable,
    /// Total deliveries expected per message published, when it can be known.
    pub fanout_factor: Option<u64>,
}

/// Print a clap-style usage error and exit with status 2.
pub fn usage_error(msg: impl std::fmt::Display) -> ! {
    Cli::command()
        .error(clap::error::ErrorKind::ArgumentConflict, msg)
        .exit()
}

fn expand(pattern: &str, d: u64, q: u64) -> String {
    pattern
        .replace("%d", &d.to_string())
        .replace("%q", &q.to_string())
}

fn parse_queue_arg(kv: &str) -> Result<(ShortString, AMQPValue), String> {
    let (k, v) = kv
        .split_once('=')
        .ok_or_else(|| format!("--queue-args: expected KEY=VALUE, got {kv:?}"))?;
    if k.is_empty() {
        return Err(format!("--queue-args: empty key in {kv:?}"));
    }
    let value = if let Ok(n) = v.parse::<i64>() {
        AMQPValue::LongLongInt(n)
    } else if v == "true" || v == "false" {
        AMQPValue::Boolean(v == "true")
    } else {
        AMQPValue::LongString(LongString::from(v))
    };
    Ok((ShortString::from(k), value))
}

impl Cli {
    /// Check option combinations that clap cannot express; on error exit with status 2.
    pub fn validate(self) -> Config {
        match self.check() {
            Ok(cfg) => cfg,
            Err(msg) => usage_error(msg),
        }
    }

    fn check(self) -> Result<Config, String> {
        if self.producers == 0 && self.consumers == 0 && self.idle_connections == 0 {
            return Err(
                "nothing to do: --producers, --consumers and --idle-connections are all 0".into(),
            );
        }
        if !(self.rate.is_finite() && self.rate >= 0.0) {
            return Err(format!("--rate must be a number >= 0, got {}", self.rate));
        }
        if let Some(t) = self.time {
            if !(t.is_finite() && t > 0.0) {
                return Err(format!("--time must be > 0 seconds, got {t}"));
            }
        }
        if !(self.connect_timeout.is_finite() && self.connect_timeout > 0.0) {
            return Err("--connect-timeout must be > 0".into());
        }
        if !(self.drain_timeout.is_finite() && self.drain_timeout >= 0.0) {
            return Err("--drain-timeout must be >= 0".into());
        }
        if self.pmessages == Some(0) {
            return Err("--pmessages must be >= 1".into());
        }
        if self.cmessages == Some(0) {
            return Err("--cmessages must be >= 1".into());
        }
        if self.pmessages.is_some() && self.producers == 0 {
            return Err("--pmessages needs at least one producer".into());
        }
        if self.cmessages.is_some() && self.consumers == 0 {
            return Err("--cmessages needs at least one consumer".into());
        }
        if self.producers == 0 && (self.confirm.is_some() || self.rate > 0.0 || self.persistent) {
            return Err("--confirm/--rate/--persistent need at least one producer".into());
        }
        if self.consumers == 0
            && (self.auto_ack || self.prefetch.is_some() || self.multi_ack_every.is_some())
        {
            return Err(
                "--auto-ack/--prefetch/--multi-ack-every need at least one consumer".into(),
            );
        }
        if let (Some(n), Some(p)) = (self.multi_ack_every, self.prefetch) {
            if p > 0 && n > u32::from(p) {
                return Err(format!(
                    "--multi-ack-every {n} is larger than --prefetch {p}: consumers would stall"
                ));
            }
        }
        if let Some(c) = self.connections {
            if c > self.producers + self.consumers {
                return Err(format!(
                    "--connections {c} is more than producers + consumers ({}); use --idle-connections for extra connections",
                    self.producers + self.consumers
                ));
            }
        }

        // Queues.
        let queues: Vec<String> = match (&self.queue, &self.queue_pattern) {
            (Some(_), _) if self.queues > 1 => {
                return Err("--queue names one queue; use --queue-pattern with --queues N".into())
            }
            (Some(q), _) => vec![q.clone()],
            (None, Some(p)) => {
                if !p.contains("%d") {
                    return Err(format!("--queue-pattern {p:?} must contain %d"));
                }
                (1..=u64::from(self.queues))
                    .map(|i| expand(p, i, i))
                    .collect()
            }
            (None, None) if self.queues > 1 => (1..=u64::from(self.queues))
                .map(|i| format!("warren-perf-{i}"))
                .collect(),
            (None, None) => vec!["warren-perf".to_string()],
        };
        for q in &queues {
            if q.len() > 255 {
                return Err(format!("queue name too long: {q:?}"));
            }
        }

        // Exchange.
        let exchange = self.exchange.clone().unwrap_or_default();
        if exchange.is_empty() && self.exchange_type.is_some() {
            return Err(
                "--exchange-type needs a named --exchange (the default exchange is direct)".into(),
            );
        }
        let exchange_type = self.exchange_type.unwrap_or(ExchangeType::Direct);

        // Routing keys.
        let routing_keys: Vec<String> = if let Some(k) = &self.routing_key {
            vec![k.clone()]
        } else if !self.routing_keys.is_empty() {
            self.routing_keys.clone()
        } else if let (Some(p), Some(n)) = (&self.routing_key_pattern, self.routing_key_count) {
            if !p.contains("%d") {
                return Err(format!("--routing-key-pattern {p:?} must contain %d"));
            }
            (0..u64::from(n)).map(|i| expand(p, i, i)).collect()
        } else {
            Vec::new()
        };
        for k in &routing_keys {
            if k.len() > 255 {
                return Err(format!("routing key too long: {k:?}"));
            }
        }

        // Bindings.
        if self.bindings > 0 {
            if exchange.is_empty() {
                return Err("--bindings needs a named --exchange (queues cannot be bound to the default exchange)".into());
            }
            if exchange_type == ExchangeType::Fanout {
                return Err(
                    "--bindings makes no sense with a fanout exchange (the key is ignored)".into(),
                );
            }
            if self.predeclared {
                return Err(
                    "--bindings conflicts with --predeclared (bindings are declarations)".into(),
                );
            }
        }
        let bindings: Vec<Vec<String>> = if exchange.is_empty() || self.predeclared {
            vec![Vec::new(); queues.len()]
        } else if self.bindings > 0 {
            let p = self.binding_pattern.as_deref().unwrap_or_default();
            (0..queues.len())
                .map(|qi| {
                    (0..u64::from(self.bindings))
                        .map(|b| expand(p, b, qi as u64 + 1))
                        .collect()
                })
                .collect()
        } else if exchange_type == ExchangeType::Fanout {
            vec![vec![String::new()]; queues.len()]
        } else if routing_keys.is_empty() {
            queues.iter().map(|q| vec![q.clone()]).collect()
        } else {
            vec![routing_keys.clone(); queues.len()]
        };

        let mut queue_args = FieldTable::default();
        for kv in &self.queue_args {
            let (k, v) = parse_queue_arg(kv)?;
            queue_args.insert(k, v);
        }
        if self.predeclared && !self.queue_args.is_empty() {
            return Err("--queue-args conflicts with --predeclared".into());
        }

        // How many deliveries one publish produces, when it is knowable; otherwise the
        // run ends on --drain-timeout of silence.
        let every_queue_consumed = self.consumers as usize >= queues.len();
        let fanout_factor =
            if !every_queue_consumed || !routing_keys.is_empty() || self.bindings > 0 {
                None
            } else if exchange.is_empty() {
                Some(1)
            } else if self.predeclared {
                None
            } else if exchange_type == ExchangeType::Fanout {
                Some(queues.len() as u64)
            } else {
                Some(1)
            };

        Ok(Config {
            queues,
            exchange,
            exchange_type,
            routing_keys,
            bindings,
            queue_args,
            fanout_factor,
            cli: self,
        })
    }
}
