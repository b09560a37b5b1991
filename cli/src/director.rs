//! Talking to boshd's API: where it is, the token, and typed requests.
//! Every body sent and read is a type of [`bosh_api::wire`] (or a stored
//! object), the same the server builds.
//!
//! The director is found from `--director`/`BOSH_DIRECTOR` and
//! `--token`/`BOSH_TOKEN`, or else from the `director.json` that boshd
//! writes into its data dir (looked for in `.bosh-rs/boshd/` from the
//! current directory upwards), so that after `hack/up.sh` every command
//! works without flags.
//!
//! # Timeouts
//!
//! A director that does not answer must not hang the CLI, so every request
//! is bounded, and the error names the director, how long it waited and the
//! flag that sets the bound ([`Unanswered`]):
//!
//! - connecting: `--connect-timeout` (10 s);
//! - a whole request, answer included: `--request-timeout` (60 s); an
//!   upload gets one more second per MiB it sends, so a big stemcell over
//!   a slow link is not cut off;
//! - streams that last as long as the work they follow (`watch`, log and
//!   release downloads): the answer must start within the request timeout,
//!   then the stream may run for ever but never stay silent for longer than
//!   `--idle-timeout` (45 s). boshd sends a keep-alive line on an idle watch
//!   every 15 s, so only a director that stopped answering trips it.
//!   `task --follow` (and every command that follows its task) watches
//!   tasks and events this way rather than polling.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bosh_api::wire::{DirectorFile, ErrorBody, WatchEvent, WatchQuery};
use bosh_api::{Kind, Object};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Flags that pick the director and bound how long to wait for it.
#[derive(Debug, Clone, clap::Args)]
pub struct DirectorArgs {
    /// boshd's API URL, e.g. `http://127.0.0.1:25555`.
    #[arg(long, env = "BOSH_DIRECTOR", global = true)]
    pub director: Option<String>,
    /// The API token.
    #[arg(long, env = "BOSH_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// How long to wait for a connection to the director (`10s`, `500ms`, `2m`).
    #[arg(long, env = "BOSH_CONNECT_TIMEOUT", global = true, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// How long one request may take, answer included (uploads: plus 1 s per MiB).
    #[arg(long, env = "BOSH_REQUEST_TIMEOUT", global = true, default_value = "60s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// How long a stream (watch, downloads) may stay silent before the director counts as gone.
    #[arg(long, env = "BOSH_IDLE_TIMEOUT", global = true, default_value = "45s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
}

impl Default for DirectorArgs {
    /// The flags' defaults: no director named, and the default timeouts.
    fn default() -> Self {
        DirectorArgs {
            director: None,
            token: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(45),
        }
    }
}

/// Parses `10`, `10s`, `1.5s`, `500ms` or `2m` into a duration (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 =
        number.parse().map_err(|_| format!("{s:?} is not a duration (e.g. 10s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        other => return Err(format!("unknown unit {other:?} in {s:?} (use ms, s or m)")),
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("{s:?}: a timeout must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A duration as people write it: `10 s`, `1.5 s`, `500 ms`.
fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Which bound a request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// No connection within `--connect-timeout`.
    Connect,
    /// The request, answer included, took longer than `--request-timeout`
    /// (plus its upload allowance).
    Request,
    /// A stream stayed silent for `--idle-timeout`.
    Idle,
}

/// The director did not answer in time. Typed so that its message is the
/// same everywhere and tests can recognise it.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.message())]
pub struct Unanswered {
    /// The director's URL.
    pub url: String,
    /// How long the CLI waited.
    pub waited: Duration,
    /// The bound it ran into.
    pub bound: Bound,
}

impl Unanswered {
    fn message(&self) -> String {
        let (url, waited) = (&self.url, human(self.waited));
        match self.bound {
            Bound::Connect => format!(
                "director {url} did not answer within {waited} (connect timeout; set --connect-timeout)"
            ),
            Bound::Request => format!(
                "director {url} did not answer within {waited} (request timeout; set --request-timeout)"
            ),
            Bound::Idle => format!(
                "director {url} sent nothing for {waited} (idle timeout of a stream; set --idle-timeout)"
            ),
        }
    }
}

/// An API error, kept typed so `main` can map it to an exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}{}", details.iter().map(|d| format!("\n  {d}")).collect::<String>())]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// The error line.
    pub message: String,
    /// One line per problem (validation errors name their paths).
    pub details: Vec<String>,
}

/// A client for one director.
pub struct Director {
    url: String,
    token: String,
    http: reqwest::Client,
    connect_timeout: Duration,
    request_timeout: Duration,
    idle_timeout: Duration,
}

/// Extra time an upload gets per MiB it sends, on top of `--request-timeout`:
/// 1 s per MiB allows a link as slow as 1 MiB/s (and the director's
/// verification of what it received, which is far faster).
const UPLOAD_ALLOWANCE_PER_MIB: Duration = Duration::from_secs(1);

fn find_director_json(start: &Path) -> Option<PathBuf> {
    start.ancestors().map(|d| d.join(".bosh-rs/boshd/director.json")).find(|p| p.is_file())
}

impl Director {
    /// Resolves the director from flags, environment or `director.json`.
    pub fn resolve(args: &DirectorArgs) -> Result<Director> {
        let (url, token) = match (&args.director, &args.token) {
            (Some(u), Some(t)) => (u.clone(), t.clone()),
            _ => {
                let cwd = std::env::current_dir()?;
                let Some(path) = find_director_json(&cwd) else {
                    bail!(
                        "no director: pass --director and --token (or BOSH_DIRECTOR and BOSH_TOKEN), \
                         or run hack/up.sh so that .bosh-rs/boshd/director.json exists"
                    );
                };
                let file: DirectorFile = serde_json::from_slice(
                    &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
                )
                .with_context(|| format!("parsing {}", path.display()))?;
                let url = args.director.clone().unwrap_or(file.url);
                let token = match &args.token {
                    Some(t) => t.clone(),
                    None => std::fs::read_to_string(&file.token_file)
                        .with_context(|| {
                            format!("reading the API token from {}", file.token_file.display())
                        })?
                        .trim()
                        .to_string(),
                };
                (url, token)
            }
        };
        let http = reqwest::Client::builder()
            .connect_timeout(args.connect_timeout)
            .build()
            .context("building the HTTP client")?;
        Ok(Director {
            url: url.trim_end_matches('/').to_string(),
            token,
            http,
            connect_timeout: args.connect_timeout,
            request_timeout: args.request_timeout,
            idle_timeout: args.idle_timeout,
        })
    }

    /// A request bounded as a whole by `--request-timeout`.
    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.stream_req(method, path).timeout(self.request_timeout)
    }

    /// A request with no bound on its whole duration: for streams, whose
    /// start and silences are bounded instead ([`Director::open_stream`],
    /// [`Director::next_chunk`]).
    fn stream_req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url)).bearer_auth(&self.token)
    }

    /// Names the director and the bound a failed request ran into; `waited`
    /// is that request's total bound.
    fn explain(&self, e: reqwest::Error, waited: Duration) -> anyhow::Error {
        let bound = match (e.is_connect(), e.is_timeout()) {
            (true, true) => Bound::Connect,
            (false, true) => Bound::Request,
            _ => {
                return anyhow::Error::new(e)
                    .context(format!("cannot reach the director at {}", self.url));
            }
        };
        let waited = if bound == Bound::Connect { self.connect_timeout } else { waited };
        Unanswered { url: self.url.clone(), waited, bound }.into()
    }

    /// Sends a bounded request (bound `waited`), turning an error status into an [`ApiError`].
    async fn send_within(
        &self,
        rb: reqwest::RequestBuilder,
        waited: Duration,
    ) -> Result<reqwest::Response> {
        let resp = rb.send().await.map_err(|e| self.explain(e, waited))?;
        self.check(resp).await
    }

    /// Sends and decodes a request bounded by `waited`.
    async fn call<T: DeserializeOwned>(
        &self,
        rb: reqwest::RequestBuilder,
        waited: Duration,
    ) -> Result<T> {
        let resp = self.send_within(rb, waited).await?;
        let path = resp.url().path().to_string();
        let body = resp.bytes().await.map_err(|e| self.explain(e, waited))?;
        serde_json::from_slice(&body).with_context(|| {
            format!("cannot read the director's answer to {path} (a boshd of another version?)")
        })
    }

    /// Starts a stream: the answer's head must arrive within
    /// `--request-timeout`; the body is then read with [`Director::next_chunk`].
    async fn open_stream(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let waited = self.request_timeout;
        let resp = tokio::time::timeout(waited, rb.send())
            .await
            .map_err(|_| Unanswered { url: self.url.clone(), waited, bound: Bound::Request })?
            .map_err(|e| self.explain(e, waited))?;
        self.check(resp).await
    }

    /// The next chunk of a stream, or `None` at its end; an error when the
    /// director stays silent for `--idle-timeout`.
    async fn next_chunk(&self, resp: &mut reqwest::Response) -> Result<Option<bytes::Bytes>> {
        let waited = self.idle_timeout;
        tokio::time::timeout(waited, resp.chunk())
            .await
            .map_err(|_| Unanswered { url: self.url.clone(), waited, bound: Bound::Idle })?
            .map_err(|e| self.explain(e, waited))
    }

    /// Turns an error status into an [`ApiError`].
    async fn check(&self, resp: reqwest::Response) -> Result<reqwest::Response> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        // An error body is small; a director that stops halfway through one
        // must not hang the CLI either. Something else (a proxy's page)
        // leaves the status to speak for itself.
        let body: Option<ErrorBody> =
            tokio::time::timeout(self.request_timeout, resp.json()).await.ok().and_then(Result::ok);
        let (message, details) = match body {
            Some(b) => (b.error, b.details),
            None => (format!("HTTP {status}"), Vec::new()),
        };
        Err(ApiError { status, message, details }.into())
    }

    /// GETs and decodes.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(self.req(reqwest::Method::GET, path), self.request_timeout).await
    }

    /// GETs with a query and decodes.
    pub async fn get_with<Q: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        query: &Q,
    ) -> Result<T> {
        self.call(self.req(reqwest::Method::GET, path).query(query), self.request_timeout).await
    }

    /// One object, or `None` when it does not exist.
    pub async fn try_object<S: Kind>(&self, name: &str) -> Result<Option<Object<S>>> {
        match self.get(&format!("/v1/{}/{name}", S::PLURAL)).await {
            Ok(o) => Ok(Some(o)),
            Err(e) if e.downcast_ref::<ApiError>().is_some_and(|a| a.status == 404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates or updates (compare-and-swap) an object's spec.
    pub async fn put_object<S: Kind>(&self, obj: &Object<S>) -> Result<Object<S>> {
        let path = format!("/v1/{}/{}", S::PLURAL, obj.metadata.name);
        self.call(self.req(reqwest::Method::PUT, &path).json(obj), self.request_timeout).await
    }

    /// POSTs a streamed body of `size` bytes (with `query`) and decodes the
    /// reply, allowing the upload [`UPLOAD_ALLOWANCE_PER_MIB`] beyond
    /// `--request-timeout`.
    pub async fn post_stream<Q: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        query: &Q,
        body: reqwest::Body,
        size: u64,
    ) -> Result<T> {
        let mib = size.div_ceil(1024 * 1024);
        let waited = self.request_timeout
            + UPLOAD_ALLOWANCE_PER_MIB.saturating_mul(u32::try_from(mib).unwrap_or(u32::MAX));
        let rb = self.stream_req(reqwest::Method::POST, path).query(query);
        self.call(rb.timeout(waited).body(body), waited).await
    }

    /// POSTs `body` as JSON and decodes the reply.
    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.call(self.req(reqwest::Method::POST, path).json(body), self.request_timeout).await
    }

    /// POSTs `body` as JSON and streams the reply body into `dest`; returns
    /// its size. The director may take as long as it needs, as long as it
    /// never stays silent for `--idle-timeout`.
    pub async fn post_to_file<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
        dest: &Path,
    ) -> Result<u64> {
        let mut resp =
            self.open_stream(self.stream_req(reqwest::Method::POST, path).json(body)).await?;
        let mut out = tokio::fs::File::create(dest)
            .await
            .with_context(|| format!("creating {}", dest.display()))?;
        let mut n = 0u64;
        while let Some(chunk) = self.next_chunk(&mut resp).await? {
            tokio::io::AsyncWriteExt::write_all(&mut out, &chunk).await?;
            n += chunk.len() as u64;
        }
        tokio::io::AsyncWriteExt::flush(&mut out).await?;
        Ok(n)
    }

    /// GETs `path` into `dest`; returns its size and its hex sha256,
    /// hashed as it is written.
    pub async fn get_to_file(&self, path: &str, dest: &Path) -> Result<(u64, String)> {
        use sha2::Digest;
        let mut resp = self.open_stream(self.stream_req(reqwest::Method::GET, path)).await?;
        let mut out = tokio::fs::File::create(dest)
            .await
            .with_context(|| format!("creating {}", dest.display()))?;
        let (mut n, mut digest) = (0u64, sha2::Sha256::new());
        while let Some(chunk) = self.next_chunk(&mut resp).await? {
            tokio::io::AsyncWriteExt::write_all(&mut out, &chunk).await?;
            digest.update(&chunk);
            n += chunk.len() as u64;
        }
        tokio::io::AsyncWriteExt::flush(&mut out).await?;
        Ok((n, hex::encode(digest.finalize())))
    }

    /// DELETEs (with `query`) and decodes the reply.
    pub async fn delete<Q: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        query: &Q,
    ) -> Result<T> {
        let rb = self.req(reqwest::Method::DELETE, path).query(query);
        self.call(rb, self.request_timeout).await
    }

    /// Streams a watch: calls `each` with every event until the stream ends.
    pub async fn watch<O: DeserializeOwned + 'static>(
        &self,
        plural: &str,
        from: Option<i64>,
        mut each: impl FnMut(WatchEvent<O>) -> Result<()>,
    ) -> Result<()> {
        let mut events = std::pin::pin!(self.watch_stream(plural, from).await?);
        while let Some(event) = futures::TryStreamExt::try_next(&mut events).await? {
            each(event)?;
        }
        Ok(())
    }

    /// Opens a watch of `plural` (from revision `from`, or a relist first)
    /// and yields its events, objects read as `O`, until the stream ends.
    /// boshd's keep-alive lines only reset the idle timeout, and events of
    /// a type this boshctl does not know (a newer director's) are skipped;
    /// neither is yielded.
    pub async fn watch_stream<O: DeserializeOwned + 'static>(
        &self,
        plural: &str,
        from: Option<i64>,
    ) -> Result<impl futures::Stream<Item = Result<WatchEvent<O>>> + '_> {
        let path = format!("/v1/watch/{plural}");
        let rb = self.stream_req(reqwest::Method::GET, &path).query(&WatchQuery { from });
        let resp = self.open_stream(rb).await?;
        let lines = futures::stream::try_unfold(
            (resp, Vec::<u8>::new(), std::collections::VecDeque::new()),
            move |(mut resp, mut buf, mut ready)| async move {
                loop {
                    if let Some(event) = ready.pop_front() {
                        return Ok(Some((event, (resp, buf, ready))));
                    }
                    let Some(chunk) = self.next_chunk(&mut resp).await? else {
                        return Ok(None);
                    };
                    buf.extend_from_slice(&chunk);
                    while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=i).collect();
                        if line.iter().all(u8::is_ascii_whitespace) {
                            continue;
                        }
                        let event: WatchEvent<O> =
                            serde_json::from_slice(&line).context("decoding a watch event")?;
                        if !matches!(event, WatchEvent::Keepalive | WatchEvent::Unknown) {
                            ready.push_back(event);
                        }
                    }
                }
            },
        );
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Timeouts take seconds by default and `ms`/`s`/`m` suffixes; nonsense and zero are refused.
    #[test]
    fn durations_parse_with_units_and_print_as_people_write_them() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("10"), Ok(ms(10_000)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1_500)));
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("2m"), Ok(ms(120_000)));
        for bad in ["", "s", "0", "-1s", "10h", "ten"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(human(ms(10_000)), "10 s");
        assert_eq!(human(ms(1_500)), "1.5 s");
        assert_eq!(human(ms(500)), "500 ms");
    }
}
