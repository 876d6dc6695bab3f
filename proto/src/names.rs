//! The names a sender gives itself in its `Hello`, and the one rule each follows. The
//! receiver checks them in the handshake and the sender at start-up, with the same functions,
//! so a name the sender accepts is never refused by the receiver.

use crate::MAX_NAME_BYTES;

/// Checks a cluster name, the `cluster` label of every series: 1 to [`MAX_NAME_BYTES`] bytes
/// of `[A-Za-z0-9._-]` (a valid label value everywhere, and a safe file or URL component).
///
/// # Errors
/// What is wrong with the name, naming it.
pub fn check_cluster_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "cluster name {name:?} must be 1 to {MAX_NAME_BYTES} bytes long"
        ));
    }
    match name.chars().find(|c| !is_cluster_name_char(*c)) {
        Some(c) => Err(format!(
            "cluster name {name:?} contains {c:?}; use only [A-Za-z0-9._-]"
        )),
        None => Ok(()),
    }
}

/// Whether `c` may appear in a cluster name (see [`check_cluster_name`]).
pub fn is_cluster_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Checks a sender id: 1 to [`MAX_NAME_BYTES`] bytes without control characters.
///
/// # Errors
/// What is wrong with the id.
pub fn check_sender_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_NAME_BYTES || id.chars().any(char::is_control) {
        return Err(format!(
            "sender_id must be 1 to {MAX_NAME_BYTES} bytes without control characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_are_label_safe_and_bounded() {
        assert!(check_cluster_name("prod-eu.1_a").is_ok());
        assert!(check_cluster_name(&"x".repeat(MAX_NAME_BYTES)).is_ok());
        for bad in ["", "a b", "a\"b", "ü", "a/b"] {
            let err = check_cluster_name(bad).expect_err(bad);
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        assert!(check_cluster_name(&"x".repeat(MAX_NAME_BYTES + 1)).is_err());
    }

    #[test]
    fn sender_ids_are_bounded_and_printable() {
        assert!(check_sender_id("host-a/1234").is_ok());
        assert!(check_sender_id("").is_err());
        assert!(check_sender_id("bad\nid").is_err());
    }
}
