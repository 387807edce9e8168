//! `sotto-relay`: set up, run and administer a Sotto relay.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use sotto_relay::config::{LogFormat, parse_duration};

/// `println!` that hands back the write error instead of panicking, so that
/// when the reader leaves (`sotto-relay stats | head -1`) the command ends
/// quietly with status 0 (see `main`).
macro_rules! say {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*)
    };
}

/// `print!` that hands back the write error (see [`say!`]).
macro_rules! say_inline {
    ($($arg:tt)*) => {
        write!(std::io::stdout(), $($arg)*)
    };
}

/// The Sotto relay stores and forwards sealed messages it cannot read.
///
/// Typical first run:
///   sotto-relay init --data-dir ./relay --public-addr relay.example.org:4433
///   sotto-relay serve --data-dir ./relay
///   sotto-relay invite --data-dir ./relay      (in another terminal; send the link to a member)
///
/// Looking after it (all take --data-dir DIR or SOTTO_RELAY_DIR, running or stopped):
///   sotto-relay invite list | invite revoke ID
///   sotto-relay stats
///   sotto-relay account ban CONTACT_CODE | account unban ... | account remove ...
///   sotto-relay check-config
///   sotto-relay backup --to FILE      sotto-relay restore --from FILE --data-dir NEW_DIR
#[derive(Parser)]
#[command(name = "sotto-relay", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new relay: TLS certificate, signing keys, config.toml and database.
    ///
    /// Prints the certificate's SPKI pin (clients get it inside invite links).
    /// Next step: `sotto-relay serve --data-dir DIR`.
    Init {
        /// Directory for the relay's keys, config and database (created, mode 0700).
        #[arg(long, env = "SOTTO_RELAY_DIR")]
        data_dir: PathBuf,
        /// UDP address to listen on; 0.0.0.0:4433 on a server.
        #[arg(long, default_value = sotto_relay::config::DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// HOST:PORT that clients will dial (put in invite links). Defaults to the listen address.
        #[arg(long)]
        public_addr: Option<String>,
        /// Your own certificate chain (PEM, e.g. fullchain.pem from an ACME
        /// client) instead of a self-signed one. Needs --key.
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// The private key (PEM) for --cert.
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
    },
    /// Run the relay until Ctrl-C or SIGTERM.
    ///
    /// Serves QUIC on the UDP port and TLS over TCP on the same TCP port (for
    /// networks that block UDP). SIGHUP reloads the TLS certificate files.
    /// Prints `listening on IP:PORT` once ready; logs go to stderr.
    /// Next step: `sotto-relay invite --data-dir DIR` to let someone join.
    Serve {
        /// The directory made by `sotto-relay init`.
        #[arg(long, env = "SOTTO_RELAY_DIR")]
        data_dir: PathBuf,
    },
    /// Make, list or revoke invite links.
    ///
    /// `sotto-relay invite --data-dir DIR` alone makes one link (same as `invite create`).
    /// Talks to the running relay, or opens its database if it is stopped.
    /// Send a link privately; whoever holds it can join until it is used up or expires.
    #[command(args_conflicts_with_subcommands = true)]
    Invite {
        #[command(subcommand)]
        action: Option<InviteCmd>,
        #[command(flatten)]
        dir: DirArg,
        #[command(flatten)]
        new: NewInvite,
    },
    /// Show counts: accounts, devices, queued messages, groups, disk use, open connections.
    ///
    /// Never shows message content or who talks to whom (the relay does not know).
    Stats {
        #[command(flatten)]
        dir: DirArg,
        /// Print one JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Ban, unban or remove a member's account.
    ///
    /// ACCOUNT is the member's contact code (they see it with `sotto whoami`) or
    /// the account's UUID.
    Account {
        #[command(subcommand)]
        action: AccountCmd,
    },
    /// Check config.toml and SOTTO_RELAY_* variables without starting anything.
    ///
    /// Prints the settings the relay would use, or the exact problem (exit code 1).
    CheckConfig {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Write a backup of the whole relay (keys, certificate, config, database) to a new file.
    ///
    /// Works while the relay is serving. The file holds the relay's private keys
    /// and is created readable by you only; keep it somewhere safe.
    /// Restore it with `sotto-relay restore --from FILE --data-dir NEW_DIR`.
    Backup {
        #[command(flatten)]
        dir: DirArg,
        /// The backup file to create; it must not exist yet.
        #[arg(long)]
        to: PathBuf,
    },
    /// Rebuild a relay from a backup file into a new, empty directory.
    ///
    /// Do not run `init` on that directory first. The restored relay has the
    /// same certificate pin and keys, so existing members and links keep working.
    Restore {
        /// The backup file made by `sotto-relay backup`.
        #[arg(long)]
        from: PathBuf,
        /// Where to put the restored relay: a new or empty directory.
        #[arg(long, env = "SOTTO_RELAY_DIR")]
        data_dir: PathBuf,
    },
}

/// `--data-dir`, shared by the admin commands.
#[derive(clap::Args, Clone)]
struct DirArg {
    /// The directory made by `sotto-relay init` (or set SOTTO_RELAY_DIR).
    #[arg(long, env = "SOTTO_RELAY_DIR")]
    data_dir: Option<PathBuf>,
}

impl DirArg {
    fn get(&self) -> anyhow::Result<&Path> {
        self.data_dir
            .as_deref()
            .context("say which relay: add --data-dir DIR (the directory made by `sotto-relay init`) or set SOTTO_RELAY_DIR")
    }
}

/// Options of a new invite.
#[derive(clap::Args, Clone)]
struct NewInvite {
    /// How many people can join with this link.
    #[arg(long, default_value_t = 1)]
    uses: u32,
    /// How long the link stays valid, with a unit: 30m, 12h, 7d, ...
    #[arg(long, default_value = "7d", value_parser = parse_expiry)]
    expires: Duration,
}

/// `--expires`: like config durations, but the unit is required, because a
/// bare `2` (meant as days) would make a link that dies in two seconds.
fn parse_expiry(s: &str) -> Result<Duration, String> {
    if s.trim().chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "`{}` has no unit; give one, as in 30m, 12h or 7d (minutes, hours, days)",
            s.trim()
        ));
    }
    parse_duration(s)
}

#[derive(Subcommand)]
enum InviteCmd {
    /// Make an invite link (prints it as the last line).
    Create {
        #[command(flatten)]
        dir: DirArg,
        #[command(flatten)]
        new: NewInvite,
    },
    /// List invites that can still be used: id, uses left, expiry. Never shows the links.
    List {
        #[command(flatten)]
        dir: DirArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make an invite stop working, by the id shown in `invite list`.
    Revoke {
        /// The invite id from `sotto-relay invite list` (the first few characters are enough).
        id: String,
        #[command(flatten)]
        dir: DirArg,
    },
}

#[derive(Subcommand)]
enum AccountCmd {
    /// Stop an account from connecting, and disconnect it now. Its data stays.
    Ban {
        /// The member's contact code (from `sotto whoami`) or account UUID.
        account: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Let a banned account connect again.
    Unban {
        /// The member's contact code (from `sotto whoami`) or account UUID.
        account: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Delete an account for good: its keys and undelivered messages. Cannot be undone.
    Remove {
        /// The member's contact code (from `sotto whoami`) or account UUID.
        account: String,
        #[command(flatten)]
        dir: DirArg,
    },
}

fn main() -> std::process::ExitCode {
    // Files and sockets this process makes are its owner's alone, whatever
    // the shell's umask (see `sotto_relay::private_umask`).
    sotto_relay::private_umask();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `sotto-relay stats | head -1`: the reader left; not an error.
            let broken_pipe = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                return std::process::ExitCode::SUCCESS;
            }
            // `{:#}` prints the context chain on one line, without a backtrace.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init {
            data_dir,
            listen,
            public_addr,
            cert,
            key,
        } => {
            // Stored as absolute paths: serve may run from another directory.
            let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
            let operator = cert.map(absolute).zip(key.map(absolute));
            let report = sotto_relay::init_with_cert(
                &data_dir,
                Some(listen),
                public_addr.clone(),
                operator.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
            )
            .with_context(|| format!("could not create a relay in {}", data_dir.display()))?;
            say!("Created a Sotto relay in {}.", data_dir.display())?;
            say!("spki pin: {}", report.spki_pin)?;
            say!(
                "trust root fingerprint: {} (evidence proofs name it; people compare it with this)",
                report.trust_root_fingerprint
            )?;
            if public_addr.is_none() && (listen.ip().is_loopback() || listen.ip().is_unspecified())
            {
                say!(
                    "Note: no --public-addr given; invite links will point at {listen} \
                     (with the real port if it is 0), which only this machine can reach. \
                     Set public_addr in config.toml for other machines."
                )?;
            }
            say!("Next: sotto-relay serve --data-dir {}", data_dir.display())?;
            Ok(())
        }
        Command::Serve { data_dir } => serve(&data_dir),
        Command::Invite { action, dir, new } => match action {
            None => invite(dir.get()?, new.uses, new.expires),
            Some(InviteCmd::Create { dir, new }) => invite(dir.get()?, new.uses, new.expires),
            Some(InviteCmd::List { dir, json }) => invite_list(dir.get()?, json),
            Some(InviteCmd::Revoke { id, dir }) => {
                let reply = admin(
                    dir.get()?,
                    serde_json::json!({"cmd": "invite_revoke", "id": id}),
                )?;
                say!(
                    "Revoked invite {}; its link no longer works.",
                    reply["id"].as_str().unwrap_or(&id)
                )?;
                Ok(())
            }
        },
        Command::Stats { dir, json } => stats(dir.get()?, json),
        Command::Account { action } => account(action),
        Command::CheckConfig { dir } => check_config(dir.get()?),
        Command::Backup { dir, to } => backup(dir.get()?, &to),
        Command::Restore { from, data_dir } => {
            let r = sotto_relay::backup::restore(&from, &data_dir)?;
            say!(
                "Restored {} database entries into {}.",
                r.entries,
                data_dir.display()
            )?;
            say!("Next: sotto-relay serve --data-dir {}", data_dir.display())?;
            Ok(())
        }
    }
}

/// Sends `req` to the running relay, or runs it on the stopped relay's
/// database. Returns the successful reply; a refusal becomes the error.
fn admin(data_dir: &Path, req: serde_json::Value) -> anyhow::Result<serde_json::Value> {
    let socket = sotto_relay::DataDir::new(data_dir).admin_socket();
    let reply = match UnixStream::connect(&socket) {
        Ok(stream) => ask(stream, &req)?,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            // No relay running: open the database directly.
            sotto_relay::admin::execute_offline(data_dir, &req).with_context(|| {
                format!(
                    "cannot open the relay in {} (if it is running, its admin.sock is missing; restart it)",
                    data_dir.display()
                )
            })?
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot reach {}", socket.display()));
        }
    };
    if reply["ok"] != true {
        bail!("{}", reply["error"].as_str().unwrap_or("unknown error"));
    }
    Ok(reply)
}

fn invite_list(data_dir: &Path, json: bool) -> anyhow::Result<()> {
    let reply = admin(data_dir, serde_json::json!({"cmd": "invite_list"}))?;
    let invites = reply["invites"].as_array().cloned().unwrap_or_default();
    if json {
        say!("{}", serde_json::Value::Array(invites))?;
        return Ok(());
    }
    if invites.is_empty() {
        say!(
            "No usable invites. Make one with: sotto-relay invite --data-dir {}",
            data_dir.display()
        )?;
        return Ok(());
    }
    let now = sotto_relay::now_ms();
    say!("{:<14} {:>9}  EXPIRES IN", "ID", "USES LEFT")?;
    for i in &invites {
        let left_ms = i["expires_at_ms"].as_u64().unwrap_or(0).saturating_sub(now);
        say!(
            "{:<14} {:>9}  {}",
            i["id"].as_str().unwrap_or("?"),
            i["uses_left"].as_u64().unwrap_or(0),
            approx(Duration::from_millis(left_ms))
        )?;
    }
    say!(
        "Revoke one with: sotto-relay invite revoke ID --data-dir {}",
        data_dir.display()
    )?;
    Ok(())
}

/// A rough human duration: `6d 23h`, `5h 10m`, `42m`.
fn approx(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {mins}m")
    } else {
        format!("{}m", mins.max(1))
    }
}

/// Bytes used by every file under `dir` (sockets and links not followed).
fn disk_use(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => disk_use(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

fn stats(data_dir: &Path, json: bool) -> anyhow::Result<()> {
    let r = admin(data_dir, serde_json::json!({"cmd": "stats"}))?;
    let disk = disk_use(data_dir);
    if json {
        let out = serde_json::json!({
            "accounts": r["accounts"],
            "devices": r["devices"],
            "queued_envelopes": r["queued_envelopes"],
            "groups": r["groups"],
            "disk_bytes": disk,
            "connections": r["connections"],
            "unauthenticated_connections": r["unauthenticated_connections"],
            "trust_root_fingerprint": r["trust_root_fingerprint"],
        });
        say!("{out}")?;
    } else {
        say!("accounts:          {}", r["accounts"])?;
        say!("devices:           {}", r["devices"])?;
        say!("queued messages:   {}", r["queued_envelopes"])?;
        say!("groups:            {}", r["groups"])?;
        say!("disk use (bytes):  {disk}")?;
        say!("open connections:  {}", r["connections"])?;
        say!("not signed in:     {}", r["unauthenticated_connections"])?;
        say!(
            "trust root fingerprint: {}",
            r["trust_root_fingerprint"].as_str().unwrap_or("?")
        )?;
    }
    Ok(())
}

/// Turns a contact code or UUID into the account UUID.
fn parse_account(s: &str) -> anyhow::Result<uuid::Uuid> {
    let s = s.trim();
    if let Ok(id) = uuid::Uuid::parse_str(s) {
        return Ok(id);
    }
    s.parse::<sotto_wire::code::ContactCode>()
        .map(|c| c.account_id())
        .map_err(|_| {
            anyhow::anyhow!(
                "`{s}` is not a contact code or account id; ask the member to run `sotto whoami` and copy the whole code"
            )
        })
}

fn account(action: AccountCmd) -> anyhow::Result<()> {
    let (cmd, account, dir) = match &action {
        AccountCmd::Ban { account, dir } => ("account_ban", account, dir),
        AccountCmd::Unban { account, dir } => ("account_unban", account, dir),
        AccountCmd::Remove { account, dir } => ("account_remove", account, dir),
    };
    let data_dir = dir.get()?;
    let id = parse_account(account)?;
    let r = admin(
        data_dir,
        serde_json::json!({"cmd": cmd, "account": id.to_string()}),
    )?;
    match action {
        AccountCmd::Ban { .. } => {
            say!(
                "Banned the account ({} device(s)); closed {} open connection(s).",
                r["devices"],
                r["closed"]
            )?;
            say!(
                "Undo with: sotto-relay account unban {account} --data-dir {}",
                data_dir.display()
            )?;
        }
        AccountCmd::Unban { .. } => {
            if r["was_banned"] == true {
                say!("Unbanned the account; it can connect again.")?;
            } else {
                say!("That account was not banned; nothing changed.")?;
            }
        }
        AccountCmd::Remove { .. } => say!(
            "Removed the account: {} device(s), {} undelivered message(s), {} prekey(s); \
             closed {} open connection(s).",
            r["devices"],
            r["envelopes"],
            r["pre_keys"],
            r["closed"]
        )?,
    }
    Ok(())
}

fn check_config(data_dir: &Path) -> anyhow::Result<()> {
    let config = sotto_relay::load_config(data_dir)?;
    // The certificate files too: a typo there would otherwise surface at the
    // next restart or SIGHUP.
    let identity = sotto_relay::load_identity(&sotto_relay::DataDir::new(data_dir), &config)
        .context("the TLS certificate does not load")?;
    say!(
        "# config.toml in {} is valid. Effective settings:",
        data_dir.display()
    )?;
    say!(
        "# TLS certificate pin (in invite links): {}",
        sotto_relay::tls::pin_text(&identity.pin()?)
    )?;
    let root = sotto_relay::trust_root_public(&sotto_relay::DataDir::new(data_dir))?;
    say!(
        "# trust root fingerprint (evidence proofs): {}",
        sotto_wire::invite::trust_root_fingerprint(&root)
    )?;
    for var in sotto_relay::config::env_overrides(|k| std::env::var(k).ok()) {
        say!("# (overridden by the environment: {var})")?;
    }
    say_inline!("{}", config.to_toml())?;
    Ok(())
}

fn backup(data_dir: &Path, to: &Path) -> anyhow::Result<()> {
    // The running relay writes the file, so it needs a path that does not
    // depend on our working directory.
    let to = std::path::absolute(to).context("cannot resolve the --to path")?;
    let r = admin(data_dir, serde_json::json!({"cmd": "backup", "to": to}))?;
    say!(
        "Wrote {} ({} bytes, {} database entries). It contains the relay's private keys: keep it safe.",
        to.display(),
        r["bytes"],
        r["entries"]
    )?;
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: a log file or journald would
    // get escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn serve(data_dir: &Path) -> anyhow::Result<()> {
    let config = sotto_relay::load_config(data_dir)?;
    init_logging(config.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        // Handlers go in before "listening on" is printed, so a supervisor that
        // signals as soon as it reads that line gets a clean shutdown.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot listen for SIGTERM")?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .context("cannot listen for SIGINT")?;
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot listen for SIGHUP")?;
        let running = sotto_relay::start(data_dir).await.with_context(|| {
            format!(
                "cannot start the relay in {} (is another sotto-relay already serving it?)",
                data_dir.display()
            )
        })?;
        {
            // A relay keeps serving when nobody reads its stdout (a closed
            // pipe would otherwise count as a quiet, successful exit).
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "listening on {}", running.local_addr);
            let _ = out.flush();
        }
        let token = running.shutdown_token();
        loop {
            tokio::select! {
                _ = int.recv() => break,
                _ = term.recv() => break,
                () = token.cancelled() => break,
                _ = hup.recv() => {
                    // A bad file keeps the old certificate serving.
                    if let Err(e) = sotto_relay::reload_certificate(data_dir, &running) {
                        tracing::error!(
                            error = %format!("{e:#}"),
                            "SIGHUP: could not reload the TLS certificate; still serving the old one"
                        );
                    }
                }
            }
        }
        tracing::info!("shutting down");
        let failed = running.shared.database_failed();
        running.shutdown().await;
        tracing::info!("stopped");
        if failed {
            // A non-zero exit, so systemd's Restart=on-failure brings it back.
            anyhow::bail!(
                "stopped because the database could not be written (disk full or I/O error); \
                 free space or fix the disk, then start the relay again"
            );
        }
        Ok(())
    })
}

fn invite(data_dir: &Path, uses: u32, expires: Duration) -> anyhow::Result<()> {
    if uses == 0 {
        bail!("--uses must be at least 1");
    }
    let socket = sotto_relay::DataDir::new(data_dir).admin_socket();
    let link = match UnixStream::connect(&socket) {
        Ok(stream) => invite_online(stream, uses, expires)?,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            // No relay running: open the database directly.
            let link = sotto_relay::offline_invite(data_dir, uses, expires)?;
            if link.relay.ends_with(":0") {
                eprintln!(
                    "warning: the relay listens on port 0 (a random port) and has no public_addr, \
                     so this link names port 0; set public_addr in config.toml"
                );
            }
            link.to_string()
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot reach {}", socket.display()));
        }
    };
    say!(
        "Invite for {uses} member(s), valid for {}. Send this link privately:",
        sotto_relay::config::format_duration(expires)
    )?;
    say!("{link}")?;
    Ok(())
}

fn invite_online(stream: UnixStream, uses: u32, expires: Duration) -> anyhow::Result<String> {
    let req = serde_json::json!({"cmd": "invite", "uses": uses, "expires_secs": expires.as_secs()});
    let reply = ask(stream, &req)?;
    if reply["ok"] != true {
        bail!(
            "the relay refused: {}",
            reply["error"].as_str().unwrap_or("unknown error")
        );
    }
    reply["link"]
        .as_str()
        .map(str::to_string)
        .context("the running relay's answer has no link")
}

/// Sends one request line to the running relay's admin socket and reads its answer.
fn ask(mut stream: UnixStream, req: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
    writeln!(stream, "{req}").context("cannot talk to the running relay")?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .context("no answer from the running relay")?;
    serde_json::from_str(&line).context("the running relay sent a bad answer")
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent_and_bare_invite_still_parses() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["sotto-relay", "invite", "--data-dir", "d", "--uses", "3"])
            .expect("bare invite");
        let Command::Invite { action, dir, new } = cli.command else {
            panic!("expected invite");
        };
        assert!(action.is_none());
        assert_eq!(dir.data_dir.as_deref(), Some(Path::new("d")));
        assert_eq!(new.uses, 3);
        let cli =
            Cli::try_parse_from(["sotto-relay", "invite", "revoke", "ab12", "--data-dir", "d"])
                .expect("revoke");
        assert!(matches!(
            cli.command,
            Command::Invite {
                action: Some(InviteCmd::Revoke { .. }),
                ..
            }
        ));
        assert!(Cli::try_parse_from(["sotto-relay", "invite", "--uses", "2", "list"]).is_err());
    }

    #[test]
    fn accounts_are_named_by_contact_code_or_uuid() {
        let id = uuid::Uuid::new_v4();
        let code = sotto_wire::code::ContactCode::from_account_id(id).to_string();
        assert_eq!(parse_account(&code).expect("code"), id);
        assert_eq!(parse_account(&id.to_string()).expect("uuid"), id);
        assert!(parse_account("not-a-code").is_err());
    }
}
