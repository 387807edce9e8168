//! The Sotto client: an engine that owns one profile's account, encrypted
//! store and relay connection, and the `sotto` command-line interface over it.
//!
//! - [`store`]: the encrypted sled store (libsignal's store traits, contacts,
//!   messages, outbox); nothing leaves it unencrypted.
//! - [`transport`]: QUIC to the relay with the certificate pinned from the invite.
//! - [`engine`]: outbox-first sending, store-then-acknowledge receiving, trust
//!   on first use.
//! - [`safe`]: person-supplied text made safe to show, and field limits.
//! - [`service`]: the engine as one long-running local service (`sotto app`,
//!   `sotto listen`) that owns the store; every face is a client of it.
//! - [`control`]: the socket through which other `sotto` commands reach a
//!   running service that holds the store.
//!
//! It is **not** a relay, and it never logs message text, names or keys.
#![warn(missing_docs)]

pub mod control;
pub mod engine;
pub mod group;
pub mod routes;
pub mod safe;
pub mod service;
pub mod store;
pub mod transport;
pub mod web;
