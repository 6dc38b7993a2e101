//! The gRPC listener's connections, wrapped so that answers to many checks leave in one write.
//!
//! h2 copies a DATA frame into its write buffer only when the payload is smaller than its
//! "chain threshold"; a larger payload is written separately and forces a flush before the next
//! frame can be buffered. The threshold is 256 bytes when the socket reports vectored writes
//! (a TCP stream does) and 1,024 bytes when it does not. An allowed `CheckResponse` with the
//! identity headers and dynamic metadata is typically 250–700 bytes, so with a TCP stream
//! every answer cost its own `writev`: one TCP send, one loopback delivery and one wake-up of
//! Envoy per check, although Envoy had sent dozens of checks in one segment (measured: ~1 write
//! per check, ~22 % of portcullis's CPU in the kernel's send path).
//!
//! [`Coalescing`] reports no vectored writes, so h2 copies such answers into its buffer and
//! writes everything the connection has ready at once.
//!
//! The same goes for reads: h2 reads into a buffer of about 8 KiB, so the dozens of checks Envoy
//! sends in one go (~1 KiB each) took one `recvfrom` per 7.5 KiB, 4-9 per wake-up. A 64 KiB read
//! buffer in front of the socket takes them in one, at the price of one memory copy and 64 KiB
//! per connection (Envoy keeps one or a few; the listener is loopback or pod-local).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadBuf};
use tonic::transport::server::Connected;

/// Read buffer in front of each connection: a whole burst of checks in one read.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// A connection whose reads and writes h2 batches (see the module documentation).
#[derive(Debug)]
pub struct Coalescing<T>(BufReader<T>);

impl<T: AsyncRead> Coalescing<T> {
    pub fn new(io: T) -> Self {
        Self(BufReader::with_capacity(READ_BUFFER_BYTES, io))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalescing<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Coalescing<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    /// The point of the wrapper: h2 then buffers DATA payloads up to 1 KiB instead of 256 B.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl<T: AsyncRead + Connected> Connected for Coalescing<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn passes_bytes_both_ways_and_reports_no_vectored_writes() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut wrapped = Coalescing::new(near);
        assert!(!wrapped.is_write_vectored());

        wrapped.write_all(b"answer").await.expect("write");
        wrapped.flush().await.expect("flush");
        let mut got = [0u8; 6];
        far.read_exact(&mut got).await.expect("read far");
        assert_eq!(&got, b"answer");

        far.write_all(b"check").await.expect("write far");
        let mut got = [0u8; 5];
        wrapped.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"check");

        wrapped.shutdown().await.expect("shutdown");
        assert_eq!(far.read(&mut got).await.expect("eof"), 0);
    }
}
