//! Exposition: the writers of OpenMetrics and Prometheus text, and content negotiation.
//!
//! Pure functions over strings, used by the store (a family's line head and a series' labels
//! rendered once when a sender defines them, family headers and values at scrape time) and by the
//! self-metrics.
//!
//! The receiver's own metrics live in a prometheus-client `Registry` (see
//! [`crate::metrics`]), which encodes OpenMetrics; for Prometheus text the few self-metric
//! lines are rewritten by [`openmetrics_to_text`]. The two formats differ only in headers:
//! counters are `# TYPE x counter` with samples `x_total` in OpenMetrics, and
//! `# TYPE x_total counter` in Prometheus text (as kube-state-metrics exposes them), and
//! OpenMetrics ends with `# EOF`.
//!
//! A page is written through a [`PageWriter`], which hands its text on in pieces as they
//! fill, so serving `/metrics` needs memory for a few pieces, not for the page.

use kube_relay_proto::MetricKind;

/// Where the pieces of a page go: takes a full piece, returns a string to write the next
/// one into (empty; one of the earlier pieces' buffers if it can, so a render does not
/// fault in fresh memory for every piece), or `Err(ReaderGone)` when nobody reads them any
/// more.
pub type Deliver<'a> = dyn FnMut(String) -> Result<String, ReaderGone> + 'a;

/// The reader of a page went away (its client disconnected): the render stops there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderGone;

/// Exposition text written in pieces. A render appends whole lines to
/// [`PageWriter::text`] and calls [`PageWriter::line_done`] after each: once the text
/// holds a piece's worth it goes to the writer's [`Deliver`] and a new piece begins, so
/// every piece ends at a line's end.
pub struct PageWriter<'a> {
    text: String,
    piece_bytes: usize,
    deliver: &'a mut Deliver<'a>,
}

impl<'a> PageWriter<'a> {
    /// A writer handing `deliver` pieces of about `piece_bytes` (one line more at most).
    pub fn in_pieces(piece_bytes: usize, deliver: &'a mut Deliver<'a>) -> Self {
        PageWriter {
            text: String::with_capacity(piece_capacity(piece_bytes)),
            piece_bytes,
            deliver,
        }
    }

    /// The page `write` writes (and finishes) as one string, `capacity` bytes reserved: a
    /// writer whose only piece is the whole page, for callers that want it in memory.
    pub fn gather(
        capacity: usize,
        write: impl FnOnce(PageWriter<'_>) -> Result<(), ReaderGone>,
    ) -> String {
        let mut page = String::new();
        let mut deliver = |whole: String| {
            page = whole;
            Ok(String::new())
        };
        // Handing the page to a local string never fails.
        let _ = write(PageWriter {
            text: String::with_capacity(capacity),
            piece_bytes: usize::MAX,
            deliver: &mut deliver,
        });
        page
    }

    /// The piece being written; append whole lines, then call [`PageWriter::line_done`].
    #[inline]
    pub fn text(&mut self) -> &mut String {
        &mut self.text
    }

    /// Hands the piece on if it is full.
    ///
    /// # Errors
    /// [`ReaderGone`] when the pieces' reader went away: stop writing.
    #[inline]
    pub fn line_done(&mut self) -> Result<(), ReaderGone> {
        if self.text.len() >= self.piece_bytes {
            self.hand_on()
        } else {
            Ok(())
        }
    }

    #[cold]
    fn hand_on(&mut self) -> Result<(), ReaderGone> {
        let mut next = (self.deliver)(std::mem::take(&mut self.text))?;
        next.clear();
        next.reserve(piece_capacity(self.piece_bytes));
        self.text = next;
        Ok(())
    }

    /// Hands on what is left: the page is complete.
    ///
    /// # Errors
    /// [`ReaderGone`] when the pieces' reader went away.
    pub fn finish(mut self) -> Result<(), ReaderGone> {
        if self.text.is_empty() {
            return Ok(());
        }
        (self.deliver)(std::mem::take(&mut self.text)).map(drop)
    }
}

/// What a piece of `piece_bytes` is allocated with: room past its size for the line that
/// fills it, so that line does not reallocate the piece.
fn piece_capacity(piece_bytes: usize) -> usize {
    piece_bytes.saturating_add(1024)
}

/// An exposition format, chosen per scrape from the `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
    /// Prometheus text format 0.0.4.
    Text,
}

impl Format {
    /// Picks the format for an `Accept` header: OpenMetrics when it is asked for with a
    /// quality at least that of `text/plain` (or `*/*`), Prometheus text otherwise.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let (mut openmetrics, mut text) = (0.0_f32, 0.0_f32);
        for range in accept.unwrap_or_default().split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim();
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(1.0, |(_, v)| v.trim().parse::<f32>().unwrap_or(0.0));
            if media.eq_ignore_ascii_case("application/openmetrics-text") {
                openmetrics = openmetrics.max(q);
            } else if ["text/plain", "text/*", "*/*"]
                .iter()
                .any(|m| media.eq_ignore_ascii_case(m))
            {
                text = text.max(q);
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// Renders what a family's sample lines of one cluster begin with: the sample name
/// (`_total` added for counters) and the `cluster` label, `name{cluster="c"`. A series' own
/// labels ([`render_labels`]) and `}` follow it.
pub(crate) fn render_head(out: &mut String, family: &str, kind: MetricKind, cluster: &str) {
    out.push_str(family);
    if kind == MetricKind::Counter {
        out.push_str("_total");
    }
    out.push_str("{cluster=\"");
    push_escaped_label_value(out, cluster);
    out.push('"');
}

/// Renders a series' labels as they follow the head of its line, `,name="value"` each,
/// values escaped.
pub(crate) fn render_labels(out: &mut String, labels: &[(String, String)]) {
    for (name, value) in labels {
        out.push(',');
        out.push_str(name);
        out.push_str("=\"");
        push_escaped_label_value(out, value);
        out.push('"');
    }
}

/// Appends a label value with `\`, `"` and line feeds escaped (same in both formats).
pub(crate) fn push_escaped_label_value(out: &mut String, value: &str) {
    if !value.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn push_escaped_help(out: &mut String, help: &str, format: Format) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if format == Format::OpenMetrics => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// Appends a sample value: integers without a fraction, `NaN`, `+Inf`, `-Inf`, and other
/// floats in their shortest round-tripping form.
pub(crate) fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        out.push_str(itoa::Buffer::new().format(v as i64));
    } else {
        out.push_str(dtoa::Buffer::new().format_finite(v));
    }
}

/// Appends a family's `# HELP` and `# TYPE` lines.
pub(crate) fn push_header(
    out: &mut String,
    name: &str,
    help: &str,
    kind: MetricKind,
    format: Format,
) {
    let (kind_str, suffix) = match (kind, format) {
        (MetricKind::Gauge, _) => ("gauge", ""),
        (MetricKind::Counter, Format::OpenMetrics) => ("counter", ""),
        (MetricKind::Counter, Format::Text) => ("counter", "_total"),
    };
    out.push_str("# HELP ");
    out.push_str(name);
    out.push_str(suffix);
    out.push(' ');
    push_escaped_help(out, help, format);
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push_str(suffix);
    out.push(' ');
    out.push_str(kind_str);
    out.push('\n');
}

/// Rewrites OpenMetrics text (as prometheus-client writes it) as Prometheus text 0.0.4:
/// counter headers name the `_total` sample, `unknown` becomes `untyped`, and `# UNIT` and
/// `# EOF` lines are dropped. Sample lines are copied unchanged.
///
/// # Errors
/// [`ReaderGone`] when `out`'s reader went away.
pub fn openmetrics_to_text(openmetrics: &str, out: &mut PageWriter<'_>) -> Result<(), ReaderGone> {
    let mut pending_help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        let out_text = out.text();
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            pending_help = Some((name, help));
            continue;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "unknown" => (name.to_owned(), "untyped"),
                other => (name.to_owned(), other),
            };
            if let Some((help_name, help)) = pending_help.take() {
                out_text.push_str("# HELP ");
                out_text.push_str(if help_name == rest.split(' ').next().unwrap_or_default() {
                    &name
                } else {
                    help_name
                });
                out_text.push(' ');
                // OpenMetrics escapes `"` in help text; Prometheus text does not.
                out_text.push_str(&help.replace("\\\"", "\""));
                out_text.push('\n');
            }
            out_text.push_str("# TYPE ");
            out_text.push_str(&name);
            out_text.push(' ');
            out_text.push_str(kind);
            out_text.push('\n');
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        } else {
            out_text.push_str(line);
            out_text.push('\n');
        }
        out.line_done()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_asks_for_openmetrics_and_gets_it() {
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,\
                          application/openmetrics-text;version=0.0.1;q=0.4,\
                          text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text")),
            Format::OpenMetrics
        );
    }

    #[test]
    fn anything_else_gets_prometheus_text() {
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Text);
        assert_eq!(
            Format::negotiate(Some("text/plain;q=0.9,application/openmetrics-text;q=0.5")),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0")),
            Format::Text
        );
    }

    #[test]
    fn lines_put_cluster_first_and_escape_values() {
        let mut out = String::new();
        let labels = vec![
            ("pod".to_owned(), "a\"b\\c\nd".to_owned()),
            ("container".to_owned(), "web".to_owned()),
        ];
        render_head(&mut out, "restarts", MetricKind::Counter, "prod-1");
        render_labels(&mut out, &labels);
        out.push('}');
        assert_eq!(
            out,
            r#"restarts_total{cluster="prod-1",pod="a\"b\\c\nd",container="web"}"#
        );
    }

    #[test]
    fn values_are_written_like_prometheus_reads_them() {
        let render = |v: f64| {
            let mut s = String::new();
            push_value(&mut s, v);
            s
        };
        assert_eq!(render(1.0), "1");
        assert_eq!(render(-3.0), "-3");
        assert_eq!(render(0.25), "0.25");
        for v in [1e20, 1.5e300, -2.5e-7, 0.1] {
            assert_eq!(render(v).parse::<f64>().expect("parses"), v);
        }
        assert_eq!(render(f64::NAN), "NaN");
        assert_eq!(render(f64::INFINITY), "+Inf");
        assert_eq!(render(f64::NEG_INFINITY), "-Inf");
        assert_eq!(render(1_700_000_000.5), "1700000000.5");
    }

    #[test]
    fn counter_headers_differ_between_formats() {
        let mut om = String::new();
        push_header(
            &mut om,
            "x",
            "say \"hi\"",
            MetricKind::Counter,
            Format::OpenMetrics,
        );
        assert_eq!(om, "# HELP x say \\\"hi\\\"\n# TYPE x counter\n");
        let mut text = String::new();
        push_header(
            &mut text,
            "x",
            "say \"hi\"\\",
            MetricKind::Counter,
            Format::Text,
        );
        assert_eq!(
            text,
            "# HELP x_total say \"hi\"\\\\\n# TYPE x_total counter\n"
        );
    }

    #[test]
    fn openmetrics_self_metrics_become_prometheus_text() {
        let om = "# HELP relay_receiver_decode_errors Frames refused.\n\
                  # TYPE relay_receiver_decode_errors counter\n\
                  relay_receiver_decode_errors_total{kind=\"decode\"} 2\n\
                  # HELP relay_receiver_connected_senders Senders.\n\
                  # TYPE relay_receiver_connected_senders gauge\n\
                  relay_receiver_connected_senders 3\n\
                  # HELP d Duration.\n\
                  # TYPE d histogram\n\
                  # UNIT d seconds\n\
                  d_sum 0.5\n\
                  d_count 1\n\
                  d_bucket{le=\"+Inf\"} 1\n\
                  # EOF\n";
        let mut text = String::new();
        let mut deliver = |piece: String| {
            text.push_str(&piece);
            Ok(String::new())
        };
        let mut writer = PageWriter::in_pieces(16, &mut deliver);
        openmetrics_to_text(om, &mut writer).expect("nobody goes away");
        writer.finish().expect("nobody goes away");
        assert_eq!(
            text,
            "# HELP relay_receiver_decode_errors_total Frames refused.\n\
             # TYPE relay_receiver_decode_errors_total counter\n\
             relay_receiver_decode_errors_total{kind=\"decode\"} 2\n\
             # HELP relay_receiver_connected_senders Senders.\n\
             # TYPE relay_receiver_connected_senders gauge\n\
             relay_receiver_connected_senders 3\n\
             # HELP d Duration.\n\
             # TYPE d histogram\n\
             d_sum 0.5\n\
             d_count 1\n\
             d_bucket{le=\"+Inf\"} 1\n"
        );
    }
}
