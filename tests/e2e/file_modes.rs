//! File modes and operator friction (issue 12): a profile and a relay's data
//! directory are private to their owner whatever the umask; `sotto-relay`
//! prints the trust-root fingerprint, wants a unit on `--expires`, ends
//! quietly when its reader leaves, and writes no colour codes to a log file.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use sotto_tests::{PASSPHRASE, Relay, User, binary, describe, run_with_timeout};

/// Every file and directory under `dir` (itself included) whose mode lets
/// anyone but its owner in: "path mode" for each.
fn too_open(dir: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).expect("stat");
        let mode = meta.permissions().mode() & 0o777;
        if meta.file_type().is_symlink() {
            continue;
        }
        if mode & 0o077 != 0 {
            bad.push(format!("{} {mode:o}", path.display()));
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).expect("list") {
                stack.push(entry.expect("entry").path());
            }
        }
    }
    bad
}

/// Runs `BIN ARGS` under `umask 022`, the usual default.
fn under_umask_022(bin: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("umask 022; exec \"$@\"")
        .arg("sh")
        .arg(binary(bin))
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run_with_timeout(&mut cmd, &format!("{bin} {}", args.join(" ")));
    assert!(out.status.success(), "{}", describe(&out));
    out
}

#[test]
fn a_profile_is_private_to_its_owner_whatever_the_umask() {
    let relay = Relay::start();
    let bob = User::new(&relay, "Bob");
    let parent = tempfile::tempdir().expect("tempdir");
    // An existing, world-readable home is tightened, not trusted.
    let home = parent.path().join("alice");
    std::fs::create_dir(&home).expect("mkdir");
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let home_arg = home.to_string_lossy().into_owned();
    let env = [("SOTTO_PASSPHRASE", PASSPHRASE)];
    let invite = relay.invite(1);
    under_umask_022(
        "sotto",
        &[
            "--home", &home_arg, "init", "--invite", &invite, "--name", "Alice",
        ],
        &env,
    );
    let code = bob.code();
    under_umask_022(
        "sotto",
        &["--home", &home_arg, "contact", "add", "bob", &code],
        &env,
    );
    under_umask_022(
        "sotto",
        &["--home", &home_arg, "send", "bob", "hello"],
        &env,
    );
    under_umask_022("sotto", &["--home", &home_arg, "sync"], &env);
    assert_eq!(too_open(&home), Vec::<String>::new());
}

#[test]
fn a_relay_data_directory_is_private_to_its_owner_whatever_the_umask() {
    let parent = tempfile::tempdir().expect("tempdir");
    let dir = parent.path().join("relay");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let dir_arg = dir.to_string_lossy().into_owned();
    let out = under_umask_022(
        "sotto-relay",
        &["init", "--data-dir", &dir_arg, "--listen", "127.0.0.1:0"],
        &[],
    );
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(too_open(&dir), Vec::<String>::new());
    // The trust root's fingerprint is printed by init, stats and check-config alike.
    let fingerprint = printed
        .lines()
        .find_map(|l| l.strip_prefix("trust root fingerprint: "))
        .map(|rest| rest.split(" (").next().unwrap_or_default().to_string())
        .unwrap_or_else(|| panic!("init printed no fingerprint:\n{printed}"));
    assert_eq!(fingerprint.split(' ').count(), 16, "{fingerprint}");
    let stats = under_umask_022(
        "sotto-relay",
        &["stats", "--json", "--data-dir", &dir_arg],
        &[],
    );
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("json");
    assert_eq!(stats["trust_root_fingerprint"], fingerprint.as_str());
    let stats = under_umask_022("sotto-relay", &["stats", "--data-dir", &dir_arg], &[]);
    assert!(String::from_utf8_lossy(&stats.stdout).contains(&fingerprint));
    let check = under_umask_022(
        "sotto-relay",
        &["check-config", "--data-dir", &dir_arg],
        &[],
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains(&fingerprint));
    // Whatever the operator's umask, the invites and backups it writes are private too.
    let backup = parent.path().join("relay.backup");
    under_umask_022(
        "sotto-relay",
        &[
            "backup",
            "--data-dir",
            &dir_arg,
            "--to",
            &backup.to_string_lossy(),
        ],
        &[],
    );
    assert_eq!(too_open(&backup), Vec::<String>::new());
    assert_eq!(too_open(&dir), Vec::<String>::new());
}

#[test]
fn a_serving_relay_keeps_its_data_directory_private() {
    let relay = Relay::start();
    let alice = User::new(&relay, "Alice");
    let bob = User::new(&relay, "Bob");
    alice.add_contact("bob", &bob);
    alice.ok(&["send", "bob", "hello"]);
    let admin = relay.data_dir().join("admin.sock");
    assert!(admin.exists());
    assert_eq!(too_open(&relay.data_dir()), Vec::<String>::new());
}

#[test]
fn invite_expiry_needs_a_unit() {
    let relay = Relay::start();
    let out = run_with_timeout(
        Command::new(binary("sotto-relay"))
            .args(["invite", "--expires", "2", "--data-dir"])
            .arg(relay.data_dir()),
        "sotto-relay invite --expires 2",
    );
    assert!(!out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no unit") && err.contains("7d"), "{err}");
    let out = run_with_timeout(
        Command::new(binary("sotto-relay"))
            .args(["invite", "--expires", "2d", "--data-dir"])
            .arg(relay.data_dir()),
        "sotto-relay invite --expires 2d",
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid for 2d"));
}

#[test]
fn relay_commands_end_quietly_when_their_reader_leaves() {
    let relay = Relay::start();
    for args in [
        vec!["stats"],
        vec!["stats", "--json"],
        vec!["check-config"],
        vec!["invite", "list"],
        vec!["invite"],
    ] {
        let mut child = Command::new(binary("sotto-relay"))
            .args(&args)
            .arg("--data-dir")
            .arg(relay.data_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        // The reader leaves before the command has written anything (it has
        // to start and ask the relay first), as `| head -0` would.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && err.is_empty(),
            "sotto-relay {args:?}: {}\n{err}",
            out.status
        );
    }
}

#[test]
fn a_relay_log_file_has_no_colour_codes() {
    let relay = Relay::start();
    relay.wait_for_log("relay started", 1);
    let log = relay.stderr();
    assert!(!log.contains('\u{1b}'), "escape codes in the log: {log:?}");
}
