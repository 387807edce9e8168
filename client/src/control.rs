//! The control socket of a running `sotto listen`.
//!
//! sled admits one process per store, so while `sotto listen` holds a profile,
//! another `sotto send` cannot open it. Instead it forwards the send over
//! `HOME/control.sock` (mode 0600) to the listener, which performs it with its
//! open engine. Every request carries the passphrase and the listener checks it
//! against the store, so the socket grants nothing to a process that could not
//! open the store itself.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::engine::EngineCommand;

/// Longest request line accepted (a message is capped well below this).
const MAX_LINE: usize = 256 * 1024;

/// File name of the socket inside the profile directory.
pub const SOCKET: &str = "control.sock";

/// One forwarded command, as a JSON line.
#[derive(Serialize, Deserialize)]
pub struct Request {
    /// The profile's passphrase; the listener refuses the command without it.
    pub passphrase: String,
    /// Contact name (or group title or id prefix) to send to.
    pub name: String,
    /// The message text.
    pub text: String,
    /// True when `name` is a group, not a contact.
    #[serde(default)]
    pub group: bool,
}

/// The listener's answer, as a JSON line.
#[derive(Serialize, Deserialize, Debug)]
pub struct Reply {
    /// Hex id of the sent message, when it was accepted by the relay.
    pub id: Option<String>,
    /// What went wrong, otherwise.
    pub error: Option<String>,
    /// True when the message is saved but the relay does not have it yet:
    /// the listener sends it when the relay is back.
    #[serde(default)]
    pub queued: bool,
}

/// Where the socket lives for a profile.
pub fn socket_path(home: &Path) -> PathBuf {
    home.join(SOCKET)
}

/// Binds the control socket (replacing a stale one) and hands accepted
/// commands to `commands` until the returned task is aborted.
pub fn serve(
    home: &Path,
    commands: mpsc::Sender<EngineCommand>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::fs::PermissionsExt;

    let path = socket_path(home);
    // We hold the store lock, so no other listener can own this socket.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let commands = commands.clone();
            tokio::spawn(async move {
                let _ = answer(stream, commands).await;
            });
        }
    }))
}

async fn answer(stream: UnixStream, commands: mpsc::Sender<EngineCommand>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let n = BufReader::new(read.take(MAX_LINE as u64))
        .read_line(&mut line)
        .await?;
    let reply = match serde_json::from_str::<Request>(&line[..n]) {
        Err(_) => Reply {
            id: None,
            error: Some("malformed control request".into()),
            queued: false,
        },
        Ok(request) => {
            let (tx, rx) = oneshot::channel();
            let command = EngineCommand::Send {
                passphrase: request.passphrase,
                name: request.name,
                text: request.text,
                group: request.group,
                reply: tx,
            };
            if commands.send(command).await.is_err() {
                Reply {
                    id: None,
                    error: Some("the listener is shutting down".into()),
                    queued: false,
                }
            } else {
                match rx.await {
                    Ok(Ok(sent)) => Reply {
                        id: Some(sent.id),
                        error: None,
                        queued: sent.queued,
                    },
                    Ok(Err(e)) => Reply {
                        id: None,
                        error: Some(e),
                        queued: false,
                    },
                    Err(_) => Reply {
                        id: None,
                        error: Some("the listener stopped".into()),
                        queued: false,
                    },
                }
            }
        }
    };
    let mut out = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

/// Sends through a running listener. `Err` means no listener answered.
pub async fn forward(home: &Path, request: &Request) -> std::io::Result<Reply> {
    let mut stream = UnixStream::connect(socket_path(home)).await?;
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    let mut answer = String::new();
    BufReader::new(stream.take(MAX_LINE as u64))
        .read_line(&mut answer)
        .await?;
    serde_json::from_str(&answer).map_err(std::io::Error::other)
}
