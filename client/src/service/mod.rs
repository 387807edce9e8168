//! STAND-IN for the lead's service (issue 13 contract): the same public API,
//! so the web app compiles and its security tests run before the real service
//! lands on `main`. On merge, the lead's `service/mod.rs` replaces this file
//! entirely. It knows only whether a profile exists; every engine call fails
//! with `Stopped`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::engine::{Engine, PanicReport, ShownMessage};

/// Service settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Idle lock.
    pub lock_after: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lock_after: Duration::from_secs(15 * 60),
        }
    }
}

/// Where the service is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// No profile in the home directory.
    NoProfile,
    /// A profile exists and is locked.
    Locked,
    /// Open.
    Unlocked,
    /// Panic erased it.
    Erased,
    /// Quit.
    Stopped,
}

/// Something that happened.
#[derive(Debug, Clone)]
pub enum Event {
    /// A message arrived or changed.
    Message(ShownMessage),
    /// A notice.
    Notice(crate::engine::Notice),
    /// The state changed.
    State(State),
}

/// Errors in user words.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    /// No profile.
    #[error("there is no profile yet: set one up first")]
    NoProfile,
    /// Locked.
    #[error("Sotto is locked: unlock it with your passphrase")]
    Locked,
    /// Stopped.
    #[error("Sotto has stopped: start `sotto app` again")]
    Stopped,
    /// Wrong passphrase.
    #[error("Wrong passphrase")]
    WrongPassphrase,
    /// Anything else.
    #[error("{0}")]
    Failed(String),
}

struct Inner {
    home: PathBuf,
    state: tokio::sync::watch::Sender<State>,
    events: tokio::sync::broadcast::Sender<Event>,
}

/// A handle on the service.
#[derive(Clone)]
pub struct Handle(Arc<Inner>);

/// Drives the service.
pub struct Runner;

/// Starts the stand-in.
pub fn start(home: PathBuf, _settings: Settings) -> (Handle, Runner) {
    let state = if crate::engine::store_dir(&home).exists() {
        State::Locked
    } else {
        State::NoProfile
    };
    let (tx, _) = tokio::sync::watch::channel(state);
    let (events, _) = tokio::sync::broadcast::channel(64);
    (
        Handle(Arc::new(Inner {
            home,
            state: tx,
            events,
        })),
        Runner,
    )
}

impl Runner {
    /// Runs nothing.
    pub async fn run(self) -> anyhow::Result<()> {
        Ok(())
    }
}

impl Handle {
    /// The profile directory.
    pub fn home(&self) -> &Path {
        &self.0.home
    }
    /// Current state.
    pub fn state(&self) -> State {
        self.0.state.borrow().clone()
    }
    /// State changes.
    pub fn watch_state(&self) -> tokio::sync::watch::Receiver<State> {
        self.0.state.subscribe()
    }
    /// Events.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.0.events.subscribe()
    }
    /// Unlock.
    pub async fn unlock(&self, _passphrase: String) -> Result<(), ServiceError> {
        Err(ServiceError::WrongPassphrase)
    }
    /// Set up.
    pub async fn set_up(
        &self,
        _invite: String,
        _name: String,
        _passphrase: String,
    ) -> Result<(), ServiceError> {
        Err(ServiceError::Stopped)
    }
    /// Run `f` on the engine.
    pub async fn with<R, F>(&self, _f: F) -> Result<R, ServiceError>
    where
        R: Send + 'static,
        F: for<'a> FnOnce(&'a mut Engine) -> futures_util::future::LocalBoxFuture<'a, R>
            + Send
            + 'static,
    {
        Err(ServiceError::Stopped)
    }
    /// Lock.
    pub fn lock(&self) {
        if self.state() == State::Unlocked {
            self.0.state.send_replace(State::Locked);
        }
    }
    /// Panic.
    pub async fn panic(&self) -> Result<PanicReport, ServiceError> {
        let report = crate::engine::panic_offline(&self.0.home);
        self.0.state.send_replace(State::Erased);
        Ok(report)
    }
    /// Quit.
    pub fn quit(&self) {
        self.0.state.send_replace(State::Stopped);
    }
}
