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

fn parse_line(line: &str) -> Option<ExposedSample> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let mut labels = BTreeMap::new();
    let rest = if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let mut end = None;
        loop {
            // label name up to '='
            let start = chars.peek()?.0;
            if body[start..].starts_with('}') {
                end = Some(start + 1);
                break;
            }
            let eq = body[start..].find('=')? + start;
            let key = body[start..eq].trim_start_matches(',').trim().to_owned();
            while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                chars.next();
            }
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                let (_, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.insert(key, value);
            match chars.peek() {
                Some((_, ',')) => {
                    chars.next();
                }
                Some((i, '}')) => {
                    end = Some(i + 1);
                    break;
                }
                _ => return None,
            }
            if chars.peek().is_some_and(|(_, c)| *c == '}') {
                end = chars.peek().map(|(i, _)| i + 1);
                break;
            }
        }
        &body[end?..]
    } else {
        rest
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
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
}
