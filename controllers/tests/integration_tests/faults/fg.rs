//! F. Bad input and G. Security: garbage straight into etcd (F2), hostile
//! agents on the bus (F3), hostile release tarballs (F4), flipped blob
//! bytes (F5), a contested static IP (F8), bus permissions and
//! authentication (G1, G2), canary secrets (G5) and shell metacharacters
//! in names and properties (G6).
//!
//! Shared here: a capture of the in-process director's tracing output
//! ([`Logs`]), a panic counter ([`Panics`]), a raw etcd client for writes
//! that bypass the store on purpose, and a raw NATS protocol client
//! ([`RawNats`]) that sees the server's `-ERR` lines as they are.

mod f;
mod g;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bosh_controllers::testing::Harness;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The in-process director's tracing output, captured for the whole test
/// process (nextest runs each test in a process of its own).
#[derive(Clone)]
struct Logs(Arc<Mutex<Vec<u8>>>);

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Captures every event `filter` (an `EnvFilter` directive) lets
    /// through, as plain text lines.
    fn capture(filter: &str) -> Logs {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = buf.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_ansi(false)
            .with_writer(move || LogWriter(w.clone()))
            .try_init()
            .expect("the log capture needs a process of its own (run with nextest)");
        Logs(buf)
    }

    /// Everything captured so far.
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Captured lines containing every one of `needles`.
    fn lines_with(&self, needles: &[&str]) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_string)
            .collect()
    }

    /// How many bytes were captured.
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// The last `n` lines captured (for failure messages).
    fn tail(&self, n: usize) -> String {
        let text = self.text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Counts panics anywhere in the process (caught ones included: a panic in
/// a reconcile is caught by the runtime and would otherwise go unseen).
struct Panics(Arc<AtomicUsize>);

impl Panics {
    fn count() -> Panics {
        let n = Arc::new(AtomicUsize::new(0));
        let seen = n.clone();
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            seen.fetch_add(1, Ordering::SeqCst);
            prev(info);
        }));
        Panics(n)
    }

    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// A raw etcd client on the harness's etcd: for writes that bypass the
/// store on purpose (garbage) and reads of every key.
async fn raw_etcd(h: &Harness) -> etcd_client::Client {
    h.rest.env.store_config().client().await.unwrap()
}

/// Every key and value in etcd.
async fn every_key(c: &etcd_client::Client) -> Vec<(Vec<u8>, Vec<u8>)> {
    let opts = etcd_client::GetOptions::new().with_from_key();
    let mut kv = c.kv_client().max_decoding_message_size(usize::MAX);
    let resp = kv.get(vec![0u8], Some(opts)).await.unwrap();
    resp.kvs().iter().map(|kv| (kv.key().to_vec(), kv.value().to_vec())).collect()
}

/// Leadership terms by controller: the create revision of each leader key.
/// A controller that restarted (lost and regained leadership) has a new one.
async fn leader_terms(c: &etcd_client::Client, h: &Harness) -> BTreeMap<String, i64> {
    let prefix = format!("{}/leases/", h.store.root());
    let resp =
        c.clone().get(prefix.clone(), Some(etcd_client::GetOptions::new().with_prefix())).await;
    resp.unwrap()
        .kvs()
        .iter()
        .map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), kv.create_revision()))
        .collect()
}

/// A NATS connection speaking the protocol by hand, so that the server's
/// answers (`-ERR 'Permissions Violation ...'`, `-ERR 'Authorization
/// Violation'`) are seen one by one, and nothing a client library does
/// (checking payload sizes, reconnecting) stands between the test and the
/// server.
struct RawNats {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    /// `-ERR` lines received so far.
    errors: Vec<String>,
    /// `MSG` lines received so far (subject and payload).
    messages: Vec<(String, Vec<u8>)>,
}

/// How a raw connection attempt ended.
enum Connected {
    /// The server answered the PING: logged in.
    Yes(RawNats),
    /// The server refused, with this `-ERR` line (or closed the socket).
    Refused(String),
}

impl RawNats {
    /// Connects to `url` (`nats://host:port`) with `user`/`pass` (none when
    /// `None`) and waits for the server's verdict.
    async fn connect(url: &str, creds: Option<(&str, &str)>) -> Connected {
        let addr = url.trim_start_matches("nats://");
        let stream = TcpStream::connect(addr).await.unwrap();
        let (r, w) = stream.into_split();
        let mut c =
            RawNats { reader: BufReader::new(r), writer: w, errors: vec![], messages: vec![] };
        let info = c.line().await.unwrap_or_default();
        assert!(info.starts_with("INFO"), "{info}");
        let mut connect = serde_json::json!({
            "verbose": false, "pedantic": false, "protocol": 1, "echo": true,
            "lang": "raw", "version": "0",
        });
        if let Some((user, pass)) = creds {
            connect["user"] = user.into();
            connect["pass"] = pass.into();
        }
        c.send(format!("CONNECT {connect}\r\nPING\r\n").as_bytes()).await;
        loop {
            match c.line().await {
                Some(l) if l == "PONG" => return Connected::Yes(c),
                Some(l) if l.starts_with("-ERR") => return Connected::Refused(l),
                Some(_) => {}
                None => return Connected::Refused("connection closed".into()),
            }
        }
    }

    /// One protocol line, without its CRLF; `None` when the socket closed.
    /// Answers the server's PINGs and collects MSG payloads on the way.
    async fn line(&mut self) -> Option<String> {
        loop {
            let mut l = String::new();
            let n = tokio::time::timeout(Duration::from_secs(20), self.reader.read_line(&mut l))
                .await
                .expect("the server answers within 20 s")
                .ok()?;
            if n == 0 {
                return None;
            }
            let l = l.trim_end().to_string();
            if l == "PING" {
                self.send(b"PONG\r\n").await;
                continue;
            }
            if let Some(rest) = l.strip_prefix("MSG ") {
                // MSG <subject> <sid> [reply] <#bytes>
                let parts: Vec<&str> = rest.split(' ').collect();
                let len: usize = parts.last().unwrap().parse().unwrap();
                let mut payload = vec![0u8; len + 2];
                tokio::io::AsyncReadExt::read_exact(&mut self.reader, &mut payload).await.ok()?;
                payload.truncate(len);
                self.messages.push((parts[0].to_string(), payload));
                continue;
            }
            if l.starts_with("-ERR") {
                self.errors.push(l.clone());
            }
            return Some(l);
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        // A refused connection may already be closed; the caller looks at
        // what the server said instead.
        let _ = self.writer.write_all(bytes).await;
        let _ = self.writer.flush().await;
    }

    /// Publishes `payload` on `subject`.
    async fn publish(&mut self, subject: &str, payload: &[u8]) {
        let mut msg = format!("PUB {subject} {}\r\n", payload.len()).into_bytes();
        msg.extend_from_slice(payload);
        msg.extend_from_slice(b"\r\n");
        self.send(&msg).await;
    }

    /// Subscribes to `subject` as subscription `sid`.
    async fn subscribe(&mut self, subject: &str, sid: u32) {
        self.send(format!("SUB {subject} {sid}\r\n").as_bytes()).await;
    }

    /// Sends a PING and reads until its PONG: everything the server had
    /// to say about what was sent before is then in `errors` and
    /// `messages`. `false` when the server closed the connection instead.
    async fn sync(&mut self) -> bool {
        self.send(b"PING\r\n").await;
        loop {
            match self.line().await {
                Some(l) if l == "PONG" => return true,
                Some(_) => {}
                None => return false,
            }
        }
    }
}

/// Writes `text` to a new file `name` in `dir` and returns its path.
fn write_file(dir: &std::path::Path, name: &str, text: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().write_all(text).unwrap();
    p
}
