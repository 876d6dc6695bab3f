//! `--selector`: a Kubernetes label selector checked at start-up with the API server's own
//! grammar (apimachinery `labels.Parse`), so a selector that can never work stops the sender
//! naming it, instead of every pod list answering `400 Bad Request` while the other
//! resources are relayed.
//!
//! ```text
//! selector    := requirement ("," requirement)*         (empty: everything)
//! requirement := "!" KEY | KEY
//!              | KEY ("=" | "==" | "!=") VALUE
//!              | KEY ("in" | "notin") "(" VALUE ("," VALUE)* ")"
//!              | KEY (">" | "<") INTEGER
//! KEY         := [DNS-subdomain "/"] name     (name: 1-63 of [A-Za-z0-9._-], alphanumeric ends)
//! VALUE       := "" | name
//! ```

/// Checks a label selector.
///
/// # Errors
/// What is wrong and where, for a message that names the selector.
pub fn check_label_selector(selector: &str) -> Result<(), String> {
    let mut tokens = Lexer::new(selector).tokens()?.into_iter().peekable();
    if tokens.peek().is_none() {
        return Ok(());
    }
    loop {
        requirement(&mut tokens)?;
        match tokens.next() {
            None => return Ok(()),
            Some(Token::Comma) => {}
            Some(other) => return Err(format!("expected `,` between requirements, found {other}")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Not,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::Word(w) => write!(f, "{w:?}"),
            Token::Not => f.write_str("`!`"),
            Token::Eq => f.write_str("`=`"),
            Token::DoubleEq => f.write_str("`==`"),
            Token::NotEq => f.write_str("`!=`"),
            Token::Gt => f.write_str("`>`"),
            Token::Lt => f.write_str("`<`"),
            Token::Open => f.write_str("`(`"),
            Token::Close => f.write_str("`)`"),
            Token::Comma => f.write_str("`,`"),
        }
    }
}

struct Lexer<'a> {
    rest: &'a str,
}

impl<'a> Lexer<'a> {
    fn new(s: &'a str) -> Self {
        Lexer { rest: s }
    }

    fn tokens(mut self) -> Result<Vec<Token>, String> {
        let mut out = Vec::new();
        loop {
            self.rest = self.rest.trim_start();
            let Some(c) = self.rest.chars().next() else {
                return Ok(out);
            };
            let (token, len) = match c {
                '!' if self.rest.starts_with("!=") => (Token::NotEq, 2),
                '!' => (Token::Not, 1),
                '=' if self.rest.starts_with("==") => (Token::DoubleEq, 2),
                '=' => (Token::Eq, 1),
                '>' => (Token::Gt, 1),
                '<' => (Token::Lt, 1),
                '(' => (Token::Open, 1),
                ')' => (Token::Close, 1),
                ',' => (Token::Comma, 1),
                c if is_word_char(c) => {
                    let len = self
                        .rest
                        .find(|c: char| !is_word_char(c))
                        .unwrap_or(self.rest.len());
                    (Token::Word(self.rest[..len].to_owned()), len)
                }
                c => return Err(format!("unexpected character {c:?}")),
            };
            out.push(token);
            self.rest = &self.rest[len..];
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')
}

fn requirement(
    tokens: &mut std::iter::Peekable<impl Iterator<Item = Token>>,
) -> Result<(), String> {
    let negated = tokens.next_if_eq(&Token::Not).is_some();
    let key = match tokens.next() {
        Some(Token::Word(key)) => key,
        Some(other) => return Err(format!("expected a label key, found {other}")),
        None => return Err("expected a label key, found the end".to_owned()),
    };
    check_key(&key)?;
    if negated {
        return Ok(());
    }
    match tokens.peek().cloned() {
        None | Some(Token::Comma) => Ok(()),
        Some(Token::Eq | Token::DoubleEq | Token::NotEq) => {
            tokens.next();
            match tokens.peek() {
                Some(Token::Word(_)) => {
                    if let Some(Token::Word(value)) = tokens.next() {
                        check_value(&value)?;
                    }
                    Ok(())
                }
                // `key=` selects the empty value.
                None | Some(Token::Comma) => Ok(()),
                Some(other) => Err(format!("expected a value after {key:?}, found {other}")),
            }
        }
        Some(Token::Gt | Token::Lt) => {
            tokens.next();
            match tokens.next() {
                Some(Token::Word(n)) if n.parse::<i64>().is_ok() => Ok(()),
                Some(other) => Err(format!("expected an integer after {key:?}, found {other}")),
                None => Err(format!("expected an integer after {key:?}")),
            }
        }
        Some(Token::Word(op)) if op == "in" || op == "notin" => {
            tokens.next();
            if tokens.next() != Some(Token::Open) {
                return Err(format!("expected `(` after `{key} {op}`"));
            }
            loop {
                match tokens.next() {
                    Some(Token::Word(value)) => check_value(&value)?,
                    Some(Token::Comma) => continue,
                    Some(Token::Close) => return Ok(()),
                    Some(other) => return Err(format!("expected a value or `)`, found {other}")),
                    None => return Err(format!("`{key} {op} (` is not closed")),
                }
                match tokens.next() {
                    Some(Token::Comma) => {}
                    Some(Token::Close) => return Ok(()),
                    Some(other) => return Err(format!("expected `,` or `)`, found {other}")),
                    None => return Err(format!("`{key} {op} (` is not closed")),
                }
            }
        }
        Some(other) => Err(format!(
            "expected an operator (=, ==, !=, in, notin) after {key:?}, found {other}"
        )),
    }
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name.
fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let valid = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|part| {
                !part.is_empty()
                    && part.len() <= 63
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
        if !valid {
            return Err(format!(
                "label key {key:?}: the prefix {prefix:?} is not a DNS subdomain"
            ));
        }
    }
    if name.is_empty() {
        return Err(format!("label key {key:?} has no name"));
    }
    check_name(name).map_err(|problem| format!("label key {key:?}: {problem}"))
}

fn check_value(value: &str) -> Result<(), String> {
    check_name(value).map_err(|problem| format!("label value {value:?}: {problem}"))
}

/// A label name or value: at most 63 of `[A-Za-z0-9._-]`, beginning and ending with an
/// alphanumeric character.
fn check_name(name: &str) -> Result<(), String> {
    if name.len() > 63 {
        return Err("longer than 63 characters".to_owned());
    }
    if name.contains('/') {
        return Err("`/` is only allowed once, after a key's prefix".to_owned());
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(name.chars().next()) || !alnum(name.chars().last()) {
        return Err("must begin and end with a letter or digit".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_api_server_accepts_is_accepted() {
        for ok in [
            "",
            "app=web",
            "app==web",
            "app = web , tier != cache",
            "app",
            "!canary",
            "app in (web, api)",
            "tier notin (cache)",
            "app.kubernetes.io/name=kube-relay",
            "example.com/team in (a,b),env",
            "app=",
            "replicas>3",
            "generation<10",
        ] {
            check_label_selector(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
    }

    #[test]
    fn what_the_api_server_refuses_is_refused_with_a_reason() {
        for (bad, needle) in [
            ("===", "label key"),
            ("=web", "label key"),
            ("app=web=x", "`,` between"),
            ("app in web", "`(`"),
            ("app in (web", "not closed"),
            ("-app=web", "begin and end"),
            ("app=we b", "`,` between"),
            ("app=web!", "`,` between"),
            ("Example.com/app=x", "DNS subdomain"),
            ("app>x", "integer"),
            ("a,,b", "label key"),
        ] {
            let err = check_label_selector(bad).expect_err(bad);
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
        let long = format!("app={}", "x".repeat(64));
        assert!(check_label_selector(&long).is_err());
    }
}
