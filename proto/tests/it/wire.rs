//! Properties of the wire format: every message round-trips, no input panics the decoder,
//! lying lengths are refused cheaply, and a steady-state sample stays small.

use bytes::{BufMut, BytesMut};
use kube_relay_proto::frame::{decode_payload, encode_payload};
use kube_relay_proto::*;
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::Int),
        any::<f64>().prop_map(Value::Float),
    ]
}

fn label() -> impl Strategy<Value = (String, String)> {
    ("[a-z_][a-z0-9_]{0,12}", ".{0,24}")
}

fn batch() -> impl Strategy<Value = Batch> {
    (
        any::<u64>(),
        proptest::option::of((any::<bool>(), any::<bool>())),
        proptest::collection::vec(
            (
                any::<u32>(),
                "[a-z_:][a-z0-9_:]{0,20}",
                ".{0,30}",
                any::<bool>(),
            ),
            0..4,
        ),
        proptest::collection::vec(
            (
                any::<u32>(),
                any::<u32>(),
                proptest::collection::vec(label(), 0..5),
            ),
            0..8,
        ),
        proptest::collection::vec((any::<u32>(), value()), 0..64),
        proptest::collection::vec(any::<u32>(), 0..16),
        any::<u64>(),
    )
        .prop_map(
            |(seq, snap, fams, series, updates, removals, observed_at_ms)| Batch {
                seq,
                observed_at_ms,
                snapshot: snap.map(|(first, last)| SnapshotPart { first, last }),
                families: fams
                    .into_iter()
                    .map(|(id, name, help, counter)| FamilyDef {
                        id,
                        name,
                        help,
                        kind: if counter {
                            MetricKind::Counter
                        } else {
                            MetricKind::Gauge
                        },
                    })
                    .collect(),
                series: series
                    .into_iter()
                    .map(|(id, family, labels)| SeriesDef { id, family, labels })
                    .collect(),
                updates: Updates::from_unsorted(updates),
                removals,
            },
        )
}

fn sender_message() -> impl Strategy<Value = SenderMessage> {
    prop_oneof![
        (
            any::<u16>(),
            ".{0,40}",
            ".{0,40}",
            any::<u64>(),
            proptest::option::of(".{0,64}"),
            proptest::option::of(any::<u64>()),
        )
            .prop_map(|(version, cluster, sender_id, epoch, token, resume_from)| {
                SenderMessage::Hello(Hello {
                    version,
                    cluster,
                    sender_id,
                    epoch,
                    token,
                    resume_from,
                    agent: "kube-relay-sender/test".into(),
                })
            }),
        batch().prop_map(SenderMessage::Batch),
        any::<u64>().prop_map(|sent_at_ms| SenderMessage::Heartbeat(Heartbeat { sent_at_ms })),
        ".{0,40}".prop_map(|reason| SenderMessage::Goodbye(Goodbye { reason })),
    ]
}

fn receiver_message() -> impl Strategy<Value = ReceiverMessage> {
    prop_oneof![
        (
            any::<u16>(),
            proptest::option::of(any::<u64>()),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(|(version, acked, heartbeat_interval_ms, max_frame_bytes)| {
                ReceiverMessage::Welcome(Welcome {
                    version,
                    resume: acked.map_or(Resume::Snapshot, |acked| Resume::After { acked }),
                    heartbeat_interval_ms,
                    max_frame_bytes,
                })
            }),
        (".{0,60}", proptest::collection::vec(any::<u16>(), 0..3)).prop_map(
            |(message, supported)| ReceiverMessage::Reject(Reject {
                reason: RejectReason::UnsupportedVersion { supported },
                message,
            })
        ),
        (any::<u64>(), any::<u64>())
            .prop_map(|(epoch, seq)| ReceiverMessage::Ack(Ack { epoch, seq })),
        any::<u64>().prop_map(|sent_at_ms| ReceiverMessage::Heartbeat(Heartbeat { sent_at_ms })),
    ]
}

proptest! {
    #[test]
    fn sender_messages_round_trip_through_frames(msgs in proptest::collection::vec(sender_message(), 1..6)) {
        let mut writer = SenderCodec::new(DEFAULT_MAX_FRAME_BYTES);
        let mut reader = ReceiverCodec::new(DEFAULT_MAX_FRAME_BYTES);
        let mut buf = BytesMut::new();
        for m in &msgs {
            writer.encode(m, &mut buf).expect("encode");
        }
        let mut out = Vec::new();
        while let Some(m) = reader.decode(&mut buf).expect("decode") {
            out.push(m);
        }
        prop_assert_eq!(out, msgs);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn receiver_messages_round_trip(msg in receiver_message()) {
        let payload = encode_payload(&msg).expect("encode");
        prop_assert_eq!(decode_payload::<ReceiverMessage>(&payload).expect("decode"), msg);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut reader = ReceiverCodec::new(4096);
        let mut buf = BytesMut::from(&bytes[..]);
        // Errors are fine; panics and hangs are not.
        for _ in 0..64 {
            match reader.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
        let _ = decode_payload::<SenderMessage>(&bytes);
        let _ = decode_payload::<ReceiverMessage>(&bytes);
    }

    #[test]
    fn a_corrupted_frame_is_an_error_or_a_message_never_a_panic(msg in sender_message(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut payload = encode_payload(&msg).expect("encode");
        let i = pos.index(payload.len());
        payload[i] = byte;
        let _ = decode_payload::<SenderMessage>(&payload);
    }
}

/// Encodes the varint bincode uses for a length of 2^40.
fn varint_u64(v: u64) -> Vec<u8> {
    let mut out = vec![253u8]; // bincode: 253 = u64 follows, little-endian
    out.extend_from_slice(&v.to_le_bytes());
    out
}

#[test]
fn an_inner_length_of_2_pow_40_is_refused_without_allocating() {
    // SenderMessage::Goodbye (variant 3) whose reason claims 2^40 bytes.
    let mut payload = vec![3u8];
    payload.extend(varint_u64(1 << 40));
    let err = decode_payload::<SenderMessage>(&payload).expect_err("must refuse");
    assert!(matches!(err, Error::Decode { .. }), "{err}");

    // The same inside a well-formed frame.
    let mut buf = BytesMut::new();
    buf.put_u32(payload.len() as u32);
    buf.put_slice(&payload);
    let mut reader = ReceiverCodec::new(DEFAULT_MAX_FRAME_BYTES);
    assert!(reader.decode(&mut buf).is_err());
}

#[test]
fn a_vector_claiming_2_pow_40_elements_is_refused() {
    // SenderMessage::Batch (variant 1): seq 1, no snapshot, families claiming 2^40 entries.
    let mut payload = vec![1u8, 1, 0];
    payload.extend(varint_u64(1 << 40));
    assert!(decode_payload::<SenderMessage>(&payload).is_err());
    // Same for the updates list.
    let mut payload = vec![1u8, 1, 0, 0, 0];
    payload.extend(varint_u64(1 << 40));
    assert!(decode_payload::<SenderMessage>(&payload).is_err());
}

#[test]
fn trailing_bytes_are_refused() {
    let mut payload =
        encode_payload(&SenderMessage::Heartbeat(Heartbeat { sent_at_ms: 1 })).expect("encode");
    payload.push(0);
    let err = decode_payload::<SenderMessage>(&payload).expect_err("trailing");
    assert!(
        matches!(err, Error::TrailingBytes { trailing: 1, .. }),
        "{err}"
    );
}

#[test]
fn unknown_variant_is_a_decode_error() {
    let err = decode_payload::<SenderMessage>(&[42]).expect_err("bad tag");
    assert!(matches!(err, Error::Decode { .. }), "{err}");
}

#[test]
fn decreasing_update_ids_on_the_wire_are_refused() {
    // Batch{seq 1, no snapshot, no families, no series, updates [(5, Int 1), (0, Int 1)]}
    let payload = [1u8, 1, 0, 0, 0, 2, 5, 0, 2, 0, 0, 2, 0];
    let err = decode_payload::<SenderMessage>(&payload).expect_err("gap 0");
    assert!(err.to_string().contains("strictly increase"), "{err}");
}

#[test]
fn steady_state_samples_cost_at_most_twelve_bytes() {
    // 10,000 changed samples spread over 200,000 series, in one frame: the per-sample cost
    // including the frame header and batch envelope.
    let pairs: Vec<(SeriesId, Value)> = (0..10_000u32)
        .map(|i| (i * 20 + 7, Value::from(f64::from(i % 2))))
        .collect();
    let ints = Batch {
        seq: 123_456,
        observed_at_ms: 1_796_600_000_000,
        updates: Updates::from_unsorted(pairs),
        ..Batch::default()
    };
    let bytes = encode_payload(&SenderMessage::Batch(ints))
        .expect("encode")
        .len()
        + 4;
    let per_sample = bytes as f64 / 10_000.0;
    assert!(
        per_sample <= 4.0,
        "0/1 samples cost {per_sample} bytes each"
    );

    let pairs: Vec<(SeriesId, Value)> = (0..10_000u32)
        .map(|i| (i * 20 + 7, Value::from(f64::from(i) * 0.001 + 0.5)))
        .collect();
    let floats = Batch {
        seq: 123_456,
        observed_at_ms: 1_796_600_000_000,
        updates: Updates::from_unsorted(pairs),
        ..Batch::default()
    };
    let bytes = encode_payload(&SenderMessage::Batch(floats))
        .expect("encode")
        .len()
        + 4;
    let per_sample = bytes as f64 / 10_000.0;
    assert!(
        per_sample <= 12.0,
        "float samples cost {per_sample} bytes each"
    );
}
