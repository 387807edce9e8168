//! Group chats, the engine's side: relay I/O and the store around the pure
//! model in [`crate::group`].
//!
//! - **State** lives on the relay as an encrypted, padded blob. Every read
//!   and write goes over a separate, *unauthenticated* connection and is
//!   signed by the group's auth key, so the relay cannot tie a group to the
//!   account that touched it (it still sees the IP address; see ARCHITECTURE.md).
//! - **Changes** are compare-and-swap writes; the loser of a race refetches,
//!   replays, re-derives its ops against the new state and retries, so every
//!   member converges on the relay's one chain. After a write, each member of
//!   the new state gets a 1:1 sealed `GroupUpdate` with the (possibly new)
//!   group key; removed members get `GroupRemoved` and no key.
//! - **Messages** are encrypted once with our sender key and sent as sealed
//!   sender v2 to all members; before that, each member who lacks our sender
//!   key for the current distribution id gets it 1:1. A new key (after a
//!   removal) means a new distribution id, so every member starts a fresh
//!   sender key the removed member never sees.

use libsignal_protocol::{
    CiphertextMessageType, ContentHint, IdentityKeyStore, PreKeySignalMessage,
    SenderKeyDistributionMessage, ServiceId, SessionRecord, SignalMessage,
    UnidentifiedSenderMessageContent, create_sender_key_distribution_message, group_decrypt,
    group_encrypt, message_decrypt_prekey, message_decrypt_signal,
    process_sender_key_distribution_message, sealed_sender_decrypt_to_usmc,
    sealed_sender_multi_recipient_encrypt,
};
use serde::{Deserialize, Serialize};
use sotto_wire::auth::{GroupPurpose, group_body, group_transcript};

use super::*;
use crate::group::{
    self, AnonymousPosts, Blob, ChangeBody, GroupError, GroupKeys, GroupState, LinkKeys, Member,
    Op, Pending, Role, Settings, SignedChange, apply, b64_decode, b64_encode, genesis, hex_decode,
    replay,
};
use crate::safe;
use crate::store::{LocalGroup, PendingJoin};

/// Compare-and-swap attempts before giving up on a busy group.
const COMMIT_ATTEMPTS: usize = 8;

/// A group as `sotto groups` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// Hex group id.
    pub id: String,
    /// Title ("" while a join request waits).
    pub title: String,
    /// My role, or None when I left, was removed, or am waiting to be let in.
    pub role: Option<Role>,
    /// Member count.
    pub members: usize,
    /// Settings.
    pub settings: Settings,
    /// Join requests waiting for approval.
    pub pending: usize,
    /// True while my join request waits.
    pub waiting: bool,
}

/// Where a join request stands after my vouch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vouched {
    /// Vouches from current members, mine included (0 once admitted).
    pub have: usize,
    /// Vouches the group requires.
    pub needed: usize,
    /// Join approval is on: an admin still has to approve.
    pub approval: bool,
    /// They are a member now.
    pub admitted: bool,
}

/// A member as `sotto group members` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// My contact name for them, else their display name in the group.
    pub name: String,
    /// Their contact code.
    pub code: String,
    /// Role.
    pub role: Role,
    /// True for me.
    pub me: bool,
}

/// What a link holder sends (encrypted under the link key) to ask to join.
#[derive(Serialize, Deserialize)]
struct JoinRequestBody {
    account: Uuid,
    identity_key: String,
    name: String,
    at_ms: u64,
    /// Identity-key signature over [`join_bytes`]: the request cannot name
    /// someone else's account.
    signature: String,
}

fn join_bytes(group: &[u8], account: Uuid, identity_key: &str, name: &str, at_ms: u64) -> Vec<u8> {
    let mut out = b"sotto-group-join-v1".to_vec();
    out.extend(group_body(&[
        group,
        account.as_bytes(),
        identity_key.as_bytes(),
        name.as_bytes(),
        &at_ms.to_be_bytes(),
    ]));
    out
}

enum Fetched {
    State {
        version: u64,
        blob: Box<Blob>,
    },
    /// Not signed by the current key: the key rotated without us.
    Forbidden,
}

/// A parsed group join link.
struct GroupLink {
    id: [u8; 16],
    secret: [u8; 32],
    /// The link carried its checksum (links made since it existed): a
    /// refusal by the relay then means it was reset, not mistyped.
    checked: bool,
}

/// Why a group link could not be used before asking the relay.
const DAMAGED_LINK: &str = "this group link is damaged: part of it was copied wrongly (a \
     character changed, missing or added). Copy the whole link again from where you got it, \
     or ask an admin to send it again";

/// Parses a group link. Links carry a checksum in the case of their hex
/// letters (as Ethereum addresses do, EIP-55): a typo is caught here and
/// reported as a damaged link, while an all-lowercase link (made before the
/// checksum, or lowercased on the way) is taken unchecked. Old apps read
/// checksummed links unchanged, since hex is read in either case.
fn parse_link(link: &str) -> Result<GroupLink> {
    let bad = || {
        EngineError::Invalid(
            "not a group link: expected sotto://group?id=...&secret=... (ask an admin for `sotto group link`)"
                .into(),
        )
    };
    let damaged = || EngineError::Invalid(DAMAGED_LINK.into());
    let query = link.trim().strip_prefix("sotto://group?").ok_or_else(bad)?;
    let (mut id_hex, mut secret_hex) = (None, None);
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("id", v)) => id_hex = Some(v),
            Some(("secret", v)) => secret_hex = Some(v),
            _ => return Err(damaged()),
        }
    }
    let (Some(id_hex), Some(secret_hex)) = (id_hex, secret_hex) else {
        return Err(damaged());
    };
    let id = hex_decode(id_hex)
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .ok_or_else(damaged)?;
    let secret = hex_decode(secret_hex)
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(damaged)?;
    let written = format!("{id_hex}{secret_hex}");
    let checked = written.chars().any(|c| c.is_ascii_uppercase());
    if checked && written != link_case(&id, &secret) {
        return Err(damaged());
    }
    Ok(GroupLink {
        id,
        secret,
        checked,
    })
}

/// The hex of `id` then `secret`, with each letter upper-cased where the
/// link checksum (SHA-256 of both, a bit per character) has a 1.
fn link_case(id: &[u8; 16], secret: &[u8; 32]) -> String {
    use sha2::Digest as _;
    let bits: [u8; 32] = sha2::Sha256::new()
        .chain_update(b"sotto group link checksum v1")
        .chain_update(id)
        .chain_update(secret)
        .finalize()
        .into();
    format!("{}{}", hex(id), hex(secret))
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if (bits[i / 8] >> (7 - i % 8)) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

fn link_string(id: &[u8; 16], secret: &[u8; 32]) -> String {
    let cased = link_case(id, secret);
    let (id_hex, secret_hex) = cased.split_at(32);
    format!("sotto://group?id={id_hex}&secret={secret_hex}")
}

fn group_err(e: GroupError) -> EngineError {
    EngineError::Invalid(e.to_string())
}

fn sign_with(keys: &KeyPair, message: &[u8]) -> Result<Vec<u8>> {
    Ok(keys
        .private_key
        .calculate_signature(message, &mut rand::rng())
        .map_err(crypto)?
        .to_vec())
}

fn refused_code(e: &EngineError) -> Option<ErrorCode> {
    match e {
        EngineError::Transport(TransportError::Refused { code, .. }) => Some(*code),
        _ => None,
    }
}

pub(super) fn content(
    sender_name: &str,
    body: content::content::Body,
) -> (/* id */ [u8; 16], Content) {
    let id: [u8; 16] = rand::rng().random();
    (
        id,
        Content {
            version: sotto_wire::CONTENT_VERSION,
            id: id.to_vec(),
            sent_at_ms: now_ms(),
            sender_name: sender_name.to_string(),
            body: Some(body),
        },
    )
}

impl Engine {
    // ----- lookups -------------------------------------------------------

    /// Finds a group by title (case-insensitive) or by a prefix of its hex id.
    pub(super) fn find_group(&self, query: &str) -> Result<LocalGroup> {
        let q = query.trim().to_lowercase();
        let all = self.store.groups()?;
        let mut found: Vec<&LocalGroup> = all
            .iter()
            .filter(|g| g.state.title.to_lowercase() == q)
            .collect();
        if found.is_empty() && q.len() >= 4 {
            found = all.iter().filter(|g| hex(&g.id).starts_with(&q)).collect();
        }
        if found.len() > 1 {
            // Prefer the groups I am still in.
            found.retain(|g| g.active);
        }
        match found.as_slice() {
            [g] => Ok((*g).clone()),
            [] => Err(EngineError::UnknownGroup(query.trim().to_string())),
            several => {
                let list: Vec<String> = several
                    .iter()
                    .map(|g| {
                        format!(
                            "{} (\"{}\", {} members)",
                            &hex(&g.id)[..8],
                            g.state.title,
                            g.state.members.len()
                        )
                    })
                    .collect();
                Err(EngineError::Invalid(format!(
                    "\"{}\" matches {} groups: {}. Name one by the start of its id instead \
                     (as `sotto groups` shows it), e.g. {}",
                    query.trim(),
                    several.len(),
                    list.join(", "),
                    &hex(&several[0].id)[..8]
                )))
            }
        }
    }

    /// Finds a member of `state` by my contact name, their display name, or contact code.
    pub(super) fn find_member(&self, state: &GroupState, who: &str) -> Result<Uuid> {
        let candidates: Vec<(Uuid, String)> = state
            .members
            .iter()
            .map(|m| (m.account, m.name.clone()))
            .collect();
        self.find_in(&candidates, who, "member")
    }

    fn find_pending(&self, state: &GroupState, who: &str) -> Result<Uuid> {
        let candidates: Vec<(Uuid, String)> = state
            .pending
            .iter()
            .map(|p| (p.account, p.name.clone()))
            .collect();
        self.find_in(&candidates, who, "join request")
    }

    fn find_in(&self, candidates: &[(Uuid, String)], who: &str, what: &str) -> Result<Uuid> {
        let who = who.trim();
        if let Some(c) = self.find_contact(who)?
            && candidates.iter().any(|(a, _)| *a == c.account_id)
        {
            return Ok(c.account_id);
        }
        if let Ok(code) = who.parse::<ContactCode>()
            && candidates.iter().any(|(a, _)| *a == code.account_id())
        {
            return Ok(code.account_id());
        }
        let lower = who.to_lowercase();
        let named: Vec<Uuid> = candidates
            .iter()
            .filter(|(_, n)| n.to_lowercase() == lower)
            .map(|(a, _)| *a)
            .collect();
        match named.as_slice() {
            [one] => Ok(*one),
            [] => Err(EngineError::Invalid(format!(
                "no {what} called {who:?} in this group (see `sotto group members` or `sotto group requests`)"
            ))),
            _ => Err(EngineError::Invalid(format!(
                "several {what}s are called {who:?}; use their contact code"
            ))),
        }
    }

    fn me_member(&self) -> Member {
        Member {
            account: self.account.account_id,
            identity_key: b64_encode(&self.identity.identity_key().serialize()),
            name: self.account.name.clone(),
            role: Role::Member,
            joined_at_ms: now_ms(),
            ring_key: None,
        }
    }

    pub(super) fn my_role(&self, g: &LocalGroup) -> Option<Role> {
        if !g.active {
            return None;
        }
        g.state.role_of(self.account.account_id)
    }

    pub(super) fn require_active(&self, g: &LocalGroup) -> Result<()> {
        if self.my_role(g).is_none() {
            return Err(EngineError::Invalid(format!(
                "you are no longer a member of \"{}\"",
                g.state.title
            )));
        }
        Ok(())
    }

    // ----- relay I/O over the anonymous connection -------------------------

    /// A connection that never authenticates: group requests carry only the
    /// group's signatures, so the relay cannot link them to our account.
    async fn anon_call(&mut self, build: &dyn Fn(&[u8]) -> Result<Req>) -> Result<Resp> {
        for attempt in 0..2 {
            if self.anon.is_none() {
                self.anon = Some(self.connect().await?);
            }
            let Some(conn) = self.anon.as_ref() else {
                continue;
            };
            let exporter = conn.exporter()?;
            let answer = conn.request(build(&exporter)?).await;
            match answer {
                Err(TransportError::Connection(_)) if attempt == 0 => self.anon = None,
                other => return other.map_err(Into::into),
            }
        }
        Err(TransportError::Connection("the relay keeps closing the connection".into()).into())
    }

    async fn read_group(&mut self, id: [u8; 16], key: &[u8; 32]) -> Result<Fetched> {
        let keys = GroupKeys::derive(key).map_err(group_err)?;
        let answer = self
            .anon_call(&|exporter| {
                let t = group_transcript(GroupPurpose::Read, exporter, &id, &group_body(&[]));
                Ok(Req::GroupRead(relay::GroupRead {
                    group_id: id.to_vec(),
                    signature: sign_with(&keys.auth, &t)?,
                }))
            })
            .await;
        match answer {
            Ok(Resp::GroupState(s)) => Ok(Fetched::State {
                version: s.version,
                blob: Box::new(group::open_blob(&keys, &s.blob).map_err(group_err)?),
            }),
            Ok(_) => Err(TransportError::Unexpected.into()),
            Err(e)
                if matches!(
                    refused_code(&e),
                    Some(ErrorCode::Forbidden | ErrorCode::UnknownGroup)
                ) =>
            {
                Ok(Fetched::Forbidden)
            }
            Err(e) => Err(e),
        }
    }

    /// Brings `g` up to date with the relay: replays the changes we have not
    /// seen, refusing invalid ones. Returns the relay's version and the blob's
    /// change list, or None when our key no longer opens the group.
    pub(super) async fn refresh(
        &mut self,
        g: &mut LocalGroup,
    ) -> Result<Option<(u64, Vec<SignedChange>)>> {
        let Fetched::State { version, blob } = self.read_group(g.id, &g.key).await? else {
            if g.active {
                // Our key was rotated away without an update reaching us: removed.
                g.active = false;
                self.store.put_group(g)?;
            }
            return Ok(None);
        };
        self.adopt(g, &blob)?;
        Ok(Some((version, blob.changes.clone())))
    }

    /// Replays `blob`'s changes onto `g` (or takes the snapshot when we are too
    /// far behind for the kept changes to reach us), applies their effects, saves.
    fn adopt(&mut self, g: &mut LocalGroup, blob: &Blob) -> Result<()> {
        let r = replay(&g.state, &blob.changes);
        let gap = blob
            .changes
            .first()
            .is_some_and(|c| c.body.version > g.state.version + 1);
        let title = g.state.title.clone();
        for (version, why) in &r.refusals {
            self.notices.push(Notice::Group(format!(
                "ignored an invalid change (version {version}) to group \"{title}\": {why}"
            )));
        }
        let before = g.state.clone();
        if gap && r.state.version < blob.state.version && r.refusals.is_empty() {
            // Too far behind to check each step: trust the snapshot, as a new member does.
            g.state = blob.state.clone();
        } else {
            g.state = r.state;
        }
        self.join_notices(&before, &g.state, &r.effects, false);
        let me = self.account.account_id;
        {
            for op in &r.effects {
                match op {
                    Op::DeleteMessage { id, author } => {
                        if let Some(id) = hex_decode(id).and_then(|b| <[u8; 16]>::try_from(b).ok())
                        {
                            self.store.delete_message(*author, id)?;
                        }
                    }
                    Op::Remove(who) if *who == me => self.notices.push(Notice::Group(format!(
                        "you were removed from group \"{}\"",
                        g.state.title
                    ))),
                    _ => {}
                }
            }
        }
        g.active = g.state.member(me).is_some();
        self.store.put_group(g)?;
        Ok(())
    }

    fn signed_change(
        &self,
        state: &GroupState,
        version: u64,
        ops: Vec<Op>,
    ) -> Result<SignedChange> {
        let body = ChangeBody {
            group: state.id.clone(),
            version,
            parent: hex(&state.hash()),
            by: self.account.account_id,
            at_ms: now_ms(),
            ops,
        };
        SignedChange::sign(body, &self.identity, &mut rand::rng()).map_err(group_err)
    }

    /// Writes a change to a group by compare-and-swap. `make` derives the ops
    /// from the current state (again after each lost race); no ops = nothing
    /// to do. Rotates the group key when the change removes anyone.
    pub(super) async fn commit(
        &mut self,
        id: [u8; 16],
        make: &dyn Fn(&GroupState) -> Result<Vec<Op>>,
    ) -> Result<GroupState> {
        self.commit_with(id, make, true).await
    }

    async fn commit_with(
        &mut self,
        id: [u8; 16],
        make: &dyn Fn(&GroupState) -> Result<Vec<Op>>,
        check: bool,
    ) -> Result<GroupState> {
        let me = self.account.account_id;
        for _ in 0..COMMIT_ATTEMPTS {
            let mut g = self
                .store
                .group(id)?
                .ok_or_else(|| EngineError::Invalid("unknown group".into()))?;
            let Some((relay_version, changes)) = self.refresh(&mut g).await? else {
                return Err(EngineError::Invalid(format!(
                    "you are no longer a member of \"{}\" (or it was re-keyed and `sotto sync` \
                     has not fetched the new key yet)",
                    g.state.title
                )));
            };
            self.require_active(&g)?;
            let mut ops = make(&g.state)?;
            if ops.is_empty() {
                return Ok(g.state);
            }
            let leaving = ops.contains(&Op::Leave);
            // Publishing a ring key tells no one: members fetch the state
            // when a signature needs it (a fan-out per member who joins
            // would be quadratic in the group's size).
            let quiet = ops.iter().all(|op| matches!(op, Op::SetRingKey(_)));
            let version = relay_version + 1;
            let mut change = self.signed_change(&g.state, version, ops.clone())?;
            let (mut next, mut effects) = match group::apply_with_effects(&g.state, &change) {
                Ok(applied) => applied,
                Err(e) if check => return Err(group_err(e)),
                // Unchecked (a test's forged change): the relay takes it as is.
                Err(_) => (g.state.clone(), Vec::new()),
            };
            let rotate = !leaving && (next.rekey_needed || ops.contains(&Op::RotateKey));
            if next.rekey_needed && !leaving {
                ops.push(Op::RotateKey);
                change = self.signed_change(&g.state, version, ops)?;
                (next, effects) =
                    group::apply_with_effects(&g.state, &change).map_err(group_err)?;
            }
            let key: [u8; 32] = if rotate { rand::rng().random() } else { g.key };
            let mut blob = Blob {
                state: next.clone(),
                changes,
            };
            blob.changes.push(change);
            group::trim_changes(&mut blob);
            let old_keys = GroupKeys::derive(&g.key).map_err(group_err)?;
            let new_keys = GroupKeys::derive(&key).map_err(group_err)?;
            let sealed = group::seal_blob(&new_keys, &blob, &mut rand::rng()).map_err(group_err)?;
            let auth_key = new_keys.auth.public_key.serialize().to_vec();
            let link_key = match next.link_secret() {
                Some(secret) => LinkKeys::derive(&secret)
                    .map_err(group_err)?
                    .auth
                    .public_key
                    .serialize()
                    .to_vec(),
                None => Vec::new(),
            };
            let answer = self
                .anon_call(&|exporter| {
                    let body =
                        group_body(&[&relay_version.to_be_bytes(), &sealed, &auth_key, &link_key]);
                    let t = group_transcript(GroupPurpose::Write, exporter, &id, &body);
                    Ok(Req::GroupWrite(relay::GroupWrite {
                        group_id: id.to_vec(),
                        expected_version: relay_version,
                        blob: sealed.clone(),
                        auth_key: auth_key.clone(),
                        link_key: link_key.clone(),
                        signature: sign_with(&old_keys.auth, &t)?,
                    }))
                })
                .await;
            match answer {
                Ok(Resp::GroupWritten(_)) => {}
                Ok(_) => return Err(TransportError::Unexpected.into()),
                Err(e) if refused_code(&e) == Some(ErrorCode::Conflict) => continue,
                Err(e) => return Err(e),
            }
            let before = std::mem::replace(&mut g.state, next.clone());
            self.join_notices(&before, &next, &effects, true);
            if rotate {
                g.key = key;
                g.sender_key_sent_to.clear();
            }
            g.active = next.member(me).is_some();
            self.store.put_group(&g)?;
            if !quiet || rotate {
                self.announce(&g, &before).await?;
            }
            return Ok(next);
        }
        Err(EngineError::Invalid(
            "the group kept changing while we tried to update it; try again".into(),
        ))
    }

    /// Tells me about join requests in a group's changes: that a request
    /// arrived, that one has its vouches and waits for an admin, and who was
    /// admitted by which rule. Admins hear all of it (their apps act on
    /// requests); members of a vetted group hear of requests to vouch for.
    /// `mine`: the change is one my app just wrote, so what I did myself
    /// (approving, denying, vouching) is not repeated back to me.
    fn join_notices(
        &mut self,
        before: &GroupState,
        after: &GroupState,
        effects: &[Op],
        mine: bool,
    ) {
        let me = self.account.account_id;
        let Some(role) = after.role_of(me) else {
            return;
        };
        let admin = role.is_admin();
        let needed = after.settings.vouches_required as usize;
        let approval = after.settings.approval;
        let title = safe::line(&after.title);
        let group_arg = safe::shell_arg(&after.title);
        let name_of = |account: &Uuid| {
            before
                .pending
                .iter()
                .chain(&after.pending)
                .find(|p| p.account == *account)
                .map(|p| p.name.clone())
                .or_else(|| after.member(*account).map(|m| m.name.clone()))
                .unwrap_or_else(|| "someone".into())
        };
        let mut out = Vec::new();
        let mut ready = Vec::new();
        // Vouches earlier in these effects, for an admission in the same change.
        let mut vouched: Vec<Uuid> = Vec::new();
        for op in effects {
            if let Op::Vouch(account) = op {
                vouched.push(*account);
            }
            match op {
                Op::Request(p) if admin || needed > 0 => {
                    let (name, arg) = (safe::line(&p.name), safe::shell_arg(&p.name));
                    out.push(match (approval, needed) {
                        (true, 0) => format!(
                            "{title}: {name} asked to join and waits for an admin's approval: \
                             sotto group approve|deny {group_arg} {arg}"
                        ),
                        (true, n) => format!(
                            "{title}: {name} asked to join; they need {n} vouches from members, \
                             then an admin's approval (sotto group vouch {group_arg} {arg})"
                        ),
                        (false, 0) => format!("{title}: {name} asked to join through the link"),
                        (false, n) => format!(
                            "{title}: {name} asked to join; they are admitted once {n} members \
                             vouch (sotto group vouch {group_arg} {arg})"
                        ),
                    });
                }
                // One notice per request, however many vouches arrived at once.
                Op::Vouch(account)
                    if admin && approval && needed > 0 && !ready.contains(account) =>
                {
                    let had = before
                        .pending
                        .iter()
                        .find(|p| p.account == *account)
                        .map_or(0, |p| p.vouch_count(before));
                    let Some(p) = after.pending.iter().find(|p| p.account == *account) else {
                        continue;
                    };
                    let have = p.vouch_count(after);
                    if had < needed && have >= needed {
                        ready.push(*account);
                        out.push(format!(
                            "{title}: {} has {have} of {needed} vouches and waits for an \
                             admin's approval: sotto group approve {group_arg} {}",
                            safe::line(&p.name),
                            safe::shell_arg(&p.name)
                        ));
                    }
                }
                Op::Admit(account) if admin => {
                    let have = before
                        .pending
                        .iter()
                        .find(|p| p.account == *account)
                        .map_or(0, |p| p.vouch_count(before))
                        + vouched.iter().filter(|a| *a == account).count();
                    out.push(format!(
                        "{title}: admitted {} {}",
                        safe::line(&name_of(account)),
                        group::admission_rule(needed, have)
                    ));
                }
                Op::Resolve { account, approve } if admin && !mine => {
                    out.push(format!(
                        "{title}: an admin {} {}'s join request",
                        if *approve { "approved" } else { "denied" },
                        safe::line(&name_of(account))
                    ));
                }
                _ => {}
            }
        }
        self.notices.extend(out.into_iter().map(Notice::Group));
    }

    /// Every member's account but mine.
    pub(super) fn other_members(&self, state: &GroupState) -> Vec<Uuid> {
        let me = self.account.account_id;
        state
            .members
            .iter()
            .map(|m| m.account)
            .filter(|a| *a != me)
            .collect()
    }

    /// Tells every member of the new state (newcomers first) the key and
    /// version, and every removed member that they were removed.
    async fn announce(&mut self, g: &LocalGroup, before: &GroupState) -> Result<()> {
        let me = self.account.account_id;
        let mut recipients = self.other_members(&g.state);
        // Newcomers first: their update should land before other members'
        // first messages to them.
        recipients.sort_by_key(|a| before.member(*a).is_some());
        for account in recipients {
            let (id, body) = content(
                &self.account.name,
                content::content::Body::GroupUpdate(content::GroupUpdate {
                    group_id: g.id.to_vec(),
                    group_key: g.key.to_vec(),
                    version: g.state.version,
                }),
            );
            self.queue_control(id, account, &body)?;
        }
        for gone in before
            .members
            .iter()
            .filter(|m| m.account != me && g.state.member(m.account).is_none())
        {
            let (id, body) = content(
                &self.account.name,
                content::content::Body::GroupRemoved(content::GroupRemoved {
                    group_id: g.id.to_vec(),
                }),
            );
            self.queue_control(id, gone.account, &body)?;
        }
        self.store.flush().await?;
        if let Err(e) = self.drain_outbox().await {
            // The change is made; the outbox retries the announcements.
            self.notices.push(Notice::Group(format!(
                "group change saved; some members will be told later: {e}"
            )));
        }
        Ok(())
    }

    pub(super) fn queue_control(
        &self,
        id: [u8; 16],
        recipient: Uuid,
        body: &Content,
    ) -> Result<()> {
        self.store.outbox_push(&OutboxEntry {
            id,
            recipient,
            content: body.encode_to_vec(),
            created_at_ms: now_ms(),
            group: None,
            anonymous: false,
        })?;
        Ok(())
    }

    // ----- user actions ------------------------------------------------------

    /// Creates a group with me as owner.
    pub async fn group_create(&mut self, title: &str) -> Result<GroupInfo> {
        let title = self.check_field("a group title", title, safe::MAX_TITLE_CHARS, Lines::One)?;
        let id: [u8; 16] = rand::rng().random();
        let key: [u8; 32] = rand::rng().random();
        let start = genesis(&hex(&id));
        let change = self.signed_change(
            &start,
            1,
            vec![
                Op::Create {
                    title: title.trim().to_string(),
                    creator: Member {
                        ring_key: Some(hex(&self.ring_secret(&id).public().to_bytes())),
                        ..self.me_member()
                    },
                },
                // Disappearing messages on by default: a seized or lost phone
                // then holds a week of chat, not years (warnings keep their
                // own retention).
                Op::SetSettings(Settings {
                    disappearing_ms: DEFAULT_DISAPPEARING_MS,
                    ..Settings::default()
                }),
            ],
        )?;
        let state = apply(&start, &change).map_err(group_err)?;
        let keys = GroupKeys::derive(&key).map_err(group_err)?;
        let blob = Blob {
            state: state.clone(),
            changes: vec![change],
        };
        let sealed = group::seal_blob(&keys, &blob, &mut rand::rng()).map_err(group_err)?;
        let auth_key = keys.auth.public_key.serialize().to_vec();
        let answer = self
            .anon_call(&|exporter| {
                let body = group_body(&[&0u64.to_be_bytes(), &sealed, &auth_key, &[]]);
                let t = group_transcript(GroupPurpose::Write, exporter, &id, &body);
                Ok(Req::GroupWrite(relay::GroupWrite {
                    group_id: id.to_vec(),
                    expected_version: 0,
                    blob: sealed.clone(),
                    auth_key: auth_key.clone(),
                    link_key: Vec::new(),
                    signature: sign_with(&keys.auth, &t)?,
                }))
            })
            .await?;
        let Resp::GroupWritten(_) = answer else {
            return Err(TransportError::Unexpected.into());
        };
        let g = LocalGroup {
            id,
            key,
            state,
            sender_key_sent_to: Vec::new(),
            active: true,
        };
        self.store.put_group(&g)?;
        self.store.flush().await?;
        Ok(self.info(&g))
    }

    /// Adds contacts to a group (admins only).
    pub async fn group_add(&mut self, query: &str, names: &[String]) -> Result<GroupState> {
        let g = self.find_group(query)?;
        self.require_active(&g)?;
        let mut members = Vec::new();
        for name in names {
            let contact = self.contact(name)?;
            let identity = self
                .current_identity(contact.account_id, &contact.name)
                .await?;
            members.push(Member {
                account: contact.account_id,
                identity_key: b64_encode(&identity.serialize()),
                // The name I gave them: members see it until they post under their own.
                name: contact.name.clone(),
                role: Role::Member,
                joined_at_ms: now_ms(),
                ring_key: None,
            });
        }
        self.commit(g.id, &|state| {
            Ok(members
                .iter()
                .filter(|m| state.member(m.account).is_none())
                .cloned()
                .map(Op::Add)
                .collect())
        })
        .await
    }

    /// The identity key the relay holds for `peer`, refused if it differs from the one we trust.
    async fn current_identity(&mut self, peer: Uuid, name: &str) -> Result<IdentityKey> {
        let identity = self.fetch_identity(peer, name).await?;
        match self.store.identity_status(peer)? {
            Some(status) if status.trusted.as_ref() != Some(&identity) => {
                self.store.note_identity(peer, &identity)?;
                Err(EngineError::IdentityChanged(name.to_string()))
            }
            Some(_) => Ok(identity),
            None => {
                self.store.note_identity(peer, &identity)?;
                Ok(identity)
            }
        }
    }

    /// Removes a member (admins only); rotates the group key. Under quorum
    /// moderation, proposes the removal instead.
    pub async fn group_remove(&mut self, query: &str, who: &str) -> Result<Moderation> {
        let g = self.find_group(query)?;
        let target = self.find_member(&g.state, who)?;
        self.moderate(g.id, &|state| {
            Ok(state.member(target).map(|_| Op::Remove(target)))
        })
        .await
    }

    /// Commits the moderation action `make` derives from the current state
    /// (none = nothing to do), or under quorum moderation proposes it.
    async fn moderate(
        &mut self,
        id: [u8; 16],
        make: &dyn Fn(&GroupState) -> Result<Option<Op>>,
    ) -> Result<Moderation> {
        let proposal: [u8; 4] = rand::rng().random();
        let proposal = hex(&proposal);
        let state = self
            .commit(id, &|state| {
                Ok(match make(state)? {
                    None => vec![],
                    Some(op) if state.quorum_needed() > 1 && op.needs_quorum(state) => {
                        vec![Op::Propose {
                            id: proposal.clone(),
                            action: Box::new(op),
                        }]
                    }
                    Some(op) => vec![op],
                })
            })
            .await?;
        Ok(Moderation::of(state, &proposal))
    }

    /// Moderation actions waiting for the quorum, with their descriptions.
    pub async fn group_proposals(&mut self, query: &str) -> Result<Vec<ProposalInfo>> {
        let mut g = self.find_group(query)?;
        if g.active {
            self.refresh(&mut g).await?;
        }
        let needed = g.state.quorum_needed();
        let mut out = Vec::new();
        for p in &g.state.proposals {
            let message = match &p.action {
                Op::DeleteMessage { id, author } => Some(self.proposed_message(&g, id, *author)?),
                _ => None,
            };
            out.push(ProposalInfo {
                id: p.id.clone(),
                action: p.describe(&g.state),
                by: g
                    .state
                    .member(p.by)
                    .map_or_else(|| "a former admin".into(), |m| m.name.clone()),
                approvals: p.approval_count(&g.state),
                needed,
                at_ms: p.at_ms,
                message,
            });
        }
        Ok(out)
    }

    /// What a proposed deletion would remove, as this app has it, so the
    /// admins who must agree can judge it.
    fn proposed_message(
        &self,
        g: &LocalGroup,
        id_hex: &str,
        author: Uuid,
    ) -> Result<ProposedMessage> {
        let id = hex_decode(id_hex).and_then(|b| <[u8; 16]>::try_from(b).ok());
        let record = match id {
            Some(id) => self
                .store
                .group_messages(&g.id)?
                .into_iter()
                .find(|m| m.id == id && m.peer == author),
            None => None,
        };
        let warning = match id {
            Some(id) => self
                .store
                .warnings()?
                .into_iter()
                .find(|w| w.id == id && w.group == g.id),
            None => None,
        };
        Ok(ProposedMessage {
            id: id_hex.to_string(),
            author: record.as_ref().map(|m| m.sender_name.clone()),
            sent_at_ms: record.as_ref().map(|m| m.sent_at_ms),
            text: record.map(|m| m.text),
            warning: warning.map(|w| (w.subject, w.kind)),
        })
    }

    /// Approves a proposal (admins); returns the state after, in which the
    /// action is carried out if this was the last approval it needed.
    pub async fn group_agree(&mut self, query: &str, proposal: &str) -> Result<Moderation> {
        let g = self.find_group(query)?;
        let wanted = proposal.trim().to_lowercase();
        let action = std::cell::RefCell::new(None);
        let state = self
            .commit(g.id, &|state| {
                let Some(p) = state.proposals.iter().find(|p| p.id == wanted) else {
                    return Err(EngineError::Invalid(format!(
                        "no proposal {wanted:?} is waiting (it may have been carried out or \
                         withdrawn); see `sotto group proposals`"
                    )));
                };
                *action.borrow_mut() = Some(p.action.clone());
                Ok(vec![Op::Approve(wanted.clone())])
            })
            .await?;
        let carried_out = !state.proposals.iter().any(|p| p.id == wanted);
        // Our own change does not come back through `adopt`: act on a
        // deletion our approval carried out here.
        if carried_out
            && let Some(Op::DeleteMessage { id, author }) = action.into_inner()
            && let Some(id) = hex_decode(&id).and_then(|b| <[u8; 16]>::try_from(b).ok())
        {
            self.store.delete_message(author, id)?;
            self.store.flush().await?;
        }
        Ok(Moderation::of(state, &wanted))
    }

    /// Withdraws one's own proposal.
    pub async fn group_withdraw(&mut self, query: &str, proposal: &str) -> Result<()> {
        let g = self.find_group(query)?;
        let wanted = proposal.trim().to_lowercase();
        self.commit(g.id, &|state| {
            Ok(if state.proposals.iter().any(|p| p.id == wanted) {
                vec![Op::Withdraw(wanted.clone())]
            } else {
                vec![]
            })
        })
        .await?;
        Ok(())
    }

    /// Leaves a group.
    pub async fn group_leave(&mut self, query: &str) -> Result<()> {
        let g = self.find_group(query)?;
        self.require_active(&g)?;
        self.commit(g.id, &|_| Ok(vec![Op::Leave])).await?;
        Ok(())
    }

    /// Makes a member an admin (`admin = true`) or a plain member (proposed
    /// under quorum moderation).
    pub async fn group_set_role(
        &mut self,
        query: &str,
        who: &str,
        admin: bool,
    ) -> Result<Moderation> {
        let g = self.find_group(query)?;
        let target = self.find_member(&g.state, who)?;
        let role = if admin { Role::Admin } else { Role::Member };
        self.moderate(g.id, &|state| {
            Ok(match state.role_of(target) {
                Some(r) if r == role => None,
                _ => Some(Op::SetRole {
                    account: target,
                    role,
                }),
            })
        })
        .await
    }

    /// Changes the settings `change` names (proposed, under quorum
    /// moderation, when it changes the quorum).
    pub async fn group_settings(
        &mut self,
        query: &str,
        change: SettingsChange,
    ) -> Result<Moderation> {
        let g = self.find_group(query)?;
        self.require_active(&g)?;
        self.moderate(g.id, &|state| {
            let s = change.applied_to(state.settings);
            Ok((s != state.settings).then_some(Op::SetSettings(s)))
        })
        .await
    }

    /// The group's join link, creating one (or a new one with `reset`) as needed.
    pub async fn group_link(&mut self, query: &str, reset: bool) -> Result<String> {
        let g = self.find_group(query)?;
        self.require_active(&g)?;
        let fresh: [u8; 32] = rand::rng().random();
        let fresh_hex = hex(&fresh);
        let state = self
            .commit(g.id, &|state| {
                Ok(match (&state.link, reset) {
                    (Some(_), false) => vec![],
                    _ => vec![Op::SetLink(Some(fresh_hex.clone()))],
                })
            })
            .await?;
        let secret = state
            .link_secret()
            .ok_or_else(|| EngineError::Invalid("the group has no join link".into()))?;
        Ok(link_string(&g.id, &secret))
    }

    /// Asks to join through a link. An admin's app admits us (or files the
    /// request for approval) the next time it syncs.
    pub async fn group_join(&mut self, link: &str) -> Result<()> {
        let link = parse_link(link)?;
        if let Some(g) = self.store.group(link.id)?
            && g.active
        {
            return Err(EngineError::Invalid(format!(
                "you are already a member of \"{}\"",
                g.state.title
            )));
        }
        let keys = LinkKeys::derive(&link.secret).map_err(group_err)?;
        let me = self.me_member();
        let at_ms = now_ms();
        let signature = self
            .identity
            .private_key()
            .calculate_signature(
                &join_bytes(&link.id, me.account, &me.identity_key, &me.name, at_ms),
                &mut rand::rng(),
            )
            .map_err(crypto)?;
        let body = JoinRequestBody {
            account: me.account,
            identity_key: me.identity_key,
            name: me.name,
            at_ms,
            signature: b64_encode(&signature),
        };
        let plain = serde_json::to_vec(&body)
            .map_err(|_| EngineError::Invalid("cannot encode the request".into()))?;
        let sealed = keys.seal(&plain, &mut rand::rng());
        let answer = self
            .anon_call(&|exporter| {
                let t = group_transcript(
                    GroupPurpose::Join,
                    exporter,
                    &link.id,
                    &group_body(&[&sealed]),
                );
                Ok(Req::GroupJoinRequest(relay::GroupJoinRequest {
                    group_id: link.id.to_vec(),
                    request: sealed.clone(),
                    signature: sign_with(&keys.auth, &t)?,
                }))
            })
            .await;
        match answer {
            Ok(Resp::Done(_)) => {}
            Ok(_) => return Err(TransportError::Unexpected.into()),
            Err(e)
                if matches!(
                    refused_code(&e),
                    Some(ErrorCode::Forbidden | ErrorCode::UnknownGroup)
                ) =>
            {
                // A checksummed link that parsed was copied right, so the
                // relay refusing it means an admin reset or removed it; an
                // old link cannot tell a typo from a reset.
                return Err(EngineError::Invalid(if link.checked {
                    "this group link no longer works: an admin reset it or turned it off \
                     (or the group is gone). Ask an admin for the current one"
                        .into()
                } else {
                    "this group link does not work: it may have been copied wrongly, or an \
                     admin reset it; ask an admin for a new one"
                        .into()
                }));
            }
            Err(e) if refused_code(&e) == Some(ErrorCode::Quota) => {
                return Err(EngineError::Invalid(
                    "this group has too many unanswered join requests; try again later".into(),
                ));
            }
            Err(e) => return Err(e),
        }
        self.store.put_join(&PendingJoin {
            id: link.id,
            requested_at_ms: at_ms,
        })?;
        self.store.flush().await?;
        Ok(())
    }

    /// Reads join requests filed through the link and turns them into members
    /// (approval off) or pending requests (approval on). Admins only; returns
    /// how many were handled.
    async fn process_join_requests(&mut self, id: [u8; 16]) -> Result<usize> {
        let Some(g) = self.store.group(id)? else {
            return Ok(0);
        };
        let (Some(role), Some(secret)) = (self.my_role(&g), g.state.link_secret()) else {
            return Ok(0);
        };
        if !role.is_admin() {
            return Ok(0);
        }
        let keys = GroupKeys::derive(&g.key).map_err(group_err)?;
        let link = LinkKeys::derive(&secret).map_err(group_err)?;
        let answer = self
            .anon_call(&|exporter| {
                let t =
                    group_transcript(GroupPurpose::FetchRequests, exporter, &id, &group_body(&[]));
                Ok(Req::GroupFetchRequests(relay::GroupFetchRequests {
                    group_id: id.to_vec(),
                    signature: sign_with(&keys.auth, &t)?,
                }))
            })
            .await;
        let requests = match answer {
            Ok(Resp::GroupRequests(r)) => r.requests,
            Ok(_) => return Err(TransportError::Unexpected.into()),
            Err(e) if refused_code(&e) == Some(ErrorCode::Forbidden) => return Ok(0),
            Err(e) => return Err(e),
        };
        if requests.is_empty() {
            return Ok(0);
        }
        let mut handled = Vec::new();
        let mut valid: Vec<Pending> = Vec::new();
        for r in &requests {
            handled.push(r.id);
            // Requests made with an older link (before a reset) do not open: dropped.
            let Some(body) = link
                .open(&r.request)
                .and_then(|p| serde_json::from_slice::<JoinRequestBody>(&p).ok())
            else {
                continue;
            };
            let signed_ok = b64_decode(&body.identity_key)
                .and_then(|k| IdentityKey::decode(&k).ok())
                .zip(b64_decode(&body.signature))
                .is_some_and(|(key, sig)| {
                    key.public_key().verify_signature(
                        &join_bytes(
                            &id,
                            body.account,
                            &body.identity_key,
                            &body.name,
                            body.at_ms,
                        ),
                        &sig,
                    )
                });
            // A modified app can ask under any name: made safe and cut here
            // (every member's replay cleans it again).
            let name = safe::clean_field(&body.name, safe::MAX_NAME_CHARS, Lines::One);
            if !signed_ok || name.is_empty() || valid.iter().any(|p| p.account == body.account) {
                continue;
            }
            valid.push(Pending {
                account: body.account,
                identity_key: body.identity_key,
                name,
                requested_at_ms: r.received_at_ms,
                vouches: Vec::new(),
            });
        }
        if !valid.is_empty() {
            self.commit(id, &|state| {
                Ok(valid
                    .iter()
                    .filter(|p| {
                        state.member(p.account).is_none()
                            && !state.pending.iter().any(|q| q.account == p.account)
                    })
                    .flat_map(|p| {
                        // Every request is recorded, so the log shows it
                        // arrived; with approval off and no vetting the
                        // group's rule admits it in the same change.
                        let mut ops = vec![Op::Request(p.clone())];
                        if !state.settings.approval && state.settings.vouches_required == 0 {
                            ops.push(Op::Admit(p.account));
                        }
                        ops
                    })
                    .collect())
            })
            .await?;
        }
        // The key may have rotated in that commit: sign with the current one.
        let g = self
            .store
            .group(id)?
            .ok_or_else(|| EngineError::Invalid("unknown group".into()))?;
        let keys = GroupKeys::derive(&g.key).map_err(group_err)?;
        let ids: Vec<u8> = handled.iter().flat_map(|i| i.to_be_bytes()).collect();
        self.anon_call(&|exporter| {
            let t = group_transcript(
                GroupPurpose::DeleteRequests,
                exporter,
                &id,
                &group_body(&[&ids]),
            );
            Ok(Req::GroupDeleteRequests(relay::GroupDeleteRequests {
                group_id: id.to_vec(),
                ids: handled.clone(),
                signature: sign_with(&keys.auth, &t)?,
            }))
        })
        .await?;
        Ok(valid.len())
    }

    /// Pending join requests (after fetching new ones from the relay).
    pub async fn group_requests(&mut self, query: &str) -> Result<Vec<Pending>> {
        let g = self.find_group(query)?;
        self.require_active(&g)?;
        // Admins bring new requests in; members see those already recorded
        // (to vouch for them).
        if self.my_role(&g).is_some_and(Role::is_admin) {
            self.process_join_requests(g.id).await?;
        }
        let mut g = self.find_group(&hex(&g.id))?;
        self.refresh(&mut g).await?;
        Ok(g.state.pending)
    }

    /// Vouches for a pending join request (any member). With join approval
    /// off, when that brings it to the group's required number and I am an
    /// admin, it is admitted in the same change; otherwise an admin's app
    /// admits it on its next sync. With approval on, an admin approves it.
    pub async fn group_vouch(&mut self, query: &str, who: &str) -> Result<Vouched> {
        let g = self.find_group(query)?;
        self.require_active(&g)?;
        let mut g2 = g.clone();
        self.refresh(&mut g2).await?;
        let target = self.find_pending(&g2.state, who)?;
        let me = self.account.account_id;
        let admin = self.my_role(&g2).is_some_and(Role::is_admin);
        let state = self
            .commit(g.id, &|state| {
                let Some(p) = state.pending.iter().find(|p| p.account == target) else {
                    return Ok(vec![]);
                };
                if p.vouches.contains(&me) {
                    return Err(EngineError::Invalid(format!(
                        "you already vouched for {}",
                        p.name
                    )));
                }
                let mut ops = vec![Op::Vouch(target)];
                // With approval off, the vouch that meets the rule admits at
                // once; with approval on, vouching is not approving.
                if admin
                    && !state.settings.approval
                    && p.vouch_count(state) + 1 >= state.settings.vouches_required as usize
                {
                    ops.push(Op::Admit(target));
                }
                Ok(ops)
            })
            .await?;
        let waiting = state.pending.iter().find(|p| p.account == target);
        Ok(Vouched {
            have: waiting.map_or(0, |p| p.vouch_count(&state)),
            needed: state.settings.vouches_required as usize,
            approval: state.settings.approval,
            admitted: state.member(target).is_some(),
        })
    }

    /// Re-confirms my membership (groups with `--reconfirm`). Returns when
    /// the next re-confirmation is due.
    pub async fn group_reconfirm(&mut self, query: &str) -> Result<Option<u64>> {
        let g = self.find_group(query)?;
        self.require_active(&g)?;
        let state = self.commit(g.id, &|_| Ok(vec![Op::Reconfirm])).await?;
        Ok(state.reconfirm_due(self.account.account_id))
    }

    /// Removes members whose re-confirmation is overdue (admins' apps, on
    /// sync), then rotates the key as for any removal.
    pub(super) async fn remove_unconfirmed(&mut self, id: [u8; 16]) -> Result<()> {
        let Some(mut g) = self.store.group(id)? else {
            return Ok(());
        };
        self.refresh(&mut g).await?;
        let now = now_ms();
        let overdue = |state: &GroupState| -> Vec<Uuid> {
            state
                .members
                .iter()
                .filter(|m| state.reconfirm_due(m.account).is_some_and(|due| due < now))
                .map(|m| m.account)
                .collect()
        };
        if overdue(&g.state).is_empty() {
            return Ok(());
        }
        let me = self.account.account_id;
        let state = self
            .commit(id, &|state| {
                let quorum = state.quorum_needed() > 1;
                Ok(overdue(state)
                    .into_iter()
                    .filter(|a| *a != me)
                    .filter_map(|a| {
                        if !quorum {
                            return Some(Op::Remove(a));
                        }
                        // Under quorum moderation each admin's app finds the
                        // member overdue on its own clock before agreeing.
                        let remove = Op::Remove(a);
                        match state.proposals.iter().find(|p| p.action == remove) {
                            Some(p) if p.approvals.contains(&me) => None,
                            Some(p) => Some(Op::Approve(p.id.clone())),
                            None => Some(Op::Propose {
                                id: hex(&a.as_bytes()[..8]),
                                action: Box::new(remove),
                            }),
                        }
                    })
                    .collect())
            })
            .await?;
        if state.rekey_needed {
            self.rotate_if_needed(id).await?;
        }
        Ok(())
    }

    /// Rotates the group key if a removal or departure asked for it.
    async fn rotate_if_needed(&mut self, id: [u8; 16]) -> Result<()> {
        self.commit(id, &|state| {
            Ok(if state.rekey_needed {
                vec![Op::RotateKey]
            } else {
                vec![]
            })
        })
        .await?;
        Ok(())
    }

    /// Tells me about groups where my re-confirmation is due within two weeks.
    fn reconfirm_notices(&mut self) -> Result<()> {
        let me = self.account.account_id;
        let soon = now_ms() + 14 * 86_400_000;
        for g in self.store.groups()? {
            if !g.active {
                continue;
            }
            if let Some(due) = g.state.reconfirm_due(me)
                && due < soon
            {
                self.notices.push(Notice::Group(format!(
                    "re-confirm your membership of \"{}\" by {} or you will be removed: \
                     sotto group reconfirm {}",
                    g.state.title,
                    super::day_time(due),
                    safe::shell_arg(&g.state.title)
                )));
            }
        }
        Ok(())
    }

    /// Admits join requests that have gathered enough vouches, when join
    /// approval is off (admins' apps, on sync). With approval on they wait
    /// for an admin's `approve`; the refresh still tells admins which
    /// requests are ready ([`Engine::join_notices`]).
    pub(super) async fn admit_vouched(&mut self, id: [u8; 16]) -> Result<()> {
        let Some(mut g) = self.store.group(id)? else {
            return Ok(());
        };
        // Members' vouches are written by their apps: look at the relay's state.
        self.refresh(&mut g).await?;
        let ready = |state: &GroupState| -> Vec<Op> {
            let needed = state.settings.vouches_required as usize;
            if needed == 0 || state.settings.approval {
                return Vec::new();
            }
            state
                .pending
                .iter()
                .filter(|p| p.vouch_count(state) >= needed)
                .map(|p| Op::Admit(p.account))
                .collect()
        };
        if ready(&g.state).is_empty() {
            return Ok(());
        }
        self.commit(id, &|state| Ok(ready(state))).await?;
        Ok(())
    }

    /// Approves or denies a pending join request (admins only).
    pub async fn group_resolve(&mut self, query: &str, who: &str, approve: bool) -> Result<()> {
        let g = self.find_group(query)?;
        let mut g2 = g.clone();
        self.refresh(&mut g2).await?;
        let target = self.find_pending(&g2.state, who)?;
        self.commit(g.id, &|state| {
            Ok(if state.pending.iter().any(|p| p.account == target) {
                vec![Op::Resolve {
                    account: target,
                    approve,
                }]
            } else {
                vec![]
            })
        })
        .await?;
        Ok(())
    }

    /// Removes a group message for everyone: the author's own by a group
    /// message, anyone's by an admin through a logged change.
    pub async fn group_delete(&mut self, query: &str, message_id: &str) -> Result<Moderation> {
        let g = self.find_group(query)?;
        self.require_active(&g)?;
        let found = one_by_id_prefix(self.store.group_messages(&g.id)?, |m| m.id, message_id);
        let Some(target) = &found else {
            return Err(EngineError::Invalid(format!(
                "no single message in \"{}\" has an id starting {message_id:?}; \
                 see `sotto history {} --json` for ids",
                g.state.title, g.state.title
            )));
        };
        let me = self.account.account_id;
        // An anonymous post (kept under no author) is removed only by a
        // moderator: its author deleting it would show who they are.
        if target.direction == MessageDirection::Outgoing && !target.peer.is_nil() {
            let (id, body) = content(
                &self.account.name,
                content::content::Body::GroupDelete(content::GroupDelete {
                    group_id: g.id.to_vec(),
                    message_id: target.id.to_vec(),
                }),
            );
            self.store.delete_message(me, target.id)?;
            self.store.outbox_push(&self.group_entry(&g, id, &body))?;
            self.store.flush().await?;
            self.drain_outbox().await?;
            return Ok(Moderation::Done(Box::new(g.state)));
        }
        if !self.my_role(&g).is_some_and(Role::is_admin) {
            return Err(EngineError::Invalid(
                "only the author or an admin can delete a message for everyone".into(),
            ));
        }
        let op = Op::DeleteMessage {
            id: hex(&target.id),
            author: target.peer,
        };
        let done = self.moderate(g.id, &|_| Ok(Some(op.clone()))).await?;
        if matches!(done, Moderation::Done(_)) {
            self.store.delete_message(target.peer, target.id)?;
            self.store.flush().await?;
        }
        Ok(done)
    }

    /// Posts a text to a group; `Ok` only once the relay has it for every
    /// member (a queued message is an error that says it is saved). See
    /// [`Engine::group_send_outcome`] for the typed outcome.
    pub async fn group_send(&mut self, query: &str, text: &str) -> Result<ShownMessage> {
        self.group_send_outcome(query, text).await?.relayed()
    }

    /// Posts a text to a group. Returns once the relay has it for every
    /// member, or once it is clear it cannot get there now ([`super::Delivery::Queued`]).
    pub async fn group_send_outcome(&mut self, query: &str, text: &str) -> Result<Sent> {
        let g = self.find_group(query)?;
        let role = self.my_role(&g).ok_or_else(|| {
            EngineError::Invalid(format!(
                "you are no longer a member of \"{}\"",
                g.state.title
            ))
        })?;
        if g.state.settings.announcements_only && !role.is_admin() {
            return Err(EngineError::Invalid(format!(
                "\"{}\" is announcements-only: only admins can post. Nothing was sent",
                g.state.title
            )));
        }
        self.check_text("a message", text)?;
        let (id, body) = content(
            &self.account.name,
            content::content::Body::GroupText(content::GroupText {
                group_id: g.id.to_vec(),
                body: text.to_string(),
            }),
        );
        let me = self.account.account_id;
        let timer = g.state.settings.disappearing_ms;
        let record = MessageRecord {
            id,
            peer: me,
            direction: MessageDirection::Outgoing,
            sender_name: self.account.name.clone(),
            text: text.to_string(),
            sent_at_ms: body.sent_at_ms,
            received_at_ms: body.sent_at_ms,
            status: MessageStatus::Pending,
            group: Some(g.id.to_vec()),
            expires_at_ms: (timer > 0).then(|| body.sent_at_ms + timer),
        };
        self.send_stored(&record, &self.group_entry(&g, id, &body))
            .await
    }

    /// The outbox entry of a group message (sent to the members current at delivery).
    pub(super) fn group_entry(&self, g: &LocalGroup, id: [u8; 16], body: &Content) -> OutboxEntry {
        OutboxEntry {
            id,
            recipient: self.account.account_id,
            content: body.encode_to_vec(),
            created_at_ms: now_ms(),
            group: Some(g.id),
            anonymous: false,
        }
    }

    /// Makes sure we have a session with `m` that uses the identity key the group state names.
    /// Returns the session (multi-recipient encryption reads its registration id).
    async fn ensure_session(&mut self, m: &Member) -> Result<SessionRecord> {
        let address = address_of(m.account)?;
        let mut session = self.store.load_session(&address).await?;
        let usable = match &session {
            Some(s) => self.session_usable(s)?,
            None => false,
        };
        if !usable {
            let name = self.peer_name(m.account, &m.name)?;
            self.start_session(m.account, &name).await?;
            session = self.store.load_session(&address).await?;
        }
        let expected = m.identity().map_err(group_err)?;
        match session {
            Some(s)
                if s.remote_identity_key_bytes()?.as_deref() == Some(&expected.serialize()[..]) =>
            {
                Ok(s)
            }
            _ => Err(EngineError::IdentityChanged(
                self.peer_name(m.account, &m.name)?,
            )),
        }
    }

    /// Sends a queued group message: sender keys to members who lack ours,
    /// then one sealed-sender v2 envelope for everyone.
    pub(super) async fn deliver_group(&mut self, entry: &OutboxEntry, id: [u8; 16]) -> Result<()> {
        let Some(mut g) = self.store.group(id)? else {
            self.fail(entry)?;
            return Err(EngineError::Invalid(
                "that group no longer exists here".into(),
            ));
        };
        if self.my_role(&g).is_none() {
            self.fail(entry)?;
            return Err(EngineError::Invalid(format!(
                "you are no longer a member of \"{}\"",
                g.state.title
            )));
        }
        let me = self.account.account_id;
        let keys = GroupKeys::derive(&g.key).map_err(group_err)?;
        let my_address = address_of(me)?;
        let mut sender_keys = self.store.clone();
        // Creates our sender key for this distribution id on first use.
        let distribution = create_sender_key_distribution_message(
            &my_address,
            keys.distribution_id,
            &mut sender_keys,
            &mut rand::rng(),
        )
        .await?;
        let members: Vec<Member> = g
            .state
            .members
            .iter()
            .filter(|m| m.account != me)
            .cloned()
            .collect();
        let mut recipients = Vec::new();
        for m in &members {
            let session = match self.ensure_session(m).await {
                Ok(session) => session,
                Err(e) if is_offline(&e) => return Err(e),
                Err(e) => {
                    self.notices.push(Notice::Group(format!(
                        "not sending to {} in \"{}\": {e}",
                        self.peer_name(m.account, &m.name)?,
                        g.state.title
                    )));
                    continue;
                }
            };
            if !g.sender_key_sent_to.contains(&m.account) {
                let (sk_id, body) = content(
                    &self.account.name,
                    content::content::Body::SenderKey(content::SenderKey {
                        group_id: g.id.to_vec(),
                        distribution: distribution.serialized().to_vec(),
                    }),
                );
                let control = OutboxEntry {
                    id: sk_id,
                    recipient: m.account,
                    content: body.encode_to_vec(),
                    created_at_ms: now_ms(),
                    group: None,
                    anonymous: false,
                };
                // Durable at the relay before the group message, which it precedes in their mailbox.
                match self.deliver_direct(&control).await {
                    Ok(()) => {
                        g.sender_key_sent_to.push(m.account);
                        self.store.put_group(&g)?;
                    }
                    Err(e) if is_offline(&e) => return Err(e),
                    Err(e) => {
                        self.notices.push(Notice::Group(format!(
                            "not sending to {} in \"{}\": {e}",
                            self.peer_name(m.account, &m.name)?,
                            g.state.title
                        )));
                        continue;
                    }
                }
            }
            // Sending our sender key advanced this session's ratchet, but the
            // registration id the v2 envelope needs is unchanged.
            recipients.push((m.account, session));
        }
        let message = group_encrypt(
            &mut sender_keys,
            &my_address,
            keys.distribution_id,
            &entry.content,
            &mut rand::rng(),
        )
        .await?;
        self.log_sent(message.serialized(), entry, Some(g.id))?;
        let certificate = self.sender_certificate().await?;
        let usmc = UnidentifiedSenderMessageContent::new(
            CiphertextMessageType::SenderKey,
            certificate,
            message.serialized().to_vec(),
            ContentHint::Default,
            Some(g.id.to_vec()),
        )?;
        for _ in 0..3 {
            if recipients.is_empty() {
                break;
            }
            let addresses: Vec<ProtocolAddress> = recipients
                .iter()
                .map(|(a, _)| address_of(*a))
                .collect::<Result<_>>()?;
            let envelope = sealed_sender_multi_recipient_encrypt(
                &addresses.iter().collect::<Vec<_>>(),
                &recipients.iter().map(|(_, s)| s).collect::<Vec<_>>(),
                std::iter::empty::<ServiceId>(),
                &usmc,
                &self.store,
                &mut rand::rng(),
            )
            .await?;
            let conn = self.connection().await?;
            let answer = conn
                .request(Req::SendMulti(relay::SendMulti {
                    envelope,
                    ttl_ms: relay_ttl(&g.state.settings, &entry.content),
                }))
                .await;
            match answer {
                Ok(Resp::SentMulti(_)) => {
                    recipients.clear();
                    break;
                }
                Ok(_) => return Err(TransportError::Unexpected.into()),
                Err(TransportError::Refused {
                    code: code @ (ErrorCode::StaleDevice | ErrorCode::UnknownRecipient),
                    accounts,
                    ..
                }) => {
                    for raw in accounts {
                        let Ok(account) = Uuid::from_slice(&raw) else {
                            continue;
                        };
                        if code == ErrorCode::StaleDevice {
                            // They re-registered: a new session (which re-checks their key) and a
                            // fresh copy of our sender key.
                            self.store.delete_session(&address_of(account)?)?;
                            g.sender_key_sent_to.retain(|a| *a != account);
                            self.store.put_group(&g)?;
                        }
                        // Said, not silent: this message goes out without them.
                        let name = match g.state.members.iter().find(|m| m.account == account) {
                            Some(m) => self.peer_name(account, &m.name)?,
                            None => self.peer_name(account, "")?,
                        };
                        self.notices.push(Notice::Group(format!(
                            "not sent to {name} in \"{}\": {}",
                            g.state.title,
                            if code == ErrorCode::StaleDevice {
                                "their identity key changed (they reset it); compare the new \
                                 safety number with them"
                            } else {
                                "the relay no longer has their account"
                            }
                        )));
                        recipients.retain(|(a, _)| *a != account);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !recipients.is_empty() {
            return Err(EngineError::Invalid(
                "the relay keeps refusing the group message; try again later".into(),
            ));
        }
        self.settle(entry, MessageStatus::Sent)?;
        self.store.flush().await?;
        Ok(())
    }

    // ----- receiving ---------------------------------------------------------

    /// Opens a sealed envelope of any kind: 1:1 (v1) or group (v2, sender key).
    /// Returns the sender and the plaintext.
    pub(super) async fn unseal(
        &mut self,
        envelope: &relay::Envelope,
    ) -> std::result::Result<(Uuid, Vec<u8>), SignalProtocolError> {
        // Sealed to our current key, or else to a key we had before
        // `identity reset` (sent before the peer learned the new one).
        let (usmc, earlier) = match sealed_sender_decrypt_to_usmc(&envelope.envelope, &self.store)
            .await
        {
            Ok(usmc) => (usmc, None),
            Err(first) => {
                let mut opened = None;
                for view in self.earlier_identities() {
                    if let Ok(usmc) = sealed_sender_decrypt_to_usmc(&envelope.envelope, &view).await
                    {
                        opened = Some((usmc, Some(view)));
                        break;
                    }
                }
                opened.ok_or(first)?
            }
        };
        let sender = usmc.sender()?;
        // Checked at the time the relay received it, so a message that waited
        // in the mailbox still opens after the certificate expired.
        if !sender.validate(
            &self.trust_root,
            Timestamp::from_epoch_millis(envelope.received_at_ms),
        )? {
            return Err(SignalProtocolError::InvalidSealedSenderMessage(
                "the sender certificate is not from our relay".into(),
            ));
        }
        let sender_uuid = sender.sender_uuid()?.to_string();
        let device = sender.sender_device_id()?;
        let account = Uuid::parse_str(&sender_uuid).map_err(|_| {
            SignalProtocolError::InvalidSealedSenderMessage("sender is not an account".into())
        })?;
        if account == self.account.account_id && device == device_id().unwrap_or(device) {
            return Err(SignalProtocolError::SealedSenderSelfSend);
        }
        let address = ProtocolAddress::new(sender_uuid, device);
        let mut sessions = self.store.clone();
        let mut current = self.store.clone();
        let mut earlier = earlier;
        // A PreKey message sealed to an earlier key was built on it too.
        let identities: &mut dyn IdentityKeyStore = match earlier.as_mut() {
            Some(view) => view,
            None => &mut current,
        };
        // What a retry request names if this does not decrypt.
        let hash: [u8; 32] = Sha256::digest(usmc.contents()?).into();
        let decrypted = async {
            Ok(match usmc.msg_type()? {
                CiphertextMessageType::Whisper => {
                    message_decrypt_signal(
                        &SignalMessage::try_from(usmc.contents()?)?,
                        &address,
                        &mut sessions,
                        identities,
                        &mut rand::rng(),
                    )
                    .await?
                }
                CiphertextMessageType::PreKey => {
                    let mut pre_keys = self.store.clone();
                    let signed = self.store.clone();
                    let mut kyber = self.store.clone();
                    message_decrypt_prekey(
                        &PreKeySignalMessage::try_from(usmc.contents()?)?,
                        &address,
                        &mut sessions,
                        identities,
                        &mut pre_keys,
                        &signed,
                        &mut kyber,
                        &mut rand::rng(),
                    )
                    .await?
                }
                CiphertextMessageType::SenderKey => {
                    let mut sender_keys = self.store.clone();
                    group_decrypt(usmc.contents()?, &mut sender_keys, &address).await?
                }
                other => {
                    return Err(SignalProtocolError::InvalidMessage(
                        other,
                        "unexpected message type",
                    ));
                }
            })
        }
        .await;
        match decrypted {
            Ok(plain) => Ok((account, plain)),
            // A replay, or our own store failing: nothing to ask the sender.
            Err(
                e @ (SignalProtocolError::DuplicatedMessage(..)
                | SignalProtocolError::ApplicationCallbackError(..)),
            ) => Err(e),
            Err(e) => {
                self.retry_for = Some((account, hash));
                Err(e)
            }
        }
    }

    /// Handles the group kinds of content. Returns a record to show for group texts.
    pub(super) async fn receive_group_content(
        &mut self,
        sender: Uuid,
        content: &Content,
        body: &content::content::Body,
    ) -> Result<Option<MessageRecord>> {
        use content::content::Body;
        match body {
            // Handled before group content (`open_envelope`).
            Body::RetryRequest(_) => Ok(None),
            Body::GroupText(t) => self.on_group_text(sender, content, t).await,
            Body::Warning(w) => self.on_warning(sender, content, w).await,
            Body::Anonymous(a) => self.on_anonymous(Some(sender), content, a).await,
            Body::Submission(a) => {
                self.on_submission(sender, a).await?;
                Ok(None)
            }
            Body::GroupDelete(d) => {
                // The record key includes the author: one can only delete one's own.
                if let Ok(id) = <[u8; 16]>::try_from(d.message_id.as_slice())
                    && let Some(m) = self.store.message(sender, id)?
                    && m.group.as_deref() == Some(d.group_id.as_slice())
                {
                    self.store.delete_message(sender, id)?;
                }
                Ok(None)
            }
            Body::SenderKey(sk) => {
                match SenderKeyDistributionMessage::try_from(sk.distribution.as_slice()) {
                    Ok(skdm) => {
                        let mut store = self.store.clone();
                        process_sender_key_distribution_message(
                            &address_of(sender)?,
                            &skdm,
                            &mut store,
                        )
                        .await?;
                    }
                    Err(_) => self.notices.push(Notice::Group(
                        "a member sent a damaged group key; their next message may not open".into(),
                    )),
                }
                Ok(None)
            }
            Body::GroupUpdate(u) => {
                self.on_group_update(sender, u).await?;
                Ok(None)
            }
            Body::GroupRemoved(r) => {
                if let Ok(id) = <[u8; 16]>::try_from(r.group_id.as_slice())
                    && let Some(mut g) = self.store.group(id)?
                    && g.active
                    && g.state.role_of(sender).is_some_and(Role::is_admin)
                {
                    self.refresh(&mut g).await?;
                    if !g.active {
                        self.notices.push(Notice::Group(format!(
                            "you were removed from group \"{}\"",
                            g.state.title
                        )));
                    }
                }
                Ok(None)
            }
            Body::Text(_) => Ok(None),
        }
    }

    async fn on_group_update(&mut self, sender: Uuid, u: &content::GroupUpdate) -> Result<()> {
        let (Ok(id), Ok(key)) = (
            <[u8; 16]>::try_from(u.group_id.as_slice()),
            <[u8; 32]>::try_from(u.group_key.as_slice()),
        ) else {
            return Ok(());
        };
        let existing = self.store.group(id)?;
        if let Some(g) = &existing
            && g.key == key
            && g.state.version >= u.version
        {
            return Ok(());
        }
        let fetched = self.read_group(id, &key).await?;
        let Fetched::State { blob, .. } = fetched else {
            // An older key than the relay's: a later update brings the new one.
            return Ok(());
        };
        let me = self.account.account_id;
        let mut g = match existing {
            Some(g) => g,
            None => {
                // New to us: we take the snapshot on the word of the member who
                // added us, who must be in it (as must we).
                if blob.state.member(sender).is_none() || blob.state.member(me).is_none() {
                    return Ok(());
                }
                self.store.remove_join(id)?;
                self.notices.push(Notice::Group(format!(
                    "you are now a member of group \"{}\"",
                    blob.state.title
                )));
                LocalGroup {
                    id,
                    key,
                    state: blob.state.clone(),
                    sender_key_sent_to: Vec::new(),
                    active: true,
                }
            }
        };
        if g.key != key {
            // A new key: a new distribution id, so our sender key goes out afresh.
            g.key = key;
            g.sender_key_sent_to.clear();
        }
        let was_active = g.active;
        self.adopt(&mut g, &blob)?;
        if was_active && !g.active {
            self.notices.push(Notice::Group(format!(
                "you are no longer a member of group \"{}\"",
                g.state.title
            )));
        }
        Ok(())
    }

    /// Whether a post by `sender` to `group_id` is let in: the sender must
    /// be a current member (an admin in an announcements-only group). Gives
    /// the name to show and the group's settings; `None` drops the post (with
    /// a notice). An unknown group is let in with default settings: the update
    /// adding us is still on its way, and the sender key it came with shows
    /// the sender meant it for us.
    pub(super) async fn admit_group_post(
        &mut self,
        sender: Uuid,
        content: &Content,
        group_id: &[u8],
    ) -> Result<Option<Admitted>> {
        let (Ok(id), Ok(group_id)) = (
            <[u8; 16]>::try_from(content.id.as_slice()),
            <[u8; 16]>::try_from(group_id),
        ) else {
            return Ok(None);
        };
        let name = safe::clean_field(&content.sender_name, safe::MAX_NAME_CHARS, Lines::One);
        let Some(mut g) = self.store.group(group_id)? else {
            return Ok(Some(Admitted {
                id,
                group_id,
                name,
                settings: Settings::default(),
            }));
        };
        if !g.active {
            return Ok(None);
        }
        if g.state.member(sender).is_none() {
            // Perhaps they joined after our last update: look again.
            self.refresh(&mut g).await?;
        }
        let Some(member) = g.state.member(sender) else {
            self.notices.push(Notice::Group(format!(
                "dropped a message to \"{}\" from someone who is not a member",
                g.state.title
            )));
            return Ok(None);
        };
        if g.state.settings.announcements_only && !member.role.is_admin() {
            self.notices.push(Notice::Group(format!(
                "dropped a post by a non-admin in announcements-only group \"{}\"",
                g.state.title
            )));
            return Ok(None);
        }
        Ok(Some(Admitted {
            id,
            group_id,
            name: member.name.clone(),
            settings: g.state.settings,
        }))
    }

    async fn on_group_text(
        &mut self,
        sender: Uuid,
        content: &Content,
        t: &content::GroupText,
    ) -> Result<Option<MessageRecord>> {
        let Some(Admitted {
            id,
            group_id,
            name,
            settings,
        }) = self.admit_group_post(sender, content, &t.group_id).await?
        else {
            return Ok(None);
        };
        let timer = settings.disappearing_ms;
        // Unknown group: the update adding us is still on its way; the sender
        // key it came with shows the sender meant it for us.
        let received = now_ms();
        // The timer runs from when it was sent (never later than we got it),
        // so every member's copy goes at about the same moment.
        let expires_at_ms = (timer > 0).then(|| content.sent_at_ms.min(received) + timer);
        if expires_at_ms.is_some_and(|t| t <= received) {
            return Ok(None);
        }
        let record = MessageRecord {
            id,
            peer: sender,
            direction: MessageDirection::Incoming,
            sender_name: name,
            text: safe::clean_field(&t.body, MAX_TEXT_BYTES, Lines::Many),
            sent_at_ms: content.sent_at_ms,
            received_at_ms: received,
            status: MessageStatus::Received,
            group: Some(group_id.to_vec()),
            expires_at_ms,
        };
        Ok(self.store.insert_message(&record)?.then_some(record))
    }

    /// After a sync: admins rotate keys after departures and let link joiners
    /// in; everyone deletes messages whose timer ran out.
    pub(super) async fn group_housekeeping(&mut self) -> Result<()> {
        self.store.purge_expired(now_ms())?;
        self.reconfirm_notices()?;
        self.publish_ring_keys().await?;
        for g in self.store.groups()? {
            if !self.my_role(&g).is_some_and(Role::is_admin) {
                continue;
            }
            if g.state.rekey_needed {
                self.rotate_if_needed(g.id).await?;
            }
            if g.state.link.is_some() {
                self.process_join_requests(g.id).await?;
            }
            if g.state.settings.vouches_required > 0 {
                self.admit_vouched(g.id).await?;
            }
            let expired = |state: &GroupState| -> Vec<Op> {
                let now = now_ms();
                state
                    .proposals
                    .iter()
                    .filter(|p| p.expired_at(now))
                    .map(|p| Op::Withdraw(p.id.clone()))
                    .collect()
            };
            if !expired(&g.state).is_empty() {
                // Expired proposals go, so they can be made afresh.
                self.commit(g.id, &|state| Ok(expired(state))).await?;
            }
            if g.state.settings.reconfirm_ms > 0 {
                self.remove_unconfirmed(g.id).await?;
            }
        }
        self.store.flush().await?;
        Ok(())
    }

    // ----- views -----------------------------------------------------------------

    fn info(&self, g: &LocalGroup) -> GroupInfo {
        GroupInfo {
            id: hex(&g.id),
            title: g.state.title.clone(),
            role: self.my_role(g),
            members: g.state.members.len(),
            settings: g.state.settings,
            pending: g.state.pending.len(),
            waiting: false,
        }
    }

    /// My groups, then join requests still waiting.
    pub fn groups(&self) -> Result<Vec<GroupInfo>> {
        let mut out: Vec<GroupInfo> = self.store.groups()?.iter().map(|g| self.info(g)).collect();
        out.sort_by_key(|g| g.title.to_lowercase());
        for j in self.store.joins()? {
            if !out.iter().any(|g| g.id == hex(&j.id)) {
                out.push(GroupInfo {
                    id: hex(&j.id),
                    title: String::new(),
                    role: None,
                    members: 0,
                    settings: Settings::default(),
                    pending: 0,
                    waiting: true,
                });
            }
        }
        Ok(out)
    }

    /// A group's members (refreshed from the relay when it is reachable).
    pub async fn group_members(&mut self, query: &str) -> Result<Vec<MemberInfo>> {
        let mut g = self.find_group(query)?;
        if g.active
            && let Err(e) = self.refresh(&mut g).await
            && !is_offline(&e)
        {
            return Err(e);
        }
        let me = self.account.account_id;
        Ok(g.state
            .members
            .iter()
            .map(|m| MemberInfo {
                name: match self.store.contact_by_account(m.account).ok().flatten() {
                    Some(c) => c.name,
                    None if m.account == me => self.account.name.clone(),
                    None => m.name.clone(),
                },
                code: ContactCode::from_account_id(m.account).to_string(),
                role: m.role,
                me: m.account == me,
            })
            .collect())
    }

    /// The moderation log (refreshed from the relay when it is reachable).
    pub async fn group_log(&mut self, query: &str) -> Result<Vec<group::LogEntry>> {
        let mut g = self.find_group(query)?;
        if g.active
            && let Err(e) = self.refresh(&mut g).await
            && !is_offline(&e)
        {
            return Err(e);
        }
        Ok(g.state.log)
    }

    /// A group's messages, oldest first.
    pub fn group_history(&self, query: &str) -> Result<Vec<ShownMessage>> {
        let g = self.find_group(query)?;
        self.store.purge_expired(now_ms())?;
        Ok(self
            .store
            .group_messages(&g.id)?
            .iter()
            .map(|m| self.show(m))
            .collect())
    }

    /// The group id and title a query names, for the CLI.
    pub fn group_title(&self, query: &str) -> Result<(String, String)> {
        let g = self.find_group(query)?;
        Ok((hex(&g.id), g.state.title))
    }

    /// Writes ops to a group **without** the role checks every client applies
    /// when it receives them: what a modified client could do with the group
    /// key. Only for tests that prove the other members refuse such changes.
    /// The group's join link as this app holds it (`None` when the group
    /// has none), without asking the relay: for the app's group page, which
    /// must not create a link just by being looked at.
    pub fn group_link_here(&self, query: &str) -> Result<Option<String>> {
        let g = self.find_group(query)?;
        Ok(g.state.link_secret().map(|s| link_string(&g.id, &s)))
    }

    /// How many admins must agree to a removal, a role change or a deletion
    /// in the group now (1: quorum moderation is off), as this app knows it.
    pub fn group_quorum_needed(&self, query: &str) -> Result<usize> {
        Ok(self.find_group(query)?.state.quorum_needed())
    }

    #[doc(hidden)]
    pub async fn danger_write_unchecked(&mut self, query: &str, ops: Vec<Op>) -> Result<()> {
        let g = self.find_group(query)?;
        self.commit_with(g.id, &|_| Ok(ops.clone()), false).await?;
        Ok(())
    }
}

/// What a moderation command did.
#[derive(Debug)]
pub enum Moderation {
    /// Carried out; the state after.
    Done(Box<GroupState>),
    /// Proposed (or approved) under quorum moderation and still waiting.
    Proposed {
        /// The proposal's id.
        id: String,
        /// Approvals so far.
        have: usize,
        /// Approvals needed.
        needed: usize,
    },
}

impl Moderation {
    /// Where proposal `id` stands in `state`: still waiting, or carried out
    /// (or never needed).
    fn of(state: GroupState, id: &str) -> Moderation {
        match state.proposals.iter().find(|p| p.id == id) {
            Some(p) => Moderation::Proposed {
                id: id.to_string(),
                have: p.approval_count(&state),
                needed: state.quorum_needed(),
            },
            None => Moderation::Done(Box::new(state)),
        }
    }
}

/// A proposal waiting for the quorum, as `sotto group proposals` shows it.
#[derive(Debug, Clone)]
pub struct ProposalInfo {
    /// Its id.
    pub id: String,
    /// What it would do ("remove Bob").
    pub action: String,
    /// Who proposed it.
    pub by: String,
    /// Approvals from current admins.
    pub approvals: usize,
    /// Approvals needed.
    pub needed: usize,
    /// When it was proposed.
    pub at_ms: u64,
    /// For a deletion: the message it would remove, as this app has it.
    pub message: Option<ProposedMessage>,
}

/// The message a proposed deletion would remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposedMessage {
    /// Its id, hex.
    pub id: String,
    /// Its author as this app shows them; `None` when this app does not have it.
    pub author: Option<String>,
    /// When it was sent; `None` when this app does not have it.
    pub sent_at_ms: Option<u64>,
    /// Its text; `None` when this app does not have the message (it
    /// disappeared, was deleted, or arrived before I joined).
    pub text: Option<String>,
    /// For a warning: who it is about and its kind.
    pub warning: Option<(String, String)>,
}

/// Settings to change; `None` leaves one as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct SettingsChange {
    /// Only admins may post.
    pub announcements_only: Option<bool>,
    /// Link joins wait for approval.
    pub approval: Option<bool>,
    /// Disappearing timer, ms (0 = off).
    pub disappearing_ms: Option<u64>,
    /// Warning retention, ms (0 = until deleted).
    pub warning_retention_ms: Option<u64>,
    /// Vouches a join request needs (0 = off).
    pub vouches_required: Option<u32>,
    /// Re-confirmation period, ms (0 = off).
    pub reconfirm_ms: Option<u64>,
    /// Admins who must agree to moderation actions (0 or 1 = off).
    pub quorum: Option<u32>,
    /// Anonymous posting.
    pub anonymous_posts: Option<AnonymousPosts>,
}

impl SettingsChange {
    fn applied_to(self, mut s: Settings) -> Settings {
        if let Some(v) = self.announcements_only {
            s.announcements_only = v;
        }
        if let Some(v) = self.approval {
            s.approval = v;
        }
        if let Some(v) = self.disappearing_ms {
            s.disappearing_ms = v;
        }
        if let Some(v) = self.warning_retention_ms {
            s.warning_retention_ms = v;
        }
        if let Some(v) = self.vouches_required {
            s.vouches_required = v;
        }
        if let Some(v) = self.reconfirm_ms {
            s.reconfirm_ms = v;
        }
        if let Some(v) = self.quorum {
            s.quorum = v;
        }
        if let Some(v) = self.anonymous_posts {
            s.anonymous_posts = v;
        }
        s
    }
}

/// A group post let in by [`Engine::admit_group_post`].
pub(super) struct Admitted {
    /// The message id.
    pub(super) id: [u8; 16],
    /// The group.
    pub(super) group_id: [u8; 16],
    /// The sender's name as the group knows it.
    pub(super) name: String,
    /// The group's settings (defaults for a group we do not know yet).
    pub(super) settings: Settings,
}

/// The one item whose hex id starts with `prefix` (at least 4 characters),
/// if exactly one does.
pub(super) fn one_by_id_prefix<T>(
    items: impl IntoIterator<Item = T>,
    id: impl Fn(&T) -> [u8; 16],
    prefix: &str,
) -> Option<T> {
    let wanted = prefix.trim().to_lowercase();
    if wanted.len() < 4 {
        return None;
    }
    let mut found = items
        .into_iter()
        .filter(|item| hex(&id(item)).starts_with(&wanted));
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// Disappearing-message timer of a new group: 7 days.
pub(crate) const DEFAULT_DISAPPEARING_MS: u64 = 7 * 86_400_000;

/// How long the relay may keep an undelivered group message: a warning
/// follows the warning retention, anything else the disappearing timer
/// (0 = the relay's own limit).
fn relay_ttl(settings: &Settings, content: &[u8]) -> u64 {
    let is_warning = Content::decode(content)
        .ok()
        .is_some_and(|c| matches!(c.body, Some(content::content::Body::Warning(_))));
    if is_warning {
        settings.warning_retention_ms
    } else {
        settings.disappearing_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(e: EngineError) -> String {
        e.to_string()
    }

    /// Issue 12, item 7: a link with a typo in its secret was reported as
    /// "reset or turned off". The checksum tells a damaged link apart.
    #[test]
    fn a_mistyped_group_link_is_damaged_not_reset() {
        let (id, secret) = ([0x5a; 16], [0xc3; 32]);
        let link = link_string(&id, &secret);
        let parsed = parse_link(&link).expect("parses");
        assert_eq!(
            (parsed.id, parsed.secret, parsed.checked),
            (id, secret, true)
        );
        // Every single-character change to the id or the secret is caught.
        let start = link.find("id=").expect("id") + 3;
        let mut caught = 0;
        let mut tried = 0;
        for (i, c) in link.char_indices().skip(start) {
            if !c.is_ascii_hexdigit() {
                continue;
            }
            for typo in ['0', '7', 'a', 'F'] {
                if typo.eq_ignore_ascii_case(&c) {
                    continue;
                }
                let mut bad = link.clone();
                bad.replace_range(i..i + 1, &typo.to_string());
                tried += 1;
                if parse_link(&bad).is_err_and(|e| message(e).contains("damaged")) {
                    caught += 1;
                }
            }
        }
        // A checksum of one bit per letter misses a typo only by chance.
        assert!(caught * 100 >= tried * 99, "{caught} of {tried}");
        // Cut short, or with a character added: damaged.
        for bad in [&link[..link.len() - 1], &format!("{link}0")] {
            let err = message(parse_link(bad).err().expect("refused"));
            assert!(err.contains("damaged"), "{err}");
        }
        // Lower-cased (as made before the checksum): accepted, unchecked.
        let old = parse_link(&link.to_lowercase()).expect("old link");
        assert!(!old.checked);
        assert_eq!((old.id, old.secret), (id, secret));
        let err = message(parse_link("https://example.org").err().expect("refused"));
        assert!(err.contains("not a group link"), "{err}");
    }
}
