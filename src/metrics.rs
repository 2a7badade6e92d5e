//! What a copy counts about itself, for `GET /metrics` (`--http`) in
//! Prometheus's text format, and for `status`.
//!
//! Counters and gauges are kept by the tasks that do the work, as plain
//! atomics behind prometheus-client's types; values that live elsewhere
//! (reconnects, the heartbeat's view of the queue) are read at scrape time.
//! Every number is this copy's own: a dashboard sums them over copies.

use crate::copy::{CopyState, Role};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::{Arc, Weak};

/// The counters, gauges and the latency histogram of one copy.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Messages this copy enqueued as generator.
    pub generated: Counter,
    /// Messages whose result this copy committed.
    pub processed: Counter,
    /// Of those, results stored as errors.
    pub errors: Counter,
    /// Items this copy sent to dead-letter (not a message, too large, or,
    /// as janitor, delivered too often).
    pub dead_lettered: Counter,
    /// Acks refused because the message was no longer this copy's.
    pub refused_acks: Counter,
    /// Messages this copy's janitor gave back from dead copies.
    pub reclaimed: Counter,
    /// Writes that fewer replicas confirmed than `--wait-replicas` asks.
    pub unconfirmed: Counter,
    /// Messages being worked on now.
    pub in_flight: Gauge,
    /// The lease epoch this copy last held (0: never).
    pub epoch: Gauge,
    /// From a message's generation to the commit of its result, in seconds,
    /// by the two copies' wall clocks.
    pub latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            generated: Counter::default(),
            processed: Counter::default(),
            errors: Counter::default(),
            dead_lettered: Counter::default(),
            refused_acks: Counter::default(),
            reclaimed: Counter::default(),
            unconfirmed: Counter::default(),
            in_flight: Gauge::default(),
            epoch: Gauge::default(),
            // 0.5 ms to about 65 s.
            latency: Histogram::new(exponential_buckets(0.0005, 2.0, 18)),
        }
    }
}

impl Metrics {
    /// Counts one committed result, `generated_at_ms` by its generator's clock.
    pub fn committed(&self, generated_at_ms: u64, error: bool) {
        self.processed.inc();
        if error {
            self.errors.inc();
        }
        let waited_ms = crate::message::now_ms().saturating_sub(generated_at_ms);
        self.latency.observe(waited_ms as f64 / 1000.0);
    }
}

/// A registry of `copy`'s metrics, named `redisql_*`.
pub fn registry(copy: &Arc<CopyState>) -> Registry {
    let mut registry = Registry::with_prefix("redisql");
    let m = &copy.metrics;
    let counters = [
        (
            "generated",
            "Messages enqueued by this copy as generator",
            &m.generated,
        ),
        (
            "processed",
            "Messages whose result this copy committed",
            &m.processed,
        ),
        ("errors", "Committed results stored as errors", &m.errors),
        (
            "dead_lettered",
            "Items this copy sent to dead-letter",
            &m.dead_lettered,
        ),
        (
            "refused_acks",
            "Acks refused: the message was no longer this copy's",
            &m.refused_acks,
        ),
        (
            "reclaimed",
            "Messages this copy's janitor gave back from dead copies",
            &m.reclaimed,
        ),
        (
            "unconfirmed_writes",
            "Writes fewer replicas confirmed than --wait-replicas",
            &m.unconfirmed,
        ),
    ];
    for (name, help, counter) in counters {
        registry.register(name, help, counter.clone());
    }
    registry.register(
        "in_flight",
        "Messages this copy is working on now",
        m.in_flight.clone(),
    );
    registry.register(
        "epoch",
        "The lease epoch this copy last held (0: never)",
        m.epoch.clone(),
    );
    registry.register(
        "processing_latency_seconds",
        "From a message's generation to the commit of its result",
        m.latency.clone(),
    );
    registry.register_collector(Box::new(Live(Arc::downgrade(copy))));
    registry
}

/// The values read at scrape time from the copy itself.
struct Live(Weak<CopyState>);

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

impl prometheus_client::collector::Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(copy) = self.0.upgrade() else {
            return Ok(());
        };
        let roles: Family<Vec<(&'static str, &'static str)>, Gauge> = Family::default();
        for role in [Role::Generator, Role::Processor] {
            roles
                .get_or_create(&vec![("role", role.as_str())])
                .set(i64::from(copy.role() == role));
        }
        roles.encode(encoder.encode_descriptor(
            "role",
            "1 for the role this copy has now",
            None,
            roles.metric_type(),
        )?)?;
        let reconnects = ConstCounter::new(copy.redis.reconnects());
        reconnects.encode(encoder.encode_descriptor(
            "reconnects",
            "Times the connection to Redis came back after it was lost",
            None,
            reconnects.metric_type(),
        )?)?;
        let queue = ConstGauge::new(i64::try_from(copy.queue_len()).unwrap_or(i64::MAX));
        queue.encode(encoder.encode_descriptor(
            "queue_length",
            "Messages waiting in the queue, at the last heartbeat",
            None,
            queue.metric_type(),
        )?)?;
        Ok(())
    }
}

/// The text `GET /metrics` answers (OpenMetrics text, which Prometheus reads).
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        text.clear();
    }
    text
}
