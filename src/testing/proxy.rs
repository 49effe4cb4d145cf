//! A TCP proxy the test controls, to inject store faults without touching the shared servers.
//!
//! [`TestApp`](super::TestApp) puts one in front of each store the service uses
//! ([`TestApp::redis`](super::TestApp::redis), [`TestApp::postgres`](super::TestApp::postgres));
//! a test can also start one of its own in front of anything that speaks TCP.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What the proxy does to traffic; every open connection follows changes at once.
#[derive(Clone, Copy, Debug)]
struct Mode {
    /// False: open connections are reset and new ones are accepted and closed at once.
    up: bool,
    /// Added to every round trip: half on the way to the server, half on the way back.
    delay: Duration,
    /// Bumped by `reset()`: connections opened before it are reset, new ones are served.
    generation: u64,
}

/// Forwards connections from `addr` to a target, with faults on demand: `cut()`/`restore()`
/// (a store that is down), `delay()` (a slow network or server) and `reset()` (every open
/// connection dies, as when a NAT or firewall forgets them). It runs on a thread of its own,
/// so it keeps working whatever the test's runtime does, and stops when dropped.
pub struct TcpProxy {
    /// Where it listens: point the client here instead of at the target.
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
}

impl TcpProxy {
    /// Starts forwarding from a fresh local port to `target`.
    pub fn start(target: SocketAddr) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("addr");
        let (mode, mut changes) = watch::channel(Mode {
            up: true,
            delay: Duration::ZERO,
            generation: 0,
        });
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("listener");
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((inbound, _)) = accepted else { continue };
                            if !changes.borrow().up {
                                drop(inbound);
                                continue;
                            }
                            tokio::spawn(forward(inbound, target, changes.clone()));
                        }
                        changed = changes.changed() => if changed.is_err() { return },
                    }
                }
            });
        });
        Self { addr, mode }
    }

    /// The store is down: open connections are reset, new ones closed at once.
    pub fn cut(&self) {
        self.mode.send_modify(|mode| mode.up = false);
    }

    /// Back to normal: forward without delay.
    pub fn restore(&self) {
        self.mode.send_modify(|mode| {
            mode.up = true;
            mode.delay = Duration::ZERO;
        });
    }

    /// Adds `round_trip` to every request-response exchange, without limiting throughput.
    pub fn delay(&self, round_trip: Duration) {
        self.mode.send_modify(|mode| mode.delay = round_trip);
    }

    /// Resets every open connection once; new connections are served normally.
    pub fn reset(&self) {
        self.mode.send_modify(|mode| mode.generation += 1);
    }
}

async fn forward(inbound: TcpStream, target: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    let born = mode.borrow().generation;
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (mut client_read, mut client_write) = inbound.into_split();
    let (mut server_read, mut server_write) = outbound.into_split();
    let to_server = pump(&mut client_read, &mut server_write, mode.clone());
    let to_client = pump(&mut server_read, &mut client_write, mode.clone());
    let killed = mode.wait_for(|now| !now.up || now.generation != born);
    let killed = tokio::select! {
        _ = async { tokio::join!(to_server, to_client) } => false,
        _ = killed => true,
    };
    if killed {
        // Closing with no linger sends RST: an abortive close, as when a network path dies.
        let _ = client_read.as_ref().set_zero_linger();
        let _ = server_read.as_ref().set_zero_linger();
    }
}

/// Copies one direction, holding each chunk back by half the configured round-trip delay.
/// Reading goes on while earlier chunks wait, so the delay adds latency, not a throughput cap.
async fn pump(from: &mut OwnedReadHalf, to: &mut OwnedWriteHalf, mode: watch::Receiver<Mode>) {
    let (queue, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let at = Instant::now() + mode.borrow().delay / 2;
                    if queue.send((at, buffer[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
