//! What a client signs to prove it holds an identity key, bound to one TLS session.
//!
//! The transcript is `"sotto-auth-v1" || purpose || exporter || nonce`, where the
//! exporter is 32 bytes of TLS keying material (RFC 5705 / RFC 8446 §7.5) under
//! [`EXPORTER_LABEL`] and the nonce is a fresh relay challenge. Binding to the
//! exporter means a signature captured from one connection (by a malicious relay
//! front or a replay) is worthless on any other; the nonce means the relay
//! contributed fresh randomness itself.

/// TLS exporter label for the authentication transcript.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-sotto-auth";

/// Length of the exported keying material.
pub const EXPORTER_LEN: usize = 32;

/// Length of a relay challenge nonce.
pub const NONCE_LEN: usize = 32;

/// Why a signature is made; each purpose signs a different transcript, so a
/// signature for one cannot be replayed as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Registering a new account.
    Register,
    /// Authenticating an existing account on a new connection.
    Authenticate,
    /// Replacing the account's identity key (signed by the old and the new key).
    ResetIdentity,
}

impl Purpose {
    fn tag(self) -> &'static [u8] {
        match self {
            Purpose::Register => b"register",
            Purpose::Authenticate => b"authenticate",
            Purpose::ResetIdentity => b"reset-identity",
        }
    }
}

/// Builds the bytes to sign for `purpose` on the connection whose exporter is `exporter`.
pub fn transcript(purpose: Purpose, exporter: &[u8], nonce: &[u8]) -> Vec<u8> {
    let tag = purpose.tag();
    let mut out = Vec::with_capacity(13 + 1 + tag.len() + exporter.len() + nonce.len());
    out.extend_from_slice(b"sotto-auth-v1");
    out.push(tag.len() as u8);
    out.extend_from_slice(tag);
    out.extend_from_slice(exporter);
    out.extend_from_slice(nonce);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_and_sessions_give_distinct_transcripts() {
        let a = transcript(Purpose::Register, &[1; 32], &[2; 32]);
        let b = transcript(Purpose::Authenticate, &[1; 32], &[2; 32]);
        let c = transcript(Purpose::Authenticate, &[3; 32], &[2; 32]);
        assert_ne!(a, b);
        assert_ne!(b, c);
    }
}
