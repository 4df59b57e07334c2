//! A running pipeline's shared fate: whether it is stopping, whether it has failed (and
//! which component failed, and why), and whether the drain deadline has passed.
//!
//! Acknowledgement has a failure path through it. A component that cannot deliver a batch
//! (a sink's permanent error, a panic, a batch dropped unwritten) *fails* the pipeline.
//! From that moment every checkpoint store of the pipeline is halted: no checkpoint
//! moves again in this run, so none ever passes a batch that was not written. The
//! sources are told to stop, what can drain drains into the sinks that still work, and
//! `flowenrich run` exits 1 naming the component and the cause. After a restart the
//! sources resume from the last checkpoints, which cover only batches every sink wrote.
//!
//! A panic in a component thread fails the pipeline *before* the thread unwinds (a panic
//! hook; see [`Lifecycle::enter`]), so batches dropped by the unwinding are never taken
//! for delivered ones.
//!
//! Stopping (SIGINT/SIGTERM, or a failure) starts the drain deadline: sinks still retrying
//! a transient error when it passes give up ([`Lifecycle::pause`] returns false), which
//! fails the pipeline with what they were retrying.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::time::{Duration, Instant};

/// Why a pipeline failed: the component (`sinks.out`, `transforms.enrich`, ...) and the
/// cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{component}: {cause}")]
pub struct Failure {
    /// The failed component, as its config key (`sinks.<id>`).
    pub component: String,
    /// What happened.
    pub cause: String,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Lifecycle {
    stop: AtomicBool,
    stop_at: Mutex<Option<Instant>>,
    abort: AtomicBool,
    halted: Arc<AtomicBool>,
    /// The first failure, and whether it was only inferred (a batch dropped unwritten),
    /// which a component's own report of the cause then replaces.
    failure: Mutex<Option<(Failure, bool)>>,
    /// Set once every component has ended: the drain watchdog returns.
    drained: AtomicBool,
    /// Held while a flag above changes, so that a waiter on `changed` never misses it.
    gate: Mutex<()>,
    /// Notified when stopping starts, the deadline passes or the run has drained.
    changed: Condvar,
    /// Called once stopping starts, for waiters on condition variables of their own.
    on_stop: OnStop,
}

/// Callbacks run when stopping starts.
#[derive(Default)]
struct OnStop(Mutex<Vec<Box<dyn Fn() + Send + Sync>>>);

impl std::fmt::Debug for OnStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnStop")
    }
}

thread_local! {
    /// The lifecycle and component of the current thread, for the panic hook.
    static CURRENT: RefCell<Option<(Arc<Lifecycle>, String)>> = const { RefCell::new(None) };
}

static PANIC_HOOK: Once = Once::new();

impl Lifecycle {
    /// A new pipeline's lifecycle.
    pub fn new() -> Arc<Lifecycle> {
        Arc::new(Lifecycle::default())
    }

    /// The flag sources poll: set once the pipeline should stop reading.
    pub fn stop_flag(&self) -> &AtomicBool {
        &self.stop
    }

    /// Asks the sources to stop (a signal, or a failure); starts the drain deadline.
    pub fn request_stop(&self) {
        self.stop_at
            .lock()
            .expect("lifecycle lock")
            .get_or_insert_with(Instant::now);
        self.set(&self.stop);
        for wake in self.on_stop.0.lock().expect("lifecycle lock").iter() {
            wake();
        }
    }

    /// Runs `wake` when stopping starts (at once if it has): for a component that waits
    /// on a condition variable of its own and must look at [`Lifecycle::stop_flag`].
    pub fn on_stop(&self, wake: impl Fn() + Send + Sync + 'static) {
        let mut callbacks = self.on_stop.0.lock().expect("lifecycle lock");
        if self.stopping() {
            wake();
        }
        callbacks.push(Box::new(wake));
    }

    /// Sets `flag` and wakes every waiter.
    fn set(&self, flag: &AtomicBool) {
        {
            let _gate = self.gate.lock().expect("lifecycle lock");
            flag.store(true, Ordering::SeqCst);
        }
        self.changed.notify_all();
    }

    /// Sleeps until `until` returns false or `deadline` passes; what `until` said last.
    fn wait_while(&self, deadline: Instant, mut until: impl FnMut() -> bool) -> bool {
        let mut gate = self.gate.lock().expect("lifecycle lock");
        loop {
            if !until() {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            gate = self
                .changed
                .wait_timeout(gate, left)
                .expect("lifecycle lock")
                .0;
        }
    }

    /// When stopping was first asked for.
    pub fn stopping_since(&self) -> Option<Instant> {
        *self.stop_at.lock().expect("lifecycle lock")
    }

    /// True once stopping was asked for.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Fails the pipeline: checkpoints halt, sources stop. The first failure is kept
    /// (an inferred one is replaced by the next real cause).
    pub fn fail(&self, component: &str, cause: impl std::fmt::Display) {
        self.record(component, cause.to_string(), false);
    }

    /// A batch was dropped without being delivered by `component`: the pipeline fails,
    /// with this cause unless the component reports a better one.
    pub fn dropped_undelivered(&self, component: &str) {
        self.record(
            component,
            "a batch was dropped before it was delivered".into(),
            true,
        );
    }

    fn record(&self, component: &str, cause: String, inferred: bool) {
        // Halted before anything else happens, so no acknowledgement released after
        // this point moves a checkpoint.
        self.halted.store(true, Ordering::SeqCst);
        {
            let mut failure = self.failure.lock().expect("lifecycle lock");
            let replace = match &*failure {
                None => true,
                Some((_, was_inferred)) => *was_inferred && !inferred,
            };
            if replace {
                if failure.is_none() || !inferred {
                    tracing::error!(message = "Component failed; the pipeline stops and no checkpoint moves past what was delivered.", component = %component, %cause);
                }
                *failure = Some((
                    Failure {
                        component: component.to_string(),
                        cause,
                    },
                    inferred,
                ));
            }
        }
        self.request_stop();
    }

    /// The failure, if the pipeline failed.
    pub fn failure(&self) -> Option<Failure> {
        self.failure
            .lock()
            .expect("lifecycle lock")
            .as_ref()
            .map(|(f, _)| f.clone())
    }

    /// The flag checkpoint stores watch: once set, they never advance again.
    pub fn halted(&self) -> Arc<AtomicBool> {
        self.halted.clone()
    }

    /// The drain deadline has passed: retries give up.
    pub fn abort(&self) {
        self.set(&self.abort);
    }

    /// Every component has ended: the drain watchdog returns.
    pub fn drained(&self) {
        self.set(&self.drained);
    }

    /// True once the drain deadline has passed.
    pub fn aborted(&self) -> bool {
        self.abort.load(Ordering::SeqCst)
    }

    /// Sleeps `pause` before a retry, waking early when the drain deadline passes; false
    /// when it has passed (the caller gives up).
    pub fn pause(&self, pause: Duration) -> bool {
        self.wait_while(Instant::now() + pause, || !self.aborted())
    }

    /// Sleeps `pause` (a source between polls), waking early when stopping starts.
    pub fn sleep_unless_stopping(&self, pause: Duration) {
        self.wait_while(Instant::now() + pause, || !self.stopping());
    }

    /// Marks the current thread as running `component` of this pipeline: a panic on it
    /// fails the pipeline before the thread unwinds.
    pub fn enter(self: &Arc<Self>, component: &str) {
        PANIC_HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                CURRENT.with(|current| {
                    if let Some((lifecycle, component)) = &*current.borrow() {
                        lifecycle.fail(component, format!("panicked: {info}"));
                    }
                });
                previous(info);
            }));
        });
        CURRENT.with(|current| *current.borrow_mut() = Some((self.clone(), component.into())));
    }

    /// Sets the abort flag `deadline` after stopping was first asked for; returns when it
    /// did, or when the run has [drained](Lifecycle::drained) first.
    pub fn watch_drain(&self, deadline: Duration) {
        let drained = || self.drained.load(Ordering::SeqCst);
        // Until stopping starts (a week at a time: woken when it does).
        let week = Duration::from_secs(7 * 86_400);
        while !drained() && self.stopping_since().is_none() {
            self.wait_while(Instant::now() + week, || !drained() && !self.stopping());
        }
        let Some(since) = self.stopping_since() else {
            return;
        };
        if self.wait_while(since + deadline, || !drained()) {
            tracing::error!(
                message = "Drain deadline passed; components still retrying give up.",
                deadline_secs = deadline.as_secs()
            );
            self.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_callbacks_run_once_stopping_starts_or_at_once_after() {
        use std::sync::atomic::AtomicUsize;
        let lifecycle = Lifecycle::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        lifecycle.on_stop(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        lifecycle.request_stop();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let counter = calls.clone();
        lifecycle.on_stop(move || {
            counter.fetch_add(10, Ordering::SeqCst);
        });
        assert_eq!(
            calls.load(Ordering::SeqCst),
            11,
            "registered late: run at once"
        );
    }

    #[test]
    fn the_first_real_cause_wins_and_halts() {
        let lifecycle = Lifecycle::new();
        let halted = lifecycle.halted();
        assert!(!halted.load(Ordering::SeqCst) && !lifecycle.stopping());
        lifecycle.dropped_undelivered("sinks.a");
        assert!(halted.load(Ordering::SeqCst) && lifecycle.stopping());
        lifecycle.fail("sinks.a", "disk full");
        lifecycle.fail("sinks.b", "later");
        lifecycle.dropped_undelivered("sinks.c");
        assert_eq!(
            lifecycle.failure(),
            Some(Failure {
                component: "sinks.a".into(),
                cause: "disk full".into()
            })
        );
    }

    #[test]
    fn a_panic_fails_the_pipeline_before_unwinding() {
        let lifecycle = Lifecycle::new();
        let halted = lifecycle.halted();
        struct SeesHalt(Arc<AtomicBool>, Arc<AtomicBool>);
        impl Drop for SeesHalt {
            fn drop(&mut self) {
                self.1
                    .store(self.0.load(Ordering::SeqCst), Ordering::SeqCst);
            }
        }
        let seen = Arc::new(AtomicBool::new(false));
        let (l, h, s) = (lifecycle.clone(), halted.clone(), seen.clone());
        let joined = std::thread::spawn(move || {
            l.enter("transforms.t");
            let _guard = SeesHalt(h, s);
            panic!("boom");
        })
        .join();
        assert!(joined.is_err());
        assert!(
            seen.load(Ordering::SeqCst),
            "halted before the unwind dropped anything"
        );
        let failure = lifecycle.failure().unwrap();
        assert_eq!(failure.component, "transforms.t");
        assert!(failure.cause.contains("boom"), "{}", failure.cause);
    }

    #[test]
    fn pause_gives_up_at_the_deadline() {
        let lifecycle = Lifecycle::new();
        assert!(lifecycle.pause(Duration::from_millis(1)));
        lifecycle.request_stop();
        lifecycle.watch_drain(Duration::from_millis(10));
        assert!(lifecycle.aborted());
        let started = Instant::now();
        assert!(!lifecycle.pause(Duration::from_secs(10)));
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
