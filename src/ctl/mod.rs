//! `warren ctl`: rabbitmqctl's verbs and output shapes for a running broker, through the
//! management HTTP API (`--url`, `--user`, `--password`; a local broker's defaults).
//! Lists print as tab-separated tables or `--formatter json`; failures print a reason
//! on stderr and exit non-zero with rabbitmqctl's codes (69 broker unreachable,
//! 65 bad input, 70 refused by the broker; usage errors 2).

mod client;
mod output;

use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

pub use client::CtlError;
use client::{seg, Client};
use output::{render, Column};

/// Manage a running Warren (or RabbitMQ) through its management API, with rabbitmqctl's
/// verbs.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The management API's base URL.
    #[arg(long, env = "WARREN_URL", default_value = "http://127.0.0.1:15672")]
    pub url: String,
    /// User to log in as (needs the administrator tag for users, vhosts and permissions).
    #[arg(long, short = 'u', env = "WARREN_USER", default_value = "guest")]
    pub user: String,
    /// Password.
    #[arg(long, env = "WARREN_PASSWORD", default_value = "guest", hide_env_values = true)]
    pub password: String,
    /// Virtual host the command applies to.
    #[arg(long = "vhost", short = 'p', default_value = "/", global = true)]
    pub vhost: String,
    /// Output of lists: rabbitmqctl's table, or JSON.
    #[arg(long, value_enum, default_value = "table", global = true)]
    pub formatter: Formatter,
    /// No informational lines ("Listing queues ...").
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    /// Tables without their header row.
    #[arg(long, global = true)]
    pub no_table_headers: bool,
    /// Seconds to wait for the broker (each request; await_startup in total).
    #[arg(long, short = 't', default_value_t = 30, global = true)]
    pub timeout: u64,
    /// What to do.
    #[command(subcommand)]
    pub command: Verb,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Formatter {
    /// Tab-separated, with a header row.
    Table,
    /// A JSON array of objects.
    Json,
}

/// rabbitmqctl's verbs.
#[derive(Debug, Subcommand)]
#[command(rename_all = "snake_case")]
pub enum Verb {
    /// The broker's version, node, listeners, alarms and totals.
    Status,
    /// Waits until the broker answers (up to --timeout seconds).
    AwaitStartup,
    /// Queues of the vhost [columns: name messages messages_ready messages_unacknowledged consumers durable auto_delete exclusive type state policy arguments memory].
    ListQueues { columns: Vec<String> },
    /// Exchanges of the vhost [columns: name type durable auto_delete internal arguments].
    ListExchanges { columns: Vec<String> },
    /// Bindings of the vhost [columns: source_name source_kind destination_name destination_kind routing_key arguments].
    ListBindings { columns: Vec<String> },
    /// Client connections [columns: name user vhost peer_host peer_port state channels protocol ssl].
    ListConnections { columns: Vec<String> },
    /// Channels [columns: name user vhost number consumer_count messages_unacknowledged prefetch_count confirm transactional].
    ListChannels { columns: Vec<String> },
    /// Consumers of the vhost [columns: queue_name channel_pid consumer_tag ack_required prefetch_count active arguments].
    ListConsumers { columns: Vec<String> },
    /// Users and their tags.
    ListUsers,
    /// Virtual hosts [columns: name description tags messages].
    ListVhosts { columns: Vec<String> },
    /// Permissions in the vhost.
    ListPermissions,
    /// Creates a user (an error if it exists).
    AddUser { username: String, password: String },
    /// Deletes a user.
    DeleteUser { username: String },
    /// Sets a user's password.
    ChangePassword { username: String, password: String },
    /// Replaces a user's tags (none: clears them).
    SetUserTags { username: String, tags: Vec<String> },
    /// Creates a virtual host.
    AddVhost {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
    },
    /// Deletes a virtual host and everything in it.
    DeleteVhost { name: String },
    /// Sets a user's configure, write and read patterns in the vhost.
    SetPermissions { username: String, configure: String, write: String, read: String },
    /// Removes a user's permissions in the vhost.
    ClearPermissions { username: String },
    /// Sets a user's topic permissions for an exchange in the vhost.
    SetTopicPermissions { username: String, exchange: String, write: String, read: String },
    /// Sets a policy in the vhost: a name, a pattern and a JSON definition.
    SetPolicy {
        name: String,
        pattern: String,
        definition: String,
        #[arg(long, default_value_t = 0)]
        priority: i64,
        #[arg(long = "apply-to", default_value = "all")]
        apply_to: String,
    },
    /// Removes a policy from the vhost.
    ClearPolicy { name: String },
    /// Drops a queue's ready messages.
    PurgeQueue { name: String },
    /// Deletes a queue.
    DeleteQueue {
        name: String,
        #[arg(long = "if-empty")]
        if_empty: bool,
        #[arg(long = "if-unused")]
        if_unused: bool,
    },
    /// Closes a client connection (its name as list_connections shows it, or its client's
    /// connection_name) with a reason, and with --code another reply code than 320.
    CloseConnection {
        name: String,
        reason: String,
        #[arg(long)]
        code: Option<u16>,
    },
    /// Fault injection: drops a connection with a TCP reset, no close method.
    ResetConnection { name: String },
    /// Fault injection: a connection reads and writes nothing (heartbeats included) for a while.
    FreezeConnection { name: String, seconds: u64 },
    /// Fault injection: delays everything written to a connection (0 clears it).
    DelayConnection { name: String, ms: u64 },
    /// Fault injection: raises the memory alarm (publishers are blocked) until cleared.
    RaiseMemoryAlarm,
    /// Clears the memory alarm raised on demand.
    ClearMemoryAlarm,
    /// Fault injection: the next COUNT publishes to a queue of the vhost are nacked.
    NackPublishes { queue: String, count: u64 },
    /// Fault injection: cancels a queue's consumers (they get basic.cancel).
    CancelConsumers { queue: String },
    /// Fault injection: closes every connection with 320 and refuses new ones for a while.
    SimulateRestart { seconds: u64 },
    /// Writes the definitions to a file ("-" for stdout).
    ExportDefinitions { path: String },
    /// Imports definitions from a file ("-" for stdin).
    ImportDefinitions { path: String },
}

/// Runs one command; what it prints goes to stdout.
pub fn run(args: &CtlArgs) -> Result<(), CtlError> {
    let client = Client::new(&args.url, &args.user, &args.password, Duration::from_secs(args.timeout.max(1)));
    let v = seg(&args.vhost);
    let info = |line: String| {
        if !args.quiet && args.formatter == Formatter::Table {
            println!("{line}");
        }
    };
    let list = |path: &str, what: &str, default: &[&str], columns: &[String], map: &dyn Fn(&str) -> String| -> Result<(), CtlError> {
        info(format!("Listing {what} ..."));
        let items = match client.get(path)? {
            Value::Array(items) => items,
            other => vec![other],
        };
        let names: Vec<String> = if columns.is_empty() { default.iter().map(|s| (*s).to_owned()).collect() } else { columns.to_vec() };
        let cols: Vec<Column> = names.iter().map(|n| Column::new(n, &map(n))).collect();
        print!("{}", render(&items, &cols, args.formatter == Formatter::Json, !args.no_table_headers));
        Ok(())
    };
    let same = |n: &str| n.to_owned();
    match &args.command {
        Verb::Status => {
            let o = client.get("/api/overview")?;
            if args.formatter == Formatter::Json {
                println!("{o}");
                return Ok(());
            }
            let alarms = client.get("/api/health/checks/alarms").map(|_| "(none)".to_owned()).or_else(|e| match e {
                CtlError::Refused { status: 503, .. } => Ok("resource alarm in effect".to_owned()),
                other => Err(other),
            })?;
            info(format!("Status of node {} ...", o["node"].as_str().unwrap_or("?")));
            println!("Product: {} {} (RabbitMQ API {})", o["product_name"].as_str().unwrap_or("?"), o["product_version"].as_str().unwrap_or("?"), o["rabbitmq_version"].as_str().unwrap_or("?"));
            println!("Node: {}", o["node"].as_str().unwrap_or("?"));
            for l in o["listeners"].as_array().into_iter().flatten() {
                println!("Listener: {} on {}:{}", l["protocol"].as_str().unwrap_or("?"), l["ip_address"].as_str().unwrap_or("?"), l["port"]);
            }
            println!("Alarms: {alarms}");
            let t = &o["object_totals"];
            println!("Totals: {} connections, {} channels, {} queues, {} consumers, {} exchanges", t["connections"], t["channels"], t["queues"], t["consumers"], t["exchanges"]);
            println!("Messages: {} ({} ready, {} unacknowledged)", o["queue_totals"]["messages"], o["queue_totals"]["messages_ready"], o["queue_totals"]["messages_unacknowledged"]);
            Ok(())
        }
        Verb::AwaitStartup => {
            let deadline = Instant::now() + Duration::from_secs(args.timeout);
            loop {
                match client.get("/api/overview") {
                    Ok(_) => return Ok(()),
                    Err(e @ CtlError::Unreachable { .. }) if Instant::now() >= deadline => return Err(e),
                    Err(CtlError::Unreachable { .. }) => std::thread::sleep(Duration::from_millis(100)),
                    Err(e) => return Err(e),
                }
            }
        }
        Verb::ListQueues { columns } => list(&format!("/api/queues/{v}"), &format!("queues for vhost {}", args.vhost), &["name", "messages"], columns, &same),
        Verb::ListExchanges { columns } => list(&format!("/api/exchanges/{v}"), &format!("exchanges for vhost {}", args.vhost), &["name", "type"], columns, &same),
        Verb::ListBindings { columns } => list(
            &format!("/api/bindings/{v}"),
            &format!("bindings for vhost {}", args.vhost),
            &["source_name", "source_kind", "destination_name", "destination_kind", "routing_key", "arguments"],
            columns,
            &|n: &str| match n {
                "source_name" => "source".to_owned(),
                "source_kind" => "=exchange".to_owned(),
                "destination_name" => "destination".to_owned(),
                "destination_kind" => "destination_type".to_owned(),
                other => other.to_owned(),
            },
        ),
        Verb::ListConnections { columns } => list("/api/connections", "connections", &["user", "peer_host", "peer_port", "state"], columns, &same),
        Verb::ListChannels { columns } => list("/api/channels", "channels", &["name", "user", "consumer_count", "messages_unacknowledged"], columns, &|n: &str| {
            if n == "pid" { "name".to_owned() } else { n.to_owned() }
        }),
        Verb::ListConsumers { columns } => list(
            &format!("/api/consumers/{v}"),
            &format!("consumers in vhost {}", args.vhost),
            &["queue_name", "channel_pid", "consumer_tag", "ack_required", "prefetch_count", "active", "arguments"],
            columns,
            &|n: &str| match n {
                "queue_name" => "queue.name".to_owned(),
                "channel_pid" => "channel_details.name".to_owned(),
                other => other.to_owned(),
            },
        ),
        Verb::ListUsers => list("/api/users", "users", &["user", "tags"], &[], &|n: &str| if n == "user" { "name".to_owned() } else { n.to_owned() }),
        Verb::ListVhosts { columns } => list("/api/vhosts", "vhosts", &["name"], columns, &same),
        Verb::ListPermissions => list(&format!("/api/vhosts/{v}/permissions"), &format!("permissions for vhost \"{}\"", args.vhost), &["user", "configure", "write", "read"], &[], &same),
        Verb::AddUser { username, password } => {
            info(format!("Adding user \"{username}\" ..."));
            match client.get(&format!("/api/users/{}", seg(username))) {
                Ok(_) => return Err(CtlError::Refused { status: 409, reason: format!("user_already_exists: {username}") }),
                Err(CtlError::Refused { status: 404, .. }) => {}
                Err(e) => return Err(e),
            }
            client.put(&format!("/api/users/{}", seg(username)), &json!({"password": password, "tags": ""}))?;
            info("Done. Don't forget to grant the user permissions to some virtual hosts! See 'warren ctl set_permissions --help'.".to_owned());
            Ok(())
        }
        Verb::DeleteUser { username } => {
            info(format!("Deleting user \"{username}\" ..."));
            client.delete(&format!("/api/users/{}", seg(username)), &[])
        }
        Verb::ChangePassword { username, password } => {
            info(format!("Changing password for user \"{username}\" ..."));
            let user = client.get(&format!("/api/users/{}", seg(username)))?;
            client.put(&format!("/api/users/{}", seg(username)), &json!({"password": password, "tags": user["tags"]}))
        }
        Verb::SetUserTags { username, tags } => {
            info(format!("Setting tags for user \"{username}\" to [{}] ...", tags.join(", ")));
            let user = client.get(&format!("/api/users/{}", seg(username)))?;
            let body = json!({"password_hash": user["password_hash"], "hashing_algorithm": user["hashing_algorithm"], "tags": tags});
            client.put(&format!("/api/users/{}", seg(username)), &body)
        }
        Verb::AddVhost { name, description, tags } => {
            info(format!("Adding vhost \"{name}\" ..."));
            client.put(&format!("/api/vhosts/{}", seg(name)), &json!({"description": description, "tags": tags}))
        }
        Verb::DeleteVhost { name } => {
            info(format!("Deleting vhost \"{name}\" ..."));
            client.delete(&format!("/api/vhosts/{}", seg(name)), &[])
        }
        Verb::SetPermissions { username, configure, write, read } => {
            info(format!("Setting permissions for user \"{username}\" in vhost \"{}\" ...", args.vhost));
            client.put(&format!("/api/permissions/{v}/{}", seg(username)), &json!({"configure": configure, "write": write, "read": read}))
        }
        Verb::ClearPermissions { username } => {
            info(format!("Clearing permissions for user \"{username}\" in vhost \"{}\" ...", args.vhost));
            client.delete(&format!("/api/permissions/{v}/{}", seg(username)), &[])
        }
        Verb::SetTopicPermissions { username, exchange, write, read } => {
            info(format!("Setting topic permissions on \"{exchange}\" for user \"{username}\" in vhost \"{}\" ...", args.vhost));
            client.put(&format!("/api/topic-permissions/{v}/{}", seg(username)), &json!({"exchange": exchange, "write": write, "read": read}))
        }
        Verb::SetPolicy { name, pattern, definition, priority, apply_to } => {
            let definition: Value = serde_json::from_str(definition).map_err(|e| CtlError::Input(format!("the policy definition is not JSON: {e}")))?;
            info(format!("Setting policy \"{name}\" for pattern \"{pattern}\" to \"{definition}\" with priority \"{priority}\" for vhost \"{}\" ...", args.vhost));
            client.put(&format!("/api/policies/{v}/{}", seg(name)), &json!({"pattern": pattern, "definition": definition, "priority": priority, "apply-to": apply_to}))
        }
        Verb::ClearPolicy { name } => {
            info(format!("Clearing policy \"{name}\" on vhost \"{}\" ...", args.vhost));
            client.delete(&format!("/api/policies/{v}/{}", seg(name)), &[])
        }
        Verb::PurgeQueue { name } => {
            info(format!("Purging queue '{name}' in vhost '{}' ...", args.vhost));
            client.delete(&format!("/api/queues/{v}/{}/contents", seg(name)), &[])
        }
        Verb::DeleteQueue { name, if_empty, if_unused } => {
            info(format!("Deleting queue '{name}' on vhost '{}' ...", args.vhost));
            client.delete(&format!("/api/queues/{v}/{}?if-empty={if_empty}&if-unused={if_unused}", seg(name)), &[])
        }
        Verb::CloseConnection { name, reason, code } => {
            info(format!("Closing connection {name}, reason: {reason}..."));
            match code {
                None => client.delete(&format!("/api/connections/{}", seg(name)), &[("x-reason", reason)]),
                Some(code) => client.post(&format!("/api/warren/connections/{}/close", seg(name)), &json!({"code": code, "reason": reason})).map(drop),
            }
        }
        Verb::ResetConnection { name } => {
            info(format!("Resetting connection {name} ..."));
            client.post(&format!("/api/warren/connections/{}/reset", seg(name)), &json!({})).map(drop)
        }
        Verb::FreezeConnection { name, seconds } => {
            info(format!("Freezing connection {name} for {seconds} s ..."));
            client.post(&format!("/api/warren/connections/{}/freeze", seg(name)), &json!({"seconds": seconds})).map(drop)
        }
        Verb::DelayConnection { name, ms } => {
            info(format!("Delaying what is sent to connection {name} by {ms} ms ..."));
            client.post(&format!("/api/warren/connections/{}/delay", seg(name)), &json!({"ms": ms})).map(drop)
        }
        Verb::RaiseMemoryAlarm => {
            info("Raising the memory alarm ...".to_owned());
            client.put("/api/warren/alarms/memory", &json!({}))
        }
        Verb::ClearMemoryAlarm => {
            info("Clearing the memory alarm ...".to_owned());
            client.delete("/api/warren/alarms/memory", &[])
        }
        Verb::NackPublishes { queue, count } => {
            info(format!("Nacking the next {count} publishes to queue '{queue}' in vhost '{}' ...", args.vhost));
            client.post(&format!("/api/warren/queues/{v}/{}/nack-publishes", seg(queue)), &json!({"count": count})).map(drop)
        }
        Verb::CancelConsumers { queue } => {
            info(format!("Cancelling the consumers of queue '{queue}' in vhost '{}' ...", args.vhost));
            client.post(&format!("/api/warren/queues/{v}/{}/cancel-consumers", seg(queue)), &json!({})).map(drop)
        }
        Verb::SimulateRestart { seconds } => {
            info(format!("Simulating a restart: closing every connection, refusing new ones for {seconds} s ..."));
            client.post("/api/warren/restart", &json!({"seconds": seconds})).map(drop)
        }
        Verb::ExportDefinitions { path } => {
            let defs = client.get("/api/definitions")?;
            let text = serde_json::to_string_pretty(&defs).map_err(|e| CtlError::Input(e.to_string()))?;
            if path == "-" {
                println!("{text}");
                return Ok(());
            }
            info(format!("Exporting definitions in JSON to a file at \"{path}\" ..."));
            std::fs::write(path, text).map_err(|e| CtlError::Input(format!("cannot write {path}: {e}")))
        }
        Verb::ImportDefinitions { path } => {
            let text = if path == "-" {
                std::io::read_to_string(std::io::stdin()).map_err(|e| CtlError::Input(format!("cannot read stdin: {e}")))?
            } else {
                std::fs::read_to_string(path).map_err(|e| CtlError::Input(format!("cannot read {path}: {e}")))?
            };
            let defs: Value = serde_json::from_str(&text).map_err(|e| CtlError::Input(format!("{path} is not JSON: {e}")))?;
            info(format!("Importing definitions in JSON from a file at \"{path}\" ..."));
            client.post("/api/definitions", &defs).map(drop)
        }
    }
}
