//! Label values read back from a series' pre-rendered exposition prefix, for the readers
//! (the status page, scaling events) that need a label of a series the store keeps only as
//! text.

/// The value of label `key` in a series prefix `name{cluster="c",key="v",...}`, unescaped.
pub(crate) fn label_value(prefix: &str, key: &str) -> Option<String> {
    let mut rest = &prefix[prefix.find('{')? + 1..];
    loop {
        let (name, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        if name == key {
            return Some(value);
        }
        rest = after[end + 1..].strip_prefix(',')?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_read_back_from_prefixes() {
        let prefix = r#"x{cluster="c",pod="a\"b\\c\nd",phase="Running"}"#;
        assert_eq!(label_value(prefix, "cluster").as_deref(), Some("c"));
        assert_eq!(label_value(prefix, "pod").as_deref(), Some("a\"b\\c\nd"));
        assert_eq!(label_value(prefix, "phase").as_deref(), Some("Running"));
        assert_eq!(label_value(prefix, "node"), None);
        assert_eq!(label_value("x{cluster=\"c\"", "pod"), None);
    }
}
