//! The Prometheus remote-write 1.0 wire format: the protobuf `WriteRequest` (prost messages,
//! written by hand from the spec's `types.proto`, so no `protoc` is needed) and a direct
//! encoder for the hot path, snappy's block format, and the required headers.
//!
//! The direct encoder exists because a series' labels never change: they are encoded once,
//! when the series is defined ([`encode_labels`]), and every request only appends samples to
//! those bytes. Its output decodes with the prost messages to exactly what was meant (the
//! tests check it); the prost messages are what a reader of this crate, and the tests'
//! backends, decode with.

use std::fmt::Write as _;

/// `Content-Encoding` of every request: snappy's block format, not its framed format.
pub const CONTENT_ENCODING: &str = "snappy";
/// `Content-Type` of every request.
pub const CONTENT_TYPE: &str = "application/x-protobuf";
/// `X-Prometheus-Remote-Write-Version` of every request (the spec's 1.0 value).
pub const VERSION_HEADER: &str = "X-Prometheus-Remote-Write-Version";
/// The remote-write version this client speaks.
pub const VERSION: &str = "0.1.0";

/// The staleness marker: the NaN Prometheus writes when a series disappears. Its bits, not
/// its NaN-ness, carry the meaning (`f64::NAN` is another NaN).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The staleness marker as a value.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// True for the staleness marker's exact bits.
pub fn is_stale_marker(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series and their samples.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries` (exemplars and histograms are not sent).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Labels sorted by name, `__name__` included.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Samples in timestamp order.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Label {
    /// Label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// The value (the staleness marker is a NaN with [`STALE_NAN_BITS`]).
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Encodes a series' labels as the `labels` field of a `TimeSeries` (repeated field 1):
/// `__name__` = `name`, then `labels` and `cluster`, sorted by name. A label named
/// `cluster` among `labels` is dropped (the receiver's wins, as in `/metrics`).
pub fn encode_labels(name: &str, cluster: &str, labels: &[(String, String)]) -> Vec<u8> {
    let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(labels.len() + 2);
    pairs.push(("__name__", name));
    pairs.push(("cluster", cluster));
    pairs.extend(
        labels
            .iter()
            .filter(|(k, _)| k != "cluster" && k != "__name__")
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
    pairs.dedup_by(|a, b| a.0 == b.0);
    let mut out = Vec::with_capacity(pairs.iter().map(|(k, v)| k.len() + v.len() + 6).sum());
    for (k, v) in pairs {
        let inner =
            1 + varint_len(k.len() as u64) + k.len() + 1 + varint_len(v.len() as u64) + v.len();
        out.push(0x0a);
        put_varint(&mut out, inner as u64);
        out.push(0x0a);
        put_varint(&mut out, k.len() as u64);
        out.extend_from_slice(k.as_bytes());
        out.push(0x12);
        put_varint(&mut out, v.len() as u64);
        out.extend_from_slice(v.as_bytes());
    }
    out
}

/// Appends one `TimeSeries` (field 1 of `WriteRequest`) to `out`: the pre-encoded `labels`
/// (from [`encode_labels`]) and `samples` as `(timestamp_ms, value)` in the order given.
pub fn append_series(
    out: &mut Vec<u8>,
    labels: &[u8],
    samples: impl ExactSizeIterator<Item = (i64, f64)> + Clone,
) {
    // A sample is 0x09 + 8 bytes of value, 0x10 + the timestamp's varint.
    let sample_len = |ts: i64| 1 + 8 + 1 + varint_len(ts as u64);
    let body: usize = labels.len()
        + samples
            .clone()
            .map(|(ts, _)| {
                let n = sample_len(ts);
                1 + varint_len(n as u64) + n
            })
            .sum::<usize>();
    out.push(0x0a);
    put_varint(out, body as u64);
    out.extend_from_slice(labels);
    for (ts, value) in samples {
        out.push(0x12);
        put_varint(out, sample_len(ts) as u64);
        out.push(0x09);
        out.extend_from_slice(&value.to_le_bytes());
        out.push(0x10);
        put_varint(out, ts as u64);
    }
}

/// Compresses a serialized `WriteRequest` with snappy's block format (`snap::raw`).
///
/// # Errors
/// Only for an input larger than snappy's limit (about 4 GiB), which a bounded batch never is.
pub fn compress(request: &[u8]) -> Result<Vec<u8>, snap::Error> {
    snap::raw::Encoder::new().compress_vec(request)
}

/// Decompresses and decodes a request body, for backends written in tests and for checks.
///
/// # Errors
/// A message saying which step failed.
pub fn decode_request(body: &[u8]) -> Result<WriteRequest, String> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("failed to decompress (snappy block format): {e}"))?;
    prost::Message::decode(raw.as_slice())
        .map_err(|e| format!("failed to decode WriteRequest: {e}"))
}

/// Labels of a decoded series as `name{k="v",...}`, for logs and tests.
pub fn series_name(series: &TimeSeries) -> String {
    let mut name = String::new();
    let mut rest = String::new();
    for l in &series.labels {
        if l.name == "__name__" {
            name.clone_from(&l.value);
        } else {
            let sep = if rest.is_empty() { "" } else { "," };
            let _ = write!(rest, "{sep}{}={:?}", l.name, l.value);
        }
    }
    format!("{name}{{{rest}}}")
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Appends `v` as a protobuf varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn label(name: &str, value: &str) -> Label {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn the_direct_encoder_writes_what_prost_decodes() {
        let labels = encode_labels(
            "kube_pod_info",
            "prod",
            &[
                ("pod".into(), "web-1".repeat(40)),
                ("namespace".into(), "shop".into()),
                ("cluster".into(), "spoofed".into()),
            ],
        );
        let mut body = Vec::new();
        let samples = [
            (1_700_000_000_123_i64, 1.0),
            (1_700_000_015_123, 0.0),
            (1, stale_nan()),
        ];
        append_series(&mut body, &labels, samples.iter().copied());
        append_series(&mut body, &labels, [(5_i64, -2.5)].iter().copied());
        let decoded = WriteRequest::decode(body.as_slice()).expect("decodes");
        assert_eq!(decoded.timeseries.len(), 2);
        let first = &decoded.timeseries[0];
        assert_eq!(
            first.labels,
            vec![
                label("__name__", "kube_pod_info"),
                label("cluster", "prod"),
                label("namespace", "shop"),
                label("pod", &"web-1".repeat(40)),
            ]
        );
        let got: Vec<(i64, u64)> = first
            .samples
            .iter()
            .map(|s| (s.timestamp, s.value.to_bits()))
            .collect();
        let want: Vec<(i64, u64)> = samples.iter().map(|(t, v)| (*t, v.to_bits())).collect();
        assert_eq!(
            got, want,
            "timestamps, values and the stale NaN's bits survive"
        );
        assert_eq!(decoded.timeseries[1].samples[0].value, -2.5);
        assert_eq!(series_name(first).split('{').next(), Some("kube_pod_info"));
    }

    #[test]
    fn requests_round_trip_through_snappy_block_format() {
        let mut body = Vec::new();
        append_series(
            &mut body,
            &encode_labels("up", "c", &[]),
            [(7_i64, 1.0)].iter().copied(),
        );
        let compressed = compress(&body).expect("compress");
        // The block format starts with the uncompressed length as a varint, no stream header.
        assert_eq!(compressed[0] as usize, body.len());
        let decoded = decode_request(&compressed).expect("decode");
        assert_eq!(decoded.timeseries[0].samples[0].timestamp, 7);
        assert!(decode_request(b"\xff\xff\xff\xff garbage").is_err());
    }

    #[test]
    fn only_the_exact_bits_are_a_staleness_marker() {
        assert!(is_stale_marker(stale_nan()));
        assert!(!is_stale_marker(f64::NAN));
        assert!(stale_nan().is_nan());
    }
}
