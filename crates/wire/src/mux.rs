//! Requests multiplexed over one byte stream: the TLS-over-TCP fallback for
//! networks that block UDP, carrying the same frames as QUIC.
//!
//! QUIC gives each request its own stream; here each unit is a 4-byte
//! big-endian channel id followed by one [`frame`]. The client numbers its
//! requests from 1 and the relay answers on the same id, in any order.
//! Channel [`PUSH`] carries the relay's pushes (a `Push` frame) and, the other
//! way, the client's keep-alives (an empty frame). On [`CLOSING`] the relay
//! sends one `Response` holding an `Error` that says why it is about to close
//! the connection (QUIC says this in its close frame).
//!
//! A frame over the cap cannot be skipped without reading it, so unlike on
//! QUIC it ends the whole connection, not one request.

use prost::Message;
use tokio::io::AsyncRead;

use crate::frame::{self, FrameError};

/// Pushes (relay to client) and keep-alives (client to relay).
pub const PUSH: u32 = 0;
/// The relay's last word before it closes the connection.
pub const CLOSING: u32 = u32::MAX;
/// Bytes of the channel id before each frame.
pub const ID_LEN: usize = 4;

/// Encodes `msg` as one unit on channel `id`.
pub fn encode<M: Message>(id: u32, msg: &M) -> Vec<u8> {
    let body = frame::encode(msg);
    let mut out = Vec::with_capacity(ID_LEN + body.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Reads one unit: the channel id and its frame, refusing frames over `max`.
///
/// [`FrameError::Eof`] means the stream ended cleanly between units. A
/// frame that does not decode was read whole, so the stream is still in
/// step and the next unit can be read.
pub async fn read<M, R>(reader: &mut R, max: usize) -> Result<(u32, M), FrameError>
where
    M: Message + Default,
    R: AsyncRead + Unpin,
{
    let (id, body) = read_unit(reader, max).await?;
    Ok((id, M::decode(body.as_slice())?))
}

/// Reads one unit's channel id and raw frame body, so that a body which does
/// not decode can still be answered on its id.
pub async fn read_unit<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<(u32, Vec<u8>), FrameError> {
    let id = u32::from_be_bytes(frame::read_header::<ID_LEN, _>(reader).await?);
    let body = frame::read_raw(reader, max).await.map_err(|e| match e {
        // The unit started: a stream ending now ends it mid-way.
        FrameError::Eof => FrameError::Truncated,
        other => other,
    })?;
    Ok((id, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::{Fetch, Request, request};

    fn fetch(limit: u32) -> Request {
        Request {
            version: 1,
            kind: Some(request::Kind::Fetch(Fetch { limit })),
        }
    }

    #[tokio::test]
    async fn units_round_trip_in_order() {
        let mut bytes = encode(7, &fetch(3));
        bytes.extend(encode(PUSH, &Request::default()));
        bytes.extend(encode(CLOSING, &fetch(9)));
        let mut r = bytes.as_slice();
        assert_eq!(read::<Request, _>(&mut r, 1024).await.expect("one").0, 7);
        let (id, empty) = read::<Request, _>(&mut r, 1024).await.expect("two");
        assert_eq!((id, empty), (PUSH, Request::default()));
        let (id, last) = read::<Request, _>(&mut r, 1024).await.expect("three");
        assert_eq!((id, last), (CLOSING, fetch(9)));
        assert!(matches!(
            read::<Request, _>(&mut r, 1024).await,
            Err(FrameError::Eof)
        ));
    }

    #[tokio::test]
    async fn cut_units_and_big_frames_are_errors() {
        let bytes = encode(7, &fetch(3));
        for cut in 1..bytes.len() {
            let mut r = &bytes[..cut];
            assert!(
                matches!(
                    read::<Request, _>(&mut r, 1024).await,
                    Err(FrameError::Truncated)
                ),
                "cut at {cut}"
            );
        }
        let mut r = bytes.as_slice();
        assert!(matches!(
            read::<Request, _>(&mut r, 1).await,
            Err(FrameError::TooLarge { .. })
        ));
    }
}
