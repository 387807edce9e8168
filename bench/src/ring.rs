//! The cost of anonymity: signing and checking a corroboration's ring
//! signature over a group's members, against the identity-key signature a
//! named change carries (libsignal's XEdDSA), run alongside as the ceiling.
//!
//! Each run times [`ROUNDS`] signatures and verifications and reports the
//! mean per operation; the table shows the median over runs. Sizes cover a
//! small branch (10), a typical staff network (100) and the largest groups
//! the design expects (300).

use std::time::Instant;

use libsignal_protocol::IdentityKeyPair;
use sotto_lsag as lsag;

use crate::common::{Figure, ms};

/// Operations timed per run and size.
const ROUNDS: usize = 20;
/// Ring sizes: members of the group.
const SIZES: [usize; 3] = [10, 100, 300];

pub(crate) async fn run(runs: usize) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let identity = IdentityKeyPair::generate(&mut rand::rng());
    for size in SIZES {
        let secrets: Vec<lsag::SecretKey> = (0..size)
            .map(|i| {
                let mut seed = [0u8; 32];
                seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
                lsag::SecretKey::derive(&seed, b"bench group")
            })
            .collect();
        let ring: Vec<lsag::PublicKey> = secrets.iter().map(|s| s.public()).collect();
        let signer = &secrets[size / 2];
        let (mut sign, mut verify, mut xeddsa) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..runs {
            let started = Instant::now();
            let mut sigs = Vec::with_capacity(ROUNDS);
            for i in 0..ROUNDS {
                let scope = (i as u64).to_le_bytes();
                sigs.push(lsag::sign(signer, &ring, &scope, b"me too")?);
            }
            let sign_ms = ms(started.elapsed()) / ROUNDS as f64;
            let started = Instant::now();
            for (i, sig) in sigs.iter().enumerate() {
                let scope = (i as u64).to_le_bytes();
                lsag::verify(&ring, &scope, b"me too", sig)?;
            }
            let verify_ms = ms(started.elapsed()) / ROUNDS as f64;
            // Ceiling: what a named change costs, sign plus verify once.
            let started = Instant::now();
            for _ in 0..ROUNDS {
                let sig = identity
                    .private_key()
                    .calculate_signature(b"me too", &mut rand::rng())?;
                anyhow::ensure!(
                    identity.public_key().verify_signature(b"me too", &sig),
                    "XEdDSA verifies"
                );
            }
            let xeddsa_ms = ms(started.elapsed()) / ROUNDS as f64;
            eprintln!(
                "  run {} ({size} members): sign {sign_ms:.2} ms, verify {verify_ms:.2} ms, \
                 XEdDSA sign+verify {xeddsa_ms:.3} ms",
                run + 1
            );
            sign.push(sign_ms);
            verify.push(verify_ms);
            xeddsa.push(xeddsa_ms);
        }
        let bytes =
            lsag::Signature::from_bytes(&lsag::sign(signer, &ring, b"s", b"m")?.to_bytes())?
                .to_bytes()
                .len()
                + 32 * size;
        figures.push(Figure::new(
            "ring",
            &format!("ring signature, {size} members: sign (ms)"),
            "ms",
            sign,
            &format!("a corroboration or anonymous post; {bytes} bytes with its ring"),
        ));
        figures.push(
            Figure::new(
                "ring",
                &format!("ring signature, {size} members: verify (ms)"),
                "ms",
                verify,
                "every member's app, once per corroboration or post",
            )
            .with_ceiling("XEdDSA sign and verify (a named change)", xeddsa),
        );
    }
    Ok(figures)
}
