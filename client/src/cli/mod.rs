//! The one way the `sotto` command writes to the terminal.
//!
//! Names, titles, warning fields and texts come from other people, and a
//! modified app can put line breaks, carriage returns, backspaces, escape
//! sequences and text-direction overrides in them: printed raw, they forge
//! lines ("[15:01] rosa: send me your notes") or rewrite earlier ones. So
//! `main.rs` never calls `println!`/`writeln!` itself (a test below keeps it
//! so): every line of text goes through [`say!`] or [`tell!`], which make the
//! whole line safe with [`safe::line`]; message bodies go through
//! [`entry`], which keeps their line breaks but indents them with
//! [`safe::block`]; JSON goes through [`json`], escaped by serde_json.

use std::io::{self, Write};

use sotto_client::safe;

/// Writes one line to `out` (a `Write`), formatted as by `format!` and made
/// safe as a whole: nothing in it can start a new line or move the cursor.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {
        $crate::cli::line($out.by_ref(), &format!($($arg)*))
    };
}

/// Writes one line to stdout, made safe as by [`say!`]; like `println!`,
/// but a closed pipe is not a panic.
macro_rules! show {
    ($($arg:tt)*) => {{
        let _ = $crate::cli::line(&mut $crate::cli::stdout(), &format!($($arg)*));
    }};
}

/// Writes one line to stderr (notices, warnings, errors), made safe as by [`say!`].
macro_rules! tell {
    ($($arg:tt)*) => {
        $crate::cli::tell_line(&format!($($arg)*))
    };
}

/// Whether standard output is a terminal (a person reads it, not a script).
pub(crate) fn stdout_is_terminal() -> bool {
    io::IsTerminal::is_terminal(&io::stdout())
}

/// Standard output, for the functions here.
pub(crate) fn stdout() -> io::StdoutLock<'static> {
    io::stdout().lock()
}

/// Writes `text` as one line, made safe.
pub(crate) fn line(out: &mut impl Write, text: &str) -> io::Result<()> {
    writeln!(out, "{}", safe::line(text))
}

/// Writes `text` as one line to stderr, made safe.
pub(crate) fn tell_line(text: &str) {
    let _ = writeln!(io::stderr().lock(), "{}", safe::line(text));
}

/// Writes an error (which may quote names and titles) to stderr: its own
/// line breaks kept and indented, everything else made safe.
pub(crate) fn error(text: &str) {
    let _ = writeln!(io::stderr().lock(), "error: {}", safe::block(text, 2));
}

/// Writes a line that ends in a person's text (a message, a post, a note):
/// `head` and `tail` made safe as one line each, `text` keeping its line
/// breaks, each continuation indented so it can never look like a line of
/// its own.
pub(crate) fn entry(out: &mut impl Write, head: &str, text: &str, tail: &str) -> io::Result<()> {
    writeln!(
        out,
        "{}{}{}",
        safe::line(head),
        safe::block(text, 4),
        safe::line(tail)
    )
}

/// Writes text of several lines made by this program (a routes card): each
/// line made safe, the line breaks kept.
pub(crate) fn lines(out: &mut impl Write, text: &str) -> io::Result<()> {
    for l in text.lines() {
        line(out, l)?;
    }
    Ok(())
}

/// Writes one JSON value as one line. serde_json escapes control characters
/// (`\n`, `\u001b`); text-direction characters stay as they are, for the
/// program reading it to escape before showing them (see the README).
pub(crate) fn json(out: &mut impl Write, value: &impl serde::Serialize) -> io::Result<()> {
    let text = serde_json::to_string(value).map_err(io::Error::other)?;
    writeln!(out, "{text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_prints_nothing_except_through_this_module() {
        let main = include_str!("../main.rs");
        for raw in [
            "println!(",
            "print!(",
            "writeln!(",
            "write!(",
            "eprint!(",
            "std::io::stdout",
        ] {
            let uses: Vec<(usize, &str)> = main
                .lines()
                .enumerate()
                .filter(|(_, l)| l.contains(raw))
                .collect();
            assert!(
                uses.is_empty(),
                "main.rs writes with {raw} outside the safe printing layer: {uses:?}"
            );
        }
    }

    #[test]
    fn a_forged_line_stays_inside_its_own() {
        let mut out = Vec::new();
        say!(
            out,
            "~{}: {}",
            "Eve\n[2026-12-03 15:01] rosa",
            "hi\u{1b}[2J"
        )
        .expect("write");
        let shown = String::from_utf8(out).expect("utf-8");
        assert_eq!(shown.lines().count(), 1, "{shown}");
        assert!(!shown.trim_end().chars().any(safe::is_unsafe), "{shown:?}");

        let mut out = Vec::new();
        entry(
            &mut out,
            "[2026-12-03 15:00] ~Eve\r: ",
            "one\n[2026-12-03 15:01] rosa: fake\u{202E}",
            "  (not sent)",
        )
        .expect("write");
        let shown = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 2, "{shown}");
        assert!(lines[0].starts_with("[2026-12-03 15:00] ~Eve\\r: one"));
        assert!(lines[1].starts_with("    [2026"), "{shown}");
        for l in lines {
            assert!(!l.chars().any(safe::is_unsafe), "{shown:?}");
        }
    }

    #[test]
    fn json_is_escaped_by_serde() {
        let mut out = Vec::new();
        json(&mut out, &serde_json::json!({"name": "Eve\n\u{1b}[2J"})).expect("write");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "{\"name\":\"Eve\\n\\u001b[2J\"}\n"
        );
    }
}
