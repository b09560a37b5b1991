//! Forwarding of names outside the BOSH domain to the recursors the
//! operator named (`--dns-recursor`), as bosh-dns's recursors do: the
//! client's query as it came, one recursor after another, each with a
//! deadline. Without recursors nothing is forwarded (no open resolver).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_server::proto::op::{Message, MessageType};
use tokio::net::UdpSocket;

/// Why no recursor answered.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// A socket to the recursor could not be opened or used.
    #[error("recursor {recursor}: socket error")]
    Io {
        /// The recursor.
        recursor: SocketAddr,
        /// What the socket said.
        #[source]
        source: std::io::Error,
    },
    /// No answer to our query within the deadline.
    #[error("recursor {recursor}: no answer within {timeout:?}")]
    Timeout {
        /// The recursor.
        recursor: SocketAddr,
        /// The deadline.
        timeout: Duration,
    },
}

/// The recursors and their deadline.
#[derive(Debug, Clone)]
pub struct Forwarder {
    /// Asked in this order until one answers.
    pub recursors: Vec<SocketAddr>,
    /// How long each gets.
    pub timeout: Duration,
}

impl Forwarder {
    /// Sends `query` (wire form, id `id`) to each recursor in turn and
    /// returns the first reply to it.
    pub async fn forward(&self, query: &[u8], id: u16) -> Result<Message, ForwardError> {
        let mut last = None;
        for &recursor in &self.recursors {
            match tokio::time::timeout(self.timeout, ask(recursor, query, id)).await {
                Ok(Ok(m)) => return Ok(m),
                Ok(Err(source)) => last = Some(ForwardError::Io { recursor, source }),
                Err(_) => last = Some(ForwardError::Timeout { recursor, timeout: self.timeout }),
            }
        }
        Err(last.expect("forward is only called with at least one recursor"))
    }
}

/// One exchange with one recursor; replies that are not a response to
/// `id` (stray or forged) are skipped.
async fn ask(recursor: SocketAddr, query: &[u8], id: u16) -> std::io::Result<Message> {
    let local: SocketAddr =
        if recursor.is_ipv4() { "0.0.0.0:0".parse() } else { "[::]:0".parse() }.expect("literal");
    let socket = UdpSocket::bind(local).await?;
    socket.connect(recursor).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = socket.recv(&mut buf).await?;
        if let Ok(m) = Message::from_vec(&buf[..n])
            && m.metadata.id == id
            && m.metadata.message_type == MessageType::Response
        {
            return Ok(m);
        }
    }
}
