//! Sotto's wire layer, shared by the relay and the client.
//!
//! It holds:
//! - the protobuf types generated from `proto/relay.proto` and `proto/content.proto`
//!   ([`relay`], [`content`]);
//! - length-prefixed framing with a hard cap checked before any allocation ([`frame`]);
//! - the invite link format ([`invite::InviteLink`]) and contact codes ([`code::ContactCode`]);
//! - the constants both sides must agree on: ALPN, the TLS exporter label and the
//!   authentication transcript ([`auth`]).
//!
//! It is **not** a transport: it never opens sockets, and it knows nothing of
//! libsignal, sled or QUIC beyond the byte strings they exchange.
#![warn(missing_docs)]

pub mod auth;
pub mod code;
pub mod frame;
pub mod invite;
pub mod mux;

/// Messages between client and relay (`proto/relay.proto`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod relay {
    include!(concat!(env!("OUT_DIR"), "/sotto.relay.rs"));
}

/// Messages between clients, only ever inside end-to-end encryption (`proto/content.proto`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod content {
    include!(concat!(env!("OUT_DIR"), "/sotto.content.rs"));
}

/// The relay protocol version this build speaks (`Request.version`).
pub const PROTOCOL_VERSION: u32 = 1;

/// The content format version this build writes (`Content.version`).
pub const CONTENT_VERSION: u32 = 1;

/// ALPN protocol id for QUIC and TLS.
pub const ALPN: &[u8] = b"sotto/1";

/// Default cap on one frame, in bytes. Large enough for a prekey upload of
/// 100 Kyber keys (about 160 KiB), small enough that a peer cannot make the
/// relay allocate much for a frame it will reject.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 512 * 1024;
