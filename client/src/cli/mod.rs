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

use std::cell::RefCell;
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

// A command forwarded to the service (see `control`) runs in the service's
// process: what it prints is captured here, in order, and sent back to the
// `sotto` process that asked, which prints it. A task-local, so that it
// follows the command's future across awaits and nothing else the service
// runs meanwhile is captured with it.
tokio::task_local! {
    static FORWARDED: RefCell<Forwarded>;
}

/// The printing context of a forwarded command.
pub(crate) struct Forwarded {
    /// Whether the client's stdout is a terminal.
    terminal: bool,
    /// What was printed: (to stderr?, text), in order.
    chunks: Vec<(bool, String)>,
    /// The duress passphrase the client read, for `duress set`.
    pub(crate) duress_passphrase: Option<String>,
}

/// Runs `work` with its output captured as by a client whose stdout is a
/// terminal or not; returns its result and what it printed.
pub(crate) async fn captured<T>(
    terminal: bool,
    duress_passphrase: Option<String>,
    work: impl std::future::Future<Output = T>,
) -> (T, Vec<(bool, String)>) {
    let context = RefCell::new(Forwarded {
        terminal,
        chunks: Vec::new(),
        duress_passphrase,
    });
    FORWARDED
        .scope(context, async move {
            let result = work.await;
            let chunks = FORWARDED.with(|f| std::mem::take(&mut f.borrow_mut().chunks));
            (result, chunks)
        })
        .await
}

/// Whether this runs as a command forwarded to the service.
pub(crate) fn is_forwarded() -> bool {
    FORWARDED.try_with(|_| ()).is_ok()
}

/// The duress passphrase a forwarding client sent, if this is a forwarded command.
pub(crate) fn forwarded_duress_passphrase() -> Option<Option<String>> {
    FORWARDED
        .try_with(|f| f.borrow().duress_passphrase.clone())
        .ok()
}

fn capture(to_stderr: bool, text: &[u8]) -> bool {
    FORWARDED
        .try_with(|f| {
            let text = String::from_utf8_lossy(text).into_owned();
            let mut f = f.borrow_mut();
            match f.chunks.last_mut() {
                Some((err, last)) if *err == to_stderr => last.push_str(&text),
                _ => f.chunks.push((to_stderr, text)),
            }
        })
        .is_ok()
}

/// Whether standard output is a terminal (a person reads it, not a script);
/// for a forwarded command, the client's.
pub(crate) fn stdout_is_terminal() -> bool {
    FORWARDED
        .try_with(|f| f.borrow().terminal)
        .unwrap_or_else(|_| io::IsTerminal::is_terminal(&io::stdout()))
}

/// Standard output (or, for a forwarded command, its capture).
pub(crate) fn stdout() -> Out {
    Out
}

/// Where [`stdout`] writes.
pub(crate) struct Out;

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if capture(false, buf) {
            return Ok(buf.len());
        }
        io::stdout().lock().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stdout().lock().flush()
    }
}

/// Writes `text` as one line, made safe.
pub(crate) fn line(out: &mut impl Write, text: &str) -> io::Result<()> {
    writeln!(out, "{}", safe::line(text))
}

/// Writes to stderr (or, for a forwarded command, its capture).
fn to_stderr(text: &str) {
    if !capture(true, text.as_bytes()) {
        let _ = io::stderr().lock().write_all(text.as_bytes());
    }
}

/// Writes `text` as one line to stderr, made safe.
pub(crate) fn tell_line(text: &str) {
    to_stderr(&format!("{}\n", safe::line(text)));
}

/// Prints what a command forwarded to the service printed there. The
/// service is this same program run by this same user (the socket admits
/// no one else), and it made the text safe as it printed it.
pub(crate) fn relay_output(output: &sotto_client::control::Output) {
    use sotto_client::control::Output;
    let _ = match output {
        Output::Out(text) => {
            let mut out = io::stdout().lock();
            out.write_all(text.as_bytes()).and_then(|()| out.flush())
        }
        Output::Err(text) => io::stderr().lock().write_all(text.as_bytes()),
        Output::Locked | Output::Exit(_) => Ok(()),
    };
}

/// Writes an error (which may quote names and titles) to stderr: its own
/// line breaks kept and indented, everything else made safe.
pub(crate) fn error(text: &str) {
    to_stderr(&format!("error: {}\n", safe::block(text, 2)));
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
