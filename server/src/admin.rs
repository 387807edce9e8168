//! The admin socket: `DIR/admin.sock`, one JSON object per line each way.
//!
//! sled admits one process per database, so while the relay runs, admin
//! commands (`sotto-relay invite`, stats) go through this socket instead of
//! opening the database. Requests:
//! - `{"cmd":"invite","uses":N,"expires_secs":S}` -> `{"ok":true,"link":"sotto://..."}`
//! - `{"cmd":"stats"}` -> `{"ok":true,"accounts":N,"queued_envelopes":M,"connections":C}`
//!
//! Errors are `{"ok":false,"error":"..."}`. The socket is mode 0600 inside a
//! 0700 directory: only the operator can mint invites.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::net::Shared;
use crate::{Error, Result};

/// Longest admin request line we read, so a local client cannot exhaust memory.
const MAX_LINE: usize = 4096;

/// A bound admin socket.
pub struct AdminServer {
    listener: UnixListener,
    path: PathBuf,
}

impl AdminServer {
    /// Binds `path`, replacing a stale socket left by a crashed relay.
    pub fn bind(path: &Path) -> Result<Self> {
        // The database lock is already held by us, so any socket here is stale.
        if path.exists() {
            std::fs::remove_file(path).map_err(|cause| Error::Io {
                what: format!("cannot remove stale {}", path.display()),
                cause,
            })?;
        }
        let listener = UnixListener::bind(path).map_err(|cause| Error::Io {
            what: format!("cannot bind {}", path.display()),
            cause,
        })?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
            |cause| Error::Io {
                what: format!("cannot restrict {}", path.display()),
                cause,
            },
        )?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Serves admin clients until `shutdown`, then removes the socket.
    pub async fn run(self, shared: Arc<Shared>, shutdown: CancellationToken) {
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                a = self.listener.accept() => a,
            };
            match accepted {
                Ok((stream, _)) => {
                    let shared = Arc::clone(&shared);
                    tokio::spawn(async move { serve_client(stream, &shared).await });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve_client(stream: UnixStream, shared: &Shared) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).take(MAX_LINE as u64 * 64);
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let reply = if line.len() > MAX_LINE {
            json!({"ok": false, "error": "request too long"})
        } else {
            handle_command(shared, line.trim())
        };
        let mut out = reply.to_string();
        out.push('\n');
        if write.write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Answers one admin request line.
pub fn handle_command(shared: &Shared, line: &str) -> Value {
    let fail = |msg: &str| json!({"ok": false, "error": msg});
    let Ok(req) = serde_json::from_str::<Value>(line) else {
        return fail("not JSON; send {\"cmd\":\"stats\"} or {\"cmd\":\"invite\",...}");
    };
    match req.get("cmd").and_then(Value::as_str) {
        Some("stats") => {
            let s = shared.relay.stats();
            json!({
                "ok": true,
                "accounts": s.accounts,
                "queued_envelopes": s.queued_envelopes,
                "connections": shared.connections(),
            })
        }
        Some("invite") => {
            let uses = req.get("uses").and_then(Value::as_u64).unwrap_or(1);
            let secs = req
                .get("expires_secs")
                .and_then(Value::as_u64)
                .unwrap_or(7 * 86_400);
            let Ok(uses) = u32::try_from(uses) else {
                return fail("uses is too large");
            };
            if uses == 0 || secs == 0 {
                return fail("uses and expires_secs must be greater than zero");
            }
            match crate::make_invite(
                &shared.relay,
                &shared.links,
                uses,
                Duration::from_secs(secs),
            ) {
                Ok(link) => json!({"ok": true, "link": link.to_string()}),
                Err(e) => {
                    tracing::error!(error = %e, "admin invite failed");
                    fail("could not store the invite; see the relay log")
                }
            }
        }
        _ => fail("unknown cmd; use \"invite\" or \"stats\""),
    }
}

#[cfg(test)]
mod tests {
    use libsignal_protocol::{KeyPair, ServerCertificate};

    use super::*;
    use crate::LinkInfo;
    use crate::config::Config;
    use crate::core::{Relay, Signer};
    use crate::store::SledStore;

    fn shared() -> Shared {
        let mut rng = rand::rng();
        let root = KeyPair::generate(&mut rng);
        let server = KeyPair::generate(&mut rng);
        let cert = ServerCertificate::new(1, server.public_key, &root.private_key, &mut rng)
            .expect("cert");
        Shared::new(
            Relay::new(
                SledStore::temporary().expect("db"),
                Config::default(),
                Signer::new(cert, server.private_key),
            ),
            LinkInfo {
                relay: "127.0.0.1:4433".into(),
                spki_pin: [1; 32],
                trust_root: root.public_key.serialize().to_vec(),
            },
        )
    }

    #[test]
    fn commands_answer_json() {
        let s = shared();
        let r = handle_command(&s, r#"{"cmd":"invite","uses":3,"expires_secs":60}"#);
        assert_eq!(r["ok"], true);
        let link: sotto_wire::invite::InviteLink = r["link"]
            .as_str()
            .expect("link string")
            .parse()
            .expect("valid link");
        assert_eq!(link.relay, "127.0.0.1:4433");
        let r = handle_command(&s, r#"{"cmd":"stats"}"#);
        assert_eq!(r["ok"], true);
        assert_eq!(r["accounts"], 0);
        assert_eq!(r["connections"], 0);
        assert_eq!(handle_command(&s, "nope")["ok"], false);
        assert_eq!(handle_command(&s, r#"{"cmd":"rm -rf"}"#)["ok"], false);
        assert_eq!(
            handle_command(&s, r#"{"cmd":"invite","uses":0}"#)["ok"],
            false
        );
    }
}
