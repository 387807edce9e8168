//! Linkable spontaneous anonymous group (ring) signatures over ristretto255,
//! with a linking tag bound to a *scope* rather than to the signer's key.
//!
//! # What it is for
//!
//! A member of a group signs a message "as some member of this ring of public
//! keys" without revealing which one. Every signature carries a 32-byte
//! *tag*: the same secret key always produces the same tag in the same scope,
//! so a verifier can count one vote per member (e.g. "me too" corroborations
//! of a warning, scoped to that warning) or notice a member posting twice,
//! while tags produced in different scopes cannot be linked to each other.
//!
//! # Construction
//!
//! This is the bLSAG scheme (Liu–Wei–Wong 2004; "Zero to Monero" 2nd ed.,
//! ch. 3.4) with the key-image base derived from the scope instead of from
//! each public key:
//!
//! * `G` is the ristretto255 base point; a secret key is a nonzero scalar `x`,
//!   its public key is `P = x·G`.
//! * The tag base is `H = from_uniform_bytes(SHA-512(lp("sotto-lsag-v1 tag
//!   base") || lp(scope)))`, where `lp(s)` is `s` preceded by its length as
//!   a little-endian `u64`. The tag (key image) is `I = x·H`.
//! * The ring digest is `SHA-512(lp("sotto-lsag-v1 ring") || u64le(n) || P_0
//!   || … || P_{n-1})` over the compressed keys in order. Each challenge is
//!   `c = Scalar::from_hash(SHA-512(lp("sotto-lsag-v1 challenge") ||
//!   lp(scope) || lp(message) || I || ring digest || L || R))`.
//! * The signer at index `π` picks a random `α`, sets `c_{π+1} = Hs(αG, αH)`,
//!   and for every other index `i` (going round the ring) picks a random
//!   `r_i`, sets `L_i = r_i·G + c_i·P_i`, `R_i = r_i·H + c_i·I` and
//!   `c_{i+1} = Hs(L_i, R_i)`. Finally `r_π = α − c_π·x`, which closes the
//!   ring. The signature is `(I, c_0, r_0, …, r_{n-1})`.
//! * The verifier recomputes the challenges from `c_0` round the whole ring
//!   and accepts iff it arrives back at `c_0`.
//!
//! The encoding is `I || c_0 || r_0 || … || r_{n-1}`, i.e.
//! **`32 · (n + 2)` bytes** for a ring of `n` keys. Scalars must be canonical
//! and the tag must be a valid, non-identity point. Rings are limited to
//! [`MAX_RING`] members so a hostile message cannot make a verifier burn CPU.
//!
//! # Example
//!
//! ```
//! use sotto_lsag::{SecretKey, sign, verify};
//!
//! let alice = SecretKey::derive(&[1; 32], b"group 7");
//! let bob = SecretKey::derive(&[2; 32], b"group 7");
//! let ring = [alice.public(), bob.public()];
//!
//! let sig = sign(&bob, &ring, b"warning 42", b"me too")?;
//! verify(&ring, b"warning 42", b"me too", &sig)?;
//! // Bob's second corroboration of the same warning carries the same tag.
//! assert_eq!(sig.tag(), bob.tag(b"warning 42"));
//! # Ok::<(), sotto_lsag::Error>(())
//! ```
//!
//! # What it protects
//!
//! * A verifier learns only that *some* member of the given ring signed the
//!   given message in the given scope (under DDH in ristretto255, in the
//!   random-oracle model).
//! * Two signatures made with one key in one scope carry the same tag, even
//!   if the messages or the rings differ; a signer cannot produce a second,
//!   different tag in that scope (soundness of the proof that `log_G P_π =
//!   log_H I` for some ring member).
//! * Tags from different scopes do not link to each other or to a public key.
//!
//! # What it does not protect
//!
//! * The ring is public and chosen by the signer: anonymity is only among the
//!   ring actually used. A ring of one key identifies the signer, and a ring
//!   padded with keys the verifier knows to be inactive gives little cover.
//! * Signing several times in one scope with *different* rings links those
//!   signatures through the tag, so the signer hides only in the
//!   intersection of those rings.
//! * Whoever holds a secret key can compute its tag in any scope and so
//!   recognise its own signatures; a leaked secret key de-anonymises every
//!   signature it made.
//! * Nothing here hides the message, the scope, or when and from where the
//!   signature was sent.

use core::fmt;

use curve25519_dalek::constants::{RISTRETTO_BASEPOINT_POINT, RISTRETTO_BASEPOINT_TABLE};
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use rand_core_06::OsRng;
use sha2::{Digest, Sha512};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length in bytes of a linking tag (a compressed ristretto255 point).
pub const TAG_LEN: usize = 32;

/// Length in bytes of an encoded public key (a compressed ristretto255 point).
pub const PUBLIC_KEY_LEN: usize = 32;

/// Largest ring accepted by [`sign`], [`verify`] and [`Signature::from_bytes`].
pub const MAX_RING: usize = 1024;

const DOMAIN_TAG_BASE: &[u8] = b"sotto-lsag-v1 tag base";
const DOMAIN_RING: &[u8] = b"sotto-lsag-v1 ring";
const DOMAIN_CHALLENGE: &[u8] = b"sotto-lsag-v1 challenge";
const DOMAIN_SECRET: &[u8] = b"sotto-lsag-v1 secret key";

/// Everything that can go wrong when signing, verifying or decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The signing key's public key is not in the ring.
    #[error("signing key is not a member of the ring")]
    NotInRing,
    /// The ring has no members.
    #[error("ring is empty")]
    EmptyRing,
    /// The ring lists the same public key more than once.
    #[error("ring contains a public key more than once")]
    DuplicateKey,
    /// A public key is not 32 bytes, not a valid ristretto255 encoding, or
    /// the identity point.
    #[error("invalid public key")]
    BadKey,
    /// A signature encoding has the wrong length, a non-canonical scalar, or
    /// a tag that is not a valid non-identity point; or a signature's number
    /// of responses differs from the size of the ring it is checked against.
    #[error("malformed signature")]
    Malformed,
    /// The ring (or the ring size implied by a signature) exceeds [`MAX_RING`].
    #[error("ring larger than {MAX_RING} members")]
    TooLarge,
    /// The signature does not verify for this ring, scope and message.
    #[error("invalid signature")]
    Invalid,
}

/// A signing key: a nonzero scalar, zeroized when dropped.
///
/// Its `Debug` output never shows the scalar.
pub struct SecretKey {
    scalar: Scalar,
}

impl SecretKey {
    /// Deterministic per-context key: the same seed and context give the same key
    /// (the messenger derives one key per group from a per-profile seed).
    ///
    /// Different contexts give independent keys, whose public keys and tags
    /// cannot be linked to each other without the seed.
    pub fn derive(seed: &[u8; 32], context: &[u8]) -> SecretKey {
        let mut counter: u32 = 0;
        loop {
            let mut h = hasher(DOMAIN_SECRET);
            put_var(&mut h, context);
            h.update(seed);
            h.update(counter.to_le_bytes());
            let scalar = Scalar::from_hash(h);
            // A zero scalar has probability ~2^-252; retry rather than fail.
            if scalar != Scalar::ZERO {
                return SecretKey { scalar };
            }
            counter = counter.wrapping_add(1);
        }
    }

    /// The public key `x·G` that goes into rings.
    pub fn public(&self) -> PublicKey {
        PublicKey(
            (&self.scalar * RISTRETTO_BASEPOINT_TABLE)
                .compress()
                .to_bytes(),
        )
    }

    /// The linking tag this key produces in `scope` (equals the tag in any signature it makes there).
    pub fn tag(&self, scope: &[u8]) -> [u8; TAG_LEN] {
        (self.scalar * tag_base(scope)).compress().to_bytes()
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.scalar.zeroize();
    }
}

impl ZeroizeOnDrop for SecretKey {}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey").finish_non_exhaustive()
    }
}

/// A ring member's public key: a compressed ristretto255 point, always a
/// valid non-identity point (checked on construction).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct PublicKey([u8; PUBLIC_KEY_LEN]);

impl PublicKey {
    /// The 32-byte compressed encoding.
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.0
    }

    /// Parses a 32-byte compressed ristretto255 point, rejecting invalid
    /// encodings and the identity point with [`Error::BadKey`].
    pub fn from_bytes(b: &[u8]) -> Result<PublicKey, Error> {
        let bytes: [u8; PUBLIC_KEY_LEN] = b.try_into().map_err(|_| Error::BadKey)?;
        let key = PublicKey(bytes);
        key.point()?;
        Ok(key)
    }

    fn point(&self) -> Result<RistrettoPoint, Error> {
        match CompressedRistretto(self.0).decompress() {
            Some(p) if !p.is_identity() => Ok(p),
            _ => Err(Error::BadKey),
        }
    }
}

/// A linkable ring signature: the linking tag, the initial challenge and one
/// response per ring member.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Signature {
    tag: CompressedRistretto,
    c0: Scalar,
    responses: Vec<Scalar>,
}

impl Signature {
    /// The linking tag: equal for every signature one key makes in one scope.
    pub fn tag(&self) -> [u8; TAG_LEN] {
        self.tag.to_bytes()
    }

    /// Encodes as `tag || c0 || r_0 || … || r_{n-1}`, `32 · (n + 2)` bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 * (self.responses.len() + 2));
        out.extend_from_slice(self.tag.as_bytes());
        out.extend_from_slice(self.c0.as_bytes());
        for r in &self.responses {
            out.extend_from_slice(r.as_bytes());
        }
        out
    }

    /// Decodes [`Signature::to_bytes`] output. The length must be
    /// `32 · (2 + n)` with `1 ≤ n ≤ MAX_RING` ([`Error::TooLarge`] above
    /// that), every scalar canonical and the tag a valid non-identity point
    /// ([`Error::Malformed`] otherwise).
    pub fn from_bytes(b: &[u8]) -> Result<Signature, Error> {
        if b.len() > 32 * (2 + MAX_RING) {
            return Err(Error::TooLarge);
        }
        // Written without `%` / `is_multiple_of` to keep the workspace MSRV.
        if b.len() < 32 * 3 || b.len() != 32 * (b.len() / 32) {
            return Err(Error::Malformed);
        }
        let mut chunks = b
            .chunks_exact(32)
            .map(|c| <[u8; 32]>::try_from(c).map_err(|_| Error::Malformed));
        let tag = CompressedRistretto(chunks.next().ok_or(Error::Malformed)??);
        decode_tag(&tag)?;
        let c0 = decode_scalar(chunks.next().ok_or(Error::Malformed)??)?;
        let responses = chunks
            .map(|c| decode_scalar(c?))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Signature { tag, c0, responses })
    }

    /// The number of ring members this signature was made for.
    pub fn ring_len(&self) -> usize {
        self.responses.len()
    }
}

/// Signs `message` in `scope` as an anonymous member of `ring`.
///
/// `secret`'s public key must appear in `ring`; the ring must be nonempty,
/// at most [`MAX_RING`] long and free of duplicates. Randomness comes from
/// the operating system.
pub fn sign(
    secret: &SecretKey,
    ring: &[PublicKey],
    scope: &[u8],
    message: &[u8],
) -> Result<Signature, Error> {
    let points = decode_ring(ring)?;
    let me = secret.public();
    let pi = ring
        .iter()
        .position(|pk| *pk == me)
        .ok_or(Error::NotInRing)?;
    Ok(sign_at(&secret.scalar, pi, ring, &points, scope, message))
}

/// The signing loop, with the signer's index given. Does not check that
/// `x·G == ring[pi]` (the caller does); a mismatch gives a signature that
/// does not verify.
fn sign_at(
    x: &Scalar,
    pi: usize,
    ring: &[PublicKey],
    points: &[RistrettoPoint],
    scope: &[u8],
    message: &[u8],
) -> Signature {
    let n = ring.len();
    let h = tag_base(scope);
    let image = x * h;
    let tag = image.compress();
    let transcript = Transcript::new(ring, scope, message, &tag);
    let mut rng = OsRng;

    let mut c = vec![Scalar::ZERO; n];
    let mut r = vec![Scalar::ZERO; n];

    let mut alpha = Scalar::random(&mut rng);
    let mut i = (pi + 1) % n;
    c[i] = transcript.challenge(&(&alpha * RISTRETTO_BASEPOINT_TABLE), &(alpha * h));
    while i != pi {
        r[i] = Scalar::random(&mut rng);
        let l = &r[i] * RISTRETTO_BASEPOINT_TABLE + c[i] * points[i];
        let rr = r[i] * h + c[i] * image;
        let next = (i + 1) % n;
        c[next] = transcript.challenge(&l, &rr);
        i = next;
    }
    let mut cx = c[pi] * x;
    r[pi] = alpha - cx;
    alpha.zeroize();
    cx.zeroize();

    Signature {
        tag,
        c0: c[0],
        responses: r,
    }
}

/// Checks that `sig` is a signature on `message` in `scope` by some member of
/// `ring` (same keys, same order as when signing).
///
/// Returns [`Error::EmptyRing`], [`Error::TooLarge`], [`Error::DuplicateKey`]
/// or [`Error::BadKey`] for an unusable ring, [`Error::Malformed`] if the
/// signature was made for a ring of a different size, and [`Error::Invalid`]
/// if it does not verify.
pub fn verify(
    ring: &[PublicKey],
    scope: &[u8],
    message: &[u8],
    sig: &Signature,
) -> Result<(), Error> {
    let points = decode_ring(ring)?;
    if sig.responses.len() != ring.len() {
        return Err(Error::Malformed);
    }
    let image = decode_tag(&sig.tag)?;
    let h = tag_base(scope);
    let transcript = Transcript::new(ring, scope, message, &sig.tag);

    let mut c = sig.c0;
    for (p, r) in points.iter().zip(&sig.responses) {
        // All inputs here are public, so variable-time arithmetic is fine.
        let l = RistrettoPoint::vartime_double_scalar_mul_basepoint(&c, p, r);
        let rr = RistrettoPoint::vartime_multiscalar_mul([r, &c], [&h, &image]);
        c = transcript.challenge(&l, &rr);
    }
    // `Scalar`'s equality is constant-time.
    if c == sig.c0 {
        Ok(())
    } else {
        Err(Error::Invalid)
    }
}

/// Validates a ring and decompresses its keys.
fn decode_ring(ring: &[PublicKey]) -> Result<Vec<RistrettoPoint>, Error> {
    if ring.is_empty() {
        return Err(Error::EmptyRing);
    }
    if ring.len() > MAX_RING {
        return Err(Error::TooLarge);
    }
    // Ristretto encodings are canonical, so equal points have equal bytes.
    let mut sorted = ring.to_vec();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::DuplicateKey);
    }
    ring.iter().map(PublicKey::point).collect()
}

fn decode_tag(tag: &CompressedRistretto) -> Result<RistrettoPoint, Error> {
    match tag.decompress() {
        Some(p) if !p.is_identity() => Ok(p),
        _ => Err(Error::Malformed),
    }
}

fn decode_scalar(bytes: [u8; 32]) -> Result<Scalar, Error> {
    Option::from(Scalar::from_canonical_bytes(bytes)).ok_or(Error::Malformed)
}

/// A SHA-512 state that starts with a length-prefixed domain string.
fn hasher(domain: &[u8]) -> Sha512 {
    let mut h = Sha512::new();
    put_var(&mut h, domain);
    h
}

/// Absorbs a variable-length field, prefixed with its length as a `u64`.
fn put_var(h: &mut Sha512, data: &[u8]) {
    h.update((data.len() as u64).to_le_bytes());
    h.update(data);
}

/// The tag base `H` for a scope; nobody knows its discrete log to `G`.
fn tag_base(scope: &[u8]) -> RistrettoPoint {
    let mut h = hasher(DOMAIN_TAG_BASE);
    put_var(&mut h, scope);
    let point = RistrettoPoint::from_uniform_bytes(&h.finalize().into());
    debug_assert!(point != RISTRETTO_BASEPOINT_POINT);
    point
}

/// The Fiat–Shamir transcript shared by every challenge of one signature:
/// domain, scope, message, tag and a digest of the whole ring in order.
struct Transcript {
    base: Sha512,
}

impl Transcript {
    fn new(ring: &[PublicKey], scope: &[u8], message: &[u8], tag: &CompressedRistretto) -> Self {
        let mut rh = hasher(DOMAIN_RING);
        rh.update((ring.len() as u64).to_le_bytes());
        for pk in ring {
            rh.update(pk.0);
        }
        let ring_digest = rh.finalize();

        let mut base = hasher(DOMAIN_CHALLENGE);
        put_var(&mut base, scope);
        put_var(&mut base, message);
        base.update(tag.as_bytes());
        base.update(ring_digest);
        Transcript { base }
    }

    fn challenge(&self, l: &RistrettoPoint, r: &RistrettoPoint) -> Scalar {
        let mut h = self.base.clone();
        h.update(l.compress().as_bytes());
        h.update(r.compress().as_bytes());
        Scalar::from_hash(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::traits::Identity;

    fn key(i: u32) -> SecretKey {
        SecretKey::derive(&[7u8; 32], format!("unit {i}").as_bytes())
    }

    fn ring_of(keys: &[SecretKey]) -> Vec<PublicKey> {
        keys.iter().map(SecretKey::public).collect()
    }

    #[test]
    fn debug_does_not_print_scalar() {
        let k = key(1);
        assert_eq!(format!("{k:?}"), "SecretKey { .. }");
    }

    #[test]
    fn identity_tag_is_rejected_by_verify() {
        let keys: Vec<_> = (0..3).map(key).collect();
        let ring = ring_of(&keys);
        let mut sig = sign(&keys[1], &ring, b"s", b"m").expect("sign");
        assert_eq!(verify(&ring, b"s", b"m", &sig), Ok(()));
        sig.tag = RistrettoPoint::identity().compress();
        assert_eq!(verify(&ring, b"s", b"m", &sig), Err(Error::Malformed));
    }

    /// An outsider runs the signing equations at a position whose public key
    /// is not theirs, pretending to be that member. The ring must not close.
    #[test]
    fn outsider_running_the_signing_loop_does_not_verify() {
        let keys: Vec<_> = (0..4).map(key).collect();
        let ring = ring_of(&keys);
        let points = decode_ring(&ring).expect("ring");
        let outsider = key(99);
        for pi in 0..ring.len() {
            let sig = sign_at(&outsider.scalar, pi, &ring, &points, b"s", b"m");
            assert_eq!(sig.tag(), outsider.tag(b"s"));
            assert_eq!(verify(&ring, b"s", b"m", &sig), Err(Error::Invalid));
        }
        // Sanity check of the helper: the real member at pi does verify.
        let sig = sign_at(&keys[2].scalar, 2, &ring, &points, b"s", b"m");
        assert_eq!(verify(&ring, b"s", b"m", &sig), Ok(()));
    }

    /// A member tries to claim another member's position (to get a tag
    /// computed with their own key but "proved" against someone else's key).
    #[test]
    fn member_signing_at_wrong_position_does_not_verify() {
        let keys: Vec<_> = (0..3).map(key).collect();
        let ring = ring_of(&keys);
        let points = decode_ring(&ring).expect("ring");
        let sig = sign_at(&keys[0].scalar, 1, &ring, &points, b"s", b"m");
        assert_eq!(verify(&ring, b"s", b"m", &sig), Err(Error::Invalid));
    }

    /// Every input to the Fiat–Shamir hash changes the challenge.
    #[test]
    fn transcript_binds_every_input() {
        let keys: Vec<_> = (0..3).map(key).collect();
        let ring = ring_of(&keys);
        let tag = keys[0].tag(b"s");
        let other_tag = keys[1].tag(b"s");
        let l = &Scalar::from(3u8) * RISTRETTO_BASEPOINT_TABLE;
        let r = &Scalar::from(5u8) * RISTRETTO_BASEPOINT_TABLE;
        let ch = |ring: &[PublicKey], scope: &[u8], msg: &[u8], tag: [u8; 32]| {
            Transcript::new(ring, scope, msg, &CompressedRistretto(tag)).challenge(&l, &r)
        };
        let base = ch(&ring, b"s", b"m", tag);
        assert_eq!(base, ch(&ring, b"s", b"m", tag));
        let mut swapped = ring.clone();
        swapped.swap(1, 2);
        let variants = [
            ch(&ring, b"s2", b"m", tag),
            ch(&ring, b"s", b"m2", tag),
            // Moving a byte between scope and message must matter.
            ch(&ring, b"sm", b"", tag),
            ch(&ring, b"s", b"m", other_tag),
            ch(&swapped, b"s", b"m", tag),
            ch(&ring[..2], b"s", b"m", tag),
        ];
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(*v, base, "variant {i}");
        }
        let t = Transcript::new(&ring, b"s", b"m", &CompressedRistretto(tag));
        assert_ne!(t.challenge(&l, &r), t.challenge(&r, &l));
    }

    /// bLSAG without ring binding lets anyone rotate the ring and the
    /// signature together (start at c_1 instead of c_0). The ring digest in
    /// the transcript must prevent that.
    #[test]
    fn rotating_ring_and_signature_together_fails() {
        let keys: Vec<_> = (0..4).map(key).collect();
        let ring = ring_of(&keys);
        let sig = sign(&keys[1], &ring, b"s", b"m").expect("sign");
        assert_eq!(verify(&ring, b"s", b"m", &sig), Ok(()));

        // Recompute c_1 from public data, as any attacker could.
        let points = decode_ring(&ring).expect("ring");
        let h = tag_base(b"s");
        let image = decode_tag(&sig.tag).expect("tag");
        let t = Transcript::new(&ring, b"s", b"m", &sig.tag);
        let r0 = sig.responses[0];
        let c1 = t.challenge(
            &(&r0 * RISTRETTO_BASEPOINT_TABLE + sig.c0 * points[0]),
            &(r0 * h + sig.c0 * image),
        );
        let mut rotated_ring = ring.clone();
        rotated_ring.rotate_left(1);
        let mut responses = sig.responses.clone();
        responses.rotate_left(1);
        let rotated = Signature {
            tag: sig.tag,
            c0: c1,
            responses,
        };
        assert_eq!(
            verify(&rotated_ring, b"s", b"m", &rotated),
            Err(Error::Invalid)
        );
    }

    #[test]
    fn tag_base_depends_on_scope_and_is_length_prefixed() {
        assert_ne!(tag_base(b"a"), tag_base(b"b"));
        assert_ne!(tag_base(b""), tag_base(b"\0"));
    }
}
