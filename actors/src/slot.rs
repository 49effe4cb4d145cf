//! The current address of a supervised actor.

use std::sync::{Arc, RwLock};

use actix::{Actor, Addr};

/// Holds the address of the live incarnation of a supervised actor.
///
/// Why: a restarted actor is a new actor with a new mailbox, so an `Addr` captured at start-up
/// would point at a closed mailbox forever after the first crash. Callers keep a `Slot` instead
/// and look the address up per call (an uncontended read lock and an `Arc` clone); the child's
/// factory stores the new address on every start.
pub struct Slot<A: Actor> {
    current: Arc<RwLock<Option<Addr<A>>>>,
}

impl<A: Actor> Clone for Slot<A> {
    fn clone(&self) -> Self {
        Self {
            current: Arc::clone(&self.current),
        }
    }
}

impl<A: Actor> Default for Slot<A> {
    fn default() -> Self {
        Self {
            current: Arc::new(RwLock::new(None)),
        }
    }
}

impl<A: Actor> Slot<A> {
    /// Puts a new incarnation's address in the slot.
    pub fn set(&self, addr: Addr<A>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(addr);
    }

    /// The current address, or `None` before the first start.
    pub fn get(&self) -> Option<Addr<A>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
