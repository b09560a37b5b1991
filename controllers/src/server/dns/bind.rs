//! Binding DNS listeners where VMs will reach them.
//!
//! The address VMs are given as their DNS server is their subnet's
//! gateway, which lives on a bridge the CPI creates with the first VM of
//! the network, after boshd started. The listeners are therefore bound
//! with `IP_FREEBIND`: the socket takes the address now and receives on
//! it as soon as the bridge holds it, so boshd's start does not depend on
//! the order in which networks come up.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, UdpSocket};

/// A listener that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("binding DNS ({proto}) to {addr}")]
pub struct BindError {
    /// `UDP` or `TCP`.
    pub proto: &'static str,
    /// Where.
    pub addr: SocketAddr,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

fn socket(addr: SocketAddr, ty: Type, proto: Protocol) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    match addr {
        SocketAddr::V4(_) => s.set_freebind_v4(true)?,
        SocketAddr::V6(_) => s.set_freebind_v6(true)?,
    }
    s.set_nonblocking(true)?;
    if ty == Type::STREAM {
        // A restarted boshd rebinds at once, past connections in TIME_WAIT.
        s.set_reuse_address(true)?;
    }
    s.bind(&addr.into())?;
    Ok(s)
}

/// Binds a UDP socket and a TCP listener on each address (port 0 picks
/// one port for both).
pub fn bind(addrs: &[SocketAddr]) -> Result<(Vec<UdpSocket>, Vec<TcpListener>), BindError> {
    let (mut udp, mut tcp) = (vec![], vec![]);
    for &addr in addrs {
        let err = |proto, addr| move |source| BindError { proto, addr, source };
        let u = socket(addr, Type::DGRAM, Protocol::UDP)
            .and_then(|s| UdpSocket::from_std(s.into()))
            .map_err(err("UDP", addr))?;
        let bound = u.local_addr().map_err(err("UDP", addr))?;
        let t = socket(bound, Type::STREAM, Protocol::TCP)
            .and_then(|s| {
                s.listen(1024)?;
                TcpListener::from_std(s.into())
            })
            .map_err(err("TCP", bound))?;
        tracing::info!(%bound, "DNS listening");
        udp.push(u);
        tcp.push(t);
    }
    Ok((udp, tcp))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address no interface holds yet is bound (what lets boshd listen
    /// on a gateway before its bridge exists), and port 0 gives UDP and
    /// TCP the same port.
    #[tokio::test]
    async fn binds_addresses_not_yet_on_an_interface() {
        let addr: SocketAddr = "192.0.2.77:0".parse().unwrap();
        let (udp, tcp) = bind(&[addr]).unwrap();
        let port = udp[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert_eq!(tcp[0].local_addr().unwrap().port(), port);
        assert_eq!(udp[0].local_addr().unwrap().ip(), addr.ip());
    }
}
