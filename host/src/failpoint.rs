//! Test-only failpoints: named places in the code where a test makes the process fail on
//! purpose, to check what a crash or a panic at exactly that step leaves behind.
//!
//! `FLOWENRICH_FAILPOINTS="name=action,..."` arms them, where `action` is `panic` (the
//! thread panics there), `exit` (the process ends at once with status 137, as after
//! `kill -9`: nothing is flushed, no destructor runs) or `sleepMS` (the thread pauses
//! MS milliseconds there, every time: a slow component). `name=action@N` fires on the
//! Nth time the point is reached (from 1; a sleep from the Nth time on). Unset (as in production), each point costs one
//! load of a flag that is never set.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::sync::Mutex;

/// What an armed failpoint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Panic,
    Exit,
    Sleep(std::time::Duration),
}

/// An armed point: what it does, on which hit, and how often it was reached.
struct Armed {
    action: Action,
    nth: u64,
    seen: u64,
}

/// The armed points by name.
static ARMED: LazyLock<Option<Mutex<HashMap<String, Armed>>>> = LazyLock::new(|| {
    let spec = std::env::var("FLOWENRICH_FAILPOINTS").ok()?;
    let mut armed = HashMap::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((name, action)) = item.split_once('=') else {
            continue;
        };
        let (action, nth) = action.split_once('@').unwrap_or((action, "1"));
        let action = match action {
            "panic" => Action::Panic,
            "exit" => Action::Exit,
            other => match other.strip_prefix("sleep").and_then(|ms| ms.parse().ok()) {
                Some(ms) => Action::Sleep(std::time::Duration::from_millis(ms)),
                None => continue,
            },
        };
        let nth = nth.parse().unwrap_or(1);
        armed.insert(
            name.to_string(),
            Armed {
                action,
                nth,
                seen: 0,
            },
        );
    }
    Some(Mutex::new(armed))
});

/// Reaching failpoint `name`: fails here if a test armed it.
pub fn hit(name: &str) {
    let Some(armed) = &*ARMED else { return };
    let action = {
        let mut armed = armed.lock().unwrap_or_else(|e| e.into_inner());
        let Some(point) = armed.get_mut(name) else {
            return;
        };
        point.seen += 1;
        let sleeping = matches!(point.action, Action::Sleep(_)) && point.seen >= point.nth;
        if point.seen != point.nth && !sleeping {
            return;
        }
        point.action
    };
    match action {
        Action::Panic => panic!("failpoint {name}"),
        Action::Exit => {
            eprintln!("failpoint {name}: exiting as after kill -9");
            std::process::exit(137)
        }
        Action::Sleep(pause) => std::thread::sleep(pause),
    }
}
