//! Reads Prometheus text or OpenMetrics exposition into samples, so tests can compare what a
//! receiver serves with what the simulated cluster holds.

use std::collections::BTreeMap;

/// One exposed sample.
#[derive(Debug, Clone, PartialEq)]
pub struct ExposedSample {
    /// Metric name as exposed (counters with `_total`).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

impl ExposedSample {
    /// A label's value, or `""`.
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// Parses every sample line (comments and malformed lines are skipped).
pub fn parse(text: &str) -> Vec<ExposedSample> {
    text.lines().filter_map(parse_line).collect()
}

/// Samples of metric `name` whose labels include all of `labels`.
pub fn select<'a>(
    samples: &'a [ExposedSample],
    name: &'a str,
    labels: &'a [(&'a str, &'a str)],
) -> impl Iterator<Item = &'a ExposedSample> + 'a {
    samples
        .iter()
        .filter(move |s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == *v))
}

/// The value of `series`, written as in an exposition (`name{k="v",...}` or `name`): the
/// sample with exactly that name and those labels, in any order.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    let wanted = parse_line(&format!("{series} 0"))?;
    text.lines()
        .filter(|line| line.starts_with(&wanted.name))
        .filter_map(parse_line)
        .find(|s| s.name == wanted.name && s.labels == wanted.labels)
        .map(|s| s.value)
}

/// The value of the first sample `name` (as exposed: counters with `_total`) in exposition
/// `text` whose labels include all of `labels`.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    values(text, name, labels).into_iter().next()
}

/// The values of every sample `name` in `text` whose labels include all of `labels`, in
/// the order of the exposition.
pub fn values(text: &str, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    text.lines()
        // Cheap pre-check before parsing: the line starts with the name.
        .filter(|line| line.starts_with(name))
        .filter_map(parse_line)
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == *v))
        .map(|s| s.value)
        .collect()
}

/// The sum of every sample `name` in `text` whose labels include all of `labels` (0 when
/// there is none).
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    values(text, name, labels).into_iter().sum()
}

fn parse_line(line: &str) -> Option<ExposedSample> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut body) = rest.strip_prefix('{') {
        loop {
            body = body.trim_start_matches([',', ' ']);
            if let Some(after) = body.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = body.find('=')?;
            let key = body[..eq].trim().to_owned();
            let mut chars = body[eq + 1..].strip_prefix('"')?.char_indices();
            let mut value = String::new();
            let close = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break i,
                    c => value.push(c),
                }
            };
            labels.insert(key, value);
            body = &body[eq + 2 + close + 1..];
        }
    }
    let value = match rest.split_whitespace().next()? {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(ExposedSample {
        name: name.to_owned(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_escapes_and_plain_samples() {
        let text = "# TYPE a gauge\n\
                    a{cluster=\"c\",pod=\"p\\\"q\",x=\"1,2\"} 1\n\
                    b 2.5\n\
                    c_total{k=\"v\",} 3\n\
                    d{} NaN\n";
        let s = parse(text);
        assert_eq!(s.len(), 4, "{s:?}");
        assert_eq!(s[0].label("pod"), "p\"q");
        assert_eq!(s[0].label("x"), "1,2");
        assert_eq!(s[1].name, "b");
        assert_eq!(s[1].value, 2.5);
        assert_eq!(s[2].label("k"), "v");
        assert!(s[3].value.is_nan());
        assert_eq!(select(&s, "a", &[("cluster", "c")]).count(), 1);
    }

    #[test]
    fn samples_are_looked_up_by_name_and_some_labels() {
        let text = "# HELP x_total x\n\
                    x_total{cluster=\"a\",kind=\"k1\"} 2\n\
                    x_total{cluster=\"b\",kind=\"k1\"} 3\n\
                    x_total_more{cluster=\"a\"} 100\n\
                    up 1\n";
        assert_eq!(value(text, "x_total", &[("cluster", "b")]), Some(3.0));
        assert_eq!(value(text, "x_total", &[("cluster", "c")]), None);
        assert_eq!(values(text, "x_total", &[("kind", "k1")]), [2.0, 3.0]);
        assert_eq!(
            sum(text, "x_total", &[]),
            5.0,
            "x_total_more is another name"
        );
        assert_eq!(sum(text, "nothing", &[]), 0.0);
        assert_eq!(value(text, "up", &[]), Some(1.0));
        assert_eq!(sample(text, r#"x_total{kind="k1",cluster="b"}"#), Some(3.0));
        assert_eq!(sample(text, r#"x_total{cluster="b"}"#), None, "all labels");
        assert_eq!(sample(text, "up"), Some(1.0));
        assert_eq!(sample(text, "x_total"), None);
    }
}
