//! Message rates for the API's `*_details.rate` fields. Nothing runs in the background and
//! the messaging path only bumps counters: each object's counters are sampled when the
//! API reads them, at most once per [`INTERVAL`], and a rate is the change between the two
//! latest samples, as RabbitMQ's basic rates mode reports the last few seconds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

/// How far apart samples are.
const INTERVAL: Duration = Duration::from_secs(5);

/// Samples not read for this long are dropped (their object is likely gone).
const FORGET_AFTER: Duration = Duration::from_secs(120);

/// Two samples of one object's counters.
#[derive(Debug, Clone)]
struct Samples {
    previous: Option<(Instant, Vec<u64>)>,
    latest: (Instant, Vec<u64>),
    read: Instant,
}

/// The samples of every object the API has shown.
#[derive(Debug, Default)]
pub struct Rates {
    samples: Mutex<Table>,
}

/// The samples, and when those of gone objects were last dropped.
#[derive(Debug, Default)]
struct Table {
    by_key: HashMap<String, Samples>,
    pruned: Option<Instant>,
}

impl Rates {
    /// RabbitMQ's `message_stats` object for counters `names` = `values` of the object
    /// `key`: each counter and its `<name>_details: {rate}` (per second).
    pub fn message_stats(&self, key: &str, names: &[&str], values: &[u64]) -> Value {
        let rates = self.rates(key, values);
        let mut out = Map::new();
        for ((name, value), rate) in names.iter().zip(values).zip(rates) {
            out.insert((*name).to_owned(), json!(value));
            out.insert(format!("{name}_details"), json!({ "rate": rate }));
        }
        Value::Object(out)
    }

    /// The per-second rates of `values` over the two latest samples of `key` (zero until
    /// there are two).
    pub fn rates(&self, key: &str, values: &[u64]) -> Vec<f64> {
        let now = Instant::now();
        let mut table = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        // Dropping the samples of gone objects walks them all: at most once per interval,
        // not on every read (a list of 10,000 queues reads 20,000 keys).
        if table.by_key.len() > 1024 && table.pruned.is_none_or(|t| now.duration_since(t) >= INTERVAL) {
            table.by_key.retain(|_, s| now.duration_since(s.read) < FORGET_AFTER);
            table.pruned = Some(now);
        }
        if !table.by_key.contains_key(key) {
            table.by_key.insert(key.to_owned(), Samples { previous: None, latest: (now, values.to_vec()), read: now });
        }
        let Some(s) = table.by_key.get_mut(key) else { return vec![0.0; values.len()] };
        s.read = now;
        if now.duration_since(s.latest.0) >= INTERVAL {
            s.previous = Some(std::mem::replace(&mut s.latest, (now, values.to_vec())));
        }
        let Some((then, before)) = &s.previous else { return vec![0.0; values.len()] };
        let secs = now.duration_since(*then).as_secs_f64().max(0.001);
        values.iter().zip(before).map(|(v, b)| round(v.saturating_sub(*b) as f64 / secs)).collect()
    }
}

/// One decimal, as RabbitMQ shows rates.
fn round(rate: f64) -> f64 {
    (rate * 10.0).round() / 10.0
}
