//! Label values read back from a series' pre-rendered labels, for the readers (the status
//! page, scaling events) that need a label of a series the store keeps only as text.

/// The value of label `key` in a series' rendered labels `,key="v",...` (what follows its
/// family's `name{cluster="c"`), unescaped.
pub(crate) fn label_value(labels: &str, key: &str) -> Option<String> {
    let mut rest = labels;
    loop {
        rest = rest.strip_prefix(',')?;
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
        rest = &after[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_read_back_from_rendered_labels() {
        let labels = r#",pod="a\"b\\c\nd",phase="Running""#;
        assert_eq!(label_value(labels, "pod").as_deref(), Some("a\"b\\c\nd"));
        assert_eq!(label_value(labels, "phase").as_deref(), Some("Running"));
        assert_eq!(label_value(labels, "node"), None);
        assert_eq!(label_value("", "pod"), None);
        assert_eq!(label_value(",pod=\"unterminated", "pod"), None);
    }
}
