//! `sotto panic` on a full store: how long until nothing in it can be read.
//!
//! Builds a real encrypted profile store holding 10,000 messages, then
//! times `Store::crypto_erase` (the erase key overwritten in place and
//! synced: from then on the store opens for nobody) and the whole local
//! panic (erase, then delete the files). The ceiling is deleting an
//! identical copy's files without erasing anything. Target: well under a
//! second.

use std::path::Path;
use std::time::Instant;

use sotto_client::store::{MessageDirection, MessageRecord, MessageStatus, Store, StoreError};
use uuid::Uuid;

use crate::common::{Figure, ms};

/// Messages in the store.
const MESSAGES: usize = 10_000;
const PASS: &str = "bench passphrase";

pub(crate) async fn run(runs: usize) -> anyhow::Result<Vec<Figure>> {
    let (mut erase, mut whole, mut delete_only) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("store");
        fill(&dir).await?;
        let copy = tmp.path().join("copy");
        copy_dir(&dir, &copy)?;

        let started = Instant::now();
        let erased = Store::crypto_erase(&dir)?;
        let erase_ms = ms(started.elapsed());
        std::fs::remove_dir_all(&dir)?;
        let whole_ms = ms(started.elapsed());
        anyhow::ensure!(erased, "a new store has an erase key");

        // What is left of a copy once its key is gone: nothing opens.
        std::fs::remove_file(copy.join("erase.key"))?;
        match Store::open(&copy, PASS) {
            Err(StoreError::Erased) => {}
            Err(e) => anyhow::bail!("an erased store failed to open for another reason: {e}"),
            Ok(_) => anyhow::bail!("an erased store opened"),
        }
        let started = Instant::now();
        std::fs::remove_dir_all(&copy)?;
        let delete_ms = ms(started.elapsed());
        eprintln!(
            "  run {}: key destroyed in {erase_ms:.2} ms, files gone at {whole_ms:.1} ms \
             (deleting alone {delete_ms:.1} ms)",
            run + 1
        );
        erase.push(erase_ms);
        whole.push(whole_ms);
        delete_only.push(delete_ms);
    }
    Ok(vec![
        Figure::new(
            "panic",
            "erase key destroyed, store of 10,000 messages (ms)",
            "ms",
            erase,
            "overwritten twice in place with fsync, then unlinked: from here nothing opens",
        ),
        Figure::new(
            "panic",
            "erase key destroyed and files deleted (ms)",
            "ms",
            whole,
            "target: well under a second",
        )
        .with_ceiling("deleting the same files alone", delete_only),
    ])
}

/// A real store with [`MESSAGES`] messages, flushed.
async fn fill(dir: &Path) -> anyhow::Result<()> {
    let store = Store::create(dir, PASS)?;
    let peer = Uuid::new_v4();
    for i in 0..MESSAGES {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&(i as u64).to_be_bytes());
        store.insert_message(&MessageRecord {
            id,
            peer,
            direction: MessageDirection::Incoming,
            sender_name: "a member".into(),
            text: format!("message {i}: {}", "x".repeat(200)),
            sent_at_ms: i as u64,
            received_at_ms: i as u64,
            status: MessageStatus::Received,
            group: None,
            expires_at_ms: None,
        })?;
    }
    store.flush().await?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()))?;
        } else {
            std::fs::copy(&path, to.join(entry.file_name()))?;
        }
    }
    Ok(())
}
