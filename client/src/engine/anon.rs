//! Anonymous corroboration and anonymous posts.
//!
//! Each member publishes, in the signed group state, a ring-signature key
//! for that group (derived from their identity key and the group id;
//! [`crate::group::Op::SetRingKey`], set once per membership). Something
//! "a member" writes is a [`content::Anonymous`]: a payload with a linkable
//! ring signature (`sotto-lsag`) over the ring of current members' keys,
//! with the linking scope "group id || id". Every member's app checks that
//! each ring key belongs to a current member and that the signature holds,
//! so the author was a current member; it cannot tell which one.
//!
//! - A **corroboration** uses the warning's id as its id, so a member has
//!   one tag per warning: a second "me too" carries the same tag and is not
//!   counted again. A named warning carries its author's proof of their tag
//!   for it (a ring of one), an anonymous warning its signature's tag, so
//!   the author cannot corroborate their own warning either. Tags for
//!   different warnings do not link (the tag base is a hash of the scope).
//! - Corroborations and posts in groups with anonymous posts `on` travel in
//!   an **anonymous envelope**: sealed with a key derived from the group key
//!   (so only members open it), padded, and sent to each member with no
//!   sender inside. Posts in groups with anonymous posts `via-moderator` go
//!   1:1 to the admins, whose app shows who sent it; the admin who approves
//!   publishes the signed post with their own sender key, and members see
//!   "a member (approved by a moderator)".

use std::collections::HashSet;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sotto_lsag as lsag;

use super::groups::{content as new_content, one_by_id_prefix};
use super::warnings::{WarningInput, count_corroborations, warning_record};
use super::*;
use crate::group::{AnonymousPosts, GroupState, Op, Role, hex_decode};
use crate::store::{CorroborationRecord, LocalGroup, SubmissionRecord, WarningRecord};

/// First byte of an anonymous envelope: the version byte sealed-sender v1
/// envelopes start with, so the relay's view of one is the usual one.
const ANON_VERSION: u8 = 0x11;
/// Bound into the envelope's encryption.
const ANON_AAD: &[u8] = b"sotto-anonymous-envelope-v1";
/// Envelope plaintexts are padded to a multiple of this.
const ANON_PAD: usize = 256;
/// What a named warning's author proof signs.
const AUTHOR_PROOF: &[u8] = b"sotto author proof";
/// How anonymous posts appear.
pub(super) const SHOWN_ANONYMOUS: &str = "a member";
/// How posts a moderator approved appear.
pub(super) const SHOWN_MODERATED: &str = "a member (approved by a moderator)";

/// The anonymous-envelope key of a group key.
fn envelope_key(group_key: &[u8; 32]) -> Key {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(group_key).expect("HMAC takes any key length");
    mac.update(b"sotto anonymous envelope key v1");
    let key: [u8; 32] = mac.finalize().into_bytes().into();
    Key::from(key)
}

/// Seals `plain` for the members of the group with `group_key`, padded.
fn seal_envelope(group_key: &[u8; 32], plain: &[u8]) -> Vec<u8> {
    let mut padded = (plain.len() as u32).to_be_bytes().to_vec();
    padded.extend_from_slice(plain);
    padded.resize(padded.len().div_ceil(ANON_PAD) * ANON_PAD, 0);
    let nonce: [u8; 24] = rand::rng().random();
    let sealed = XChaCha20Poly1305::new(&envelope_key(group_key))
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &padded,
                aad: ANON_AAD,
            },
        )
        .expect("XChaCha20-Poly1305 encrypts any length we send");
    let mut out = vec![ANON_VERSION];
    out.extend_from_slice(&nonce);
    out.extend(sealed);
    out
}

/// Opens an anonymous envelope with a group key, if it was sealed with it.
fn open_envelope(group_key: &[u8; 32], envelope: &[u8]) -> Option<Vec<u8>> {
    let rest = envelope.strip_prefix(&[ANON_VERSION])?;
    if rest.len() < 24 + 16 {
        return None;
    }
    let (nonce, sealed) = rest.split_at(24);
    let padded = XChaCha20Poly1305::new(&envelope_key(group_key))
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: ANON_AAD,
            },
        )
        .ok()?;
    let len = u32::from_be_bytes(padded.get(..4)?.try_into().ok()?) as usize;
    padded.get(4..4 + len).map(<[u8]>::to_vec)
}

/// The linking scope of something anonymous with id `id` in a group.
pub(super) fn scope(group_id: &[u8], id: &[u8]) -> Vec<u8> {
    [b"sotto-anonymous-v1".as_slice(), group_id, id].concat()
}

/// Checks an anonymous post or corroboration against the group's state:
/// every ring key must be a current member's, and the ring signature must
/// hold. Returns the signer's linking tag. Pure: every member's app runs it.
pub(crate) fn check_anonymous(
    state: &GroupState,
    group_id: &[u8; 16],
    a: &content::Anonymous,
) -> std::result::Result<[u8; 32], String> {
    if a.group_id != group_id || a.id.len() != 16 {
        return Err("it is for another group, or malformed".into());
    }
    if a.ring.is_empty()
        || a.ring.len() != a.ring.len() / 32 * 32
        || a.ring.len() / 32 > lsag::MAX_RING
    {
        return Err("its ring is malformed".into());
    }
    let members: HashSet<[u8; 32]> = state.ring().into_iter().map(|(_, k)| k).collect();
    let mut ring = Vec::with_capacity(a.ring.len() / 32);
    for chunk in a.ring.chunks(32) {
        let key: [u8; 32] = chunk.try_into().map_err(|_| "its ring is malformed")?;
        if !members.contains(&key) {
            return Err("it was signed over a key that is not a current member's \
                        (a removed member's, or a forgery)"
                .into());
        }
        ring.push(lsag::PublicKey::from_bytes(&key).map_err(|e| e.to_string())?);
    }
    let signature = lsag::Signature::from_bytes(&a.signature)
        .map_err(|e| format!("its signature is malformed ({e})"))?;
    lsag::verify(&ring, &scope(group_id, &a.id), &a.payload, &signature)
        .map_err(|_| "its ring signature does not verify".to_string())?;
    Ok(signature.tag())
}

/// Checks a named warning's author proof: a ring signature by the author's
/// ring key alone, in the warning's scope. Returns the author's tag.
pub(crate) fn check_author_proof(
    state: &GroupState,
    group_id: &[u8; 16],
    author: Uuid,
    warning_id: &[u8; 16],
    proof: &[u8],
) -> std::result::Result<[u8; 32], String> {
    let key = state
        .member(author)
        .and_then(|m| m.ring_key.as_deref())
        .and_then(hex_decode)
        .ok_or("its author has no ring key in the group's state")?;
    let key = lsag::PublicKey::from_bytes(&key).map_err(|e| e.to_string())?;
    let signature = lsag::Signature::from_bytes(proof).map_err(|e| e.to_string())?;
    lsag::verify(
        &[key],
        &scope(group_id, warning_id),
        AUTHOR_PROOF,
        &signature,
    )
    .map_err(|_| "its author proof does not verify".to_string())?;
    Ok(signature.tag())
}

/// What `sotto corroborate` did.
#[derive(Debug, Clone)]
pub struct Corroborated {
    /// The warning's id, hex.
    pub warning: String,
    /// Distinct members who corroborated it, as this app counts them now.
    pub count: usize,
    /// Members the corroboration is anonymous among (the ring).
    pub ring: usize,
}

/// What an anonymous post did.
#[derive(Debug, Clone)]
pub struct PostedAnonymously {
    /// The post's id, hex.
    pub id: String,
    /// True when it went to the moderators for approval.
    pub via_moderator: bool,
    /// Members the author is anonymous among (the ring).
    pub ring: usize,
}

/// A member's anonymous post waiting for a moderator, as shown to them.
#[derive(Debug, Clone)]
pub struct SubmissionView {
    /// The post's id, hex.
    pub id: String,
    /// Who sent it (moderators see this; members never do).
    pub from: String,
    /// The post as it would appear.
    pub text: String,
    /// When it arrived.
    pub received_at_ms: u64,
}

/// What a member posts anonymously.
#[derive(Debug, Clone)]
pub enum AnonymousBody {
    /// A group text.
    Text(String),
    /// A warning.
    Warning(WarningInput),
}

impl Engine {
    /// My ring-signature key for a group: derived from my identity key, so
    /// nothing more needs keeping (an identity reset changes it; noted).
    pub(super) fn ring_secret(&self, group: &[u8; 16]) -> lsag::SecretKey {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.identity.private_key().serialize())
                .expect("HMAC takes any key length");
        mac.update(b"sotto ring seed v1");
        let seed: [u8; 32] = mac.finalize().into_bytes().into();
        lsag::SecretKey::derive(&seed, group)
    }

    /// Publishes my ring key in a group's state if it is not there yet;
    /// returns the state after.
    pub(super) async fn ensure_ring_key(&mut self, id: [u8; 16]) -> Result<GroupState> {
        let me = self.account.account_id;
        let key = hex(&self.ring_secret(&id).public().to_bytes());
        let state = self
            .commit(id, &|state| {
                Ok(match state.member(me) {
                    Some(m) if m.ring_key.is_none() => vec![Op::SetRingKey(key.clone())],
                    _ => vec![],
                })
            })
            .await?;
        if state
            .member(me)
            .is_some_and(|m| m.ring_key.as_deref() != Some(key.as_str()))
        {
            return Err(EngineError::Invalid(format!(
                "your key for anonymous posts in \"{}\" is from before your identity was reset; \
                 anonymous posting and corroboration need you to leave and rejoin the group",
                state.title
            )));
        }
        Ok(state)
    }

    /// Publishes my ring key in each active group lacking it (on sync).
    pub(super) async fn publish_ring_keys(&mut self) -> Result<()> {
        let me = self.account.account_id;
        for g in self.store.groups()? {
            if g.active
                && g.state.member(me).is_some_and(|m| m.ring_key.is_none())
                && let Err(e) = self.ensure_ring_key(g.id).await
            {
                if is_offline(&e) {
                    return Err(e);
                }
                // Not worth failing a sync over: the next one tries again.
                self.notices.push(Notice::Group(format!(
                    "could not publish your key for anonymous posts in \"{}\": {e}",
                    g.state.title
                )));
            }
        }
        Ok(())
    }

    /// A named warning's author proof (see [`check_author_proof`]).
    pub(super) fn author_proof(&self, group: &[u8; 16], warning_id: &[u8; 16]) -> Result<Vec<u8>> {
        let secret = self.ring_secret(group);
        let signature = lsag::sign(
            &secret,
            &[secret.public()],
            &scope(group, warning_id),
            AUTHOR_PROOF,
        )
        .map_err(|e| EngineError::Invalid(format!("cannot sign the author proof: {e}")))?;
        Ok(signature.to_bytes())
    }

    /// My linking tag for a warning.
    fn my_tag(&self, group: &[u8; 16], warning_id: &[u8; 16]) -> [u8; 32] {
        self.ring_secret(group).tag(&scope(group, warning_id))
    }

    /// Signs `payload` as "a member" of the group, over every current
    /// member's ring key.
    fn sign_anonymous(
        &self,
        state: &GroupState,
        group: [u8; 16],
        id: [u8; 16],
        payload: Vec<u8>,
    ) -> Result<content::Anonymous> {
        let secret = self.ring_secret(&group);
        let ring: Vec<[u8; 32]> = state.ring().into_iter().map(|(_, k)| k).collect();
        if !ring.contains(&secret.public().to_bytes()) {
            return Err(EngineError::Invalid(
                "your key for anonymous posts is not in the group's state yet; \
                 run `sotto sync` and try again"
                    .into(),
            ));
        }
        let keys = ring
            .iter()
            .map(|k| lsag::PublicKey::from_bytes(k))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| EngineError::Invalid(format!("a member's ring key is damaged: {e}")))?;
        let signature = lsag::sign(&secret, &keys, &scope(&group, &id), &payload)
            .map_err(|e| EngineError::Invalid(format!("cannot sign anonymously: {e}")))?;
        Ok(content::Anonymous {
            group_id: group.to_vec(),
            id: id.to_vec(),
            ring: ring.concat(),
            signature: signature.to_bytes(),
            payload,
        })
    }

    /// The warning whose id starts with `prefix` (at least 4 hex characters).
    fn find_warning(&self, prefix: &str) -> Result<WarningRecord> {
        match one_by_id_prefix(self.store.warnings()?, |w| w.id, prefix) {
            Some(w) => Ok(w),
            None => Err(EngineError::Invalid(format!(
                "no single warning has an id starting {prefix:?}; see `sotto warnings --json` \
                 for ids"
            ))),
        }
    }

    /// `sotto corroborate`: adds my anonymous "me too" to a warning. Members
    /// see how many distinct members corroborated, never who.
    pub async fn corroborate(&mut self, warning: &str, firsthand: bool) -> Result<Corroborated> {
        self.corroborate_inner(warning, firsthand, true).await
    }

    /// [`Engine::corroborate`] without the local checks that stop a second
    /// corroboration: what a modified app could send. Only for tests that
    /// prove other members count it once.
    #[doc(hidden)]
    pub async fn danger_corroborate_unchecked(
        &mut self,
        warning: &str,
        firsthand: bool,
    ) -> Result<Corroborated> {
        self.corroborate_inner(warning, firsthand, false).await
    }

    async fn corroborate_inner(
        &mut self,
        warning: &str,
        firsthand: bool,
        check: bool,
    ) -> Result<Corroborated> {
        let w = self.find_warning(warning)?;
        let g = self.store.group(w.group)?.ok_or_else(|| {
            EngineError::Invalid("the group of that warning is no longer here".into())
        })?;
        self.require_active(&g)?;
        let state = self.ensure_ring_key(g.id).await?;
        let tag = self.my_tag(&g.id, &w.id);
        if check && w.author_tag == Some(tag) {
            return Err(EngineError::Invalid(
                "you posted this warning; corroborating it would not add to its count".into(),
            ));
        }
        let already = self
            .store
            .corroborations()?
            .iter()
            .any(|c| c.warning == w.id && c.tag == tag);
        if check && already {
            return Err(EngineError::Invalid(
                "you already corroborated this warning; each member counts once".into(),
            ));
        }
        let payload = content::AnonymousPayload {
            body: Some(content::anonymous_payload::Body::Corroboration(
                content::Corroboration { firsthand },
            )),
        }
        .encode_to_vec();
        let a = self.sign_anonymous(&state, g.id, w.id, payload)?;
        let ring = a.ring.len() / 32;
        self.store.insert_corroboration(&CorroborationRecord {
            group: g.id,
            warning: w.id,
            tag,
            firsthand,
            mine: true,
        })?;
        let (id, body) = new_content("", content::content::Body::Anonymous(a));
        self.queue_anonymous(&g, id, &body).await?;
        Ok(Corroborated {
            warning: hex(&w.id),
            count: count_corroborations(&self.store.corroborations()?, &w).0,
            ring,
        })
    }

    /// Stores an anonymous envelope's content in the outbox and sends it.
    async fn queue_anonymous(
        &mut self,
        g: &LocalGroup,
        id: [u8; 16],
        body: &Content,
    ) -> Result<()> {
        let entry = OutboxEntry {
            id,
            recipient: Uuid::nil(),
            content: body.encode_to_vec(),
            created_at_ms: now_ms(),
            group: Some(g.id),
            anonymous: true,
        };
        self.store.outbox_push(&entry)?;
        // Durable before anything leaves: a crash from here on resends it
        // (members drop the copy they already have).
        self.store.flush().await?;
        match self.drain_outbox().await {
            Ok(_) => Ok(()),
            Err(e) if is_offline(&e) || is_rate_limited(&e) => Err(EngineError::Invalid(format!(
                "saved, but the relay cannot take it now ({e}); it will be sent by the next \
                 `sotto sync` or `listen`"
            ))),
            Err(e) => Err(e),
        }
    }

    /// Sends an anonymous outbox entry to every current member, each in its
    /// own envelope with no sender.
    pub(super) async fn deliver_anonymous(
        &mut self,
        entry: &OutboxEntry,
        id: [u8; 16],
    ) -> Result<()> {
        let Some(mut g) = self.store.group(id)? else {
            self.fail(entry)?;
            return Err(EngineError::Invalid(
                "that group no longer exists here".into(),
            ));
        };
        // The current key: members who rotated could not open the old one.
        if self.refresh(&mut g).await?.is_none() || self.my_role(&g).is_none() {
            self.fail(entry)?;
            return Err(EngineError::Invalid(format!(
                "you are no longer a member of \"{}\"",
                g.state.title
            )));
        }
        for member in self.other_members(&g.state) {
            let envelope = seal_envelope(&g.key, &entry.content);
            let conn = self.connection().await?;
            match conn
                .request(Req::Send(relay::Send {
                    recipient: member.as_bytes().to_vec(),
                    device_id: u32::from(DEVICE_ID),
                    registration_id: 0,
                    envelope,
                }))
                .await
            {
                Ok(Resp::Sent(_)) => {}
                // A member who deleted their account: nothing to deliver.
                Err(TransportError::Refused {
                    code: ErrorCode::UnknownRecipient,
                    ..
                }) => {}
                Ok(_) => return Err(TransportError::Unexpected.into()),
                Err(e) => return Err(e.into()),
            }
        }
        self.settle(entry, MessageStatus::Sent)?;
        self.store.flush().await?;
        Ok(())
    }

    /// Tries my groups' keys on an envelope; the group and plaintext of an
    /// anonymous envelope, or None for anything else.
    pub(super) fn open_anonymous_envelope(
        &self,
        envelope: &[u8],
    ) -> Result<Option<([u8; 16], Vec<u8>)>> {
        if envelope.first() != Some(&ANON_VERSION) {
            return Ok(None);
        }
        for g in self.store.groups()? {
            if g.active
                && let Some(plain) = open_envelope(&g.key, envelope)
            {
                return Ok(Some((g.id, plain)));
            }
        }
        Ok(None)
    }

    /// An anonymous envelope for group `group` arrived.
    pub(super) async fn on_anonymous_envelope(
        &mut self,
        group: [u8; 16],
        plain: &[u8],
    ) -> Result<Option<MessageRecord>> {
        let Ok(content) = Content::decode(plain) else {
            return Ok(None);
        };
        match &content.body {
            Some(content::content::Body::Anonymous(a)) if a.group_id == group => {
                self.on_anonymous(None, &content, a).await
            }
            _ => Ok(None),
        }
    }

    /// Something by "a member": `publisher` is None for an anonymous
    /// envelope, or the admin who published a submission.
    pub(super) async fn on_anonymous(
        &mut self,
        publisher: Option<Uuid>,
        content: &Content,
        a: &content::Anonymous,
    ) -> Result<Option<MessageRecord>> {
        let (Ok(group), Ok(id)) = (
            <[u8; 16]>::try_from(a.group_id.as_slice()),
            <[u8; 16]>::try_from(a.id.as_slice()),
        ) else {
            return Ok(None);
        };
        let Some(mut g) = self.store.group(group)? else {
            return Ok(None);
        };
        if !g.active {
            return Ok(None);
        }
        let tag = match check_anonymous(&g.state, &group, a) {
            Ok(tag) => tag,
            Err(_) => {
                // Perhaps a member published their key after our last update.
                self.refresh(&mut g).await?;
                match check_anonymous(&g.state, &group, a) {
                    Ok(tag) => tag,
                    Err(why) => {
                        self.notices.push(Notice::Group(format!(
                            "dropped an anonymous message to \"{}\": {why}",
                            g.state.title
                        )));
                        return Ok(None);
                    }
                }
            }
        };
        let Ok(payload) = content::AnonymousPayload::decode(a.payload.as_slice()) else {
            return Ok(None);
        };
        let settings = g.state.settings;
        let drop = |engine: &mut Engine, why: &str| {
            engine.notices.push(Notice::Group(format!(
                "dropped an anonymous post to \"{}\": {why}",
                g.state.title
            )));
            Ok(None)
        };
        use content::anonymous_payload::Body;
        let shown = match (&payload.body, publisher) {
            (Some(Body::Corroboration(c)), None) => {
                self.store.insert_corroboration(&CorroborationRecord {
                    group,
                    warning: id,
                    tag,
                    firsthand: c.firsthand,
                    mine: false,
                })?;
                return Ok(None);
            }
            (Some(Body::Corroboration(_)), Some(_)) | (None, _) => return Ok(None),
            (_, None) if settings.anonymous_posts != AnonymousPosts::On => {
                return drop(self, "anonymous posts are not on in this group");
            }
            (_, None) if settings.announcements_only => {
                return drop(self, "the group is announcements-only");
            }
            (_, None) => SHOWN_ANONYMOUS,
            (_, Some(p)) if !g.state.role_of(p).is_some_and(Role::is_admin) => {
                return drop(self, "it was published by someone who is not a moderator");
            }
            (_, Some(_)) if settings.anonymous_posts != AnonymousPosts::ViaModerator => {
                return drop(
                    self,
                    "anonymous posts via a moderator are not on in this group",
                );
            }
            (_, Some(_)) => SHOWN_MODERATED,
        };
        // Another moderator published it: it no longer waits here.
        self.store.remove_submission(id)?;
        let received = now_ms();
        let sent_at_ms = content.sent_at_ms.min(received);
        match payload.body {
            Some(Body::Text(t)) if t.group_id == group => {
                let timer = settings.disappearing_ms;
                let record = MessageRecord {
                    id,
                    peer: Uuid::nil(),
                    direction: MessageDirection::Incoming,
                    sender_name: shown.into(),
                    text: safe::clean_field(&t.body, MAX_TEXT_BYTES, Lines::Many),
                    sent_at_ms,
                    received_at_ms: received,
                    status: MessageStatus::Received,
                    group: Some(group.to_vec()),
                    expires_at_ms: (timer > 0).then(|| sent_at_ms + timer),
                };
                Ok(self.store.insert_message(&record)?.then_some(record))
            }
            Some(Body::Warning(w)) if w.group_id == group => {
                let Some(mut warning) =
                    warning_record(&w, id, group, Uuid::nil(), sent_at_ms, &settings)
                else {
                    return Ok(None);
                };
                warning.author_tag = Some(tag);
                warning.anonymous = Some(shown.into());
                let record = super::warnings::history_record(&warning, shown, received);
                if !self.store.insert_message(&record)? {
                    return Ok(None);
                }
                self.store.insert_warning(&warning)?;
                Ok(Some(record))
            }
            _ => Ok(None),
        }
    }

    /// A member's anonymous post for the moderators arrived (1:1).
    pub(super) async fn on_submission(
        &mut self,
        sender: Uuid,
        a: &content::Anonymous,
    ) -> Result<()> {
        let (Ok(group), Ok(id)) = (
            <[u8; 16]>::try_from(a.group_id.as_slice()),
            <[u8; 16]>::try_from(a.id.as_slice()),
        ) else {
            return Ok(());
        };
        let Some(mut g) = self.store.group(group)? else {
            return Ok(());
        };
        if !self.my_role(&g).is_some_and(Role::is_admin)
            || g.state.settings.anonymous_posts != AnonymousPosts::ViaModerator
        {
            return Ok(());
        }
        if g.state.member(sender).is_none() {
            self.refresh(&mut g).await?;
        }
        if g.state.member(sender).is_none() {
            return Ok(());
        }
        if let Err(why) = check_anonymous(&g.state, &group, a) {
            self.notices.push(Notice::Group(format!(
                "dropped an anonymous post sent for approval in \"{}\": {why}",
                g.state.title
            )));
            return Ok(());
        }
        self.store.put_submission(&SubmissionRecord {
            id,
            group,
            from: sender,
            post: a.encode_to_vec(),
            received_at_ms: now_ms(),
        })?;
        self.notices.push(Notice::Group(format!(
            "a member sent an anonymous post to \"{}\" for approval; see `sotto group \
             submissions {}`",
            g.state.title,
            safe::shell_arg(&g.state.title)
        )));
        Ok(())
    }

    /// Posts to a group without my name: anonymously (`on`) or for a
    /// moderator's approval (`via-moderator`), as the group's setting says.
    /// `moderator` picks the one moderator who sees a via-moderator post
    /// (and so learns who wrote it); by default every admin does.
    pub async fn post_anonymously(
        &mut self,
        query: &str,
        body: AnonymousBody,
        moderator: Option<&str>,
    ) -> Result<PostedAnonymously> {
        let g = self.find_group(query)?;
        self.require_active(&g)?;
        let title = g.state.title.clone();
        let mode = g.state.settings.anonymous_posts;
        if mode == AnonymousPosts::Off {
            return Err(EngineError::Invalid(format!(
                "anonymous posts are off in \"{title}\"; an admin can turn them on with \
                 `sotto group settings {} --anonymous-posts via-moderator|on`. \
                 Nothing was sent",
                safe::shell_arg(&title)
            )));
        }
        let chosen = match moderator {
            None => None,
            Some(_) if mode != AnonymousPosts::ViaModerator => {
                return Err(EngineError::Invalid(format!(
                    "--moderator is for groups with anonymous posts via a moderator; \
                     \"{title}\" has them {}",
                    mode.as_str()
                )));
            }
            Some(who) => {
                let account = self.find_member(&g.state, who)?;
                if !g.state.role_of(account).is_some_and(Role::is_admin) {
                    return Err(EngineError::Invalid(format!(
                        "{who} is not a moderator (admin) of \"{title}\""
                    )));
                }
                Some(account)
            }
        };
        if mode == AnonymousPosts::On && g.state.settings.announcements_only {
            return Err(EngineError::Invalid(format!(
                "\"{title}\" is announcements-only: only admins can post. Nothing was sent"
            )));
        }
        let payload = match body {
            AnonymousBody::Text(text) => {
                self.check_text("the message", &text)?;
                content::anonymous_payload::Body::Text(content::GroupText {
                    group_id: g.id.to_vec(),
                    body: text,
                })
            }
            AnonymousBody::Warning(input) => content::anonymous_payload::Body::Warning(
                super::warnings::warning_content(g.id, input, !self.unchecked)?,
            ),
        };
        let state = self.ensure_ring_key(g.id).await?;
        let id: [u8; 16] = rand::rng().random();
        let payload = content::AnonymousPayload {
            body: Some(payload),
        }
        .encode_to_vec();
        let a = self.sign_anonymous(&state, g.id, id, payload)?;
        let ring = a.ring.len() / 32;
        match mode {
            AnonymousPosts::On => {
                let (_, mut body) = new_content("", content::content::Body::Anonymous(a.clone()));
                body.id = id.to_vec();
                // My copy, as others see it.
                self.keep_own_anonymous(&g, &a, &body, SHOWN_ANONYMOUS)?;
                self.queue_anonymous(&g, id, &body).await?;
            }
            _ => {
                let me = self.account.account_id;
                let admins: Vec<Uuid> = state
                    .members
                    .iter()
                    .filter(|m| m.role.is_admin() && m.account != me)
                    .filter(|m| chosen.is_none_or(|c| c == m.account))
                    .map(|m| m.account)
                    .collect();
                if admins.is_empty() {
                    return Err(EngineError::Invalid(format!(
                        "\"{title}\" has no other moderator to approve an anonymous post; \
                         nothing was sent"
                    )));
                }
                let (_, body) = new_content(
                    &self.account.name,
                    content::content::Body::Submission(a.clone()),
                );
                let bytes = body.encode_to_vec();
                for admin in admins {
                    // One outbox entry per moderator, each with its own id.
                    self.store.outbox_push(&OutboxEntry {
                        id: rand::rng().random(),
                        recipient: admin,
                        content: bytes.clone(),
                        created_at_ms: now_ms(),
                        group: None,
                        anonymous: false,
                    })?;
                }
                self.store.flush().await?;
                self.drain_outbox().await?;
            }
        }
        Ok(PostedAnonymously {
            id: hex(&id),
            via_moderator: mode == AnonymousPosts::ViaModerator,
            ring,
        })
    }

    /// Keeps my own anonymous post as the members see it.
    fn keep_own_anonymous(
        &mut self,
        g: &LocalGroup,
        a: &content::Anonymous,
        body: &Content,
        shown: &str,
    ) -> Result<()> {
        let Ok(payload) = content::AnonymousPayload::decode(a.payload.as_slice()) else {
            return Ok(());
        };
        let Ok(id) = <[u8; 16]>::try_from(a.id.as_slice()) else {
            return Ok(());
        };
        let now = now_ms();
        let settings = g.state.settings;
        let tag = lsag::Signature::from_bytes(&a.signature)
            .map(|s| s.tag())
            .ok();
        match payload.body {
            Some(content::anonymous_payload::Body::Text(t)) => {
                let timer = settings.disappearing_ms;
                self.store.insert_message(&MessageRecord {
                    id,
                    peer: Uuid::nil(),
                    direction: MessageDirection::Outgoing,
                    sender_name: format!("{shown} (you)"),
                    text: t.body,
                    sent_at_ms: body.sent_at_ms,
                    received_at_ms: now,
                    status: MessageStatus::Pending,
                    group: Some(g.id.to_vec()),
                    expires_at_ms: (timer > 0).then(|| body.sent_at_ms + timer),
                })?;
            }
            Some(content::anonymous_payload::Body::Warning(w)) => {
                if let Some(mut warning) =
                    warning_record(&w, id, g.id, Uuid::nil(), body.sent_at_ms, &settings)
                {
                    warning.author_tag = tag;
                    warning.anonymous = Some(format!("{shown} (you)"));
                    let mut record = super::warnings::history_record(&warning, shown, now);
                    record.direction = MessageDirection::Outgoing;
                    record.status = MessageStatus::Pending;
                    self.store.insert_message(&record)?;
                    self.store.insert_warning(&warning)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Anonymous posts waiting for my approval in a group (moderators).
    pub fn group_submissions(&self, query: &str) -> Result<Vec<SubmissionView>> {
        let g = self.find_group(query)?;
        let mut out = Vec::new();
        for s in self.store.submissions()? {
            if s.group != g.id {
                continue;
            }
            let text = content::Anonymous::decode(s.post.as_slice())
                .ok()
                .and_then(|a| content::AnonymousPayload::decode(a.payload.as_slice()).ok())
                .map(|p| match p.body {
                    Some(content::anonymous_payload::Body::Text(t)) => t.body,
                    Some(content::anonymous_payload::Body::Warning(w)) => format!(
                        "[warning] about {}: {}. {}",
                        safe::clean_field(&w.subject, safe::MAX_SHORT_CHARS, Lines::One),
                        safe::clean_field(&w.kind, safe::MAX_SHORT_CHARS, Lines::One),
                        w.text
                    ),
                    _ => String::new(),
                })
                // Kept as it arrived (it is published as is); made safe here.
                .map(|t| safe::clean_field(&t, MAX_TEXT_BYTES, Lines::Many))
                .unwrap_or_default();
            out.push(SubmissionView {
                id: hex(&s.id),
                from: self.peer_name(s.from, "")?,
                text,
                received_at_ms: s.received_at_ms,
            });
        }
        out.sort_by_key(|s| s.received_at_ms);
        Ok(out)
    }

    fn find_submission(&self, g: &LocalGroup, prefix: &str) -> Result<SubmissionRecord> {
        let waiting = self
            .store
            .submissions()?
            .into_iter()
            .filter(|s| s.group == g.id);
        match one_by_id_prefix(waiting, |s| s.id, prefix) {
            Some(s) => Ok(s),
            None => Err(EngineError::Invalid(format!(
                "no single post waiting in \"{}\" has an id starting {prefix:?}; see \
                 `sotto group submissions`",
                g.state.title
            ))),
        }
    }

    /// Publishes a member's anonymous post (moderators): members see it as
    /// "a member (approved by a moderator)".
    pub async fn group_publish(&mut self, query: &str, id: &str) -> Result<()> {
        let g = self.find_group(query)?;
        if !self.my_role(&g).is_some_and(Role::is_admin) {
            return Err(EngineError::Invalid(
                "only moderators (admins) publish anonymous posts".into(),
            ));
        }
        // Published posts are kept under no author; a second `publish` of
        // one (mine, or another moderator's copy of the same submission)
        // must say so rather than send it again or fail obscurely.
        let published: Vec<[u8; 16]> = self
            .store
            .group_messages(&g.id)?
            .into_iter()
            .filter(|m| m.peer.is_nil())
            .map(|m| m.id)
            .collect();
        let s = match self.find_submission(&g, id) {
            Ok(s) => s,
            Err(e) => {
                return match one_by_id_prefix(published.iter().copied(), |m| *m, id) {
                    Some(done) => Err(already_published(&done)),
                    None => Err(e),
                };
            }
        };
        if published.contains(&s.id) {
            // Another moderator published it first: nothing left to do here.
            self.store.remove_submission(s.id)?;
            return Err(already_published(&s.id));
        }
        let a = content::Anonymous::decode(s.post.as_slice())
            .map_err(|_| StoreError::Corrupt("a kept submission".into()))?;
        if let Err(why) = check_anonymous(&g.state, &g.id, &a) {
            self.store.remove_submission(s.id)?;
            return Err(EngineError::Invalid(format!(
                "that post no longer verifies ({why}); it was discarded"
            )));
        }
        let (_, mut body) = new_content(
            &self.account.name,
            content::content::Body::Anonymous(a.clone()),
        );
        body.id = s.id.to_vec();
        self.keep_own_anonymous(&g, &a, &body, SHOWN_MODERATED)?;
        let mut entry = self.group_entry(&g, s.id, &body);
        // Our copy is kept under no author, like everyone's.
        entry.recipient = Uuid::nil();
        self.store.outbox_push(&entry)?;
        self.store.remove_submission(s.id)?;
        self.store.flush().await?;
        self.drain_outbox().await?;
        Ok(())
    }

    /// Discards a member's anonymous post without publishing it (moderators).
    pub fn group_discard(&mut self, query: &str, id: &str) -> Result<()> {
        let g = self.find_group(query)?;
        let s = self.find_submission(&g, id)?;
        self.store.remove_submission(s.id)?;
        Ok(())
    }
}

/// The answer to publishing a post that is already in the group.
fn already_published(id: &[u8; 16]) -> EngineError {
    EngineError::Invalid(format!(
        "post {} was already published (by you or another moderator); nothing was sent again",
        &hex(id)[..8]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::{Member, Settings};

    fn state_with(keys: &[(Uuid, lsag::PublicKey)]) -> GroupState {
        let mut s = crate::group::genesis("00112233445566778899aabbccddeeff");
        for (account, key) in keys {
            s.members.push(Member {
                account: *account,
                identity_key: String::new(),
                name: "m".into(),
                role: Role::Member,
                joined_at_ms: 0,
                ring_key: Some(hex(&key.to_bytes())),
            });
        }
        s.settings = Settings::default();
        s
    }

    fn signed(
        secret: &lsag::SecretKey,
        ring: &[lsag::PublicKey],
        group: [u8; 16],
        id: [u8; 16],
        payload: &[u8],
    ) -> content::Anonymous {
        let sig = lsag::sign(secret, ring, &scope(&group, &id), payload).expect("sign");
        content::Anonymous {
            group_id: group.to_vec(),
            id: id.to_vec(),
            ring: ring.iter().flat_map(|k| k.to_bytes()).collect(),
            signature: sig.to_bytes(),
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn envelopes_open_only_with_their_group_key_and_hide_length() {
        let (k1, k2) = ([1u8; 32], [2u8; 32]);
        let e = seal_envelope(&k1, b"hello");
        assert_eq!(e[0], ANON_VERSION);
        assert_eq!(open_envelope(&k1, &e).as_deref(), Some(&b"hello"[..]));
        assert!(open_envelope(&k2, &e).is_none());
        assert_eq!(
            seal_envelope(&k1, b"a").len(),
            seal_envelope(&k1, &[7u8; 200]).len()
        );
        let mut bad = e.clone();
        *bad.last_mut().expect("nonempty") ^= 1;
        assert!(open_envelope(&k1, &bad).is_none());
    }

    #[test]
    fn members_verify_and_malicious_members_are_refused() {
        let group = [9u8; 16];
        let secrets: Vec<lsag::SecretKey> = (0..4u8)
            .map(|i| lsag::SecretKey::derive(&[i; 32], &group))
            .collect();
        let keys: Vec<lsag::PublicKey> = secrets.iter().map(|s| s.public()).collect();
        let accounts: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
        let members: Vec<(Uuid, lsag::PublicKey)> =
            accounts.iter().copied().zip(keys.iter().copied()).collect();
        let state = state_with(&members);
        let warning = [5u8; 16];

        // A member's corroboration verifies, and twice gives the same tag.
        let one = signed(&secrets[1], &keys, group, warning, b"me too");
        let two = signed(&secrets[1], &keys, group, warning, b"me too, again");
        let t1 = check_anonymous(&state, &group, &one).expect("verifies");
        let t2 = check_anonymous(&state, &group, &two).expect("verifies");
        assert_eq!(t1, t2, "a second corroboration must carry the same tag");
        // Another member's differs; the same member's on another warning too.
        let other = signed(&secrets[2], &keys, group, warning, b"me too");
        assert_ne!(check_anonymous(&state, &group, &other).expect("ok"), t1);
        let elsewhere = signed(&secrets[1], &keys, group, [6u8; 16], b"me too");
        assert_ne!(check_anonymous(&state, &group, &elsewhere).expect("ok"), t1);

        // A forged count: payload changed after signing.
        let mut forged = one.clone();
        forged.payload = b"me too x100".to_vec();
        assert!(check_anonymous(&state, &group, &forged).is_err());

        // A removed member: their key is no longer in the state.
        let after = state_with(&members[..3]);
        let removed = signed(&secrets[3], &keys, group, warning, b"me too");
        assert!(check_anonymous(&after, &group, &removed).is_err());
        // ...nor can they sign without their own key in the ring.
        assert!(lsag::sign(&secrets[3], &keys[..3], &scope(&group, &warning), b"x").is_err());

        // An outsider's key slipped into the ring.
        let outsider = lsag::SecretKey::derive(&[77; 32], &group);
        let mut ring = keys[..3].to_vec();
        ring.push(outsider.public());
        let sneaky = signed(&outsider, &ring, group, warning, b"me too");
        assert!(check_anonymous(&state, &group, &sneaky).is_err());

        // Replayed into another group.
        assert!(check_anonymous(&state, &[8u8; 16], &one).is_err());
    }

    #[test]
    fn author_proof_links_to_the_authors_own_corroboration() {
        let group = [3u8; 16];
        let warning = [4u8; 16];
        let author = lsag::SecretKey::derive(&[1; 32], &group);
        let other = lsag::SecretKey::derive(&[2; 32], &group);
        let a = Uuid::new_v4();
        let state = state_with(&[(a, author.public()), (Uuid::new_v4(), other.public())]);
        let proof = lsag::sign(
            &author,
            &[author.public()],
            &scope(&group, &warning),
            AUTHOR_PROOF,
        )
        .expect("sign");
        let tag = check_author_proof(&state, &group, a, &warning, &proof.to_bytes())
            .expect("proof verifies");
        let keys = [author.public(), other.public()];
        let own = signed(&author, &keys, group, warning, b"me too");
        assert_eq!(check_anonymous(&state, &group, &own).expect("ok"), tag);
        // Someone else's proof is not the author's.
        let wrong = lsag::sign(
            &other,
            &[other.public()],
            &scope(&group, &warning),
            AUTHOR_PROOF,
        )
        .expect("sign");
        assert!(check_author_proof(&state, &group, a, &warning, &wrong.to_bytes()).is_err());
    }
}
