//! Loopback ports.

use std::net::SocketAddr;

/// A free loopback address (bound then released: another process may take
/// it in between, which a test or bench run accepts).
pub fn free_addr() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// The port of [`free_addr`].
pub fn free_port() -> u16 {
    free_addr().map(|a| a.port()).expect("a free port")
}
