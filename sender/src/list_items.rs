//! The items of a Kubernetes list response, one at a time, as its body arrives.
//!
//! metrics.k8s.io cannot be paged (metrics-server ignores `limit`), so a PodMetrics list of
//! 100,000 pods is one body of ~35 MB. Read whole, it was held twice (hyper's chunks and
//! the collected copy) and then parsed into a `Vec` of every item: ~80 MB for a moment each
//! poll, the sender's high-water mark. [`ListItems`] instead finds each element of the
//! top-level `items` array in the chunks as they come and hands its bytes over, so only the
//! item being parsed (and a chunk) is ever held.
//!
//! It tracks only JSON's structure (strings, escapes, nesting) and the key `items` of the
//! top-level object; each item's bytes are parsed, and so validated, by the caller.

use std::fmt;

/// Why a body is not a list: unbalanced brackets, or it ended early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(&'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed list response: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

/// A malformed list is a decoding error, as serde's own would be (`kind="decode"`).
impl From<Malformed> for kube::Error {
    fn from(e: Malformed) -> Self {
        kube::Error::SerdeError(<serde_json::Error as serde::de::Error>::custom(e))
    }
}

/// Where the scanner is relative to the top-level object's `items` array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Outside the `items` array (or before the top-level object).
    Outside,
    /// After the key `items` and its colon: the next `[` opens the array.
    BeforeItems,
    /// Inside the `items` array, between elements.
    InItems,
    /// Inside one element of `items`.
    InItem,
    /// The `items` array has been closed.
    AfterItems,
}

/// Splits a list response into the bytes of its items. See the [module docs](self).
#[derive(Debug)]
pub struct ListItems {
    /// Nesting depth: 1 inside the top-level object, 2 inside its `items` array.
    depth: u32,
    in_string: bool,
    escaped: bool,
    place: Place,
    /// The top-level object was opened.
    started: bool,
    /// The string being read at depth 1 (a key), while it could still be `items`.
    key: Vec<u8>,
    /// The last string at depth 1 was `items` (set when it closes, cleared by the next
    /// token other than a colon).
    key_is_items: bool,
    /// The start of the current item, when it began in an earlier chunk.
    partial: Vec<u8>,
}

impl Default for ListItems {
    fn default() -> Self {
        ListItems::new()
    }
}

const ITEMS: &[u8] = b"items";

impl ListItems {
    /// A splitter at the start of a body.
    pub fn new() -> Self {
        ListItems {
            depth: 0,
            in_string: false,
            escaped: false,
            place: Place::Outside,
            started: false,
            key: Vec::new(),
            key_is_items: false,
            partial: Vec::new(),
        }
    }

    /// Reads the next chunk of the body, calling `each` with the bytes of every item it
    /// completes (an item split across chunks is handed over whole, once).
    ///
    /// # Errors
    /// [`Malformed`] (converted into `E`) when the brackets do not balance, or the first
    /// error of `each`.
    pub fn push<E: From<Malformed>>(
        &mut self,
        chunk: &[u8],
        mut each: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        // Where the current item starts in this chunk, when it started here.
        let mut start = None;
        for (i, &b) in chunk.iter().enumerate() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                    if self.depth == 1 {
                        self.key_is_items = self.key == ITEMS;
                    }
                } else if self.depth == 1 && self.key.len() <= ITEMS.len() {
                    self.key.push(b);
                }
                continue;
            }
            match b {
                b'"' => {
                    self.in_string = true;
                    self.key.clear();
                    self.key_is_items = false;
                }
                b':' if self.depth == 1 && self.key_is_items && self.place == Place::Outside => {
                    self.place = Place::BeforeItems;
                }
                b'{' | b'[' => {
                    if self.depth == 0 {
                        if b != b'{' || self.started {
                            return Err(Malformed("not a single object").into());
                        }
                        self.started = true;
                    } else if self.depth == 1 && self.place == Place::BeforeItems {
                        self.place = if b == b'[' {
                            Place::InItems
                        } else {
                            Place::Outside
                        };
                    } else if self.depth == 2 && self.place == Place::InItems {
                        self.place = Place::InItem;
                        start = Some(i);
                    }
                    self.depth += 1;
                    self.key_is_items = false;
                }
                b'}' | b']' => {
                    self.depth = self
                        .depth
                        .checked_sub(1)
                        .ok_or(Malformed("a bracket closes nothing"))?;
                    if self.depth == 2 && self.place == Place::InItem {
                        self.place = Place::InItems;
                        match start.take() {
                            Some(s) => each(&chunk[s..=i])?,
                            None => {
                                self.partial.extend_from_slice(&chunk[..=i]);
                                let item = std::mem::take(&mut self.partial);
                                each(&item)?;
                            }
                        }
                    } else if self.depth == 1 && self.place == Place::InItems {
                        self.place = Place::AfterItems;
                    }
                    self.key_is_items = false;
                }
                b' ' | b'\t' | b'\r' | b'\n' | b',' => {}
                _ => {
                    // A number, `true`, `false` or `null`: `"items": null` is no array.
                    if self.place == Place::BeforeItems && self.depth == 1 {
                        self.place = Place::Outside;
                    }
                    self.key_is_items = false;
                }
            }
        }
        if self.place == Place::InItem {
            let from = start.unwrap_or(0);
            self.partial.extend_from_slice(&chunk[from..]);
        }
        Ok(())
    }

    /// Ends the body.
    ///
    /// # Errors
    /// [`Malformed`] when it ended inside the object (a truncated body) or held none.
    pub fn finish(&self) -> Result<(), Malformed> {
        if !self.started {
            return Err(Malformed("no object"));
        }
        if self.depth != 0 || self.in_string {
            return Err(Malformed("the body ended inside the object"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits `body` fed in chunks of `size` bytes; the items as strings.
    fn split(body: &str, size: usize) -> Result<Vec<String>, Malformed> {
        let mut items = Vec::new();
        let mut list = ListItems::new();
        for chunk in body.as_bytes().chunks(size) {
            list.push(chunk, |item: &[u8]| {
                items.push(String::from_utf8(item.to_vec()).expect("utf-8 item"));
                Ok::<(), Malformed>(())
            })?;
        }
        list.finish()?;
        Ok(items)
    }

    const LIST: &str = r#"{"kind":"PodMetricsList","apiVersion":"metrics.k8s.io/v1beta1",
        "metadata":{"items":[{"not":"these"}],"resourceVersion":"7"},
        "items":[
          {"metadata":{"name":"a","namespace":"n","labels":{"items":"[{"}},"containers":[{"name":"c"}]},
          {"metadata":{"name":"b \"}]\\","namespace":"n"},"containers":[]} ,
          {"metadata":{"name":"c"}}
        ],
        "trailer":{"items":[{"x":1}]}}"#;

    #[test]
    fn every_item_of_the_top_level_array_once_whatever_the_chunking() {
        let expected = [
            r#"{"metadata":{"name":"a","namespace":"n","labels":{"items":"[{"}},"containers":[{"name":"c"}]}"#,
            r#"{"metadata":{"name":"b \"}]\\","namespace":"n"},"containers":[]}"#,
            r#"{"metadata":{"name":"c"}}"#,
        ];
        for size in 1..=LIST.len() {
            assert_eq!(
                split(LIST, size).expect("a list"),
                expected,
                "chunks of {size}"
            );
        }
        // Every item parses as the JSON object it is.
        for item in split(LIST, 7).expect("a list") {
            serde_json::from_str::<serde_json::Value>(&item).expect("an object");
        }
    }

    #[test]
    fn an_empty_null_or_missing_items_array_yields_nothing() {
        for body in [
            r#"{"kind":"PodMetricsList","items":[]}"#,
            r#"{"kind":"PodMetricsList","items":null}"#,
            r#"{"kind":"PodMetricsList","metadata":{}}"#,
            r#"{"items" : [ ] }"#,
        ] {
            for size in 1..=body.len() {
                assert_eq!(
                    split(body, size),
                    Ok(Vec::new()),
                    "{body} in chunks of {size}"
                );
            }
        }
    }

    #[test]
    fn a_truncated_or_unbalanced_body_is_malformed() {
        let truncated = &LIST[..LIST.len() / 2];
        assert!(split(truncated, 5).is_err());
        assert!(split(r#"{"items":[{"a":1}]}}"#, 3).is_err());
        assert!(split(r#"{"items":[{"a":"1}]}"#, 3).is_err());
        assert!(split("", 3).is_err());
        assert!(split("[]", 3).is_err());
        assert!(split("{}{}", 3).is_err());
    }

    #[test]
    fn an_error_of_the_caller_stops_the_split() {
        let mut list = ListItems::new();
        let mut seen = 0;
        let result = list.push(LIST.as_bytes(), |_| {
            seen += 1;
            if seen == 2 {
                Err(Malformed("stop"))
            } else {
                Ok(())
            }
        });
        assert_eq!(result, Err(Malformed("stop")));
        assert_eq!(seen, 2);
    }
}
