//! Listening sockets, bound with the configured backlog.
//!
//! `std::net::TcpListener::bind` always listens with a backlog of 128, whatever
//! `server.backlog` says; binding through `socket2` lets the setting take effect (the kernel
//! still caps it at `net.core.somaxconn`).

use std::io;
use std::net::{TcpListener, ToSocketAddrs};

use socket2::{Domain, Protocol, Socket, Type};

/// A socket listening on `address` with `backlog` pending connections at most.
pub fn bind(address: impl ToSocketAddrs, backlog: u32) -> io::Result<TcpListener> {
    let addr = address.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(io::ErrorKind::AddrNotAvailable, "no address to listen on")
    })?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As std does: a restarted process may bind while old connections are in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}
