//! `sotto`: the command-line client. Every command can print JSON (`--json`,
//! one object per line) so scripts and tests can drive it.

use std::io::Write;

#[macro_use]
mod cli;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::json;
use sotto_client::control;
use sotto_client::engine::{
    Delivery, Engine, EngineError, Notice, Sent, ShownMessage, Verification, store_dir,
};
use sotto_client::safe;
use sotto_client::service::{self, Event, State};
use sotto_client::store::StoreError;
use tokio::signal::unix::{SignalKind, signal};

/// Sotto: end-to-end encrypted messaging for whisper networks.
///
/// Most people use the app, which opens in your web browser:
///
///   sotto app                         # set up with your invite link, then chat
///
/// Or from the command line, starting with an invite link from whoever runs your relay:
///
///   sotto init --invite 'sotto://join?...' --name "Your name"
///   sotto whoami                      # give your contact code to people you trust
///   sotto contact add alex CODE       # add theirs
///   sotto send alex "hello"
///   sotto sync                        # fetch new messages (or `sotto listen` to stay connected)
///
/// The passphrase comes from a prompt or the SOTTO_PASSPHRASE environment variable.
/// It encrypts everything Sotto keeps on this computer; there is no way to recover it.
/// While `sotto app` or `sotto listen` runs, other commands work through it
/// (no passphrase needed while it is unlocked).
#[derive(Parser)]
#[command(name = "sotto", version, verbatim_doc_comment)]
struct Cli {
    /// Profile directory [env: SOTTO_HOME; default: ~/.local/share/sotto]
    #[arg(long, global = true, env = "SOTTO_HOME", hide_env = true)]
    home: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a profile and register with the relay named in an invite link
    Init {
        /// The invite link (sotto://join?...) from your relay's operator
        #[arg(long)]
        invite: String,
        /// The name others see on your messages (stays inside encrypted messages)
        #[arg(long)]
        name: String,
    },
    /// Show your contact code (give it to people you trust), your key fingerprint and your relay's trust-root fingerprint
    Whoami {
        /// Print {"code":..,"fingerprint":..,"name":..,"relay_fingerprint":..}
        #[arg(long)]
        json: bool,
    },
    /// Manage contacts: add, list, verify, trust
    #[command(subcommand)]
    Contact(ContactCommand),
    /// Send a text message; exits 0 only once the relay has durably accepted it.
    ///
    /// Exit status: 0 the relay has it; 75 queued (the relay cannot be
    /// reached now: the message is kept and goes out with the next `sotto
    /// send`, `sync` or `listen`, so do not send it again); 1 refused
    /// (nothing will be sent).
    Send {
        /// Contact name (see `sotto contact list`)
        name: String,
        /// The message
        text: String,
    },
    /// Fetch, store and acknowledge new messages, then print them
    Sync {
        /// One JSON object per message
        #[arg(long)]
        json: bool,
    },
    /// Open the Sotto app in your web browser (runs until you quit it or press Ctrl-C).
    ///
    /// Starts Sotto for this profile in the background (staying connected and
    /// up to date) and serves the app on this computer only. It prints the
    /// address to open as its last line and opens your browser. While it
    /// runs, every other `sotto` command for the profile works through it.
    App {
        /// A sotto:// link to open: an invite (the set-up screen starts
        /// with it) or a group's join link
        link: Option<String>,
        /// Address to serve the app on (this computer only: 127.0.0.1)
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Do not open a browser; just print the address
        #[arg(long)]
        no_browser: bool,
        /// Lock after this long without use (e.g. 30s, 15m, 2h, off), unless a
        /// time was saved in the app's Settings [env: SOTTO_LOCK_AFTER]
        #[arg(long, env = "SOTTO_LOCK_AFTER", hide_env = true, default_value = "15m",
              value_parser = sotto_client::service::parse_duration)]
        lock_after: std::time::Duration,
    },
    /// Stay connected and print messages as they arrive (Ctrl-C to stop).
    /// While it runs, every other `sotto` command for the profile works through it.
    Listen {
        /// One JSON object per message
        #[arg(long)]
        json: bool,
    },
    /// Show the conversation with a contact, oldest first
    History {
        /// Contact name
        name: String,
        /// One JSON object per message
        #[arg(long)]
        json: bool,
    },
    /// Show how many one-time keys the relay holds for you, topping them up if low
    Keys {
        /// Print {"pre_keys":N,"kyber_pre_keys":M,"topped_up":bool}
        #[arg(long)]
        json: bool,
        /// Only show the counts; do not upload new keys even if they are low
        #[arg(long)]
        no_top_up: bool,
    },
    /// Manage this profile's identity key
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// Group chats: create, add, send, moderate (see `sotto group --help`)
    #[command(subcommand)]
    Group(GroupCommand),
    /// List my groups and my join requests still waiting
    Groups {
        /// One JSON object per group
        #[arg(long)]
        json: bool,
    },
    /// Post a structured warning about someone to a group
    ///
    ///   sotto warn "Staff network" --about "Sir John Smith MP" --role "MP for Anytown" \
    ///     --kind harassment --firsthand --where "late votes" --when 2024-03 \
    ///     --advice "don't share taxis" "He followed me to the car park."
    ///
    /// Members see it in `sotto warnings`, grouped by the person across all
    /// their groups, with counts of who reported it first- and second-hand.
    #[command(verbatim_doc_comment)]
    Warn {
        /// Group title or id prefix
        group: String,
        /// Who it is about (titles like Sir or MP and accents do not matter for matching)
        #[arg(long)]
        about: String,
        /// Their role, e.g. "MP for Anytown"
        #[arg(long, default_value = "")]
        role: String,
        /// harassment, sexual-misconduct, bullying, inappropriate-conduct or other
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(sotto_client::engine::KINDS))]
        kind: String,
        /// It happened to you or in front of you (the default)
        #[arg(long, conflicts_with = "secondhand")]
        firsthand: bool,
        /// You heard it from someone else
        #[arg(long)]
        secondhand: bool,
        /// The setting, e.g. "constituency office"
        #[arg(long = "where", default_value = "")]
        place: String,
        /// When: a month (2024-03) or a day (2024-03-14)
        #[arg(long, default_value = "", value_parser = when_arg)]
        when: String,
        /// What others should do, e.g. "don't share taxis"
        #[arg(long, default_value = "")]
        advice: String,
        /// Anything else to say
        text: Option<String>,
        /// Post it without your name, as the group's --anonymous-posts
        /// setting allows: "a member" (on), or through a moderator who
        /// approves it (via-moderator)
        #[arg(long)]
        anonymous: bool,
        /// With --anonymous via a moderator: only this moderator sees it
        /// (and knows it is yours); by default every admin does
        #[arg(long, requires = "anonymous", value_name = "WHO")]
        moderator: Option<String>,
    },
    /// Add your anonymous "me too" to a warning
    ///
    ///   sotto corroborate 3f2a9c01 --firsthand
    ///
    /// Members see how many distinct members corroborated a warning, never
    /// who: a ring signature shows a current member signed, and each member
    /// counts once per warning however often they try. WARNING_ID is the
    /// id (or its first characters) from `sotto warnings --json`.
    #[command(verbatim_doc_comment)]
    Corroborate {
        /// The warning's id or its first characters
        warning_id: String,
        /// It happened to you too (otherwise: you heard of it too)
        #[arg(long)]
        firsthand: bool,
    },
    /// The evidence locker: private notes and files, countersigned by the relay
    #[command(subcommand)]
    Note(NoteCommand),
    /// A duress passphrase that opens a harmless decoy profile instead of this one
    ///
    ///   sotto duress set --invite LINK --name "Ann" [--erase-real]
    ///   sotto duress status
    ///   sotto duress remove
    ///
    /// Whoever makes you unlock Sotto with the duress passphrase sees a
    /// working profile (its own account, contacts and history) and not this
    /// one. With --erase-real, unlocking the decoy also destroys this profile
    /// for good. The duress passphrase is asked for twice, or taken from
    /// SOTTO_DURESS_PASSPHRASE. The decoy needs its own invite link.
    #[command(subcommand, verbatim_doc_comment)]
    Duress(DuressCommand),
    /// Destroy this profile now: nothing in it can be read again
    ///
    /// Destroys the key that the store's encryption depends on (so even the
    /// passphrase, or a copy of the disk, opens nothing), deletes the
    /// account at the relay, and deletes the profile's files. There is no
    /// undo and no confirmation. With the passphrase unavailable (or
    /// --offline) the relay is not contacted: it keeps the account until
    /// its messages expire or its operator removes it.
    Panic {
        /// Do not contact the relay
        #[arg(long)]
        offline: bool,
    },
    /// Where a warning can go next: helplines, advisers, police, unions,
    /// ACAS, solicitors, with deadlines counted from the date of the behaviour
    ///
    ///   sotto routes                          # every route and the kinds it covers
    ///   sotto routes --kind harassment --when 2024-03-14
    ///
    /// The routes are data: the built-in file is for UK parliamentary staff
    /// (routes/uk-parliament.toml); set SOTTO_ROUTES=FILE to use your own.
    #[command(verbatim_doc_comment)]
    Routes {
        /// harassment, sexual-misconduct, bullying, inappropriate-conduct or other
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(sotto_client::engine::KINDS))]
        kind: Option<String>,
        /// The date of the behaviour (2024-03 or 2024-03-14), to work out deadlines
        #[arg(long, requires = "kind", value_parser = when_arg)]
        when: Option<String>,
        /// One JSON object
        #[arg(long)]
        json: bool,
    },
    /// List warnings grouped by the person they are about, across my groups
    Warnings {
        /// Only this group (title or id prefix)
        group: Option<String>,
        /// Only the person this name matches
        #[arg(long)]
        about: Option<String>,
        /// One JSON object per person, with their warnings
        #[arg(long)]
        json: bool,
        /// Treat this name as the same person as --into (in this app only)
        #[arg(long, requires = "into", value_name = "NAME")]
        merge: Option<String>,
        /// The name to merge into
        #[arg(long, requires = "merge", value_name = "NAME")]
        into: Option<String>,
    },
}

/// A subject and its warnings, for people.
fn print_subject(out: &mut impl Write, s: &sotto_client::engine::SubjectSummary) -> Result<()> {
    let name = s.names.first().cloned().unwrap_or_else(|| s.key.clone());
    let mut head = name.clone();
    if s.names.len() > 1 {
        head.push_str(&format!(" (also written: {})", s.names[1..].join(", ")));
    }
    if !s.roles.is_empty() {
        head.push_str(&format!(" — {}", s.roles.join("; ")));
    }
    say!(out, "{head}")?;
    let kinds: Vec<String> = s
        .kinds
        .iter()
        .map(|(k, n)| {
            if *n > 1 {
                format!("{k} x{n}")
            } else {
                k.clone()
            }
        })
        .collect();
    say!(
        out,
        "  reported by {} first-hand, {} second-hand; newest {}; {}; in {}",
        s.firsthand_reporters,
        s.secondhand_reporters,
        s.newest,
        kinds.join(", "),
        s.groups.join(", ")
    )?;
    for w in &s.warnings {
        let mut line = format!(
            "  - {} {}",
            w.kind,
            if w.firsthand {
                "(first-hand)"
            } else {
                "(second-hand)"
            }
        );
        for v in [&w.when, &w.place] {
            if !v.is_empty() {
                line.push_str(&format!(", {v}"));
            }
        }
        if !w.advice.is_empty() {
            line.push_str(&format!("; advice: {}", w.advice));
        }
        if !w.text.is_empty() {
            line.push_str(&format!("; \"{}\"", w.text));
        }
        if let Some(by) = &w.anonymous {
            line.push_str(&format!("; by {by}"));
        }
        if w.corroborations > 0 {
            line.push_str(&format!(
                "; corroborated by {} ({} first-hand){}",
                w.corroborations,
                w.corroborations_firsthand,
                if w.corroborated_by_me {
                    ", you among them"
                } else {
                    ""
                }
            ));
        }
        line.push_str(&format!(" [{} {}]", w.group, &w.id[..8]));
        say!(out, "{line}")?;
        if let Some(card) = &w.routes {
            let next: Vec<String> = card.routes.iter().map(|r| r.short_text()).collect();
            say!(out, "    can go to: {}", next.join("; "))?;
        }
    }
    say!(
        out,
        "  Details and contacts: `sotto routes --kind KIND --when DATE`."
    )?;
    Ok(())
}

/// `sotto panic`: erase first, ask nothing that could fail before it.
async fn panic_command(home: &Path, offline: bool) -> Result<()> {
    if !store_dir(home).exists() {
        bail!("there is no Sotto profile in {}", home.display());
    }
    // The passphrase only lets us tell the relay; without it, erase anyway.
    let engine = match (offline, std::env::var("SOTTO_PASSPHRASE")) {
        (false, Ok(p)) if !p.is_empty() => match Engine::open(home, &p) {
            Ok(engine) => Some(engine),
            Err(e) => {
                tell!("cannot open the profile to tell the relay ({e}); erasing it anyway");
                None
            }
        },
        _ => None,
    };
    let report = match engine {
        Some(engine) => engine.panic(home, true).await,
        None => sotto_client::engine::panic_offline(home),
    };
    print_panic_report(&report)
}

/// What `sotto panic` did, in words (also for a panic a running service did).
fn print_panic_report(report: &sotto_client::engine::PanicReport) -> Result<()> {
    match &report.erased {
        Ok(true) => show!(
            "Erased: the key to this profile was destroyed in {:.0} ms; nothing in it can be read again.",
            report.erase_ms
        ),
        Ok(false) => show!(
            "This profile predates erase keys: its files were deleted, but may be recoverable \
             from the disk."
        ),
        Err(e) => tell!("could not destroy the erase key: {e}"),
    }
    match &report.deregistered {
        Some(Ok(())) => show!("The relay deleted the account and its waiting messages."),
        Some(Err(e)) => show!(
            "The relay could not be told ({e}); it keeps the account until its messages expire."
        ),
        None => show!(
            "The relay was not told (no SOTTO_PASSPHRASE, or --offline); it keeps the account \
             until its messages expire or its operator removes it."
        ),
    }
    if let Err(e) = &report.files_removed {
        tell!("some files could not be deleted: {e}");
    }
    if report.erased.is_err() {
        bail!("the profile may still be readable");
    }
    Ok(())
}

/// `sotto routes`: needs no profile.
fn routes(kind: Option<String>, when: Option<String>, json: bool) -> Result<()> {
    let routes = sotto_client::routes::Routes::from_env()
        .context("cannot read the routes file named by SOTTO_ROUTES")?;
    let today = sotto_client::routes::today();
    let mut out = cli::stdout();
    match kind {
        Some(kind) => {
            let date = when
                .as_deref()
                .map(sotto_client::routes::GivenDate::parse)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--when: {e}"))?;
            let card = routes.card_data(&kind, date, today)?;
            if json {
                cli::json(out.by_ref(), &card)?;
            } else {
                cli::lines(out.by_ref(), &card.render())?;
            }
        }
        None if json => {
            let all: Vec<_> = sotto_client::engine::KINDS
                .iter()
                .filter_map(|k| routes.card_data(k, None, today).ok())
                .collect();
            cli::json(out.by_ref(), &all)?;
        }
        None => {
            let meta = routes.meta();
            say!(out, "{} ({})", meta.name, meta.jurisdiction)?;
            for r in routes.routes() {
                say!(out, "- {}: {}", r.name, r.kinds.join(", "))?;
            }
            say!(
                out,
                "See one kind, with deadlines: sotto routes --kind KIND --when 2024-03-14"
            )?;
        }
    }
    Ok(())
}

/// Notes stay in this profile's encrypted store and are never sent to anyone;
/// the relay sees only a hash, which it signs with its time, so you can later
/// show a note existed then (`note export`, checked by `note verify`).
#[derive(Subcommand)]
enum NoteCommand {
    /// Keep a note (and optionally a file), countersigned by the relay
    Add {
        /// The note
        text: Option<String>,
        /// A file to keep with it (a photo, a saved message), up to 16 MiB
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// List my notes
    List {
        /// One JSON object per note
        #[arg(long)]
        json: bool,
    },
    /// Write a note with its proof to a file you can give to someone
    Export {
        /// The note's id (or its start), from `sotto note list`
        id: String,
        /// Where to write the proof (JSON)
        #[arg(long)]
        to: PathBuf,
    },
    /// Check a proof file: the note is unchanged and existed by the relay's time
    Verify {
        /// A file written by `sotto note export`
        file: PathBuf,
    },
}

fn when_arg(s: &str) -> std::result::Result<String, String> {
    sotto_client::engine::check_when(s.trim())?;
    Ok(s.trim().to_string())
}

#[derive(Subcommand)]
enum DuressCommand {
    /// Set up the duress passphrase and register its decoy profile
    Set {
        /// An invite link for the decoy's own account
        #[arg(long)]
        invite: String,
        /// The decoy's display name (your own, so it looks like you)
        #[arg(long)]
        name: String,
        /// Unlocking the decoy also destroys this profile (no undo)
        #[arg(long)]
        erase_real: bool,
    },
    /// Say whether a duress passphrase is set
    Status,
    /// Remove the duress passphrase and erase its decoy profile
    Remove,
}

/// GROUP is a group's title or the start of its id (see `sotto groups`).
/// WHO is your contact name for a member, their display name, or their contact code.
#[derive(Subcommand)]
enum GroupCommand {
    /// Create a group; you become its owner
    Create {
        /// The title members see (encrypted: the relay never sees it)
        title: String,
    },
    /// Add contacts to a group (admins)
    Add {
        /// Group title or id prefix
        group: String,
        /// Contact names
        #[arg(required = true)]
        contacts: Vec<String>,
    },
    /// Remove a member (admins); the group key changes so they read nothing after
    Remove {
        /// Group title or id prefix
        group: String,
        /// The member
        who: String,
    },
    /// Leave a group
    Leave {
        /// Group title or id prefix
        group: String,
    },
    /// Post a message to a group; exits 0 once the relay holds it for every member.
    ///
    /// Exit status: 0 the relay has it; 75 queued (kept, goes out with the
    /// next `sotto send`, `sync` or `listen`; do not send it again); 1 refused.
    Send {
        /// Group title or id prefix
        group: String,
        /// The message
        text: String,
        /// Post it without your name, as the group's --anonymous-posts
        /// setting allows: "a member" (on), or through a moderator who
        /// approves it (via-moderator)
        #[arg(long)]
        anonymous: bool,
        /// With --anonymous via a moderator: only this moderator sees it
        /// (and knows it is yours); by default every admin does
        #[arg(long, requires = "anonymous", value_name = "WHO")]
        moderator: Option<String>,
    },
    /// Anonymous posts waiting for a moderator's approval (admins)
    Submissions {
        /// Group title or id prefix
        group: String,
        /// One JSON object per post
        #[arg(long)]
        json: bool,
    },
    /// Publish a member's anonymous post: members see "a member (approved by
    /// a moderator)" (admins)
    Publish {
        /// Group title or id prefix
        group: String,
        /// The post's id from `sotto group submissions`
        id: String,
    },
    /// Turn down a member's anonymous post without publishing it (admins)
    Discard {
        /// Group title or id prefix
        group: String,
        /// The post's id from `sotto group submissions`
        id: String,
    },
    /// List members with their roles (owner, admin, member)
    Members {
        /// Group title or id prefix
        group: String,
        /// One JSON object per member
        #[arg(long)]
        json: bool,
    },
    /// Make a member an admin (admins)
    Promote {
        /// Group title or id prefix
        group: String,
        /// The member
        who: String,
    },
    /// Make an admin a plain member again (admins)
    Demote {
        /// Group title or id prefix
        group: String,
        /// The member
        who: String,
    },
    /// Show or change settings (admins change them)
    Settings {
        /// Group title or id prefix
        group: String,
        /// Only admins may post
        #[arg(long, value_name = "on|off", value_parser = on_off)]
        announcements_only: Option<bool>,
        /// Link joins wait for an admin's approval
        #[arg(long, value_name = "on|off", value_parser = on_off)]
        approval: Option<bool>,
        /// Delete messages this long after sending, e.g. 7d, 12h, 30m, or off
        #[arg(long, value_name = "DURATION|off", value_parser = duration_or_off)]
        disappearing: Option<u64>,
        /// Keep warnings this long, whatever the disappearing timer, e.g.
        /// 365d, or off to keep them until deleted
        #[arg(long, value_name = "DURATION|off", value_parser = duration_or_off)]
        warning_retention: Option<u64>,
        /// Vetting: admit a join request only after N members vouch for it
        /// (`sotto group vouch`); 0 turns it off
        #[arg(long, value_name = "N")]
        vouches: Option<u32>,
        /// Members must re-confirm (`sotto group reconfirm`) within this long,
        /// e.g. 180d, or admins' apps remove them; off turns it off
        #[arg(long, value_name = "DURATION|off", value_parser = duration_or_off)]
        reconfirm: Option<u64>,
        /// Quorum moderation: removals, deleting others' messages and role
        /// changes need K admins to agree (`group proposals`, `group agree`);
        /// off (or 1) turns it off
        #[arg(long, value_name = "K|off", value_parser = count_or_off)]
        quorum: Option<u32>,
        /// Posting without one's name: off; via-moderator (a moderator
        /// approves and knows the author); on (no one can tell which member)
        #[arg(long, value_name = "off|via-moderator|on")]
        anonymous_posts: Option<sotto_client::group::AnonymousPosts>,
    },
    /// List moderation actions waiting for admins to agree (quorum moderation)
    Proposals {
        /// Group title or id prefix
        group: String,
        /// One JSON object per proposal
        #[arg(long)]
        json: bool,
    },
    /// Agree to a proposed moderation action (admins); the last approval
    /// needed carries it out
    Agree {
        /// Group title or id prefix
        group: String,
        /// The proposal's id, from `sotto group proposals`
        proposal: String,
    },
    /// Withdraw a moderation action you proposed
    Withdraw {
        /// Group title or id prefix
        group: String,
        /// The proposal's id
        proposal: String,
    },
    /// Re-confirm that you still want to be in the group (see `settings --reconfirm`)
    Reconfirm {
        /// Group title or id prefix
        group: String,
    },
    /// Vouch for someone's join request (any member); see `settings --vouches`
    Vouch {
        /// Group title or id prefix
        group: String,
        /// The requester's display name or contact code
        who: String,
    },
    /// Print the group's join link (admins); --reset makes the old link useless
    Link {
        /// Group title or id prefix
        group: String,
        /// Replace the link
        #[arg(long)]
        reset: bool,
    },
    /// Ask to join a group through its link
    Join {
        /// The link (sotto://group?...) from an admin
        link: String,
    },
    /// List join requests waiting for approval (admins fetch new ones first)
    Requests {
        /// Group title or id prefix
        group: String,
        /// One JSON object per request
        #[arg(long)]
        json: bool,
    },
    /// Let a requester in (admins)
    Approve {
        /// Group title or id prefix
        group: String,
        /// The requester's display name or contact code
        who: String,
    },
    /// Turn a request down (admins)
    Deny {
        /// Group title or id prefix
        group: String,
        /// The requester's display name or contact code
        who: String,
    },
    /// Remove a message for everyone (its author, or an admin for anyone's)
    Delete {
        /// Group title or id prefix
        group: String,
        /// The message id (or its first characters) from `history --json`
        message_id: String,
    },
    /// Show every moderation action: who did what, when
    Log {
        /// Group title or id prefix
        group: String,
        /// One JSON object per entry
        #[arg(long)]
        json: bool,
    },
}

fn count_or_off(s: &str) -> std::result::Result<u32, String> {
    match s {
        "off" => Ok(0),
        n => n
            .parse()
            .map_err(|_| format!("expected a number of admins or off, not {n:?}")),
    }
}

/// The message a proposed deletion would remove, for the admins who judge it.
fn print_proposed_message(
    out: &mut impl Write,
    m: &sotto_client::engine::ProposedMessage,
) -> Result<()> {
    if let Some((subject, kind)) = &m.warning {
        say!(out, "    it is a warning about {subject} ({kind})")?;
    }
    match (&m.text, &m.author, m.sent_at_ms) {
        (Some(text), Some(author), Some(at)) => cli::entry(
            out,
            &format!("    the message, from {author} at {}: ", clock(at)),
            text,
            "",
        )?,
        (Some(text), _, _) => cli::entry(out, "    the message: ", text, "")?,
        _ if m.warning.is_some() => {}
        _ => say!(
            out,
            "    your app does not have this message (it may have disappeared or been \
             deleted, or been sent before you joined); ask the proposer what it said"
        )?,
    }
    Ok(())
}

/// Says where an anonymous post went.
fn report_anonymous(
    out: &mut impl Write,
    posted: &sotto_client::engine::PostedAnonymously,
) -> Result<()> {
    if posted.via_moderator {
        say!(
            out,
            "Sent {} to the moderators for approval; once one publishes it, members see \
             \"a member (approved by a moderator)\". The moderators know it was you.",
            &posted.id[..8]
        )?;
    } else {
        say!(
            out,
            "posted {} as \"a member\" (one of {} members who could have written it)",
            posted.id,
            posted.ring
        )?;
    }
    Ok(())
}

/// Says what a moderation command did; `done` describes it carried out.
fn report_moderation(
    out: &mut impl Write,
    group: &str,
    m: &sotto_client::engine::Moderation,
    done: &str,
) -> Result<()> {
    use sotto_client::engine::Moderation;
    match m {
        Moderation::Done(_) => say!(out, "{done}")?,
        Moderation::Proposed { id, have, needed } => say!(
            out,
            "Proposed as {id}: {have} of {needed} admins agree so far. Other admins agree with \
             `sotto group agree {} {id}`; members see it in `sotto group log`.",
            sotto_client::safe::shell_arg(group)
        )?,
    }
    Ok(())
}

fn on_off(s: &str) -> std::result::Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("expected on or off".into()),
    }
}

/// "7d", "12h", "30m", "45s" or "off" (0) to milliseconds.
fn duration_or_off(s: &str) -> std::result::Result<u64, String> {
    if s == "off" {
        return Ok(0);
    }
    let bad = || format!("expected a duration like 7d, 12h, 30m or 45s, or off; got {s:?}");
    let (digits, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let secs = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => return Err(bad()),
    };
    match n.checked_mul(secs * 1000) {
        Some(ms) if ms > 0 => Ok(ms),
        _ => Err(bad()),
    }
}

#[derive(Subcommand)]
enum ContactCommand {
    /// Add a contact under a name only you see
    Add {
        /// Your name for them
        name: String,
        /// Their contact code, from their `sotto whoami`
        code: String,
    },
    /// List contacts
    List {
        /// One JSON object per contact
        #[arg(long)]
        json: bool,
    },
    /// Show the safety number to compare with the contact in person
    Verify {
        /// Contact name
        name: String,
    },
    /// Accept the contact's current identity key, so sending to them works
    /// (again). It marks them verified only if `sotto contact verify` showed
    /// you this key's safety number, or with --i-compared.
    Trust {
        /// Contact name
        name: String,
        /// Mark them verified although `contact verify` has not shown this
        /// key's number here: only if you compared the safety number with
        /// them another way (for example on another device of yours)
        #[arg(long)]
        i_compared: bool,
    },
    /// Remove a contact; your messages with them stay (see `sotto history CODE`)
    Remove {
        /// Contact name
        name: String,
    },
    /// Give a contact another name; your history with them stays
    Rename {
        /// Their name now
        old: String,
        /// The new name
        new: String,
    },
}

#[derive(Subcommand)]
enum IdentityCommand {
    /// Replace your identity key, e.g. if this device may have been compromised.
    /// Your contacts will see a changed safety number and must trust you again.
    Reset,
}

fn main() {
    // New profile files and sockets are the user's alone, whatever the umask.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SOTTO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tell!("error: cannot start: {e}");
            std::process::exit(1);
        }
    };
    // libsignal's futures are !Send, so everything runs on this one thread.
    let status = exit_status(runtime.block_on(run(cli)));
    std::process::exit(status);
}

/// The exit status for a command's result, printing its error if any: the
/// same whether the command ran here or in the service it was forwarded to.
fn exit_status(result: Result<()>) -> i32 {
    let Err(e) = result else { return 0 };
    // `sotto whoami | head -1`: the reader left; that is not an error.
    let broken_pipe = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        return 0;
    }
    if e.downcast_ref::<Queued>().is_some() {
        return EXIT_QUEUED;
    }
    cli::error(&format!("{e:#}"));
    1
}

async fn run(cli: Cli) -> Result<()> {
    if let Command::Routes { kind, when, json } = cli.command {
        return routes(kind, when, json);
    }
    let home = match cli.home {
        Some(home) => home,
        None => default_home()?,
    };
    if let Command::Note(NoteCommand::Verify { file }) = &cli.command {
        let bytes =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let v = sotto_client::engine::verify_proof(&bytes)
            .map_err(|e| anyhow::anyhow!("the proof does not verify: {e}"))?;
        show!(
            "Valid: this note existed by {} (the relay's clock), unchanged since.",
            sotto_client::engine::day_time(v.existed_by_ms)
        );
        show!("It rests on the relay whose trust-root fingerprint is");
        show!("  {}", v.trust_root_fingerprint);
        show!(
            "Check that it is the relay's: its operator sees it with `sotto-relay stats`, and \
             any member of that relay with `sotto whoami` (\"relay's trust-root fingerprint\"). \
             See docs/evidence.md."
        );
        if let Some(name) = &v.file_name {
            show!("Attached file: {name}");
        }
        show!("---");
        cli::entry(&mut cli::stdout(), "", &v.text, "")?;
        return Ok(());
    }
    if let Command::App {
        link,
        listen,
        no_browser,
        lock_after,
    } = cli.command
    {
        return app_command(&home, link, listen, no_browser, lock_after).await;
    }
    if !matches!(cli.command, Command::Init { .. })
        && let Some(stream) = control::connect(&home).await
    {
        // A service (`sotto app` or `sotto listen`) holds the profile.
        return forward(&home, stream, &cli.command).await;
    }
    if let Command::Panic { offline } = cli.command {
        return panic_command(&home, offline).await;
    }
    if let Command::Init { invite, name } = &cli.command {
        if store_dir(&home).exists() {
            bail!(
                "a profile already exists in {}; use another --home to make a second one",
                home.display()
            );
        }
        // 0700 even under umask 022, and an existing directory is tightened.
        sotto_client::store::private_dir(&home)
            .with_context(|| format!("cannot create {} (0700)", home.display()))?;
        let passphrase = passphrase(true)?;
        let mut engine = Engine::init(&home, &passphrase, invite, name).await?;
        show!("Registered as {}. Your contact code:", engine.name());
        show!("{}", engine.code());
        show!("Give it to people you trust; add theirs with `sotto contact add NAME CODE`.");
        engine.close().await;
        return Ok(());
    }
    if !store_dir(&home).exists() {
        bail!(
            "no Sotto profile in {}: run `sotto init --invite LINK --name NAME` first (or pass --home)",
            home.display()
        );
    }
    if let Command::Listen { json } = cli.command {
        return listen_command(&home, json).await;
    }
    let passphrase = passphrase(false)?;
    let mut engine = Engine::open(&home, &passphrase)?;
    let result = command(&mut engine, &home, cli.command).await;
    engine.close().await;
    result
}

/// Runs `command` in the service that holds the profile, printing what it
/// prints and exiting with its status. A locked service is unlocked with the
/// passphrase (asked for, or SOTTO_PASSPHRASE); one that is open needs none.
async fn forward(home: &Path, first: tokio::net::UnixStream, command: &Command) -> Result<()> {
    // Read here, where the person's terminal is, not in the service.
    let duress_passphrase = match command {
        Command::Duress(DuressCommand::Set { .. }) => Some(duress_passphrase()?),
        _ => None,
    };
    let mut passphrase = match std::env::var("SOTTO_PASSPHRASE") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => None,
    };
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let mut stream = Some(first);
    loop {
        let connection = match stream.take() {
            Some(s) => s,
            None => control::connect(home)
                .await
                .context("the Sotto service for this profile stopped; run the command again")?,
        };
        let request = control::Forward {
            argv: argv.clone(),
            cwd: cwd.clone(),
            terminal: cli::stdout_is_terminal(),
            passphrase: passphrase.clone(),
            duress_passphrase: duress_passphrase.clone(),
        };
        let status = control::forward(connection, &request, &mut cli::relay_output)
            .await
            .context("lost the Sotto service for this profile while it ran the command")?;
        match status {
            Some(0) => return Ok(()),
            Some(code) => std::process::exit(code),
            None if passphrase.is_none() => passphrase = Some(self::passphrase(false)?),
            None => bail!("the Sotto service for this profile stayed locked"),
        }
    }
}

/// The service's side of [`forward`]: what it does with a command another
/// `sotto` process sends.
fn forwarded_handler(handle: service::Handle) -> control::Handler {
    // Messages the service received in the background since the last
    // forwarded `sync`, so that `sync` still prints what is new.
    let unsynced = Arc::new(Mutex::new(handle.subscribe()));
    Arc::new(move |request, sink| {
        let handle = handle.clone();
        let unsynced = unsynced.clone();
        Box::pin(async move {
            let status = match run_forwarded(&handle, unsynced, request, &sink).await {
                Ok(status) => status,
                Err(e) => {
                    let _ = sink
                        .send(control::Output::Err(format!(
                            "error: {}\n",
                            safe::block(&format!("{e:#}"), 2)
                        )))
                        .await;
                    Some(1)
                }
            };
            let last = match status {
                Some(code) => control::Output::Exit(code),
                None => control::Output::Locked,
            };
            let _ = sink.send(last).await;
        })
    })
}

async fn send_chunks(sink: &control::Sink, chunks: Vec<(bool, String)>) {
    for (to_stderr, text) in chunks {
        let output = if to_stderr {
            control::Output::Err(text)
        } else {
            control::Output::Out(text)
        };
        let _ = sink.send(output).await;
    }
}

/// Carries out one forwarded command; `None`: locked, and no passphrase came.
async fn run_forwarded(
    handle: &service::Handle,
    unsynced: Arc<Mutex<tokio::sync::broadcast::Receiver<Event>>>,
    request: control::Forward,
    sink: &control::Sink,
) -> Result<Option<i32>> {
    let mut cli = Cli::try_parse_from(&request.argv).map_err(|e| anyhow::anyhow!("{e}"))?;
    files_from(&mut cli.command, &request.cwd);
    match (handle.state(), request.passphrase) {
        (State::Locked, None) => return Ok(None),
        (State::Locked, Some(p)) => handle.unlock(p).await?,
        (State::Unlocked, Some(p)) => {
            // A wrong passphrase fails as it would without the service.
            if !handle
                .with(move |e| Box::pin(async move { e.check_passphrase(&p) }))
                .await??
            {
                return Err(StoreError::WrongPassphrase.into());
            }
        }
        (State::Unlocked, None) => {}
        (State::NoProfile | State::Erased, _) => bail!("there is no Sotto profile here any more"),
        (State::Stopped, _) => bail!("Sotto is stopping for this profile; run the command again"),
    }
    let terminal = request.terminal;
    match cli.command {
        Command::Listen { json } => {
            follow_events(handle, json, terminal, sink).await;
            Ok(Some(0))
        }
        Command::Panic { .. } => {
            let report = handle.panic().await?;
            let (result, chunks) =
                cli::captured(terminal, None, async { print_panic_report(&report) }).await;
            send_chunks(sink, chunks).await;
            Ok(Some(exit_status_captured(result, terminal).await))
        }
        command => {
            let home = handle.home().to_path_buf();
            let duress = request.duress_passphrase;
            let (status, chunks) = handle
                .with(move |engine| {
                    Box::pin(async move {
                        cli::captured(terminal, duress, async move {
                            let result = match command {
                                Command::Sync { json } => {
                                    let earlier = received_since_sync(&unsynced);
                                    sync_command(engine, json, earlier).await
                                }
                                other => self::command(engine, &home, other).await,
                            };
                            exit_status(result)
                        })
                        .await
                    })
                })
                .await?;
            send_chunks(sink, chunks).await;
            Ok(Some(status))
        }
    }
}

async fn exit_status_captured(result: Result<()>, terminal: bool) -> i32 {
    // Only an error prints here, and it must reach the client too.
    let (status, _) = cli::captured(terminal, None, async { exit_status(result) }).await;
    status
}

/// Messages the service received by itself since the last forwarded `sync`.
fn received_since_sync(
    unsynced: &Mutex<tokio::sync::broadcast::Receiver<Event>>,
) -> Vec<ShownMessage> {
    let Ok(mut events) = unsynced.lock() else {
        return Vec::new();
    };
    let mut messages = Vec::new();
    loop {
        match events.try_recv() {
            Ok(Event::Message(m)) => messages.push(m),
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(missed)) => {
                tracing::info!("{missed} events passed unseen by sync; `history` has them");
            }
            Err(_) => break,
        }
    }
    messages
}

/// Relative file names in a forwarded command are the client's.
fn files_from(command: &mut Command, cwd: &Path) {
    match command {
        Command::Note(NoteCommand::Add {
            file: Some(file), ..
        }) => *file = cwd.join(&*file),
        Command::Note(NoteCommand::Export { to, .. }) => *to = cwd.join(&*to),
        Command::Note(NoteCommand::Verify { file }) => *file = cwd.join(&*file),
        _ => {}
    }
}

/// A forwarded `listen`: the service's events, printed as `listen` prints
/// them, until the client leaves or the service stops.
async fn follow_events(handle: &service::Handle, json: bool, terminal: bool, sink: &control::Sink) {
    let mut events = handle.subscribe();
    let mut printer = Printer::new(json, true);
    if let Some(line) = connected_line(false, json, terminal) {
        let _ = sink.send(control::Output::Out(format!("{line}\n"))).await;
    }
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => return,
        };
        let done = matches!(
            event,
            Event::State(State::Locked | State::Erased | State::Stopped)
        );
        let ((), chunks) = cli::captured(terminal, None, async {
            print_event(&mut printer, &event, json, terminal)
        })
        .await;
        send_chunks(sink, chunks).await;
        if done || sink.is_closed() {
            return;
        }
    }
}

/// Prints one service event as `listen` does.
fn print_event(printer: &mut Printer, event: &Event, json: bool, terminal: bool) {
    match event {
        Event::Message(m) => printer.message(m),
        Event::Notice(Notice::Connected { again }) => {
            if let Some(line) = connected_line(*again, json, terminal) {
                show!("{line}");
            }
        }
        Event::Notice(other) => notice(other),
        Event::State(State::Locked) => tell!("Sotto locked this profile; listening stopped"),
        Event::State(State::Erased) => tell!("this profile was erased; listening stopped"),
        Event::State(_) => {}
    }
}

/// `sotto sync`: prints `earlier` (messages a running service already
/// received) and whatever the relay has now.
async fn sync_command(engine: &mut Engine, json: bool, earlier: Vec<ShownMessage>) -> Result<()> {
    let mut printer = Printer::new(json, true);
    for m in &earlier {
        printer.message(m);
    }
    let shown = engine
        .sync(&mut |m| printer.message(m), &mut |n| notice(n))
        .await?;
    if say_no_new_messages(shown + earlier.len(), json, cli::stdout_is_terminal()) {
        show!("no new messages");
    }
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM.
async fn stop_signal() {
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Runs the service until it quits (Quit in the app, Ctrl-C, SIGTERM),
/// serving forwarded commands on the control socket meanwhile; `opened`
/// runs once it is started (unlocking, printing the address).
async fn host(
    home: &Path,
    handle: service::Handle,
    runner: service::Runner,
    opened: impl std::future::Future<Output = Result<()>>,
) -> Result<()> {
    let socket = control::serve(home, forwarded_handler(handle.clone()))
        .with_context(|| format!("cannot open {}", control::socket_path(home).display()))?;
    let mut failed = None;
    let outcome = {
        // Signals are caught from the start: `opened` may never end.
        let quit_on_signal = async {
            stop_signal().await;
            handle.quit();
            std::future::pending::<()>().await;
        };
        let opened = async {
            if let Err(e) = opened.await {
                failed = Some(e);
                handle.quit();
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            outcome = runner.run() => outcome,
            _ = quit_on_signal => unreachable!("pending never ends"),
            _ = opened => unreachable!("pending never ends"),
        }
    };
    socket.abort();
    let _ = std::fs::remove_file(control::socket_path(home));
    if let Some(e) = failed {
        return Err(e);
    }
    outcome
}

/// `sotto listen` with no service running: the service, headless, printing
/// events; it never locks by itself.
async fn listen_command(home: &Path, json: bool) -> Result<()> {
    let passphrase = passphrase(false)?;
    let settings = service::Settings {
        lock_after: std::time::Duration::ZERO,
    };
    let (handle, runner) = service::start(home.to_path_buf(), settings);
    let printing = {
        let handle = handle.clone();
        async move {
            let terminal = cli::stdout_is_terminal();
            let mut events = handle.subscribe();
            handle.unlock(passphrase).await?;
            let mut printer = Printer::new(json, true);
            loop {
                match events.recv().await {
                    Ok(Event::State(State::Stopped | State::Erased)) => return Ok(()),
                    Ok(event) => print_event(&mut printer, &event, json, terminal),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tell!("{n} events were not shown (`sotto history` has every message)")
                    }
                    Err(_) => return Ok(()),
                }
            }
        }
    };
    host(home, handle, runner, printing).await
}

/// `sotto app`: the service and the web app on 127.0.0.1.
async fn app_command(
    home: &Path,
    link: Option<String>,
    listen: std::net::SocketAddr,
    no_browser: bool,
    lock_after: std::time::Duration,
) -> Result<()> {
    // The app holds the keys to a whole profile: this computer only.
    if listen.ip() != std::net::IpAddr::from([127, 0, 0, 1]) {
        bail!("the app is served to this computer only: use --listen 127.0.0.1:PORT");
    }
    let url_file = home.join("app-url");
    if control::connect(home).await.is_some() {
        match std::fs::read_to_string(&url_file) {
            Ok(url) => {
                if !no_browser {
                    open_browser(home, url.trim());
                }
                show!("Sotto is already running for this profile. Open:");
                show!("{}", url.trim());
                return Ok(());
            }
            Err(_) => bail!(
                "`sotto listen` is running for this profile: stop it (Ctrl-C), then start the app"
            ),
        }
    }
    sotto_client::store::private_dir(home)
        .with_context(|| format!("cannot create {} (0700)", home.display()))?;
    let (handle, runner) = service::start(home.to_path_buf(), service::Settings { lock_after });
    if let Some(link) = link {
        let link = link.trim().to_string();
        if !link.starts_with("sotto://") {
            bail!("\"{link}\" is not a Sotto link: they start with sotto://");
        }
        handle.offer_link(link);
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let app = sotto_client::web::WebApp::new(handle.clone(), addr)?;
    let url = app.launch_url();
    let router = app.router();
    let mut state = handle.watch_state();
    let server = tokio::spawn(async move {
        let stopped = async move {
            let _ = state.wait_for(|s| *s == State::Stopped).await;
        };
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(stopped)
            .await;
    });
    let opened = {
        let handle = handle.clone();
        let home = home.to_path_buf();
        async move {
            write_private(&url_file, &format!("{url}\n"))?;
            if let Ok(p) = std::env::var("SOTTO_PASSPHRASE")
                && !p.is_empty()
                && store_dir(&home).exists()
            {
                handle.unlock(p).await?;
            }
            if !no_browser {
                open_browser(&home, &url);
            }
            show!("Sotto is running. Open this address in your browser (Ctrl-C to stop):");
            show!("{url}");
            std::future::pending::<Result<()>>().await
        }
    };
    let result = host(home, handle, runner, opened).await;
    let _ = std::fs::remove_file(home.join("app-url"));
    let _ = std::fs::remove_file(home.join("app-open.html"));
    server.abort();
    result
}

/// Writes a file only this user can read (the launch address is a key).
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Opens the default browser on the app. The launch token would be visible
/// to other local users in the browser's command line (/proc), so, as
/// Jupyter does, the browser is pointed at a private file that redirects.
fn open_browser(home: &Path, url: &str) {
    let page = home.join("app-open.html");
    let html = format!(
        "<!doctype html><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url={url}\">\
         <title>Opening Sotto</title><p><a href=\"{url}\">Open Sotto</a></p>\n"
    );
    if write_private(&page, &html).is_err() {
        return;
    }
    let opened = std::process::Command::new("xdg-open")
        .arg(&page)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if opened.is_err() {
        tell!("could not open a browser; open the address below yourself");
    }
}

async fn command(engine: &mut Engine, home: &Path, command: Command) -> Result<()> {
    let mut out = cli::stdout();
    match command {
        Command::Init { .. } => unreachable!("handled before the store is opened"),
        Command::Whoami { json } => {
            let code = engine.code().to_string();
            let fingerprint = engine.fingerprint()?;
            let relay = engine.relay_fingerprint();
            if json {
                let line = json!({
                    "code": code,
                    "fingerprint": fingerprint,
                    "name": engine.name(),
                    "relay_fingerprint": relay,
                });
                cli::json(out.by_ref(), &line)?;
            } else {
                say!(out, "{code}")?;
                say!(out, "name: {}", engine.name())?;
                say!(out, "fingerprint: {fingerprint}")?;
                say!(out, "relay's trust-root fingerprint: {relay}")?;
            }
        }
        Command::Contact(ContactCommand::Add { name, code }) => {
            let contact = engine.add_contact(&name, &code).await?;
            say!(
                out,
                "Added {}. Compare safety numbers with `sotto contact verify {}`.",
                contact.name,
                sotto_client::safe::shell_arg(&contact.name)
            )?;
        }
        Command::Contact(ContactCommand::List { json }) => {
            for (contact, changed) in engine.contacts()? {
                let code = sotto_wire::code::ContactCode::from_account_id(contact.account_id);
                if json {
                    let line = json!({
                        "name": contact.name,
                        "code": code.to_string(),
                        "verified": contact.verified,
                        "identity_changed": changed,
                    });
                    cli::json(out.by_ref(), &line)?;
                } else {
                    let mark = if changed {
                        "  SAFETY NUMBER CHANGED"
                    } else if contact.verified {
                        "  verified"
                    } else {
                        ""
                    };
                    say!(out, "{}  {}{}", contact.name, code, mark)?;
                }
            }
        }
        Command::Contact(ContactCommand::Verify { name }) => {
            let shown = engine.safety_number(&name).await?;
            let (number, changed) = (shown.digits, shown.changed);
            if let Some(reason) = shown.offline {
                say!(
                    out,
                    "The relay cannot be reached ({reason}): this is the number for the key \
                     last seen for {name}, which may be out of date."
                )?;
            }
            if changed {
                say!(
                    out,
                    "WARNING: {name}'s identity key changed since you first trusted it."
                )?;
            }
            say!(out, "Safety number with {name}:")?;
            say!(out, "{number}")?;
            say!(
                out,
                "Compare it with {name} in person or on a call (`sotto contact verify` on their side \
                 shows the same digits). If it matches, run `sotto contact trust {}`.",
                sotto_client::safe::shell_arg(&name)
            )?;
        }
        Command::Contact(ContactCommand::Remove { name }) => {
            let c = engine.remove_contact(&name).await?;
            let code = sotto_wire::code::ContactCode::from_account_id(c.account_id);
            say!(
                out,
                "Removed {} from your contacts. Your messages with them stay: \
                 `sotto history {code}`; add them again with `sotto contact add NAME {code}`.",
                c.name
            )?;
        }
        Command::Contact(ContactCommand::Rename { old, new }) => {
            let c = engine.rename_contact(&old, &new).await?;
            say!(
                out,
                "Renamed {old} to {}; your history with them stays.",
                c.name
            )?;
        }
        Command::Contact(ContactCommand::Trust { name, i_compared }) => {
            let trusted = engine.trust(&name, i_compared).await?;
            say!(out, "{}", trust_report(&name, trusted))?;
        }
        Command::Send { name, text } => {
            let sent = engine.send_text_outcome(&name, &text).await?;
            report_sent(&mut out, sent)?;
        }
        Command::Sync { json } => sync_command(engine, json, Vec::new()).await?,
        Command::History { name, json } => {
            let mut printer = Printer::new(json, false);
            // A contact's conversation, else a group's.
            let messages = match engine.history(&name) {
                // An ambiguous title says which groups it matches.
                Err(EngineError::UnknownContact(_)) => match engine.group_history(&name) {
                    Err(EngineError::UnknownGroup(_)) => bail!(
                        "no contact or group called \"{name}\": see `sotto contact list` and `sotto groups`"
                    ),
                    other => other?,
                },
                other => other?,
            };
            for message in messages {
                printer.message(&message);
            }
        }
        Command::Groups { json } => {
            for g in engine.groups()? {
                let role = g.role.map(|r| r.as_str());
                if json {
                    let line = json!({
                        "id": g.id,
                        "title": g.title,
                        "role": role,
                        "members": g.members,
                        "pending_requests": g.pending,
                        "waiting_to_join": g.waiting,
                        "announcements_only": g.settings.announcements_only,
                        "approval": g.settings.approval,
                        "disappearing_ms": g.settings.disappearing_ms,
                    });
                    cli::json(out.by_ref(), &line)?;
                } else if g.waiting {
                    say!(
                        out,
                        "{}  (join request sent; waiting for an admin)",
                        &g.id[..8]
                    )?;
                } else {
                    let status = match role {
                        Some(r) => format!("{} members, you are {r}", g.members),
                        None => "you are no longer a member".into(),
                    };
                    say!(out, "{}  {}  ({status})", &g.id[..8], g.title)?;
                }
            }
        }
        Command::Group(group) => group_command(engine, &mut out, group).await?,
        Command::Warn {
            group,
            about,
            role,
            kind,
            firsthand: _,
            secondhand,
            place,
            when,
            advice,
            text,
            anonymous,
            moderator,
        } => {
            let input = sotto_client::engine::WarningInput {
                subject: about,
                role,
                kind,
                firsthand: !secondhand,
                place,
                when,
                advice,
                text: text.unwrap_or_default(),
            };
            if anonymous {
                let posted = engine
                    .post_anonymously(
                        &group,
                        sotto_client::engine::AnonymousBody::Warning(input),
                        moderator.as_deref(),
                    )
                    .await?;
                report_anonymous(&mut out, &posted)?;
            } else {
                let w = engine.warn(&group, input).await?;
                say!(out, "posted warning {} to \"{}\"", w.id, w.group)?;
            }
        }
        Command::Duress(DuressCommand::Set {
            invite,
            name,
            erase_real,
        }) => {
            let duress = match cli::forwarded_duress_passphrase() {
                Some(Some(p)) => p,
                Some(None) => bail!("the duress passphrase was not sent with the command"),
                None => duress_passphrase()?,
            };
            engine
                .duress_set(home, &duress, &invite, &name, erase_real)
                .await?;
            say!(
                out,
                "Duress passphrase set. Unlocking with it opens a decoy profile{}.",
                if erase_real {
                    " and destroys this one"
                } else {
                    ""
                }
            )?;
            say!(
                out,
                "Use it once now to give the decoy some ordinary contacts and messages."
            )?;
        }
        Command::Duress(DuressCommand::Status) => {
            if engine.duress_is_set(home) {
                say!(out, "A duress passphrase is set.")?;
            } else {
                say!(out, "No duress passphrase is set.")?;
            }
        }
        Command::Duress(DuressCommand::Remove) => {
            engine.duress_remove(home).await?;
            say!(
                out,
                "Duress passphrase removed; its decoy profile was erased."
            )?;
        }
        Command::Corroborate {
            warning_id,
            firsthand,
        } => {
            let c = engine.corroborate(&warning_id, firsthand).await?;
            say!(
                out,
                "Corroborated warning {} anonymously (among {} members); {} member{} \
                 corroborated it so far.",
                &c.warning[..8],
                c.ring,
                c.count,
                if c.count == 1 { " has" } else { "s have" }
            )?;
        }
        Command::Note(NoteCommand::Add { text, file }) => {
            let file = match file {
                Some(path) => {
                    let meta = std::fs::metadata(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    if meta.len() > sotto_client::engine::MAX_NOTE_FILE_BYTES as u64 {
                        bail!(
                            "{} is {} bytes; the limit is {}",
                            path.display(),
                            meta.len(),
                            sotto_client::engine::MAX_NOTE_FILE_BYTES
                        );
                    }
                    let bytes = std::fs::read(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    let name = path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "file".into());
                    Some((name, bytes))
                }
                None => None,
            };
            // An error from the engine means nothing was kept; a note kept
            // but not countersigned fails too, and says it is kept.
            let n = engine.note_add(text.as_deref().unwrap_or(""), file).await?;
            match (n.countersigned_at_ms, n.countersign_error) {
                (Some(at), _) => say!(
                    out,
                    "kept note {} (countersigned by the relay at {})",
                    n.id,
                    sotto_client::engine::day_time(at)
                )?,
                (None, Some(reason)) => bail!(
                    "{}. The note is kept (note {}); it will be countersigned by a later \
                     `sotto note list` or `note export`",
                    safe::line(&reason),
                    n.id
                ),
                (None, None) => say!(out, "kept note {} (not countersigned yet)", n.id)?,
            }
        }
        Command::Note(NoteCommand::List { json }) => {
            for n in engine.notes().await? {
                if json {
                    cli::json(out.by_ref(), &n)?;
                } else {
                    let proof = match n.countersigned_at_ms {
                        Some(at) => format!("countersigned {}", sotto_client::engine::day_time(at)),
                        None => "not countersigned yet".into(),
                    };
                    let file = n
                        .file_name
                        .as_ref()
                        .map(|f| format!(" [file: {f}, {} bytes]", n.file_bytes))
                        .unwrap_or_default();
                    let head = format!("{}  {proof}  ", &n.id[..12]);
                    cli::entry(out.by_ref(), &head, &n.text, &file)?;
                }
            }
        }
        Command::Note(NoteCommand::Export { id, to }) => {
            let proof = engine.note_export(&id).await?;
            let bytes = serde_json::to_vec_pretty(&proof)?;
            // Private: the note is in it, in the clear.
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&to)
                .with_context(|| {
                    format!("cannot create {} (does it exist already?)", to.display())
                })?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            say!(
                out,
                "Wrote {} (the note in the clear, with its proof). Anyone can check it with \
                 `sotto note verify {}`.",
                to.display(),
                to.display()
            )?;
        }
        Command::Routes { .. }
        | Command::Panic { .. }
        | Command::App { .. }
        | Command::Listen { .. }
        | Command::Note(NoteCommand::Verify { .. }) => {
            unreachable!("handled before the store is opened")
        }
        Command::Warnings {
            group,
            about,
            json,
            merge,
            into,
        } => {
            if let (Some(from), Some(into)) = (merge, into) {
                engine.merge_subjects(&from, &into)?;
                say!(
                    out,
                    "Warnings about \"{from}\" now count with those about \"{into}\" (in this app only)."
                )?;
                return Ok(());
            }
            let summaries = engine.warnings(group.as_deref(), about.as_deref())?;
            if summaries.is_empty() && !json {
                say!(out, "No warnings.")?;
            }
            // A search that matches several subjects lists each as its own
            // person: counts are never added up across them.
            let several = about.is_some() && summaries.len() > 1 && !json;
            if let (true, Some(about)) = (several, &about) {
                say!(
                    out,
                    "{} different people match {}; each is counted on their own. If two are \
                     the same person: sotto warnings --merge NAME --into NAME",
                    summaries.len(),
                    sotto_client::safe::shell_arg(about)
                )?;
            }
            let total = summaries.len();
            for (i, s) in summaries.into_iter().enumerate() {
                if json {
                    cli::json(out.by_ref(), &s)?;
                    continue;
                }
                if several {
                    let how = match s.matched {
                        Some(sotto_client::engine::NameMatch::Exact) => "same name",
                        _ => "partly the same name",
                    };
                    say!(out, "")?;
                    say!(out, "Person {} of {total} ({how}):", i + 1)?;
                }
                print_subject(&mut out, &s)?;
            }
        }
        Command::Keys { json, no_top_up } => {
            let counts = if no_top_up {
                engine.counts().await?
            } else {
                engine.top_up().await?
            };
            if json {
                let line = json!({
                    "pre_keys": counts.pre_keys,
                    "kyber_pre_keys": counts.kyber_pre_keys,
                    "topped_up": counts.topped_up,
                });
                cli::json(out.by_ref(), &line)?;
            } else {
                say!(
                    out,
                    "one-time keys on the relay: {} EC, {} Kyber{}",
                    counts.pre_keys,
                    counts.kyber_pre_keys,
                    if counts.topped_up {
                        " (just topped up)"
                    } else {
                        ""
                    }
                )?;
            }
        }
        Command::Identity(IdentityCommand::Reset) => {
            // Messages already waiting are fetched first, and shown as `sync` would.
            let mut printer = Printer::new(false, true);
            engine
                .reset_identity(&mut |m| printer.message(m), &mut |n| notice(n))
                .await?;
            say!(
                out,
                "Your identity key is new. Contacts will see a changed safety number; \
                 ask them to verify and trust you again."
            )?;
        }
    }
    Ok(())
}

struct Printer {
    json: bool,
    /// Codes of people not in my contacts already told how to add (sync and
    /// listen tell once per person; `None` for history, which never does).
    strangers: Option<std::collections::HashSet<String>>,
}

impl Printer {
    fn new(json: bool, hint_strangers: bool) -> Printer {
        Printer {
            json,
            strangers: hint_strangers.then(Default::default),
        }
    }

    fn message(&mut self, m: &ShownMessage) {
        let mut out = cli::stdout();
        if self.json {
            let _ = cli::json(
                &mut out,
                &json!({
                    "id": m.id,
                    "from": m.from,
                    "from_contact": m.from_contact,
                    "peer": m.peer_code,
                    "direction": if m.outgoing { "out" } else { "in" },
                    "text": m.text,
                    "sent_at": m.sent_at_ms,
                    "status": m.status,
                    "group": m.group.as_ref().map(|(id, _)| id),
                    "group_title": m.group.as_ref().map(|(_, title)| title),
                }),
            );
        } else {
            let mark = match m.status {
                "failed" => "  (not sent)",
                "pending" => "  (waiting to send)",
                _ => "",
            };
            // "~" marks a name the sender chose, as Signal does for profile names.
            let tilde = if m.from_contact { "" } else { "~" };
            let place = match &m.group {
                Some((_, title)) => format!("[{title}] "),
                None => String::new(),
            };
            let head = format!("[{}] {place}{tilde}{}: ", clock(m.sent_at_ms), m.from);
            let _ = cli::entry(&mut out, &head, &m.text, mark);
            // Someone who is not a contact wrote: say how to find them again
            // and add them (to stderr, so stdout keeps one line per message).
            if !m.from_contact
                && m.group.is_none()
                && let Some(told) = &mut self.strangers
                && told.insert(m.peer_code.clone())
            {
                let handle = sotto_client::safe::shell_arg(&format!("~{}", m.from));
                tell!(
                    "~{} is not one of your contacts (their code: {}). `sotto history {handle}` \
                     shows your conversation; add them with `sotto contact add NAME {}`.",
                    m.from,
                    m.peer_code,
                    m.peer_code
                );
            }
        }
        // Flushed per line so `listen` output reaches pipes at once.
        let _ = out.flush();
    }
}

/// Exit status of a send whose message is saved and queued but not yet at
/// the relay (EX_TEMPFAIL): scripts tell it from 0 (the relay has it) and 1
/// (refused).
const EXIT_QUEUED: i32 = 75;

/// The line `listen` prints when it is connected, on a terminal only: JSON
/// consumers and pipes get messages and nothing else.
fn connected_line(again: bool, json: bool, terminal: bool) -> Option<&'static str> {
    match (json || !terminal, again) {
        (true, _) => None,
        (false, false) => Some("connected, listening (Ctrl-C to stop)"),
        (false, true) => Some("connected again, listening"),
    }
}

/// Returned by a command whose message is queued: `main` exits with
/// [`EXIT_QUEUED`] (what happened is already printed).
#[derive(Debug)]
struct Queued;

impl std::fmt::Display for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("queued")
    }
}

impl std::error::Error for Queued {}

/// Prints "sent ID", or "queued ID: why" and ends the command with [`EXIT_QUEUED`].
fn report_sent(out: &mut impl Write, sent: Sent) -> Result<()> {
    match sent.delivery {
        Delivery::Relayed => {
            say!(out, "sent {}", sent.id)?;
            Ok(())
        }
        Delivery::Queued(reason) if cli::is_forwarded() => {
            say!(
                out,
                "queued {}: {}. The running Sotto (`sotto app` or `sotto listen`) sends it by \
                 itself when the relay is back; do not send it again.",
                sent.id,
                safe::line(&reason)
            )?;
            Err(Queued.into())
        }
        Delivery::Queued(reason) => {
            say!(
                out,
                "queued {}: {}. It is kept and goes out with the next `sotto send`, `sync` or \
                 `listen`; do not send it again.",
                sent.id,
                safe::line(&reason)
            )?;
            Err(Queued.into())
        }
    }
}

/// What `contact trust` says it did (only what is true).
fn trust_report(name: &str, trusted: sotto_client::engine::Trusted) -> String {
    let shown = safe::line(name);
    let arg = safe::shell_arg(name);
    let first = if trusted.key_changed {
        format!("Accepted {shown}'s new identity key: sending to them works again.")
    } else {
        format!("{shown}'s identity key has not changed; it was already trusted.")
    };
    let second = match trusted.verified {
        Verification::Shown => format!(
            "Marked {shown} verified: `sotto contact verify` showed you this key's safety number."
        ),
        Verification::SaidCompared => format!(
            "Marked {shown} verified: you said you compared this key's safety number (--i-compared)."
        ),
        Verification::Already => format!("{shown} was already marked verified for this key."),
        Verification::No => format!(
            "{shown} is NOT marked verified: you have not been shown this key's safety number. \
             Run `sotto contact verify {arg}`, compare the number with them, then `sotto contact \
             trust {arg}` again."
        ),
    };
    format!("{first} {second}")
}

/// Whether `sync` says "no new messages": only to a person at a terminal,
/// never in `--json` or to a pipe, where scripts read the output.
fn say_no_new_messages(shown: usize, json: bool, terminal: bool) -> bool {
    shown == 0 && !json && terminal
}

fn notice(n: &Notice) {
    match n {
        Notice::Connected { .. } => {}
        Notice::OutboxPending(reason) => tell!(
            "not sent yet: {reason}. It is kept and goes out with the next `sotto send`, \
             `sync` or `listen`"
        ),
        Notice::IdentityChanged(name) => tell!(
            "warning: {name}'s safety number has changed. Sending to them is blocked until you \
             run `sotto contact verify {arg}` and `sotto contact trust {arg}`.",
            arg = sotto_client::safe::shell_arg(name)
        ),
        Notice::Undecryptable { seq, reason } => {
            tell!("warning: dropped a message that cannot be decrypted (#{seq}): {reason}")
        }
        Notice::ToppedUp(n) => tracing::info!("uploaded {n} new one-time keys"),
        Notice::Offline(reason) => tell!("{reason}; retrying until the relay is back"),
        Notice::Group(what) => tell!("{what}"),
    }
}

async fn group_command(
    engine: &mut Engine,
    out: &mut impl Write,
    command: GroupCommand,
) -> Result<()> {
    let result = group_command_inner(engine, out, command).await;
    for n in engine.take_notices() {
        notice(&n);
    }
    result
}

async fn group_command_inner(
    engine: &mut Engine,
    out: &mut impl Write,
    command: GroupCommand,
) -> Result<()> {
    match command {
        GroupCommand::Create { title } => {
            let same = |t: &str| t.to_lowercase() == title.trim().to_lowercase();
            let before: Vec<String> = engine
                .groups()?
                .into_iter()
                .filter(|g| !g.waiting && same(&g.title))
                .map(|g| g.id[..8].to_string())
                .collect();
            let g = engine.group_create(&title).await?;
            say!(
                out,
                "Created \"{}\" ({}). You are its owner.",
                g.title,
                &g.id[..8]
            )?;
            // With two groups of one title, the title no longer names one:
            // the suggestions use the id.
            let name = if before.is_empty() {
                sotto_client::safe::shell_arg(&g.title)
            } else {
                tell!(
                    "warning: you already have a group called \"{}\" ({}); commands that \
                     name it by title will ask which one. Use this one's id, {}, to name it.",
                    g.title,
                    before.join(", "),
                    &g.id[..8]
                );
                g.id[..8].to_string()
            };
            say!(
                out,
                "Add members with `sotto group add {name} CONTACT...` or share `sotto group link`."
            )?;
            say!(
                out,
                "Messages disappear after 7 days (warnings are kept until deleted); change \
                 this with `sotto group settings {name} --disappearing DURATION|off`."
            )?;
        }
        GroupCommand::Add { group, contacts } => {
            let state = engine.group_add(&group, &contacts).await?;
            say!(
                out,
                "\"{}\" now has {} members.",
                state.title,
                state.members.len()
            )?;
        }
        GroupCommand::Remove { group, who } => {
            let m = engine.group_remove(&group, &who).await?;
            let done = format!(
                "Removed {who} from \"{group}\"; the group key was replaced, so they cannot read \
                 anything new."
            );
            report_moderation(out, &group, &m, &done)?;
        }
        GroupCommand::Leave { group } => {
            engine.group_leave(&group).await?;
            say!(out, "You left \"{group}\".")?;
        }
        GroupCommand::Send {
            group,
            text,
            anonymous: false,
            ..
        } => {
            let sent = engine.group_send_outcome(&group, &text).await?;
            report_sent(out, sent)?;
        }
        GroupCommand::Send {
            group,
            text,
            anonymous: true,
            moderator,
        } => {
            let posted = engine
                .post_anonymously(
                    &group,
                    sotto_client::engine::AnonymousBody::Text(text),
                    moderator.as_deref(),
                )
                .await?;
            report_anonymous(out, &posted)?;
        }
        GroupCommand::Submissions { group, json } => {
            for s in engine.group_submissions(&group)? {
                if json {
                    let line = json!({
                        "id": s.id,
                        "from": s.from,
                        "text": s.text,
                        "received_at": s.received_at_ms,
                    });
                    cli::json(out.by_ref(), &line)?;
                } else {
                    let head = format!(
                        "{}  from {} ({}): ",
                        &s.id[..8],
                        s.from,
                        clock(s.received_at_ms)
                    );
                    cli::entry(out.by_ref(), &head, &s.text, "")?;
                }
            }
        }
        GroupCommand::Publish { group, id } => {
            engine.group_publish(&group, &id).await?;
            say!(
                out,
                "Published; members see it as \"a member (approved by a moderator)\"."
            )?;
        }
        GroupCommand::Discard { group, id } => {
            engine.group_discard(&group, &id)?;
            say!(out, "Discarded; it was not published.")?;
        }
        GroupCommand::Members { group, json } => {
            for m in engine.group_members(&group).await? {
                if json {
                    let line = json!({
                        "name": m.name,
                        "code": m.code,
                        "role": m.role.as_str(),
                        "me": m.me,
                    });
                    cli::json(out.by_ref(), &line)?;
                } else {
                    let me = if m.me { " (you)" } else { "" };
                    say!(out, "{}{me}  {}  {}", m.name, m.role.as_str(), m.code)?;
                }
            }
        }
        GroupCommand::Promote { group, who } => {
            let m = engine.group_set_role(&group, &who, true).await?;
            let done = format!("{who} is now an admin of \"{group}\".");
            report_moderation(out, &group, &m, &done)?;
        }
        GroupCommand::Demote { group, who } => {
            let m = engine.group_set_role(&group, &who, false).await?;
            let done = format!("{who} is now a member (not an admin) of \"{group}\".");
            report_moderation(out, &group, &m, &done)?;
        }
        GroupCommand::Proposals { group, json } => {
            for p in engine.group_proposals(&group).await? {
                if json {
                    let message = p.message.as_ref().map(|m| {
                        json!({
                            "id": m.id,
                            "in_this_app": m.text.is_some() || m.warning.is_some(),
                            "author": m.author,
                            "sent_at": m.sent_at_ms,
                            "text": m.text,
                            "warning": m.warning.as_ref().map(|(subject, kind)| {
                                json!({ "subject": subject, "kind": kind })
                            }),
                        })
                    });
                    let line = json!({
                        "id": p.id,
                        "action": p.action,
                        "by": p.by,
                        "approvals": p.approvals,
                        "needed": p.needed,
                        "at": p.at_ms,
                        "message": message,
                    });
                    cli::json(out.by_ref(), &line)?;
                } else {
                    say!(
                        out,
                        "{}  {} proposed to {} ({} of {} agree; {})",
                        p.id,
                        sotto_client::safe::line(&p.by),
                        sotto_client::safe::line(&p.action),
                        p.approvals,
                        p.needed,
                        clock(p.at_ms)
                    )?;
                    if let Some(m) = &p.message {
                        print_proposed_message(out, m)?;
                    }
                }
            }
        }
        GroupCommand::Agree { group, proposal } => {
            let m = engine.group_agree(&group, &proposal).await?;
            report_moderation(
                out,
                &group,
                &m,
                "Agreed; that was the last approval needed, so it is done.",
            )?;
        }
        GroupCommand::Withdraw { group, proposal } => {
            engine.group_withdraw(&group, &proposal).await?;
            say!(out, "Withdrew proposal {proposal}.")?;
        }
        GroupCommand::Settings {
            group,
            announcements_only,
            approval,
            disappearing,
            warning_retention,
            vouches,
            reconfirm,
            quorum,
            anonymous_posts,
        } => {
            let m = engine
                .group_settings(
                    &group,
                    sotto_client::engine::SettingsChange {
                        announcements_only,
                        approval,
                        disappearing_ms: disappearing,
                        warning_retention_ms: warning_retention,
                        vouches_required: vouches,
                        reconfirm_ms: reconfirm,
                        quorum,
                        anonymous_posts,
                    },
                )
                .await?;
            let s = match m {
                sotto_client::engine::Moderation::Done(state) => state.settings,
                proposed => return report_moderation(out, &group, &proposed, ""),
            };
            let on = |b: bool| if b { "on" } else { "off" };
            say!(out, "announcements-only: {}", on(s.announcements_only))?;
            say!(out, "approval: {}", on(s.approval))?;
            say!(
                out,
                "disappearing: {}",
                match s.disappearing_ms {
                    0 => "off".to_string(),
                    ms => sotto_client::group::human_duration(ms),
                }
            )?;
            say!(
                out,
                "vouches needed to join: {}",
                match s.vouches_required {
                    0 => "off".to_string(),
                    n => n.to_string(),
                }
            )?;
            say!(
                out,
                "re-confirm every: {}",
                match s.reconfirm_ms {
                    0 => "off".to_string(),
                    ms => sotto_client::group::human_duration(ms),
                }
            )?;
            say!(
                out,
                "quorum: {}",
                match s.quorum {
                    0 | 1 => "off".to_string(),
                    k => format!("{k} admins"),
                }
            )?;
            say!(out, "anonymous posts: {}", s.anonymous_posts.as_str())?;
            say!(
                out,
                "warnings kept: {}",
                match s.warning_retention_ms {
                    0 => "until deleted".to_string(),
                    ms => sotto_client::group::human_duration(ms),
                }
            )?;
        }
        GroupCommand::Reconfirm { group } => match engine.group_reconfirm(&group).await? {
            Some(due) => say!(
                out,
                "Re-confirmed; next due by {}.",
                sotto_client::engine::day_time(due)
            )?,
            None => say!(out, "Re-confirmed.")?,
        },
        GroupCommand::Vouch { group, who } => {
            let v = engine.group_vouch(&group, &who).await?;
            let (have, needed) = (v.have, v.needed);
            if v.admitted {
                say!(out, "Vouched; {who} is now a member.")?;
            } else if v.approval && have >= needed {
                say!(
                    out,
                    "Vouched for {who} ({have} of {needed} so far); they now wait for an admin's approval."
                )?;
            } else if v.approval {
                say!(
                    out,
                    "Vouched for {who} ({have} of {needed} so far); once {needed} members have vouched, an admin decides."
                )?;
            } else {
                say!(
                    out,
                    "Vouched for {who} ({have} of {needed} so far); an admin's app admits them once {needed} members have."
                )?;
            }
        }
        GroupCommand::Link { group, reset } => {
            let link = engine.group_link(&group, reset).await?;
            if reset {
                say!(out, "The old link no longer works. The new one:")?;
            }
            say!(out, "{link}")?;
        }
        GroupCommand::Join { link } => {
            engine.group_join(&link).await?;
            say!(
                out,
                "Asked to join. An admin's app lets you in (or asks an admin to approve) when it next syncs; `sotto sync` will say when you are in."
            )?;
        }
        GroupCommand::Requests { group, json } => {
            for p in engine.group_requests(&group).await? {
                let code = sotto_wire::code::ContactCode::from_account_id(p.account).to_string();
                if json {
                    let line = json!({
                        "name": p.name,
                        "code": code,
                        "requested_at": p.requested_at_ms,
                        "vouches": p.vouches.len(),
                    });
                    cli::json(out.by_ref(), &line)?;
                } else {
                    say!(
                        out,
                        "~{}  {}  asked {}  ({} vouches)",
                        p.name,
                        code,
                        clock(p.requested_at_ms),
                        p.vouches.len()
                    )?;
                }
            }
        }
        GroupCommand::Approve { group, who } => {
            engine.group_resolve(&group, &who, true).await?;
            say!(out, "Approved {who}; they are now a member of \"{group}\".")?;
        }
        GroupCommand::Deny { group, who } => {
            engine.group_resolve(&group, &who, false).await?;
            say!(out, "Denied {who}'s request to join \"{group}\".")?;
        }
        GroupCommand::Delete { group, message_id } => {
            let m = engine.group_delete(&group, &message_id).await?;
            let done = format!("Deleted the message for everyone in \"{group}\".");
            report_moderation(out, &group, &m, &done)?;
        }
        GroupCommand::Log { group, json } => {
            for e in engine.group_log(&group).await? {
                let by = sotto_wire::code::ContactCode::from_account_id(e.by).to_string();
                if json {
                    let line = json!({
                        "at": e.at_ms,
                        "by": e.by_name,
                        "by_code": by,
                        "action": e.action,
                    });
                    cli::json(out.by_ref(), &line)?;
                } else {
                    say!(out, "[{}] {}: {}", clock(e.at_ms), e.by_name, e.action)?;
                }
            }
        }
    }
    Ok(())
}

/// UTC "YYYY-MM-DD HH:MM" without pulling in a date crate.
fn clock(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let (h, m) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}")
}

fn default_home() -> Result<PathBuf> {
    if let Some(data) = std::env::var_os("XDG_DATA_HOME") {
        return Ok(PathBuf::from(data).join("sotto"));
    }
    let home = std::env::var_os("HOME").context("set --home DIR or SOTTO_HOME")?;
    Ok(PathBuf::from(home).join(".local/share/sotto"))
}

/// The duress passphrase for `duress set`: SOTTO_DURESS_PASSPHRASE or typed twice.
fn duress_passphrase() -> Result<String> {
    if let Ok(p) = std::env::var("SOTTO_DURESS_PASSPHRASE")
        && !p.is_empty()
    {
        return Ok(p);
    }
    let first = rpassword::prompt_password("Duress passphrase: ")
        .context("cannot read a passphrase: run in a terminal or set SOTTO_DURESS_PASSPHRASE")?;
    let again = rpassword::prompt_password("Again: ")?;
    if first != again {
        bail!("the two duress passphrases differ; nothing was set up");
    }
    if first.is_empty() {
        bail!("the duress passphrase cannot be empty");
    }
    Ok(first)
}

fn passphrase(confirm: bool) -> Result<String> {
    if let Ok(p) = std::env::var("SOTTO_PASSPHRASE") {
        if p.is_empty() {
            bail!("SOTTO_PASSPHRASE is set but empty");
        }
        return Ok(p);
    }
    let first = rpassword::prompt_password("Passphrase for this Sotto profile: ")
        .context("cannot read a passphrase: run in a terminal or set SOTTO_PASSPHRASE")?;
    if first.is_empty() {
        bail!("the passphrase cannot be empty");
    }
    if confirm {
        sotto_client::engine::check_new_passphrase(&first)?;
        let again = rpassword::prompt_password("Same passphrase again: ")
            .context("cannot read the passphrase")?;
        if again != first {
            bail!("the two passphrases differ; nothing was created");
        }
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_new_messages_only_for_a_person_at_a_terminal() {
        assert!(say_no_new_messages(0, false, true));
        assert!(!say_no_new_messages(0, false, false), "not to a pipe");
        assert!(!say_no_new_messages(0, true, true), "not in --json");
        assert!(
            !say_no_new_messages(2, false, true),
            "not when there were some"
        );
    }

    #[test]
    fn trust_claims_verification_only_when_it_was_earned() {
        use sotto_client::engine::Trusted;
        let report = |key_changed, verified| {
            trust_report(
                "bob",
                Trusted {
                    key_changed,
                    verified,
                },
            )
        };
        let unseen = report(true, Verification::No);
        assert!(unseen.contains("NOT marked verified"), "{unseen}");
        assert!(unseen.contains("sotto contact verify bob"), "{unseen}");
        let unchanged = report(false, Verification::No);
        assert!(unchanged.contains("has not changed"), "{unchanged}");
        assert!(!unchanged.contains("Marked"), "{unchanged}");
        assert!(report(true, Verification::Shown).contains("Marked bob verified"));
        assert!(report(false, Verification::SaidCompared).contains("--i-compared"));
        // A name from a person is shown safely and pasted back quoted.
        let odd = trust_report(
            "a\x1b[2Jb c",
            Trusted {
                key_changed: true,
                verified: Verification::No,
            },
        );
        assert!(!odd.contains('\x1b'), "{odd:?}");
        assert!(odd.contains("'a"), "{odd:?}");
    }

    #[test]
    fn clock_formats_utc() {
        assert_eq!(clock(0), "1970-01-01 00:00");
        assert_eq!(clock(1_700_000_000_000), "2023-11-14 22:13");
    }

    #[test]
    fn listen_says_it_is_connected_only_to_a_person() {
        assert_eq!(
            connected_line(false, false, true),
            Some("connected, listening (Ctrl-C to stop)")
        );
        assert_eq!(
            connected_line(true, false, true),
            Some("connected again, listening")
        );
        // Scripts read JSON, and pipes get messages only.
        assert_eq!(connected_line(false, true, true), None);
        assert_eq!(connected_line(false, false, false), None);
    }

    #[test]
    fn cli_rejects_missing_arguments() {
        assert!(Cli::try_parse_from(["sotto", "send", "alex"]).is_err());
        assert!(Cli::try_parse_from(["sotto", "init", "--name", "x"]).is_err());
        assert!(Cli::try_parse_from(["sotto", "contact", "add", "alex", "CODE"]).is_ok());
    }
}
