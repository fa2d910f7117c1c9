//! The Prometheus endpoints, with the names and labels of RabbitMQ's `rabbitmq_prometheus`
//! plugin so its Grafana dashboards resolve: `/metrics` (aggregated, the broker's
//! registry), `/metrics/per-object` (one series per queue, connection and channel) and
//! `/metrics/detailed` (the same, prefixed `rabbitmq_detailed_`, filtered by `family` and
//! `vhost` query parameters, with the cluster-wide vhost and exchange families there
//! only, as RabbitMQ). Every endpoint carries `rabbitmq_identity_info`, which the
//! dashboards join on.

use std::collections::HashMap;
use std::fmt::Write;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::api::{node_name, unacked_by_queue};
use super::Mgmt;

/// The prefix of `/metrics/detailed`.
const DETAILED: &str = "rabbitmq_detailed_";

/// Prometheus' text format.
const TEXT: &str = "text/plain; version=0.0.4";

/// The metrics routes.
pub fn routes() -> Router<Mgmt> {
    Router::new()
        .route("/metrics", get(aggregated))
        .route("/metrics/per-object", get(per_object))
        .route("/metrics/detailed", get(detailed))
}

fn answer(body: String) -> axum::response::Response {
    ([(header::CONTENT_TYPE, TEXT)], body).into_response()
}

async fn aggregated(State(mgmt): State<Mgmt>) -> axum::response::Response {
    let mut out = identity();
    out.push_str(&mgmt.broker.metrics.render());
    out.push_str(&totals(&mgmt));
    answer(out)
}

/// The aggregated series RabbitMQ's Grafana dashboards read that are counted on request
/// rather than kept: objects open now, queued messages over all queues, the node's disk
/// and file descriptors, and the per-channel counters of RabbitMQ's aggregated mode
/// (publish, confirm, ack and unroutable from the broker-wide counters, which never go
/// down; deliveries summed over the queues).
fn totals(mgmt: &Mgmt) -> String {
    let b = &mgmt.broker;
    let unacked = unacked_by_queue(mgmt);
    let (mut queues, mut ready, mut held, mut consumers) = (0u64, 0u64, 0u64, 0u64);
    let (mut delivered_ack, mut delivered_auto, mut redelivered, mut got_ack, mut got_auto) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for name in b.vhost_names() {
        let Some(v) = b.vhost(&name) else { continue };
        for q in v.queues() {
            let s = q.stats();
            queues += 1;
            ready += s.ready;
            held += unacked.get(&super::api::queue_key(&q)).copied().unwrap_or(0);
            consumers += s.consumers;
            delivered_ack += s.deliver;
            delivered_auto += s.deliver_no_ack;
            redelivered += s.redeliver;
            got_ack += s.get;
            got_auto += s.get_no_ack;
        }
    }
    let connections = b.connections.list();
    let channels: Vec<_> = connections.iter().flat_map(|c| c.channels()).collect();
    let channel_unacked: u64 = channels.iter().map(|ch| ch.lock().unacked.len() as u64).sum();
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    let m = &b.metrics;
    let mut f = Families::default();
    let mut gauge = |name: &str, help: &'static str, value: u64| f.add(name.to_owned(), "gauge", help, "", value);
    gauge("rabbitmq_queues", "Queues available", queues);
    gauge("rabbitmq_consumers", "Consumers currently connected", consumers);
    gauge("rabbitmq_global_consumers", "Consumers currently connected", consumers);
    gauge("rabbitmq_channels", "Channels currently open", channels.len() as u64);
    gauge("rabbitmq_channel_consumers", "Consumers on a channel", consumers);
    gauge("rabbitmq_channel_messages_unacked", "Delivered but not yet acknowledged messages", channel_unacked);
    gauge("rabbitmq_queue_messages_ready", "Messages ready to be delivered to consumers", ready);
    gauge("rabbitmq_queue_messages_unacked", "Messages delivered to consumers but not yet acknowledged", held);
    gauge("rabbitmq_queue_messages", "Sum of ready and unacknowledged messages - total queue depth", ready + held);
    gauge("rabbitmq_disk_space_available_bytes", "Disk space available in bytes", b.disk.free());
    gauge("rabbitmq_process_open_fds", "Open file descriptors", open_fds);
    gauge("rabbitmq_process_open_tcp_sockets", "Open TCP sockets", connections.len() as u64);
    gauge("rabbitmq_process_max_tcp_sockets", "Open TCP sockets limit", b.config.max_connections as u64);
    let mut counter = |name: &str, help: &'static str, value: u64| f.add(name.to_owned(), "counter", help, "", value);
    counter("rabbitmq_channel_messages_published_total", "Total number of messages published into an exchange on a channel", m.messages_received.get());
    counter("rabbitmq_channel_messages_confirmed_total", "Total number of messages published into an exchange and confirmed on the channel", m.messages_confirmed.get());
    counter("rabbitmq_channel_messages_acked_total", "Total number of messages acknowledged by consumers", m.messages_acknowledged.get());
    counter("rabbitmq_channel_messages_unroutable_dropped_total", "Total number of messages published as non-mandatory into an exchange and dropped as unroutable", m.messages_unroutable_dropped.get());
    // Summed over the queues there are now (a deleted queue's count goes with it, as a
    // closed channel's does in RabbitMQ's aggregated mode).
    counter("rabbitmq_channel_messages_delivered_ack_total", "Total number of messages delivered to consumers in manual acknowledgement mode", delivered_ack);
    counter("rabbitmq_channel_messages_delivered_total", "Total number of messages delivered to consumers in automatic acknowledgement mode", delivered_auto);
    counter("rabbitmq_channel_messages_redelivered_total", "Total number of messages redelivered to consumers", redelivered);
    counter("rabbitmq_channel_get_ack_total", "Total number of messages fetched with basic.get in manual acknowledgement mode", got_ack);
    counter("rabbitmq_channel_get_total", "Total number of messages fetched with basic.get in automatic acknowledgement mode", got_auto);
    counter("rabbitmq_channel_messages_unroutable_returned_total", "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable", m.messages_unroutable_returned.get());
    f.render()
}

async fn per_object(State(mgmt): State<Mgmt>) -> axum::response::Response {
    let mut out = identity();
    out.push_str(&objects(&mgmt, "rabbitmq_", &Filter::default()));
    answer(out)
}

async fn detailed(State(mgmt): State<Mgmt>, Query(params): Query<Vec<(String, String)>>) -> axum::response::Response {
    let mut filter = Filter::default();
    for (k, v) in params {
        match k.as_str() {
            "family" => filter.families.push(v),
            "vhost" => filter.vhosts.push(v),
            _ => {}
        }
    }
    let mut out = identity();
    out.push_str(&objects(&mgmt, DETAILED, &filter));
    answer(out)
}

/// `/metrics/detailed`'s selection: metric families and vhosts (empty: all).
#[derive(Debug, Default)]
struct Filter {
    families: Vec<String>,
    vhosts: Vec<String>,
}

impl Filter {
    fn family(&self, name: &str) -> bool {
        self.families.is_empty() || self.families.iter().any(|f| f == name)
    }

    fn vhost(&self, name: &str) -> bool {
        self.vhosts.is_empty() || self.vhosts.iter().any(|v| v == name)
    }
}

fn identity() -> String {
    let node = escape(&node_name());
    format!(
        "# TYPE rabbitmq_identity_info untyped\nrabbitmq_identity_info{{rabbitmq_node=\"{node}\",rabbitmq_cluster=\"{node}\",rabbitmq_cluster_permanent_id=\"warren-{node}\"}} 1\n\
         # TYPE rabbitmq_build_info untyped\nrabbitmq_build_info{{rabbitmq_version=\"{}\",prometheus_plugin_version=\"{}\",prometheus_client_version=\"rust\",erlang_version=\"none\"}} 1\n",
        super::api::RABBITMQ_VERSION,
        env!("CARGO_PKG_VERSION"),
    )
}

/// A label value in Prometheus' text format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Series of one metric family, written once each metric has all its samples.
#[derive(Default)]
struct Families {
    order: Vec<(String, &'static str, &'static str)>,
    samples: HashMap<String, String>,
}

impl Families {
    fn add(&mut self, name: String, kind: &'static str, help: &'static str, labels: &str, value: u64) {
        if !self.samples.contains_key(&name) {
            self.order.push((name.clone(), kind, help));
        }
        let lines = self.samples.entry(name.clone()).or_default();
        if labels.is_empty() {
            let _ = writeln!(lines, "{name} {value}");
        } else {
            let _ = writeln!(lines, "{name}{{{labels}}} {value}");
        }
    }

    fn render(self) -> String {
        let mut out = String::new();
        for (name, kind, help) in &self.order {
            let _ = writeln!(out, "# TYPE {name} {kind}\n# HELP {name} {help}");
            out.push_str(self.samples.get(name).map_or("", String::as_str));
        }
        out
    }
}

fn objects(mgmt: &Mgmt, prefix: &str, filter: &Filter) -> String {
    let b = &mgmt.broker;
    let mut f = Families::default();
    let unacked = unacked_by_queue(mgmt);
    for name in b.vhost_names().into_iter().filter(|v| filter.vhost(v)) {
        let Some(v) = b.vhost(&name) else { continue };
        for q in v.queues() {
            let s = q.stats();
            let held = unacked.get(&super::api::queue_key(&q)).copied().unwrap_or(0);
            let labels = format!("vhost=\"{}\",queue=\"{}\"", escape(&name), escape(&q.name));
            if filter.family("queue_coarse_metrics") {
                f.add(format!("{prefix}queue_messages_ready"), "gauge", "Messages ready to be delivered to consumers", &labels, s.ready);
                f.add(format!("{prefix}queue_messages_unacked"), "gauge", "Messages delivered to consumers but not yet acknowledged", &labels, held);
                f.add(format!("{prefix}queue_messages"), "gauge", "Sum of ready and unacknowledged messages - total queue depth", &labels, s.ready + held);
            }
            if filter.family("queue_consumer_count") {
                f.add(format!("{prefix}queue_consumers"), "gauge", "Consumers on a queue", &labels, s.consumers);
            }
            if filter.family("queue_metrics") {
                f.add(format!("{prefix}queue_messages_ready_bytes"), "gauge", "Size in bytes of ready messages", &labels, s.ready_bytes);
                f.add(format!("{prefix}queue_messages_published_total"), "counter", "Messages published to the queue", &labels, s.publish);
                f.add(format!("{prefix}queue_messages_delivered_total"), "counter", "Messages delivered from the queue to consumers", &labels, s.deliver + s.deliver_no_ack);
                f.add(format!("{prefix}queue_messages_got_total"), "counter", "Messages got from the queue with basic.get", &labels, s.get + s.get_no_ack);
                f.add(format!("{prefix}queue_messages_redelivered_total"), "counter", "Messages redelivered from the queue", &labels, s.redeliver);
                f.add(format!("{prefix}queue_messages_acked_total"), "counter", "Messages acknowledged from the queue", &labels, s.ack);
            }
        }
    }
    for c in b.connections.list().into_iter().filter(|c| filter.vhost(&c.opened.vhost)) {
        let labels = format!("vhost=\"{}\",connection=\"{}\",user=\"{}\"", escape(&c.opened.vhost), escape(&c.name), escape(&c.opened.user));
        let channels = c.channels();
        if filter.family("connection_metrics") {
            f.add(format!("{prefix}connection_channels"), "gauge", "Channels on a connection", &labels, channels.len() as u64);
        }
        if filter.family("channel_metrics") {
            for ch in channels {
                let (consumers, held, global) = {
                    let st = ch.lock();
                    (st.consumers.len() as u64, st.unacked.len() as u64, u64::from(st.prefetch_global))
                };
                let labels = format!("vhost=\"{}\",channel=\"{} ({})\"", escape(&c.opened.vhost), escape(&c.name), ch.id);
                f.add(format!("{prefix}channel_consumers"), "gauge", "Consumers on a channel", &labels, consumers);
                f.add(format!("{prefix}channel_messages_unacked"), "gauge", "Delivered but not yet acknowledged messages", &labels, held);
                f.add(format!("{prefix}channel_prefetch"), "gauge", "Total limit of unacknowledged messages for all consumers on a channel", &labels, global);
            }
        }
    }
    // The cluster-wide families RabbitMQ has only on /metrics/detailed.
    if prefix == DETAILED {
        for name in b.vhost_names().into_iter().filter(|v| filter.vhost(v)) {
            let Some(v) = b.vhost(&name) else { continue };
            if filter.family("vhost_status") {
                f.add("rabbitmq_cluster_vhost_status".to_owned(), "gauge", "Whether a given vhost is running", &format!("vhost=\"{}\"", escape(&name)), 1);
            }
            for x in v.exchanges() {
                let labels = format!("vhost=\"{}\",exchange=\"{}\",type=\"{}\"", escape(&name), escape(&x.name), x.kind.as_str());
                if filter.family("exchange_names") {
                    f.add("rabbitmq_cluster_exchange_name".to_owned(), "gauge", "Enumerates exchanges without any additional info", &labels, 1);
                }
                if filter.family("exchange_bindings") {
                    let bindings = if x.name.is_empty() { v.queues().len() } else { x.bindings().len() };
                    f.add("rabbitmq_cluster_exchange_bindings".to_owned(), "gauge", "Number of bindings for an exchange", &labels, bindings as u64);
                }
            }
        }
    }
    f.render()
}
