//! Sotto's end-to-end scenarios: the real `sotto-relay` on `127.0.0.1` and real
//! `sotto` clients, each in its own temporary directory.
//!
//! One integration-test binary declares every scenario file as a module
//! (STYLE.md §27). The binaries come from `cargo build --workspace --bins`,
//! which `scripts/test.sh` runs before `cargo test --workspace`; the harness
//! is `sotto_tests` (tests/src/lib.rs).

mod abuse;
mod anonymous;
mod app;
mod app_screens;
mod certificate;
mod cli_errors;
mod delivery;
mod disk_full;
mod durability;
mod duress;
mod file_modes;
mod friction;
mod groups;
mod hostile_text;
mod identity;
mod limits;
mod listen;
mod messaging;
mod notes;
mod operations;
mod operator;
mod panic;
mod prekeys;
mod relay_disk;
mod rotation;
mod service;
mod store;
mod strangers;
mod udp_blocked;
mod vetting;
mod warnings;
