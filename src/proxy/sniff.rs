//! Which HTTP version a connection speaks, from its first bytes: HTTP/2 if they are the
//! HTTP/2 connection preface (h2c by prior knowledge, or h2 after ALPN), else HTTP/1.1. The
//! same test as hyper-util's auto builder, which [`listener`](super::listener) used to serve
//! connections with.
//!
//! The bytes read to decide are given back by [`Prefixed`], in the same read as whatever
//! followed them. hyper-util's own wrapper returns them alone, so hyper's first read of a
//! request got 24 bytes and its second one doubled its 8 KiB read buffer to 16 KiB, for the
//! life of every HTTP/1.1 connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// What every HTTP/2 connection starts with (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.x (also anything that is not HTTP/2; hyper answers it).
    H1,
    /// HTTP/2.
    H2,
}

/// Reads until the bytes cannot be the HTTP/2 preface, the whole preface has arrived, or the
/// peer stops sending (then HTTP/1.1, whose parser sees the end).
pub async fn sniff<I: AsyncRead + Unpin>(mut io: I) -> io::Result<(Version, Prefixed<I>)> {
    let mut prefix = [0; H2_PREFACE.len()];
    let mut filled = 0;
    let version = loop {
        let n = io.read(&mut prefix[filled..]).await?;
        let new = &prefix[filled..filled + n];
        if n == 0 || new != &H2_PREFACE[filled..filled + n] {
            filled += n;
            break Version::H1;
        }
        filled += n;
        if filled == H2_PREFACE.len() {
            break Version::H2;
        }
    };
    let io = Prefixed {
        io,
        prefix,
        start: 0,
        end: filled as u8,
        error: None,
    };
    Ok((version, io))
}

/// An IO whose first reads return the bytes [`sniff`] read.
#[derive(Debug)]
pub struct Prefixed<I> {
    io: I,
    prefix: [u8; H2_PREFACE.len()],
    /// `prefix[start..end]` is still to be returned.
    start: u8,
    end: u8,
    /// An error of the read that followed the prefix's last bytes, for the next read.
    error: Option<io::Error>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(error) = this.error.take() {
            return Poll::Ready(Err(error));
        }
        if this.start == this.end {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let (start, end) = (usize::from(this.start), usize::from(this.end));
        let n = (end - start).min(buf.remaining());
        buf.put_slice(&this.prefix[start..start + n]);
        this.start += n as u8;
        if this.start == this.end && buf.remaining() > 0 {
            // What arrived after the prefix, in the same read. Pending only registers the
            // waker; the bytes already put are returned either way.
            if let Poll::Ready(Err(error)) = Pin::new(&mut this.io).poll_read(cx, buf) {
                this.error = Some(error);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Sniffs what `chunks` sends (each written separately), then reads the rest in reads of
    /// up to `read_size` bytes; returns the version and each read.
    async fn run(chunks: &[&[u8]], read_size: usize) -> (Version, Vec<Vec<u8>>) {
        let (mut client, server) = tokio::io::duplex(1024);
        let chunks: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
        let writer = tokio::spawn(async move {
            for chunk in chunks {
                client.write_all(&chunk).await.expect("write");
                tokio::task::yield_now().await;
            }
        });
        let (version, mut io) = sniff(server).await.expect("sniff");
        writer.await.expect("writer");
        let mut reads = Vec::new();
        loop {
            let mut buf = vec![0; read_size];
            let n = io.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            reads.push(buf[..n].to_vec());
        }
        (version, reads)
    }

    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";

    #[tokio::test]
    async fn http1_comes_back_whole_in_one_read() {
        let (version, reads) = run(&[REQUEST], 8192).await;
        assert_eq!(version, Version::H1);
        assert_eq!(reads, vec![REQUEST.to_vec()]);
    }

    #[tokio::test]
    async fn the_preface_is_http2_even_in_pieces() {
        let rest = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00";
        let (version, reads) = run(&[&H2_PREFACE[..5], &H2_PREFACE[5..], rest], 8192).await;
        assert_eq!(version, Version::H2);
        assert_eq!(reads.concat(), [&H2_PREFACE[..], rest].concat());
    }

    #[tokio::test]
    async fn a_partial_preface_then_something_else_is_http1() {
        let (version, reads) = run(&[b"PRI * HTTP/1.1\r\n"], 8192).await;
        assert_eq!(version, Version::H1);
        assert_eq!(reads.concat(), b"PRI * HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn small_reads_return_every_byte_in_order() {
        let (version, reads) = run(&[REQUEST], 5).await;
        assert_eq!(version, Version::H1);
        assert!(reads.iter().all(|r| r.len() <= 5));
        assert_eq!(reads.concat(), REQUEST);
    }

    #[tokio::test]
    async fn nothing_sent_is_http1_with_nothing_to_read() {
        let (version, reads) = run(&[], 8192).await;
        assert_eq!(version, Version::H1);
        assert!(reads.is_empty());
    }

    proptest::proptest! {
        /// For any bytes, sent in any pieces and read back in reads of any size: HTTP/2
        /// exactly when they start with the whole preface (hyper-util's auto builder's rule),
        /// and every byte comes back once, in order.
        #[test]
        fn every_split_reads_back_whole(
            preface in proptest::prelude::any::<bool>(),
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            prefix_len in 0..=H2_PREFACE.len(),
            cuts in proptest::collection::vec(1..12usize, 0..8),
            read_size in 1..40usize,
        ) {
            // Either the whole preface, or a prefix of it (maybe empty) and then other bytes.
            let mut sent = if preface {
                H2_PREFACE.to_vec()
            } else {
                H2_PREFACE[..prefix_len].to_vec()
            };
            sent.extend_from_slice(&tail);
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut rest = &sent[..];
            for cut in cuts {
                let (chunk, after) = rest.split_at(cut.min(rest.len()));
                chunks.push(chunk);
                rest = after;
            }
            chunks.push(rest);
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let (version, reads) = rt.block_on(run(&chunks, read_size));
            let h2 = sent.starts_with(H2_PREFACE);
            proptest::prop_assert_eq!(version == Version::H2, h2, "{:?}", sent);
            proptest::prop_assert_eq!(reads.concat(), sent);
        }
    }
}
