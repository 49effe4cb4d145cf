//! A TCP proxy the test controls, to inject store faults without touching the shared servers.

use std::net::SocketAddr;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards connections from `addr` to a target. `cut()` resets every open connection and
/// refuses new ones (accepts and closes them at once); `restore()` forwards again.
/// It runs on a thread of its own, so it keeps working whatever the test's runtime does,
/// and stops when dropped.
pub struct TcpProxy {
    pub addr: SocketAddr,
    enabled: watch::Sender<bool>,
}

impl TcpProxy {
    pub fn start(target: SocketAddr) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("addr");
        let (enabled, mut changes) = watch::channel(true);
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
                            if !*changes.borrow() {
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
        Self { addr, enabled }
    }

    pub fn cut(&self) {
        self.enabled.send_replace(false);
    }

    pub fn restore(&self) {
        self.enabled.send_replace(true);
    }

    /// `scheme://addr` for a store URL through this proxy.
    pub fn url(&self, scheme: &str, rest: &str) -> String {
        format!("{scheme}://{}{rest}", self.addr)
    }
}

async fn forward(mut inbound: TcpStream, target: SocketAddr, mut enabled: watch::Receiver<bool>) {
    let Ok(mut outbound) = TcpStream::connect(target).await else {
        return;
    };
    tokio::select! {
        _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = enabled.wait_for(|on| !on) => {
            // Drop both sides: an abortive close, as when a network path dies.
            let _ = inbound.set_zero_linger();
        }
    }
}
