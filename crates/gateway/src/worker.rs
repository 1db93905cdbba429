//! Worker threads: one per core, each with its own single-threaded runtime
//! and its own SO_REUSEPORT socket per listener, so a connection and the
//! upstream connection serving it live on one thread (no cross-thread
//! wake-ups per request, as in nginx's worker model). Per-worker state
//! (upstream connections, decision caches) is indexed by [`index`].

use std::cell::Cell;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// How many worker threads serve the listeners: one per core (1..=64).
pub fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 64)
}

/// The index of the worker thread this code runs on (0 elsewhere).
pub fn index() -> usize {
    WORKER.with(Cell::get)
}

/// Mark the current thread as worker `i`.
pub(crate) fn set_index(i: usize) {
    WORKER.with(|w| w.set(i));
}
