//! What a run's helper threads (component file watchers, the config reloader) wait on:
//! reload requests (SIGHUP, `POST /reload`) and the end of the run. They sleep on it
//! until one of those happens or their own timer is due; no thread polls a flag.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// See the module docs.
#[derive(Debug, Default)]
pub struct Control {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Debug, Default, Clone, Copy)]
struct State {
    reloads: u64,
    ended: bool,
}

/// What ended a [`Control::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The run ended: the waiter returns.
    Ended,
    /// A reload was requested; the number of requests so far.
    Reload(u64),
    /// The waiter's own timer is due.
    Timeout,
}

impl Control {
    /// Asks every watcher to look at its files now, and the pipeline file to be read
    /// again.
    pub fn request_reload(&self) {
        self.state.lock().expect("control lock").reloads += 1;
        self.wake.notify_all();
    }

    /// How many reloads have been requested.
    pub fn reloads(&self) -> u64 {
        self.state.lock().expect("control lock").reloads
    }

    /// Ends the run for every waiter.
    pub fn end(&self) {
        self.state.lock().expect("control lock").ended = true;
        self.wake.notify_all();
    }

    /// Sleeps until the run ends, a reload after the `seen`-th is requested, or
    /// `timeout` passes (`None`: no timer).
    pub fn wait(&self, seen: u64, timeout: Option<Duration>) -> Wake {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        let mut state = self.state.lock().expect("control lock");
        loop {
            if state.ended {
                return Wake::Ended;
            }
            if state.reloads != seen {
                return Wake::Reload(state.reloads);
            }
            state = match deadline {
                None => self.wake.wait(state).expect("control lock"),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return Wake::Timeout;
                    }
                    self.wake.wait_timeout(state, left).expect("control lock").0
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn waiters_wake_at_once_for_a_reload_or_the_end() {
        let control = Arc::new(Control::default());
        assert_eq!(
            control.wait(0, Some(Duration::from_millis(1))),
            Wake::Timeout
        );
        let waiter = {
            let control = control.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let first = control.wait(0, Some(Duration::from_secs(30)));
                let second = control.wait(1, None);
                (first, second, started.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        control.request_reload();
        std::thread::sleep(Duration::from_millis(50));
        control.end();
        let (first, second, took) = waiter.join().unwrap();
        assert_eq!((first, second), (Wake::Reload(1), Wake::Ended));
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
}
