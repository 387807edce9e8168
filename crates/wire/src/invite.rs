//! Invite links: everything a client needs to join a relay, with no CA and no domain.
//!
//! `sotto://join?relay=HOST:PORT&pin=SPKI_SHA256&root=TRUST_ROOT&token=TOKEN`, the
//! three binary fields in unpadded base64url. The pin authenticates the relay's
//! TLS key, the root verifies sender certificates, and the token is a bearer
//! secret with bounded uses and an expiry on the relay.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A parsed invite link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteLink {
    /// `host:port` of the relay.
    pub relay: String,
    /// SHA-256 of the relay certificate's SubjectPublicKeyInfo.
    pub spki_pin: [u8; 32],
    /// Serialized sealed-sender trust-root public key (33 bytes).
    pub trust_root: Vec<u8>,
    /// The invite token.
    pub token: Vec<u8>,
}

/// Why a string is not an invite link.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadInvite {
    /// Wrong scheme or shape.
    #[error("not a Sotto invite link: expected sotto://join?relay=...&pin=...&root=...&token=...")]
    Shape,
    /// A field is missing.
    #[error("invite link is missing `{0}`; ask for the whole link again")]
    Missing(&'static str),
    /// A field does not decode.
    #[error("invite link field `{0}` is damaged; ask for the whole link again")]
    Damaged(&'static str),
}

impl std::fmt::Display for InviteLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sotto://join?relay={}&pin={}&root={}&token={}",
            self.relay,
            URL_SAFE_NO_PAD.encode(self.spki_pin),
            URL_SAFE_NO_PAD.encode(&self.trust_root),
            URL_SAFE_NO_PAD.encode(&self.token)
        )
    }
}

impl std::str::FromStr for InviteLink {
    type Err = BadInvite;

    fn from_str(s: &str) -> Result<Self, BadInvite> {
        let query = s
            .trim()
            .strip_prefix("sotto://join?")
            .ok_or(BadInvite::Shape)?;
        let mut relay = None;
        let mut pin = None;
        let mut root = None;
        let mut token = None;
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').ok_or(BadInvite::Shape)?;
            match key {
                "relay" => relay = Some(value.to_string()),
                "pin" => pin = Some(value),
                "root" => root = Some(value),
                "token" => token = Some(value),
                _ => {} // Unknown fields are ignored so newer relays can add some.
            }
        }
        let decode = |name: &'static str, v: Option<&str>| -> Result<Vec<u8>, BadInvite> {
            URL_SAFE_NO_PAD
                .decode(v.ok_or(BadInvite::Missing(name))?)
                .map_err(|_| BadInvite::Damaged(name))
        };
        let relay = relay
            .filter(|r| !r.is_empty())
            .ok_or(BadInvite::Missing("relay"))?;
        let spki_pin = decode("pin", pin)?
            .try_into()
            .map_err(|_| BadInvite::Damaged("pin"))?;
        let trust_root = decode("root", root)?;
        let token = decode("token", token)?;
        if trust_root.len() != 33 {
            return Err(BadInvite::Damaged("root"));
        }
        if token.is_empty() {
            return Err(BadInvite::Damaged("token"));
        }
        Ok(InviteLink {
            relay,
            spki_pin,
            trust_root,
            token,
        })
    }
}

/// The fingerprint of a relay's sealed-sender trust root, as people compare
/// it: SHA-256 of the serialized key in lowercase hex, in groups of four
/// (`3f2a 9c01 ...`, 16 groups). The relay prints it (`sotto-relay init`,
/// `stats`, `check-config`), `sotto whoami` shows the relay's, and `sotto
/// note verify` names the one a proof rests on, so a proof can be checked
/// against the relay that made it.
pub fn trust_root_fingerprint(trust_root: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(trust_root);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let link = InviteLink {
            relay: "127.0.0.1:4433".into(),
            spki_pin: [3; 32],
            trust_root: vec![5; 33],
            token: vec![7; 16],
        };
        let text = link.to_string();
        assert_eq!(text.parse::<InviteLink>(), Ok(link));
        assert_eq!("https://x".parse::<InviteLink>(), Err(BadInvite::Shape));
        let no_token = text.split("&token").next().expect("has token").to_string();
        assert_eq!(
            no_token.parse::<InviteLink>(),
            Err(BadInvite::Missing("token"))
        );
    }
    #[test]
    fn fingerprint_is_grouped_sha256() {
        // SHA-256 of the empty string, grouped.
        assert_eq!(
            trust_root_fingerprint(b""),
            "e3b0 c442 98fc 1c14 9afb f4c8 996f b924 27ae 41e4 649b 934c a495 991b 7852 b855"
        );
        assert_ne!(
            trust_root_fingerprint(&[5; 33]),
            trust_root_fingerprint(&[6; 33])
        );
    }
}
