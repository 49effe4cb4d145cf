//! SIGTERM and SIGINT, handled by steward rather than actix-web.
//!
//! actix-web reacts to the first signal only (a second Ctrl-C is swallowed) and stops the whole
//! `System` after draining, in no order. Here the first signal starts the supervisor's ordered
//! shutdown and a second one exits at once with 130, for an operator who will not wait.

use actix::Addr;
use steward_actors::supervisor::Shutdown;
use steward_actors::{ShutdownReason, Supervisor};
use tokio::signal::unix::{signal, SignalKind};

use crate::telemetry;

/// Installs the handlers; must be called inside an actix `System`.
pub fn handle(supervisor: Addr<Supervisor>) -> std::io::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    actix_rt::spawn(async move {
        let first = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        log::info!(target: "steward", "received {first}; starting the ordered shutdown");
        supervisor.do_send(Shutdown(ShutdownReason::Signal(first)));
        let second = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        log::warn!(target: "steward", "received {second} during shutdown; exiting now with code 130");
        telemetry::flush();
        std::process::exit(130);
    });
    Ok(())
}
