//! Lets stock gRPC clients call the sidecar over its Unix socket.
//!
//! gRPC C-core (grpcio for Python, Ruby, PHP; since 1.57) sends the socket's path,
//! percent-encoded, as the HTTP/2 `:authority` of every call (`tmp%2Fshard.sock` for
//! `unix:/tmp/shard.sock`). h2, under tonic, parses the authority as a URI authority, finds
//! a `%` outside user info, and resets the stream with PROTOCOL_ERROR: the client sees
//! `INTERNAL: Stream removed` unless it sets `grpc.default_authority` (see hyperium/h2#487,
//! still open, and grpc/grpc#38142). For a Unix socket the authority names nothing (the
//! socket is the peer), so [`AuthorityFix`] rewrites it, in the bytes read from the socket
//! and before h2 parses them, to a valid authority of the same length: each byte outside
//! `[A-Za-z0-9._~-]` becomes `-`.
//!
//! Same length matters: HPACK's dynamic table counts an entry's size, so a rewritten value
//! keeps the server's table in step with the client's, and later calls that refer to the
//! entry by index get the rewritten value too. Only literal `:authority` fields whose value
//! is not Huffman-coded are rewritten (what C-core sends); a Huffman-coded one (grpc-java
//! may send one) passes unchanged, and such a client must set its authority to `localhost`.
//! Everything else passes through untouched, frame by frame.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection preface (RFC 9113 §3.4), passed through as is.
const PREFACE_LEN: usize = 24;
/// Frame header length.
const FRAME_HEADER_LEN: usize = 9;
/// Most bytes of one header block (its HEADERS and CONTINUATION frames) held back to be
/// rewritten; a longer block passes through unchanged (h2 applies its own limits).
const MAX_HELD_BLOCK: usize = 256 * 1024;
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// Where the reader is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Within the connection preface: this many bytes left.
    Preface(usize),
    /// At a frame header.
    Frame,
    /// Within a payload that passes unchanged: this many bytes left.
    Payload(usize),
    /// Gave up parsing (a block too long): everything passes unchanged.
    Through,
}

/// A server-side connection whose reads have a Unix socket's `:authority` made valid.
/// Writes pass through.
#[derive(Debug)]
pub(crate) struct AuthorityFix<S> {
    inner: S,
    state: State,
    /// Read from the socket, not yet given to the server.
    held: Vec<u8>,
    /// Ready for the server, from `ready_at` on.
    ready: Vec<u8>,
    ready_at: usize,
    eof: bool,
}

impl<S> AuthorityFix<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            state: State::Preface(PREFACE_LEN),
            held: Vec::new(),
            ready: Vec::new(),
            ready_at: 0,
            eof: false,
        }
    }

    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Moves what can be released from `held` to `ready`, rewriting header blocks.
    fn process(&mut self) {
        loop {
            match self.state {
                State::Through => {
                    self.release(self.held.len());
                    return;
                }
                State::Preface(left) | State::Payload(left) => {
                    let n = left.min(self.held.len());
                    self.release(n);
                    let left = left - n;
                    if left > 0 {
                        self.state = match self.state {
                            State::Preface(_) => State::Preface(left),
                            _ => State::Payload(left),
                        };
                        return;
                    }
                    self.state = State::Frame;
                }
                State::Frame => {
                    let Some((len, kind, _)) = frame_header(&self.held) else {
                        return;
                    };
                    if kind != HEADERS {
                        self.release(FRAME_HEADER_LEN);
                        self.state = State::Payload(len);
                        continue;
                    }
                    match header_block_end(&self.held) {
                        Some(end) => {
                            rewrite_block(&mut self.held[..end]);
                            self.release(end);
                        }
                        None if self.held.len() > MAX_HELD_BLOCK || self.eof => {
                            self.state = State::Through;
                        }
                        None => return,
                    }
                }
            }
        }
    }

    fn release(&mut self, n: usize) {
        if self.ready_at == self.ready.len() {
            self.ready.clear();
            self.ready_at = 0;
        }
        self.ready.extend(self.held.drain(..n));
    }
}

/// A frame header's payload length, type and flags, if all 9 bytes are there.
fn frame_header(bytes: &[u8]) -> Option<(usize, u8, u8)> {
    let header = bytes.get(..FRAME_HEADER_LEN)?;
    let len = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
    Some((len, header[3], header[4]))
}

/// Where the header block starting at `bytes[0]` (a HEADERS frame, then CONTINUATION
/// frames up to END_HEADERS) ends, once all of it is in `bytes`.
fn header_block_end(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let (len, kind, flags) = frame_header(&bytes[at..])?;
        if at > 0 && kind != CONTINUATION {
            // Not a valid block: release it as it is, for h2 to refuse.
            return Some(at);
        }
        let end = at + FRAME_HEADER_LEN + len;
        if bytes.len() < end {
            return None;
        }
        if flags & END_HEADERS != 0 {
            return Some(end);
        }
        at = end;
    }
}

/// Rewrites the `:authority` of a complete header block in place. A block that does not
/// parse is left as it is, for h2 to refuse.
fn rewrite_block(frames: &mut [u8]) {
    // The fragments of the block, as ranges of `frames`.
    let mut fragments = Vec::new();
    let mut at = 0;
    while let Some((len, kind, flags)) = frame_header(&frames[at..]) {
        let start = at + FRAME_HEADER_LEN;
        let end = start + len;
        if end > frames.len() {
            return;
        }
        let (mut from, mut to) = (start, end);
        if kind == HEADERS {
            if flags & PADDED != 0 {
                let Some(&pad) = frames.get(start) else {
                    return;
                };
                from += 1;
                let Some(stop) = to.checked_sub(usize::from(pad)) else {
                    return;
                };
                to = stop;
            }
            if flags & PRIORITY != 0 {
                from += 5;
            }
        }
        if from > to {
            return;
        }
        fragments.push(from..to);
        at = end;
    }
    let mut block: Vec<u8> = fragments
        .iter()
        .flat_map(|range| frames[range.clone()].iter().copied())
        .collect();
    if rewrite_authority(&mut block).is_none() {
        return;
    }
    let mut copied = 0;
    for range in fragments {
        let len = range.len();
        frames[range].copy_from_slice(&block[copied..copied + len]);
        copied += len;
    }
}

/// Walks an HPACK header block (RFC 7541 §6) and makes every literal, non-Huffman
/// `:authority` value valid. `None` if the block does not parse.
fn rewrite_authority(block: &mut [u8]) -> Option<()> {
    let mut at = 0;
    while at < block.len() {
        let first = block[at];
        let prefix = match first {
            // Indexed field: nothing literal.
            0x80..=0xff => {
                at = integer(block, at, 7)?.1;
                continue;
            }
            // Dynamic table size update.
            0x20..=0x3f => {
                at = integer(block, at, 5)?.1;
                continue;
            }
            // Literal with incremental indexing.
            0x40..=0x7f => 6,
            // Literal without indexing, or never indexed.
            _ => 4,
        };
        let (index, next) = integer(block, at, prefix)?;
        at = next;
        let authority = if index == 0 {
            let (name, huffman, next) = string(block, at)?;
            at = next;
            !huffman && &block[name] == b":authority"
        } else {
            // Static table entry 1 is `:authority`.
            index == 1
        };
        let (value, huffman, next) = string(block, at)?;
        at = next;
        if authority && !huffman {
            sanitize(&mut block[value]);
        }
    }
    Some(())
}

/// An HPACK integer with an N-bit prefix at `at`: its value and where it ends.
fn integer(block: &[u8], at: usize, prefix: u32) -> Option<(usize, usize)> {
    let mask = (1usize << prefix) - 1;
    let mut value = usize::from(*block.get(at)?) & mask;
    let mut at = at + 1;
    if value < mask {
        return Some((value, at));
    }
    let mut shift = 0;
    loop {
        let byte = *block.get(at)?;
        at += 1;
        value = value.checked_add(usize::from(byte & 0x7f).checked_shl(shift)?)?;
        if byte & 0x80 == 0 {
            return Some((value, at));
        }
        shift += 7;
        if shift > 28 {
            return None;
        }
    }
}

/// An HPACK string literal at `at`: its bytes, whether Huffman-coded, and where it ends.
fn string(block: &[u8], at: usize) -> Option<(std::ops::Range<usize>, bool, usize)> {
    let huffman = block.get(at)? & 0x80 != 0;
    let (len, start) = integer(block, at, 7)?;
    let end = start.checked_add(len)?;
    (end <= block.len()).then_some((start..end, huffman, end))
}

/// Makes an authority value valid for h2 without changing its length: a value with any
/// byte a plain `host[:port]` cannot hold has each byte outside `[A-Za-z0-9._~-]`
/// replaced by `-`.
fn sanitize(value: &mut [u8]) {
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-');
    if value.iter().all(|&b| plain(b) || b == b':') {
        return;
    }
    for b in value.iter_mut().filter(|b| !plain(**b)) {
        *b = b'-';
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready_at < this.ready.len() {
                let n = (this.ready.len() - this.ready_at).min(buf.remaining());
                buf.put_slice(&this.ready[this.ready_at..this.ready_at + n]);
                this.ready_at += n;
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // Whatever is held can no longer complete: give it to h2 as it is.
                this.state = State::Through;
                this.process();
                if this.ready_at < this.ready.len() {
                    continue;
                }
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => this.eof = true,
                Poll::Ready(Ok(())) => {
                    this.held.extend_from_slice(read.filled());
                    this.process();
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for AuthorityFix<tokio::net::UnixStream> {
    type ConnectInfo = <tokio::net::UnixStream as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.get_ref().connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// The start of the header block grpcio 1.85 sends for `unix:/tmp/d-probe/s.sock`
    /// (captured from a real client).
    const GRPCIO_BLOCK: &[u8] = b"@\x05:path\x06/x.Y/Z@\n:authority\x16tmp%2Fd-probe%2Fs.sock\x83\x86@\x0ccontent-type\x10application/grpc";

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).expect("small").to_be_bytes();
        let mut frame = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 1];
        frame.extend_from_slice(payload);
        frame
    }

    async fn through(input: &[u8], chunk: usize) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut fixed = AuthorityFix::new(server);
        let input = input.to_vec();
        let writer = tokio::spawn(async move {
            for part in input.chunks(chunk) {
                client.write_all(part).await.expect("writes");
                tokio::task::yield_now().await;
            }
            client.shutdown().await.expect("shuts down");
        });
        let mut out = Vec::new();
        fixed.read_to_end(&mut out).await.expect("reads");
        writer.await.expect("writer");
        out
    }

    #[tokio::test]
    async fn a_percent_encoded_authority_becomes_a_valid_one_of_the_same_length() {
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        // A SETTINGS frame, the HEADERS, then a DATA frame that mentions the path.
        input.extend_from_slice(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00");
        input.extend(frame(HEADERS, END_HEADERS, GRPCIO_BLOCK));
        // The same block split over a padded HEADERS and a CONTINUATION.
        let mut padded = vec![3];
        padded.extend_from_slice(&GRPCIO_BLOCK[..30]);
        padded.extend_from_slice(b"\0\0\0");
        input.extend(frame(HEADERS, PADDED, &padded));
        input.extend(frame(CONTINUATION, END_HEADERS, &GRPCIO_BLOCK[30..]));
        input.extend(frame(0, 1, b"tmp%2"));
        for chunk in [1, 7, 4096] {
            let out = through(&input, chunk).await;
            assert_eq!(out.len(), input.len(), "chunks of {chunk}");
            let text = String::from_utf8_lossy(&out);
            // Rewritten in both blocks (the second split across its frames).
            assert!(!text.contains("%2F"), "{text:?}");
            assert_eq!(text.matches("-2Fs.sock").count(), 2, "{text:?}");
            assert!(text.ends_with("tmp%2"), "DATA is untouched: {text:?}");
            let authority: &str = "tmp-2Fd-probe-2Fs.sock";
            assert!(
                authority
                    .parse::<tonic::codegen::http::uri::Authority>()
                    .is_ok()
            );
        }
    }

    #[test]
    fn valid_authorities_and_huffman_values_are_left_alone() {
        let mut block = b"\x41\x0flocalhost:50051".to_vec();
        let before = block.clone();
        rewrite_authority(&mut block).expect("parses");
        assert_eq!(block, before);
        // Huffman flag set: passes unchanged.
        let mut block = b"\x41\x83%2F".to_vec();
        let before = block.clone();
        rewrite_authority(&mut block).expect("parses");
        assert_eq!(block, before);
        // Static index 1 with a raw value is rewritten.
        let mut block = b"\x01\x05a%2Fb".to_vec();
        rewrite_authority(&mut block).expect("parses");
        assert_eq!(&block[2..], b"a-2Fb");
        // A truncated block does not parse and is left for h2.
        let mut block = b"\x01\x09a%2Fb".to_vec();
        assert!(rewrite_authority(&mut block).is_none());
    }
}
