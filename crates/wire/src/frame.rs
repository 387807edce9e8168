//! Length-prefixed framing: a 4-byte big-endian length, then the payload.
//!
//! Decoding is check-then-parse (the mini-redis pattern) with a hard cap: a
//! length over the maximum is an error before any buffer is grown, so a peer
//! cannot make us allocate for a frame we will reject.

use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Errors reading or decoding one frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The declared length is over the cap.
    #[error("frame of {len} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// Declared length.
        len: usize,
        /// The cap in force.
        max: usize,
    },
    /// The stream ended before a whole frame arrived.
    #[error("stream ended in the middle of a frame")]
    Truncated,
    /// The stream ended cleanly before any frame started.
    #[error("stream ended before a frame")]
    Eof,
    /// The payload is not a valid protobuf message of the expected type.
    #[error("frame is not a valid message: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// Reading or writing the underlying stream failed.
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
}

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Encodes `msg` as one frame.
pub fn encode<M: Message>(msg: &M) -> Vec<u8> {
    let len = msg.encoded_len();
    let mut out = Vec::with_capacity(HEADER_LEN + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    msg.encode(&mut out)
        .expect("a Vec grows to fit, so encoding cannot run out of space");
    out
}

/// Checks whether `buf` starts with a whole frame.
///
/// Returns `Ok(None)` when more bytes are needed and `Ok(Some(total))` with the
/// frame's total length (header included) when it is complete.
pub fn check(buf: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if buf.len() < HEADER_LEN + len {
        return Ok(None);
    }
    Ok(Some(HEADER_LEN + len))
}

/// Decodes one complete frame from `buf` (as measured by [`check`]).
pub fn decode<M: Message + Default>(buf: &[u8], max: usize) -> Result<(M, usize), FrameError> {
    match check(buf, max)? {
        None => Err(FrameError::Truncated),
        Some(total) => Ok((M::decode(&buf[HEADER_LEN..total])?, total)),
    }
}

/// Reads one frame from an async stream, refusing lengths over `max`.
pub async fn read<M, R>(reader: &mut R, max: usize) -> Result<M, FrameError>
where
    M: Message + Default,
    R: AsyncRead + Unpin,
{
    let body = read_raw(reader, max).await?;
    Ok(M::decode(body.as_slice())?)
}

/// Reads one frame's body without decoding it, refusing lengths over `max`
/// before allocating. [`FrameError::Eof`] if the stream ends before a frame.
pub async fn read_raw<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Vec<u8>, FrameError> {
    let header: [u8; HEADER_LEN] = read_header(reader).await?;
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    read_body(reader, len).await
}

/// Reads a body of `len` bytes whose length the caller has already checked
/// against its cap; a stream that ends first is [`FrameError::Truncated`].
pub async fn read_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    len: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Truncated
        } else {
            FrameError::Io(e)
        }
    })?;
    Ok(body)
}

/// Reads `N` header bytes: [`FrameError::Eof`] if the stream ends before the
/// first, [`FrameError::Truncated`] if it ends after some.
pub async fn read_header<const N: usize, R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<[u8; N], FrameError> {
    let mut header = [0u8; N];
    let mut filled = 0;
    while filled < N {
        let n = reader.read(&mut header[filled..]).await?;
        if n == 0 {
            return Err(if filled == 0 {
                FrameError::Eof
            } else {
                FrameError::Truncated
            });
        }
        filled += n;
    }
    Ok(header)
}

/// Writes one frame to an async stream.
pub async fn write<M, W>(writer: &mut W, msg: &M) -> Result<(), FrameError>
where
    M: Message,
    W: AsyncWrite + Unpin,
{
    writer.write_all(&encode(msg)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::relay::{Request, Send, request};

    fn send_request(envelope: Vec<u8>) -> Request {
        Request {
            version: crate::PROTOCOL_VERSION,
            kind: Some(request::Kind::Send(Send {
                recipient: vec![7; 16],
                device_id: 1,
                registration_id: 42,
                envelope,
            })),
        }
    }

    #[test]
    fn over_cap_is_refused_before_the_body_arrives() {
        let mut buf = (1_000_000u32).to_be_bytes().to_vec();
        buf.push(0);
        assert!(matches!(
            check(&buf, 1024),
            Err(FrameError::TooLarge {
                len: 1_000_000,
                max: 1024
            })
        ));
    }

    #[test]
    fn partial_frames_ask_for_more() {
        let frame = encode(&send_request(vec![1, 2, 3]));
        for cut in 0..frame.len() {
            assert_eq!(check(&frame[..cut], 1024).expect("under cap"), None);
        }
        assert_eq!(check(&frame, 1024).expect("under cap"), Some(frame.len()));
    }

    #[tokio::test]
    async fn async_read_reports_truncation_and_eof() {
        let frame = encode(&send_request(vec![9; 40]));
        let mut cut = &frame[..frame.len() - 1];
        assert!(matches!(
            read::<Request, _>(&mut cut, 1024).await,
            Err(FrameError::Truncated)
        ));
        let mut empty: &[u8] = &[];
        assert!(matches!(
            read::<Request, _>(&mut empty, 1024).await,
            Err(FrameError::Eof)
        ));
        let mut whole = frame.as_slice();
        let back: Request = read(&mut whole, 1024).await.expect("whole frame");
        assert_eq!(back, send_request(vec![9; 40]));
    }

    proptest! {
        #[test]
        fn round_trips(envelope in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let req = send_request(envelope);
            let bytes = encode(&req);
            let (back, used): (Request, usize) = decode(&bytes, 4096).expect("valid frame");
            prop_assert_eq!(used, bytes.len());
            prop_assert_eq!(back, req);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Request>(&bytes, 256);
        }
    }
}
