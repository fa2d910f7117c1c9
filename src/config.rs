//! Configuration: defaults, an optional TOML file, and command-line flags, in rising
//! precedence. The flags are the `warren --help` users see.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;
use serde::Deserialize;

/// RabbitMQ's upper bound on `max_message_size`: 512 MiB.
pub const MAX_MESSAGE_SIZE_LIMIT: u64 = 512 * 1024 * 1024;

/// Everything the broker can be configured with.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub bind: IpAddr,
    /// AMQP port.
    pub port: u16,
    /// Port of the Prometheus metrics endpoint; 0 turns it off.
    pub metrics_port: u16,
    /// Where durable data lives.
    pub data_dir: PathBuf,
    /// tracing filter, e.g. `info` or `warren=debug`.
    pub log_level: String,
    /// The one user's name.
    pub default_user: String,
    /// The one user's password.
    pub default_pass: String,
    /// The virtual host (RabbitMQ's default_vhost); the broker has this one.
    pub default_vhost: String,
    /// Let `guest` log in from other hosts (RabbitMQ's loopback_users = none).
    pub allow_remote_guest: bool,
    /// Highest channel number a connection may use.
    pub channel_max: u16,
    /// Largest frame, in octets.
    pub frame_max: u32,
    /// Heartbeat interval proposed to clients, in seconds (0: off).
    pub heartbeat: u16,
    /// Largest message body, in octets.
    pub max_message_size: u64,
    /// Most concurrent client connections.
    pub max_connections: usize,
    /// Seconds a client has to finish the handshake.
    pub handshake_timeout: u64,
    /// MiB of ready persistent messages a durable queue keeps in memory; the rest of a
    /// backlog stays in the store until delivered.
    pub queue_memory_mb: u64,
    /// MiB of sled page cache.
    pub store_cache_mb: u64,
    /// MiB of messages held in memory (over all queues) at which publishers are blocked;
    /// 0 means 40% of physical memory, as RabbitMQ's default watermark.
    pub memory_high_watermark_mb: u64,
    /// Milliseconds a delivery may stay unacknowledged before its channel is closed with
    /// 406 (RabbitMQ's `consumer_timeout`); 0 turns it off.
    pub consumer_timeout: u64,
    /// Seconds a write to a client may make no progress before the connection is closed
    /// (RabbitMQ's send_timeout).
    pub send_timeout: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: IpAddr::from([0, 0, 0, 0]),
            port: 5672,
            metrics_port: 15692,
            data_dir: PathBuf::from("./data"),
            log_level: "info".to_owned(),
            default_user: "guest".to_owned(),
            default_pass: "guest".to_owned(),
            default_vhost: "/".to_owned(),
            allow_remote_guest: false,
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
            max_message_size: 128 * 1024 * 1024,
            max_connections: 10_000,
            handshake_timeout: 10,
            queue_memory_mb: 16,
            store_cache_mb: 32,
            memory_high_watermark_mb: 0,
            consumer_timeout: 1_800_000,
            send_timeout: 15,
        }
    }
}

/// Warren: a small, fast AMQP 0-9-1 message broker that RabbitMQ clients use unchanged.
///
/// Settings come from defaults, then the file given with --config (TOML, the same names as
/// the flags with underscores: `port = 5673`, `data_dir = "/var/lib/warren"`), then the
/// environment, then flags. The user and vhost also come from the variables the rabbitmq
/// container image reads, so compose files written for it work unchanged:
/// WARREN_DEFAULT_USER / RABBITMQ_DEFAULT_USER, WARREN_DEFAULT_PASS / RABBITMQ_DEFAULT_PASS,
/// WARREN_DEFAULT_VHOST / RABBITMQ_DEFAULT_VHOST (the WARREN_ names win).
#[derive(Debug, Default, Parser)]
#[command(name = "warren", version, about, long_about)]
pub struct Cli {
    /// TOML file with settings (flags override it).
    #[arg(long, short = 'c', value_name = "FILE", env = "WARREN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 0.0.0.0].
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<IpAddr>,
    /// AMQP port [default: 5672].
    #[arg(long, short = 'p')]
    pub port: Option<u16>,
    /// Prometheus metrics port, 0 to disable [default: 15692].
    #[arg(long)]
    pub metrics_port: Option<u16>,
    /// Directory for durable data [default: ./data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log filter: error, warn, info, debug, trace, or per-module directives [default: info].
    #[arg(long, value_name = "FILTER", env = "WARREN_LOG")]
    pub log_level: Option<String>,
    /// Username of the one user [default: guest].
    #[arg(long)]
    pub default_user: Option<String>,
    /// Password of the one user [default: guest].
    #[arg(long)]
    pub default_pass: Option<String>,
    /// The virtual host clients open [default: /].
    #[arg(long)]
    pub default_vhost: Option<String>,
    /// Allow the guest user from non-loopback addresses.
    #[arg(long)]
    pub allow_remote_guest: bool,
    /// Highest channel number per connection [default: 2047].
    #[arg(long)]
    pub channel_max: Option<u16>,
    /// Largest frame in octets, at least 4096 [default: 131072].
    #[arg(long)]
    pub frame_max: Option<u32>,
    /// Heartbeat interval proposed to clients in seconds, 0 for none [default: 60].
    #[arg(long)]
    pub heartbeat: Option<u16>,
    /// Largest message body in octets [default: 134217728].
    #[arg(long)]
    pub max_message_size: Option<u64>,
    /// Most concurrent connections [default: 10000].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Seconds a client has to finish the AMQP handshake [default: 10].
    #[arg(long)]
    pub handshake_timeout: Option<u64>,
    /// MiB of ready persistent messages each durable queue keeps in memory; the rest of a
    /// backlog is read from disk when delivered [default: 16].
    #[arg(long, value_name = "MIB")]
    pub queue_memory_mb: Option<u64>,
    /// MiB of page cache for the embedded store (sled) [default: 32].
    #[arg(long, value_name = "MIB")]
    pub store_cache_mb: Option<u64>,
    /// MiB of messages in memory (all queues) at which connections that publish are
    /// blocked until consumers catch up, as RabbitMQ's memory alarm; 0 for 40% of RAM
    /// [default: 0].
    #[arg(long, value_name = "MIB")]
    pub memory_high_watermark_mb: Option<u64>,
    /// Milliseconds a delivery may stay unacknowledged before its channel is closed with
    /// 406 PRECONDITION_FAILED and its messages requeued (RabbitMQ's consumer_timeout; a
    /// queue's x-consumer-timeout overrides it); 0 for none [default: 1800000].
    #[arg(long, value_name = "MS")]
    pub consumer_timeout: Option<u64>,
    /// Seconds a write to a client may make no progress (the client stopped reading)
    /// before its connection is closed and everything it held is released, as RabbitMQ's
    /// send_timeout; at least 1 [default: 15].
    #[arg(long, value_name = "SECS")]
    pub send_timeout: Option<u64>,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl Cli {
    /// Builds the configuration: defaults, then the file, then the process environment,
    /// then the flags.
    pub fn load(self) -> Result<Config, ConfigError> {
        self.load_with_env(|name| std::env::var(name).ok())
    }

    /// [`Self::load`] with the environment given as a lookup (tests pass their own).
    pub fn load_with_env(mut self, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let from_env = |ours: &str, rabbitmq: &str| env(ours).or_else(|| env(rabbitmq)).filter(|v| !v.is_empty());
        self.default_user = self.default_user.or_else(|| from_env("WARREN_DEFAULT_USER", "RABBITMQ_DEFAULT_USER"));
        self.default_pass = self.default_pass.or_else(|| from_env("WARREN_DEFAULT_PASS", "RABBITMQ_DEFAULT_PASS"));
        self.default_vhost = self.default_vhost.or_else(|| from_env("WARREN_DEFAULT_VHOST", "RABBITMQ_DEFAULT_VHOST"));
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.clone(), source })?
            }
            None => Config::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { config.$field = v; } )* };
        }
        set!(bind, port, metrics_port, data_dir, log_level, default_user, default_pass, default_vhost, channel_max, frame_max, heartbeat, max_message_size, max_connections, handshake_timeout, queue_memory_mb, store_cache_mb, memory_high_watermark_mb, consumer_timeout, send_timeout);
        config.allow_remote_guest |= self.allow_remote_guest;
        if config.frame_max < warren_protocol::frame::FRAME_MIN_SIZE {
            return Err(ConfigError::Invalid(format!("frame_max {} is below the minimum 4096", config.frame_max)));
        }
        if config.max_message_size > MAX_MESSAGE_SIZE_LIMIT {
            return Err(ConfigError::Invalid(format!(
                "max_message_size {} is above RabbitMQ's maximum of {MAX_MESSAGE_SIZE_LIMIT} (512 MiB)",
                config.max_message_size
            )));
        }
        if config.send_timeout == 0 {
            return Err(ConfigError::Invalid("send_timeout must be at least 1 second".to_owned()));
        }
        if config.channel_max == 0 {
            return Err(ConfigError::Invalid("channel_max must be at least 1".to_owned()));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_and_defaults() {
        let dir = std::env::temp_dir().join(format!("warren-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let file = dir.join("warren.toml");
        std::fs::write(&file, "port = 6000\nheartbeat = 5\n").expect("write");
        let cli = Cli::parse_from(["warren", "--config", file.to_str().expect("utf8"), "--port", "7000"]);
        let c = cli.load().expect("valid");
        assert_eq!((c.port, c.heartbeat, c.channel_max), (7000, 5, 2047));
    }

    #[test]
    fn the_rabbitmq_image_variables_set_user_password_and_vhost() {
        let env = |vars: &'static [(&'static str, &'static str)]| move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned());
        let c = Cli::parse_from(["warren"])
            .load_with_env(env(&[("RABBITMQ_DEFAULT_USER", "app"), ("RABBITMQ_DEFAULT_PASS", "secret"), ("RABBITMQ_DEFAULT_VHOST", "orders")]))
            .expect("valid");
        assert_eq!((c.default_user.as_str(), c.default_pass.as_str(), c.default_vhost.as_str()), ("app", "secret", "orders"));
        // WARREN_ names win over RABBITMQ_ ones, flags over both.
        let c = Cli::parse_from(["warren", "--default-pass", "flag"])
            .load_with_env(env(&[("RABBITMQ_DEFAULT_USER", "app"), ("WARREN_DEFAULT_USER", "ours"), ("RABBITMQ_DEFAULT_PASS", "secret")]))
            .expect("valid");
        assert_eq!((c.default_user.as_str(), c.default_pass.as_str(), c.default_vhost.as_str()), ("ours", "flag", "/"));
    }

    #[test]
    fn bad_values_are_reported() {
        assert!(Cli::parse_from(["warren", "--frame-max", "100"]).load().is_err());
        assert!(Cli::parse_from(["warren", "--max-message-size", "536870913"]).load().is_err());
        assert!(Cli::parse_from(["warren", "--max-message-size", "536870912"]).load().is_ok());
        assert!(Cli::parse_from(["warren", "--send-timeout", "0"]).load().is_err());
        let dir = std::env::temp_dir().join(format!("warren-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let file = dir.join("bad.toml");
        std::fs::write(&file, "prot = 1\n").expect("write");
        let err = Cli::parse_from(["warren", "--config", file.to_str().expect("utf8")]).load().expect_err("unknown key");
        assert!(err.to_string().contains("invalid config file"));
    }
}
