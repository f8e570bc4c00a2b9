//! Prometheus metrics, served at `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 18))
}

/// Every metric the server keeps.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<Labels, Counter>,
    pub latency: Family<Labels, Histogram, fn() -> Histogram>,
    pub rejections: Family<Labels, Counter>,
    pub jobs: Family<Labels, Counter>,
    pub queue_depth: Gauge,
    pub jobs_running: Gauge,
    pub audit_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("nanoimg");
        let requests = Family::<Labels, Counter>::default();
        let latency = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let rejections = Family::<Labels, Counter>::default();
        let jobs = Family::<Labels, Counter>::default();
        let queue_depth = Gauge::default();
        let jobs_running = Gauge::default();
        let audit_dropped = Counter::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register(
            "rejections",
            "Requests refused before doing work, by reason",
            rejections.clone(),
        );
        registry.register("jobs", "Finished jobs by kind and outcome", jobs.clone());
        registry.register("queue_depth", "Jobs waiting for a worker", queue_depth.clone());
        registry.register("jobs_running", "Jobs running now", jobs_running.clone());
        registry.register(
            "audit_dropped",
            "Audit events dropped because the writer was saturated",
            audit_dropped.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            rejections,
            jobs,
            queue_depth,
            jobs_running,
            audit_dropped,
        }
    }
}

impl Metrics {
    /// Counts a refusal.
    pub fn reject(&self, reason: &str) {
        self.rejections
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
