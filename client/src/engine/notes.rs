//! The evidence locker: private notes and files, kept only in my encrypted
//! store, each countersigned by the relay so I can later show it existed at
//! a given time.
//!
//! The relay sees a SHA-256 over the note, a random nonce, its time and any
//! attached file ([`note_hash`]); the nonce stops it confirming a guess of a
//! short note. It signs the hash with its time using its sealed-sender server
//! key; the exported proof carries that key's certificate, which the trust
//! root in every invite link signs. Anyone with the file can check it
//! ([`verify_proof`]) without Sotto's relay or my profile; it is as strong as
//! the verifier's trust in that relay's trust root (shown as a fingerprint).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use libsignal_protocol::{PublicKey, ServerCertificate};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Engine, EngineError, Req, Resp, Result, hex, now_ms, relay};
use crate::store::{NoteProof, NoteRecord};
use crate::transport::TransportError;

/// Largest attached file.
pub const MAX_NOTE_FILE_BYTES: usize = 16 * 1024 * 1024;
/// The exported proof's format name.
const PROOF_FORMAT: &str = "sotto-note-proof-v1";

/// A note as listed.
#[derive(Debug, Clone, Serialize)]
pub struct NoteView {
    /// Id, hex.
    pub id: String,
    /// The text.
    pub text: String,
    /// Attached file's name.
    pub file_name: Option<String>,
    /// Attached file's size in bytes.
    pub file_bytes: usize,
    /// When it was written (ms since the epoch).
    pub created_at_ms: u64,
    /// The relay's time on it, once countersigned.
    pub countersigned_at_ms: Option<u64>,
    /// From `note_add`: why the relay has not countersigned it yet (the
    /// note is kept all the same).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub countersign_error: Option<String>,
}

/// The exported file: the note, its proof, and the trust root to check it by.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProofFile {
    /// Always [`PROOF_FORMAT`].
    pub format: String,
    /// The note.
    pub text: String,
    /// Attached file's name.
    pub file_name: Option<String>,
    /// Attached file, base64.
    pub file_b64: String,
    /// When it was written, by the author's clock (not proven).
    pub created_at_ms: u64,
    /// The nonce, base64.
    pub nonce_b64: String,
    /// SHA-256 of all of the above, base64: what the relay signed.
    pub hash_b64: String,
    /// The relay's time (proven).
    pub countersigned_at_ms: u64,
    /// The relay's signature, base64.
    pub signature_b64: String,
    /// The relay's server certificate, base64.
    pub server_certificate_b64: String,
    /// The relay's trust root public key, base64 (compare its fingerprint).
    pub trust_root_b64: String,
}

/// What a valid proof shows.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    /// The note existed by this time (the relay's clock).
    pub existed_by_ms: u64,
    /// The fingerprint of the relay's trust root the proof depends on, as
    /// `sotto_wire::invite::trust_root_fingerprint` writes it (SHA-256 of
    /// the key, hex in groups of four).
    pub trust_root_fingerprint: String,
    /// The note.
    pub text: String,
    /// Attached file's name.
    pub file_name: Option<String>,
}

/// The hash the relay countersigns.
pub fn note_hash(
    nonce: &[u8],
    created_at_ms: u64,
    text: &str,
    name: &str,
    file: &[u8],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"sotto-note-v1\0");
    h.update(nonce);
    h.update(created_at_ms.to_be_bytes());
    h.update((text.len() as u64).to_be_bytes());
    h.update(text.as_bytes());
    h.update((name.len() as u64).to_be_bytes());
    h.update(name.as_bytes());
    h.update((file.len() as u64).to_be_bytes());
    h.update(file);
    h.finalize().into()
}

fn record_hash(n: &NoteRecord) -> [u8; 32] {
    note_hash(
        &n.nonce,
        n.created_at_ms,
        &n.text,
        n.file_name.as_deref().unwrap_or(""),
        &n.file,
    )
}

/// Checks an exported proof: the hash matches the note, the relay's
/// certificate is signed by the trust root, and its signature covers the
/// hash and time. Any change to the note, the time or the signature fails.
pub fn verify_proof(bytes: &[u8]) -> std::result::Result<Verified, String> {
    let p: ProofFile =
        serde_json::from_slice(bytes).map_err(|e| format!("not a Sotto note proof: {e}"))?;
    if p.format != PROOF_FORMAT {
        return Err(format!("unknown proof format {:?}", p.format));
    }
    let b64 = |what: &str, s: &str| {
        STANDARD
            .decode(s)
            .map_err(|_| format!("{what} is not valid base64"))
    };
    let file = b64("the file", &p.file_b64)?;
    let nonce = b64("the nonce", &p.nonce_b64)?;
    let hash = note_hash(
        &nonce,
        p.created_at_ms,
        &p.text,
        p.file_name.as_deref().unwrap_or(""),
        &file,
    );
    if b64("the hash", &p.hash_b64)? != hash {
        return Err(
            "the note does not match the hash that was countersigned: it was changed".into(),
        );
    }
    let trust_root = PublicKey::deserialize(&b64("the trust root", &p.trust_root_b64)?)
        .map_err(|_| "the trust root is not a public key".to_string())?;
    let cert = ServerCertificate::deserialize(&b64("the certificate", &p.server_certificate_b64)?)
        .map_err(|_| "the relay certificate does not decode".to_string())?;
    if !cert.validate(&trust_root).unwrap_or(false) {
        return Err("the relay certificate is not signed by this trust root".into());
    }
    let key = cert
        .public_key()
        .map_err(|_| "the relay certificate has no usable key".to_string())?;
    let transcript = sotto_wire::auth::timestamp_transcript(&hash, p.countersigned_at_ms);
    if !key.verify_signature(&transcript, &b64("the signature", &p.signature_b64)?) {
        return Err(
            "the relay's signature does not match the note and time: it was changed".into(),
        );
    }
    Ok(Verified {
        existed_by_ms: p.countersigned_at_ms,
        // The format people compare: `sotto-relay stats` and `sotto whoami`
        // print the same string.
        trust_root_fingerprint: sotto_wire::invite::trust_root_fingerprint(&trust_root.serialize()),
        text: p.text,
        file_name: p.file_name,
    })
}

impl Engine {
    /// Keeps a note (and file) in my store, then asks the relay to
    /// countersign its hash. Offline, the note is kept and countersigned by
    /// a later `note add`, `note list` or `note export`.
    pub async fn note_add(
        &mut self,
        text: &str,
        file: Option<(String, Vec<u8>)>,
    ) -> Result<NoteView> {
        if text.trim().is_empty() && file.is_none() {
            return Err(EngineError::Invalid(
                "the note is empty: nothing was kept. Give its text (or --file FILE)".into(),
            ));
        }
        if !text.trim().is_empty() {
            self.check_text("a note", text)?;
        }
        let (file_name, file) = match file {
            Some((name, bytes)) if bytes.len() > MAX_NOTE_FILE_BYTES => {
                return Err(EngineError::Invalid(format!(
                    "{name} is {} bytes; the limit is {MAX_NOTE_FILE_BYTES}",
                    bytes.len()
                )));
            }
            Some((name, bytes)) => (Some(name), bytes),
            None => (None, Vec::new()),
        };
        let mut id = [0u8; 16];
        let mut nonce = [0u8; 32];
        rand::rng().fill_bytes(&mut id);
        rand::rng().fill_bytes(&mut nonce);
        let note = NoteRecord {
            id,
            text: text.to_string(),
            file_name,
            file,
            created_at_ms: now_ms(),
            nonce,
            proof: None,
        };
        // Kept before anything leaves: a failure below loses no note.
        self.store.put_note(&note)?;
        self.store.flush().await?;
        // The note is kept whatever happens here; a later call countersigns it.
        let countersigned = self.countersign_pending().await;
        let note = self
            .store
            .notes()?
            .into_iter()
            .find(|n| n.id == id)
            .unwrap_or(note);
        let mut shown = view(&note);
        if let Err(e) = countersigned
            && shown.countersigned_at_ms.is_none()
        {
            shown.countersign_error = Some(e.to_string());
        }
        Ok(shown)
    }

    /// Every note, oldest first (countersigning any still waiting, if the
    /// relay can be reached).
    pub async fn notes(&mut self) -> Result<Vec<NoteView>> {
        let _ = self.countersign_pending().await;
        Ok(self.store.notes()?.iter().map(view).collect())
    }

    /// The proof file for the note whose id starts with `prefix`.
    pub async fn note_export(&mut self, prefix: &str) -> Result<ProofFile> {
        let _ = self.countersign_pending().await;
        let matches: Vec<NoteRecord> = self
            .store
            .notes()?
            .into_iter()
            .filter(|n| hex(&n.id).starts_with(&prefix.to_lowercase()))
            .collect();
        let note = match matches.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(EngineError::Invalid(format!(
                    "no note has an id starting {prefix:?}; see `sotto note list`"
                )));
            }
            _ => {
                return Err(EngineError::Invalid(format!(
                    "{prefix:?} matches several notes; give more of the id"
                )));
            }
        };
        let Some(proof) = &note.proof else {
            return Err(EngineError::Invalid(
                "the relay has not countersigned this note yet (offline?); try again when it \
                 can be reached"
                    .into(),
            ));
        };
        Ok(ProofFile {
            format: PROOF_FORMAT.into(),
            text: note.text.clone(),
            file_name: note.file_name.clone(),
            file_b64: STANDARD.encode(&note.file),
            created_at_ms: note.created_at_ms,
            nonce_b64: STANDARD.encode(note.nonce),
            hash_b64: STANDARD.encode(record_hash(&note)),
            countersigned_at_ms: proof.time_ms,
            signature_b64: STANDARD.encode(&proof.signature),
            server_certificate_b64: STANDARD.encode(&proof.server_certificate),
            trust_root_b64: STANDARD.encode(&self.account.trust_root),
        })
    }

    /// Asks the relay to countersign every note without a proof.
    async fn countersign_pending(&mut self) -> Result<()> {
        for mut note in self.store.notes()? {
            if note.proof.is_some() {
                continue;
            }
            let hash = record_hash(&note);
            let conn = self.connection().await?;
            let Resp::Timestamped(t) = conn
                .request(Req::Timestamp(relay::Timestamp {
                    hash: hash.to_vec(),
                }))
                .await?
            else {
                return Err(TransportError::Unexpected.into());
            };
            let proof = NoteProof {
                time_ms: t.time_ms,
                signature: t.signature,
                server_certificate: t.server_certificate,
            };
            // Checked before it is kept: a proof that does not verify is worthless.
            let cert = ServerCertificate::deserialize(&proof.server_certificate)
                .map_err(|_| EngineError::Invalid("the relay sent a damaged certificate".into()))?;
            let valid = cert.validate(&self.trust_root).unwrap_or(false)
                && cert.public_key().is_ok_and(|k| {
                    k.verify_signature(
                        &sotto_wire::auth::timestamp_transcript(&hash, proof.time_ms),
                        &proof.signature,
                    )
                });
            if !valid {
                return Err(EngineError::Invalid(
                    "the relay's countersignature does not verify; the note is kept without one"
                        .into(),
                ));
            }
            note.proof = Some(proof);
            self.store.put_note(&note)?;
        }
        self.store.flush().await?;
        Ok(())
    }
}

fn view(n: &NoteRecord) -> NoteView {
    NoteView {
        id: hex(&n.id),
        text: n.text.clone(),
        file_name: n.file_name.clone(),
        file_bytes: n.file.len(),
        created_at_ms: n.created_at_ms,
        countersigned_at_ms: n.proof.as_ref().map(|p| p.time_ms),
        countersign_error: None,
    }
}
