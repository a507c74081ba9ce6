//! `GET /metrics`: the runtime's state in the Prometheus text format (version 0.0.4), rendered
//! afresh from the runtime at each scrape.
//!
//! What is exported, and where it comes from:
//!
//! | metric | type | source |
//! | --- | --- | --- |
//! | `graft_service_up{service,version}` | gauge | 1 if [`ServiceStatus::state`] is running, else 0; `version` is [`ServiceStatus::version`] |
//! | `graft_retired_libraries` | gauge | how many [`Runtime::retired_libraries`] stay mapped |
//! | `graft_retired_library_mapped_bytes` | gauge | their [`RetiredLibrary::mapped_bytes`], summed |
//! | `graft_retired_library_resident_bytes` | gauge | their [`RetiredLibrary::resident_bytes`], summed |
//! | `graft_unmapped_libraries_total` | counter | [`Runtime::unmapped_libraries`] |
//! | `graft_load_budget_free{resource}` | gauge | [`LoadBudget`]: `pthread_keys_free`, and `maps_max - maps_used` for `memory_mappings` |
//! | `graft_load_budget_limit{resource}` | gauge | [`LoadBudget`]: `pthread_keys_max`, `maps_max` |
//!
//! | `graft_calls_total{service,version}` | counter | [`ServiceMetrics`] `versions[].counts.calls`: calls answered |
//! | `graft_call_failures_total{service,version}` | counter | `counts.failures`: the service's own failures |
//! | `graft_call_refusals_total{service,version}` | counter | `counts.refusals`: its deliberate "no"s, not failures |
//! | `graft_call_panics_total{service,version}` | counter | `counts.panics` |
//! | `graft_swaps_total{service}` | counter | `operations.swaps` |
//! | `graft_rollbacks_total{service,kind}` | counter | `operations.rollbacks_manual` / `rollbacks_automatic` (`kind` = `manual` / `automatic`) |
//! | `graft_swap_duration_seconds{service}` | histogram | `operations.swap_seconds` (bounds: the runtime's `DURATION_BOUNDS`) |
//! | `graft_rollback_duration_seconds{service}` | histogram | `operations.rollback_seconds` |
//!
//! Every value is read from the runtime at each scrape; the runtime's counters only grow, so the
//! counters here do too (per service and version, across swaps and retirements).
//!
//! [`ServiceMetrics`]: graft_runtime::ServiceMetrics
//! [`RetiredLibrary::mapped_bytes`]: graft_runtime::RetiredLibrary::mapped_bytes
//! [`RetiredLibrary::resident_bytes`]: graft_runtime::RetiredLibrary::resident_bytes
//! [`LoadBudget`]: graft_runtime::LoadBudget
//! [`ServiceStatus`]: graft_runtime::ServiceStatus
//! [`ServiceStatus::state`]: graft_runtime::ServiceStatus::state
//! [`ServiceStatus::version`]: graft_runtime::ServiceStatus::version

use graft_runtime::{Runtime, ServiceState};
use parking_lot::Mutex;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
    version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OnlyService {
    service: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RollbackLabels {
    service: String,
    kind: &'static str,
}

/// A histogram's sum, count and (upper bound, count) buckets.
type Buckets = (f64, u64, Vec<(f64, u64)>);

/// A histogram the runtime already aggregated: bounds, per-bucket counts, sum and count.
#[derive(Debug, Default)]
struct Aggregated(Mutex<Buckets>);

impl Aggregated {
    fn set(&self, histogram: &graft_runtime::Histogram) {
        let mut buckets: Vec<(f64, u64)> =
            histogram.bounds.iter().copied().zip(histogram.buckets.iter().copied()).collect();
        buckets.push((f64::INFINITY, histogram.buckets.last().copied().unwrap_or(0)));
        *self.0.lock() = (histogram.sum, histogram.count, buckets);
    }
}

impl TypedMetric for Aggregated {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Aggregated {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = &*self.0.lock();
        encoder.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResourceLabels {
    resource: &'static str,
}

/// The exposition of `runtime`'s metrics now.
pub fn render(runtime: &Runtime) -> String {
    let mut registry = Registry::default();

    let up = Family::<ServiceLabels, Gauge>::default();
    let calls: [Family<ServiceLabels, Counter<u64>>; 4] = Default::default();
    let swaps = Family::<OnlyService, Counter<u64>>::default();
    let rollbacks = Family::<RollbackLabels, Counter<u64>>::default();
    let swap_seconds = Family::<OnlyService, Aggregated>::default();
    let rollback_seconds = Family::<OnlyService, Aggregated>::default();
    for status in runtime.status() {
        let service = status.service;
        let labels =
            ServiceLabels { service: service.clone(), version: status.version.to_string() };
        up.get_or_create(&labels).set(i64::from(status.state == ServiceState::Running));
        for version in &status.metrics.versions {
            let labels =
                ServiceLabels { service: service.clone(), version: version.version.to_string() };
            let counts = version.counts;
            for (family, value) in
                calls.iter().zip([counts.calls, counts.failures, counts.refusals, counts.panics])
            {
                family.get_or_create(&labels).inc_by(value);
            }
        }
        let operations = &status.metrics.operations;
        let only = OnlyService { service: service.clone() };
        swaps.get_or_create(&only).inc_by(operations.swaps);
        for (kind, value) in
            [("manual", operations.rollbacks_manual), ("automatic", operations.rollbacks_automatic)]
        {
            rollbacks
                .get_or_create(&RollbackLabels { service: service.clone(), kind })
                .inc_by(value);
        }
        swap_seconds.get_or_create(&only).set(&operations.swap_seconds);
        rollback_seconds.get_or_create(&only).set(&operations.rollback_seconds);
    }
    registry.register(
        "graft_service_up",
        "Whether the service is running (1) or not (0), with the version it runs or would start",
        up,
    );
    let [answered, failures, refusals, panics] = calls;
    registry.register("graft_calls", "Calls answered, per service and version", answered);
    registry.register(
        "graft_call_failures",
        "Calls that failed in the service itself (errors and invalid statuses)",
        failures,
    );
    registry.register(
        "graft_call_refusals",
        "Calls the service refused on purpose (not found, invalid input, unknown method): not failures",
        refusals,
    );
    registry.register("graft_call_panics", "Calls that panicked in the plugin", panics);
    registry.register("graft_swaps", "Swaps that published a new build", swaps);
    registry.register("graft_rollbacks", "Rollbacks, by an operator or automatic", rollbacks);
    registry.register(
        "graft_swap_duration_seconds",
        "How long swaps took, from the request to the publication",
        swap_seconds,
    );
    registry.register(
        "graft_rollback_duration_seconds",
        "How long rollbacks took",
        rollback_seconds,
    );

    let retired = runtime.retired_libraries();
    let (mapped, resident) = retired.iter().fold((0u64, 0u64), |(m, r), l| {
        (m.saturating_add(l.mapped_bytes), r.saturating_add(l.resident_bytes))
    });
    register_gauge(
        &mut registry,
        "graft_retired_libraries",
        "Plugin libraries that left service and stay mapped for the rest of the process",
        retired.len() as u64,
    );
    register_gauge(
        &mut registry,
        "graft_retired_library_mapped_bytes",
        "Memory mapped by the retired libraries that stay mapped",
        mapped,
    );
    register_gauge(
        &mut registry,
        "graft_retired_library_resident_bytes",
        "Resident memory of the retired libraries that stay mapped",
        resident,
    );
    let unmapped = Counter::<u64>::default();
    unmapped.inc_by(runtime.unmapped_libraries());
    registry.register(
        "graft_unmapped_libraries",
        "Retired plugin libraries unmapped once that was proven safe",
        unmapped,
    );

    let budget = runtime.load_budget();
    let free = Family::<ResourceLabels, Gauge>::default();
    let limit = Family::<ResourceLabels, Gauge>::default();
    for (resource, left, max) in [
        ("pthread_keys", budget.pthread_keys_free, budget.pthread_keys_max),
        ("memory_mappings", budget.maps_free(), budget.maps_max),
    ] {
        free.get_or_create(&ResourceLabels { resource }).set(saturate(left as u64));
        limit.get_or_create(&ResourceLabels { resource }).set(saturate(max as u64));
    }
    registry.register(
        "graft_load_budget_free",
        "What is left of a per-process resource that plugin loads use up for good; loads are refused near zero",
        free,
    );
    registry.register("graft_load_budget_limit", "The per-process limit of that resource", limit);

    let mut text = String::new();
    if let Err(error) = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry) {
        // Writing into a String does not fail; were it to, the scrape shows what was written.
        tracing::error!(%error, "encoding the metrics");
    }
    text
}

fn register_gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let gauge = Gauge::<i64>::default();
    gauge.set(saturate(value));
    registry.register(name, help, gauge);
}

fn saturate(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_swaps_and_rollbacks_are_exported_per_service_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = Runtime::builder().staging_dir(dir.path()).build().unwrap();
        let fixture = graft_tests::Fixture::Greeter1_0;
        runtime.load_and_start(graft_tests::path(fixture).unwrap()).unwrap();
        for method in ["greet", "greet", "find", "fail", "panic"] {
            let _ = runtime.call("greeter", method, b"x");
        }
        runtime
            .swap("greeter", graft_tests::path(graft_tests::Fixture::Greeter1_1).unwrap())
            .unwrap();
        runtime.call("greeter", "greet", b"x").unwrap();
        runtime.rollback("greeter").unwrap();
        let text = render(&runtime);
        for line in [
            "graft_calls_total{service=\"greeter\",version=\"1.0.0\"} 5",
            "graft_calls_total{service=\"greeter\",version=\"1.1.0\"} 1",
            "graft_call_refusals_total{service=\"greeter\",version=\"1.0.0\"} 1",
            "graft_call_failures_total{service=\"greeter\",version=\"1.0.0\"} 1",
            "graft_call_panics_total{service=\"greeter\",version=\"1.0.0\"} 1",
            "graft_swaps_total{service=\"greeter\"} 1",
            "graft_rollbacks_total{service=\"greeter\",kind=\"manual\"} 1",
            "graft_rollbacks_total{service=\"greeter\",kind=\"automatic\"} 0",
            "graft_swap_duration_seconds_count{service=\"greeter\"} 1",
            "graft_swap_duration_seconds_bucket{service=\"greeter\",le=\"+Inf\"} 1",
        ] {
            assert!(text.contains(line), "missing `{line}` in:\n{text}");
        }
    }

    #[test]
    fn an_empty_runtime_exports_its_budget_and_no_service() {
        let runtime = Runtime::new().unwrap();
        let text = render(&runtime);
        assert!(!text.contains("graft_service_up"), "{text}");
        assert!(text.contains("graft_retired_libraries "), "{text}");
        assert!(text.contains("graft_unmapped_libraries_total "), "{text}");
        assert!(text.contains("graft_load_budget_free{resource=\"pthread_keys\"} "), "{text}");
        assert!(text.contains("graft_load_budget_limit{resource=\"memory_mappings\"} "), "{text}");
    }
}
