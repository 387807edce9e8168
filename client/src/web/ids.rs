//! Opaque ids for URLs: a chat or a contact is named in a URL by an HMAC of
//! its contact code or group id under a key drawn at random each run, never
//! by a name or title. The browser's history (and anyone reading it later)
//! learns nothing about who the user talks to, and an id from an earlier run
//! names nothing.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The per-run key.
pub(crate) struct IdKey([u8; 32]);

impl IdKey {
    /// A fresh random key.
    pub(crate) fn random() -> IdKey {
        IdKey(rand::random())
    }

    fn id(&self, kind: &str, value: &str) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(kind.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        mac.finalize().into_bytes()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The id of the 1:1 chat (and contact page) with the person whose
    /// contact code is `code`.
    pub(crate) fn person(&self, code: &str) -> String {
        format!("p{}", self.id("person", code))
    }

    /// The id of a group (`hex`: the group's hex id).
    pub(crate) fn group(&self, hex: &str) -> String {
        format!("g{}", self.id("group", hex))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_within_a_run_and_differ_across_runs_and_kinds() {
        let key = IdKey::random();
        assert_eq!(key.person("abc"), key.person("abc"));
        assert_ne!(key.person("abc"), key.person("abd"));
        assert_ne!(key.person("abc")[1..], key.group("abc")[1..]);
        assert_ne!(key.person("abc"), IdKey::random().person("abc"));
        assert!(
            key.person("Mallory")
                .chars()
                .skip(1)
                .all(|c| c.is_ascii_hexdigit())
        );
        assert!(!key.person("Mallory").contains("Mallory"));
    }
}
