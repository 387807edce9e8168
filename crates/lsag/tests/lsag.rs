//! Behavioural tests of the public API of `sotto-lsag`.

use proptest::prelude::*;
use sotto_lsag::{Error, MAX_RING, PublicKey, SecretKey, Signature, TAG_LEN, sign, verify};

const SEED: [u8; 32] = [42u8; 32];

fn key(i: usize) -> SecretKey {
    SecretKey::derive(&SEED, format!("test key {i}").as_bytes())
}

fn keys(n: usize) -> Vec<SecretKey> {
    (0..n).map(key).collect()
}

fn ring_of(keys: &[SecretKey]) -> Vec<PublicKey> {
    keys.iter().map(SecretKey::public).collect()
}

/// Decodes and verifies raw signature bytes; any error counts as rejection.
fn verify_bytes(ring: &[PublicKey], scope: &[u8], msg: &[u8], bytes: &[u8]) -> Result<(), Error> {
    let sig = Signature::from_bytes(bytes)?;
    verify(ring, scope, msg, &sig)
}

fn contains_window(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A fixed "me too" fixture: ring of 5, signer at index 2.
struct Fixture {
    keys: Vec<SecretKey>,
    ring: Vec<PublicKey>,
    sig: Signature,
}

const SCOPE: &[u8] = b"warning:1234";
const MSG: &[u8] = b"me too";

fn fixture() -> Fixture {
    let keys = keys(5);
    let ring = ring_of(&keys);
    let sig = sign(&keys[2], &ring, SCOPE, MSG).expect("sign");
    assert_eq!(verify(&ring, SCOPE, MSG, &sig), Ok(()));
    Fixture { keys, ring, sig }
}

// ---------------------------------------------------------------- round trips

#[test]
fn round_trip_all_sizes_and_positions() {
    for n in [1usize, 2, 5, 50] {
        let keys = keys(n);
        let ring = ring_of(&keys);
        let mut positions = vec![0, n / 2, n - 1];
        positions.dedup();
        for pi in positions {
            let msg = format!("message from {pi} of {n}");
            let sig = sign(&keys[pi], &ring, b"scope", msg.as_bytes()).expect("sign");
            assert_eq!(sig.ring_len(), n);
            assert_eq!(
                verify(&ring, b"scope", msg.as_bytes(), &sig),
                Ok(()),
                "n={n} pi={pi}"
            );
            let bytes = sig.to_bytes();
            assert_eq!(bytes.len(), 32 * (n + 2));
            let back = Signature::from_bytes(&bytes).expect("decode");
            assert_eq!(back, sig);
            assert_eq!(verify(&ring, b"scope", msg.as_bytes(), &back), Ok(()));
        }
    }
}

#[test]
fn signatures_are_randomised() {
    let f = fixture();
    let again = sign(&f.keys[2], &f.ring, SCOPE, MSG).expect("sign");
    assert_ne!(again.to_bytes(), f.sig.to_bytes());
    assert_eq!(again.tag(), f.sig.tag());
    assert_eq!(verify(&f.ring, SCOPE, MSG, &again), Ok(()));
}

#[test]
fn empty_scope_and_message_work() {
    let keys = keys(3);
    let ring = ring_of(&keys);
    let sig = sign(&keys[0], &ring, b"", b"").expect("sign");
    assert_eq!(verify(&ring, b"", b"", &sig), Ok(()));
    assert_eq!(verify(&ring, b"", b"\0", &sig), Err(Error::Invalid));
    assert_eq!(verify(&ring, b"\0", b"", &sig), Err(Error::Invalid));
}

#[test]
fn max_ring_is_accepted() {
    let keys = keys(MAX_RING);
    let ring = ring_of(&keys);
    let sig = sign(&keys[MAX_RING - 1], &ring, b"big", b"m").expect("sign");
    let bytes = sig.to_bytes();
    assert_eq!(bytes.len(), 32 * (MAX_RING + 2));
    assert_eq!(verify_bytes(&ring, b"big", b"m", &bytes), Ok(()));
}

// ---------------------------------------------------------------- keys

#[test]
fn derive_is_deterministic_and_context_separated() {
    assert_eq!(key(1).public(), key(1).public());
    assert_ne!(key(1).public(), key(2).public());
    let a = SecretKey::derive(&[1u8; 32], b"group");
    let b = SecretKey::derive(&[2u8; 32], b"group");
    assert_ne!(a.public(), b.public());
    // Context is length-prefixed, not just concatenated with the seed.
    let c = SecretKey::derive(&[1u8; 32], b"");
    let d = SecretKey::derive(&[1u8; 32], b"\0");
    assert_ne!(c.public(), d.public());
}

#[test]
fn public_key_bytes_round_trip_and_validation() {
    let pk = key(3).public();
    assert_eq!(PublicKey::from_bytes(&pk.to_bytes()), Ok(pk));
    assert_eq!(
        PublicKey::from_bytes(&pk.to_bytes()[..31]),
        Err(Error::BadKey)
    );
    let mut long = pk.to_bytes().to_vec();
    long.push(0);
    assert_eq!(PublicKey::from_bytes(&long), Err(Error::BadKey));
    // The identity point encodes as all zeros.
    assert_eq!(PublicKey::from_bytes(&[0u8; 32]), Err(Error::BadKey));
    // Not a canonical field element.
    assert_eq!(PublicKey::from_bytes(&[0xffu8; 32]), Err(Error::BadKey));
}

// ---------------------------------------------------------------- linking

#[test]
fn same_key_same_scope_same_tag_across_messages_and_rings() {
    let keys = keys(6);
    let ring_a = ring_of(&keys[0..4]);
    let ring_b = ring_of(&keys[2..6]);
    let s1 = sign(&keys[2], &ring_a, SCOPE, b"first").expect("sign");
    let s2 = sign(&keys[2], &ring_b, SCOPE, b"second").expect("sign");
    assert_eq!(verify(&ring_a, SCOPE, b"first", &s1), Ok(()));
    assert_eq!(verify(&ring_b, SCOPE, b"second", &s2), Ok(()));
    assert_eq!(s1.tag(), s2.tag());
    assert_eq!(s1.tag(), keys[2].tag(SCOPE));
}

#[test]
fn same_key_different_scopes_different_tags() {
    let f = fixture();
    let other = sign(&f.keys[2], &f.ring, b"warning:5678", MSG).expect("sign");
    assert_ne!(other.tag(), f.sig.tag());
    assert_ne!(f.keys[2].tag(b"a"), f.keys[2].tag(b"b"));
}

#[test]
fn different_keys_same_scope_different_tags() {
    let f = fixture();
    let tags: Vec<[u8; TAG_LEN]> = f.keys.iter().map(|k| k.tag(SCOPE)).collect();
    for i in 0..tags.len() {
        for j in i + 1..tags.len() {
            assert_ne!(tags[i], tags[j]);
        }
    }
    let other = sign(&f.keys[0], &f.ring, SCOPE, MSG).expect("sign");
    assert_ne!(other.tag(), f.sig.tag());
}

#[test]
fn secret_key_tag_equals_signature_tag() {
    let f = fixture();
    assert_eq!(f.keys[2].tag(SCOPE), f.sig.tag());
    assert_eq!(f.sig.to_bytes()[..TAG_LEN], f.sig.tag());
}

// ---------------------------------------------------------------- rejection

#[test]
fn changed_message_fails() {
    let f = fixture();
    assert_eq!(
        verify(&f.ring, SCOPE, b"me too!", &f.sig),
        Err(Error::Invalid)
    );
}

#[test]
fn changed_scope_fails() {
    let f = fixture();
    assert_eq!(
        verify(&f.ring, b"warning:1235", MSG, &f.sig),
        Err(Error::Invalid)
    );
}

#[test]
fn ring_with_one_key_replaced_fails() {
    let f = fixture();
    let outsider = key(100).public();
    for i in 0..f.ring.len() {
        let mut ring = f.ring.clone();
        ring[i] = outsider;
        assert_eq!(
            verify(&ring, SCOPE, MSG, &f.sig),
            Err(Error::Invalid),
            "replaced {i}"
        );
    }
}

#[test]
fn reordered_ring_fails() {
    let f = fixture();
    let mut swapped = f.ring.clone();
    swapped.swap(0, 4);
    assert_eq!(verify(&swapped, SCOPE, MSG, &f.sig), Err(Error::Invalid));
    let mut rotated = f.ring.clone();
    rotated.rotate_left(1);
    assert_eq!(verify(&rotated, SCOPE, MSG, &f.sig), Err(Error::Invalid));
    let mut reversed = f.ring.clone();
    reversed.reverse();
    assert_eq!(verify(&reversed, SCOPE, MSG, &f.sig), Err(Error::Invalid));
}

#[test]
fn ring_without_signer_fails() {
    let f = fixture();
    let mut ring = f.ring.clone();
    ring.remove(2);
    assert_eq!(verify(&ring, SCOPE, MSG, &f.sig), Err(Error::Malformed));
    // Also drop the signer's response so the sizes match.
    let bytes = f.sig.to_bytes();
    let mut trimmed = bytes[..32 * (2 + 2)].to_vec();
    trimmed.extend_from_slice(&bytes[32 * (2 + 3)..]);
    assert_eq!(
        verify_bytes(&ring, SCOPE, MSG, &trimmed),
        Err(Error::Invalid)
    );
}

#[test]
fn ring_with_key_appended_fails() {
    let f = fixture();
    let mut ring = f.ring.clone();
    ring.push(key(100).public());
    assert_eq!(verify(&ring, SCOPE, MSG, &f.sig), Err(Error::Malformed));
    // Pad the signature with a response so the sizes match.
    let mut padded = f.sig.to_bytes();
    padded.extend_from_slice(&[1u8; 32]);
    assert_eq!(
        verify_bytes(&ring, SCOPE, MSG, &padded),
        Err(Error::Invalid)
    );
}

#[test]
fn every_flipped_bit_fails() {
    let keys = keys(3);
    let ring = ring_of(&keys);
    let sig = sign(&keys[1], &ring, SCOPE, MSG).expect("sign");
    let bytes = sig.to_bytes();
    assert_eq!(verify_bytes(&ring, SCOPE, MSG, &bytes), Ok(()));
    for byte in 0..bytes.len() {
        for bit in 0..8 {
            let mut bad = bytes.clone();
            bad[byte] ^= 1 << bit;
            assert!(
                verify_bytes(&ring, SCOPE, MSG, &bad).is_err(),
                "flipped bit {bit} of byte {byte} (part {}) still verifies",
                byte / 32
            );
        }
    }
}

#[test]
fn key_not_in_ring_cannot_sign() {
    let f = fixture();
    let outsider = key(100);
    assert_eq!(sign(&outsider, &f.ring, SCOPE, MSG), Err(Error::NotInRing));
}

#[test]
fn outsider_signature_moved_onto_a_ring_without_them_fails() {
    let f = fixture();
    let outsider = key(100);
    // The outsider signs with themselves in place of member 0 ...
    let mut own_ring = f.ring.clone();
    own_ring[0] = outsider.public();
    let sig = sign(&outsider, &own_ring, SCOPE, MSG).expect("sign");
    assert_eq!(verify(&own_ring, SCOPE, MSG, &sig), Ok(()));
    // ... then presents it as a signature by the real ring.
    assert_eq!(verify(&f.ring, SCOPE, MSG, &sig), Err(Error::Invalid));
    // Swapping in a member's tag does not help either.
    let mut bytes = sig.to_bytes();
    bytes[..TAG_LEN].copy_from_slice(&f.keys[1].tag(SCOPE));
    assert_eq!(
        verify_bytes(&f.ring, SCOPE, MSG, &bytes),
        Err(Error::Invalid)
    );
}

#[test]
fn splicing_two_signatures_fails() {
    // An outsider signs over ring {O, B}; a member signs over {A, B}. Taking
    // the outsider's tag, c0 and responses and grafting in the member's
    // response for position 0 must not produce a valid signature on {A, B}.
    let a = key(0);
    let b = key(1);
    let o = key(100);
    let real_ring = vec![a.public(), b.public()];
    let fake_ring = vec![o.public(), b.public()];
    let real = sign(&a, &real_ring, SCOPE, MSG).expect("sign").to_bytes();
    let fake = sign(&o, &fake_ring, SCOPE, MSG).expect("sign").to_bytes();
    for mask in 0u8..16 {
        // Each of the 4 parts (tag, c0, r0, r1) taken from one or the other.
        let mut mixed = Vec::new();
        for part in 0..4 {
            let src = if mask & (1 << part) != 0 {
                &real
            } else {
                &fake
            };
            mixed.extend_from_slice(&src[32 * part..32 * (part + 1)]);
        }
        let result = verify_bytes(&real_ring, SCOPE, MSG, &mixed);
        if mixed == real {
            assert_eq!(result, Ok(()));
        } else {
            assert!(result.is_err(), "mask {mask:04b} verified");
        }
    }
}

#[test]
fn swapped_in_tag_fails() {
    let f = fixture();
    let bytes = f.sig.to_bytes();
    // Tag of another member in the same scope (counting someone else's vote).
    let other = sign(&f.keys[0], &f.ring, SCOPE, MSG).expect("sign");
    // Own tag from a different scope (a fresh tag to count twice).
    let fresh = f.keys[2].tag(b"some other scope");
    // Tag of a key outside the ring.
    let outsider = key(100).tag(SCOPE);
    for tag in [other.tag(), fresh, outsider] {
        let mut bad = bytes.clone();
        bad[..TAG_LEN].copy_from_slice(&tag);
        assert_eq!(verify_bytes(&f.ring, SCOPE, MSG, &bad), Err(Error::Invalid));
    }
}

#[test]
fn identity_tag_is_rejected() {
    let f = fixture();
    let mut bad = f.sig.to_bytes();
    bad[..TAG_LEN].fill(0);
    assert_eq!(Signature::from_bytes(&bad), Err(Error::Malformed));
}

#[test]
fn non_canonical_scalars_are_rejected() {
    let f = fixture();
    let bytes = f.sig.to_bytes();
    // c0 + l (the group order) would be the same scalar mod l if accepted.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    for part in 1..bytes.len() / 32 {
        let mut bad = bytes.clone();
        let mut carry = 0u16;
        for k in 0..32 {
            let s = u16::from(bad[32 * part + k]) + u16::from(L[k]) + carry;
            bad[32 * part + k] = s as u8;
            carry = s >> 8;
        }
        if carry == 0 {
            assert_eq!(
                Signature::from_bytes(&bad),
                Err(Error::Malformed),
                "part {part}"
            );
        }
        let mut ff = bytes.clone();
        ff[32 * part..32 * (part + 1)].fill(0xff);
        assert_eq!(
            Signature::from_bytes(&ff),
            Err(Error::Malformed),
            "part {part}"
        );
    }
}

#[test]
fn duplicate_ring_keys_are_rejected() {
    let f = fixture();
    let mut ring = f.ring.clone();
    ring.push(f.ring[2]);
    assert_eq!(
        sign(&f.keys[2], &ring, SCOPE, MSG),
        Err(Error::DuplicateKey)
    );
    let mut ring = f.ring.clone();
    ring[4] = ring[0];
    assert_eq!(verify(&ring, SCOPE, MSG, &f.sig), Err(Error::DuplicateKey));
    assert_eq!(
        sign(&f.keys[2], &ring, SCOPE, MSG),
        Err(Error::DuplicateKey)
    );
}

#[test]
fn empty_ring_is_rejected() {
    let f = fixture();
    assert_eq!(sign(&f.keys[0], &[], SCOPE, MSG), Err(Error::EmptyRing));
    assert_eq!(verify(&[], SCOPE, MSG, &f.sig), Err(Error::EmptyRing));
}

#[test]
fn wrong_lengths_are_rejected() {
    let f = fixture();
    let bytes = f.sig.to_bytes();
    for len in [
        0,
        1,
        31,
        32,
        64,
        95,
        97,
        127,
        bytes.len() - 1,
        bytes.len() + 1,
    ] {
        let mut b = bytes.clone();
        b.resize(len, 0);
        assert_eq!(
            Signature::from_bytes(&b),
            Err(Error::Malformed),
            "len {len}"
        );
    }
    // The shortest valid encoding is a ring of one.
    let one = keys(1);
    let sig = sign(&one[0], &ring_of(&one), SCOPE, MSG).expect("sign");
    assert_eq!(sig.to_bytes().len(), 96);
    assert_eq!(Signature::from_bytes(&sig.to_bytes()), Ok(sig));
}

#[test]
fn rings_longer_than_max_are_rejected() {
    let keys = keys(MAX_RING + 1);
    let ring = ring_of(&keys);
    assert_eq!(sign(&keys[0], &ring, SCOPE, MSG), Err(Error::TooLarge));

    let small = ring_of(&keys[..1]);
    let sig = sign(&keys[0], &small, SCOPE, MSG).expect("sign");
    assert_eq!(verify(&ring, SCOPE, MSG, &sig), Err(Error::TooLarge));

    let mut bytes = sig.to_bytes();
    bytes.resize(32 * (2 + MAX_RING + 1), 0);
    assert_eq!(Signature::from_bytes(&bytes), Err(Error::TooLarge));
    bytes.resize(32 * (2 + MAX_RING), 0);
    assert_eq!(
        Signature::from_bytes(&bytes).map(|s| s.ring_len()),
        Ok(MAX_RING)
    );
}

// ---------------------------------------------------------------- anonymity

#[test]
fn signature_does_not_contain_ring_keys() {
    for n in [1usize, 2, 5] {
        let keys = keys(n);
        let ring = ring_of(&keys);
        for (pi, k) in keys.iter().enumerate() {
            let bytes = sign(k, &ring, SCOPE, MSG).expect("sign").to_bytes();
            for pk in &ring {
                assert!(
                    !contains_window(&bytes, &pk.to_bytes()),
                    "signature by {pi} of {n} contains a ring key"
                );
            }
        }
    }
}

#[test]
fn errors_display() {
    assert_eq!(
        Error::NotInRing.to_string(),
        "signing key is not a member of the ring"
    );
    assert!(Error::TooLarge.to_string().contains("1024"));
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn prop_round_trip(
        scope in proptest::collection::vec(any::<u8>(), 0..64),
        msg in proptest::collection::vec(any::<u8>(), 0..256),
        n in 1usize..5,
        pi_seed in any::<usize>(),
        seed in any::<[u8; 32]>(),
    ) {
        let keys: Vec<SecretKey> =
            (0..n).map(|i| SecretKey::derive(&seed, &i.to_le_bytes())).collect();
        let ring = ring_of(&keys);
        let pi = pi_seed % n;
        let sig = sign(&keys[pi], &ring, &scope, &msg).expect("sign");
        prop_assert_eq!(sig.tag(), keys[pi].tag(&scope));
        prop_assert_eq!(verify_bytes(&ring, &scope, &msg, &sig.to_bytes()), Ok(()));
        let mut other_msg = msg.clone();
        other_msg.push(0);
        prop_assert_eq!(verify(&ring, &scope, &other_msg, &sig), Err(Error::Invalid));
    }

    #[test]
    fn prop_from_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(sig) = Signature::from_bytes(&bytes) {
            prop_assert_eq!(sig.to_bytes(), bytes);
        }
    }
}
