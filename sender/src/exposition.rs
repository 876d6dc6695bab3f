//! The Prometheus text format (version 0.0.4) for the sender's own `/metrics`: each family
//! once, with `# HELP` and `# TYPE`, counters named `x_total` on both the header and the
//! samples (as kube-state-metrics and the receiver's text format expose them), label values
//! and help escaped as the format requires.

use std::collections::BTreeMap;
use std::fmt::Write;

use kube_relay_proto::MetricKind;

use crate::family::Family;
use crate::series::{Sample, SeriesSet};

/// The content type of the format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// An exposition being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Self {
        Exposition::default()
    }

    /// Starts family `name` (a counter's name includes `_total`).
    pub fn family(&mut self, name: &str, help: &str, kind: MetricKind) {
        let kind = match kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample of the family started last.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                for c in value.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.push_value(value);
        self.out.push('\n');
    }

    /// A family with its one unlabelled sample.
    pub fn single(&mut self, name: &str, help: &str, kind: MetricKind, value: f64) {
        self.family(name, help, kind);
        self.sample(name, &[], value);
    }

    /// Every sample of `set`, grouped by family in catalogue order.
    pub fn series(&mut self, set: &SeriesSet<'_>) {
        let mut families: BTreeMap<Family, Vec<&Sample<'_>>> = BTreeMap::new();
        for sample in set.samples() {
            families.entry(sample.family).or_default().push(sample);
        }
        for (family, samples) in families {
            let name = family.sample_name();
            self.family(&name, family.help(), family.kind());
            for sample in samples {
                let labels: Vec<(&str, &str)> = family
                    .label_names()
                    .iter()
                    .copied()
                    .zip(sample.labels.iter().map(|l| l.as_ref()))
                    .collect();
                self.sample(&name, &labels, sample.value);
            }
        }
    }

    fn push_value(&mut self, value: f64) {
        if value.is_nan() {
            self.out.push_str("NaN");
        } else if value.is_infinite() {
            self.out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(self.out, "{value}");
        }
    }

    /// The text.
    pub fn into_string(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_carry_help_and_type_and_labels_are_escaped() {
        let mut set = SeriesSet::new();
        set.push(Family::SenderReconnects, Vec::<&str>::new(), 3.0);
        set.push(Family::SenderApiErrors, ["pods", "say \"hi\"\\\n"], 2.0);
        set.push(Family::SenderQueueDepth, Vec::<&str>::new(), 0.5);
        let mut out = Exposition::new();
        out.series(&set);
        out.single("g", "a\\b\nc", MetricKind::Gauge, f64::INFINITY);
        assert_eq!(
            out.into_string(),
            "# HELP relay_sender_api_errors_total Errors from the Kubernetes API, by resource and kind.\n\
             # TYPE relay_sender_api_errors_total counter\n\
             relay_sender_api_errors_total{resource=\"pods\",kind=\"say \\\"hi\\\"\\\\\\n\"} 2\n\
             # HELP relay_sender_queue_depth Changed samples waiting to be sent (coalesced per series) plus unacknowledged batches' samples.\n\
             # TYPE relay_sender_queue_depth gauge\n\
             relay_sender_queue_depth 0.5\n\
             # HELP relay_sender_reconnects_total Connections to the receiver after the first.\n\
             # TYPE relay_sender_reconnects_total counter\n\
             relay_sender_reconnects_total 3\n\
             # HELP g a\\\\b\\nc\n\
             # TYPE g gauge\n\
             g +Inf\n"
        );
    }
}
