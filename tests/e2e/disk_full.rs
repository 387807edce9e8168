//! The relay's disk fills up (on a small tmpfs the test mounts): new messages
//! are refused with a clear error and kept by the sender, everything already
//! acknowledged is still delivered, and the relay takes messages again by
//! itself once space is freed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sotto_tests::{Relay, User, texts};

/// A tmpfs mounted for the test, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Result<SmallDisk, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes available, as `df` reports them.
    fn available(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(self.path())
            .output()
            .expect("run df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df prints the available bytes")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills `disk` until `leave` bytes are free; returns the filler file.
fn fill(disk: &SmallDisk, leave: u64) -> PathBuf {
    use std::io::Write;
    let path = disk.path().join("filler");
    let mut f = std::fs::File::create(&path).expect("create filler");
    let chunk = vec![0xA5u8; 256 * 1024];
    while disk.available() > leave + chunk.len() as u64 {
        f.write_all(&chunk).expect("write filler");
    }
    f.sync_all().expect("sync filler");
    path
}

#[test]
fn a_full_disk_refuses_new_messages_loses_nothing_and_recovers() {
    let disk = match SmallDisk::mount("48m") {
        Ok(d) => d,
        Err(e) => panic!(
            "this test mounts a small tmpfs and needs root (CAP_SYS_ADMIN), which CI has; \
             mount said: {e}"
        ),
    };
    let mut relay = Relay::start_in(
        Some(disk.path()),
        &[("SOTTO_RELAY_MIN_FREE_DISK_BYTES", &(8u64 << 20).to_string())],
    );
    let alice = User::new(&relay, "Alice");
    let bob = User::new(&relay, "Bob");
    alice.add_contact("bob", &bob);
    let before: Vec<String> = (0..3)
        .map(|i| format!("before the disk filled {i}"))
        .collect();
    for text in &before {
        alice.ok(&["send", "bob", text]);
    }

    // Something else on the machine fills the disk to below the reserve.
    let filler = fill(&disk, 4 << 20);
    relay.wait_for_log("disk space is below min_free_disk_bytes", 1);
    let err = alice.fails(&["send", "bob", "while the disk is full"]);
    assert!(
        err.contains("disk is full") && err.contains("kept"),
        "a clear error that says the message is kept: {err}"
    );
    // Deliveries go on: everything acknowledged arrives, once.
    assert_eq!(texts(&bob.sync_json()), before);
    assert!(relay.is_alive());

    // Space is freed: the relay takes messages again without a restart, and
    // the kept message goes out with the next send.
    std::fs::remove_file(&filler).expect("remove filler");
    relay.wait_for_log("disk space is back", 1);
    alice.ok(&["send", "bob", "after space was freed"]);
    assert_eq!(
        texts(&bob.sync_json()),
        vec![
            "while the disk is full".to_string(),
            "after space was freed".to_string()
        ]
    );

    // And a crash while it was all happening loses nothing acknowledged.
    alice.ok(&["send", "bob", "just before a crash"]);
    relay.restart();
    assert_eq!(
        texts(&bob.sync_json()),
        vec!["just before a crash".to_string()]
    );
}

/// If the disk fills up regardless (the reserve set to nothing, or another
/// program racing it), the database refuses writes until restarted: the
/// relay then stops with the reason and a non-zero status (so systemd
/// restarts it), and after space is freed and it restarts, nothing that was
/// acknowledged is lost or delivered twice.
#[test]
fn a_write_error_stops_the_relay_and_a_restart_loses_nothing() {
    let disk = match SmallDisk::mount("48m") {
        Ok(d) => d,
        Err(e) => panic!(
            "this test mounts a small tmpfs and needs root (CAP_SYS_ADMIN), which CI has; \
             mount said: {e}"
        ),
    };
    let mut relay = Relay::start_in(
        Some(disk.path()),
        &[("SOTTO_RELAY_MIN_FREE_DISK_BYTES", "0")],
    );
    let alice = User::new(&relay, "Alice");
    let bob = User::new(&relay, "Bob");
    alice.add_contact("bob", &bob);
    bob.add_contact("alice", &alice);
    let safe: Vec<String> = (0..2).map(|i| format!("acknowledged {i}")).collect();
    for text in &safe {
        alice.ok(&["send", "bob", text]);
    }
    let filler = fill(&disk, 0);
    // With the reserve check off, the next write meets the full disk: the
    // write fails and the relay stops rather than limping on.
    let deadline = Instant::now() + Duration::from_secs(20);
    while relay.is_alive() {
        assert!(
            Instant::now() < deadline,
            "the relay kept running on a database that cannot be written\n{}",
            relay.stderr()
        );
        let _ = alice.run(&["send", "bob", "into a full disk"]);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        relay.stderr().contains("the database cannot be written"),
        "{}",
        relay.stderr()
    );

    std::fs::remove_file(&filler).expect("remove filler");
    relay.restart();
    let _ = bob.sync_json();
    let history = bob.history_json("alice");
    let got = texts(&history);
    for text in &safe {
        assert_eq!(
            got.iter().filter(|t| *t == text).count(),
            1,
            "{text:?} delivered exactly once: {got:?}"
        );
    }
    alice.ok(&["send", "bob", "after the restart"]);
    assert!(texts(&bob.sync_json()).contains(&"after the restart".to_string()));
}
