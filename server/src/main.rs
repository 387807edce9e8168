//! `sotto-relay`: set up, run and administer a Sotto relay.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use sotto_relay::config::{LogFormat, parse_duration};

/// The Sotto relay stores and forwards sealed messages it cannot read.
///
/// Typical first run:
///   sotto-relay init --data-dir ./relay --public-addr relay.example.org:4433
///   sotto-relay serve --data-dir ./relay
///   sotto-relay invite --data-dir ./relay      (in another terminal; send the link to a member)
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
    },
    /// Run the relay until Ctrl-C or SIGTERM.
    ///
    /// Prints `listening on IP:PORT` once ready; logs go to stderr.
    /// Next step: `sotto-relay invite --data-dir DIR` to let someone join.
    Serve {
        /// The directory made by `sotto-relay init`.
        #[arg(long, env = "SOTTO_RELAY_DIR")]
        data_dir: PathBuf,
    },
    /// Make an invite link for a new member (prints it as the last line).
    ///
    /// Talks to the running relay, or opens its database if it is stopped.
    /// Send the link privately; whoever holds it can join until it is used up or expires.
    Invite {
        /// The directory made by `sotto-relay init`.
        #[arg(long, env = "SOTTO_RELAY_DIR")]
        data_dir: PathBuf,
        /// How many people can join with this link.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long the link stays valid: 30m, 12h, 7d, ...
        #[arg(long, default_value = "7d", value_parser = parse_duration)]
        expires: Duration,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
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
        } => {
            let report = sotto_relay::init(&data_dir, Some(listen), public_addr.clone())
                .with_context(|| format!("could not create a relay in {}", data_dir.display()))?;
            println!("Created a Sotto relay in {}.", data_dir.display());
            println!("spki pin: {}", report.spki_pin);
            if public_addr.is_none() && (listen.ip().is_loopback() || listen.ip().is_unspecified())
            {
                println!(
                    "Note: no --public-addr given; invite links will point at {listen} \
                     (with the real port if it is 0), which only this machine can reach. \
                     Set public_addr in config.toml for other machines."
                );
            }
            println!("Next: sotto-relay serve --data-dir {}", data_dir.display());
            Ok(())
        }
        Command::Serve { data_dir } => serve(&data_dir),
        Command::Invite {
            data_dir,
            uses,
            expires,
        } => invite(&data_dir, uses, expires),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
        let running = sotto_relay::start(data_dir).await.with_context(|| {
            format!(
                "cannot start the relay in {} (is another sotto-relay already serving it?)",
                data_dir.display()
            )
        })?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on {}", running.local_addr)?;
            out.flush()?;
        }
        let token = running.shutdown_token();
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            () = token.cancelled() => {}
        }
        tracing::info!("shutting down");
        running.shutdown().await;
        tracing::info!("stopped");
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
    println!(
        "Invite for {uses} member(s), valid for {}. Send this link privately:",
        sotto_relay::config::format_duration(expires)
    );
    println!("{link}");
    Ok(())
}

fn invite_online(mut stream: UnixStream, uses: u32, expires: Duration) -> anyhow::Result<String> {
    let req = serde_json::json!({"cmd": "invite", "uses": uses, "expires_secs": expires.as_secs()});
    writeln!(stream, "{req}").context("cannot talk to the running relay")?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .context("no answer from the running relay")?;
    let reply: serde_json::Value =
        serde_json::from_str(&line).context("the running relay sent a bad answer")?;
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
