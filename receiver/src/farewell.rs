//! Saying why before closing. A connection the receiver refuses gets a `Reject` naming the
//! reason (the peer's log can then say what to change); but closing a socket while the peer's
//! bytes are still unread makes the kernel answer with a reset, which can destroy the
//! `Reject` before the peer reads it. So after the `Reject` the write side is shut down and
//! whatever the peer still sends (the rest of a too-large frame, a `Hello` on a TLS port) is
//! read and dropped until it closes, bounded in bytes and time.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

/// Longest wait for a refused peer to read its `Reject` and close.
pub const LINGER: Duration = Duration::from_secs(1);

/// Most bytes read and dropped from a refused peer: a frame at the protocol's ceiling.
pub const DRAIN_BYTES: u64 = kube_relay_proto::MAX_FRAME_BYTES_CEILING as u64;

/// Shuts the write side of `io` down (after the `Reject` written to it) and reads what the
/// peer still sends until it closes, at most [`DRAIN_BYTES`] within [`LINGER`].
pub async fn linger<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) {
    let _ = timeout(LINGER, async {
        let _ = io.shutdown().await;
        let mut sink = tokio::io::sink();
        let _ = tokio::io::copy(&mut io.take(DRAIN_BYTES), &mut sink).await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_peer_reads_the_answer_even_while_it_was_still_sending() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            // Read a little of what the peer sends, answer, and close.
            let mut first = [0u8; 16];
            stream.read_exact(&mut first).await.expect("read");
            stream
                .write_all(b"refused: too large")
                .await
                .expect("write");
            linger(&mut stream).await;
        });
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        // 256 KiB the server never reads: without the linger, closing with them unread
        // resets the connection and the answer is lost.
        client.write_all(&vec![7u8; 256 << 10]).await.expect("send");
        let mut answer = String::new();
        client
            .read_to_string(&mut answer)
            .await
            .expect("the answer, then a clean close");
        assert_eq!(answer, "refused: too large");
        server.await.expect("server");
    }
}
