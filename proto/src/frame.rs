//! Framing: bytes on a socket ↔ typed messages.
//!
//! A frame is a 4-byte big-endian payload length followed by a bincode payload
//! (`bincode::config::standard()`: little-endian, varint integers). Two limits protect the
//! reader, both always set:
//! - the *frame* limit, checked on the length prefix before anything is buffered, so a header
//!   claiming 1 GiB closes the connection at once;
//! - the *decode* limit ([`DECODE_LIMIT_BYTES`]), which bincode checks against every inner
//!   length before allocating, so a 10-byte frame claiming a 2^40-byte string is refused
//!   instead of aborting the process.

use std::marker::PhantomData;

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use bytes::{Buf, BufMut, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::codec::{Decoder, Encoder};

use crate::message::{ReceiverMessage, SenderMessage};
use crate::{Error, FRAME_HEADER_BYTES, MAX_FRAME_BYTES_CEILING};

/// Most bytes bincode may claim while decoding one frame (allocations for strings and
/// vectors count against it). Above the largest frame times the worst in-memory growth of a
/// decoded element.
pub const DECODE_LIMIT_BYTES: usize = 256 << 20;

type WireConfig = Configuration<LittleEndian, Varint, Limit<DECODE_LIMIT_BYTES>>;

/// The bincode configuration every kube-relay payload uses.
pub fn wire_config() -> WireConfig {
    bincode::config::standard().with_limit::<DECODE_LIMIT_BYTES>()
}

/// Encodes a message to its payload bytes (no frame header).
///
/// # Errors
/// [`Error::Encode`] if serialisation fails.
pub fn encode_payload<T: Serialize>(msg: &T) -> Result<Vec<u8>, Error> {
    bincode::serde::encode_to_vec(msg, wire_config()).map_err(Error::Encode)
}

/// Decodes a whole payload (no frame header), refusing trailing bytes.
///
/// # Errors
/// [`Error::Decode`] or [`Error::TrailingBytes`].
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Error> {
    let (msg, read) =
        bincode::serde::decode_from_slice(payload, wire_config()).map_err(|source| {
            Error::Decode {
                len: payload.len(),
                source,
            }
        })?;
    if read != payload.len() {
        return Err(Error::TrailingBytes {
            len: payload.len(),
            trailing: payload.len() - read,
        });
    }
    Ok(msg)
}

/// A codec reading `In` messages and writing `Out` messages as length-prefixed frames.
///
/// Use [`SenderCodec`] on the sender and [`ReceiverCodec`] on the receiver. The length
/// prefix is checked before any of the payload is buffered; the codec keeps no state
/// between calls, so the limit may change between frames.
#[derive(Debug)]
pub struct FrameCodec<In, Out> {
    max_frame_bytes: usize,
    _types: PhantomData<fn(Out) -> In>,
}

/// The sender's codec: writes [`SenderMessage`], reads [`ReceiverMessage`].
pub type SenderCodec = FrameCodec<ReceiverMessage, SenderMessage>;

/// The receiver's codec: writes [`ReceiverMessage`], reads [`SenderMessage`].
pub type ReceiverCodec = FrameCodec<SenderMessage, ReceiverMessage>;

impl<In, Out> FrameCodec<In, Out> {
    /// A codec accepting frames of at most `max_frame_bytes` payload bytes (clamped to
    /// [`MAX_FRAME_BYTES_CEILING`]).
    pub fn new(max_frame_bytes: usize) -> Self {
        FrameCodec {
            max_frame_bytes: max_frame_bytes.clamp(1, MAX_FRAME_BYTES_CEILING),
            _types: PhantomData,
        }
    }

    /// The current frame limit.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Changes the frame limit, e.g. from the handshake limit to the data limit once a peer
    /// is authenticated.
    pub fn set_max_frame_bytes(&mut self, max_frame_bytes: usize) {
        self.max_frame_bytes = max_frame_bytes.clamp(1, MAX_FRAME_BYTES_CEILING);
    }
}

impl<In: DeserializeOwned, Out> Decoder for FrameCodec<In, Out> {
    type Item = In;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, Error> {
        if src.len() < FRAME_HEADER_BYTES {
            return Ok(None);
        }
        let len = (&src[..FRAME_HEADER_BYTES]).get_u32() as usize;
        if len > self.max_frame_bytes {
            return Err(Error::FrameTooLarge {
                len,
                max: self.max_frame_bytes,
            });
        }
        if src.len() < FRAME_HEADER_BYTES + len {
            // Room for the rest of this frame and the next header; bounded by the limit.
            src.reserve(FRAME_HEADER_BYTES + len - src.len() + FRAME_HEADER_BYTES);
            return Ok(None);
        }
        src.advance(FRAME_HEADER_BYTES);
        let payload = src.split_to(len);
        decode_payload(&payload).map(Some)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<In>, Error> {
        match self.decode(src)? {
            Some(msg) => Ok(Some(msg)),
            None if src.is_empty() => Ok(None),
            None => Err(Error::TruncatedFrame {
                buffered: src.len(),
            }),
        }
    }
}

impl<In, Out: Serialize> Encoder<&Out> for FrameCodec<In, Out> {
    type Error = Error;

    fn encode(&mut self, msg: &Out, dst: &mut BytesMut) -> Result<(), Error> {
        let payload = encode_payload(msg)?;
        if payload.len() > self.max_frame_bytes {
            return Err(Error::FrameTooLarge {
                len: payload.len(),
                max: self.max_frame_bytes,
            });
        }
        let len = u32::try_from(payload.len()).map_err(|_| Error::FrameTooLarge {
            len: payload.len(),
            max: self.max_frame_bytes,
        })?;
        dst.reserve(FRAME_HEADER_BYTES + payload.len());
        dst.put_u32(len);
        dst.put_slice(&payload);
        Ok(())
    }
}

impl<In, Out: Serialize> Encoder<Out> for FrameCodec<In, Out> {
    type Error = Error;

    fn encode(&mut self, msg: Out, dst: &mut BytesMut) -> Result<(), Error> {
        Encoder::<&Out>::encode(self, &msg, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Heartbeat, Hello};

    fn hello() -> SenderMessage {
        SenderMessage::Hello(Hello {
            version: 1,
            cluster: "minikube".into(),
            sender_id: "s-1".into(),
            epoch: 7,
            token: None,
            resume_from: None,
            agent: "test".into(),
        })
    }

    #[test]
    fn a_frame_round_trips() {
        let mut codec = ReceiverCodec::new(1024);
        let mut writer = FrameCodec::<ReceiverMessage, SenderMessage>::new(1024);
        let mut buf = BytesMut::new();
        writer.encode(&hello(), &mut buf).expect("encode");
        let len = (&buf[..4]).get_u32() as usize;
        assert_eq!(len + 4, buf.len());
        assert_eq!(codec.decode(&mut buf).expect("decode"), Some(hello()));
        assert!(buf.is_empty());
    }

    #[test]
    fn a_partial_frame_waits_and_eof_mid_frame_is_an_error() {
        let mut writer = SenderCodec::new(1024);
        let mut full = BytesMut::new();
        writer.encode(&hello(), &mut full).expect("encode");
        let mut codec = ReceiverCodec::new(1024);
        let mut part = BytesMut::from(&full[..full.len() - 1]);
        assert_eq!(codec.decode(&mut part).expect("partial"), None);
        let err = codec.decode_eof(&mut part).expect_err("truncated");
        assert!(matches!(err, Error::TruncatedFrame { .. }), "{err}");
    }

    #[test]
    fn clean_eof_is_none() {
        let mut codec = ReceiverCodec::new(1024);
        assert_eq!(codec.decode_eof(&mut BytesMut::new()).expect("eof"), None);
    }

    #[test]
    fn an_oversized_prefix_is_refused_before_buffering() {
        let mut codec = ReceiverCodec::new(1 << 20);
        let mut buf = BytesMut::from(&[0x40, 0, 0, 0][..]); // claims 1 GiB
        let err = codec.decode(&mut buf).expect_err("too large");
        assert!(
            matches!(err, Error::FrameTooLarge { len, max } if len == 1 << 30 && max == 1 << 20),
            "{err}"
        );
    }

    #[test]
    fn encoding_past_the_limit_fails_without_writing() {
        let mut writer = SenderCodec::new(16);
        let mut buf = BytesMut::new();
        let err = writer.encode(&hello(), &mut buf).expect_err("too large");
        assert!(matches!(err, Error::FrameTooLarge { .. }));
        assert!(buf.is_empty());
    }

    #[test]
    fn heartbeat_is_a_few_bytes() {
        let payload = encode_payload(&SenderMessage::Heartbeat(Heartbeat {
            sent_at_ms: 1_700_000_000_000,
        }))
        .expect("encode");
        assert!(payload.len() <= 10, "{} bytes", payload.len());
    }
}
