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

/// What the relay signs to countersign a hash (`Timestamp`): a domain label,
/// the hash and the relay's time, so the signature cannot be mistaken for
/// any other the server key makes.
pub fn timestamp_transcript(hash: &[u8], time_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(TIMESTAMP_LABEL.len() + hash.len() + 8);
    out.extend_from_slice(TIMESTAMP_LABEL);
    out.extend_from_slice(hash);
    out.extend_from_slice(&time_ms.to_be_bytes());
    out
}

/// Domain label of [`timestamp_transcript`].
pub const TIMESTAMP_LABEL: &[u8] = b"sotto-timestamp-v1\0";

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

/// What a group request proves: each is signed over a different transcript.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupPurpose {
    /// `GroupWrite`, signed by the group's current auth key (the new one on creation).
    Write,
    /// `GroupRead`, signed by the auth key.
    Read,
    /// `GroupJoinRequest`, signed by the link key.
    Join,
    /// `GroupFetchRequests`, signed by the auth key.
    FetchRequests,
    /// `GroupDeleteRequests`, signed by the auth key.
    DeleteRequests,
}

impl GroupPurpose {
    fn tag(self) -> &'static [u8] {
        match self {
            GroupPurpose::Write => b"write",
            GroupPurpose::Read => b"read",
            GroupPurpose::Join => b"join",
            GroupPurpose::FetchRequests => b"fetch-requests",
            GroupPurpose::DeleteRequests => b"delete-requests",
        }
    }
}

/// Builds the bytes a group request signs:
/// `"sotto-group-v1" || len(tag) || tag || exporter || len(group_id) || group_id || SHA-256(body)`.
///
/// `body` is the request's other fields, encoded by [`group_body`]. Binding to
/// the TLS exporter makes a captured signature useless on another connection,
/// so a removed member cannot replay an old member's read.
pub fn group_transcript(
    purpose: GroupPurpose,
    exporter: &[u8],
    group_id: &[u8],
    body: &[u8],
) -> Vec<u8> {
    use sha2::Digest;
    let tag = purpose.tag();
    let mut out = Vec::with_capacity(14 + 1 + tag.len() + exporter.len() + 1 + group_id.len() + 32);
    out.extend_from_slice(b"sotto-group-v1");
    out.push(tag.len() as u8);
    out.extend_from_slice(tag);
    out.extend_from_slice(exporter);
    out.push(group_id.len().min(255) as u8);
    out.extend_from_slice(group_id);
    out.extend_from_slice(&sha2::Sha256::digest(body));
    out
}

/// Encodes the fields a group request signs besides its group id: each part
/// length-prefixed (u32 BE), so no two field lists encode alike.
pub fn group_body(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(p);
    }
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

    #[test]
    fn group_transcripts_differ_by_purpose_session_group_and_body() {
        let base = group_transcript(GroupPurpose::Read, &[1; 32], &[7; 16], b"");
        assert_ne!(
            base,
            group_transcript(GroupPurpose::FetchRequests, &[1; 32], &[7; 16], b"")
        );
        assert_ne!(
            base,
            group_transcript(GroupPurpose::Read, &[2; 32], &[7; 16], b"")
        );
        assert_ne!(
            base,
            group_transcript(GroupPurpose::Read, &[1; 32], &[8; 16], b"")
        );
        assert_ne!(
            base,
            group_transcript(GroupPurpose::Read, &[1; 32], &[7; 16], b"x")
        );
        assert_ne!(group_body(&[b"ab", b"c"]), group_body(&[b"a", b"bc"]));
    }
}
