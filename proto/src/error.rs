//! Errors of the wire protocol: framing, decoding and protocol-rule violations.

use std::io;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong reading or writing the wire format.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket failed.
    #[error("failed to read or write the connection: {0}")]
    Io(#[from] io::Error),

    /// A length prefix announced a frame larger than the configured maximum. The connection
    /// cannot be resynchronised and must be closed.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Length the peer announced.
        len: usize,
        /// Configured maximum.
        max: usize,
    },

    /// The connection ended in the middle of a frame.
    #[error("connection closed mid-frame ({buffered} bytes of an unfinished frame buffered)")]
    TruncatedFrame {
        /// Bytes received of the unfinished frame.
        buffered: usize,
    },

    /// A frame's payload is not a valid message (bad tag, bad UTF-8, an inner length over the
    /// decode limit, ...).
    #[error("failed to decode a {len}-byte frame: {source}")]
    Decode {
        /// Payload length.
        len: usize,
        /// What bincode reported.
        #[source]
        source: bincode::error::DecodeError,
    },

    /// The payload decoded but left bytes over: the peer speaks something else.
    #[error("frame of {len} bytes has {trailing} trailing bytes after the message")]
    TrailingBytes {
        /// Payload length.
        len: usize,
        /// Bytes left over.
        trailing: usize,
    },

    /// A message could not be encoded (for example, it exceeds the frame limit).
    #[error("failed to encode a message: {0}")]
    Encode(#[source] bincode::error::EncodeError),

    /// A message is well-formed but breaks a protocol rule (for example, a series update for
    /// an id that was never defined).
    #[error("protocol violation: {0}")]
    Violation(String),
}

impl Error {
    /// A short, bounded label for this error, fit for a metric label (`errors_total{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Io(_) => "io",
            Error::FrameTooLarge { .. } => "frame_too_large",
            Error::TruncatedFrame { .. } => "truncated_frame",
            Error::Decode { .. } => "decode",
            Error::TrailingBytes { .. } => "trailing_bytes",
            Error::Encode(_) => "encode",
            Error::Violation(_) => "violation",
        }
    }
}
