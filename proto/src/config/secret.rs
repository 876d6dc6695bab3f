//! The one reader of secrets kept in files (`--token-file`, the receiver's
//! `--http-basic-auth-password-file`): surrounding whitespace is trimmed, as Prometheus does
//! for its `password_file`, so an editor's trailing newline or space never turns into an
//! endless `unauthorized` loop; a missing, unreadable or empty file stops the start-up
//! naming the file.

use std::path::Path;

use super::Error;

/// Most bytes read from a secret file: a secret is short, a device or a log file is not.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 << 10;

/// Reads the secret (`what`: `token`, `password`) in `path`, trimmed of surrounding
/// whitespace.
///
/// # Errors
/// [`Error::SecretFile`] when the file cannot be read (its name and the OS error),
/// [`Error::EmptySecretFile`] when it holds nothing but whitespace or is too large.
pub fn read_secret_file(what: &'static str, path: &Path) -> Result<String, Error> {
    use std::io::Read;

    let read = || -> std::io::Result<String> {
        let mut text = String::new();
        std::fs::File::open(path)?
            .take(MAX_SECRET_FILE_BYTES + 1)
            .read_to_string(&mut text)?;
        Ok(text)
    };
    let text = read().map_err(|source| Error::SecretFile {
        what,
        path: path.to_owned(),
        source,
    })?;
    let problem = if text.len() as u64 > MAX_SECRET_FILE_BYTES {
        Some(format!("is larger than {MAX_SECRET_FILE_BYTES} bytes"))
    } else if text.trim().is_empty() {
        Some("is empty".to_owned())
    } else {
        None
    };
    match problem {
        Some(problem) => Err(Error::BadSecretFile {
            what,
            path: path.to_owned(),
            problem,
        }),
        None => Ok(text.trim().to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surrounding_whitespace_is_trimmed_once_for_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        for raw in ["s3cret", "s3cret\n", "s3cret \r\n", "  s3cret\t\n\n"] {
            std::fs::write(&path, raw).expect("write");
            assert_eq!(read_secret_file("token", &path).expect("read"), "s3cret");
        }
        std::fs::write(&path, "in side\n").expect("write");
        assert_eq!(read_secret_file("token", &path).expect("read"), "in side");
    }

    #[test]
    fn a_missing_or_empty_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.tok");
        let err = read_secret_file("token", &missing).expect_err("missing");
        assert!(err.to_string().contains("missing.tok"), "{err}");
        assert!(err.to_string().contains("token file"), "{err}");

        let empty = dir.path().join("empty.tok");
        std::fs::write(&empty, " \n").expect("write");
        let err = read_secret_file("token", &empty).expect_err("empty");
        assert!(err.to_string().contains("empty.tok"), "{err}");
        assert!(err.to_string().contains("is empty"), "{err}");

        let err = read_secret_file("token", dir.path()).expect_err("a directory");
        assert!(
            err.to_string().contains(&dir.path().display().to_string()),
            "{err}"
        );
    }
}
