//! The broker's aggregated Prometheus metrics (served by [`crate::management`]).
//!
//! Names follow RabbitMQ's Prometheus plugin where a counterpart exists, so existing
//! dashboards and alerts read Warren unchanged.


use prometheus::{Encoder, IntCounter, IntGauge, Registry, TextEncoder};

/// The broker's counters and gauges.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Client connections opened.
    pub connections_opened: IntCounter,
    /// Client connections closed.
    pub connections_closed: IntCounter,
    /// Open client connections.
    pub connections: IntGauge,
    /// Channels opened.
    pub channels_opened: IntCounter,
    /// Messages received from publishers.
    pub messages_received: IntCounter,
    /// Messages routed to at least one queue.
    pub messages_routed: IntCounter,
    /// Messages that reached no queue.
    pub messages_unroutable_dropped: IntCounter,
    /// Unroutable mandatory messages returned.
    pub messages_unroutable_returned: IntCounter,
    /// Messages confirmed to publishers.
    pub messages_confirmed: IntCounter,
    /// Messages acknowledged by consumers.
    pub messages_acknowledged: IntCounter,
    /// 1 while the memory alarm blocks publishers.
    pub memory_alarm: IntGauge,
    /// The memory alarm's watermark, in octets of messages held.
    pub memory_limit: IntGauge,
    /// The process's resident memory, in octets.
    pub resident_memory: IntGauge,
    /// 1 while the disk alarm blocks publishers.
    pub disk_alarm: IntGauge,
    /// The disk alarm's limit, in free octets.
    pub disk_limit: IntGauge,
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("static metric {name}: {e}"));
            // Registration only fails for duplicate names, which are static here.
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).unwrap_or_else(|e| unreachable!("static metric {name}: {e}"));
            let _ = registry.register(Box::new(g.clone()));
            g
        };
        Metrics {
            connections_opened: counter("rabbitmq_connections_opened_total", "Client connections opened"),
            connections_closed: counter("rabbitmq_connections_closed_total", "Client connections closed"),
            channels_opened: counter("rabbitmq_channels_opened_total", "Channels opened"),
            messages_received: counter("rabbitmq_global_messages_received_total", "Messages received from publishers"),
            messages_routed: counter("rabbitmq_global_messages_routed_total", "Messages routed to at least one queue"),
            messages_unroutable_dropped: counter("rabbitmq_global_messages_unroutable_dropped_total", "Unroutable messages dropped"),
            messages_unroutable_returned: counter("rabbitmq_global_messages_unroutable_returned_total", "Unroutable mandatory messages returned"),
            messages_confirmed: counter("rabbitmq_global_messages_confirmed_total", "Messages confirmed to publishers"),
            messages_acknowledged: counter("rabbitmq_global_messages_acknowledged_total", "Messages acknowledged by consumers"),
            connections: gauge("rabbitmq_connections", "Open client connections"),
            memory_alarm: gauge("rabbitmq_alarms_memory_used_watermark", "1 while the memory alarm blocks publishers"),
            memory_limit: gauge("rabbitmq_resident_memory_limit_bytes", "Resident memory at which publishers are blocked"),
            resident_memory: gauge("rabbitmq_process_resident_memory_bytes", "Memory used in bytes"),
            disk_alarm: gauge("rabbitmq_alarms_free_disk_space_watermark", "1 while the disk alarm blocks publishers"),
            disk_limit: gauge("rabbitmq_disk_space_available_limit_bytes", "Free disk octets below which publishers are blocked"),
            registry,
        }
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid metric names, which are static here.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
