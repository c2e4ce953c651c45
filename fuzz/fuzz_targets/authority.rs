//! `server::authority::NormalizeAuthority`, the HTTP/2 frame and HPACK
//! rewriter on the inbound byte stream, fed arbitrary bytes in arbitrary
//! chunks (with `Pending` in between) and read until EOF or an error, on a
//! current-thread tokio runtime.
//!
//! Checked against a model that reads the same bytes frame by frame:
//! - bytes that are not HTTP/2 with prior knowledge come out unchanged;
//! - every frame that is not part of a header block comes out byte for byte;
//! - every header block comes out with the same stream, END_STREAM and
//!   priority, HEADERS + CONTINUATION frames of at most 16,384 bytes, and
//!   the same header list once decoded by the server's HPACK decoder,
//!   except that an invalid `:authority` reads `localhost`;
//! - the wrapper fails exactly when the model finds the input malformed,
//!   and then what it delivered is a prefix of what the model expects.
//!
//! Input: byte 0 bit 0 set = prepend the connection preface; bits 1..=4 =
//! how many chunk-size bytes follow; bit 5 = stall at the end instead of
//! closing (then whatever the wrapper has not passed on by then is what it
//! holds back); byte 1 = read buffer size; then the chunk sizes, then the
//! stream.

#![no_main]

use std::borrow::Cow;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use coffer::server::authority::NormalizeAuthority;
use coffer_fuzz::runtime;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
const MAX_FRAME_SIZE: usize = 16_384;
const MAX_BLOCK_BYTES: usize = 256 * 1024;
const MAX_DECODED_BYTES: usize = 1024 * 1024;

/// An in-memory client: hands out `data` in the given chunk sizes and says
/// `Pending` (having woken itself) before every chunk whose size byte is 0;
/// at the end, EOF or (`stall`) `Pending` for ever.
struct Chunked<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    next: usize,
    pending_done: bool,
    /// At the end, stay `Pending` (a client that sent part of a frame and
    /// waits) instead of closing.
    stall: bool,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.data.is_empty() {
            if self.stall {
                return Poll::Pending;
            }
            return Poll::Ready(Ok(()));
        }
        let size = if self.sizes.is_empty() {
            usize::MAX
        } else {
            usize::from(self.sizes[self.next % self.sizes.len()])
        };
        if size == 0 && !self.pending_done {
            self.pending_done = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.pending_done = false;
        self.next += 1;
        let want = if size == usize::MAX {
            usize::MAX
        } else {
            1 + size * size
        };
        let n = want.min(self.data.len()).min(buf.remaining());
        let (now, rest) = self.data.split_at(n);
        buf.put_slice(now);
        self.data = rest;
        Poll::Ready(Ok(()))
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Event {
    /// A frame outside any header block, whole.
    Frame(Vec<u8>),
    /// The start of such a frame, all that has arrived of it: it is passed
    /// on as it comes (a frame may be 16 MiB), not held back until whole.
    Partial(Vec<u8>),
    Block {
        stream: u32,
        end_stream: bool,
        priority: Option<[u8; 5]>,
        headers: Vec<(Vec<u8>, Vec<u8>)>,
    },
}

/// A header block being collected: stream, flags, priority, block bytes.
type Pending = (u32, u8, Option<[u8; 5]>, Vec<u8>);

fn valid_authority(v: &[u8]) -> bool {
    !v.is_empty() && http::uri::Authority::try_from(v).is_ok()
}

fn frame_header(b: &[u8]) -> (usize, u8, u8, u32) {
    let len = (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]);
    let stream = u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff;
    (len, b[3], b[4], stream)
}

/// What the server should see for `stream` (the bytes after the preface):
/// the events, and whether the input is malformed.
fn model(mut rest: &[u8]) -> (Vec<Event>, bool) {
    let mut decoder = loona_hpack::Decoder::new();
    decoder.set_max_allowed_table_size(4096);
    let mut events = Vec::new();
    let mut pending: Option<Pending> = None;
    while rest.len() >= 9 {
        let (len, kind, flags, stream) = frame_header(rest);
        let block_frame = kind == HEADERS || kind == CONTINUATION || pending.is_some();
        if block_frame && len > MAX_BLOCK_BYTES {
            return (events, true);
        }
        if rest.len() < 9 + len {
            if !block_frame {
                events.push(Event::Partial(rest.to_vec()));
            }
            break;
        }
        let frame = &rest[..9 + len];
        let mut payload = &rest[9..9 + len];
        rest = &rest[9 + len..];
        if !block_frame {
            events.push(Event::Frame(frame.to_vec()));
            continue;
        }
        match (&mut pending, kind) {
            (None, HEADERS) => {
                if flags & PADDED != 0 {
                    let Some((&pad, p)) = payload.split_first() else {
                        return (events, true);
                    };
                    if usize::from(pad) > p.len() {
                        return (events, true);
                    }
                    payload = &p[..p.len() - usize::from(pad)];
                }
                let priority = if flags & PRIORITY != 0 {
                    if payload.len() < 5 {
                        return (events, true);
                    }
                    let p = [payload[0], payload[1], payload[2], payload[3], payload[4]];
                    payload = &payload[5..];
                    Some(p)
                } else {
                    None
                };
                pending = Some((stream, flags, priority, payload.to_vec()));
            }
            (Some((s, f, _, block)), CONTINUATION) if *s == stream => {
                if block.len() + payload.len() > MAX_BLOCK_BYTES {
                    return (events, true);
                }
                block.extend_from_slice(payload);
                *f |= flags & END_HEADERS;
            }
            _ => return (events, true),
        }
        if pending.as_ref().is_some_and(|p| p.1 & END_HEADERS != 0) {
            let (stream, flags, priority, block) = pending.take().unwrap();
            let mut headers = Vec::new();
            let mut decoded = 0usize;
            let result = decoder.decode_with_cb(&block, |n: Cow<[u8]>, v: Cow<[u8]>| {
                decoded += n.len() + v.len() + 32;
                if decoded <= MAX_DECODED_BYTES {
                    headers.push((n.into_owned(), v.into_owned()));
                }
            });
            if result.is_err() || decoded > MAX_DECODED_BYTES {
                return (events, true);
            }
            for (n, v) in headers.iter_mut() {
                if n.as_slice() == b":authority" && !valid_authority(v) {
                    *v = b"localhost".to_vec();
                }
            }
            events.push(Event::Block {
                stream,
                end_stream: flags & END_STREAM != 0,
                priority,
                headers,
            });
        }
    }
    (events, false)
}

/// The events in what the wrapper delivered, decoded as the server would.
fn observed(mut rest: &[u8]) -> Vec<Event> {
    let mut decoder = loona_hpack::Decoder::new();
    let mut events = Vec::new();
    let mut pending: Option<Pending> = None;
    while rest.len() >= 9 {
        let (len, kind, flags, stream) = frame_header(rest);
        if rest.len() < 9 + len {
            assert!(
                kind != HEADERS && kind != CONTINUATION && pending.is_none(),
                "a rewritten header frame was cut short"
            );
            events.push(Event::Partial(rest.to_vec()));
            break;
        }
        let frame = &rest[..9 + len];
        let mut payload = &rest[9..9 + len];
        rest = &rest[9 + len..];
        if kind != HEADERS && kind != CONTINUATION {
            assert!(pending.is_none(), "a frame inside a rewritten header block");
            events.push(Event::Frame(frame.to_vec()));
            continue;
        }
        assert!(len <= MAX_FRAME_SIZE, "a {len}-byte header frame");
        match (&mut pending, kind) {
            (None, HEADERS) => {
                assert_eq!(flags & PADDED, 0, "rewritten frames are not padded");
                let priority = (flags & PRIORITY != 0).then(|| {
                    let p = [payload[0], payload[1], payload[2], payload[3], payload[4]];
                    payload = &payload[5..];
                    p
                });
                pending = Some((stream, flags, priority, payload.to_vec()));
            }
            (Some((s, f, _, block)), CONTINUATION) => {
                assert_eq!(*s, stream, "CONTINUATION on another stream");
                assert_eq!(flags & !END_HEADERS, 0, "CONTINUATION flags {flags:#x}");
                block.extend_from_slice(payload);
                *f |= flags & END_HEADERS;
            }
            _ => panic!("the wrapper wrote a malformed header block sequence"),
        }
        if pending.as_ref().is_some_and(|p| p.1 & END_HEADERS != 0) {
            let (stream, flags, priority, block) = pending.take().unwrap();
            let headers = decoder
                .decode(&block)
                .expect("the server can decode every rewritten block");
            for (n, v) in &headers {
                if n.as_slice() == b":authority" {
                    assert!(valid_authority(v), "an invalid :authority got through");
                }
            }
            events.push(Event::Block {
                stream,
                end_stream: flags & END_STREAM != 0,
                priority,
                headers,
            });
        }
    }
    events
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 || data.len() > 1 << 20 {
        return;
    }
    let (flags, read_size) = (data[0], data[1]);
    let n_sizes = usize::from((flags >> 1) & 0xf).min(data.len() - 2);
    let sizes = &data[2..2 + n_sizes];
    let body = &data[2 + n_sizes..];
    let mut input = Vec::with_capacity(body.len() + PREFACE.len());
    if flags & 1 != 0 {
        input.extend_from_slice(PREFACE);
    }
    input.extend_from_slice(body);

    let stall = flags & 0x20 != 0;
    let reader = Chunked {
        data: &input,
        sizes,
        next: 0,
        pending_done: false,
        stall,
    };
    let mut wrapped = NormalizeAuthority::new(reader);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 + usize::from(read_size) * 64];
    let result: io::Result<()> = if stall {
        // Polled by hand: the stall is a Pending nobody will wake.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        loop {
            let mut rb = ReadBuf::new(&mut buf);
            match Pin::new(&mut wrapped).poll_read(&mut cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                    panic!("EOF from a client that did not close")
                }
                Poll::Ready(Ok(())) => out.extend_from_slice(rb.filled()),
                Poll::Ready(Err(e)) => break Err(e),
                Poll::Pending if wrapped.get_ref().data.is_empty() => break Ok(()),
                Poll::Pending => {}
            }
        }
    } else {
        runtime().block_on(async {
            loop {
                match wrapped.read(&mut buf).await {
                    Ok(0) => return Ok(()),
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e) => return Err(e),
                }
            }
        })
    };

    let preface_len = input.len().min(PREFACE.len());
    if input[..preface_len] != PREFACE[..preface_len] {
        // Not HTTP/2 with prior knowledge.
        assert!(result.is_ok(), "{result:?} on pass-through bytes");
        assert_eq!(out, input, "pass-through bytes changed");
        return;
    }
    if input.len() <= PREFACE.len() {
        // (Part of) the preface: all of it at EOF; when stalled, it may wait.
        assert!(result.is_ok(), "{result:?} on (part of) the preface");
        assert!(
            out == input || (stall && out.is_empty()),
            "the preface changed"
        );
        return;
    }
    // Frames that come before a malformed one in the same read are not
    // passed on (the connection fails at once), not even the preface.
    let got = if out.len() >= PREFACE.len() || result.is_ok() {
        assert!(out.starts_with(PREFACE), "the preface was not passed on");
        observed(&out[PREFACE.len()..])
    } else {
        assert!(PREFACE.starts_with(&out), "the preface changed");
        Vec::new()
    };
    let (expected, malformed) = model(&input[PREFACE.len()..]);
    match result {
        Ok(()) => {
            assert!(!malformed, "malformed input was accepted");
            assert_eq!(got, expected, "the server would see something else");
        }
        Err(e) => {
            assert!(malformed, "well-formed input was refused: {e}");
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            // A prefix of the events; the last may be the start of a frame
            // whose end was still waiting to be read when the error came.
            let ok = got.len() <= expected.len()
                && got.iter().zip(&expected).enumerate().all(|(i, (g, e))| {
                    g == e
                        || (i + 1 == got.len()
                            && matches!((g, e), (Event::Partial(p), Event::Frame(f)) if f.starts_with(p)))
                });
            assert!(ok, "before failing, the wrapper delivered something else");
        }
    }
});
