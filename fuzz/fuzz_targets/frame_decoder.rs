//! Fuzzes the wire layer's parsers on arbitrary bytes:
//!
//! - the length-prefixed frame reader (`sotto_wire::frame`: `check`, `decode`
//!   and the async `read`) for `Request`, `Response` and `Push`, with a small
//!   cap and the default one, the async reader fed whole and one byte at a time;
//! - invite links (`sotto_wire::invite`) and contact codes (`sotto_wire::code`)
//!   on the input as a string.
//!
//! Properties: nothing panics; `check`, `decode` and `read` agree; whatever
//! decodes re-encodes to something that decodes to the same value (and
//! re-encoding is stable); parsed links and codes print to text that parses
//! back to the same value.
#![no_main]

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use prost::Message;
use sotto_wire::DEFAULT_MAX_FRAME_BYTES;
use sotto_wire::code::ContactCode;
use sotto_wire::frame::{self, FrameError, HEADER_LEN};
use sotto_wire::invite::InviteLink;
use sotto_wire::relay::{Push, Request, Response};
use tokio::io::{AsyncRead, ReadBuf};

/// A small cap, so the over-cap paths are reached by short inputs.
const SMALL_MAX: usize = 64;

/// Frames of at most this many bytes in one input are decoded one after another.
const MAX_FRAMES_PER_INPUT: usize = 64;

/// An in-memory stream that hands out at most `chunk` bytes per read, so the
/// async reader's partial-header and partial-body paths are exercised.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.chunk.min(self.data.len()).min(buf.remaining());
        let (head, tail) = self.data.split_at(n);
        buf.put_slice(head);
        self.data = tail;
        Poll::Ready(Ok(()))
    }
}

/// Runs a future that never waits (its stream is in memory) to completion.
fn run_now<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("an in-memory read returned Pending"),
    }
}

/// Re-encodes `msg` and checks it decodes to the same value, and that
/// encoding that value again gives the same bytes.
fn round_trip<M>(msg: &M)
where
    M: Message + Default + PartialEq + std::fmt::Debug,
{
    let bytes = frame::encode(msg);
    assert_eq!(bytes.len(), HEADER_LEN + msg.encoded_len());
    let (back, used): (M, usize) =
        frame::decode(&bytes, usize::MAX).expect("a re-encoded message decodes");
    assert_eq!(used, bytes.len());
    assert_eq!(&back, msg, "decode(encode(m)) != m");
    assert_eq!(frame::encode(&back), bytes, "encoding is not stable");
}

/// Checks every frame entry point on `data` under the cap `max`.
fn frames<M>(data: &[u8], max: usize)
where
    M: Message + Default + PartialEq + std::fmt::Debug,
{
    let checked = frame::check(data, max);
    let decoded = frame::decode::<M>(data, max);
    match (&checked, &decoded) {
        (Ok(None), Err(FrameError::Truncated)) => {
            // Not a whole frame: either the header or the body is short.
            if data.len() >= HEADER_LEN {
                let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
                assert!(len <= max && data.len() < HEADER_LEN + len);
            }
        }
        (Ok(Some(total)), Ok((msg, used))) => {
            assert_eq!(total, used);
            assert!(*total >= HEADER_LEN && *total <= data.len());
            assert!(*total - HEADER_LEN <= max);
            round_trip(msg);
        }
        (Ok(Some(total)), Err(FrameError::Malformed(_))) => {
            assert!(*total <= data.len());
        }
        (Err(FrameError::TooLarge { len, max: m }), Err(FrameError::TooLarge { .. })) => {
            assert_eq!(*m, max);
            assert!(*len > max);
        }
        (c, d) => panic!("check and decode disagree: {c:?} vs {d:?}"),
    }

    // The async reader must agree with check/decode, whole or byte by byte.
    for chunk in [usize::MAX, 1] {
        let mut stream = Chunked { data, chunk };
        let read = run_now(frame::read::<M, _>(&mut stream, max));
        match (&decoded, &read) {
            (Ok((a, _)), Ok(b)) => assert_eq!(a, b, "read and decode give different values"),
            (
                Err(FrameError::TooLarge { len: a, .. }),
                Err(FrameError::TooLarge { len: b, .. }),
            ) => {
                assert_eq!(a, b)
            }
            (Err(FrameError::Malformed(_)), Err(FrameError::Malformed(_))) => {}
            (Err(FrameError::Truncated), Err(FrameError::Eof)) => assert!(data.is_empty()),
            (Err(FrameError::Truncated), Err(FrameError::Truncated)) => assert!(!data.is_empty()),
            (d, r) => panic!("decode and read disagree (chunk {chunk}): {d:?} vs {r:?}"),
        }
    }

    // A buffer holding several frames, decoded one after another as a
    // stream reader would: each step consumes what `check` measured.
    let mut rest = data;
    for _ in 0..MAX_FRAMES_PER_INPUT {
        match frame::decode::<M>(rest, max) {
            Ok((msg, used)) => {
                assert!(used >= HEADER_LEN && used <= rest.len());
                round_trip(&msg);
                rest = &rest[used..];
            }
            Err(FrameError::Malformed(_)) => {
                let Ok(Some(used)) = frame::check(rest, max) else {
                    panic!("a malformed frame was not whole");
                };
                rest = &rest[used..];
            }
            Err(_) => break,
        }
    }
}

fn invite(text: &str) {
    if let Ok(link) = text.parse::<InviteLink>() {
        assert!(!link.relay.is_empty());
        assert_eq!(link.trust_root.len(), 33);
        assert!(!link.token.is_empty());
        let printed = link.to_string();
        assert_eq!(
            printed.parse::<InviteLink>().as_ref(),
            Ok(&link),
            "invite link does not round-trip: {text:?} -> {printed:?}"
        );
    }
}

fn contact_code(text: &str) {
    if let Ok(code) = text.parse::<ContactCode>() {
        let printed = code.to_string();
        assert_eq!(
            printed.parse::<ContactCode>(),
            Ok(code),
            "contact code does not round-trip: {text:?} -> {printed:?}"
        );
        assert_eq!(
            ContactCode::from_bytes(code.account_id().as_bytes()),
            Ok(code)
        );
        assert_eq!(code.short().len(), 4);
    }
}

fuzz_target!(|data: &[u8]| {
    for max in [SMALL_MAX, DEFAULT_MAX_FRAME_BYTES] {
        frames::<Request>(data, max);
        frames::<Response>(data, max);
        frames::<Push>(data, max);
    }
    // Links and codes arrive as text (pasted, typed, read aloud).
    let text = String::from_utf8_lossy(data);
    invite(&text);
    contact_code(&text);
});
