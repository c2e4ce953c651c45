//! `:authority` normalisation below tonic.
//!
//! Drivers up to v1.5 dial the provider with grpc-go's `Dial(socketPath)`,
//! which puts the socket *path* into the HTTP/2 `:authority`; h2 (under
//! tonic) refuses it as malformed and resets the stream. Driver v1.6 sends
//! `localhost`. gRPC-core clients (grpcio) send the path percent-encoded,
//! which is a valid authority and passes through unchanged.
//!
//! [`NormalizeAuthority`] wraps the accepted Unix stream and rewrites, in
//! the client → server direction only, every HTTP/2 header block: it is
//! decoded with the client's HPACK state, any `:authority` that is not a
//! valid URI authority becomes `localhost`, and the block is re-encoded
//! with an encoder whose state the server's decoder mirrors. All other
//! frames pass through byte for byte; the server → client direction is
//! untouched. Malformed framing or HPACK closes the connection, as h2
//! itself would.

use std::borrow::Cow;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// The largest frame the server accepts unless it says otherwise (RFC 9113 §6.5.2).
const MAX_FRAME_SIZE: usize = 16_384;
/// SETTINGS_HEADER_TABLE_SIZE default; h2's server never changes it.
const HEADER_TABLE_SIZE: usize = 4_096;
/// Bounds on one header block, encoded and decoded.
const MAX_BLOCK_BYTES: usize = 256 * 1024;
const MAX_DECODED_BYTES: usize = 1024 * 1024;
/// Largest frame payload RFC 9113 allows at all.
const MAX_FRAME_PAYLOAD: usize = (1 << 24) - 1;

/// A stream whose inbound HTTP/2 header blocks get a valid `:authority`.
pub struct NormalizeAuthority<S> {
    inner: S,
    state: State,
    raw: BytesMut,
    out: BytesMut,
    decoder: loona_hpack::Decoder<'static>,
    encoder: loona_hpack::Encoder<'static>,
    pending: Option<PendingBlock>,
    /// Payload bytes of the current non-header frame still to pass on.
    passthrough: usize,
    rewritten: u64,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Preface,
    /// The first header block decides: a valid `:authority` (driver v1.6,
    /// gRPC-core) switches the connection to `Passthrough` with that block's
    /// bytes forwarded as they came, so the server's HPACK state matches the
    /// client's and nothing is decoded again; an invalid one to `Frames`.
    Detect,
    /// Every header block is decoded and re-encoded (drivers ≤ v1.5).
    Frames,
    /// Not HTTP/2 with prior knowledge: pass bytes through, let h2 refuse them.
    Passthrough,
}

struct PendingBlock {
    stream_id: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    block: BytesMut,
    /// The frames as received (kept only while detecting).
    original: BytesMut,
}

impl<S> NormalizeAuthority<S> {
    pub fn new(inner: S) -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE);
        Self {
            inner,
            state: State::Preface,
            raw: BytesMut::with_capacity(8 * 1024),
            out: BytesMut::with_capacity(8 * 1024),
            decoder,
            encoder: loona_hpack::Encoder::new(),
            pending: None,
            passthrough: 0,
            rewritten: 0,
            metrics: None,
        }
    }

    /// Counts rewrites in `coffer_authority_rewrites_total`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// How many header blocks had their `:authority` replaced.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// Moves whole frames from `raw` to `out`, rewriting header blocks.
    #[expect(
        clippy::indexing_slicing,
        reason = "every index is below a length checked just before (the 9-byte frame header, 5 priority bytes, the preface prefix)"
    )]
    fn process(&mut self) -> io::Result<()> {
        loop {
            match self.state {
                State::Passthrough => {
                    let all = self.raw.split();
                    self.out.extend_from_slice(&all);
                    return Ok(());
                }
                State::Preface => {
                    let n = self.raw.len().min(PREFACE.len());
                    if self.raw[..n] != PREFACE[..n] {
                        self.state = State::Passthrough;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    let preface = self.raw.split_to(PREFACE.len());
                    self.out.extend_from_slice(&preface);
                    self.state = State::Detect;
                }
                State::Frames | State::Detect => {
                    if self.passthrough > 0 {
                        let n = self.passthrough.min(self.raw.len());
                        if n == 0 {
                            return Ok(());
                        }
                        let bytes = self.raw.split_to(n);
                        self.out.extend_from_slice(&bytes);
                        self.passthrough -= n;
                        continue;
                    }
                    if self.raw.len() < FRAME_HEADER {
                        return Ok(());
                    }
                    let len = (usize::from(self.raw[0]) << 16)
                        | (usize::from(self.raw[1]) << 8)
                        | usize::from(self.raw[2]);
                    if len > MAX_FRAME_PAYLOAD {
                        return Err(invalid("frame too large"));
                    }
                    let kind = self.raw[3];
                    let in_block = self.pending.is_some();
                    if kind != TYPE_HEADERS && kind != TYPE_CONTINUATION && !in_block {
                        // Pass through as soon as the header is known; no need to
                        // buffer DATA (up to 16 MiB a frame) or to wait for it.
                        let header = self.raw.split_to(FRAME_HEADER);
                        self.out.extend_from_slice(&header);
                        self.passthrough = len;
                        continue;
                    }
                    if len > MAX_BLOCK_BYTES {
                        return Err(invalid("header block too large"));
                    }
                    if self.raw.len() < FRAME_HEADER + len {
                        self.raw.reserve(FRAME_HEADER + len - self.raw.len());
                        return Ok(());
                    }
                    let mut frame = self.raw.split_to(FRAME_HEADER + len);
                    let original = if self.state == State::Detect {
                        Some(frame.clone())
                    } else {
                        None
                    };
                    let flags = frame[4];
                    let stream_id =
                        u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
                    frame.advance(FRAME_HEADER);
                    self.on_block_frame(kind, flags, stream_id, frame, original)?;
                }
            }
        }
    }

    #[expect(
        clippy::indexing_slicing,
        reason = "every index is below a length checked just before (the 9-byte frame header, 5 priority bytes, the preface prefix)"
    )]
    fn on_block_frame(
        &mut self,
        kind: u8,
        flags: u8,
        stream_id: u32,
        mut payload: BytesMut,
        original: Option<BytesMut>,
    ) -> io::Result<()> {
        match (kind, self.pending.as_mut()) {
            (TYPE_HEADERS, None) => {
                if flags & FLAG_PADDED != 0 {
                    let pad = usize::from(
                        *payload
                            .first()
                            .ok_or_else(|| invalid("padded frame without pad length"))?,
                    );
                    payload.advance(1);
                    if pad > payload.len() {
                        return Err(invalid("padding longer than the frame"));
                    }
                    payload.truncate(payload.len() - pad);
                }
                let priority = if flags & FLAG_PRIORITY != 0 {
                    if payload.len() < 5 {
                        return Err(invalid("priority fields missing"));
                    }
                    let p = payload.split_to(5);
                    Some([p[0], p[1], p[2], p[3], p[4]])
                } else {
                    None
                };
                self.pending = Some(PendingBlock {
                    stream_id,
                    flags,
                    priority,
                    block: payload,
                    original: original.unwrap_or_default(),
                });
            }
            (TYPE_CONTINUATION, Some(p)) if p.stream_id == stream_id => {
                if p.block.len() + payload.len() > MAX_BLOCK_BYTES {
                    return Err(invalid("header block too large"));
                }
                p.block.extend_from_slice(&payload);
                if let Some(o) = &original {
                    p.original.extend_from_slice(o);
                }
                p.flags |= flags & FLAG_END_HEADERS;
            }
            _ => return Err(invalid("unexpected frame inside a header block")),
        }
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.flags & FLAG_END_HEADERS != 0)
            && let Some(block) = self.pending.take()
        {
            self.emit_block(block)?;
        }
        Ok(())
    }

    fn emit_block(&mut self, block: PendingBlock) -> io::Result<()> {
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut decoded = 0usize;
        let mut too_big = false;
        self.decoder
            .decode_with_cb(&block.block, |name: Cow<[u8]>, value: Cow<[u8]>| {
                decoded += name.len() + value.len() + 32;
                if decoded > MAX_DECODED_BYTES {
                    too_big = true;
                    return;
                }
                headers.push((name.into_owned(), value.into_owned()));
            })
            .map_err(|e| invalid(&format!("HPACK: {e:?}")))?;
        if too_big {
            return Err(invalid("decoded header list too large"));
        }
        let needs_rewrite = headers
            .iter()
            .any(|(n, v)| n.as_slice() == b":authority" && !is_valid_authority(v));
        if self.state == State::Detect {
            if !needs_rewrite {
                // Nothing to fix on this connection: hand the block over as it
                // came and stop looking.
                self.out.extend_from_slice(&block.original);
                self.state = State::Passthrough;
                let rest = self.raw.split();
                self.out.extend_from_slice(&rest);
                return Ok(());
            }
            self.state = State::Frames;
        }
        for (name, value) in headers.iter_mut() {
            if name.as_slice() == b":authority" && !is_valid_authority(value) {
                *value = b"localhost".to_vec();
                self.rewritten += 1;
                if let Some(m) = &self.metrics {
                    m.authority_rewritten(1);
                }
            }
        }
        let encoded = self
            .encoder
            .encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));

        let mut first = true;
        let mut rest: &[u8] = &encoded;
        loop {
            let room = if first && block.priority.is_some() {
                MAX_FRAME_SIZE - 5
            } else {
                MAX_FRAME_SIZE
            };
            let take = rest.len().min(room);
            let (chunk, tail) = rest.split_at(take);
            let last = tail.is_empty();
            let (kind, mut flags) = if first {
                (
                    TYPE_HEADERS,
                    block.flags & (FLAG_END_STREAM | FLAG_PRIORITY),
                )
            } else {
                (TYPE_CONTINUATION, 0)
            };
            if last {
                flags |= FLAG_END_HEADERS;
            }
            let priority_len = if first {
                block.priority.map_or(0, |_| 5)
            } else {
                0
            };
            let len = chunk.len() + priority_len;
            self.out.reserve(FRAME_HEADER + len);
            self.out.put_u8((len >> 16) as u8);
            self.out.put_u16((len & 0xffff) as u16);
            self.out.put_u8(kind);
            self.out.put_u8(flags);
            self.out.put_u32(block.stream_id);
            if first && let Some(p) = block.priority {
                self.out.put_slice(&p);
            }
            self.out.put_slice(chunk);
            first = false;
            rest = tail;
            if last {
                return Ok(());
            }
        }
    }
}

/// A value the `http` crate (and so h2) accepts as an authority.
fn is_valid_authority(value: &[u8]) -> bool {
    !value.is_empty() && http::uri::Authority::try_from(value).is_ok()
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("HTTP/2 from the client: {what}"),
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for NormalizeAuthority<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.state == State::Passthrough && this.raw.is_empty() {
                // The rest of the connection passes untouched: straight into
                // the caller's buffer (no 8 KiB scratch to zero and copy on
                // every read; that was 11% of a warm mount's instructions).
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut scratch = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                    // EOF. A partial header frame left in `raw` is dropped, as h2
                    // would drop it (other frames were passed on as they came).
                    if this.state == State::Passthrough || this.state == State::Preface {
                        let rest = this.raw.split();
                        this.out.extend_from_slice(&rest);
                    }
                    if this.out.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Ok(())) => {
                    this.raw.extend_from_slice(rb.filled());
                    if let Err(e) = this.process() {
                        return Poll::Ready(Err(e));
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for NormalizeAuthority<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for NormalizeAuthority<tokio::net::UnixStream> {
    type ConnectInfo = tonic::transport::server::UdsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        let len = payload.len();
        f.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn request_headers(authority: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (b":scheme".to_vec(), b"http".to_vec()),
            (
                b":path".to_vec(),
                b"/v1alpha1.CSIDriverProvider/Mount".to_vec(),
            ),
            (b":authority".to_vec(), authority.to_vec()),
            (b"content-type".to_vec(), b"application/grpc".to_vec()),
            (b"te".to_vec(), b"trailers".to_vec()),
        ]
    }

    /// Pushes client bytes through the wrapper and decodes what the server would see.
    async fn run(client_bytes: Vec<u8>) -> io::Result<(Vec<u8>, Vec<Vec<(Vec<u8>, Vec<u8>)>>)> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client.write_all(&client_bytes).await?;
        drop(client);
        let mut wrapped = NormalizeAuthority::new(server);
        let mut seen = Vec::new();
        wrapped.read_to_end(&mut seen).await?;
        // Decode the rewritten header blocks as the server would.
        let mut decoder = loona_hpack::Decoder::new();
        let mut blocks = Vec::new();
        let mut rest = &seen[PREFACE.len()..];
        let mut block = Vec::new();
        while rest.len() >= FRAME_HEADER {
            let len =
                (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
            let (kind, flags) = (rest[3], rest[4]);
            let mut payload = &rest[FRAME_HEADER..FRAME_HEADER + len];
            if kind == TYPE_HEADERS && flags & FLAG_PRIORITY != 0 {
                payload = &payload[5..];
            }
            if kind == TYPE_HEADERS || kind == TYPE_CONTINUATION {
                block.extend_from_slice(payload);
                if flags & FLAG_END_HEADERS != 0 {
                    blocks.push(decoder.decode(&block).unwrap());
                    block.clear();
                }
            }
            rest = &rest[FRAME_HEADER + len..];
        }
        Ok((seen, blocks))
    }

    fn authority_of(block: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        block
            .iter()
            .find(|(n, _)| n == b":authority")
            .map(|(_, v)| v.clone())
            .unwrap()
    }

    #[tokio::test]
    async fn every_driver_authority_form_reaches_the_server_as_valid() {
        let forms: [&[u8]; 3] = [
            b"localhost",
            b"/var/run/secrets-store-csi-providers/coffer.sock",
            b"%2Fvar%2Frun%2Fsecrets-store-csi-providers%2Fcoffer.sock",
        ];
        for form in forms {
            // One connection per form, as each driver version holds its own; several streams each.
            let mut encoder = loona_hpack::Encoder::new();
            let mut bytes = PREFACE.to_vec();
            bytes.extend(frame(0x4, 0, 0, &[])); // SETTINGS
            for i in 0..3u32 {
                let h = request_headers(form);
                let block = encoder.encode(h.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
                bytes.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1 + 2 * i, &block));
                bytes.extend(frame(0x0, FLAG_END_STREAM, 1 + 2 * i, b"\0\0\0\0\0"));
            }
            let (_, blocks) = run(bytes).await.unwrap();
            assert_eq!(blocks.len(), 3);
            for b in &blocks {
                let authority = authority_of(b);
                assert!(
                    http::uri::Authority::try_from(authority.as_slice()).is_ok(),
                    "{:?}",
                    String::from_utf8_lossy(&authority)
                );
                if form.starts_with(b"/") {
                    assert_eq!(authority, b"localhost");
                }
                assert!(
                    b.iter()
                        .any(|(n, v)| n == b":path" && v == b"/v1alpha1.CSIDriverProvider/Mount")
                );
            }
        }
    }

    #[tokio::test]
    async fn a_connection_with_a_valid_authority_passes_through_byte_for_byte() {
        let mut encoder = loona_hpack::Encoder::new();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x4, 0, 0, &[]));
        for i in 0..3u32 {
            let h = request_headers(b"localhost");
            let block = encoder.encode(h.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
            bytes.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1 + 2 * i, &block));
            bytes.extend(frame(0x0, FLAG_END_STREAM, 1 + 2 * i, b"\0\0\0\0\0"));
        }
        let (seen, blocks) = run(bytes.clone()).await.unwrap();
        assert_eq!(seen, bytes);
        assert_eq!(blocks.len(), 3);
    }

    #[tokio::test]
    async fn padded_priority_and_continuation_frames_are_rebuilt() {
        let mut encoder = loona_hpack::Encoder::new();
        let h = request_headers(b"/tmp/x.sock");
        let block = encoder.encode(h.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let (a, b) = block.split_at(block.len() / 2);
        let mut first = vec![3u8]; // pad length
        first.extend_from_slice(&[0x80, 0, 0, 0, 16]); // priority: exclusive, dep 0, weight 16
        first.extend_from_slice(a);
        first.extend_from_slice(&[0, 0, 0]);
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(TYPE_HEADERS, FLAG_PADDED | FLAG_PRIORITY, 1, &first));
        bytes.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, b));
        let (_, blocks) = run(bytes).await.unwrap();
        assert_eq!(blocks.len(), 1);
        assert_eq!(authority_of(&blocks[0]), b"localhost");
    }

    /// Found by the `authority` fuzz target (docs/fuzzing.md): a DATA frame
    /// was held back until all of it had arrived, so a client that sent the
    /// start of a large frame (up to 16 MiB) and waited made coffer buffer
    /// it, and h2 never saw the frame header it would refuse.
    #[tokio::test]
    async fn a_frame_that_is_not_a_header_block_passes_on_before_it_is_complete() {
        // The fuzzer's input: SETTINGS, then 46 of a DATA frame's 105 bytes.
        let mut bytes = PREFACE.to_vec();
        bytes.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        bytes.extend_from_slice(&[0, 0, 0x69, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0x40, 0]);
        bytes.extend_from_slice(&[b'x'; 46]);
        // And a frame header announcing 16 MiB, with a little of it.
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1]);
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(&bytes).await.unwrap();
        // The client stays connected: nothing more is coming for now.
        let mut wrapped = NormalizeAuthority::new(server);
        let mut seen = vec![0u8; bytes.len()];
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            wrapped.read_exact(&mut seen),
        )
        .await
        .expect("the partial frames were held back")
        .unwrap();
        assert_eq!(seen, bytes);
        // The rest follows as it arrives.
        client.write_all(&[b'y'; 1000]).await.unwrap();
        let mut more = vec![0u8; 1000];
        wrapped.read_exact(&mut more).await.unwrap();
        assert_eq!(more, [b'y'; 1000]);
        drop(client);
    }

    #[tokio::test]
    async fn non_http2_bytes_pass_through_and_garbage_frames_fail() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        drop(client);
        let mut seen = Vec::new();
        NormalizeAuthority::new(server)
            .read_to_end(&mut seen)
            .await
            .unwrap();
        assert_eq!(seen, b"GET / HTTP/1.1\r\n\r\n");

        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS,
            1,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ));
        assert!(run(bytes).await.is_err());
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, b"x"));
        assert!(run(bytes).await.is_err());
    }
}
