//! Giving memory back after a burst.
//!
//! glibc's malloc keeps what it freed in its per-thread arenas instead of returning it to the
//! system: measured with `bench/conn_storm`, 8,000 keep-alive connections took the process
//! from 9 to 90 MB resident, and it stayed at 90 MB after they had all closed — under a
//! container's memory limit, the next storm then starts from there. `malloc_trim(0)` returns
//! the free pages of every arena (back to 10 MB in that run), so a thread of its own calls it
//! every `server.memory_trim_interval`. It costs a walk over the free chunks, with the arenas
//! locked for that long: microseconds on a quiet heap. (mimalloc, tried instead, peaked at
//! 156 MB for the same storm and kept it unless its purge delay was set to 0.)

use std::time::Duration;

/// Starts the trimming thread; `interval` zero turns it off. Elsewhere than glibc it does
/// nothing.
pub fn trim_periodically(interval: Duration) {
    if interval.is_zero() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let started = std::thread::Builder::new()
            .name("steward-trim".into())
            .spawn(move || loop {
                std::thread::sleep(interval);
                // SAFETY: malloc_trim only reorganises glibc's own heap; any thread may call it.
                unsafe {
                    libc::malloc_trim(0);
                }
            });
        if let Err(error) = started {
            log::warn!(target: "steward", "cannot start the memory trimming thread: {error}");
        }
    }
}
