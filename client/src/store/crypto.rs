//! Key derivation and authenticated encryption for the store.
//!
//! The passphrase goes through Argon2id once per open; the 32-byte output is
//! split with HMAC-SHA256 under two distinct labels into an encryption key
//! (XChaCha20-Poly1305 for values) and a MAC key (HMAC-SHA256 for sled keys).
//! Neither the passphrase nor the Argon2 output outlive [`Keys::derive`].
//!
//! This module knows nothing about sled or records: bytes in, bytes out.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length of the random Argon2 salt.
pub(crate) const SALT_LEN: usize = 16;
/// Length of an XChaCha20-Poly1305 nonce.
const NONCE_LEN: usize = 24;
/// First byte of every sealed value, so the value format can change later.
const SEALED_VERSION: u8 = 1;
/// Label for the value-encryption key.
const ENC_LABEL: &[u8] = b"sotto store v1: value encryption key";
/// Label mixing the erase key into the Argon2 output (format 2).
const ERASE_LABEL: &[u8] = b"sotto store v2: erase key";
/// Length of the erase key.
pub(crate) const ERASE_KEY_LEN: usize = 32;
/// Label for the sled-key MAC key.
const MAC_LABEL: &[u8] = b"sotto store v1: key hashing key";

type HmacSha256 = Hmac<Sha256>;

/// Argon2id parameters, kept in the plaintext header so they can be raised
/// later without breaking existing profiles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KdfParams {
    /// Always "argon2id" today; anything else is refused.
    pub(crate) alg: String,
    /// Memory cost in KiB.
    pub(crate) m_kib: u32,
    /// Time cost (passes).
    pub(crate) t: u32,
    /// Parallelism.
    pub(crate) p: u32,
}

impl KdfParams {
    /// The defaults new profiles get (OWASP's Argon2id recommendation).
    pub(crate) fn default_params() -> KdfParams {
        KdfParams {
            alg: ALG_ARGON2ID.to_owned(),
            m_kib: 19_456,
            t: 2,
            p: 1,
        }
    }
}

/// The only algorithm name accepted in the header.
pub(crate) const ALG_ARGON2ID: &str = "argon2id";

/// Why key derivation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KdfError {
    /// The header names parameters Argon2 refuses, or an unknown algorithm.
    #[error("unsupported key derivation parameters")]
    BadParams,
}

/// The two store keys. Zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct Keys {
    enc: [u8; 32],
    mac: [u8; 32],
}

impl Keys {
    /// Derives the store keys from a passphrase. Deliberately slow (Argon2id).
    pub(crate) fn derive(
        passphrase: &str,
        salt: &[u8],
        params: &KdfParams,
    ) -> Result<Keys, KdfError> {
        Self::derive_with_erase_key(passphrase, salt, params, None)
    }

    /// Like [`Keys::derive`], mixing in the profile's erase key (format 2):
    /// without it the passphrase opens nothing, so destroying that one small
    /// file makes the whole store unreadable (`sotto panic`).
    pub(crate) fn derive_with_erase_key(
        passphrase: &str,
        salt: &[u8],
        params: &KdfParams,
        erase_key: Option<&[u8]>,
    ) -> Result<Keys, KdfError> {
        if params.alg != ALG_ARGON2ID {
            return Err(KdfError::BadParams);
        }
        let argon_params = Params::new(params.m_kib, params.t, params.p, Some(32))
            .map_err(|_| KdfError::BadParams)?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params);
        let mut master = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(passphrase.as_bytes(), salt, master.as_mut())
            .map_err(|_| KdfError::BadParams)?;
        if let Some(erase_key) = erase_key {
            *master = hmac32(master.as_ref(), &[ERASE_LABEL, erase_key]);
        }
        // Separate keys for separate jobs, so a weakness in one use cannot
        // leak into the other.
        Ok(Keys {
            enc: hmac32(master.as_ref(), &[ENC_LABEL]),
            mac: hmac32(master.as_ref(), &[MAC_LABEL]),
        })
    }

    /// The sled key for a logical key in a tree: HMAC(mac key, tree || 0 || key).
    ///
    /// Hashing keys stops names, account ids and message ids from appearing in
    /// the files; the separator keeps (tree, key) pairs unambiguous.
    pub(crate) fn hash_key(&self, tree: &str, logical: &[u8]) -> [u8; 32] {
        hmac32(&self.mac, &[tree.as_bytes(), &[0], logical])
    }

    /// Encrypts `plaintext` bound to `(tree, stored_key)`: version || nonce || ciphertext.
    ///
    /// Binding the AAD to the tree and stored key stops an attacker with write
    /// access to the files from swapping values between entries.
    pub(crate) fn seal(&self, tree: &str, stored_key: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        // Random 192-bit nonces never repeat in practice, so no counter state is needed.
        rand::rng().fill_bytes(&mut nonce);
        let aad = aad(tree, stored_key);
        let cipher = XChaCha20Poly1305::new(Key::from_slice(&self.enc));
        let ciphertext = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 encryption only fails for absurd lengths");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        out.push(SEALED_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Decrypts a value sealed by [`Keys::seal`] for the same `(tree, stored_key)`.
    /// `None` if it is malformed or fails authentication.
    pub(crate) fn open(
        &self,
        tree: &str,
        stored_key: &[u8],
        sealed: &[u8],
    ) -> Option<Zeroizing<Vec<u8>>> {
        let (&version, rest) = sealed.split_first()?;
        if version != SEALED_VERSION || rest.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let aad = aad(tree, stored_key);
        let cipher = XChaCha20Poly1305::new(Key::from_slice(&self.enc));
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .ok()
            .map(Zeroizing::new)
    }
}

impl Keys {
    /// Keys no passphrase derives: for a filler store that must look like a
    /// profile and open for no one (see `Store::create_filler`).
    pub(crate) fn random() -> Keys {
        let mut keys = Keys {
            enc: [0; 32],
            mac: [0; 32],
        };
        rand::rng().fill_bytes(&mut keys.enc);
        rand::rng().fill_bytes(&mut keys.mac);
        keys
    }
}

/// A fresh random erase key.
pub(crate) fn random_erase_key() -> [u8; ERASE_KEY_LEN] {
    let mut key = [0u8; ERASE_KEY_LEN];
    rand::rng().fill_bytes(&mut key);
    key
}

/// A fresh random salt.
pub(crate) fn random_salt() -> [u8; SALT_LEN] {
    let mut salt = [0u8; SALT_LEN];
    rand::rng().fill_bytes(&mut salt);
    salt
}

fn aad(tree: &str, stored_key: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(tree.len() + 1 + stored_key.len());
    aad.extend_from_slice(tree.as_bytes());
    aad.push(0);
    aad.extend_from_slice(stored_key);
    aad
}

fn hmac32(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac =
        <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap_params() -> KdfParams {
        KdfParams {
            alg: ALG_ARGON2ID.to_owned(),
            m_kib: 64,
            t: 1,
            p: 1,
        }
    }

    #[test]
    fn seal_open_round_trip_and_binding() {
        let keys = Keys::derive("pw", &[7u8; SALT_LEN], &cheap_params()).expect("derive");
        let sealed = keys.seal("tree", b"key", b"hello");
        assert_eq!(
            keys.open("tree", b"key", &sealed)
                .expect("opens")
                .as_slice(),
            b"hello"
        );
        // Moved to another key or tree: refused.
        assert!(keys.open("tree", b"other", &sealed).is_none());
        assert!(keys.open("other", b"key", &sealed).is_none());
        // Tampered: refused.
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(keys.open("tree", b"key", &bad).is_none());
        assert!(keys.open("tree", b"key", &[]).is_none());
        // Different passphrase: refused.
        let other = Keys::derive("pw2", &[7u8; SALT_LEN], &cheap_params()).expect("derive");
        assert!(other.open("tree", b"key", &sealed).is_none());
    }

    #[test]
    fn key_hashing_is_deterministic_and_separated() {
        let keys = Keys::derive("pw", &[1u8; SALT_LEN], &cheap_params()).expect("derive");
        assert_eq!(keys.hash_key("a", b"x"), keys.hash_key("a", b"x"));
        assert_ne!(keys.hash_key("a", b"x"), keys.hash_key("b", b"x"));
        assert_ne!(keys.hash_key("a", b"x"), keys.hash_key("a", b"y"));
        assert_ne!(keys.enc, keys.mac);
    }

    #[test]
    fn unknown_algorithm_refused() {
        let mut params = cheap_params();
        params.alg = "scrypt".to_owned();
        assert!(Keys::derive("pw", &[0u8; SALT_LEN], &params).is_err());
    }
}
