//! Feeds arbitrary bytes to both ends' frame decoders, as a stream split at arbitrary points,
//! and to the payload decoder directly. Any panic, abort or over-limit allocation is a bug;
//! errors are the expected answer to garbage. Whatever decodes must re-encode and decode to
//! the same message.
#![no_main]

use bytes::BytesMut;
use kube_relay_proto::frame::{decode_payload, encode_payload};
use kube_relay_proto::{ReceiverCodec, ReceiverMessage, SenderCodec, SenderMessage};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    // The first byte picks where the stream is split, so partial frames are exercised too.
    let (split, data) = match data.split_first() {
        Some((s, rest)) => (*s as usize, rest),
        None => return,
    };
    let cut = split.min(data.len());

    let mut receiver = ReceiverCodec::new(64 << 10);
    let mut buf = BytesMut::from(&data[..cut]);
    let mut fed_rest = false;
    loop {
        match receiver.decode(&mut buf) {
            Ok(Some(msg)) => check_round_trip_sender(&msg),
            Ok(None) if !fed_rest => {
                buf.extend_from_slice(&data[cut..]);
                fed_rest = true;
            }
            Ok(None) => {
                let _ = receiver.decode_eof(&mut buf);
                break;
            }
            Err(_) => break,
        }
    }

    let mut sender = SenderCodec::new(64 << 10);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = sender.decode(&mut buf) {}

    if let Ok(msg) = decode_payload::<SenderMessage>(data) {
        check_round_trip_sender(&msg);
    }
    let _ = decode_payload::<ReceiverMessage>(data);
});

fn check_round_trip_sender(msg: &SenderMessage) {
    let bytes = encode_payload(msg).expect("a decoded message re-encodes");
    let again: SenderMessage = decode_payload(&bytes).expect("a re-encoded message decodes");
    assert_eq!(&again, msg);
}
