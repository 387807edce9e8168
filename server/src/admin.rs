//! The admin socket: `DIR/admin.sock`, one JSON object per line each way.
//!
//! sled admits one process per database, so while the relay runs, admin
//! commands (`sotto-relay invite`, stats) go through this socket instead of
//! opening the database. When the relay is stopped, the CLI runs the same
//! requests through [`execute_offline`]. Requests:
//! - `{"cmd":"invite","uses":N,"expires_secs":S}` -> `{"ok":true,"link":"sotto://..."}`
//! - `{"cmd":"invite_list"}` -> `{"ok":true,"invites":[{"id","uses_left","expires_at_ms"}]}`
//! - `{"cmd":"invite_revoke","id":HEX}` -> `{"ok":true,"id":HEX}`
//! - `{"cmd":"stats"}` -> `{"ok":true,"accounts","devices","queued_envelopes","groups","connections","unauthenticated_connections","trust_root_fingerprint"}`
//! - `{"cmd":"account_ban"|"account_unban"|"account_remove","account":UUID}`
//! - `{"cmd":"backup","to":ABSOLUTE_PATH}` -> `{"ok":true,"bytes","trees","entries"}`
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

use uuid::Uuid;

use crate::core::Relay;
use crate::net::Shared;
use crate::store::{AccountStore, InviteStore, Store};
use crate::{Error, LinkInfo, Result};

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
        // Created 0600 from the start (umask 177 around the bind), so there
        // is no moment in which another local user could connect and run
        // operator commands; the chmod below only confirms it.
        let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
        let bound = UnixListener::bind(path);
        rustix::process::umask(old);
        let listener = bound.map_err(|cause| Error::Io {
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
                    let dir = self.path.parent().map(Path::to_path_buf);
                    tokio::spawn(serve_client(stream, shared, dir));
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

async fn serve_client(stream: UnixStream, shared: Arc<Shared>, data_dir: Option<PathBuf>) {
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
            match serde_json::from_str::<Value>(line.trim()) {
                Err(_) => not_json(),
                Ok(req) => {
                    let (shared, dir) = (Arc::clone(&shared), data_dir.clone());
                    // Store calls and backups block; keep them off the async workers.
                    let run = tokio::task::spawn_blocking(move || {
                        let ctx = Ctx {
                            relay: &shared.relay,
                            links: shared.links(),
                            live: Some(&shared),
                            data_dir: dir.as_deref(),
                        };
                        execute(&ctx, &req)
                    });
                    run.await.unwrap_or_else(
                        |_| json!({"ok": false, "error": "the command failed; see the relay log"}),
                    )
                }
            }
        };
        let mut out = reply.to_string();
        out.push('\n');
        if write.write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn not_json() -> Value {
    json!({"ok": false, "error": "not JSON; send {\"cmd\":\"stats\"} or {\"cmd\":\"invite\",...}"})
}

/// Answers one admin request line for a serving relay (no data directory, so
/// no backups).
pub fn handle_command(shared: &Shared, line: &str) -> Value {
    let Ok(req) = serde_json::from_str::<Value>(line) else {
        return not_json();
    };
    execute(
        &Ctx {
            relay: &shared.relay,
            links: shared.links(),
            live: Some(shared),
            data_dir: None,
        },
        &req,
    )
}

/// Where a command runs: inside the serving relay, or on a database the CLI
/// opened because the relay is stopped.
pub struct Ctx<'a> {
    /// The protocol core.
    pub relay: &'a Relay,
    /// Invite link material.
    pub links: LinkInfo,
    /// The serving relay's connections; `None` when it is stopped.
    pub live: Option<&'a Shared>,
    /// The data directory (needed for backups).
    pub data_dir: Option<&'a Path>,
}

/// Length, in bytes of the token hash, of the invite ids shown to the operator.
const INVITE_ID_BYTES: usize = 6;

/// The operator-facing id of an invite: short hex of its token *hash*, so
/// listing invites never reveals a usable token.
pub fn invite_id(token_hash: &[u8; 32]) -> String {
    token_hash[..INVITE_ID_BYTES]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs one admin request. Store failures go to the log; the answer says
/// what to do next.
pub fn execute(ctx: &Ctx<'_>, req: &Value) -> Value {
    match run(ctx, req) {
        Ok(v) => v,
        Err(msg) => json!({"ok": false, "error": msg}),
    }
}

fn store_failed(e: impl std::fmt::Display) -> String {
    tracing::error!(error = %e, "admin command failed");
    format!("the relay database failed: {e}")
}

fn account_arg(req: &Value) -> std::result::Result<Uuid, String> {
    req.get("account")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| "account must be an account id (UUID)".to_string())
}

const NO_ACCOUNT: &str = "no account with that id on this relay; check the contact code with the member (`sotto whoami` shows it)";

fn run(ctx: &Ctx<'_>, req: &Value) -> std::result::Result<Value, String> {
    let relay = ctx.relay;
    let store = relay.store();
    let closed = |account: Uuid, reason: &[u8]| {
        ctx.live
            .map(|s| s.close_account(account, reason))
            .unwrap_or(0)
    };
    match req.get("cmd").and_then(Value::as_str) {
        Some("stats") => {
            let s = relay.stats().map_err(store_failed)?;
            Ok(json!({
                "ok": true,
                "accounts": s.accounts,
                "devices": s.devices,
                "queued_envelopes": s.queued_envelopes,
                "groups": s.groups,
                "connections": ctx.live.map_or(0, Shared::connections),
                "unauthenticated_connections":
                    ctx.live.map_or(0, Shared::unauthenticated_connections),
                "trust_root_fingerprint":
                    sotto_wire::invite::trust_root_fingerprint(&ctx.links.trust_root),
            }))
        }
        Some("invite") => {
            let uses = req.get("uses").and_then(Value::as_u64).unwrap_or(1);
            let secs = req
                .get("expires_secs")
                .and_then(Value::as_u64)
                .unwrap_or(7 * 86_400);
            let uses = u32::try_from(uses).map_err(|_| "uses is too large".to_string())?;
            if uses == 0 || secs == 0 {
                return Err("uses and expires_secs must be greater than zero".into());
            }
            match crate::make_invite(relay, &ctx.links, uses, Duration::from_secs(secs)) {
                Ok(link) => Ok(json!({"ok": true, "link": link.to_string()})),
                Err(e) => {
                    tracing::error!(error = %e, "admin invite failed");
                    Err("could not store the invite; see the relay log".into())
                }
            }
        }
        Some("invite_list") => {
            let now = crate::now_ms();
            let mut invites = store.invites().map_err(store_failed)?;
            // Spent and expired invites are useless to list (the store drops them lazily).
            invites.retain(|i| i.uses_left > 0 && i.expires_at_ms > now);
            invites.sort_by_key(|i| i.expires_at_ms);
            let rows: Vec<Value> = invites
                .iter()
                .map(|i| {
                    json!({
                        "id": invite_id(&i.token_hash),
                        "uses_left": i.uses_left,
                        "expires_at_ms": i.expires_at_ms,
                    })
                })
                .collect();
            Ok(json!({"ok": true, "invites": rows}))
        }
        Some("invite_revoke") => {
            let id = req
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if id.len() < 4 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(
                    "give the invite id (at least 4 hex characters) from `sotto-relay invite list`"
                        .into(),
                );
            }
            let matching: Vec<_> = store
                .invites()
                .map_err(store_failed)?
                .into_iter()
                .filter(|i| invite_id(&i.token_hash).starts_with(&id))
                .collect();
            match matching.as_slice() {
                [] => Err(format!(
                    "no invite with id {id}; `sotto-relay invite list` shows the ids"
                )),
                [one] => {
                    store.remove_invite(one.token_hash).map_err(store_failed)?;
                    store.flush().map_err(store_failed)?;
                    Ok(json!({"ok": true, "id": invite_id(&one.token_hash)}))
                }
                many => Err(format!(
                    "{id} matches {} invites; give more of the id from `sotto-relay invite list`",
                    many.len()
                )),
            }
        }
        Some("account_ban") => {
            let account = account_arg(req)?;
            let devices = relay.ban(account, crate::now_ms()).map_err(store_failed)?;
            if devices.is_empty() {
                return Err(NO_ACCOUNT.into());
            }
            let closed = closed(account, b"banned by the relay operator");
            Ok(json!({"ok": true, "devices": devices.len(), "closed": closed}))
        }
        Some("account_unban") => {
            let account = account_arg(req)?;
            let was_banned = relay.unban(account).map_err(store_failed)?;
            Ok(json!({"ok": true, "was_banned": was_banned}))
        }
        Some("account_remove") => {
            let account = account_arg(req)?;
            if store.devices_of(account).map_err(store_failed)?.is_empty() {
                return Err(NO_ACCOUNT.into());
            }
            let removed = relay.remove_account(account).map_err(store_failed)?;
            let closed = closed(account, b"account removed by the relay operator");
            Ok(json!({
                "ok": true,
                "devices": removed.devices,
                "envelopes": removed.envelopes,
                "pre_keys": removed.pre_keys,
                "closed": closed,
            }))
        }
        Some("backup") => {
            let Some(dir) = ctx.data_dir else {
                return Err(
                    "this relay was started without a data directory; it cannot back up".into(),
                );
            };
            let to = req
                .get("to")
                .and_then(Value::as_str)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .ok_or_else(|| "backup needs an absolute `to` path".to_string())?;
            let r = crate::backup::write_backup(&crate::DataDir::new(dir), store, &to)
                .map_err(|e| format!("{e}"))?;
            Ok(json!({"ok": true, "bytes": r.bytes, "trees": r.trees, "entries": r.entries}))
        }
        _ => Err("unknown cmd; this sotto-relay may be older than the command line tool".into()),
    }
}

/// Runs `req` on the stopped relay in `data_dir`, opening its database
/// directly (sled admits one process, so this fails while the relay runs).
pub fn execute_offline(data_dir: &Path, req: &Value) -> Result<Value> {
    let (relay, links) = crate::open_offline(data_dir)?;
    Ok(execute(
        &Ctx {
            relay: &relay,
            links,
            live: None,
            data_dir: Some(data_dir),
        },
        req,
    ))
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
        assert_eq!(r["groups"], 0);
        assert_eq!(r["connections"], 0);
        assert_eq!(handle_command(&s, "nope")["ok"], false);
        assert_eq!(handle_command(&s, r#"{"cmd":"rm -rf"}"#)["ok"], false);
        assert_eq!(
            handle_command(&s, r#"{"cmd":"invite","uses":0}"#)["ok"],
            false
        );
    }

    #[test]
    fn invites_list_without_tokens_and_revoke_by_id() {
        let s = shared();
        let r = handle_command(&s, r#"{"cmd":"invite","uses":2,"expires_secs":600}"#);
        let link: sotto_wire::invite::InviteLink = r["link"]
            .as_str()
            .expect("link")
            .parse()
            .expect("valid link");
        let r = handle_command(&s, r#"{"cmd":"invite_list"}"#);
        let list = r["invites"].as_array().expect("list");
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["uses_left"], 2);
        let id = list[0]["id"].as_str().expect("id").to_string();
        let token_hex: String = link.token.iter().map(|b| format!("{b:02x}")).collect();
        // The id is derived from the hash, not the token, and the token appears nowhere.
        assert!(!r.to_string().contains(&token_hex));
        assert!(!token_hex.starts_with(&id));
        let bad = handle_command(&s, r#"{"cmd":"invite_revoke","id":"zz"}"#);
        assert_eq!(bad["ok"], false);
        let req = json!({"cmd": "invite_revoke", "id": &id[..6]});
        let r = handle_command(&s, &req.to_string());
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["id"], id.as_str());
        let r = handle_command(&s, &req.to_string());
        assert_eq!(r["ok"], false);
        assert!(r["error"].as_str().expect("msg").contains("invite list"));
        let r = handle_command(&s, r#"{"cmd":"invite_list"}"#);
        assert_eq!(r["invites"].as_array().expect("list").len(), 0);
    }

    #[test]
    fn account_commands_refuse_unknown_accounts() {
        let s = shared();
        let id = Uuid::new_v4().to_string();
        for cmd in ["account_ban", "account_remove"] {
            let r = handle_command(&s, &json!({"cmd": cmd, "account": id}).to_string());
            assert_eq!(r["ok"], false, "{cmd}");
            assert!(r["error"].as_str().expect("msg").contains("sotto whoami"));
        }
        let r = handle_command(
            &s,
            &json!({"cmd": "account_unban", "account": id}).to_string(),
        );
        assert_eq!(r["was_banned"], false);
        let r = handle_command(&s, r#"{"cmd":"account_ban","account":"nope"}"#);
        assert_eq!(r["ok"], false);
        // Without a data directory (the in-process test relay) there is nowhere to back up from.
        let r = handle_command(&s, r#"{"cmd":"backup","to":"/tmp/x"}"#);
        assert_eq!(r["ok"], false);
    }
}
