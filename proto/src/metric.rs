//! The metric model a [`Batch`](crate::Batch) carries: families, series and values.
//!
//! A family is defined once per sender epoch ([`FamilyDef`]), a series once per object
//! ([`SeriesDef`]: family + label pairs), and from then on a changed sample costs only its
//! series id and value. [`Updates`] keeps ids sorted and sends each as the gap from the
//! previous one, and [`Value`] sends integral values as zig-zag varints, so the common
//! steady-state sample (a phase flipping 0 ↔ 1, a replica count, a byte count) takes 3 to 7
//! bytes on the wire, and a float 10.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// Identifies a family within one sender epoch.
pub type FamilyId = u32;

/// Identifies a series within one sender epoch.
pub type SeriesId = u32;

/// Most labels a series may carry (the receiver adds `cluster`).
pub const MAX_LABELS: usize = 32;

/// Longest label value accepted, in bytes (container images can be long).
pub const MAX_LABEL_VALUE_BYTES: usize = 1024;

/// Longest metric or label name accepted, in bytes.
pub const MAX_METRIC_NAME_BYTES: usize = 200;

/// Longest help text accepted, in bytes.
pub const MAX_HELP_BYTES: usize = 1024;

/// How Prometheus should treat a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MetricKind {
    /// A value that goes up and down.
    Gauge,
    /// A monotonically increasing value. The family name carries no `_total` suffix; the
    /// exposition adds it to the sample name (OpenMetrics rules), as kube-state-metrics'
    /// `kube_pod_container_status_restarts_total` shows.
    Counter,
}

/// Defines a metric family for the rest of the sender epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyDef {
    /// Id later [`SeriesDef`]s refer to.
    pub id: FamilyId,
    /// Metric name, e.g. `kube_pod_status_phase` (counters without `_total`).
    pub name: String,
    /// One line of help text.
    pub help: String,
    /// Gauge or counter.
    pub kind: MetricKind,
}

impl FamilyDef {
    /// Checks the name, help and kind against Prometheus naming rules and our limits.
    ///
    /// # Errors
    /// [`Error::Violation`] naming the offending part.
    pub fn validate(&self) -> Result<(), Error> {
        validate_metric_name(&self.name)?;
        if self.kind == MetricKind::Counter && self.name.ends_with("_total") {
            return Err(Error::Violation(format!(
                "counter family {:?} must be named without the `_total` suffix",
                self.name
            )));
        }
        if self.help.len() > MAX_HELP_BYTES {
            return Err(Error::Violation(format!(
                "help of family {:?} is {} bytes, limit {MAX_HELP_BYTES}",
                self.name,
                self.help.len()
            )));
        }
        Ok(())
    }
}

/// Defines a series: a family plus label pairs. Label names are unique; `cluster` is
/// reserved for the receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesDef {
    /// Id later updates and removals refer to.
    pub id: SeriesId,
    /// The family this series belongs to.
    pub family: FamilyId,
    /// Label name/value pairs, in the order they should be exposed.
    pub labels: Vec<(String, String)>,
}

impl SeriesDef {
    /// Checks label names and values against Prometheus rules and our limits.
    ///
    /// # Errors
    /// [`Error::Violation`] naming the offending label.
    pub fn validate(&self) -> Result<(), Error> {
        if self.labels.len() > MAX_LABELS {
            return Err(Error::Violation(format!(
                "series {} has {} labels, limit {MAX_LABELS}",
                self.id,
                self.labels.len()
            )));
        }
        for (i, (name, value)) in self.labels.iter().enumerate() {
            validate_label_name(name)?;
            if name == "cluster" {
                return Err(Error::Violation(format!(
                    "series {} uses the reserved label `cluster`",
                    self.id
                )));
            }
            if self.labels[..i].iter().any(|(other, _)| other == name) {
                return Err(Error::Violation(format!(
                    "series {} repeats label {name:?}",
                    self.id
                )));
            }
            if value.len() > MAX_LABEL_VALUE_BYTES {
                return Err(Error::Violation(format!(
                    "label {name:?} of series {} is {} bytes, limit {MAX_LABEL_VALUE_BYTES}",
                    self.id,
                    value.len()
                )));
            }
        }
        Ok(())
    }
}

/// Checks a metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`, at most [`MAX_METRIC_NAME_BYTES`].
///
/// # Errors
/// [`Error::Violation`] naming the bad name.
pub fn validate_metric_name(name: &str) -> Result<(), Error> {
    validate_identifier(name, "metric", |c| c == ':')
}

/// Checks a label name: `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`.
///
/// # Errors
/// [`Error::Violation`] naming the bad name.
pub fn validate_label_name(name: &str) -> Result<(), Error> {
    validate_identifier(name, "label", |_| false)?;
    if name.starts_with("__") {
        return Err(Error::Violation(format!(
            "label name {name:?} is reserved (starts with `__`)"
        )));
    }
    Ok(())
}

fn validate_identifier(name: &str, what: &str, extra: impl Fn(char) -> bool) -> Result<(), Error> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || extra(c));
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || extra(c));
    if !first_ok || !rest_ok || name.len() > MAX_METRIC_NAME_BYTES {
        return Err(Error::Violation(format!("invalid {what} name {name:?}")));
    }
    Ok(())
}

/// A sample value. Integral values travel as zig-zag varints (1 to 9 bytes), others as
/// IEEE-754 doubles (8 bytes). Use [`Value::from`] to pick the compact form.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum Value {
    /// An integral value.
    Int(i64),
    /// Any other value, including NaN and infinities.
    Float(f64),
}

impl Value {
    /// The value as Prometheus sees it.
    pub fn as_f64(self) -> f64 {
        match self {
            Value::Int(i) => i as f64,
            Value::Float(f) => f,
        }
    }
}

/// Largest magnitude of an integer that an `f64` holds exactly (2^53).
const EXACT_INT_LIMIT: f64 = 9_007_199_254_740_992.0;

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        // Only values that round-trip bit for bit become integers (so -0.0 stays a float).
        if v.abs() <= EXACT_INT_LIMIT && (v as i64 as f64).to_bits() == v.to_bits() {
            Value::Int(v as i64)
        } else {
            Value::Float(v)
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl PartialEq for Value {
    /// Equal when Prometheus would see the same bits (so NaN equals NaN).
    fn eq(&self, other: &Self) -> bool {
        self.as_f64().to_bits() == other.as_f64().to_bits()
    }
}

/// Values for a set of series: ids strictly increasing, each at most once.
///
/// On the wire each id is the gap from the previous one (the first from zero), so a batch
/// touching nearby ids spends about one byte per id. Decoding rejects gaps that do not
/// increase or overflow the id space.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Updates(Vec<(SeriesId, Value)>);

impl Updates {
    /// Builds from any pairs; sorts by id and keeps the *last* value given for an id.
    pub fn from_unsorted(mut pairs: Vec<(SeriesId, Value)>) -> Self {
        // A stable sort keeps equal ids in input order, so the last one given wins.
        pairs.sort_by_key(|(id, _)| *id);
        let mut out: Vec<(SeriesId, Value)> = Vec::with_capacity(pairs.len());
        for (id, value) in pairs {
            match out.last_mut() {
                Some(last) if last.0 == id => last.1 = value,
                _ => out.push((id, value)),
            }
        }
        Updates(out)
    }

    /// Builds from pairs already sorted by strictly increasing id.
    ///
    /// # Errors
    /// [`Error::Violation`] if ids are not strictly increasing.
    pub fn from_sorted(pairs: Vec<(SeriesId, Value)>) -> Result<Self, Error> {
        if let Some(w) = pairs.windows(2).find(|w| w[0].0 >= w[1].0) {
            return Err(Error::Violation(format!(
                "update ids not strictly increasing: {} then {}",
                w[0].0, w[1].0
            )));
        }
        Ok(Updates(pairs))
    }

    /// The pairs, sorted by id.
    pub fn as_slice(&self) -> &[(SeriesId, Value)] {
        &self.0
    }

    /// Number of updated series.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no series is updated.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterates over `(id, value)` in increasing id order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &(SeriesId, Value)> {
        self.0.iter()
    }

    /// Takes the pairs out.
    pub fn into_inner(self) -> Vec<(SeriesId, Value)> {
        self.0
    }
}

impl Serialize for Updates {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        let mut prev = 0;
        for &(id, value) in &self.0 {
            seq.serialize_element(&(id - prev, value))?;
            prev = id;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Updates {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(UpdatesVisitor)
    }
}

struct UpdatesVisitor;

impl<'de> Visitor<'de> for UpdatesVisitor {
    type Value = Updates;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence of (id gap, value) pairs")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Updates, A::Error> {
        // Never trust the announced length for allocation beyond a modest cap.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        let mut prev: Option<SeriesId> = None;
        while let Some((gap, value)) = seq.next_element::<(u32, Value)>()? {
            let id = match prev {
                None => gap,
                Some(_) if gap == 0 => {
                    return Err(de::Error::custom("update ids must strictly increase"));
                }
                Some(p) => p
                    .checked_add(gap)
                    .ok_or_else(|| de::Error::custom("update id overflows u32"))?,
            };
            out.push((id, value));
            prev = Some(id);
        }
        Ok(Updates(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_f64_keeps_integers_compact_and_floats_exact() {
        assert!(matches!(Value::from(3.0), Value::Int(3)));
        assert!(matches!(Value::from(-7.0), Value::Int(-7)));
        assert!(matches!(Value::from(0.5), Value::Float(_)));
        assert!(matches!(Value::from(-0.0), Value::Float(_)));
        assert!(matches!(Value::from(f64::NAN), Value::Float(_)));
        assert!(matches!(Value::from(1e300), Value::Float(_)));
        assert_eq!(Value::from(f64::NAN), Value::Float(f64::NAN));
    }

    #[test]
    fn from_unsorted_sorts_and_last_value_wins() {
        let u = Updates::from_unsorted(vec![
            (5, Value::Int(1)),
            (2, Value::Int(1)),
            (5, Value::Int(2)),
        ]);
        assert_eq!(u.as_slice(), &[(2, Value::Int(1)), (5, Value::Int(2))]);
    }

    #[test]
    fn from_sorted_rejects_repeats() {
        assert!(Updates::from_sorted(vec![(1, Value::Int(0)), (1, Value::Int(1))]).is_err());
        assert!(Updates::from_sorted(vec![(1, Value::Int(0)), (2, Value::Int(1))]).is_ok());
    }

    #[test]
    fn names_follow_prometheus_rules() {
        assert!(validate_metric_name("kube_pod_info").is_ok());
        assert!(validate_metric_name("a:b_c").is_ok());
        assert!(validate_metric_name("9lives").is_err());
        assert!(validate_metric_name("").is_err());
        assert!(validate_metric_name("bad-name").is_err());
        assert!(validate_label_name("namespace").is_ok());
        assert!(validate_label_name("__name__").is_err());
        assert!(validate_label_name("a:b").is_err());
    }

    #[test]
    fn series_validation_names_the_problem() {
        let def = |labels: Vec<(&str, &str)>| SeriesDef {
            id: 1,
            family: 0,
            labels: labels
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        };
        assert!(
            def(vec![("pod", "a"), ("namespace", "b")])
                .validate()
                .is_ok()
        );
        let err = def(vec![("cluster", "x")])
            .validate()
            .expect_err("the cluster label is the receiver's")
            .to_string();
        assert!(err.contains("cluster"), "{err}");
        let err = def(vec![("pod", "a"), ("pod", "b")])
            .validate()
            .expect_err("a repeated label is refused")
            .to_string();
        assert!(err.contains("repeats"), "{err}");
        let long = "x".repeat(MAX_LABEL_VALUE_BYTES + 1);
        assert!(def(vec![("image", &long)]).validate().is_err());
    }

    #[test]
    fn counter_families_carry_no_total_suffix() {
        let fam = |name: &str, kind| FamilyDef {
            id: 0,
            name: name.into(),
            help: "h".into(),
            kind,
        };
        assert!(fam("restarts", MetricKind::Counter).validate().is_ok());
        assert!(
            fam("restarts_total", MetricKind::Counter)
                .validate()
                .is_err()
        );
        assert!(fam("restarts_total", MetricKind::Gauge).validate().is_ok());
    }
}
