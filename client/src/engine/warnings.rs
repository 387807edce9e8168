//! Structured warnings: the point of a whisper network.
//!
//! A warning is a group message with structure (who it is about, what kind
//! of behaviour, first- or second-hand, where, when, advice), sent with the
//! group's sender key like any group text, so the relay sees one more opaque
//! envelope. Each member's app keeps warnings in their own store tree, for
//! the group's warning retention rather than its disappearing timer, and
//! lists them by subject across all groups: subjects are matched leniently
//! ([`subject_key`]) and can be merged by hand.
//!
//! Counts are of distinct authors as this app knows them (a member who warns
//! twice about the same person counts once). The author of each warning is
//! visible to the other members, as for any group message.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use uuid::Uuid;

use super::anon::check_author_proof;
use super::groups::{Admitted, content as new_content};
use super::{Content, Engine, EngineError, MAX_TEXT_BYTES, Result, content, hex, now_ms};
use crate::group::Settings;
use crate::routes::{Card, Date, GivenDate, Routes, today};
use crate::safe::{self, Lines};
use crate::store::{
    CorroborationRecord, MessageDirection, MessageRecord, MessageStatus, WarningRecord,
};

/// The kinds of behaviour a warning can name.
pub const KINDS: &[&str] = &[
    "harassment",
    "sexual-misconduct",
    "bullying",
    "inappropriate-conduct",
    "other",
];

/// Words dropped when matching subjects: titles, honours and post-nominals
/// that one author writes and another leaves out.
const TITLES: &[&str] = &[
    "sir",
    "dame",
    "lord",
    "lady",
    "baroness",
    "baron",
    "viscount",
    "earl",
    "rt",
    "hon",
    "right",
    "honourable",
    "the",
    "mp",
    "msp",
    "ms",
    "mr",
    "mrs",
    "miss",
    "mx",
    "dr",
    "prof",
    "professor",
    "cllr",
    "councillor",
    "qc",
    "kc",
    "obe",
    "mbe",
    "cbe",
    "kbe",
    "dbe",
    "ma",
    "phd",
    "esq",
    // Arabic honorifics (compared after folding): Mr, Mrs, Dr, Prof, Sheikh.
    "السيد",
    "السيدة",
    "الدكتور",
    "الدكتورة",
    "الأستاذ",
    "الأستاذة",
    "الشيخ",
];

/// What a member fills in to post a warning.
#[derive(Debug, Clone, Default)]
pub struct WarningInput {
    /// Who it is about.
    pub subject: String,
    /// Their role; may be empty.
    pub role: String,
    /// One of [`KINDS`].
    pub kind: String,
    /// First-hand (true) or second-hand.
    pub firsthand: bool,
    /// Setting; may be empty.
    pub place: String,
    /// `YYYY-MM` or `YYYY-MM-DD`; may be empty.
    pub when: String,
    /// Advice; may be empty.
    pub advice: String,
    /// Free text; may be empty.
    pub text: String,
}

/// Everything known about one subject, across groups.
#[derive(Debug, Clone, Serialize)]
pub struct SubjectSummary {
    /// The matching key (lowercase, no accents or titles).
    pub key: String,
    /// With `--about`: how the name searched for matches this subject.
    /// Two subjects are two people as far as this app knows, until merged.
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub matched: Option<NameMatch>,
    /// The names authors used, most used first.
    pub names: Vec<String>,
    /// The roles authors gave.
    pub roles: Vec<String>,
    /// Distinct members who reported it first-hand.
    pub firsthand_reporters: usize,
    /// Distinct members who reported it second-hand only.
    pub secondhand_reporters: usize,
    /// Kinds named, with how many warnings named each.
    pub kinds: BTreeMap<String, usize>,
    /// The latest `when` given (or, when no warning gives one, the latest
    /// posting date).
    pub newest: String,
    /// The titles of the groups the warnings came from.
    pub groups: Vec<String>,
    /// The warnings themselves, newest first.
    pub warnings: Vec<WarningView>,
}

/// One warning as shown (without its author: counts are what members need).
#[derive(Debug, Clone, Serialize)]
pub struct WarningView {
    /// Message id, hex.
    pub id: String,
    /// Group title.
    pub group: String,
    /// The subject as written.
    pub subject: String,
    /// Role, as written.
    pub role: String,
    /// Kind of behaviour.
    pub kind: String,
    /// First- or second-hand.
    pub firsthand: bool,
    /// Setting.
    pub place: String,
    /// When it happened.
    pub when: String,
    /// Advice.
    pub advice: String,
    /// Free text.
    pub text: String,
    /// Sent at (ms since the epoch).
    pub sent_at_ms: u64,
    /// Whether I posted it under my name.
    pub mine: bool,
    /// How an anonymous warning appears ("a member", "a member (approved by
    /// a moderator)"); `None` when it is named.
    pub anonymous: Option<String>,
    /// Distinct members who corroborated it (anonymously), not its author.
    pub corroborations: usize,
    /// Of those, the ones who experienced it too.
    pub corroborations_firsthand: usize,
    /// Whether I corroborated it.
    pub corroborated_by_me: bool,
    /// Where it can go next, with deadlines from its date (see `routes.rs`).
    pub routes: Option<Card>,
}

/// The matching key of a subject's name: case, accents, punctuation,
/// spacing and titles ("Sir", "MP", "Rt Hon", "السيد") do not matter.
///
/// Every script is kept: letters and digits of any alphabet stay, marks that
/// only decorate a letter (Latin accents, Arabic and Hebrew vowel points,
/// whether precomposed or typed as combining characters) are dropped rather
/// than split the word, and spelling variants one writer uses and another
/// does not are folded (Arabic alef forms, teh marbuta, alef maqsura, the
/// Persian yeh and keheh, tatweel; Arabic-Indic digits; Greek tonos and
/// final sigma; Cyrillic ё; ß).
pub fn subject_key(name: &str) -> String {
    let folded = fold_name(name);
    let words: Vec<&str> = folded
        .split_whitespace()
        .filter(|w| !TITLES.iter().any(|t| fold_name(t) == *w))
        .collect();
    if words.is_empty() {
        // A name made only of titles ("The Minister") still needs a key.
        folded.split_whitespace().collect::<Vec<_>>().join(" ")
    } else {
        words.join(" ")
    }
}

/// Lowercased and folded, with spaces, punctuation and symbols as spaces.
/// Marks that belong to a letter (an Indic virama, say) stay in the word:
/// only what separates words separates them.
fn fold_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars().flat_map(char::to_lowercase) {
        if is_dropped_mark(c) {
            continue;
        }
        match fold_char(c) {
            Folded::One(c) if c.is_alphanumeric() || !is_separator(c) => out.push(c),
            Folded::One(_) => out.push(' '),
            Folded::Two(a, b) => {
                out.push(a);
                out.push(b);
            }
        }
    }
    out
}

/// Spaces, controls, punctuation and symbols, in the scripts names come in.
fn is_separator(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || (c.is_ascii() && !c.is_ascii_alphanumeric())
        || matches!(
            c,
            '\u{00A1}'..='\u{00BF}' // Latin-1 punctuation and symbols
            | '\u{00D7}'
            | '\u{00F7}'
            | '\u{05BE}'             // Hebrew maqaf, paseq, sof pasuq, geresh
            | '\u{05C0}'
            | '\u{05C3}'
            | '\u{05C6}'
            | '\u{05F3}'..='\u{05F4}'
            | '\u{060C}'             // Arabic comma, semicolon, question mark
            | '\u{061B}'
            | '\u{061F}'
            | '\u{066A}'..='\u{066D}'
            | '\u{06D4}'
            | '\u{0964}'..='\u{0965}' // Devanagari danda
            | '\u{0970}'
            | '\u{2000}'..='\u{206F}' // general punctuation
            | '\u{2190}'..='\u{2BFF}' // arrows and symbols
            | '\u{2E00}'..='\u{2E7F}'
            | '\u{3000}'..='\u{303F}' // CJK punctuation
            | '\u{30FB}'             // katakana middle dot (between names)
            | '\u{FE10}'..='\u{FE1F}'
            | '\u{FE30}'..='\u{FE6F}'
            | '\u{FF01}'..='\u{FF0F}' // fullwidth punctuation
            | '\u{FF1A}'..='\u{FF20}'
            | '\u{FF3B}'..='\u{FF40}'
            | '\u{FF5B}'..='\u{FF65}'
        )
}

enum Folded {
    One(char),
    Two(char, char),
}

/// Marks that decorate a letter without making a different name, and
/// invisible joiners: dropped, so "Jo\u{301}hn" and "مُحَمَّد" keep their words
/// whole and match "John" and "محمد". Vowel signs of Indic scripts are not
/// here: they are letters of the name.
fn is_dropped_mark(c: char) -> bool {
    matches!(
        c,
        '\u{0300}'..='\u{036F}'  // combining diacritical marks (NFD Latin, Greek, Cyrillic)
        | '\u{1AB0}'..='\u{1AFF}'
        | '\u{1DC0}'..='\u{1DFF}'
        | '\u{20D0}'..='\u{20FF}'
        | '\u{FE20}'..='\u{FE2F}'
        | '\u{0591}'..='\u{05BD}' // Hebrew points and cantillation
        | '\u{05BF}'
        | '\u{05C1}'..='\u{05C2}'
        | '\u{05C4}'..='\u{05C5}'
        | '\u{05C7}'
        | '\u{0610}'..='\u{061A}' // Arabic honorific marks
        | '\u{064B}'..='\u{065F}' // Arabic harakat, shadda, sukun
        | '\u{0670}'              // superscript alef
        | '\u{06D6}'..='\u{06DC}'
        | '\u{06DF}'..='\u{06E4}'
        | '\u{06E7}'..='\u{06E8}'
        | '\u{06EA}'..='\u{06ED}'
        | '\u{0640}'              // tatweel (a stretch, not a letter)
        | '\u{00AD}'              // soft hyphen
        | '\u{200B}'..='\u{200D}' // zero-width space, non-joiner, joiner
        | '\u{2060}'
        | '\u{FEFF}'
    )
}

/// The plain form of a lowercase letter that writers spell more than one way.
fn fold_char(c: char) -> Folded {
    use Folded::{One, Two};
    match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => One('a'),
        'ç' | 'ć' | 'č' | 'ĉ' | 'ċ' => One('c'),
        'ď' | 'đ' => One('d'),
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => One('e'),
        'ĝ' | 'ğ' | 'ġ' | 'ģ' => One('g'),
        'ĥ' | 'ħ' => One('h'),
        'ì' | 'í' | 'î' | 'ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' | 'ı' => One('i'),
        'ĵ' => One('j'),
        'ķ' => One('k'),
        'ĺ' | 'ļ' | 'ľ' | 'ŀ' | 'ł' => One('l'),
        'ñ' | 'ń' | 'ņ' | 'ň' => One('n'),
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ŏ' | 'ő' => One('o'),
        'ŕ' | 'ŗ' | 'ř' => One('r'),
        'ś' | 'ŝ' | 'ş' | 'š' | 'ș' => One('s'),
        'ţ' | 'ť' | 'ŧ' | 'ț' => One('t'),
        'ù' | 'ú' | 'û' | 'ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => One('u'),
        'ŵ' => One('w'),
        'ý' | 'ÿ' | 'ŷ' => One('y'),
        'ź' | 'ż' | 'ž' => One('z'),
        'ß' => Two('s', 's'),
        'æ' => Two('a', 'e'),
        'œ' => Two('o', 'e'),
        // Greek: tonos and dialytika, final sigma.
        'ά' => One('α'),
        'έ' => One('ε'),
        'ή' => One('η'),
        'ί' | 'ϊ' | 'ΐ' => One('ι'),
        'ό' => One('ο'),
        'ύ' | 'ϋ' | 'ΰ' => One('υ'),
        'ώ' => One('ω'),
        'ς' => One('σ'),
        // Cyrillic: ё is usually written е.
        'ё' => One('е'),
        // Arabic: alef with hamza or madda, alef wasla; teh marbuta; alef
        // maqsura and the Persian yeh; hamza on waw or yeh; keheh.
        'أ' | 'إ' | 'آ' | 'ٱ' => One('ا'),
        'ة' => One('ه'),
        'ى' | 'ی' | 'ئ' => One('ي'),
        'ؤ' => One('و'),
        'ک' => One('ك'),
        // Arabic-Indic and Persian digits.
        '\u{0660}'..='\u{0669}' => One(digit(c as u32 - 0x0660)),
        '\u{06F0}'..='\u{06F9}' => One(digit(c as u32 - 0x06F0)),
        other => One(other),
    }
}

fn digit(n: u32) -> char {
    char::from_digit(n, 10).unwrap_or('0')
}

/// How a name someone searched for (`sotto warnings --about`) matches a
/// subject's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NameMatch {
    /// The same key: the same name as far as matching goes.
    Exact,
    /// Some of the name: a surname alone ("smith"), initials with a surname
    /// ("J. Smith"), or a fuller name ("John Michael Smith" for "John
    /// Smith"). Possibly the same person, possibly not.
    Partial,
}

/// Whether `query` (a key from [`subject_key`]) names the subject `key`:
/// every word of the shorter name must match its own word of the longer,
/// in any order, where a word matches the same word, an initial matches a
/// word it begins, and in scripts written without spaces between names
/// (Chinese, Japanese, Korean) a word matches a word that contains it. At
/// least one pair must be a whole word, so "J." alone matches no one.
pub fn name_match(query: &str, key: &str) -> Option<NameMatch> {
    if query.is_empty() || key.is_empty() {
        return None;
    }
    if query == key {
        return Some(NameMatch::Exact);
    }
    let (q, k): (Vec<&str>, Vec<&str>) = (
        query.split_whitespace().collect(),
        key.split_whitespace().collect(),
    );
    // Names are a few words; the cap keeps the search small whatever a
    // modified app sends.
    if q.len() > 12 || k.len() > 12 {
        return None;
    }
    let (short, long) = if q.len() <= k.len() { (q, k) } else { (k, q) };
    let mut used = vec![false; long.len()];
    assign(&short, &long, &mut used, false).then_some(NameMatch::Partial)
}

/// Backtracking: can each word of `short` take an unused word of `long`?
fn assign(short: &[&str], long: &[&str], used: &mut [bool], whole: bool) -> bool {
    let Some((first, rest)) = short.split_first() else {
        return whole;
    };
    for i in 0..long.len() {
        if used[i] {
            continue;
        }
        let Some(how) = word_match(first, long[i]) else {
            continue;
        };
        used[i] = true;
        if assign(rest, long, used, whole || how == WordMatch::Whole) {
            return true;
        }
        used[i] = false;
    }
    false
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WordMatch {
    Whole,
    Initial,
}

fn word_match(a: &str, b: &str) -> Option<WordMatch> {
    if a == b {
        return Some(WordMatch::Whole);
    }
    // First: one Han character is a family name, not an initial.
    let unspaced = |w: &str| w.chars().any(is_unspaced_script);
    if unspaced(a) && unspaced(b) && (a.contains(b) || b.contains(a)) {
        return Some(WordMatch::Whole);
    }
    let initial = |w: &str| {
        let mut cs = w.chars();
        matches!((cs.next(), cs.next()), (Some(c), None) if c.is_alphabetic())
    };
    if (initial(a) && b.starts_with(a)) || (initial(b) && a.starts_with(b)) {
        return Some(WordMatch::Initial);
    }
    None
}

/// Scripts whose names are written without a space between family and
/// given name: Han, kana, Hangul.
fn is_unspaced_script(c: char) -> bool {
    matches!(
        c,
        '\u{3040}'..='\u{30FF}'
        | '\u{3400}'..='\u{4DBF}'
        | '\u{4E00}'..='\u{9FFF}'
        | '\u{AC00}'..='\u{D7AF}'
        | '\u{F900}'..='\u{FAFF}'
        | '\u{20000}'..='\u{2FA1F}'
    )
}

/// Checks a `when`: empty, `YYYY-MM` or `YYYY-MM-DD` with a real month and
/// day (parsed as route cards parse dates), from 1900 on.
pub fn check_when(when: &str) -> std::result::Result<(), String> {
    if when.is_empty() {
        return Ok(());
    }
    match GivenDate::parse(when) {
        Ok(g) if g.date.year() >= 1900 && when.trim() == when => Ok(()),
        _ => Err(format!(
            "--when {when:?}: expected a month like 2024-03 or a day like 2024-03-14"
        )),
    }
}

impl WarningInput {
    /// Trims fields and refuses what other members' apps would drop; with
    /// `strict` (always, but in a test's modified client), also control and
    /// text-direction characters and over-long fields (the limits in
    /// [`crate::safe`]).
    fn checked(mut self, strict: bool) -> Result<WarningInput> {
        for f in [
            &mut self.subject,
            &mut self.role,
            &mut self.kind,
            &mut self.place,
            &mut self.when,
            &mut self.advice,
        ] {
            *f = f.trim().to_string();
        }
        let invalid = |m: String| Err(EngineError::Invalid(m));
        if subject_key(&self.subject).is_empty() {
            return invalid("--about needs the name of the person the warning is about".into());
        }
        if !KINDS.contains(&self.kind.as_str()) {
            return invalid(format!(
                "--kind \"{}\" is not a kind; use one of: {}",
                self.kind,
                KINDS.join(", ")
            ));
        }
        check_when(&self.when).map_err(EngineError::Invalid)?;
        if !strict {
            return Ok(self);
        }
        for (name, f, max) in [
            ("--about", &self.subject, safe::MAX_SHORT_CHARS),
            ("--role", &self.role, safe::MAX_SHORT_CHARS),
            ("--where", &self.place, safe::MAX_SHORT_CHARS),
            ("--advice", &self.advice, safe::MAX_ADVICE_CHARS),
        ] {
            if !f.is_empty() {
                safe::check_field(name, f, max, Lines::One).map_err(EngineError::Invalid)?;
            }
        }
        if self.text.len() > MAX_TEXT_BYTES {
            return invalid(format!(
                "the text is too long: {} bytes, the limit is {MAX_TEXT_BYTES}",
                self.text.len()
            ));
        }
        if !self.text.trim().is_empty() {
            safe::check_field("the text", &self.text, usize::MAX, Lines::Many)
                .map_err(EngineError::Invalid)?;
        }
        Ok(self)
    }
}

/// The wire form of a checked warning input.
pub(super) fn warning_content(
    group: [u8; 16],
    input: WarningInput,
    strict: bool,
) -> Result<content::Warning> {
    let input = input.checked(strict)?;
    Ok(content::Warning {
        group_id: group.to_vec(),
        subject: input.subject,
        role: input.role,
        kind: input.kind,
        firsthand: input.firsthand,
        place: input.place,
        when: input.when,
        advice: input.advice,
        text: input.text,
        author_proof: Vec::new(),
    })
}

/// The record kept for a received warning, fields clipped and checked;
/// `None` when it has no subject or its retention already ran out.
pub(super) fn warning_record(
    w: &content::Warning,
    id: [u8; 16],
    group: [u8; 16],
    author: Uuid,
    sent_at_ms: u64,
    settings: &Settings,
) -> Option<WarningRecord> {
    // A modified app can send anything: made safe and cut to the limits here,
    // so what is stored and shown is already safe.
    let short = |s: &str| safe::clean_field(s, safe::MAX_SHORT_CHARS, Lines::One);
    let kind = if KINDS.contains(&w.kind.as_str()) {
        w.kind.clone()
    } else {
        // A newer app's kind: keep the warning, under "other".
        "other".to_string()
    };
    let when = if check_when(w.when.trim()).is_ok() {
        w.when.trim().to_string()
    } else {
        String::new()
    };
    let received = now_ms();
    let retention = settings.warning_retention_ms;
    let expires_at_ms = (retention > 0).then(|| sent_at_ms.min(received) + retention);
    if expires_at_ms.is_some_and(|t| t <= received) {
        return None;
    }
    let warning = WarningRecord {
        id,
        group,
        author,
        subject: short(&w.subject),
        role: short(&w.role),
        kind,
        firsthand: w.firsthand,
        place: short(&w.place),
        when,
        advice: safe::clean_field(&w.advice, safe::MAX_ADVICE_CHARS, Lines::One),
        text: safe::clean_field(&w.text, MAX_TEXT_BYTES, Lines::Many),
        sent_at_ms,
        expires_at_ms,
        author_tag: None,
        anonymous: None,
    };
    (!subject_key(&warning.subject).is_empty()).then_some(warning)
}

/// The history line of a received warning, shown under `name`.
pub(super) fn history_record(w: &WarningRecord, name: &str, received: u64) -> MessageRecord {
    MessageRecord {
        id: w.id,
        peer: w.author,
        direction: MessageDirection::Incoming,
        sender_name: name.to_string(),
        text: history_text(w),
        sent_at_ms: w.sent_at_ms,
        received_at_ms: received,
        status: MessageStatus::Received,
        group: Some(w.group.to_vec()),
        expires_at_ms: w.expires_at_ms,
    }
}

/// The warning as a line of history, for members who read the group's
/// messages rather than `sotto warnings`.
fn history_text(w: &WarningRecord) -> String {
    let mut out = format!("[warning] about {}", w.subject);
    if !w.role.is_empty() {
        out.push_str(&format!(" ({})", w.role));
    }
    out.push_str(&format!(
        ": {}, {}",
        w.kind,
        if w.firsthand {
            "first-hand"
        } else {
            "second-hand"
        }
    ));
    for (label, v) in [
        ("where", &w.place),
        ("when", &w.when),
        ("advice", &w.advice),
    ] {
        if !v.is_empty() {
            out.push_str(&format!("; {label}: {v}"));
        }
    }
    if !w.text.is_empty() {
        out.push_str(&format!(". {}", w.text));
    }
    out
}

impl Engine {
    /// Posts a warning to a group. Returns once the relay has it for every member.
    pub async fn warn(&mut self, query: &str, input: WarningInput) -> Result<WarningView> {
        let input = input.checked(!self.unchecked)?;
        let g = self.find_group(query)?;
        self.require_active(&g)?;
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
        // My ring key must be in the state for my author proof to verify
        // (a round trip to the relay only when this app has not seen it there).
        let me = self.account.account_id;
        let my_key = hex(&self.ring_secret(&g.id).public().to_bytes());
        if g.state.member(me).and_then(|m| m.ring_key.as_deref()) != Some(my_key.as_str()) {
            self.ensure_ring_key(g.id).await?;
        }
        let mut warning_body = warning_content(g.id, input, !self.unchecked)?;
        let (id, mut body) = new_content(
            &self.account.name,
            content::content::Body::Warning(warning_body.clone()),
        );
        warning_body.author_proof = self.author_proof(&g.id, &id)?;
        body.body = Some(content::content::Body::Warning(warning_body.clone()));
        let Some(mut warning) = warning_record(
            &warning_body,
            id,
            g.id,
            me,
            body.sent_at_ms,
            &g.state.settings,
        ) else {
            return Err(EngineError::Invalid(
                "the warning's retention has already run out".into(),
            ));
        };
        warning.author_tag = Some(self.ring_secret(&g.id).tag(&super::anon::scope(&g.id, &id)));
        let mut record = history_record(&warning, &self.account.name, body.sent_at_ms);
        record.direction = MessageDirection::Outgoing;
        record.status = MessageStatus::Pending;
        // Stored with the message, so a crash cannot leave one without the other.
        self.store.insert_warning(&warning)?;
        let entry = self.group_entry(&g, id, &body);
        self.send_stored(&record, &entry).await?.relayed()?;
        let card = Routes::from_env()
            .ok()
            .and_then(|r| route_card(&r, &warning.kind, &warning.when, today()));
        Ok(view(&warning, &g.state.title, me, card))
    }

    /// A warning from a member arrived. Returns its history record.
    pub(super) async fn on_warning(
        &mut self,
        sender: Uuid,
        content: &Content,
        w: &content::Warning,
    ) -> Result<Option<MessageRecord>> {
        let Some(Admitted {
            id,
            group_id,
            name,
            settings,
        }) = self.admit_group_post(sender, content, &w.group_id).await?
        else {
            return Ok(None);
        };
        // A named warning proves its author's linking tag, so the author
        // cannot add an anonymous "me too" to their own warning.
        let Some(mut g) = self.store.group(group_id)? else {
            return Ok(None);
        };
        let mut checked = check_author_proof(&g.state, &group_id, sender, &id, &w.author_proof);
        if checked.is_err() {
            // Perhaps their ring key was published after our last update.
            self.refresh(&mut g).await?;
            checked = check_author_proof(&g.state, &group_id, sender, &id, &w.author_proof);
        }
        let author_tag = match checked {
            Ok(tag) => tag,
            Err(why) => {
                self.notices.push(super::Notice::Group(format!(
                    "dropped a warning to \"{}\": {why}",
                    g.state.title
                )));
                return Ok(None);
            }
        };
        let Some(mut warning) =
            warning_record(w, id, group_id, sender, content.sent_at_ms, &settings)
        else {
            return Ok(None);
        };
        warning.author_tag = Some(author_tag);
        let record = history_record(&warning, &name, now_ms());
        if !self.store.insert_message(&record)? {
            return Ok(None);
        }
        self.store.insert_warning(&warning)?;
        Ok(Some(record))
    }

    /// Warnings grouped by subject across my groups (or one group), most
    /// reported first. `about` keeps the subject that name matches.
    pub fn warnings(
        &mut self,
        group: Option<&str>,
        about: Option<&str>,
    ) -> Result<Vec<SubjectSummary>> {
        self.store.purge_expired(now_ms())?;
        let routes =
            Routes::from_env().map_err(|e| EngineError::Invalid(format!("SOTTO_ROUTES: {e}")))?;
        let today = today();
        let card = |kind: &str, when: &str| route_card(&routes, kind, when, today);
        let only = match group {
            Some(q) => Some(self.find_group(q)?.id),
            None => None,
        };
        let merges: HashMap<String, String> = self.store.subject_merges()?.into_iter().collect();
        let resolve = |key: String| -> String {
            let mut key = key;
            // Follow merges, guarding against a loop made by hand.
            for _ in 0..16 {
                match merges.get(&key) {
                    Some(next) if *next != key => key = next.clone(),
                    _ => break,
                }
            }
            key
        };
        let wanted = about.map(subject_key);
        let mut titles: HashMap<[u8; 16], String> = HashMap::new();
        let mut by_key: BTreeMap<String, Vec<WarningRecord>> = BTreeMap::new();
        for w in self.store.warnings()? {
            if only.is_some_and(|g| g != w.group) {
                continue;
            }
            let key = resolve(subject_key(&w.subject));
            if let std::collections::hash_map::Entry::Vacant(slot) = titles.entry(w.group) {
                let title = self.store.group_title(w.group)?;
                slot.insert(title.unwrap_or_else(|| "(a group)".into()));
            }
            by_key.entry(key).or_default().push(w);
        }
        // A search keeps every subject the name could be: the best match
        // among its key (after merges) and the names its warnings use.
        let mut matched: HashMap<String, NameMatch> = HashMap::new();
        if let Some(query) = &wanted {
            let merged_query = resolve(query.clone());
            by_key.retain(|key, ws| {
                let best = std::iter::once(key.clone())
                    .chain(ws.iter().map(|w| subject_key(&w.subject)))
                    .filter_map(|k| {
                        if k == merged_query || k == *query {
                            Some(NameMatch::Exact)
                        } else {
                            name_match(query, &k)
                        }
                    })
                    .min();
                if let Some(m) = best {
                    matched.insert(key.clone(), m);
                }
                best.is_some()
            });
        }
        let corroborations = self.store.corroborations()?;
        let mut out: Vec<SubjectSummary> = by_key
            .into_iter()
            .map(|(key, mut ws)| {
                ws.sort_by_key(|w| std::cmp::Reverse((w.sent_at_ms, w.id)));
                // Reporters: named authors by account; anonymous authors and
                // corroborators by their linking tag (one per member per
                // warning, so a member who corroborates two warnings about
                // the same person counts in each).
                let mut reports: Vec<(Reporter, bool)> = Vec::new();
                for w in &ws {
                    reports.push((reporter_of(w), w.firsthand));
                    for c in &corroborations {
                        if c.warning == w.id && c.group == w.group && Some(c.tag) != w.author_tag {
                            reports.push((Reporter::Tag(c.tag), c.firsthand));
                        }
                    }
                }
                let first: BTreeSet<Reporter> = reports
                    .iter()
                    .filter(|(_, f)| *f)
                    .map(|(r, _)| *r)
                    .collect();
                let second: BTreeSet<Reporter> = reports
                    .iter()
                    .filter(|(r, f)| !*f && !first.contains(r))
                    .map(|(r, _)| *r)
                    .collect();
                let mut name_counts: BTreeMap<&str, usize> = BTreeMap::new();
                let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
                let mut roles: Vec<String> = Vec::new();
                let mut groups: Vec<String> = Vec::new();
                for w in &ws {
                    *name_counts.entry(w.subject.as_str()).or_default() += 1;
                    *kinds.entry(w.kind.clone()).or_default() += 1;
                    if !w.role.is_empty() && !roles.contains(&w.role) {
                        roles.push(w.role.clone());
                    }
                    let title = &titles[&w.group];
                    if !groups.contains(title) {
                        groups.push(title.clone());
                    }
                }
                let mut names: Vec<(&str, usize)> = name_counts.into_iter().collect();
                names.sort_by_key(|(n, c)| (std::cmp::Reverse(*c), *n));
                // The latest date of the behaviour itself; only when no
                // warning gives one, the latest posting date.
                let newest = ws
                    .iter()
                    .map(|w| w.when.clone())
                    .filter(|w| !w.is_empty())
                    .max()
                    .or_else(|| ws.iter().map(|w| w.sent_at_ms).max().map(day_of))
                    .unwrap_or_default();
                let me = self.account.account_id;
                SubjectSummary {
                    matched: matched.get(&key).copied(),
                    key,
                    names: names.into_iter().map(|(n, _)| n.to_string()).collect(),
                    roles,
                    firsthand_reporters: first.len(),
                    secondhand_reporters: second.len(),
                    kinds,
                    newest,
                    groups,
                    warnings: ws
                        .iter()
                        .map(|w| {
                            let mut v = view(w, &titles[&w.group], me, card(&w.kind, &w.when));
                            let (all, firsthand, mine) = count_corroborations(&corroborations, w);
                            v.corroborations = all;
                            v.corroborations_firsthand = firsthand;
                            v.corroborated_by_me = mine;
                            v
                        })
                        .collect(),
                }
            })
            .collect();
        // Exact matches of a search first, then the most reported.
        out.sort_by_key(|s| {
            (
                s.matched,
                std::cmp::Reverse(s.firsthand_reporters + s.secondhand_reporters),
                s.key.clone(),
            )
        });
        Ok(out)
    }

    /// Treats `from` as the same person as `into` in `sotto warnings` (this
    /// app only). Both must name subjects I hold warnings about.
    pub fn merge_subjects(&mut self, from: &str, into: &str) -> Result<(String, String)> {
        let (from_key, into_key) = (subject_key(from), subject_key(into));
        if from_key.is_empty() || into_key.is_empty() {
            return Err(EngineError::Invalid(
                "give two names to merge, e.g. --merge \"J. Smith\" --into \"John Smith\"".into(),
            ));
        }
        if from_key == into_key {
            return Err(EngineError::Invalid(format!(
                "{from:?} and {into:?} already match the same subject"
            )));
        }
        let known: BTreeSet<String> = self
            .store
            .warnings()?
            .iter()
            .map(|w| subject_key(&w.subject))
            .collect();
        for (name, key) in [(from, &from_key), (into, &into_key)] {
            if !known.contains(key) {
                return Err(EngineError::Invalid(format!(
                    "no warning is about {name:?}; see `sotto warnings` for the names in use"
                )));
            }
        }
        self.store.merge_subject(&from_key, &into_key)?;
        Ok((from_key, into_key))
    }
}

/// Where a warning of `kind` dated `when` can go, with its deadlines.
fn route_card(routes: &Routes, kind: &str, when: &str, today: Date) -> Option<Card> {
    routes
        .card_data(kind, GivenDate::parse(when).ok(), today)
        .ok()
}

/// Who a report counts as: a named author's account, or an anonymous
/// author's or corroborator's linking tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Reporter {
    Account(Uuid),
    Tag([u8; 32]),
}

fn reporter_of(w: &WarningRecord) -> Reporter {
    match (&w.anonymous, w.author_tag) {
        (Some(_), Some(tag)) => Reporter::Tag(tag),
        _ => Reporter::Account(w.author),
    }
}

/// Distinct corroborators of `w` (all, first-hand) not counting its author,
/// and whether I am one.
pub(super) fn count_corroborations(
    all: &[CorroborationRecord],
    w: &WarningRecord,
) -> (usize, usize, bool) {
    let mine = all
        .iter()
        .filter(|c| c.warning == w.id && c.group == w.group && Some(c.tag) != w.author_tag);
    mine.fold((0, 0, false), |(n, f, m), c| {
        (n + 1, f + usize::from(c.firsthand), m || c.mine)
    })
}

fn view(w: &WarningRecord, group: &str, me: Uuid, routes: Option<Card>) -> WarningView {
    WarningView {
        id: hex(&w.id),
        group: group.to_string(),
        subject: w.subject.clone(),
        role: w.role.clone(),
        kind: w.kind.clone(),
        firsthand: w.firsthand,
        place: w.place.clone(),
        when: w.when.clone(),
        advice: w.advice.clone(),
        text: w.text.clone(),
        sent_at_ms: w.sent_at_ms,
        mine: w.author == me,
        anonymous: w.anonymous.clone(),
        corroborations: 0,
        corroborations_firsthand: 0,
        corroborated_by_me: false,
        routes,
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` of a time in ms since the epoch.
pub fn day_time(ms: u64) -> String {
    let secs = ms / 1000 % 86_400;
    format!(
        "{} {:02}:{:02}:{:02} UTC",
        day_of(ms),
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// `YYYY-MM-DD` (UTC) of a time in ms since the epoch.
pub fn day_of(ms: u64) -> String {
    Date::from_days_since_epoch((ms / 86_400_000) as i64).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_match_across_case_accents_titles_and_spacing() {
        let same = [
            "Sir John Smith MP",
            "john smith",
            "JOHN  SMITH",
            "Jöhn Smíth",
            "The Rt Hon. John Smith, MP",
            "Mr John Smith",
        ];
        for name in same {
            assert_eq!(subject_key(name), "john smith", "{name:?}");
        }
        assert_ne!(subject_key("John Smith"), subject_key("Jane Smith"));
        assert_ne!(subject_key("John Smith"), subject_key("John Smithson"));
        assert_eq!(subject_key("Dame Joan O'Brien"), "joan o brien");
        assert_eq!(subject_key("The Minister"), "minister");
        // Only titles: keep them rather than match everyone.
        assert_eq!(subject_key("The MP"), "the mp");
        assert_eq!(subject_key("  "), "");
    }

    /// Issue 12, item 1: names in any script keep their words, and spelling
    /// variants fold together.
    #[test]
    fn subject_keys_keep_every_script_and_fold_its_variants() {
        // Combining accents (as typed on some systems) do not split a word.
        assert_eq!(subject_key("Jo\u{301}hn Smi\u{301}th"), "john smith");
        // Arabic: vowel points, shadda, tatweel and alef forms do not matter.
        let plain = subject_key("محمد الرشيد");
        assert_eq!(plain, "محمد الرشيد");
        for variant in ["مُحَمَّد الرَّشِيد", "محـمد الرشيد", "الدكتور محمد الرشيد"]
        {
            assert_eq!(subject_key(variant), plain, "{variant:?}");
        }
        assert_eq!(subject_key("أحمد"), subject_key("احمد"));
        assert_eq!(subject_key("فاطمة"), subject_key("فاطمه"));
        assert_ne!(subject_key("محمد"), subject_key("أحمد"));
        // Other scripts stay as they are, lowercased.
        assert_eq!(subject_key("Ἀλέξης Παππάς"), subject_key("ἀλεξης παππας"));
        assert_eq!(subject_key("Пётр Иванов"), "петр иванов");
        assert_eq!(subject_key("王小明"), "王小明");
        assert_eq!(subject_key("राम शर्मा"), "राम शर्मा");
        assert_ne!(subject_key("राम"), subject_key("रम"));
        assert_eq!(subject_key("Strauß"), "strauss");
    }

    #[test]
    fn a_surname_or_initials_match_the_full_name() {
        let key = subject_key("Sir John Smith MP");
        let m = |q: &str| name_match(&subject_key(q), &key);
        assert_eq!(m("John Smith"), Some(NameMatch::Exact));
        for partial in [
            "smith",
            "SMITH",
            "J. Smith",
            "Smith, John",
            "John Michael Smith",
        ] {
            assert_eq!(m(partial), Some(NameMatch::Partial), "{partial:?}");
        }
        for other in ["Jane Smith", "Smithson", "J.", "J. S.", "Jones", "K. Smith"] {
            assert_eq!(m(other), None, "{other:?}");
        }
        // The subject written with an initial matches the full name too.
        assert_eq!(
            name_match(&subject_key("John Smith"), &subject_key("J Smith")),
            Some(NameMatch::Partial)
        );
        // Arabic: the family name alone, and a vocalised spelling.
        let arabic = subject_key("محمد الرشيد");
        assert_eq!(
            name_match(&subject_key("الرشيد"), &arabic),
            Some(NameMatch::Partial)
        );
        assert_eq!(
            name_match(&subject_key("مُحَمَّد الرَّشِيد"), &arabic),
            Some(NameMatch::Exact)
        );
        // Chinese: the family name is written joined to the given name.
        assert_eq!(
            name_match(&subject_key("王"), &subject_key("王小明")),
            Some(NameMatch::Partial)
        );
        assert_eq!(name_match(&subject_key("李"), &subject_key("王小明")), None);
    }

    #[test]
    fn when_is_a_month_or_a_real_day() {
        for ok in ["", "2024-03", "2024-03-14", "2024-02-29"] {
            assert!(check_when(ok).is_ok(), "{ok}");
        }
        for bad in [
            "2024",
            "2024-13",
            "2023-02-29",
            "2024-3-1",
            "March 2024",
            "2024-04-31",
        ] {
            assert!(check_when(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn days_of_known_times() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(951_782_400_000), "2000-02-29");
        assert_eq!(day_of(1_709_164_800_000), "2024-02-29");
    }

    #[test]
    fn input_is_checked_before_anything_is_sent() {
        let ok = WarningInput {
            subject: " Sir John Smith ".into(),
            kind: "bullying".into(),
            when: "2024-03".into(),
            ..Default::default()
        };
        assert_eq!(
            ok.clone().checked(true).expect("valid").subject,
            "Sir John Smith"
        );
        let bad_kind = WarningInput {
            kind: "rudeness".into(),
            ..ok.clone()
        };
        let err = bad_kind.checked(true).expect_err("bad kind").to_string();
        assert!(err.contains("sexual-misconduct"), "{err}");
        let no_subject = WarningInput {
            subject: "  ".into(),
            ..ok.clone()
        };
        assert!(no_subject.checked(true).is_err());
        let bad_when = WarningInput {
            when: "last spring".into(),
            ..ok
        };
        assert!(bad_when.checked(true).is_err());
    }

    fn input() -> WarningInput {
        WarningInput {
            subject: "Sir John Smith".into(),
            kind: "bullying".into(),
            ..Default::default()
        }
    }

    #[test]
    fn fields_with_controls_or_too_long_are_refused_at_the_source() {
        for (field, bad) in [
            ("--about", "John\n[2026-12-03 15:01] rosa: hi"),
            ("--role", "MP\u{1b}[2J"),
            ("--where", "office\u{202E}"),
            ("--advice", "run\rEve"),
        ] {
            let mut w = input();
            match field {
                "--about" => w.subject = bad.into(),
                "--role" => w.role = bad.into(),
                "--where" => w.place = bad.into(),
                _ => w.advice = bad.into(),
            }
            let err = w.checked(true).expect_err(field).to_string();
            assert!(err.starts_with(field) && err.contains("U+"), "{err}");
        }
        let long = WarningInput {
            role: "é".repeat(safe::MAX_SHORT_CHARS + 1),
            ..input()
        };
        let err = long.checked(true).expect_err("long role").to_string();
        assert!(err.contains("too long"), "{err}");
        // Exactly at the limit, in a multi-byte script, is fine.
        let at_limit = WarningInput {
            advice: "é".repeat(safe::MAX_ADVICE_CHARS),
            text: "line one\n\tline two".into(),
            ..input()
        };
        assert!(at_limit.checked(true).is_ok());
        let bad_text = WarningInput {
            text: "a\u{8}\u{8}b".into(),
            ..input()
        };
        assert!(bad_text.checked(true).is_err());
    }

    #[test]
    fn a_received_warning_is_cleaned_and_cut() {
        let w = content::Warning {
            group_id: vec![0; 16],
            subject: "Sir John Smith\n[2026-12-03 15:01] rosa: fake".into(),
            role: "x".repeat(1000),
            kind: "bullying".into(),
            firsthand: true,
            place: "\u{1b}]0;title\u{7}office".into(),
            when: String::new(),
            advice: "don't\u{202E}".into(),
            text: "one\ntwo\u{1b}[2J".into(),
            author_proof: Vec::new(),
        };
        let r = warning_record(
            &w,
            [1; 16],
            [0; 16],
            Uuid::nil(),
            now_ms(),
            &Settings::default(),
        )
        .expect("kept");
        for f in [&r.subject, &r.role, &r.place, &r.advice] {
            assert!(!f.chars().any(safe::is_unsafe), "{f:?}");
        }
        assert_eq!(r.role.chars().count(), safe::MAX_SHORT_CHARS);
        assert_eq!(r.text, "one\ntwo\u{FFFD}[2J");
    }
}
