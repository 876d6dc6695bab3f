//! The receiver's own metrics (`relay_receiver_*`, `relay_cluster_up`), in a
//! prometheus-client `Registry`.
//!
//! Event counters (decode errors, rejected handshakes) and the scrape duration histogram are
//! prometheus-client metrics updated as things happen. Everything per cluster is read from
//! the [`Store`] at scrape time by a collector (`StoreCollector`), so a cluster's self-metrics vanish
//! with it when its TTL expires.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::exposition::{self, Format, PageWriter, ReaderGone};
use crate::store::{ClusterStatus, LinkState, Store};

type LabelPair = [(&'static str, &'static str); 1];
type LabelPairs2 = [(&'static str, &'static str); 2];

/// A per-cluster counter: name, help, and how to read it from a cluster's status.
type ClusterCounter = (&'static str, &'static str, fn(&ClusterStatus) -> u64);

/// Self-metrics and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    decode_errors: Family<LabelPair, Counter>,
    handshakes_rejected: Family<LabelPair, Counter>,
    auth_failures: Family<LabelPair, Counter>,
    idle_timeouts: Counter,
    tls_reloads: Family<LabelPairs2, Counter>,
    scrape_duration: Histogram,
}

impl Metrics {
    /// Registers the self-metrics and a collector reading `store` at scrape time.
    pub fn new(store: Store) -> Arc<Self> {
        Self::with_collectors(store, Vec::new())
    }

    /// [`Metrics::new`] plus `extra` collectors (remote write's per-URL metrics).
    pub fn with_collectors(store: Store, extra: Vec<Box<dyn Collector>>) -> Arc<Self> {
        let mut registry = Registry::default();
        let decode_errors = Family::<LabelPair, Counter>::default();
        registry.register(
            "relay_receiver_decode_errors",
            "Connections closed because a frame was too large, did not decode, or broke the protocol, by kind",
            decode_errors.clone(),
        );
        let handshakes_rejected = Family::<LabelPair, Counter>::default();
        registry.register(
            "relay_receiver_handshakes_rejected",
            "Handshakes refused, by reason",
            handshakes_rejected.clone(),
        );
        let auth_failures = Family::<LabelPair, Counter>::default();
        registry.register(
            "relay_receiver_auth_failures",
            "Peers that failed authentication, by kind: no_token, wrong_token, not_tls, \
             client_certificate, tls_alert, tls (sender port), http_basic_auth (HTTP port)",
            auth_failures.clone(),
        );
        let idle_timeouts = Counter::default();
        registry.register(
            "relay_receiver_idle_timeouts",
            "Sender connections closed after 3 silent heartbeat intervals",
            idle_timeouts.clone(),
        );
        let tls_reloads = Family::<LabelPairs2, Counter>::default();
        registry.register(
            "relay_receiver_tls_reloads",
            "Changed certificate files looked at, by port (ingest, http) and result: loaded \
             (served from now on) or failed (the previous certificate stays in use)",
            tls_reloads.clone(),
        );
        let scrape_duration = Histogram::new(exponential_buckets(0.000_25, 2.0, 16));
        registry.register(
            "relay_receiver_scrape_duration_seconds",
            "Time to render /metrics, from its start to its last piece handed to the connection \
             (observed after each complete scrape)",
            scrape_duration.clone(),
        );
        registry.register_collector(Box::new(StoreCollector { store }));
        for collector in extra {
            registry.register_collector(collector);
        }
        Arc::new(Metrics {
            registry,
            decode_errors,
            handshakes_rejected,
            auth_failures,
            idle_timeouts,
            tls_reloads,
            scrape_duration,
        })
    }

    /// Counts a connection closed for a bad frame; `kind` is a bounded error label.
    pub fn decode_error(&self, kind: &'static str) {
        self.decode_errors.get_or_create(&[("kind", kind)]).inc();
    }

    /// Exports `port`'s reload counters at 0, so the first failure is an increase an alert
    /// sees (a series born at 1 has none).
    pub fn tls_reloads_start(&self, port: &'static str) {
        for result in ["loaded", "failed"] {
            let _ = self
                .tls_reloads
                .get_or_create(&[("port", port), ("result", result)]);
        }
    }

    /// Counts a look at changed certificate files of `port`.
    pub fn tls_reload(&self, port: &'static str, loaded: bool) {
        let result = if loaded { "loaded" } else { "failed" };
        self.tls_reloads
            .get_or_create(&[("port", port), ("result", result)])
            .inc();
    }

    /// Counts a refused handshake; `reason` is a bounded label (`RejectReason::as_label`).
    pub fn handshake_rejected(&self, reason: &'static str) {
        self.handshakes_rejected
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// Counts a failed authentication; `kind` is a bounded label (`no_token`, `wrong_token`,
    /// a `tls::HandshakeFailure` label, `http_basic_auth`).
    pub fn auth_failure(&self, kind: &'static str) {
        self.auth_failures.get_or_create(&[("kind", kind)]).inc();
    }

    /// Counts a connection closed because the sender fell silent.
    pub fn idle_timeout(&self) {
        self.idle_timeouts.inc();
    }

    /// Writes the self-metrics in `format` (without `# EOF`) to `out`.
    ///
    /// # Errors
    /// [`ReaderGone`] when `out`'s reader went away.
    pub fn write(&self, format: Format, out: &mut PageWriter<'_>) -> Result<(), ReaderGone> {
        let mut om = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut om, &self.registry);
        match format {
            Format::OpenMetrics => {
                for line in om.split_inclusive('\n') {
                    out.text().push_str(line);
                    out.line_done()?;
                }
                Ok(())
            }
            Format::Text => exposition::openmetrics_to_text(&om, out),
        }
    }

    /// Records how long a scrape took.
    pub fn observe_scrape(&self, seconds: f64) {
        self.scrape_duration.observe(seconds);
    }
}

/// Reads per-cluster self-metrics from the store on every scrape.
#[derive(Debug)]
struct StoreCollector {
    store: Store,
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let clusters = self.store.clusters();
        let connected = clusters
            .iter()
            .filter(|c| matches!(c.link, LinkState::Up { .. }))
            .count();
        let gauge = ConstGauge::new(connected as i64);
        gauge.encode(encoder.encode_descriptor(
            "relay_receiver_connected_senders",
            "Senders currently connected.",
            None,
            MetricType::Gauge,
        )?)?;

        let mut up = encoder.encode_descriptor(
            "relay_cluster_up",
            "1 while the cluster's sender is connected, 0 from its disconnect until its series expire.",
            None,
            MetricType::Gauge,
        )?;
        for c in &clusters {
            let value = i64::from(matches!(c.link, LinkState::Up { .. }));
            ConstGauge::new(value).encode(up.encode_family(&[("cluster", c.cluster.as_str())])?)?;
        }
        let mut last = encoder.encode_descriptor(
            "relay_receiver_last_update_timestamp_seconds",
            "Unix time of the last change from the cluster: a batch that changed the cluster's \
             own series (the sender's relay_sender_* self-metrics do not count).",
            None,
            MetricType::Gauge,
        )?;
        for c in &clusters {
            let Some(at) = c.last_update else { continue };
            let Ok(since_epoch) = at.duration_since(std::time::UNIX_EPOCH) else {
                continue;
            };
            ConstGauge::new(since_epoch.as_secs_f64())
                .encode(last.encode_family(&[("cluster", c.cluster.as_str())])?)?;
        }
        let mut series = encoder.encode_descriptor(
            "relay_receiver_series",
            "Series held for the cluster.",
            None,
            MetricType::Gauge,
        )?;
        for c in &clusters {
            ConstGauge::new(c.series as i64)
                .encode(series.encode_family(&[("cluster", c.cluster.as_str())])?)?;
        }

        let counters: [ClusterCounter; 6] = [
            (
                "relay_receiver_frames_received",
                "Frames received from the cluster's senders.",
                |c| c.frames,
            ),
            (
                "relay_receiver_bytes_received",
                "Bytes of frames (header and payload) received from the cluster's senders.",
                |c| c.bytes,
            ),
            (
                "relay_receiver_updates_received",
                "Samples changed (updates plus removals) received for the cluster.",
                |c| c.updates,
            ),
            (
                "relay_receiver_duplicate_batches",
                "Batches ignored because they had already been applied (replays).",
                |c| c.duplicates,
            ),
            (
                "relay_receiver_series_dropped",
                "Series definitions dropped because the cluster reached the series cap.",
                |c| c.series_dropped,
            ),
            (
                "relay_receiver_families_refused",
                "Family definitions refused because their sample names clash with a family \
                 already exposed (same name of another kind, or a gauge x_total beside a \
                 counter x); their series are not exposed.",
                |c| c.families_refused,
            ),
        ];
        for (name, help, value) in counters {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for c in &clusters {
                let labels = [("cluster", c.cluster.as_str())];
                ConstCounter::new(value(c)).encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
