//! `steward healthcheck`: the container HEALTHCHECK, without curl in the image.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::config::ServerSettings;

/// GETs `/health/live` on the configured port; true when it answers 200 within 2 s.
pub fn check(server: &ServerSettings) -> Result<(), String> {
    // A wildcard bind address is reachable on loopback.
    let host = match server.host.as_str() {
        "0.0.0.0" => "127.0.0.1",
        "::" | "[::]" => "::1",
        host => host,
    };
    let addr: SocketAddr = (host, server.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("no address for {host}"))?;
    let timeout = Duration::from_secs(2);
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET /health/live HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).map_err(|e| e.to_string())?;
    match &head {
        b"HTTP/1.1 200" | b"HTTP/1.0 200" => Ok(()),
        other => Err(format!(
            "unexpected answer: {}",
            String::from_utf8_lossy(other)
        )),
    }
}
