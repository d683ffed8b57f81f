//! Prometheus metrics served at `/metrics`: RED metrics per RPC and per event
//! consumer, consumer lag, parked events, outbox backlog and how late SLA
//! timers fire. `deploy/prometheus/alerts.yaml` alerts on them; a test checks
//! every metric it names is one exported here.
//!
//! One [`Metrics`] per process, passed to whatever records into it (tests run
//! several platforms in one process, so there is no global registry).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// The process's metric families.
pub struct Metrics {
    registry: Registry,
    rpc_requests: Family<Labels, Counter>,
    rpc_duration: Family<Labels, Histogram, fn() -> Histogram>,
    consumer_events: Family<Labels, Counter>,
    consumer_duration: Family<Labels, Histogram, fn() -> Histogram>,
    consumer_lag: Family<Labels, Gauge>,
    parked_events: Family<Labels, Gauge>,
    outbox_backlog: Family<Labels, Gauge>,
    outbox_published: Family<Labels, Counter>,
    sla_timer_lag: Histogram,
    sla_oldest_due_timer: Gauge<f64, std::sync::atomic::AtomicU64>,
    outbox_late: Family<Labels, Counter>,
    watermark_age: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    sla_timers_held: Family<Labels, Gauge>,
    sla_provisional: Family<Labels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("baladiya");
        let m = Self {
            rpc_requests: Family::default(),
            rpc_duration: Family::new_with_constructor(latency_histogram),
            consumer_events: Family::default(),
            consumer_duration: Family::new_with_constructor(latency_histogram),
            consumer_lag: Family::default(),
            parked_events: Family::default(),
            outbox_backlog: Family::default(),
            outbox_published: Family::default(),
            sla_timer_lag: Histogram::new([
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
            sla_oldest_due_timer: Gauge::default(),
            outbox_late: Family::default(),
            watermark_age: Family::default(),
            sla_timers_held: Family::default(),
            sla_provisional: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "grpc_requests",
            "gRPC requests handled, by service, method and status code",
            m.rpc_requests.clone(),
        );
        registry.register(
            "grpc_request_duration_seconds",
            "gRPC request latency, by service and method",
            m.rpc_duration.clone(),
        );
        registry.register(
            "consumer_events",
            "Events seen by a consumer, by outcome (applied, duplicate, retried, parked, replayed)",
            m.consumer_events.clone(),
        );
        registry.register(
            "consumer_handle_duration_seconds",
            "Time to apply one event, by consumer",
            m.consumer_duration.clone(),
        );
        registry.register(
            "consumer_lag_events",
            "Events in the stream not yet delivered to the consumer",
            m.consumer_lag.clone(),
        );
        registry.register(
            "parked_events",
            "Events a consumer parked and nobody replayed yet",
            m.parked_events.clone(),
        );
        registry.register(
            "outbox_backlog_events",
            "Outbox events not yet published, by schema",
            m.outbox_backlog.clone(),
        );
        registry.register(
            "outbox_published_events",
            "Outbox events published to JetStream, by schema",
            m.outbox_published.clone(),
        );
        registry.register(
            "sla_timer_lag_seconds",
            "From an SLA timer's due instant (warning, breach, escalation) to the commit of its event",
            m.sla_timer_lag.clone(),
        );
        registry.register(
            "sla_oldest_due_timer_seconds",
            "How long the oldest SLA timer that is due has waited to fire; 0 when none waits",
            m.sla_oldest_due_timer.clone(),
        );
        registry.register(
            "outbox_late_events",
            "Events a relay found recorded before a watermark it had already published (a writer slower than events.watermark_margin_ms), by schema",
            m.outbox_late.clone(),
        );
        registry.register(
            "watermark_age_seconds",
            "How far a producer's effective watermark lags the consumer's clock, by consumer and producer",
            m.watermark_age.clone(),
        );
        registry.register(
            "sla_timers_held",
            "Due SLA timers not fired because a producer's watermark has not passed them or their subject has an input parked, by producer",
            m.sla_timers_held.clone(),
        );
        registry.register(
            "sla_provisional_firings",
            "SLA warnings, breaches and escalations fired past sla.max_hold without complete knowledge, by kind",
            m.sla_provisional.clone(),
        );
        Arc::new(Self { registry, ..m })
    }

    /// Records one finished RPC.
    pub fn record_rpc(&self, service: &str, method: &str, code: &str, elapsed: Duration) {
        self.rpc_requests
            .get_or_create(&vec![
                ("service", service.to_string()),
                ("method", method.to_string()),
                ("code", code.to_string()),
            ])
            .inc();
        self.rpc_duration
            .get_or_create(&vec![
                ("service", service.to_string()),
                ("method", method.to_string()),
            ])
            .observe(elapsed.as_secs_f64());
    }

    /// Records one event a consumer saw.
    pub fn record_event(&self, consumer: &str, outcome: &'static str, elapsed: Duration) {
        self.consumer_events
            .get_or_create(&vec![
                ("consumer", consumer.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
        self.consumer_duration
            .get_or_create(&vec![("consumer", consumer.to_string())])
            .observe(elapsed.as_secs_f64());
    }

    /// Sets a consumer's lag.
    pub fn set_consumer_lag(&self, consumer: &str, pending: u64) {
        self.consumer_lag
            .get_or_create(&vec![("consumer", consumer.to_string())])
            .set(pending as i64);
    }

    /// Sets how many events a consumer has parked.
    pub fn set_parked(&self, consumer: &str, parked: i64) {
        self.parked_events
            .get_or_create(&vec![("consumer", consumer.to_string())])
            .set(parked);
    }

    /// Sets a schema's outbox backlog.
    pub fn set_outbox_backlog(&self, schema: &str, backlog: i64) {
        self.outbox_backlog
            .get_or_create(&vec![("schema", schema.to_string())])
            .set(backlog);
    }

    /// Counts published outbox events.
    pub fn add_outbox_published(&self, schema: &str, n: u64) {
        self.outbox_published
            .get_or_create(&vec![("schema", schema.to_string())])
            .inc_by(n);
    }

    /// Records that an SLA timer fired `lag` after it was due.
    pub fn record_timer_lag(&self, lag: Duration) {
        self.sla_timer_lag.observe(lag.as_secs_f64());
    }

    /// Sets how long the oldest due SLA timer has waited.
    pub fn set_oldest_due_timer(&self, waited: Duration) {
        self.sla_oldest_due_timer.set(waited.as_secs_f64());
    }

    /// Counts events a relay found recorded before a watermark it published.
    pub fn add_outbox_late(&self, schema: &str, n: u64) {
        self.outbox_late
            .get_or_create(&vec![("schema", schema.to_string())])
            .inc_by(n);
    }

    /// Sets how far `producer`'s effective watermark lags, as `consumer` sees it.
    pub fn set_watermark_age(&self, consumer: &str, producer: &str, age: Duration) {
        self.watermark_age
            .get_or_create(&vec![
                ("consumer", consumer.to_string()),
                ("producer", producer.to_string()),
            ])
            .set(age.as_secs_f64());
    }

    /// Sets how many due SLA timers wait on `producer`.
    pub fn set_sla_timers_held(&self, producer: &str, held: i64) {
        self.sla_timers_held
            .get_or_create(&vec![("producer", producer.to_string())])
            .set(held);
    }

    /// Exports the provisional firing counters at zero, so alert rules see them.
    pub fn init_sla_provisional(&self, kinds: &[&str]) {
        for kind in kinds {
            self.sla_provisional
                .get_or_create(&vec![("kind", kind.to_string())])
                .inc_by(0);
        }
    }

    /// Counts an SLA firing made without complete knowledge.
    pub fn add_sla_provisional(&self, kind: &str) {
        self.sla_provisional
            .get_or_create(&vec![("kind", kind.to_string())])
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_recorded_values() {
        let m = Metrics::new();
        m.record_rpc(
            "baladiya.admin.v1.ClockService",
            "GetTime",
            "OK",
            Duration::from_millis(3),
        );
        m.set_outbox_backlog("intake", 7);
        m.set_consumer_lag("routing-reports", 2);
        let text = m.render();
        assert!(
            text.contains("baladiya_grpc_requests_total{service=\"baladiya.admin.v1.ClockService\",method=\"GetTime\",code=\"OK\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("baladiya_outbox_backlog_events{schema=\"intake\"} 7"),
            "{text}"
        );
        assert!(text.contains("baladiya_consumer_lag_events{consumer=\"routing-reports\"} 2"));
    }
}
