//! What the link runs over: a [`Connector`] opens one transport (any `AsyncRead +
//! AsyncWrite`) per session; [`TcpConnector`] is plain TCP, `tls::TlsConnector` adds TLS on
//! top of it. A leaf: the link and the TLS layer both depend on it, it on neither.

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Opens transports to the receiver.
pub trait Connector: Send + Sync + 'static {
    /// The transport.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Opens one connection.
    fn connect(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;

    /// Where it connects, for logs and errors.
    fn target(&self) -> &str;
}

/// Any transport the link can run over.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for T {}

/// Plain TCP to `HOST:PORT`, with `TCP_NODELAY` (small delta frames go out at once).
#[derive(Debug, Clone)]
pub struct TcpConnector {
    target: String,
}

impl TcpConnector {
    /// A connector for `HOST:PORT`.
    pub fn new(target: impl Into<String>) -> Self {
        TcpConnector {
            target: target.into(),
        }
    }
}

impl Connector for TcpConnector {
    type Io = TcpStream;

    async fn connect(&self) -> io::Result<TcpStream> {
        let stream = TcpStream::connect(&self.target).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    fn target(&self) -> &str {
        &self.target
    }
}
