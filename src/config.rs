//! Configuration: defaults, an optional TOML file, and command-line flags, in rising
//! precedence. The flags are the `warren --help` users see. Checks that span settings
//! (a TLS key without a certificate, no listener at all) are made here; the TLS files
//! themselves are read by [`crate::tls`] when the server binds.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
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
    /// Management HTTP API and web UI port; 0 disables it.
    pub management_port: u16,
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
    /// Fraction of physical memory the process may hold resident before publishers are
    /// blocked (RabbitMQ's relative `vm_memory_high_watermark`, 0.6 in 3.13); 0 turns the
    /// check off.
    pub vm_memory_high_watermark: f64,
    /// MB (10^6 octets) of free disk space below which publishers are blocked (RabbitMQ's
    /// `disk_free_limit`, 50 MB by default).
    pub disk_free_limit_mb: u64,
    /// Milliseconds a delivery may stay unacknowledged before its channel is closed with
    /// 406 (RabbitMQ's `consumer_timeout`); 0 turns it off.
    pub consumer_timeout: u64,
    /// Seconds a write to a client may make no progress before the connection is closed
    /// (RabbitMQ's send_timeout).
    pub send_timeout: u64,
    /// Do not listen for plain AMQP (`port`): TLS only.
    pub no_plain: bool,
    /// AMQPS port, used when `tls_cert` and `tls_key` are set.
    pub tls_port: u16,
    /// PEM file with the server certificate, then its chain. TLS is on when this and
    /// `tls_key` are set.
    pub tls_cert: Option<PathBuf>,
    /// PEM file with the server certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<PathBuf>,
    /// PEM bundle of the CAs that client certificates are verified against; without it
    /// clients are not asked for a certificate.
    pub tls_client_ca: Option<PathBuf>,
    /// Refuse, at the TLS handshake, clients without a certificate `tls_client_ca` verifies.
    pub tls_require_client_cert: bool,
    /// Which part of a client certificate's subject is the user name for EXTERNAL.
    pub tls_cert_login_from: CertLoginFrom,
    /// A RabbitMQ definitions file (users, vhosts, permissions, topology) imported at
    /// every boot (RabbitMQ's `load_definitions`).
    pub definitions: Option<PathBuf>,
    /// Keep everything in memory: the store lives in a temporary, memory-backed place
    /// (/dev/shm where it exists) and is gone when the broker stops; no data directory.
    pub ephemeral: bool,
    /// Bind the management and metrics listeners to free ports too (set by `--port 0`
    /// when their ports are not given), so several brokers run side by side.
    pub free_ports: bool,
    /// The RabbitMQ version whose behaviour Warren follows where 3.13 and 4.x differ.
    pub compat: Compat,
}

/// A compatibility profile: the RabbitMQ version whose AMQP 0-9-1 behaviour Warren
/// follows where RabbitMQ 3.13 and 4.x differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ValueEnum)]
pub enum Compat {
    /// RabbitMQ 3.13.
    #[default]
    #[value(name = "rabbitmq-3.13")]
    #[serde(rename = "rabbitmq-3.13")]
    RabbitMq313,
    /// RabbitMQ 4.x with its deprecated features denied: basic.qos global=true acts per
    /// consumer; x-queue-mode and transient non-exclusive queues are refused; quorum
    /// queues have a delivery limit of 20 by default, and a consumer that times out on
    /// one is cancelled instead of its channel closed.
    #[value(name = "rabbitmq-4")]
    #[serde(rename = "rabbitmq-4")]
    RabbitMq4,
}

/// The user name a client certificate gives for the EXTERNAL mechanism (RabbitMQ's
/// `ssl_cert_login_from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum CertLoginFrom {
    /// The subject's CN (several CNs are joined with commas, as RabbitMQ does).
    #[default]
    #[value(name = "common_name", alias = "common-name")]
    CommonName,
    /// The whole subject as an RFC 4514 string, most specific part first
    /// (`CN=guest,O=client,C=SE`), as RabbitMQ formats it.
    #[value(name = "distinguished_name", alias = "distinguished-name")]
    DistinguishedName,
}

impl Config {
    /// True when a certificate and key are configured, so the TLS port is served.
    pub fn tls_enabled(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }

    /// Checks values and the settings that depend on each other; [`Cli::load`] and
    /// [`crate::Server::bind`] call it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.frame_max < warren_protocol::frame::FRAME_MIN_SIZE {
            return Err(ConfigError::Invalid(format!("frame_max {} is below the minimum 4096", self.frame_max)));
        }
        if self.channel_max == 0 {
            return Err(ConfigError::Invalid("channel_max must be at least 1".to_owned()));
        }
        if self.max_message_size > MAX_MESSAGE_SIZE_LIMIT {
            return Err(ConfigError::Invalid(format!(
                "max_message_size {} is above RabbitMQ's maximum of {MAX_MESSAGE_SIZE_LIMIT} (512 MiB)",
                self.max_message_size
            )));
        }
        if !(0.0..=1.0).contains(&self.vm_memory_high_watermark) {
            return Err(ConfigError::Invalid(format!("vm_memory_high_watermark {} must be a fraction of physical memory between 0 and 1", self.vm_memory_high_watermark)));
        }
        if self.send_timeout == 0 {
            return Err(ConfigError::Invalid("send_timeout must be at least 1 second".to_owned()));
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return Err(ConfigError::Invalid("tls_cert is set but tls_key is not".to_owned())),
            (None, Some(_)) => return Err(ConfigError::Invalid("tls_key is set but tls_cert is not".to_owned())),
            _ => {}
        }
        if !self.tls_enabled() && (self.tls_client_ca.is_some() || self.tls_require_client_cert) {
            return Err(ConfigError::Invalid("tls_client_ca and tls_require_client_cert need tls_cert and tls_key".to_owned()));
        }
        if self.tls_require_client_cert && self.tls_client_ca.is_none() {
            return Err(ConfigError::Invalid("tls_require_client_cert needs tls_client_ca to verify client certificates with".to_owned()));
        }
        if self.no_plain && !self.tls_enabled() {
            return Err(ConfigError::Invalid("no_plain leaves no listener: set tls_cert and tls_key too".to_owned()));
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: IpAddr::from([0, 0, 0, 0]),
            port: 5672,
            metrics_port: 15692,
            management_port: 15672,
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
            vm_memory_high_watermark: 0.6,
            consumer_timeout: 1_800_000,
            send_timeout: 15,
            no_plain: false,
            tls_port: 5671,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_require_client_cert: false,
            tls_cert_login_from: CertLoginFrom::CommonName,
            definitions: None,
            ephemeral: false,
            free_ports: false,
            disk_free_limit_mb: 50,
            compat: Compat::RabbitMq313,
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
/// What the binary does besides running a broker.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Manage a running broker through its management API, with rabbitmqctl's verbs
    /// (list_queues, add_user, set_permissions, export_definitions, ...).
    Ctl(crate::ctl::CtlArgs),
}

#[derive(Debug, Default, Parser)]
#[command(name = "warren", version, about, long_about)]
pub struct Cli {
    /// Instead of running a broker: `warren ctl <verb>` manages a running one.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// TOML file with settings (flags override it).
    #[arg(long, short = 'c', value_name = "FILE", env = "WARREN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 0.0.0.0].
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<IpAddr>,
    /// AMQP port, 0 for any free one; --no-plain turns plain AMQP off [default: 5672].
    #[arg(long, short = 'p')]
    pub port: Option<u16>,
    /// Prometheus metrics port, 0 to disable [default: 15692].
    #[arg(long)]
    pub metrics_port: Option<u16>,
    /// Management HTTP API and web UI port (RabbitMQ's API: rabbitmqadmin and `warren ctl`
    /// use it), 0 to disable [default: 15672].
    #[arg(long)]
    pub management_port: Option<u16>,
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
    /// Fraction of physical memory the broker process may hold resident (RSS) before
    /// connections that publish are blocked, as RabbitMQ's vm_memory_high_watermark;
    /// 0 disables this check [default: 0.6].
    #[arg(long, value_name = "FRACTION")]
    pub vm_memory_high_watermark: Option<f64>,
    /// MB of free disk space (on the data directory's filesystem) below which connections
    /// that publish are blocked, as RabbitMQ's disk_free_limit [default: 50].
    #[arg(long, value_name = "MB")]
    pub disk_free_limit_mb: Option<u64>,
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
    /// Do not listen for plain AMQP on --port: serve only TLS (needs --tls-cert and
    /// --tls-key).
    #[arg(long)]
    pub no_plain: bool,
    /// AMQPS (AMQP over TLS) port, served when --tls-cert and --tls-key are given
    /// [default: 5671].
    #[arg(long)]
    pub tls_port: Option<u16>,
    /// PEM file with the server certificate (then any intermediates); with --tls-key turns
    /// TLS on. Reloaded, with the key and client CAs, on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM file with the private key of --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// PEM bundle of CAs to verify client certificates with; clients that present one must
    /// pass, and may then log in with the EXTERNAL mechanism.
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// Refuse clients without a valid certificate at the TLS handshake (needs
    /// --tls-client-ca).
    #[arg(long)]
    pub tls_require_client_cert: bool,
    /// The user name EXTERNAL takes from a client certificate: the subject's CN, or the
    /// whole subject DN as RabbitMQ formats it ("CN=app,O=example") [default: common_name].
    #[arg(long, value_enum, value_name = "FROM")]
    pub tls_cert_login_from: Option<CertLoginFrom>,
    /// A RabbitMQ definitions file (JSON, as `rabbitmqctl export_definitions` writes it) to
    /// import at boot: users, vhosts, permissions, limits, exchanges, queues, bindings. A
    /// file that does not parse or does not fit is an error and nothing of it is applied.
    /// On a first boot with definitions, no default user or vhost is created.
    #[arg(long, value_name = "FILE", env = "WARREN_DEFINITIONS")]
    pub definitions: Option<PathBuf>,
    /// Keep everything in memory (durable entities too) and leave nothing behind: for tests.
    /// With --port 0 every listener takes a free port, and one JSON line on stdout gives
    /// the URLs.
    #[arg(long, env = "WARREN_EPHEMERAL")]
    pub ephemeral: bool,
    /// Stop (gracefully) when stdin is closed: a test fixture's broker ends with its parent.
    #[arg(long)]
    pub exit_on_stdin_close: bool,
    /// Behave as this RabbitMQ version where 3.13 and 4.x differ: rabbitmq-4 treats
    /// basic.qos global=true as per consumer, refuses x-queue-mode and non-durable
    /// non-exclusive queues, gives quorum queues a delivery limit of 20, and cancels a
    /// quorum queue consumer that times out instead of closing its channel
    /// [default: rabbitmq-3.13].
    #[arg(long, value_enum, value_name = "PROFILE", env = "WARREN_COMPAT")]
    pub compat: Option<Compat>,
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
        set!(bind, port, metrics_port, management_port, data_dir, log_level, default_user, default_pass, default_vhost, channel_max, frame_max, heartbeat, max_message_size, max_connections, handshake_timeout, queue_memory_mb, store_cache_mb, memory_high_watermark_mb, vm_memory_high_watermark, disk_free_limit_mb, consumer_timeout, send_timeout, tls_port, tls_cert_login_from, compat);
        macro_rules! set_some {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { config.$field = Some(v); } )* };
        }
        set_some!(tls_cert, tls_key, tls_client_ca, definitions);
        config.allow_remote_guest |= self.allow_remote_guest;
        config.no_plain |= self.no_plain;
        config.ephemeral |= self.ephemeral;
        // A throw-away test broker listens on loopback unless told otherwise.
        if self.ephemeral && self.bind.is_none() {
            config.bind = IpAddr::from([127, 0, 0, 1]);
        }
        // `--port 0`: the listeners whose ports were not given take free ports too.
        config.free_ports |= self.port == Some(0) && self.management_port.is_none() && self.metrics_port.is_none();
        config.tls_require_client_cert |= self.tls_require_client_cert;
        config.validate()?;
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

    #[test]
    fn tls_settings_from_file_and_flags() {
        let dir = std::env::temp_dir().join(format!("warren-config-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let file = dir.join("tls.toml");
        std::fs::write(&file, "tls_cert = \"/etc/warren/cert.pem\"\ntls_key = \"/etc/warren/key.pem\"\ntls_cert_login_from = \"distinguished_name\"\n").expect("write");
        let c = Cli::parse_from(["warren", "--config", file.to_str().expect("utf8"), "--no-plain", "--tls-port", "6671"]).load().expect("valid");
        assert!(c.tls_enabled() && c.no_plain);
        assert_eq!((c.tls_port, c.tls_cert_login_from), (6671, CertLoginFrom::DistinguishedName));
        let c = Cli::parse_from(["warren", "--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-cert-login-from", "common_name"]).load().expect("valid");
        assert_eq!((c.tls_port, c.tls_cert_login_from, c.no_plain), (5671, CertLoginFrom::CommonName, false));
    }

    #[test]
    fn the_compatibility_profile_comes_from_file_environment_or_flag() {
        assert_eq!(Cli::parse_from(["warren"]).load().expect("valid").compat, Compat::RabbitMq313);
        let dir = std::env::temp_dir().join(format!("warren-config-compat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let file = dir.join("compat.toml");
        std::fs::write(&file, "compat = \"rabbitmq-4\"\n").expect("write");
        let c = Cli::parse_from(["warren", "--config", file.to_str().expect("utf8")]).load().expect("valid");
        assert_eq!(c.compat, Compat::RabbitMq4);
        let c = Cli::parse_from(["warren", "--config", file.to_str().expect("utf8"), "--compat", "rabbitmq-3.13"]).load().expect("valid");
        assert_eq!(c.compat, Compat::RabbitMq313);
        assert!(Cli::try_parse_from(["warren", "--compat", "rabbitmq-5"]).is_err());
    }

    #[test]
    fn inconsistent_tls_settings_are_reported() {
        for args in [
            &["warren", "--tls-cert", "c.pem"][..],
            &["warren", "--tls-key", "k.pem"],
            &["warren", "--tls-client-ca", "ca.pem"],
            &["warren", "--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-require-client-cert"],
            &["warren", "--no-plain"],
        ] {
            let err = Cli::parse_from(args).load().expect_err("inconsistent");
            assert!(matches!(err, ConfigError::Invalid(_)), "{args:?}: {err}");
        }
    }
}
