//! Group state: who is in a group, with which role, under which settings,
//! and the signed chain of changes that got it there.
//!
//! This module is pure: no I/O, no store, no relay. The engine
//! (`groups.rs`) moves these values between the relay and the store.
//!
//! The model, and what each part protects against:
//! - A group has a random 16-byte id and a 32-byte **group key** known only to
//!   members. From the key we derive the state encryption key, the relay
//!   **auth key** (a Curve25519 key pair; the relay holds only its public half
//!   and serves the group's blob to whoever signs with it), and the sender-key
//!   **distribution id**. Rotating the key after a removal therefore cuts the
//!   removed member off from the state *and* forces every remaining member
//!   onto a fresh sender key that the removed member never receives.
//! - The state is changed only by [`SignedChange`]s: a list of [`Op`]s, the
//!   hash of the state it applies to, and the author's identity-key signature.
//!   Every client replays the chain from the state it already trusts and
//!   applies only changes whose author held the role the ops need
//!   ([`apply`]), so a member who forges "promote me" with a modified client
//!   is ignored by everyone else, whatever the relay stores.
//! - The blob on the relay is `{state, recent changes}`, encrypted under the
//!   group key and padded to a size bucket ([`seal_blob`]) so its length does
//!   not reveal the member count.
//! - The moderation log is *derived* from the ops by [`apply`], never written
//!   by hand, so it cannot misdescribe what an admin did.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use libsignal_protocol::{IdentityKey, IdentityKeyPair, KeyPair, PrivateKey};
use rand::{CryptoRng, Rng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Size buckets the encrypted state is padded to (plaintext bytes).
pub const STATE_BUCKETS: [usize; 4] = [4 * 1024, 16 * 1024, 64 * 1024, 256 * 1024];

/// Changes kept in the blob for members who are a few versions behind.
pub const KEPT_CHANGES: usize = 32;

/// Moderation log entries kept in the state.
pub const KEPT_LOG: usize = 300;

/// How long a proposal can gather approvals (the approver's clock against
/// the proposer's): a stale "remove X" must not pass months later, when a
/// second admin turns.
pub const PROPOSAL_TTL_MS: u64 = 7 * 86_400_000;

/// Longest group title, in characters.
pub const MAX_TITLE: usize = crate::safe::MAX_TITLE_CHARS;

const NONCE_LEN: usize = 24;

type HmacSha256 = Hmac<Sha256>;

/// Why a change or blob was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The change's author lacked the role, or the op makes no sense here.
    #[error("{0}")]
    Refused(String),
    /// The blob or change failed authentication or decoding.
    #[error("the group state is damaged or not encrypted under this group key")]
    Damaged,
    /// The state no longer fits the largest size bucket.
    #[error("the group state is too large (too many members or settings)")]
    TooLarge,
}

fn refused<T>(why: impl Into<String>) -> Result<T, GroupError> {
    Err(GroupError::Refused(why.into()))
}

/// A member's role. Owners are admins who cannot be removed or demoted by others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Can post (unless announcements-only).
    Member,
    /// Can change the group and moderate.
    Admin,
    /// The creator: an admin nobody else can remove or demote.
    Owner,
}

impl Role {
    /// Whether this role may moderate.
    pub fn is_admin(self) -> bool {
        self >= Role::Admin
    }

    /// The word the CLI shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }
}

/// One member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Account id.
    pub account: Uuid,
    /// Serialized libsignal identity key, base64. Sessions with the member
    /// must match it; changes they sign are checked against it.
    pub identity_key: String,
    /// Display name the member chose.
    pub name: String,
    /// Role.
    pub role: Role,
    /// When they joined (ms since the epoch, the author's clock).
    pub joined_at_ms: u64,
    /// The member's ring-signature public key for this group (hex), which
    /// they publish themselves ([`Op::SetRingKey`]); anonymous posts and
    /// corroborations are signed over the ring of these keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_key: Option<String>,
}

impl Member {
    /// The member's identity key.
    pub fn identity(&self) -> Result<IdentityKey, GroupError> {
        let bytes = b64_decode(&self.identity_key).ok_or(GroupError::Damaged)?;
        IdentityKey::decode(&bytes).map_err(|_| GroupError::Damaged)
    }
}

/// Someone who asked to join through the link while approval is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Account id.
    pub account: Uuid,
    /// Serialized identity key, base64.
    pub identity_key: String,
    /// Display name they chose.
    pub name: String,
    /// When the request was filed.
    pub requested_at_ms: u64,
    /// Members who vouched for them (groups with `vouches_required`).
    #[serde(default)]
    pub vouches: Vec<Uuid>,
}

impl Pending {
    /// Vouches from accounts that are still members.
    pub fn vouch_count(&self, state: &GroupState) -> usize {
        self.vouches
            .iter()
            .filter(|v| state.member(**v).is_some())
            .count()
    }
}

/// Group settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Only admins may post.
    pub announcements_only: bool,
    /// Link joins wait for an admin's approval.
    pub approval: bool,
    /// Messages disappear this long after they are sent; 0 = never.
    pub disappearing_ms: u64,
    /// Warnings are kept this long after they are sent, whatever the
    /// disappearing timer says (they are the point of the group); 0 = until
    /// deleted. Missing in groups made before warnings existed: 0.
    #[serde(default)]
    pub warning_retention_ms: u64,
    /// Vetting: a join request is admitted only once this many current
    /// members have vouched for it (0 = off). Missing in older groups: 0.
    #[serde(default)]
    pub vouches_required: u32,
    /// Members (not the owner) must re-confirm their membership within this
    /// long, or admins' apps remove them (0 = off).
    #[serde(default)]
    pub reconfirm_ms: u64,
    /// Quorum moderation: removing a member, deleting another member's
    /// post, changing roles or this setting need this many admins to
    /// approve (0 or 1 = off; capped at the number of admins).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub quorum: u32,
    /// Whether and how members may post without their name.
    #[serde(default, skip_serializing_if = "AnonymousPosts::is_off")]
    pub anonymous_posts: AnonymousPosts,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A group's anonymous-posting setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnonymousPosts {
    /// Every post names its author.
    #[default]
    Off,
    /// A member's anonymous post goes privately to the moderators; one of
    /// them approves it and it appears as "a member (approved by a
    /// moderator)". The moderators know the author, no one else does.
    ViaModerator,
    /// A post appears as "a member": a ring signature proves a current
    /// member wrote it without saying which, moderators included.
    On,
}

impl AnonymousPosts {
    fn is_off(&self) -> bool {
        *self == AnonymousPosts::Off
    }

    /// "off", "via-moderator", "on".
    pub fn as_str(self) -> &'static str {
        match self {
            AnonymousPosts::Off => "off",
            AnonymousPosts::ViaModerator => "via-moderator",
            AnonymousPosts::On => "on",
        }
    }
}

impl std::str::FromStr for AnonymousPosts {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(AnonymousPosts::Off),
            "via-moderator" => Ok(AnonymousPosts::ViaModerator),
            "on" => Ok(AnonymousPosts::On),
            other => Err(format!(
                "{other:?} is not an anonymous-posts setting: use off, via-moderator or on"
            )),
        }
    }
}

/// One line of the moderation log, visible to every member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When (the author's clock, ms since the epoch).
    pub at_ms: u64,
    /// Who did it.
    pub by: Uuid,
    /// Their display name at the time.
    pub by_name: String,
    /// What they did, in words, derived from the op.
    pub action: String,
}

/// The group state every member holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    /// Group id, hex.
    pub id: String,
    /// Version; equals the relay's version of the blob holding it.
    pub version: u64,
    /// Title.
    pub title: String,
    /// Members, in the order they joined.
    pub members: Vec<Member>,
    /// Settings.
    pub settings: Settings,
    /// Join-link secret (hex), when a link exists.
    pub link: Option<String>,
    /// Link requests waiting for approval.
    pub pending: Vec<Pending>,
    /// True after a removal or departure until the group key is rotated.
    pub rekey_needed: bool,
    /// Moderation log, oldest first (the last [`KEPT_LOG`]).
    pub log: Vec<LogEntry>,
    /// When each member last re-confirmed their membership (groups with
    /// `reconfirm_ms`); a member not listed counts from when they joined.
    #[serde(default)]
    pub confirmations: Vec<Confirmation>,
    /// Moderation actions waiting for the quorum (groups with `quorum` > 1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proposals: Vec<Proposal>,
}

/// A moderation action proposed under quorum moderation, and the admins who
/// approved it so far (each by a change they signed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Short id (hex) the proposer chose.
    pub id: String,
    /// What would be done.
    pub action: Op,
    /// Who proposed it (their approval counts).
    pub by: Uuid,
    /// When (the proposer's clock).
    pub at_ms: u64,
    /// Admins who approved, the proposer first.
    pub approvals: Vec<Uuid>,
}

impl Proposal {
    /// Whether it can no longer be approved at `at_ms` (an approver's clock).
    pub fn expired_at(&self, at_ms: u64) -> bool {
        at_ms > self.at_ms.saturating_add(PROPOSAL_TTL_MS)
    }

    /// What it would do, in words ("remove Bob").
    pub fn describe(&self, state: &GroupState) -> String {
        describe_action(state, &self.action)
    }

    /// Approvals from accounts that are admins now.
    pub fn approval_count(&self, state: &GroupState) -> usize {
        self.approvals
            .iter()
            .filter(|a| state.role_of(**a).is_some_and(Role::is_admin))
            .count()
    }
}

/// A member's latest re-confirmation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// Whose.
    pub account: Uuid,
    /// When (their clock, ms since the epoch).
    pub at_ms: u64,
}

impl GroupState {
    /// The member with this account id.
    pub fn member(&self, account: Uuid) -> Option<&Member> {
        self.members.iter().find(|m| m.account == account)
    }

    /// When `account` must re-confirm by (ms since the epoch), in a group
    /// with `reconfirm_ms`; `None` for the owner, non-members, or no setting.
    pub fn reconfirm_due(&self, account: Uuid) -> Option<u64> {
        let every = self.settings.reconfirm_ms;
        let m = self.member(account)?;
        if every == 0 || m.role == Role::Owner {
            return None;
        }
        let last = self
            .confirmations
            .iter()
            .find(|c| c.account == account)
            .map_or(m.joined_at_ms, |c| c.at_ms.max(m.joined_at_ms));
        Some(last.saturating_add(every))
    }

    /// The role of `account`, if a member.
    pub fn role_of(&self, account: Uuid) -> Option<Role> {
        self.member(account).map(|m| m.role)
    }

    /// SHA-256 of the canonical encoding; changes name their parent by it.
    pub fn hash(&self) -> [u8; 32] {
        // serde_json writes struct fields in declaration order and we use no
        // maps, so equal states encode (and hash) alike on every client.
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        Sha256::digest(bytes).into()
    }

    /// Approvals a moderation action needs now: the quorum setting, capped
    /// at the number of admins so admins leaving cannot freeze the group;
    /// 1 when quorum moderation is off.
    pub fn quorum_needed(&self) -> usize {
        let admins = self.members.iter().filter(|m| m.role.is_admin()).count();
        (self.settings.quorum as usize).min(admins).max(1)
    }

    /// Ring-signature keys of the current members who published one, in
    /// member order, with their accounts.
    pub fn ring(&self) -> Vec<(Uuid, [u8; 32])> {
        self.members
            .iter()
            .filter_map(|m| {
                let key = m.ring_key.as_deref().and_then(hex_decode)?;
                Some((m.account, <[u8; 32]>::try_from(key).ok()?))
            })
            .collect()
    }

    /// The join-link secret, decoded.
    pub fn link_secret(&self) -> Option<[u8; 32]> {
        self.link
            .as_deref()
            .and_then(hex_decode)
            .and_then(|v| v.try_into().ok())
    }
}

/// A single edit to the group state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// First op of the first change: the author becomes the owner.
    Create {
        /// Title.
        title: String,
        /// The creator (role is forced to owner).
        creator: Member,
    },
    /// Rename.
    SetTitle(String),
    /// Add a member (role is forced to member).
    Add(Member),
    /// Remove a member (not the owner).
    Remove(Uuid),
    /// The author leaves.
    Leave,
    /// Make a member an admin or a plain member.
    SetRole {
        /// Whom.
        account: Uuid,
        /// Admin or member.
        role: Role,
    },
    /// Replace the settings.
    SetSettings(Settings),
    /// Set (or clear) the join-link secret, hex.
    SetLink(Option<String>),
    /// Record a link request for approval.
    Request(Pending),
    /// The author, a member, vouches for a pending join request.
    Vouch(Uuid),
    /// The author re-confirms their membership.
    Reconfirm,
    /// An admin's app admits a pending request by the group's rule, with no
    /// admin deciding: join approval is off and the request has the vouches
    /// the group requires (none without vetting). Every member's replay
    /// refuses it while approval is on, so an app cannot turn vouches (or a
    /// link request) into an admission the admins never gave.
    Admit(Uuid),
    /// An admin approves (adds as member) or denies a pending request.
    Resolve {
        /// Whom.
        account: Uuid,
        /// True to admit.
        approve: bool,
    },
    /// Remove another member's message for everyone.
    DeleteMessage {
        /// Message id, hex.
        id: String,
        /// Its author.
        author: Uuid,
    },
    /// The group key was replaced (after removals and departures).
    RotateKey,
    /// The author publishes their ring-signature public key (hex) for this group.
    SetRingKey(String),
    /// Under quorum moderation, an admin proposes a removal, a deletion of
    /// another member's post, a role change or a quorum change; it takes
    /// effect once enough admins approve.
    Propose {
        /// Short id (hex, 4 to 16 bytes).
        id: String,
        /// The action.
        action: Box<Op>,
    },
    /// An admin approves a proposal (the last approval needed carries it out).
    Approve(String),
    /// The proposer withdraws their proposal.
    Withdraw(String),
}

impl Op {
    /// Whether this op needs the quorum in a group with quorum moderation.
    pub fn needs_quorum(&self, s: &GroupState) -> bool {
        match self {
            Op::Remove(_) | Op::DeleteMessage { .. } | Op::SetRole { .. } => true,
            Op::SetSettings(new) => new.quorum != s.settings.quorum,
            _ => false,
        }
    }
}

/// The signed body of a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeBody {
    /// Group id, hex.
    pub group: String,
    /// The version this change produces.
    pub version: u64,
    /// Hash (hex) of the state it applies to; all zeros for creation.
    pub parent: String,
    /// Author.
    pub by: Uuid,
    /// Author's clock.
    pub at_ms: u64,
    /// What changes.
    pub ops: Vec<Op>,
}

/// A change and its author's identity-key signature over the body's encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedChange {
    /// What was signed.
    pub body: ChangeBody,
    /// Signature, base64.
    pub signature: String,
}

impl SignedChange {
    /// Signs `body` with the author's identity key.
    pub fn sign<R: Rng + CryptoRng>(
        body: ChangeBody,
        identity: &IdentityKeyPair,
        rng: &mut R,
    ) -> Result<SignedChange, GroupError> {
        let bytes = change_bytes(&body);
        let signature = identity
            .private_key()
            .calculate_signature(&bytes, rng)
            .map_err(|_| GroupError::Refused("cannot sign the change".into()))?;
        Ok(SignedChange {
            body,
            signature: b64_encode(&signature),
        })
    }

    fn verify(&self, key: &IdentityKey) -> bool {
        let Some(sig) = b64_decode(&self.signature) else {
            return false;
        };
        key.public_key()
            .verify_signature(&change_bytes(&self.body), &sig)
    }
}

fn change_bytes(body: &ChangeBody) -> Vec<u8> {
    let mut out = b"sotto-group-change-v1".to_vec();
    out.extend(serde_json::to_vec(body).unwrap_or_default());
    out
}

/// What the relay stores, once decrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob {
    /// The state after the last change, as its author computed it.
    pub state: GroupState,
    /// The last few changes, oldest first, for members catching up.
    pub changes: Vec<SignedChange>,
}

/// The empty state a group's first change applies to.
pub fn genesis(id: &str) -> GroupState {
    GroupState {
        id: id.to_string(),
        version: 0,
        title: String::new(),
        members: Vec::new(),
        settings: Settings::default(),
        link: None,
        pending: Vec::new(),
        rekey_needed: false,
        log: Vec::new(),
        confirmations: Vec::new(),
        proposals: Vec::new(),
    }
}

/// Applies a signed change to `state`, checking the chain, the signature and
/// the author's role for every op. Returns the new state; `state` is untouched
/// on refusal.
pub fn apply(state: &GroupState, change: &SignedChange) -> Result<GroupState, GroupError> {
    apply_with_effects(state, change).map(|(state, _)| state)
}

/// [`apply`], also returning the ops that took effect: the change's own ops
/// and the actions of proposals its approvals carried out (the engine acts
/// on deletions and removals among them).
pub fn apply_with_effects(
    state: &GroupState,
    change: &SignedChange,
) -> Result<(GroupState, Vec<Op>), GroupError> {
    let mut effects = Vec::new();
    let next = apply_inner(state, change, &mut effects)?;
    Ok((next, effects))
}

fn apply_inner(
    state: &GroupState,
    change: &SignedChange,
    effects: &mut Vec<Op>,
) -> Result<GroupState, GroupError> {
    let body = &change.body;
    if body.group != state.id {
        return refused("the change is for another group");
    }
    // Versions only grow, but may skip: an admin who refused a forged change
    // builds the next one on the last valid state, at the relay's next version.
    if body.version <= state.version || body.parent != hex(&state.hash()) {
        return refused("the change does not follow the state it claims to change");
    }
    let creating = matches!(body.ops.first(), Some(Op::Create { .. }));
    // The author's key: from the state for members, from the Create op for the creator.
    let author_key = match (creating, state.member(body.by)) {
        (true, _) => match body.ops.first() {
            Some(Op::Create { creator, .. })
                if creator.account == body.by && state.version == 0 =>
            {
                creator.identity()?
            }
            _ => return refused("only an empty group can be created"),
        },
        (false, Some(m)) => m.identity()?,
        (false, None) => return refused("the change's author is not a member"),
    };
    if !change.verify(&author_key) {
        return refused("the change's signature does not verify");
    }
    let mut next = state.clone();
    next.version = body.version;
    for (i, op) in body.ops.iter().enumerate() {
        let actor = Actor {
            by: body.by,
            role: next.role_of(body.by),
            at_ms: body.at_ms,
            creating: i == 0 && creating,
            quorum_met: false,
        };
        let action = apply_op(&mut next, &actor, op, effects)?;
        if action.is_empty() {
            // Bookkeeping that is not moderation (a published ring key).
            continue;
        }
        let by_name = next
            .member(body.by)
            .or_else(|| state.member(body.by))
            .map(|m| m.name.clone())
            .unwrap_or_default();
        next.log.push(LogEntry {
            at_ms: body.at_ms,
            by: body.by,
            by_name,
            action,
        });
    }
    if next.log.len() > KEPT_LOG {
        let excess = next.log.len() - KEPT_LOG;
        next.log.drain(..excess);
    }
    Ok(next)
}

fn name_of(state: &GroupState, account: Uuid) -> String {
    state
        .member(account)
        .map(|m| m.name.clone())
        .or_else(|| {
            state
                .pending
                .iter()
                .find(|p| p.account == account)
                .map(|p| p.name.clone())
        })
        .unwrap_or_else(|| "someone".into())
}

fn require_admin(role: Option<Role>, what: &str) -> Result<(), GroupError> {
    match role {
        Some(r) if r.is_admin() => Ok(()),
        Some(_) => refused(format!("only admins can {what}")),
        None => refused("the change's author is not a member"),
    }
}

/// Who is applying an op, and on what authority.
#[derive(Clone, Copy)]
struct Actor {
    by: Uuid,
    role: Option<Role>,
    at_ms: u64,
    /// The first op of a group's first change.
    creating: bool,
    /// Carried out by the last approval a quorum needed.
    quorum_met: bool,
}

/// Applies one op; returns its log line and records what took effect.
fn apply_op(
    s: &mut GroupState,
    actor: &Actor,
    op: &Op,
    effects: &mut Vec<Op>,
) -> Result<String, GroupError> {
    let Actor {
        by,
        role,
        at_ms,
        creating,
        ..
    } = *actor;
    // Quorum moderation holds in every member's replay: a single admin's
    // removal, deletion or role change (or a modified app's) is refused.
    let needed = s.quorum_needed();
    if needed > 1 && !actor.quorum_met && op.needs_quorum(s) {
        require_admin(role, "do that")?;
        return refused(format!(
            "this group needs {needed} admins to agree to that: it must be proposed and approved"
        ));
    }
    if !matches!(op, Op::Propose { .. } | Op::Approve(_) | Op::Withdraw(_)) {
        effects.push(op.clone());
    }
    Ok(match op {
        Op::Create { title, creator } => {
            if !creating {
                return refused("a group is created only once");
            }
            let title = clean_title(title)?;
            s.title = title.clone();
            let mut owner = creator.clone();
            owner.role = Role::Owner;
            owner.name = clean_name(&owner.name);
            if owner
                .ring_key
                .as_deref()
                .and_then(hex_decode)
                .is_some_and(|b| sotto_lsag::PublicKey::from_bytes(&b).is_err())
            {
                return refused("bad ring key");
            }
            s.members.push(owner);
            format!("created the group \"{title}\"")
        }
        Op::SetTitle(title) => {
            require_admin(role, "rename the group")?;
            let title = clean_title(title)?;
            s.title = title.clone();
            format!("renamed the group to \"{title}\"")
        }
        Op::Add(m) => {
            require_admin(role, "add members")?;
            let mut m = m.clone();
            m.name = clean_name(&m.name);
            if s.member(m.account).is_some() {
                return refused(format!("{} is already a member", m.name));
            }
            m.identity()?;
            // A vetted group's join request cannot be side-stepped by adding
            // the requester directly.
            let needed = s.settings.vouches_required as usize;
            if let Some(p) = s.pending.iter().find(|p| p.account == m.account)
                && p.vouch_count(s) < needed
            {
                return refused(format!(
                    "{} asked to join and needs {needed} vouches from members first",
                    p.name
                ));
            }
            m.role = Role::Member;
            m.joined_at_ms = at_ms;
            // Members publish their own ring key: one an admin chose could
            // be the admin's second key.
            m.ring_key = None;
            s.pending.retain(|p| p.account != m.account);
            let line = format!("added {}", m.name);
            s.members.push(m);
            line
        }
        Op::Remove(who) => {
            require_admin(role, "remove members")?;
            if *who == by {
                return refused("use leave to leave the group");
            }
            match s.role_of(*who) {
                None => return refused("not a member"),
                Some(Role::Owner) => return refused("the owner cannot be removed"),
                Some(_) => {}
            }
            let line = format!("removed {}", name_of(s, *who));
            s.members.retain(|m| m.account != *who);
            s.confirmations.retain(|c| c.account != *who);
            s.rekey_needed = true;
            line
        }
        Op::Leave => {
            let Some(leaving) = role else {
                return refused("not a member");
            };
            s.members.retain(|m| m.account != by);
            s.confirmations.retain(|c| c.account != by);
            if leaving == Role::Owner {
                // Ownership passes to the longest-serving admin, else member.
                let heir = s
                    .members
                    .iter()
                    .position(|m| m.role == Role::Admin)
                    .or(if s.members.is_empty() { None } else { Some(0) });
                if let Some(i) = heir {
                    s.members[i].role = Role::Owner;
                }
            }
            s.rekey_needed = true;
            "left the group".into()
        }
        Op::SetRole { account, role: new } => {
            require_admin(role, "change roles")?;
            if *new == Role::Owner {
                return refused("ownership cannot be given by a role change");
            }
            let name = name_of(s, *account);
            let Some(target) = s.members.iter_mut().find(|m| m.account == *account) else {
                return refused("not a member");
            };
            if target.role == Role::Owner {
                return refused("the owner's role cannot be changed");
            }
            if target.role == *new {
                return refused(format!("{name} is already {}", new.as_str()));
            }
            target.role = *new;
            match new {
                Role::Admin => format!("made {name} an admin"),
                _ => format!("made {name} a member (no longer an admin)"),
            }
        }
        Op::SetSettings(new) => {
            require_admin(role, "change settings")?;
            let old = s.settings;
            s.settings = *new;
            describe_settings(&old, new)
        }
        Op::SetLink(link) => {
            require_admin(role, "manage the join link")?;
            if let Some(l) = link
                && hex_decode(l).is_none_or(|b| b.len() != 32)
            {
                return refused("bad link secret");
            }
            let line = match (&s.link, link) {
                (_, None) => "turned the join link off",
                (None, Some(_)) => "created a join link",
                (Some(_), Some(_)) => "reset the join link (the old one no longer works)",
            };
            s.link = link.clone();
            line.into()
        }
        Op::Request(p) => {
            require_admin(role, "record join requests")?;
            if s.member(p.account).is_some() || s.pending.iter().any(|q| q.account == p.account) {
                return refused("already a member or already waiting");
            }
            b64_decode(&p.identity_key)
                .and_then(|b| IdentityKey::decode(&b).ok())
                .ok_or(GroupError::Damaged)?;
            let mut p = p.clone();
            p.name = clean_name(&p.name);
            let line = format!("received a join request from {}", p.name);
            s.pending.push(p);
            line
        }
        Op::Vouch(account) => {
            if role.is_none() {
                return refused("only members can vouch");
            }
            let needed = s.settings.vouches_required;
            let state = s.clone();
            let Some(p) = s.pending.iter_mut().find(|p| p.account == *account) else {
                return refused("no such join request");
            };
            if p.vouches.contains(&by) {
                return refused(format!("already vouched for {}", p.name));
            }
            p.vouches.push(by);
            let have = p.vouch_count(&state);
            if needed > 0 {
                format!("vouched for {} ({have} of {needed})", p.name)
            } else {
                format!("vouched for {}", p.name)
            }
        }
        Op::Reconfirm => {
            if role.is_none() {
                return refused("only members can re-confirm");
            }
            s.confirmations.retain(|c| c.account != by);
            s.confirmations.push(Confirmation { account: by, at_ms });
            "re-confirmed their membership".into()
        }
        Op::Resolve { account, approve } => {
            require_admin(role, "approve or deny join requests")?;
            let Some(i) = s.pending.iter().position(|p| p.account == *account) else {
                return refused("no such join request");
            };
            // Vetting holds against admins too: every member's app refuses
            // an admission with fewer vouches than the group requires.
            let needed = s.settings.vouches_required as usize;
            let have = s.pending[i].vouch_count(s);
            if *approve && have < needed {
                return refused(format!(
                    "{} needs {needed} vouches from members and has {have}",
                    s.pending[i].name
                ));
            }
            let p = s.pending.remove(i);
            if *approve {
                // The log text is part of the hashed state: every app must
                // write the same words, so it stays as it always was.
                let line = format!("approved {}'s join request", p.name);
                admit(s, p, at_ms);
                line
            } else {
                format!("denied {}'s join request", p.name)
            }
        }
        Op::Admit(account) => {
            require_admin(role, "admit join requests")?;
            let Some(i) = s.pending.iter().position(|p| p.account == *account) else {
                return refused("no such join request");
            };
            let name = s.pending[i].name.clone();
            // Join approval means a person decides: no app admits on its own.
            if s.settings.approval {
                return refused(format!(
                    "join approval is on: an admin must approve {name}'s request"
                ));
            }
            let needed = s.settings.vouches_required as usize;
            let have = s.pending[i].vouch_count(s);
            if have < needed {
                return refused(format!(
                    "{name} needs {needed} vouches from members and has {have}"
                ));
            }
            let p = s.pending.remove(i);
            admit(s, p, at_ms);
            format!("admitted {name} {}", admission_rule(needed, have))
        }
        Op::DeleteMessage { id, author } => {
            require_admin(role, "delete other members' messages")?;
            format!("deleted a message by {} ({id})", name_of(s, *author))
        }
        Op::RotateKey => {
            if role.is_none() {
                return refused("not a member");
            }
            s.rekey_needed = false;
            "rotated the group key".into()
        }
        Op::SetRingKey(key) => {
            if role.is_none() {
                return refused("only members publish ring keys");
            }
            if hex_decode(key).is_none_or(|b| sotto_lsag::PublicKey::from_bytes(&b).is_err()) {
                return refused("bad ring key");
            }
            // One key per membership: a second key would give its owner a
            // second linking tag, so they could corroborate twice.
            if s.members.iter().any(|m| m.ring_key.as_ref() == Some(key)) {
                return refused("that ring key is already in use");
            }
            let Some(m) = s.members.iter_mut().find(|m| m.account == by) else {
                return refused("not a member");
            };
            if m.ring_key.is_some() {
                return refused("a member's ring key is set once");
            }
            m.ring_key = Some(key.clone());
            // Not a moderation action: kept out of the log.
            String::new()
        }
        Op::Propose { id, action } => {
            require_admin(role, "propose moderation actions")?;
            if needed < 2 {
                return refused("this group does not use quorum moderation: act directly");
            }
            if !action.needs_quorum(s) {
                return refused(
                    "only removals, deletions of others' messages, role and quorum changes \
                     are proposed",
                );
            }
            if hex_decode(id).is_none_or(|b| !(4..=16).contains(&b.len()))
                || s.proposals.iter().any(|p| p.id == *id)
            {
                return refused("bad or repeated proposal id");
            }
            // Refuse now what could not be carried out, so no hopeless
            // proposal waits for approvals.
            let mut trial = s.clone();
            let authorised = Actor {
                quorum_met: true,
                ..*actor
            };
            apply_op(&mut trial, &authorised, action, &mut Vec::new())?;
            let what = describe_action(s, action);
            s.proposals.push(Proposal {
                id: id.clone(),
                action: (**action).clone(),
                by,
                at_ms,
                approvals: vec![by],
            });
            format!("proposed to {what} (proposal {id}; 1 of {needed} approvals)")
        }
        Op::Approve(id) => {
            require_admin(role, "approve moderation actions")?;
            let Some(i) = s.proposals.iter().position(|p| p.id == *id) else {
                return refused("no such proposal");
            };
            if s.proposals[i].approvals.contains(&by) {
                return refused("already approved by this admin");
            }
            if s.proposals[i].expired_at(at_ms) {
                return refused(format!(
                    "proposal {id} is more than {} old; propose it again",
                    human_duration(PROPOSAL_TTL_MS)
                ));
            }
            s.proposals[i].approvals.push(by);
            let have = s.proposals[i].approval_count(s);
            let what = describe_action(s, &s.proposals[i].action);
            if have < needed {
                return Ok(format!(
                    "approved proposal {id} to {what} ({have} of {needed} approvals)"
                ));
            }
            let p = s.proposals.remove(i);
            // Carried out on the proposer's behalf, with the quorum's authority.
            let authorised = Actor {
                by: p.by,
                role: Some(Role::Admin),
                at_ms,
                creating: false,
                quorum_met: true,
            };
            let mut trial = s.clone();
            let mut done = Vec::new();
            match apply_op(&mut trial, &authorised, &p.action, &mut done) {
                Ok(line) => {
                    *s = trial;
                    effects.extend(done);
                    format!("approved proposal {id} ({have} of {needed}); carried out: {line}")
                }
                Err(e) => format!(
                    "approved proposal {id} ({have} of {needed}); it could not be carried out \
                     ({e}) and was dropped"
                ),
            }
        }
        Op::Withdraw(id) => {
            let Some(i) = s.proposals.iter().position(|p| p.id == *id) else {
                return refused("no such proposal");
            };
            let expired = s.proposals[i].expired_at(at_ms);
            if s.proposals[i].by != by && !(expired && role.is_some_and(Role::is_admin)) {
                return refused(
                    "only the proposer can withdraw a proposal (any admin, once it expired)",
                );
            }
            let p = s.proposals.remove(i);
            format!(
                "withdrew proposal {id} to {}",
                describe_action(s, &p.action)
            )
        }
    })
}

/// Makes a pending requester a member.
fn admit(s: &mut GroupState, p: Pending, at_ms: u64) {
    s.members.push(Member {
        account: p.account,
        identity_key: p.identity_key,
        name: p.name,
        role: Role::Member,
        joined_at_ms: at_ms,
        ring_key: None,
    });
}

/// The rule by which [`Op::Admit`] let someone in, in words: "after 2
/// vouches (approval off)", or "through the join link (approval off)" in a
/// group without vetting.
pub fn admission_rule(vouches_required: usize, vouches: usize) -> String {
    match vouches_required {
        0 => "through the join link (approval off)".into(),
        _ => format!("after {vouches} vouches (approval off)"),
    }
}

/// A moderation action in words, for proposals ("remove Bob").
fn describe_action(s: &GroupState, op: &Op) -> String {
    match op {
        Op::Remove(who) => format!("remove {}", name_of(s, *who)),
        Op::DeleteMessage { id, author } => {
            format!("delete a message by {} ({id})", name_of(s, *author))
        }
        Op::SetRole {
            account,
            role: Role::Admin,
        } => format!("make {} an admin", name_of(s, *account)),
        Op::SetRole { account, .. } => {
            format!(
                "make {} a member (no longer an admin)",
                name_of(s, *account)
            )
        }
        Op::SetSettings(new) => match new.quorum {
            0 | 1 => "turn quorum moderation off".into(),
            k => format!("require {k} admins to agree to moderation actions"),
        },
        other => format!("{other:?}"),
    }
}

/// A title from a change, made safe and cut to [`MAX_TITLE`] characters:
/// every member's replay does the same, so their states stay equal, and a
/// modified app's title with line breaks or escape sequences is stored (and
/// shown) without them.
fn clean_title(title: &str) -> Result<String, GroupError> {
    let title = crate::safe::clean_field(title, MAX_TITLE, crate::safe::Lines::One);
    if title.is_empty() {
        return refused(format!("a group title needs 1 to {MAX_TITLE} characters"));
    }
    Ok(title)
}

/// A member's or requester's name from a change, made safe and cut (see
/// [`clean_title`]).
fn clean_name(name: &str) -> String {
    crate::safe::clean_field(name, crate::safe::MAX_NAME_CHARS, crate::safe::Lines::One)
}

fn describe_settings(old: &Settings, new: &Settings) -> String {
    let mut parts = Vec::new();
    let on = |b: bool| if b { "on" } else { "off" };
    if old.announcements_only != new.announcements_only {
        parts.push(format!(
            "turned announcements-only {}",
            on(new.announcements_only)
        ));
    }
    if old.approval != new.approval {
        parts.push(format!("turned join approval {}", on(new.approval)));
    }
    if old.disappearing_ms != new.disappearing_ms {
        parts.push(match new.disappearing_ms {
            0 => "turned disappearing messages off".to_string(),
            ms => format!("set disappearing messages to {}", human_duration(ms)),
        });
    }
    if old.vouches_required != new.vouches_required {
        parts.push(match new.vouches_required {
            0 => "turned vetting by vouches off".to_string(),
            n => format!("required {n} vouches from members before a join request is admitted"),
        });
    }
    if old.reconfirm_ms != new.reconfirm_ms {
        parts.push(match new.reconfirm_ms {
            0 => "turned re-confirmation off".to_string(),
            ms => format!(
                "required members to re-confirm every {}",
                human_duration(ms)
            ),
        });
    }
    if old.quorum != new.quorum {
        parts.push(match new.quorum {
            0 | 1 => "turned quorum moderation off".to_string(),
            k => format!("required {k} admins to agree to removals, deletions and role changes"),
        });
    }
    if old.anonymous_posts != new.anonymous_posts {
        parts.push(format!(
            "set anonymous posts to {}",
            new.anonymous_posts.as_str()
        ));
    }
    if old.warning_retention_ms != new.warning_retention_ms {
        parts.push(match new.warning_retention_ms {
            0 => "set warnings to be kept until deleted".to_string(),
            ms => format!("set warnings to be kept for {}", human_duration(ms)),
        });
    }
    if parts.is_empty() {
        "saved the settings unchanged".into()
    } else {
        parts.join("; ")
    }
}

/// "7d", "12h", "30m", "45s".
pub fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s >= 3_600 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Replays `changes` onto `trusted`, following the parent chain: a change
/// that does not verify (forged, or by someone without the role) is skipped
/// and reported, and later changes must build on the last valid state.
/// Returns the newest valid state, the changes applied, and the refused changes' reasons.
pub fn replay(trusted: &GroupState, changes: &[SignedChange]) -> Replayed {
    let mut state = trusted.clone();
    let mut applied = Vec::new();
    let mut effects = Vec::new();
    let mut refusals = Vec::new();
    for change in changes {
        if change.body.version <= state.version {
            continue;
        }
        match apply_with_effects(&state, change) {
            Ok((next, done)) => {
                state = next;
                applied.push(change.clone());
                effects.extend(done);
            }
            Err(e) => {
                // A change on a different parent is another branch (e.g. built
                // on a forged change): it is not ours to report twice.
                if change.body.parent == hex(&state.hash()) {
                    refusals.push((change.body.version, e.to_string()));
                }
            }
        }
    }
    Replayed {
        state,
        applied,
        effects,
        refusals,
    }
}

/// What [`replay`] found.
#[derive(Debug)]
pub struct Replayed {
    /// The newest valid state.
    pub state: GroupState,
    /// The changes applied, oldest first.
    pub applied: Vec<SignedChange>,
    /// The ops that took effect, in order (including proposals carried out).
    pub effects: Vec<Op>,
    /// `(version, reason)` of each change refused on our chain.
    pub refusals: Vec<(u64, String)>,
}

/// Keys derived from a group key.
pub struct GroupKeys {
    enc: [u8; 32],
    /// The relay auth key pair.
    pub auth: KeyPair,
    /// Sender-key distribution id for this key's epoch.
    pub distribution_id: Uuid,
}

fn prf(key: &[u8], label: &[u8]) -> [u8; 32] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

fn key_pair_from(seed: [u8; 32]) -> Result<KeyPair, GroupError> {
    let private = PrivateKey::deserialize(&seed).map_err(|_| GroupError::Damaged)?;
    let public = private.public_key().map_err(|_| GroupError::Damaged)?;
    Ok(KeyPair::new(public, private))
}

impl GroupKeys {
    /// Derives the keys of one group key.
    pub fn derive(group_key: &[u8; 32]) -> Result<GroupKeys, GroupError> {
        let id = prf(group_key, b"sotto group v1: distribution id");
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&id[..16]);
        Ok(GroupKeys {
            enc: prf(group_key, b"sotto group v1: state encryption"),
            auth: key_pair_from(prf(group_key, b"sotto group v1: relay auth"))?,
            distribution_id: uuid::Builder::from_random_bytes(uuid).into_uuid(),
        })
    }
}

/// Keys derived from a join-link secret.
pub struct LinkKeys {
    enc: [u8; 32],
    /// Signs join requests; the relay holds its public half.
    pub auth: KeyPair,
}

impl LinkKeys {
    /// Derives the keys of one link secret.
    pub fn derive(secret: &[u8; 32]) -> Result<LinkKeys, GroupError> {
        Ok(LinkKeys {
            enc: prf(secret, b"sotto group link v1: request encryption"),
            auth: key_pair_from(prf(secret, b"sotto group link v1: relay auth"))?,
        })
    }

    /// Encrypts a join request.
    pub fn seal<R: Rng + CryptoRng>(&self, plain: &[u8], rng: &mut R) -> Vec<u8> {
        seal(&self.enc, plain, rng)
    }

    /// Decrypts a join request.
    pub fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        open(&self.enc, sealed)
    }
}

fn seal<R: Rng + CryptoRng>(key: &[u8; 32], plain: &[u8], rng: &mut R) -> Vec<u8> {
    let nonce: [u8; NONCE_LEN] = rng.random();
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key));
    let mut out = nonce.to_vec();
    // Encryption with a valid key and nonce cannot fail.
    out.extend(
        cipher
            .encrypt(XNonce::from_slice(&nonce), plain)
            .unwrap_or_default(),
    );
    out
}

fn open(key: &[u8; 32], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    XChaCha20Poly1305::new(Key::from_slice(key))
        .decrypt(XNonce::from_slice(nonce), ct)
        .ok()
}

/// Encrypts a blob, padded to the smallest bucket that holds it.
pub fn seal_blob<R: Rng + CryptoRng>(
    keys: &GroupKeys,
    blob: &Blob,
    rng: &mut R,
) -> Result<Vec<u8>, GroupError> {
    let json = serde_json::to_vec(blob).map_err(|_| GroupError::Damaged)?;
    let needed = json.len() + 4;
    let bucket = STATE_BUCKETS
        .iter()
        .copied()
        .find(|b| *b >= needed)
        .ok_or(GroupError::TooLarge)?;
    let mut plain = Vec::with_capacity(bucket);
    plain.extend_from_slice(&(json.len() as u32).to_be_bytes());
    plain.extend_from_slice(&json);
    plain.resize(bucket, 0);
    Ok(seal(&keys.enc, &plain, rng))
}

/// Decrypts and unpads a blob.
pub fn open_blob(keys: &GroupKeys, sealed: &[u8]) -> Result<Blob, GroupError> {
    let plain = open(&keys.enc, sealed).ok_or(GroupError::Damaged)?;
    let (len, rest) = plain.split_first_chunk::<4>().ok_or(GroupError::Damaged)?;
    let len = u32::from_be_bytes(*len) as usize;
    let json = rest.get(..len).ok_or(GroupError::Damaged)?;
    serde_json::from_slice(json).map_err(|_| GroupError::Damaged)
}

/// Drops the oldest changes until the blob fits the largest bucket (the
/// newest change is always kept).
pub fn trim_changes(blob: &mut Blob) {
    if blob.changes.len() > KEPT_CHANGES {
        let excess = blob.changes.len() - KEPT_CHANGES;
        blob.changes.drain(..excess);
    }
    let limit = STATE_BUCKETS[STATE_BUCKETS.len() - 1] - 4;
    while blob.changes.len() > 1 && serde_json::to_vec(blob).map_or(0, |v| v.len()) > limit {
        blob.changes.remove(0);
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes lowercase or uppercase hex.
pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Standard base64.
pub fn b64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes standard base64.
pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Person {
        id: Uuid,
        key: IdentityKeyPair,
        name: &'static str,
    }

    impl Person {
        fn new(name: &'static str) -> Person {
            Person {
                id: Uuid::new_v4(),
                key: IdentityKeyPair::generate(&mut rand::rng()),
                name,
            }
        }
        fn member(&self) -> Member {
            Member {
                account: self.id,
                identity_key: b64_encode(&self.key.identity_key().serialize()),
                name: self.name.into(),
                role: Role::Member,
                joined_at_ms: 0,
                ring_key: None,
            }
        }
        fn change(&self, state: &GroupState, ops: Vec<Op>) -> SignedChange {
            let body = ChangeBody {
                group: state.id.clone(),
                version: state.version + 1,
                parent: hex(&state.hash()),
                by: self.id,
                at_ms: 1000,
                ops,
            };
            SignedChange::sign(body, &self.key, &mut rand::rng()).expect("sign")
        }
    }

    fn group(owner: &Person, others: &[&Person]) -> GroupState {
        let g = genesis("00112233445566778899aabbccddeeff");
        let mut ops = vec![Op::Create {
            title: "Taxi list".into(),
            creator: owner.member(),
        }];
        ops.extend(others.iter().map(|p| Op::Add(p.member())));
        apply(&g, &owner.change(&g, ops)).expect("create")
    }

    #[test]
    fn creation_makes_the_author_owner_and_logs_every_op() {
        let (a, b) = (Person::new("Ann"), Person::new("Bob"));
        let s = group(&a, &[&b]);
        assert_eq!(s.version, 1);
        assert_eq!(s.role_of(a.id), Some(Role::Owner));
        assert_eq!(s.role_of(b.id), Some(Role::Member));
        assert_eq!(s.log.len(), 2);
        assert_eq!(s.log[1].action, "added Bob");
        assert_eq!(s.log[1].by_name, "Ann");
    }

    #[test]
    fn hostile_titles_and_names_are_cleaned_by_every_replay() {
        const FORGED: &str = "Eve\n[2026-12-03 15:01] rosa: send me your notes";
        let a = Person::new("Ann");
        let e = Person::new("Eve");
        let g = genesis("00112233445566778899aabbccddeeff");
        let mut eve = e.member();
        eve.name = format!("{FORGED}\u{1b}[2J\u{202E}");
        let s = apply(
            &g,
            &a.change(
                &g,
                vec![
                    Op::Create {
                        title: format!("Taxi\r{}", "🌙".repeat(100)),
                        creator: a.member(),
                    },
                    Op::Add(eve),
                ],
            ),
        )
        .expect("applied, cleaned");
        assert!(s.title.starts_with("Taxi\u{FFFD}🌙"), "{}", s.title);
        assert_eq!(s.title.chars().count(), MAX_TITLE);
        let name = &s.member(e.id).expect("added").name;
        assert!(!name.chars().any(crate::safe::is_unsafe), "{name:?}");
        for entry in &s.log {
            assert!(
                !entry.action.chars().any(crate::safe::is_unsafe),
                "{:?}",
                entry.action
            );
        }
        let renamed = apply(
            &s,
            &a.change(&s, vec![Op::SetTitle("\u{1b}]0;x\u{7}".into())]),
        )
        .expect("renamed");
        assert_eq!(renamed.title, "\u{FFFD}]0;x\u{FFFD}");
        // Nothing left once cleaned is no title.
        assert!(apply(&s, &a.change(&s, vec![Op::SetTitle(" \n ".into())])).is_err());
    }

    #[test]
    fn a_member_forging_their_own_promotion_is_refused() {
        let (a, b) = (Person::new("Ann"), Person::new("Bob"));
        let s = group(&a, &[&b]);
        let forged = b.change(
            &s,
            vec![Op::SetRole {
                account: b.id,
                role: Role::Admin,
            }],
        );
        assert_eq!(
            apply(&s, &forged),
            Err(GroupError::Refused("only admins can change roles".into()))
        );
        // Signing as someone else does not help either.
        let mut stolen = forged.clone();
        stolen.body.by = a.id;
        assert!(matches!(apply(&s, &stolen), Err(GroupError::Refused(_))));
    }

    #[test]
    fn replay_skips_a_forged_branch_and_follows_the_honest_one() {
        let (a, b, c) = (Person::new("Ann"), Person::new("Bob"), Person::new("Cat"));
        let s1 = group(&a, &[&b]);
        let forged = b.change(
            &s1,
            vec![Op::SetRole {
                account: b.id,
                role: Role::Admin,
            }],
        );
        // The honest admin builds on the last valid state, at the next version.
        let mut honest = a.change(&s1, vec![Op::Add(c.member())]);
        honest.body.version = 3;
        let honest = SignedChange::sign(honest.body, &a.key, &mut rand::rng()).expect("sign");
        let Replayed {
            state,
            applied,
            refusals,
            ..
        } = replay(&s1, &[forged, honest]);
        assert_eq!(refusals.len(), 1);
        assert_eq!(applied.len(), 1);
        assert_eq!(state.role_of(b.id), Some(Role::Member));
        assert_eq!(state.role_of(c.id), Some(Role::Member));
        assert_eq!(state.version, 3);
    }

    #[test]
    fn owner_cannot_be_removed_and_removal_needs_a_rekey() {
        let (a, b, c) = (Person::new("Ann"), Person::new("Bob"), Person::new("Cat"));
        let s = group(&a, &[&b, &c]);
        let s = apply(
            &s,
            &a.change(
                &s,
                vec![Op::SetRole {
                    account: b.id,
                    role: Role::Admin,
                }],
            ),
        )
        .expect("promote");
        assert!(apply(&s, &b.change(&s, vec![Op::Remove(a.id)])).is_err());
        let s = apply(&s, &b.change(&s, vec![Op::Remove(c.id)])).expect("remove");
        assert!(s.rekey_needed);
        assert!(s.member(c.id).is_none());
        let s = apply(&s, &b.change(&s, vec![Op::RotateKey])).expect("rotate");
        assert!(!s.rekey_needed);
    }

    #[test]
    fn quorum_needs_k_admins_and_refuses_a_lone_admin() {
        let (a, b, c, d) = (
            Person::new("Ann"),
            Person::new("Bob"),
            Person::new("Cat"),
            Person::new("Dan"),
        );
        let s = group(&a, &[&b, &c, &d]);
        let promote = Op::SetRole {
            account: b.id,
            role: Role::Admin,
        };
        let s = apply(&s, &a.change(&s, vec![promote])).expect("promote");
        let mut two = s.settings;
        two.quorum = 2;
        let s = apply(&s, &a.change(&s, vec![Op::SetSettings(two)])).expect("quorum on");
        assert_eq!(s.quorum_needed(), 2);

        // One admin alone (or a modified app) cannot remove, demote or lower the quorum.
        assert!(apply(&s, &a.change(&s, vec![Op::Remove(d.id)])).is_err());
        let demote = Op::SetRole {
            account: b.id,
            role: Role::Member,
        };
        assert!(apply(&s, &a.change(&s, vec![demote])).is_err());
        let mut off = s.settings;
        off.quorum = 0;
        assert!(apply(&s, &a.change(&s, vec![Op::SetSettings(off)])).is_err());
        let delete = Op::DeleteMessage {
            id: "00".repeat(16),
            author: c.id,
        };
        assert!(apply(&s, &a.change(&s, vec![delete])).is_err());

        let propose = Op::Propose {
            id: "a1b2c3d4".into(),
            action: Box::new(Op::Remove(d.id)),
        };
        // A plain member cannot propose.
        assert!(apply(&s, &c.change(&s, vec![propose.clone()])).is_err());
        let s = apply(&s, &a.change(&s, vec![propose.clone()])).expect("propose");
        assert!(s.member(d.id).is_some(), "one approval of two does nothing");
        assert_eq!(s.proposals.len(), 1);
        assert!(
            s.log
                .last()
                .expect("log")
                .action
                .contains("proposed to remove Dan")
        );
        // The proposer approving again, or a plain member approving, does not count.
        let approve = Op::Approve("a1b2c3d4".into());
        assert!(apply(&s, &a.change(&s, vec![approve.clone()])).is_err());
        assert!(apply(&s, &c.change(&s, vec![approve.clone()])).is_err());
        // A repeated proposal id is refused.
        assert!(apply(&s, &b.change(&s, vec![propose])).is_err());

        let (s, effects) =
            apply_with_effects(&s, &b.change(&s, vec![approve])).expect("second approval");
        assert!(s.member(d.id).is_none(), "the quorum carries it out");
        assert!(s.rekey_needed);
        assert!(s.proposals.is_empty());
        assert!(effects.contains(&Op::Remove(d.id)));
        assert!(
            s.log
                .last()
                .expect("log")
                .action
                .contains("carried out: removed Dan")
        );
    }

    #[test]
    fn ring_keys_are_set_once_by_their_owner() {
        let (a, b) = (Person::new("Ann"), Person::new("Bob"));
        let s = group(&a, &[&b]);
        let key = |seed: u8| {
            hex(&sotto_lsag::SecretKey::derive(&[seed; 32], b"g")
                .public()
                .to_bytes())
        };
        let s = apply(&s, &b.change(&s, vec![Op::SetRingKey(key(1))])).expect("publish");
        assert_eq!(s.ring().len(), 1);
        // A second key would be a second linking tag: refused.
        assert!(apply(&s, &b.change(&s, vec![Op::SetRingKey(key(2))])).is_err());
        // Copying someone else's key is refused too, as is garbage.
        assert!(apply(&s, &a.change(&s, vec![Op::SetRingKey(key(1))])).is_err());
        assert!(apply(&s, &a.change(&s, vec![Op::SetRingKey("00".repeat(32))])).is_err());
        // An admin adding someone cannot choose their ring key.
        let c = Person::new("Cat");
        let mut m = c.member();
        m.ring_key = Some(key(3));
        let s = apply(&s, &a.change(&s, vec![Op::Add(m)])).expect("add");
        assert_eq!(s.member(c.id).expect("cat").ring_key, None);
    }

    #[test]
    fn owner_leaving_hands_the_group_to_an_admin() {
        let (a, b, c) = (Person::new("Ann"), Person::new("Bob"), Person::new("Cat"));
        let s = group(&a, &[&b, &c]);
        let s = apply(
            &s,
            &a.change(
                &s,
                vec![Op::SetRole {
                    account: c.id,
                    role: Role::Admin,
                }],
            ),
        )
        .expect("promote");
        let s = apply(&s, &a.change(&s, vec![Op::Leave])).expect("leave");
        assert_eq!(s.role_of(c.id), Some(Role::Owner));
        assert_eq!(s.role_of(b.id), Some(Role::Member));
    }

    #[test]
    fn requests_are_approved_into_members() {
        let (a, d) = (Person::new("Ann"), Person::new("Dee"));
        let s = group(&a, &[]);
        let p = Pending {
            account: d.id,
            identity_key: d.member().identity_key,
            name: "Dee".into(),
            requested_at_ms: 5,
            vouches: Vec::new(),
        };
        let s = apply(&s, &a.change(&s, vec![Op::Request(p)])).expect("request");
        assert_eq!(s.pending.len(), 1);
        let s = apply(
            &s,
            &a.change(
                &s,
                vec![Op::Resolve {
                    account: d.id,
                    approve: true,
                }],
            ),
        )
        .expect("approve");
        assert!(s.pending.is_empty());
        assert_eq!(s.role_of(d.id), Some(Role::Member));
    }

    #[test]
    fn vetting_needs_vouches_from_current_members_and_holds_against_admins() {
        let (a, b, c) = (Person::new("Ann"), Person::new("Bob"), Person::new("Cat"));
        let (d, m) = (Person::new("Dee"), Person::new("Mallory"));
        let s = group(&a, &[&b, &c]);
        let s = apply(
            &s,
            &a.change(
                &s,
                vec![Op::SetSettings(Settings {
                    vouches_required: 2,
                    ..s.settings
                })],
            ),
        )
        .expect("settings");
        let p = Pending {
            account: d.id,
            identity_key: d.member().identity_key,
            name: "Dee".into(),
            requested_at_ms: 5,
            vouches: Vec::new(),
        };
        let s = apply(&s, &a.change(&s, vec![Op::Request(p)])).expect("request");
        let approve = Op::Resolve {
            account: d.id,
            approve: true,
        };
        // An admin cannot admit before enough members vouch, nor side-step it.
        assert!(matches!(
            apply(&s, &a.change(&s, vec![approve.clone()])),
            Err(GroupError::Refused(why)) if why.contains("needs 2 vouches")
        ));
        assert!(apply(&s, &a.change(&s, vec![Op::Add(d.member())])).is_err());
        // A non-member's vouch is refused; a member counts once.
        assert!(apply(&s, &m.change(&s, vec![Op::Vouch(d.id)])).is_err());
        let s = apply(&s, &b.change(&s, vec![Op::Vouch(d.id)])).expect("bob vouches");
        assert!(apply(&s, &b.change(&s, vec![Op::Vouch(d.id)])).is_err());
        assert!(apply(&s, &a.change(&s, vec![approve.clone()])).is_err());
        // A vouch from someone removed since no longer counts.
        let removed = apply(&s, &a.change(&s, vec![Op::Remove(b.id)])).expect("remove");
        assert_eq!(removed.pending[0].vouch_count(&removed), 0);
        let s = apply(&s, &c.change(&s, vec![Op::Vouch(d.id)])).expect("cat vouches");
        assert_eq!(
            s.log.last().map(|l| l.action.as_str()),
            Some("vouched for Dee (2 of 2)")
        );
        let s = apply(&s, &a.change(&s, vec![approve])).expect("admitted");
        assert_eq!(s.role_of(d.id), Some(Role::Member));
    }

    /// Issue 12: vouches make a request eligible; with approval on only an
    /// admin's approval admits it, and the log says which rule admitted whom.
    #[test]
    fn automatic_admission_is_refused_while_approval_is_on() {
        let (a, b, c, d) = (
            Person::new("Ann"),
            Person::new("Bob"),
            Person::new("Cat"),
            Person::new("Dee"),
        );
        let s = group(&a, &[&b, &c]);
        let on = Settings {
            approval: true,
            vouches_required: 2,
            ..s.settings
        };
        let s = apply(&s, &a.change(&s, vec![Op::SetSettings(on)])).expect("settings");
        let p = Pending {
            account: d.id,
            identity_key: d.member().identity_key,
            name: "Dee".into(),
            requested_at_ms: 5,
            vouches: Vec::new(),
        };
        let s = apply(&s, &a.change(&s, vec![Op::Request(p)])).expect("request");
        let s = apply(&s, &b.change(&s, vec![Op::Vouch(d.id)])).expect("bob");
        let s = apply(&s, &c.change(&s, vec![Op::Vouch(d.id)])).expect("cat");
        // Eligible, but an app admitting on its own is refused...
        assert!(matches!(
            apply(&s, &a.change(&s, vec![Op::Admit(d.id)])),
            Err(GroupError::Refused(why)) if why.contains("join approval is on")
        ));
        // ...while the admin's approval admits, and says so.
        let approve = Op::Resolve {
            account: d.id,
            approve: true,
        };
        let approved = apply(&s, &a.change(&s, vec![approve])).expect("approve");
        assert_eq!(approved.role_of(d.id), Some(Role::Member));
        assert_eq!(
            approved.log.last().map(|l| l.action.as_str()),
            Some("approved Dee's join request")
        );

        // Approval off: the rule admits, the log names the rule, not a person's approval.
        let off = Settings {
            approval: false,
            ..s.settings
        };
        let s = apply(&s, &a.change(&s, vec![Op::SetSettings(off)])).expect("off");
        let admitted = apply(&s, &a.change(&s, vec![Op::Admit(d.id)])).expect("admit");
        assert_eq!(admitted.role_of(d.id), Some(Role::Member));
        assert_eq!(
            admitted.log.last().map(|l| l.action.as_str()),
            Some("admitted Dee after 2 vouches (approval off)")
        );
        // Not before the vouches are in, and only by an admin's app.
        let (e, f) = (Person::new("Eve"), Person::new("Fay"));
        let q = Pending {
            account: e.id,
            identity_key: e.member().identity_key,
            name: "Eve".into(),
            requested_at_ms: 6,
            vouches: Vec::new(),
        };
        let s = apply(&s, &a.change(&s, vec![Op::Request(q)])).expect("request");
        assert!(apply(&s, &a.change(&s, vec![Op::Admit(e.id)])).is_err());
        let s = apply(&s, &b.change(&s, vec![Op::Vouch(e.id)])).expect("bob");
        let s = apply(&s, &c.change(&s, vec![Op::Vouch(e.id)])).expect("cat");
        assert!(apply(&s, &b.change(&s, vec![Op::Admit(e.id)])).is_err());
        assert!(apply(&s, &f.change(&s, vec![Op::Admit(e.id)])).is_err());
        assert!(apply(&s, &a.change(&s, vec![Op::Admit(e.id)])).is_ok());
    }

    #[test]
    fn reconfirmation_moves_the_deadline_and_only_members_can() {
        let (a, b, m) = (
            Person::new("Ann"),
            Person::new("Bob"),
            Person::new("Mallory"),
        );
        let s = group(&a, &[&b]);
        assert_eq!(s.reconfirm_due(b.id), None, "off by default");
        let s = apply(
            &s,
            &a.change(
                &s,
                vec![Op::SetSettings(Settings {
                    reconfirm_ms: 500,
                    ..s.settings
                })],
            ),
        )
        .expect("settings");
        // Joined at 1000 (the test clock): due at 1500; the owner never is.
        assert_eq!(s.reconfirm_due(b.id), Some(1500));
        assert_eq!(s.reconfirm_due(a.id), None);
        assert!(apply(&s, &m.change(&s, vec![Op::Reconfirm])).is_err());
        let mut change = b.change(&s, vec![Op::Reconfirm]);
        change.body.at_ms = 4000;
        let change = SignedChange::sign(change.body, &b.key, &mut rand::rng()).expect("sign");
        let s = apply(&s, &change).expect("reconfirm");
        assert_eq!(s.reconfirm_due(b.id), Some(4500));
    }

    proptest::proptest! {
        /// Whatever the relay (or an attacker holding the group key) stores,
        /// opening it never panics; with a wrong key nothing opens.
        #[test]
        fn opening_arbitrary_blobs_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let keys = GroupKeys::derive(&[9; 32]).expect("keys");
            proptest::prop_assert!(open_blob(&keys, &bytes).is_err());
        }

        /// A blob sealed under the key, whatever JSON it holds, decodes or is
        /// refused; a decoded state replays arbitrary changes without panicking.
        #[test]
        fn arbitrary_changes_never_panic(title in ".{0,80}", version in 0u64..5, ops in 0usize..4) {
            let a = Person::new("Ann");
            let s = group(&a, &[]);
            let body = ChangeBody {
                group: s.id.clone(),
                version,
                parent: hex(&s.hash()),
                by: a.id,
                at_ms: 1,
                ops: (0..ops).map(|_| Op::SetTitle(title.clone())).collect(),
            };
            let change = SignedChange::sign(body, &a.key, &mut rand::rng()).expect("sign");
            let _ = apply(&s, &change);
            let r = replay(&s, &[change.clone(), change]);
            proptest::prop_assert!(r.state.version >= s.version);
        }

        /// Hex decoding accepts exactly what hex() writes.
        #[test]
        fn hex_round_trips(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64), junk in "[^0-9a-fA-F]{1,4}") {
            proptest::prop_assert_eq!(hex_decode(&hex(&bytes)), Some(bytes.clone()));
            let mut bad = hex(&bytes);
            bad.push_str(&junk);
            proptest::prop_assert!(hex_decode(&bad).is_none());
        }
    }

    #[test]
    fn blobs_pad_to_buckets_and_need_the_key() {
        let (a, b) = (Person::new("Ann"), Person::new("Bob"));
        let state = group(&a, &[&b]);
        let keys = GroupKeys::derive(&[7; 32]).expect("keys");
        let blob = Blob {
            state: state.clone(),
            changes: vec![],
        };
        let sealed = seal_blob(&keys, &blob, &mut rand::rng()).expect("seal");
        assert_eq!(sealed.len(), STATE_BUCKETS[0] + NONCE_LEN + 16);
        assert_eq!(open_blob(&keys, &sealed).expect("open"), blob);
        let other = GroupKeys::derive(&[8; 32]).expect("keys");
        assert_eq!(open_blob(&other, &sealed), Err(GroupError::Damaged));
        assert_ne!(keys.distribution_id, other.distribution_id);
        // Ten more members still fit the same bucket: size does not track count.
        let mut bigger = blob.clone();
        for i in 0..10 {
            let mut m = b.member();
            m.account = Uuid::from_u128(i);
            bigger.state.members.push(m);
        }
        let sealed2 = seal_blob(&keys, &bigger, &mut rand::rng()).expect("seal");
        assert_eq!(sealed.len(), sealed2.len());
    }
}
