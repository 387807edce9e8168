//! The engine as one long-running local service that every face uses.
//!
//! sled admits one process per store, and the engine's futures are `!Send`
//! (libsignal's are), so one [`Runner`] owns the engine on the thread that
//! drives it, keeps it connected and synced in the background
//! ([`Engine::listen`]), and carries out work handed to it through a
//! [`Handle`]: the web app's requests, and the commands a `sotto` process
//! forwards over the control socket (see `control`). Faces never touch the
//! store (style §10: Syncthing's daemon and its GUI and CLI).
//!
//! States: no profile yet (the app's set-up screen), locked (no keys in
//! memory: the store is closed), unlocked, erased (after panic), stopped.
//! An idle lock closes the store after [`Settings::lock_after`] without a
//! request from a person, so a laptop left open does not leave the keys
//! in memory (background syncing does not count as activity).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::LocalBoxFuture;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::engine::{
    Engine, EngineCommand, EngineError, Job, Notice, PanicReport, ShownMessage, store_dir,
};
use crate::store::StoreError;

/// How the service behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Lock after this long without a request from a person; zero: never
    /// (a headless `sotto listen` must keep receiving).
    pub lock_after: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            lock_after: Duration::from_secs(15 * 60),
        }
    }
}

/// Where the service is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No profile in the home directory: the app offers set-up.
    NoProfile,
    /// A profile, closed: its passphrase opens it.
    Locked,
    /// Open: requests are served and the engine syncs in the background.
    Unlocked,
    /// Wiped by panic: nothing of the profile is left to show.
    Erased,
    /// Shut down (Quit, Ctrl-C): nothing more is served.
    Stopped,
}

/// What the service tells its faces as it happens.
#[derive(Debug, Clone)]
pub enum Event {
    /// A new message, stored and acknowledged.
    Message(ShownMessage),
    /// Something the user should know (see [`Notice`]).
    Notice(Notice),
    /// The service changed state (locked, unlocked, erased, stopped).
    State(State),
}

/// Why the service could not do something, in words for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// There is no profile yet.
    #[error("there is no Sotto profile here yet: set one up first")]
    NoProfile,
    /// The profile is locked.
    #[error("the profile is locked: unlock it with its passphrase")]
    Locked,
    /// The service has stopped (or the profile was erased).
    #[error("Sotto has stopped for this profile")]
    Stopped,
    /// The passphrase opens neither the profile nor a decoy.
    #[error("wrong passphrase for this profile")]
    WrongPassphrase,
    /// Anything else, already in words for the user.
    #[error("{0}")]
    Failed(String),
}

impl From<EngineError> for ServiceError {
    fn from(e: EngineError) -> ServiceError {
        match e {
            EngineError::Store(StoreError::WrongPassphrase) => ServiceError::WrongPassphrase,
            other => ServiceError::Failed(other.to_string()),
        }
    }
}

/// Requests that change the service's state rather than use the engine.
enum Control {
    Unlock {
        passphrase: String,
        reply: oneshot::Sender<Result<(), ServiceError>>,
    },
    SetUp {
        invite: String,
        name: String,
        passphrase: String,
        reply: oneshot::Sender<Result<(), ServiceError>>,
    },
    Lock,
    /// The idle lock's time changed: work out the deadline again.
    LockAfterChanged,
    Panic {
        reply: oneshot::Sender<PanicReport>,
    },
    Quit,
}

/// What ended an unlocked stretch.
enum Ended {
    Lock,
    Quit,
    Panic(oneshot::Sender<PanicReport>),
}

/// A face's way into the service: cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Handle {
    home: Arc<PathBuf>,
    jobs: mpsc::Sender<EngineCommand>,
    control: mpsc::UnboundedSender<Control>,
    events: broadcast::Sender<Event>,
    state: watch::Receiver<State>,
    /// Milliseconds since `epoch` of the last request from a person.
    activity: Arc<AtomicU64>,
    epoch: Instant,
    /// A `sotto://` link the app was opened with, for the face to offer.
    link: Arc<std::sync::Mutex<Option<String>>>,
    /// The idle lock's time in ms (0: off), which a face may change.
    lock_after_ms: Arc<AtomicU64>,
}

/// The service itself: run it with [`Runner::run`] on the thread that owns
/// the engine.
pub struct Runner {
    home: PathBuf,
    /// The idle lock's time in ms (0: off), shared with every [`Handle`].
    lock_after_ms: Arc<AtomicU64>,
    jobs: mpsc::Receiver<EngineCommand>,
    control: mpsc::UnboundedReceiver<Control>,
    events: broadcast::Sender<Event>,
    state: watch::Sender<State>,
    activity: Arc<AtomicU64>,
    epoch: Instant,
}

/// How many events a slow face may fall behind before it misses some (it
/// then reloads what it shows from the engine).
const EVENTS: usize = 1024;

/// Makes the service for the profile in `home`; nothing runs until
/// [`Runner::run`] is driven.
pub fn start(home: PathBuf, settings: Settings) -> (Handle, Runner) {
    let (jobs_tx, jobs_rx) = mpsc::channel(64);
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let (events, _) = broadcast::channel(EVENTS);
    let initial = if store_dir(&home).exists() {
        State::Locked
    } else {
        State::NoProfile
    };
    let (state_tx, state_rx) = watch::channel(initial);
    let activity = Arc::new(AtomicU64::new(0));
    let epoch = Instant::now();
    let lock_after_ms = Arc::new(AtomicU64::new(
        u64::try_from(settings.lock_after.as_millis()).unwrap_or(u64::MAX),
    ));
    let handle = Handle {
        home: Arc::new(home.clone()),
        jobs: jobs_tx,
        control: control_tx,
        events: events.clone(),
        state: state_rx,
        activity: activity.clone(),
        epoch,
        link: Arc::default(),
        lock_after_ms: lock_after_ms.clone(),
    };
    let runner = Runner {
        home,
        lock_after_ms,
        jobs: jobs_rx,
        control: control_rx,
        events,
        state: state_tx,
        activity,
        epoch,
    };
    (handle, runner)
}

impl Handle {
    /// The profile directory this service owns.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The service's state now.
    pub fn state(&self) -> State {
        *self.state.borrow()
    }

    /// Follows the state as it changes.
    pub fn watch_state(&self) -> watch::Receiver<State> {
        self.state.clone()
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Keeps a `sotto://` link the app was opened with (an invite to a
    /// relay for set-up, or a group's join link), for the face to offer.
    pub fn offer_link(&self, link: String) {
        if let Ok(mut slot) = self.link.lock() {
            *slot = Some(link);
        }
    }

    /// The link the app was opened with, if any, once: a face that shows it
    /// takes it, so it is not offered again.
    pub fn take_link(&self) -> Option<String> {
        self.link.lock().ok().and_then(|mut slot| slot.take())
    }

    /// The link the app was opened with, if any, left in place.
    pub fn peek_link(&self) -> Option<String> {
        self.link.lock().ok().and_then(|slot| slot.clone())
    }

    /// How long without use before the idle lock (zero: never).
    pub fn lock_after(&self) -> Duration {
        Duration::from_millis(self.lock_after_ms.load(Ordering::Relaxed))
    }

    /// Changes the idle lock's time for this run (zero: never), counted
    /// from the last use.
    pub fn set_lock_after(&self, after: Duration) {
        let ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        self.lock_after_ms.store(ms, Ordering::Relaxed);
        let _ = self.control.send(Control::LockAfterChanged);
    }

    /// Marks a request from a person, which postpones the idle lock.
    pub fn touch(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.activity.store(now, Ordering::Relaxed);
    }

    fn not_open(&self) -> ServiceError {
        match self.state() {
            State::NoProfile => ServiceError::NoProfile,
            State::Locked => ServiceError::Locked,
            State::Unlocked => ServiceError::Locked,
            State::Erased | State::Stopped => ServiceError::Stopped,
        }
    }

    async fn control<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Control,
    ) -> Result<T, ServiceError> {
        let (tx, rx) = oneshot::channel();
        self.control
            .send(make(tx))
            .map_err(|_| ServiceError::Stopped)?;
        rx.await.map_err(|_| ServiceError::Stopped)
    }

    /// Opens the profile with its passphrase; the duress passphrase opens
    /// the decoy, as the CLI does. Already open: nothing to do.
    pub async fn unlock(&self, passphrase: String) -> Result<(), ServiceError> {
        self.touch();
        self.control(|reply| Control::Unlock { passphrase, reply })
            .await?
    }

    /// Registers a new profile with the relay in `invite` and opens it.
    pub async fn set_up(
        &self,
        invite: String,
        name: String,
        passphrase: String,
    ) -> Result<(), ServiceError> {
        self.touch();
        self.control(|reply| Control::SetUp {
            invite,
            name,
            passphrase,
            reply,
        })
        .await?
    }

    /// Runs `f` with the open engine, on the engine's thread, between the
    /// background work; counts as a request from a person.
    pub async fn with<R, F>(&self, f: F) -> Result<R, ServiceError>
    where
        R: Send + 'static,
        F: for<'a> FnOnce(&'a mut Engine) -> LocalBoxFuture<'a, R> + Send + 'static,
    {
        self.touch();
        self.with_unattended(f).await
    }

    /// [`Handle::with`] for work no person asked for (a page reloading what
    /// it shows after an event): it does not postpone the idle lock, so a
    /// busy group cannot keep an unattended app open.
    pub async fn with_unattended<R, F>(&self, f: F) -> Result<R, ServiceError>
    where
        R: Send + 'static,
        F: for<'a> FnOnce(&'a mut Engine) -> LocalBoxFuture<'a, R> + Send + 'static,
    {
        if self.state() != State::Unlocked {
            return Err(self.not_open());
        }
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(Call { f, reply: tx });
        self.jobs
            .send(EngineCommand::Run(job))
            .await
            .map_err(|_| ServiceError::Stopped)?;
        // Dropped unrun: the service locked (or stopped) before its turn.
        rx.await.map_err(|_| self.not_open())
    }

    /// Closes the store and forgets its keys until the next unlock.
    pub fn lock(&self) {
        let _ = self.control.send(Control::Lock);
    }

    /// Wipes the profile as `sotto panic` does (telling the relay when the
    /// profile is open); the service then holds nothing of it.
    pub async fn panic(&self) -> Result<PanicReport, ServiceError> {
        self.control(|reply| Control::Panic { reply }).await
    }

    /// Shuts the service down cleanly (outbox and store flushed).
    pub fn quit(&self) {
        let _ = self.control.send(Control::Quit);
    }
}

/// A [`Handle::with`] call as an engine job (a struct rather than a closure,
/// so the engine's lifetime stays generic).
struct Call<F, R> {
    f: F,
    reply: oneshot::Sender<R>,
}

impl<F, R> crate::engine::JobFn for Call<F, R>
where
    R: Send + 'static,
    F: for<'a> FnOnce(&'a mut Engine) -> LocalBoxFuture<'a, R> + Send + 'static,
{
    fn call<'a>(self: Box<Self>, engine: &'a mut Engine) -> LocalBoxFuture<'a, ()> {
        let Call { f, reply } = *self;
        Box::pin(async move {
            let result = f(engine).await;
            let _ = reply.send(result);
        })
    }
}

impl Runner {
    fn set_state(&self, state: State) {
        self.state.send_replace(state);
        let _ = self.events.send(Event::State(state));
    }

    /// Serves until [`Handle::quit`] (or every handle is dropped). An error
    /// is an engine failure that is not the relay being away (it retries
    /// that by itself).
    pub async fn run(mut self) -> anyhow::Result<()> {
        loop {
            // Closed: requests for the engine are refused (dropped, so their
            // callers learn the state), state changes are served.
            let control = tokio::select! {
                control = self.control.recv() => control,
                Some(job) = self.jobs.recv() => { drop(job); continue; }
            };
            let engine = match control {
                None | Some(Control::Quit) => break,
                Some(Control::Lock | Control::LockAfterChanged) => continue,
                Some(Control::Unlock { passphrase, reply }) => {
                    if !store_dir(&self.home).exists() {
                        let _ = reply.send(Err(ServiceError::NoProfile));
                        continue;
                    }
                    match Engine::open(&self.home, &passphrase) {
                        Ok(engine) => {
                            // The idle-lock time saved in the app's settings
                            // applies from the moment the profile is open.
                            if let Ok(Some(ms)) = engine.app_prefs().map(|p| p.lock_after_ms) {
                                self.lock_after_ms.store(ms, Ordering::Relaxed);
                            }
                            let _ = reply.send(Ok(()));
                            engine
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e.into()));
                            continue;
                        }
                    }
                }
                Some(Control::SetUp {
                    invite,
                    name,
                    passphrase,
                    reply,
                }) => match self.set_up(&invite, &name, &passphrase).await {
                    Ok(engine) => {
                        let _ = reply.send(Ok(()));
                        engine
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        continue;
                    }
                },
                Some(Control::Panic { reply }) => {
                    let report = crate::engine::panic_offline(&self.home);
                    self.set_state(State::Erased);
                    let _ = reply.send(report);
                    continue;
                }
            };
            if self.unlocked(engine).await? {
                break;
            }
        }
        self.set_state(State::Stopped);
        Ok(())
    }

    async fn set_up(
        &self,
        invite: &str,
        name: &str,
        passphrase: &str,
    ) -> Result<Engine, ServiceError> {
        if store_dir(&self.home).exists() {
            return Err(ServiceError::Failed(
                "a profile already exists here: unlock it instead".into(),
            ));
        }
        crate::engine::check_new_passphrase(passphrase)?;
        crate::store::private_dir(&self.home).map_err(|e| {
            ServiceError::Failed(format!("cannot create {}: {e}", self.home.display()))
        })?;
        Ok(Engine::init(&self.home, passphrase, invite, name).await?)
    }

    /// Serves with the engine open until it is locked, erased or the
    /// service quits; true when the service is to stop.
    async fn unlocked(&mut self, mut engine: Engine) -> anyhow::Result<bool> {
        self.set_state(State::Unlocked);
        let Runner {
            jobs,
            control,
            events,
            lock_after_ms,
            activity,
            epoch,
            ..
        } = self;
        let lock_after = || Duration::from_millis(lock_after_ms.load(Ordering::Relaxed));
        let mut ended = None;
        let stop = async {
            loop {
                let idle = idle_deadline(*epoch, activity, lock_after());
                tokio::select! {
                    c = control.recv() => match c {
                        Some(Control::Unlock { reply, .. }) => { let _ = reply.send(Ok(())); }
                        Some(Control::SetUp { reply, .. }) => {
                            let _ = reply.send(Err(ServiceError::Failed(
                                "a profile is already open here".into(),
                            )));
                        }
                        Some(Control::Lock) => { ended = Some(Ended::Lock); break; }
                        // The loop works out the new deadline.
                        Some(Control::LockAfterChanged) => {}
                        Some(Control::Panic { reply }) => { ended = Some(Ended::Panic(reply)); break; }
                        Some(Control::Quit) | None => { ended = Some(Ended::Quit); break; }
                    },
                    _ = sleep_until(idle) => {
                        // Activity may have moved the deadline while we slept.
                        if idle_deadline(*epoch, activity, lock_after())
                            .is_some_and(|d| d <= Instant::now())
                        {
                            ended = Some(Ended::Lock);
                            break;
                        }
                    }
                }
            }
        };
        let result = {
            let on_message = &mut |m: &ShownMessage| {
                let _ = events.send(Event::Message(m.clone()));
            };
            let on_notice = &mut |n: &Notice| {
                let _ = events.send(Event::Notice(n.clone()));
            };
            engine.listen(on_message, on_notice, jobs, stop).await
        };
        match ended {
            Some(Ended::Panic(reply)) => {
                let report = engine.panic(&self.home, true).await;
                self.set_state(State::Erased);
                let _ = reply.send(report);
                Ok(false)
            }
            other => {
                engine.close().await;
                drop(engine);
                let quit = matches!(other, Some(Ended::Quit));
                self.set_state(State::Locked);
                // An engine failure ends the service with its reason.
                result?;
                Ok(quit)
            }
        }
    }
}

/// When the idle lock falls due, if it is on.
fn idle_deadline(epoch: Instant, activity: &AtomicU64, lock_after: Duration) -> Option<Instant> {
    if lock_after.is_zero() {
        return None;
    }
    let last = Duration::from_millis(activity.load(Ordering::Relaxed));
    Some(epoch + last + lock_after)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Parses a duration as people write it: `90s`, `15m`, `2h`, a bare number
/// of minutes, or `off`/`0` for never.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("off") || t == "0" {
        return Ok(Duration::ZERO);
    }
    let (number, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "m"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("\"{text}\" is not a duration: write e.g. 30s, 15m, 2h or off"))?;
    let secs = match unit.trim() {
        "s" => n,
        "m" | "min" => n * 60,
        "h" => n * 3600,
        _ => {
            return Err(format!(
                "\"{text}\" is not a duration: write e.g. 30s, 15m, 2h or off"
            ));
        }
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_people_write() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("off"), Ok(Duration::ZERO));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 days").is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn without_a_profile_set_up_is_offered_and_the_engine_refused() {
        let home = tempfile::tempdir().expect("temp dir");
        let (handle, runner) = start(home.path().join("p"), Settings::default());
        assert_eq!(handle.state(), State::NoProfile);
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async move {
                let service = tokio::task::spawn_local(runner.run());
                let refused = handle
                    .with(|e| Box::pin(async move { e.name().to_string() }))
                    .await;
                assert_eq!(refused, Err(ServiceError::NoProfile));
                assert_eq!(
                    handle.unlock("whatever passphrase".into()).await,
                    Err(ServiceError::NoProfile)
                );
                // A bad invite is refused with a reason, and nothing is made.
                let bad = handle
                    .set_up("not a link".into(), "Sam".into(), "long enough pass".into())
                    .await;
                assert!(matches!(bad, Err(ServiceError::Failed(_))), "{bad:?}");
                assert_eq!(handle.state(), State::NoProfile);
                handle.quit();
                service.await.expect("join").expect("service ends cleanly");
                assert_eq!(handle.state(), State::Stopped);
            })
            .await;
    }

    #[test]
    fn idle_deadline_follows_activity_and_can_be_off() {
        let epoch = Instant::now();
        let activity = AtomicU64::new(5_000);
        let d = idle_deadline(epoch, &activity, Duration::from_secs(60)).expect("on");
        assert_eq!(d, epoch + Duration::from_secs(65));
        assert_eq!(idle_deadline(epoch, &activity, Duration::ZERO), None);
    }
}
