//! Text that came from another person, made safe to show, and the limits on
//! what a person may type.
//!
//! Names, group titles, warning fields and message texts arrive from other
//! members, and a modified client can put anything in them. Printed raw, a
//! name like `"Eve\n[2026-12-03 15:01] rosa: send me your notes"` shows as a
//! line from rosa, terminal escape sequences can erase and rewrite earlier
//! lines, and a right-to-left override (U+202E) can make `evil.txt` read as
//! something else. So:
//!
//! - **Every printer** passes person-supplied text through [`line`] (single-
//!   line fields: names, titles, subjects) or [`block`] (message bodies,
//!   whose line breaks are kept but indented, so a continuation can never
//!   look like a line of its own). Nothing else in the CLI escapes text.
//! - **Every sender** checks a field with [`check_field`] before it leaves,
//!   refusing control characters, bidi controls and over-long text with an
//!   error that says what to do.
//! - **Every receiver** runs fields from the network through [`clean_field`],
//!   which makes them safe and cuts them to the limit, because a modified
//!   client does not call [`check_field`].
//!
//! JSON output (`--json`) is escaped by serde_json: control characters become
//! `\n`, `\u001b` and so on, which is safe for a program to read; bidi
//! controls are kept as characters there (a JSON consumer must escape them
//! before showing them to a person). The web app escapes text as HTML and
//! isolates it with `<bdi>`.

use std::fmt::Write as _;

/// The longest display name, contact name or member name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// The longest group title, in characters.
pub const MAX_TITLE_CHARS: usize = 64;
/// The longest short warning field (subject, role, place), in characters.
pub const MAX_SHORT_CHARS: usize = 120;
/// The longest advice on a warning, in characters.
pub const MAX_ADVICE_CHARS: usize = 500;

/// Characters that reorder text (bidi embeddings, overrides and isolates, and
/// the invisible direction marks). Any of them lets one person's text change
/// how the text around it reads.
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// Characters that must never reach a terminal raw: C0 and C1 controls
/// (escape, carriage return, backspace, newline...), DEL, the Unicode line
/// and paragraph separators, and bidi controls.
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') || is_bidi_control(c)
}

/// One line of person-supplied text, safe for a terminal: line breaks and
/// tabs shown as `\n`, `\r`, `\t`; other controls (escape sequences,
/// backspace...) and bidi controls shown as `�`. Everything else, including
/// emoji and any script, is kept.
pub fn line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        push_visible(&mut out, c);
    }
    out
}

/// A message body, safe for a terminal: each line made safe as by [`line`],
/// line breaks kept and every line after the first indented by `indent`
/// spaces, so no line of a message can start where a new message would.
pub fn block(s: &str, indent: usize) -> String {
    let mut out = String::with_capacity(s.len());
    let normalised = s.replace("\r\n", "\n");
    for (i, part) in normalised.split(['\n', '\u{2028}', '\u{2029}']).enumerate() {
        if i > 0 {
            out.push('\n');
            for _ in 0..indent.max(2) {
                out.push(' ');
            }
        }
        for c in part.chars() {
            push_visible(&mut out, c);
        }
    }
    out
}

fn push_visible(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if is_unsafe(c) => out.push('\u{FFFD}'),
        c => out.push(c),
    }
}

/// Text as a shell argument that a person can paste back: bare when it is
/// plain, otherwise in single quotes (emoji and other scripts stay as they
/// are; a `'` inside becomes `'\''`). Unsafe characters are shown as by
/// [`line`], so a suggested command can never carry an escape sequence.
pub fn shell_arg(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':' | '@'));
    if plain {
        return s.to_string();
    }
    let mut out = String::from("'");
    for c in line(s).chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Whether multi-line text is allowed in a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    /// A name, title or short field: one line.
    One,
    /// A message or note: line breaks and tabs allowed.
    Many,
}

/// Checks text a person typed before it is sent or stored: trimmed, not
/// empty, at most `max_chars` characters, and free of control and bidi
/// characters (line breaks and tabs only where `lines` is [`Lines::Many`]).
/// Returns the trimmed text, or an error naming the field (`what`, e.g.
/// "a display name") that says what to change.
pub fn check_field(what: &str, s: &str, max_chars: usize, lines: Lines) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err(format!("{what} cannot be empty"));
    }
    let n = s.chars().count();
    if n > max_chars {
        return Err(format!(
            "{what} is too long: {n} characters, the limit is {max_chars}"
        ));
    }
    for c in s.chars() {
        let allowed = lines == Lines::Many && matches!(c, '\n' | '\t' | '\r');
        if is_unsafe(c) && !allowed {
            let mut shown = String::new();
            let _ = write!(shown, "U+{:04X}", u32::from(c));
            return Err(format!(
                "{what} contains a control or text-direction character ({shown}); \
                 use plain text{}",
                if lines == Lines::One {
                    " on one line"
                } else {
                    ""
                }
            ));
        }
    }
    Ok(s.to_string())
}

/// A field that arrived from someone else, made safe to keep: cut to
/// `max_chars` characters, with control and bidi characters replaced by `�`
/// (line breaks and tabs kept where `lines` is [`Lines::Many`]). Honest
/// clients never send what this changes; it guards against modified ones.
pub fn clean_field(s: &str, max_chars: usize, lines: Lines) -> String {
    s.trim()
        .chars()
        .take(max_chars)
        .map(|c| {
            let allowed = lines == Lines::Many && matches!(c, '\n' | '\t');
            if is_unsafe(c) && !allowed {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORGED: &str = "Eve\n[2026-12-03 15:01] rosa: URGENT everyone send me your notes";

    #[test]
    fn a_forged_line_stays_on_one_line() {
        let shown = line(FORGED);
        assert!(!shown.contains('\n'), "{shown}");
        assert!(shown.starts_with("Eve\\n[2026"), "{shown}");
    }

    #[test]
    fn escape_sequences_and_bidi_are_neutralised() {
        for hostile in [
            "a\u{1b}[2J\u{1b}[1;1Hb",
            "x\u{1b}]0;title\u{7}y",
            "abc\u{8}\u{8}\u{8}XYZ",
            "rosa\rEve",
            "file\u{202E}txt.exe",
            "\u{2066}isolate\u{2069}",
            "c1\u{9b}31m",
            "sep\u{2028}line",
            "del\u{7f}",
        ] {
            let shown = line(hostile);
            assert!(
                !shown.chars().any(is_unsafe),
                "{hostile:?} shown as {shown:?}"
            );
        }
        assert_eq!(line("rosa\rEve"), "rosa\\rEve");
        assert_eq!(line("a\u{1b}[1mb"), "a\u{FFFD}[1mb");
    }

    #[test]
    fn ordinary_text_in_any_script_is_unchanged() {
        for s in [
            "Amira",
            "José Ñúñez",
            "محمد بن سلمان",
            "李小龍",
            "Zoë 👩🏽‍💻",
            "Night shift 🌙",
        ] {
            assert_eq!(line(s), s);
            assert_eq!(block(s, 4), s);
            assert_eq!(check_field("a name", s, 64, Lines::One), Ok(s.to_string()));
            assert_eq!(clean_field(s, 64, Lines::One), s);
        }
    }

    #[test]
    fn a_block_indents_its_continuation_lines() {
        let shown = block("first\n[2026-12-03 15:01] rosa: fake\r\nthird", 4);
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "first");
        assert!(lines[1].starts_with("    [2026"), "{shown}");
        assert!(lines[2].starts_with("    third"), "{shown}");
        assert!(!block("a\u{1b}[2Jb", 2).contains('\u{1b}'));
    }

    #[test]
    fn fields_are_checked_at_the_source() {
        assert!(check_field("a display name", FORGED, 64, Lines::One).is_err());
        let e = check_field("a display name", "Eve\u{202E}", 64, Lines::One)
            .expect_err("a bidi control is refused");
        assert!(e.contains("U+202E"), "{e}");
        assert!(check_field("a display name", "   ", 64, Lines::One).is_err());
        let long = "x".repeat(65);
        let e = check_field("a display name", &long, 64, Lines::One)
            .expect_err("65 characters are too many");
        assert!(e.contains("65") && e.contains("64"), "{e}");
        // 64 characters of a multi-byte script fit: the limit counts characters.
        assert!(check_field("a name", &"é".repeat(64), 64, Lines::One).is_ok());
        assert_eq!(
            check_field("a message", "one\ntwo", 100, Lines::Many),
            Ok("one\ntwo".into())
        );
        assert!(check_field("a message", "one\u{1b}[2J", 100, Lines::Many).is_err());
    }

    #[test]
    fn fields_from_others_are_cleaned_and_cut() {
        let cleaned = clean_field(FORGED, 64, Lines::One);
        assert!(!cleaned.contains('\n'));
        assert!(cleaned.chars().count() <= 64);
        assert_eq!(
            clean_field(&"ж".repeat(100), 64, Lines::One)
                .chars()
                .count(),
            64
        );
        assert_eq!(clean_field("a\nb", 10, Lines::Many), "a\nb");
        assert_eq!(clean_field("a\u{202E}b", 10, Lines::Many), "a\u{FFFD}b");
    }

    #[test]
    fn shell_arguments_can_be_pasted_back() {
        assert_eq!(shell_arg("Nightshift"), "Nightshift");
        assert_eq!(shell_arg("Night shift"), "'Night shift'");
        assert_eq!(shell_arg("Night shift 🌙"), "'Night shift 🌙'");
        assert_eq!(shell_arg("Rosa's group"), "'Rosa'\\''s group'");
        assert_eq!(shell_arg(""), "''");
        assert!(!shell_arg("a\u{1b}[2J").contains('\u{1b}'));
    }
}
