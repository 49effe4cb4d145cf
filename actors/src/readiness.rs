//! Readiness state shared between the supervisor, the shutdown sequence and `/health/ready`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Whether this instance should receive traffic, apart from the stores' own health.
///
/// Two things take an instance out of rotation without stopping it: a shutdown under way (the
/// first thing the shutdown sequence does, so load balancers stop routing here while in-flight
/// requests drain) and a child that exceeded its restart intensity under the `degrade`
/// escalation (the process keeps serving liveness, so the orchestrator does not kill it, but
/// it takes no new traffic until the child is stable again).
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    shutting_down: AtomicBool,
    degraded: Mutex<BTreeSet<String>>,
}

impl Readiness {
    /// Takes the instance out of rotation for good: the first step of a shutdown.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether a shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// Marks (or clears) the child `name` as degraded.
    pub fn set_degraded(&self, name: &str, degraded: bool) {
        let mut set = self
            .inner
            .degraded
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if degraded {
            set.insert(name.to_owned());
        } else {
            set.remove(name);
        }
    }

    /// The children currently degraded, in name order.
    pub fn degraded(&self) -> Vec<String> {
        let set = self
            .inner
            .degraded
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        set.iter().cloned().collect()
    }
}
