//! The control socket of a running Sotto service (`sotto app` or `sotto listen`).
//!
//! sled admits one process per store, so while a service holds a profile,
//! every other `sotto` command for it is forwarded over `HOME/control.sock`
//! and carried out by the service's open engine, which sends back what the
//! command would have printed and its exit status. The protocol is JSON
//! lines: one [`Forward`] from the client, then [`Output`]s until `Exit`.
//!
//! Who may use it: the socket is created 0600 inside the 0700 profile
//! directory, and every connection's peer must run as the same user
//! (`SO_PEERCRED`), so another local account cannot reach the open profile
//! (ssh-agent's model). A request that carries a passphrase has it checked
//! even when the profile is open, so a script with a wrong one fails as it
//! would without the service.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

/// Longest request line accepted (a message is capped well below this).
const MAX_LINE: usize = 256 * 1024;

/// File name of the socket inside the profile directory.
pub const SOCKET: &str = "control.sock";

/// A command forwarded by a `sotto` process, as one JSON line.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Forward {
    /// The command line, as typed (`sotto` first).
    pub argv: Vec<String>,
    /// The client's working directory, for relative file names.
    pub cwd: PathBuf,
    /// Whether the client's stdout is a terminal (some output is for people only).
    pub terminal: bool,
    /// The passphrase, when the client has one (SOTTO_PASSPHRASE, or typed
    /// because the service is locked): checked, or used to unlock.
    pub passphrase: Option<String>,
    /// A duress passphrase the client read for `duress set`.
    #[serde(default)]
    pub duress_passphrase: Option<String>,
}

/// What the service sends back, one JSON line each.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// Text for the client's stdout.
    Out(String),
    /// Text for the client's stderr.
    Err(String),
    /// The profile is locked and the request had no passphrase: ask for it
    /// and send the request again.
    Locked,
    /// The command is done; exit with this status.
    Exit(i32),
}

/// Where a handler writes its outputs.
pub type Sink = mpsc::Sender<Output>;

/// What the service does with a forwarded command.
pub type Handler =
    Arc<dyn Fn(Forward, Sink) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Where the socket lives for a profile.
pub fn socket_path(home: &Path) -> PathBuf {
    home.join(SOCKET)
}

/// Binds the control socket (replacing a stale one: the caller holds the
/// store, so no other service owns it) and serves `handler` until the
/// returned task is aborted.
pub fn serve(home: &Path, handler: Handler) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::fs::PermissionsExt;

    let path = socket_path(home);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let me = rustix::process::getuid().as_raw();
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            // Same user only, whatever the socket's mode says.
            match stream.peer_cred() {
                Ok(cred) if cred.uid() == me => {}
                _ => continue,
            }
            let handler = handler.clone();
            tokio::spawn(async move {
                let _ = answer(stream, handler).await;
            });
        }
    }))
}

async fn answer(stream: UnixStream, handler: Handler) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_LINE as u64));
    let mut line = String::new();
    let n = reader.read_line(&mut line).await?;
    let request = match serde_json::from_str::<Forward>(&line[..n]) {
        Ok(request) => request,
        Err(_) => {
            write_line(&mut write, &Output::Err("malformed control request".into())).await?;
            return write_line(&mut write, &Output::Exit(2)).await;
        }
    };
    let (tx, mut rx) = mpsc::channel(64);
    let work = tokio::spawn(handler(request, tx));
    // The client leaving (Ctrl-C on a forwarded `listen`) ends the work.
    let mut gone = [0u8; 1];
    loop {
        tokio::select! {
            output = rx.recv() => match output {
                Some(output) => {
                    let last = matches!(output, Output::Exit(_) | Output::Locked);
                    if write_line(&mut write, &output).await.is_err() || last {
                        break;
                    }
                }
                None => break,
            },
            _ = reader.read(&mut gone) => break,
        }
    }
    work.abort();
    write.shutdown().await
}

async fn write_line(
    write: &mut (impl AsyncWriteExt + Unpin),
    output: &Output,
) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(output).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    write.flush().await
}

/// Connects to the service holding the profile, if one runs.
pub async fn connect(home: &Path) -> Option<UnixStream> {
    UnixStream::connect(socket_path(home)).await.ok()
}

/// Sends `request` over `stream` and hands each output to `on_output`
/// until the service says `Exit` (its status is returned) or `Locked`
/// (`None`).
pub async fn forward(
    stream: UnixStream,
    request: &Forward,
    on_output: &mut dyn FnMut(&Output),
) -> std::io::Result<Option<i32>> {
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let output: Output = serde_json::from_str(&line).map_err(std::io::Error::other)?;
        match output {
            Output::Exit(code) => return Ok(Some(code)),
            Output::Locked => return Ok(None),
            other => on_output(&other),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "the Sotto service stopped before the command finished",
    ))
}
