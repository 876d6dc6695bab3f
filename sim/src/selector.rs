//! Label and field selectors, parsed from query strings as the API server does.
//!
//! Label selectors: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, joined by
//! commas. Field selectors: `f=v`, `f==v`, `f!=v`, joined by commas, with `\` escapes.

use std::collections::BTreeMap;

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LabelSelector(Vec<LabelReq>);

impl LabelSelector {
    /// Parses a selector.
    ///
    /// # Errors
    /// A message like the API server's when the text does not parse.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for term in split_top_level(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            reqs.push(parse_label_term(term)?);
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether the selector has no requirements.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub(crate) fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            LabelReq::Eq(k, v) => labels.get(k) == Some(v),
            LabelReq::NotEq(k, v) => labels.get(k) != Some(v),
            LabelReq::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            LabelReq::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            LabelReq::Exists(k) => labels.contains_key(k),
            LabelReq::NotExists(k) => !labels.contains_key(k),
        })
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn parse_label_term(term: &str) -> Result<LabelReq, String> {
    let bad = || {
        format!(
            "unable to parse requirement: found '{term}', expected: in, notin, =, ==, !=, gt, lt"
        )
    };
    if let Some(key) = term.strip_prefix('!') {
        let key = key.trim();
        return if valid_key(key) {
            Ok(LabelReq::NotExists(key.to_string()))
        } else {
            Err(bad())
        };
    }
    for (op, ctor) in [
        ("!=", LabelReq::NotEq as fn(String, String) -> LabelReq),
        ("==", LabelReq::Eq),
        ("=", LabelReq::Eq),
    ] {
        if let Some((k, v)) = term.split_once(op) {
            let (k, v) = (k.trim(), v.trim());
            if !valid_key(k) || v.contains([' ', '(', ')', '=', '!']) {
                return Err(bad());
            }
            return Ok(ctor(k.to_string(), v.to_string()));
        }
    }
    let words: Vec<&str> = term.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let key = words[0].trim();
        let rest = words[1].trim();
        let (op, set) = if let Some(set) = rest.strip_prefix("notin") {
            ("notin", set)
        } else if let Some(set) = rest.strip_prefix("in") {
            ("in", set)
        } else {
            return Err(bad());
        };
        let set = set.trim();
        let inner = set
            .strip_prefix('(')
            .and_then(|s| s.strip_suffix(')'))
            .ok_or_else(bad)?;
        let values: Vec<String> = inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        if !valid_key(key) {
            return Err(bad());
        }
        return Ok(if op == "in" {
            LabelReq::In(key.to_string(), values)
        } else {
            LabelReq::NotIn(key.to_string(), values)
        });
    }
    if valid_key(term) {
        Ok(LabelReq::Exists(term.to_string()))
    } else {
        Err(bad())
    }
}

/// One field requirement: field, equality (true) or inequality (false), value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldReq {
    pub field: String,
    pub equal: bool,
    pub value: String,
}

/// A parsed field selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector(pub Vec<FieldReq>);

impl FieldSelector {
    /// Parses a selector.
    ///
    /// # Errors
    /// A message like the API server's when a term has no operator.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for term in split_unescaped(text, ',') {
            if term.trim().is_empty() {
                continue;
            }
            let (field, equal, value) = split_field_term(&term)
                .ok_or_else(|| format!("invalid selector: '{text}'; can't understand '{term}'"))?;
            reqs.push(FieldReq {
                field: field.trim().to_string(),
                equal,
                value: unescape(&value),
            });
        }
        Ok(FieldSelector(reqs))
    }

    /// Whether the selector has no requirements.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first field not accepted by `selectable`, if any.
    pub(crate) fn unsupported(&self, selectable: impl Fn(&str) -> bool) -> Option<&str> {
        self.0
            .iter()
            .map(|r| r.field.as_str())
            .find(|f| !selectable(f))
    }

    /// Whether the object's `fields` satisfy every requirement. A field the object does not
    /// carry compares as the empty string.
    pub(crate) fn matches(&self, fields: &[(&'static str, String)]) -> bool {
        self.0.iter().all(|r| {
            let value = fields
                .iter()
                .find(|(f, _)| *f == r.field)
                .map(|(_, v)| v.as_str())
                .unwrap_or("");
            (value == r.value) == r.equal
        })
    }

    /// The value required by an equality on `field`, if any.
    pub(crate) fn required(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|r| r.equal && r.field == field)
            .map(|r| r.value.as_str())
    }
}

fn split_unescaped(text: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in text.chars() {
        if escaped {
            current.push('\\');
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    parts.push(current);
    parts
}

fn split_field_term(term: &str) -> Option<(String, bool, String)> {
    let bytes: Vec<char> = term.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            '\\' => i += 2,
            '!' if bytes.get(i + 1) == Some(&'=') => {
                return Some((
                    bytes[..i].iter().collect(),
                    false,
                    bytes[i + 2..].iter().collect(),
                ));
            }
            '=' => {
                let skip = if bytes.get(i + 1) == Some(&'=') { 2 } else { 1 };
                return Some((
                    bytes[..i].iter().collect(),
                    true,
                    bytes[i + skip..].iter().collect(),
                ));
            }
            _ => i += 1,
        }
    }
    None
}

fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut escaped = false;
    for c in text.chars() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors_follow_the_api_grammar() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        let ok = |s: &str| LabelSelector::parse(s).expect("parses").matches(&l);
        assert!(ok(""));
        assert!(ok("app=web"));
        assert!(ok("app==web,tier"));
        assert!(!ok("app!=web"));
        assert!(ok("app in (web, api)"));
        assert!(!ok("app notin (web)"));
        assert!(ok("tier,!missing"));
        assert!(!ok("missing"));
        assert!(ok("app in (web),tier notin (back)"));
        assert!(LabelSelector::parse("app=(x").is_err());
    }

    #[test]
    fn field_selectors_compare_missing_fields_as_empty() {
        let f = vec![
            ("reason", "SuccessfulRescale".to_string()),
            ("involvedObject.name", "php-apache".to_string()),
        ];
        let ok = |s: &str| FieldSelector::parse(s).expect("parses").matches(&f);
        assert!(ok("reason=SuccessfulRescale"));
        assert!(ok(
            "reason==SuccessfulRescale,involvedObject.name=php-apache"
        ));
        assert!(!ok("reason!=SuccessfulRescale"));
        assert!(ok("spec.nodeName="));
        assert!(!ok("type=Warning"));
        assert!(FieldSelector::parse("reason").is_err());
    }

    #[test]
    fn field_selector_values_may_escape_commas() {
        let s = FieldSelector::parse(r"reason=a\,b").expect("parses");
        assert_eq!(s.0[0].value, "a,b");
    }
}
